"""The slate action space and action validation shared by every env shell."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from numba import njit

from recsim_gym.env.params import Params


def random_slates(rng: np.random.Generator, batch_size: int, num_candidates: int, slate_size: int
                  ) -> np.ndarray:
    """Uniformly random slates (B, k) int64 of distinct candidate positions: the one sampler of
    random slates that agents, logging policies and benchmarks share."""
    keys = rng.random((batch_size, num_candidates))
    return np.argsort(keys, axis=1)[:, :slate_size].astype(np.int64)


class InvalidActionError(ValueError):
    """A slate that the env cannot show; the message says what was expected."""


class Slate(spaces.MultiDiscrete):
    """``slate_size`` distinct candidate positions in ``[0, num_candidates)``, in display order.

    A ``MultiDiscrete`` (so SB3 and Gymnasium tooling accept it) whose ``sample`` draws without
    replacement and whose ``contains`` rejects repeats. With ``batch_size`` it is the batched
    space of a vector env: shape ``(batch_size, slate_size)``, one slate per row.
    """

    def __init__(self, num_candidates: int, slate_size: int, batch_size: int | None = None,
                 seed: int | np.random.Generator | None = None):
        shape = (slate_size,) if batch_size is None else (batch_size, slate_size)
        super().__init__(np.full(shape, num_candidates, dtype=np.int64), dtype=np.int64, seed=seed)
        self.num_candidates, self.slate_size, self.batch_size = num_candidates, slate_size, batch_size

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A uniformly random slate (or batch of slates) without repeated candidates."""
        if mask is not None or probability is not None:
            raise NotImplementedError("Slate.sample does not support mask/probability")
        keys = self.np_random.random(self.shape[:-1] + (self.num_candidates,))
        return np.argsort(keys, axis=-1)[..., : self.slate_size].astype(np.int64)

    def contains(self, x: Any) -> bool:
        """True for an integer array of the right shape, in range, with no repeats per slate."""
        if not super().contains(x):
            return False
        rows = np.sort(np.asarray(x).reshape(-1, self.slate_size), axis=1)
        return not bool((rows[:, 1:] == rows[:, :-1]).any())

    def __repr__(self) -> str:
        batch = "" if self.batch_size is None else f", batch_size={self.batch_size}"
        return f"Slate(num_candidates={self.num_candidates}, slate_size={self.slate_size}{batch})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Slate) and super().__eq__(other)


@batch_space.register(Slate)
def _batch_slate(space: Slate, n: int = 1) -> spaces.Space:
    """Gymnasium's ``batch_space`` (used by ``SyncVectorEnv``/``AsyncVectorEnv`` and vector
    wrappers) would turn a Slate into a ``Box`` whose samples repeat candidates: keep it a Slate."""
    if space.batch_size is not None:
        return batch_space.dispatch(spaces.MultiDiscrete)(space, n)
    return Slate(space.num_candidates, space.slate_size, n, seed=deepcopy(space.np_random))


def validate_slates(action: Any, params: Params, batch_size: int | None, *,
                    return_filled: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Check ``action`` and return it as an int64 array of shape ``(B, k)``.

    ``batch_size=None`` means a single env (expects shape ``(k,)``). Raises
    :class:`InvalidActionError` for a wrong shape or dtype, NaN, out-of-range positions and
    (with ``duplicate_rule='raise'``) repeated candidates. With ``duplicate_rule='fill'`` (the
    default) each repeat is replaced by the lowest-index candidate not yet in that slate.
    ``return_filled=True`` also returns the number of positions filled per slate, ``(B,)`` int64.
    """
    m, k = params.num_candidates, params.slate_size
    if batch_size is None and isinstance(action, np.ndarray) and action.shape == (k,) and (
            action.dtype.kind in "iu"):  # fast path of the single env: plain Python on k ints
        values = action.tolist()
        if min(values) >= 0 and max(values) < m and len(set(values)) == k:
            slates = action.astype(np.int64).reshape(1, k)
            return (slates, np.zeros(1, dtype=np.int64)) if return_filled else slates
    expected = (k,) if batch_size is None else (batch_size, k)
    if batch_size is not None and isinstance(action, np.ndarray) and action.shape == expected and (
            action.dtype.kind in "iu") and _slates_are_valid(action, m):  # fast path of the vector env
        slates = action if action.dtype == np.int64 else action.astype(np.int64)
        return (slates, np.zeros(batch_size, dtype=np.int64)) if return_filled else slates
    what = (f"a slate: {k} distinct integer candidate positions in [0, {m})" if batch_size is None
            else f"{batch_size} slates: an integer array of shape ({batch_size}, {k}) with "
                 f"distinct candidate positions in [0, {m}) per row")
    a = np.asarray(action)
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.isnan(a).any():
            raise InvalidActionError(f"action contains NaN; expected {what}")
        raise InvalidActionError(f"action has dtype {a.dtype}; expected {what}")
    if a.shape != expected:
        raise InvalidActionError(f"action has shape {a.shape}; expected shape {expected}, {what}")
    a = a.reshape(-1, k)
    if a.size and (a.min() < 0 or a.max() >= m):
        bad = a[(a < 0) | (a >= m)]
        raise InvalidActionError(f"action holds position(s) {sorted(set(bad.tolist()))[:5]} "
                                 f"outside [0, {m}); expected {what}")
    a = a.astype(np.int64, copy=True)
    ordered = np.sort(a, axis=1)
    repeats = (ordered[:, 1:] == ordered[:, :-1])
    repeated_rows = repeats.any(axis=1)
    if repeated_rows.any():
        if params.duplicate_rule == "raise":
            row = int(np.flatnonzero(repeated_rows)[0])
            raise InvalidActionError(
                f"slate {a[row].tolist()}" + ("" if batch_size is None else f" (row {row})")
                + f" repeats a candidate; expected {what} (or make the env with "
                  "the default duplicate_rule='fill')")
        a[repeated_rows] = _fill_repeats(a[repeated_rows], m)
    if return_filled:
        return a, repeats.sum(axis=1, dtype=np.int64)
    return a


@njit(cache=True, nogil=True)
def _slates_are_valid(slates: np.ndarray, m: int) -> bool:
    """Every position in [0, m) and no slate repeating one (one pass; the vector env's check)."""
    for row in range(slates.shape[0]):
        for i in range(slates.shape[1]):
            value = slates[row, i]
            if value < 0 or value >= m:
                return False
            for j in range(i):
                if slates[row, j] == value:
                    return False
    return True


def _fill_repeats(slates: np.ndarray, m: int) -> np.ndarray:
    """Replace later repeats in each row with the lowest-index unused candidates, in order."""
    k = slates.shape[1]
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)
    repeat = ((slates[:, :, None] == slates[:, None, :]) & earlier).any(axis=2)
    used = np.zeros((slates.shape[0], m), dtype=bool)
    np.put_along_axis(used, np.where(repeat, slates[:, :1], slates), True, axis=1)
    unused = np.argsort(used, axis=1, kind="stable")  # unused positions first, ascending
    rank = np.cumsum(repeat, axis=1) - 1
    filled = np.take_along_axis(unused, np.maximum(rank, 0), axis=1)
    return np.where(repeat, filled, slates)
