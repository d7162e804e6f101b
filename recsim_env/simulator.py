"""`Simulator`: the core's pure functions bound to one world (params + catalog).

The env shells talk only to this interface (``reset``, ``step``, ``observe``,
``observation_space``), so a different world model (for example a re-implementation of
another simulator) plugs in by subclassing it and overriding those methods.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces

from recsim_env import core
from recsim_env.catalog import Catalog, make_catalog
from recsim_env.params import Params
from recsim_env.presets import make_params


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

    def reset(self, keys: np.ndarray) -> core.State:
        """New users for episode keys ``keys`` (B,) uint64."""
        return core.reset(self.params, self.catalog, keys)

    def step(self, state: core.State, slates: np.ndarray) -> tuple[core.State, core.StepResult]:
        """One step for every user (``slates`` already validated)."""
        return core.step(self.params, self.catalog, state, slates)

    def observe(self, state: core.State, out: dict[str, np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
        """Batched observation dict (written into ``out`` when given)."""
        return core.observe(self.params, self.catalog, state, out)

    def observation_space(self) -> spaces.Dict:
        """Per-user observation space."""
        return spaces.Dict({
            key: spaces.Box(low, high, shape=shape, dtype=np.float32)
            for key, (shape, low, high) in core.observation_shapes(self.params).items()})

    def empty_observation(self, batch_size: int) -> dict[str, np.ndarray]:
        """Preallocated observation buffers for ``batch_size`` users."""
        return {key: np.zeros((batch_size,) + shape, dtype=np.float32)
                for key, (shape, _, _) in core.observation_shapes(self.params).items()}
