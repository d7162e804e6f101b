"""`Simulator`: the core's pure functions bound to one world (params + catalog).

The env shells talk only to this interface (``reset``, ``step``, ``observe``,
``observation_space``), so a different world model (for example a re-implementation of
another simulator) plugs in by subclassing it and overriding those methods.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces

from recsim_gym.env import core
from recsim_gym.env.catalog import Catalog, make_catalog
from recsim_gym.env.params import Params
from recsim_gym.env.presets import make_params, preset_names


@lru_cache(maxsize=16)
def cached_catalog(params: Params) -> Catalog:
    """The catalog of ``params`` (read-only arrays, shared by every env built on it)."""
    return make_catalog(params)


class Simulator:
    """Batched dynamics of one world. Stateless: state objects are passed in and returned."""

    def __init__(self, params: Params):
        self.params = params
        self.catalog = cached_catalog(params)

    @classmethod
    def from_preset(cls, preset: str = "default", params: Params | None = None,
                    **overrides: Any) -> Simulator:
        """Build from a preset name (or explicit ``params``) and keyword overrides."""
        return cls(make_params(preset, params, **overrides))

    @property
    def end_reasons(self) -> tuple[str, ...]:
        """Names of ``StepResult.end_reason`` codes."""
        return core.END_REASONS

    def reset(self, keys: np.ndarray) -> core.State:
        """New users for episode keys ``keys`` (B,) uint64."""
        return core.reset(self.params, self.catalog, keys)

    def reset_into(self, state: core.State, index: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes with ``keys`` for users ``index`` of ``state``, in place (autoreset)."""
        core.reset_into(self.params, self.catalog, state, index, keys)

    def step(self, state: core.State, slates: np.ndarray) -> tuple[core.State, core.StepResult]:
        """One step for every user (``slates`` already validated)."""
        return core.step(self.params, self.catalog, state, slates)

    def observe(self, state: core.State) -> dict[str, np.ndarray]:
        """Batched observation dict (new arrays)."""
        return core.observe(self.params, self.catalog, state)

    def observation_space(self) -> spaces.Dict:
        """Per-user observation space."""
        return spaces.Dict({
            key: spaces.Box(low, high, shape=shape, dtype=np.float32)
            for key, (shape, low, high) in core.observation_shapes(self.params).items()})


#: Presets backed by another world model: name -> (description, factory). A factory is called
#: as ``factory(params=None, **overrides)`` and returns a :class:`Simulator` subclass instance.
WORLD_MODELS: dict[str, tuple[str, Callable[..., Simulator]]] = {}


def register_world_model(name: str, description: str, factory: Callable[..., Simulator]) -> None:
    """Make ``name`` a preset backed by ``factory`` (see :data:`WORLD_MODELS`)."""
    WORLD_MODELS[name] = (description, factory)


def make_simulator(preset: str = "default", params: Any = None, **overrides: Any) -> Simulator:
    """The simulator of ``preset``: a world-model preset, or the default world with a
    :data:`~recsim_gym.env.presets.PRESETS` entry's overrides. Explicit ``params`` decide the world
    by their type (``preset`` is then ignored)."""
    if params is not None:
        return simulator_for(params.replace(**overrides) if overrides else params)
    if preset in WORLD_MODELS:
        return WORLD_MODELS[preset][1](params=params, **overrides)
    return Simulator.from_preset(preset, params, **overrides)


def all_preset_names() -> list[str]:
    """Every preset: the default world's presets, then the world-model presets."""
    return preset_names() + [name for name in WORLD_MODELS if name not in preset_names()]


def simulator_for(params: Any) -> Simulator:
    """The simulator of any world's params (default-world ``Params`` or a world model's)."""
    if isinstance(params, Params):
        return Simulator(params)
    for _, factory in WORLD_MODELS.values():
        if type(factory().params) is type(params):
            return factory(params=params)
    raise TypeError(f"no world model takes params of type {type(params).__name__}")
