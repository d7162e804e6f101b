"""Checks of agent hyperparameters: errors name the field and the allowed range.

Agents call these from their config's ``__post_init__`` (or their constructor), so a bad value
fails when the agent is built, and ``recsim run`` (which builds every agent of a config before
any training) reports it as a config error naming ``agents[i].params``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np

C = TypeVar("C")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    def fmt(x: float) -> str:
        return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"

    return f"{'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open or high == math.inf else ']'}"


def check_number(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 integer: bool = False, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError("owner.name must be ... in [low, high], got value")`` unless ``value``
    is a finite number (an integer if ``integer``) inside the interval (open ends as flagged)."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool | np.bool_)
    if ok:
        x = float(value)
        ok = (math.isfinite(x) and (x > low if low_open else x >= low)
              and (x < high if high_open else x <= high))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{owner}.{name} must be {kind} in "
                         f"{_interval(low, high, low_open, high_open)}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming ``owner.name`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {value!r}")


def replace_config(config: C, overrides: dict[str, Any]) -> C:
    """``dataclasses.replace(config, **overrides)``, but an unknown key is a ``TypeError`` that
    names it and lists the config's fields."""
    fields = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"{type(config).__name__} has no field(s) {unknown}; fields: {fields}")
    return dataclasses.replace(config, **overrides)
