"""Logging policies that know their probabilities exactly, for off-policy evaluation.

A logging policy is called as ``policy(obs, generator) -> (slates (B, k), propensities (B, k))``
(:data:`recsim_gym.env.logs.LoggingPolicy`), the propensity of position ``j`` being
``P(A_j | A_1..A_{j-1}, x)``. Off-policy estimators need more than that, and these policies
give it in closed form:

* :meth:`slate_probability` ``pi0(A | x)``, the product of the propensities;
* :meth:`marginals` ``pi0(A_j at position j | x)``, what independent IPS divides by;
* :meth:`prefix_probability` ``pi0(A_1..A_j | x)``, what reward-interaction IPS divides by;
* :meth:`gram` ``Gamma = E_pi0[1_A 1_A^T]`` over (position, candidate) indicators, whose
  pseudo-inverse the pseudo-inverse estimator needs, with :meth:`canonical_order` mapping
  every context onto the one whose ``Gamma`` it is.

:class:`UniformLogging` shows uniformly random slates. :class:`EpsilonSlateLogging` shows,
with probability ``epsilon``, a uniformly random slate and otherwise the popularity slate (the
k most popular candidates by observed popularity, most popular first): exploration over whole
slates, as services that hold back a share of traffic do.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from recsim_gym.env.spaces import random_slates


def _falling(m: int, k: int) -> np.ndarray:
    """``[1, m, m(m-1), ..., m(m-1)...(m-k+1)]``: the number of ordered prefixes of each length."""
    return np.concatenate([[1.0], np.cumprod(m - np.arange(k, dtype=np.float64))])


class UniformLogging:
    """Uniformly random slates of ``k`` distinct candidates: ``pi0(A | x) = (m - k)! / m!``."""

    name = "uniform"

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(self, obs: dict[str, np.ndarray], gen: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        batch, m = obs["candidates"].shape[:2]
        slates = random_slates(gen, batch, m, self.k)
        return slates, self.propensities(obs, slates)

    def greedy(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The slate the policy prefers, None for a policy without one."""
        return None

    def prefix_probability(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        """``pi0(A_1..A_j | x)`` for j = 1..k, (B, k)."""
        m = obs["candidates"].shape[1]
        return np.broadcast_to(1.0 / _falling(m, self.k)[1:], slates.shape).copy()

    def propensities(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        """``P(A_j | A_1..A_{j-1}, x)`` (B, k) float32, the logs' ``propensity`` column."""
        prefix = self.prefix_probability(obs, slates)
        previous = np.concatenate([np.ones((len(slates), 1)), prefix[:, :-1]], axis=1)
        return (prefix / previous).astype(np.float32)

    def slate_probability(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        """``pi0(A | x)`` (B,)."""
        return self.prefix_probability(obs, slates)[:, -1]

    def marginals(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        """``pi0(A_j at position j | x)`` (B, k)."""
        return np.full(slates.shape, 1.0 / obs["candidates"].shape[1])

    def canonical_order(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(B, m) relabelling of each context's candidates onto the canonical one: here every
        context is alike, so the identity."""
        batch, m = obs["candidates"].shape[:2]
        return np.broadcast_to(np.arange(m), (batch, m))

    def gram(self, m: int) -> np.ndarray:
        """``E[1_A 1_A^T]`` (k m, k m) over indicators of (position j, candidate c) at index
        ``j m + c``, in the canonical context."""
        return _uniform_gram(m, self.k)


@lru_cache(maxsize=32)
def _uniform_gram(m: int, k: int) -> np.ndarray:
    gram = np.zeros((k * m, k * m))
    other = 1.0 / (m * (m - 1)) if m > 1 else 0.0
    for row in range(k):
        for col in range(k):
            if row == col:  # one position: a candidate is there with probability 1/m, two never
                block = np.eye(m) / m
            else:  # two positions: two distinct candidates, each ordered pair equally likely
                block = np.full((m, m), other)
                np.fill_diagonal(block, 0.0)
            gram[row * m:(row + 1) * m, col * m:(col + 1) * m] = block
    gram.setflags(write=False)
    return gram


class EpsilonSlateLogging(UniformLogging):
    """With probability ``epsilon`` a uniformly random slate, otherwise the popularity slate (the
    ``k`` candidates of highest observed popularity, most popular first; ties by position).

    ``pi0(A | x) = epsilon (m - k)! / m! + (1 - epsilon) [A = popularity slate]``; the same
    mixture gives the prefix probabilities and the marginals in closed form.
    """

    name = "epsilon_slate"

    def __init__(self, k: int, epsilon: float = 0.3):
        super().__init__(k)
        if not 0.0 < epsilon <= 1.0:
            raise ValueError(f"epsilon must be in (0, 1] (every slate needs a positive "
                             f"probability), got {epsilon}")
        self.epsilon = epsilon

    def greedy(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The popularity slate (B, k): highest observed popularity (the last candidate
        feature) first, ties broken by candidate position. Popularity is ranked as logs store
        it (float16), so a log's probabilities can be recomputed from the log alone."""
        popularity = obs["candidates"][..., -1].astype(np.float16).astype(np.float64)
        return np.argsort(-popularity, axis=1, kind="stable")[:, :self.k].astype(np.int64)

    def __call__(self, obs: dict[str, np.ndarray], gen: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        batch, m = obs["candidates"].shape[:2]
        explore = gen.random(batch) < self.epsilon
        slates = self.greedy(obs)
        if explore.any():
            slates[explore] = random_slates(gen, int(explore.sum()), m, self.k)
        return slates, self.propensities(obs, slates)

    def prefix_probability(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        uniform = super().prefix_probability(obs, slates)
        same = np.cumprod(slates == self.greedy(obs), axis=1).astype(np.float64)
        return self.epsilon * uniform + (1.0 - self.epsilon) * same

    def marginals(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        m = obs["candidates"].shape[1]
        return self.epsilon / m + (1.0 - self.epsilon) * (slates == self.greedy(obs))

    def canonical_order(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(B, m) new label of every candidate: the popularity slate's j-th item becomes
        candidate j, the others follow in their order."""
        batch, m = obs["candidates"].shape[:2]
        greedy = self.greedy(obs)
        in_greedy = np.zeros((batch, m), dtype=bool)
        np.put_along_axis(in_greedy, greedy, True, axis=1)
        order = np.concatenate([greedy, np.argsort(in_greedy, axis=1, kind="stable")[:, :m - self.k]],
                               axis=1)  # old label of each new label
        labels = np.empty_like(order)
        np.put_along_axis(labels, order, np.arange(m)[None].repeat(batch, 0), axis=1)
        return labels

    def gram(self, m: int) -> np.ndarray:
        """``epsilon Gamma_uniform + (1 - epsilon) g g^T``, ``g`` the canonical popularity slate
        (candidate j at position j)."""
        g = np.zeros(self.k * m)
        g[np.arange(self.k) * m + np.arange(self.k)] = 1.0
        return self.epsilon * _uniform_gram(m, self.k) + (1.0 - self.epsilon) * np.outer(g, g)


#: Logging policies by name (``recsim ope --logging``).
LOGGING_POLICIES = {"uniform": UniformLogging, "epsilon_slate": EpsilonSlateLogging}
