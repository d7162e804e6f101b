"""The world-model interface every simulated world implements (gymnax-style, batched).

A world is a frozen params dataclass, a state dataclass of ``(B, ...)`` arrays, and pure
functions over a batch of B users (:func:`recsim_gym.env.simulator.make_simulator` builds
any registered world by preset name)::

    world = make_simulator("default")             # or DefaultWorld(params), InterestEvolutionWorld(...)
    state = world.reset(keys)                     # keys: (B,) uint64 episode keys (rng.seed_to_key)
    state, result = world.step(state, slates)     # slates: (B, k) validated candidate positions
    obs = world.observe(state)                    # dict of (B, ...) float32 arrays

``step`` never writes into the state it is given; ``reset_into`` is the one in-place
operation, for states the caller owns (the env shells' autoreset). ``step(..., out=...)`` and
``observe(..., out=...)`` write into arrays the caller hands back (a spent state, a previous
result or observation), so a shell that owns them steps without allocating. The Gymnasium envs, the
native vector env and the SB3 adapter only talk to this interface, so a new world is one
module with a :class:`WorldModel` subclass, its params, and a call to :func:`register_world`
(see :mod:`recsim_gym.env.interest_evolution`).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

#: ``StepResult.end_reason`` codes every world shares.
END_REASONS = ("", "churned", "max_steps")


class UserBatch:
    """Mixin for a world's state dataclass (array fields with a leading batch axis)."""

    __slots__ = ()

    @property
    def batch_size(self) -> int:
        """Number of users B."""
        return int(self.t.shape[0])

    def take(self, index: np.ndarray | slice) -> Any:
        """The sub-batch of users ``index`` (copies)."""
        return type(self)(*(np.array(getattr(self, f.name)[index]) for f in dataclasses.fields(self)))

    def assign(self, index: np.ndarray, other: Any) -> None:
        """Overwrite users ``index`` with ``other``'s users, IN PLACE (only for states you own;
        read-only arrays are copied first)."""
        for f in dataclasses.fields(self):
            target = getattr(self, f.name)
            if not target.flags.writeable:
                target = target.copy()
                setattr(self, f.name, target)
            target[index] = getattr(other, f.name)


@dataclasses.dataclass(slots=True)
class StepResult:
    """Per-user outcome of one step (arrays of shape (B,) unless noted)."""

    reward: np.ndarray  #: float32, in [0, params.max_reward]
    click: np.ndarray  #: bool
    conversion: np.ndarray  #: bool
    revenue: np.ndarray  #: float32 price of a converted item, else 0
    position: np.ndarray  #: int64 clicked slate position, -1 for no click
    item: np.ndarray  #: int64 clicked item id, -1 for no click
    choice_probs: np.ndarray  #: (B, k + 1) float32 click probability per position, then no-click
    terminated: np.ndarray  #: bool, the user churned
    truncated: np.ndarray  #: bool, the episode hit max_steps (and the user did not churn)
    end_reason: np.ndarray  #: int8 code into END_REASONS


def empty_result(batch_size: int, slate_size: int) -> StepResult:
    """Uninitialised outcome arrays of one step of ``batch_size`` users (a world's ``step``
    fills them)."""
    b = batch_size
    return StepResult(
        reward=np.empty(b, np.float32), click=np.empty(b, np.bool_), conversion=np.empty(b, np.bool_),
        revenue=np.empty(b, np.float32), position=np.empty(b, np.int64), item=np.empty(b, np.int64),
        choice_probs=np.empty((b, slate_size + 1), np.float32), terminated=np.empty(b, np.bool_),
        truncated=np.empty(b, np.bool_), end_reason=np.empty(b, np.int8))


def empty_observation(shapes: dict[str, tuple[tuple[int, ...], float, float]], batch_size: int
                      ) -> dict[str, np.ndarray]:
    """Uninitialised float32 observation arrays for ``batch_size`` users, one per key of
    ``shapes`` (as ``observation_shapes`` gives them), all views of one allocation.

    One block rather than one array per key: glibc hands a freed multi-MiB block back to the
    next step's observation, where separate arrays get the memory trimmed and page-faulted
    back in every step (at B = 4,096 in interest_evolution that was over half the step)."""
    sizes = [batch_size * math.prod(shape) for shape, _, _ in shapes.values()]
    block = np.empty(sum(sizes), np.float32)
    out, start = {}, 0
    for (key, (shape, _, _)), size in zip(shapes.items(), sizes, strict=True):
        out[key] = block[start:start + size].reshape(batch_size, *shape)
        start += size
    return out


class WorldModel(ABC):
    """Batched dynamics of one world. Stateless: states are passed in and returned."""

    #: The world's frozen, validated params (``replace(**overrides)`` makes variants).
    params: Any
    #: Names of ``StepResult.end_reason`` codes.
    end_reasons: tuple[str, ...] = END_REASONS

    @abstractmethod
    def reset(self, keys: np.ndarray) -> Any:
        """New users for episode keys ``keys`` (B,) uint64."""

    def reset_into(self, state: Any, index: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes with ``keys`` for users ``index`` of ``state``, in place."""
        state.assign(index, self.reset(keys))

    @abstractmethod
    def step(self, state: Any, slates: np.ndarray, out: tuple[Any, Any] | None = None
             ) -> tuple[Any, StepResult]:
        """One step for every user: ``(new state, StepResult)``; ``slates`` already validated.

        ``out``: ``(spent state, previous result)`` (either may be None) whose arrays the step
        overwrites instead of allocating: a state of the same batch size that is not ``state``
        itself. The env shells pass it to step without allocating."""

    @abstractmethod
    def observe(self, state: Any, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Batched observation dict: new arrays, or written into ``out`` (a previous
        observation of the same batch size)."""

    @abstractmethod
    def observation_shapes(self) -> dict[str, tuple[tuple[int, ...], float, float]]:
        """Per-user observation key -> (shape, low, high)."""

    def user_view(self, state: Any, index: int) -> Any:
        """What the env's renders show of user ``index`` (a
        :class:`~recsim_gym.env.render.UserView`); worlds without one cannot render."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its users for rendering "
                                  "(implement WorldModel.user_view)")

    def observation_space(self) -> spaces.Dict:
        """Per-user observation space (float32 boxes)."""
        return spaces.Dict({key: spaces.Box(low, high, shape=shape, dtype=np.float32)
                            for key, (shape, low, high) in self.observation_shapes().items()})


#: World name -> (description, factory); a factory is called as ``factory(params=None,
#: **overrides)`` and returns a :class:`WorldModel`.
WORLD_MODELS: dict[str, tuple[str, Callable[..., WorldModel]]] = {}


def register_world(name: str, description: str, factory: Callable[..., WorldModel]) -> None:
    """Make ``name`` a preset backed by ``factory`` (see :data:`WORLD_MODELS`)."""
    WORLD_MODELS[name] = (description, factory)
