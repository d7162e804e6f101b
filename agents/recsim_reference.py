"""Reference policies of RecSim's interest-evolution preset, for comparisons with RecSim.

* :class:`RandomPolicy` - uniformly random slates (RecSim's ``RandomAgent``).
* :class:`MyopicPolicy` - the k candidates with the highest interest-topic affinity
  ``<interest, features>``, best first (RecSim's ``GreedyPCTRAgent`` idea: under the
  proportional choice model the click probability of an item rises with that affinity). It
  reads ``obs["interest"]``, so the env needs ``exposure="recsim"`` (RecSim's own exposure) or
  ``observe_latent=True``.

Both are batched: ``policy(obs)`` takes observations with a leading batch axis and returns
slates ``(B, k)`` int64. :func:`random_slates` and :func:`myopic_slates` are the function forms.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def random_slates(rng: np.random.Generator, batch_size: int, num_candidates: int,
                  slate_size: int) -> np.ndarray:
    """Uniformly random slates (B, k) of distinct candidate positions."""
    keys = rng.random((batch_size, num_candidates))
    return np.argsort(keys, axis=1)[:, :slate_size].astype(np.int64)


def myopic_slates(obs: dict[str, np.ndarray], slate_size: int) -> np.ndarray:
    """The ``slate_size`` candidates with the highest ``<interest, features>``, best first
    (ties: lower position first). ``obs`` is batched: ``candidates`` (B, m, T), ``interest`` (B, T)."""
    if "interest" not in obs:
        raise ValueError("the myopic policy reads the user's interest: make the env with "
                         "exposure='recsim' (RecSim's observation) or observe_latent=True")
    affinity = np.einsum("bmt,bt->bm", obs["candidates"], obs["interest"])
    order = np.argsort(-affinity, axis=1, kind="stable")
    return order[:, :slate_size].astype(np.int64)


class RandomPolicy:
    """Uniformly random slates; ``params`` needs ``num_candidates`` and ``slate_size``."""

    def __init__(self, params: Any, seed: int | None = None):
        self.params = params
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Slates (B, k) for a batch of observations."""
        batch = obs["candidates"].shape[0]
        return random_slates(self.rng, batch, self.params.num_candidates, self.params.slate_size)

    act = __call__


class MyopicPolicy:
    """Greedy by interest-topic affinity (see :func:`myopic_slates`)."""

    def __init__(self, params: Any, seed: int | None = None):
        del seed  # deterministic
        self.params = params

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Slates (B, k) for a batch of observations."""
        return myopic_slates(obs, self.params.slate_size)

    act = __call__


#: Name -> policy class, as the experiment script selects them.
REFERENCE_POLICIES = {"random": RandomPolicy, "myopic": MyopicPolicy}
