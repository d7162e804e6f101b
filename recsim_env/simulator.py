"""The default world (:class:`DefaultWorld`: the core's pure functions bound to its params and
catalog) and the lookup of every world by preset name (:func:`make_simulator`).

Worlds are peers implementing :class:`~recsim_gym.env.world.WorldModel`; the default world's
presets are :data:`~recsim_gym.env.presets.PRESETS`, other worlds register themselves with
:func:`~recsim_gym.env.world.register_world`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from recsim_gym.env import core
from recsim_gym.env.catalog import Catalog, make_catalog
from recsim_gym.env.params import Params
from recsim_gym.env.presets import make_params, preset_names
from recsim_gym.env.render import UserView
from recsim_gym.env.world import WORLD_MODELS, WorldModel, register_world

__all__ = ["WORLD_MODELS", "DefaultWorld", "all_preset_names", "cached_catalog", "make_simulator",
           "register_world", "simulator_for"]


@lru_cache(maxsize=16)
def cached_catalog(params: Params) -> Catalog:
    """The catalog of ``params`` (read-only arrays, shared by every env built on it)."""
    return make_catalog(params)


class DefaultWorld(WorldModel):
    """The default world family (catalog, drift, fatigue, satisfaction, churn, conversions):
    :mod:`recsim_gym.env.core` bound to ``params`` and its catalog."""

    def __init__(self, params: Params):
        self.params = params
        self.catalog = cached_catalog(params)

    @classmethod
    def from_preset(cls, preset: str = "default", params: Params | None = None,
                    **overrides: Any) -> DefaultWorld:
        """Build from a preset name (or explicit ``params``) and keyword overrides."""
        return cls(make_params(preset, params, **overrides))

    def reset(self, keys: np.ndarray) -> core.State:
        """New users for episode keys ``keys`` (B,) uint64."""
        return core.reset(self.params, self.catalog, keys)

    def reset_into(self, state: core.State, index: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes with ``keys`` for users ``index`` of ``state``, in place (autoreset)."""
        core.reset_into(self.params, self.catalog, state, index, keys)

    def step(self, state: core.State, slates: np.ndarray, out: tuple[Any, Any] | None = None
             ) -> tuple[core.State, core.StepResult]:
        """One step for every user (``slates`` already validated); ``out`` as in
        :meth:`WorldModel.step`."""
        return core.step(self.params, self.catalog, state, slates, out)

    def observe(self, state: core.State, out: dict[str, np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
        """Batched observation dict: new arrays, or written into ``out``."""
        return core.observe(self.params, self.catalog, state, out)

    def observation_shapes(self) -> dict[str, tuple[tuple[int, ...], float, float]]:
        """Per-user observation key -> (shape, low, high)."""
        return core.observation_shapes(self.params)

    def user_view(self, state: core.State, index: int) -> UserView:
        """User ``index`` for the renders: interest, satisfaction, the candidates' topics."""
        items = state.candidates[index]
        return UserView(t=int(state.t[index]), max_steps=self.params.max_steps,
                        interest=state.interest[index], level_name="satisfaction",
                        level=float(state.satisfaction[index]),
                        candidate_topic=self.catalog.topics[items].argmax(axis=1),
                        candidate_quality=self.catalog.hidden[items, 1], candidate_item=items)


def make_simulator(preset: str = "default", params: Any = None, **overrides: Any) -> WorldModel:
    """The simulator of ``preset``: a world-model preset, or the default world with a
    :data:`~recsim_gym.env.presets.PRESETS` entry's overrides. Explicit ``params`` decide the world
    by their type (``preset`` is then ignored)."""
    if params is not None:
        return simulator_for(params.replace(**overrides) if overrides else params)
    if preset in WORLD_MODELS:
        return WORLD_MODELS[preset][1](params=params, **overrides)
    return DefaultWorld.from_preset(preset, params, **overrides)


def all_preset_names() -> list[str]:
    """Every preset: the default world's presets, then the world-model presets."""
    return preset_names() + [name for name in WORLD_MODELS if name not in preset_names()]


def simulator_for(params: Any) -> WorldModel:
    """The simulator of any world's params (default-world ``Params`` or a world model's)."""
    if isinstance(params, Params):
        return DefaultWorld(params)
    for _, factory in WORLD_MODELS.values():
        if type(factory().params) is type(params):
            return factory(params=params)
    raise TypeError(f"no world model takes params of type {type(params).__name__}")
