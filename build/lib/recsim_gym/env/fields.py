"""The one config style: frozen dataclasses whose fields carry their doc and allowed range.

The world's :class:`~recsim_gym.env.params.Params`, the interest-evolution world's params and
every agent's hyperparameters are written the same way::

    @dataclass(frozen=True)
    class MyConfig(Config):
        gamma: float = option(0.99, "Discount of the TD target.", 0.0, 1.0)
        hidden: int = option(128, "Width of the MLPs.", 1)
        loss: str = option("mse", "TD loss.", choices=("mse", "huber"))

Construction validates every field (numbers must be finite and inside their interval, ints
integral, bools bools, choices one of the listed values) and then calls :meth:`Config.check`
for cross-field rules; :meth:`Config.replace` rejects unknown names and lists the valid ones.
Every error is a ``ValueError`` that names ``ClassName.field`` and what is allowed; nothing is
clipped. :func:`field_table` turns the same metadata into documentation tables.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import MISSING, field
from typing import Any, TypeVar

import numpy as np

C = TypeVar("C", bound="Config")

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def option(default: Any = MISSING, doc: str = "", low: float | None = None,
           high: float | None = None, *, choices: tuple[Any, ...] | None = None,
           low_open: bool = False, high_open: bool = False, group: str = "",
           factory: Any = None) -> Any:
    """A documented dataclass field with its allowed values: the interval ``[low, high]``
    (ends open as flagged; ``None`` is unbounded) for numbers, ``choices`` for the rest.
    ``factory`` gives a mutable default (``dataclasses.field(default_factory=...)``)."""
    metadata = {"doc": doc, "low": low, "high": high, "choices": choices, "low_open": low_open,
                "high_open": high_open, "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def interval(meta: dict[str, Any]) -> str:
    """``[low, high]``-style text of a field's interval (``inf`` for an open end)."""
    low = -math.inf if meta["low"] is None else meta["low"]
    high = math.inf if meta["high"] is None else meta["high"]

    def fmt(x: float) -> str:
        return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"

    left = "(" if meta["low_open"] or low == -math.inf else "["
    right = ")" if meta["high_open"] or high == math.inf else "]"
    return f"{left}{fmt(low)}, {fmt(high)}{right}"


def check_value(owner: str, f: dataclasses.Field, value: Any) -> Any:
    """``value`` of field ``f`` as its plain Python type, or ``ValueError`` naming
    ``owner.field`` and the allowed values (numpy scalars are accepted)."""
    meta = f.metadata
    declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = declared.endswith(" | None")
    base = _TYPES.get(declared.removesuffix(" | None"))
    where = f"{owner}.{f.name}"
    if value is None and optional:
        return None
    if meta.get("choices") is not None:
        if isinstance(value, np.generic):
            value = value.item()
        if value not in meta["choices"] or (isinstance(value, bool) != isinstance(meta["choices"][0], bool)):
            raise ValueError(f"{where} must be one of {list(meta['choices'])}, got {value!r}")
        return value
    is_bool = isinstance(value, (bool, np.bool_))
    if base is bool:
        if not is_bool:
            raise ValueError(f"{where} must be a bool, got {value!r}")
        return bool(value)
    if base not in (int, float):
        return value
    text = interval(meta)
    kind = "an integer" if base is int else "a number"
    if base is int:
        ok = isinstance(value, numbers.Integral) and not is_bool
    else:
        ok = isinstance(value, numbers.Real) and not is_bool and math.isfinite(value)
    if ok:
        x = int(value) if base is int else float(value)
        low, high = meta["low"], meta["high"]
        ok = ((low is None or (x > low if meta["low_open"] else x >= low))
              and (high is None or (x < high if meta["high_open"] else x <= high)))
    if not ok:
        raise ValueError(f"{where} must be {kind} in {text}, got {value!r}")
    return x


class Config:
    """Base of the frozen, validated config dataclasses (see the module docstring)."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_value(owner, f, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Cross-field rules; subclasses raise through :meth:`require`."""

    def require(self, ok: bool, name: str, message: str) -> None:
        """``ValueError("ClassName.name message")`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{type(self).__name__}.{name} {message}")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the fields, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self: C, **overrides: Any) -> C:
        """A copy with ``overrides`` (validated); unknown names raise ``ValueError`` listing the
        valid ones."""
        unknown = sorted(set(overrides) - set(self.field_names()))
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} field(s) {unknown}; valid fields: "
                             f"{self.field_names()}")
        return dataclasses.replace(self, **overrides)


def field_table(cls: type) -> list[dict[str, str]]:
    """One row per field of the config class ``cls``: name, group, default, allowed, doc."""
    rows = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        declared = f.type if isinstance(f.type, str) else f.type.__name__
        if m.get("choices") is not None:
            allowed = " / ".join(repr(c) for c in m["choices"])
        elif declared == "bool":
            allowed = "True / False"
        elif declared.removesuffix(" | None") in ("int", "float"):
            allowed = interval(m) + (" or None" if declared.endswith(" | None") else "")
        else:
            allowed = declared
        default = f.default if f.default is not MISSING else f.default_factory()
        rows.append({"name": f.name, "group": m.get("group", ""), "default": repr(default),
                     "allowed": allowed, "doc": m.get("doc", "")})
    return rows
