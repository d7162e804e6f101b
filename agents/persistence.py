"""Agent files that load without running code from them.

:meth:`BaseAgent.save <recsim_gym.agents.base.BaseAgent.save>` writes one zip file:

* ``meta.json`` - format tag ``recsim-agent/1``, the agent's class (``module:QualName``) and
  its state: the instance's attributes as JSON, with tagged entries for what JSON cannot hold
  (arrays, tuples, numpy random generators, config dataclasses, torch modules);
* ``arrays.npz`` - the numpy arrays (read with ``allow_pickle=False``);
* ``tensors.pt`` - the torch modules' state dicts (read with ``torch.load(weights_only=True)``).

Loading decodes only those tags: a config must be a known :class:`~recsim_gym.env.fields.Config`
subclass, the class must be the one asked for (or a subclass of it) from an installed module,
and the instance is rebuilt without calling ``__init__``; torch modules are rebuilt by the
agent's own ``rebuild_module(name)`` and then get their weights. Nothing is unpickled. A file
of the wrong kind, format or content raises :class:`AgentFileError` saying what was expected
and what was found.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env.fields import Config

FORMAT = "recsim-agent/1"


class AgentFileError(ValueError):
    """An agent file that is not a valid recsim agent file of the expected kind."""


def _config_classes() -> dict[str, type]:
    found, todo = {}, [Config]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found[f"{sub.__module__}:{sub.__qualname__}"] = sub
            todo.append(sub)
    return found


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.tensors: dict[str, Any] = {}

    def encode(self, value: Any, where: str) -> Any:
        import torch

        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            self.arrays[where] = value
            return {"__array__": where}
        if isinstance(value, Config):
            cls = type(value)
            return {"__config__": f"{cls.__module__}:{cls.__qualname__}",
                    "fields": {f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}")
                               for f in dataclasses.fields(value)}}
        if isinstance(value, np.random.Generator):
            return {"__rng__": value.bit_generator.state}
        if isinstance(value, torch.nn.Module):
            self.tensors[where] = value.state_dict()
            return {"__module__": where}
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"__map__": {k: self.encode(v, f"{where}.{k}") for k, v in value.items()}}
        raise TypeError(f"cannot save {where} of type {type(value).__name__} in an agent file")


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray], source: str) -> None:
        self.arrays, self.source, self.configs = arrays, source, _config_classes()
        self.modules: list[str] = []

    def fail(self, message: str) -> AgentFileError:
        return AgentFileError(f"{self.source}: {message}")

    def decode(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict) or len(value) not in (1, 2):
            raise self.fail(f"unexpected entry {str(value)[:60]!r} in the agent state")
        if "__array__" in value:
            if value["__array__"] not in self.arrays:
                raise self.fail(f"array {value['__array__']!r} is missing from arrays.npz")
            return self.arrays[value["__array__"]]
        if "__tuple__" in value:
            return tuple(self.decode(v) for v in value["__tuple__"])
        if "__map__" in value:
            return {k: self.decode(v) for k, v in value["__map__"].items()}
        if "__rng__" in value:
            state = value["__rng__"]
            if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
                raise self.fail("a random generator must be a PCG64 state")
            generator = np.random.Generator(np.random.PCG64())
            generator.bit_generator.state = state
            return generator
        if "__module__" in value:
            self.modules.append(value["__module__"])
            return None  # rebuilt by the agent after the attributes are set
        if "__config__" in value:
            cls = self.configs.get(value["__config__"])
            if cls is None:
                raise self.fail(f"unknown config class {value['__config__']!r}")
            try:
                return cls(**{k: self.decode(v) for k, v in value["fields"].items()})
            except (TypeError, ValueError) as err:
                raise self.fail(f"invalid {cls.__name__}: {err}") from err
        raise self.fail(f"unexpected entry {str(value)[:60]!r} in the agent state")


def save_agent(agent: Any, path: str | Path) -> None:
    """Write ``agent``'s attributes to ``path`` in the format of the module docstring."""
    import torch

    encoder = _Encoder()
    state = {name: encoder.encode(value, name) for name, value in vars(agent).items()}
    cls = type(agent)
    meta = {"format": FORMAT, "class": f"{cls.__module__}:{cls.__qualname__}", "state": state}
    arrays, tensors = io.BytesIO(), io.BytesIO()
    np.savez(arrays, **encoder.arrays)
    torch.save(encoder.tensors, tensors)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("arrays.npz", arrays.getvalue())
        archive.writestr("tensors.pt", tensors.getvalue())
    tmp.replace(path)


def load_agent(cls: type, path: str | Path) -> Any:
    """The agent saved in ``path``, which must hold a ``cls`` (or a subclass of it)."""
    import torch

    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"meta.json", "arrays.npz", "tensors.pt"} <= names:
                raise AgentFileError(f"{source}: not a recsim agent file (a zip with meta.json, "
                                     f"arrays.npz and tensors.pt; found {sorted(names)[:5]})")
            meta = json.loads(archive.read("meta.json"))
            with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            tensors = torch.load(io.BytesIO(archive.read("tensors.pt")), weights_only=True)
    except FileNotFoundError:
        raise
    except AgentFileError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, zlib, json, numpy and torch all raise their own
        raise AgentFileError(f"{source}: not a readable recsim agent file ({type(err).__name__}: "
                             f"{err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise AgentFileError(f"{source}: format {found!r}, expected {FORMAT!r}")
    module_name, _, qualname = str(meta.get("class", "")).partition(":")
    try:
        stored = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError, ValueError) as err:
        raise AgentFileError(f"{source}: holds a {meta.get('class')!r}, which is not installed") from err
    if not (isinstance(stored, type) and issubclass(stored, cls)):
        raise AgentFileError(f"{source}: holds a {meta.get('class')!r}, not a {cls.__name__}")
    decoder = _Decoder(arrays, source)
    if not isinstance(meta.get("state"), dict):
        raise AgentFileError(f"{source}: no agent state in meta.json")
    state = {name: decoder.decode(value) for name, value in meta["state"].items()}
    agent = stored.__new__(stored)
    vars(agent).update(state)
    for name in decoder.modules:
        module = agent.rebuild_module(name)
        try:
            module.load_state_dict(tensors[name])
        except (KeyError, RuntimeError) as err:
            raise AgentFileError(f"{source}: the weights of {name!r} do not fit ({err})") from err
        setattr(agent, name, module)
    return agent
