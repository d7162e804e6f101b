"""Reference agents every comparison needs: uniform random and the oracle myopic policy."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsim_gym.agents import heuristics
from recsim_gym.agents.base import BaseAgent, Observation


class RandomAgent(BaseAgent):
    """Uniformly random slates without repeats.

    :param params: the world's Params (for ``slate_size``)
    :param seed: seed of the agent's own random generator
    """

    def __init__(self, params: Any, seed: int = 0):
        self.slate_size = params.slate_size
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        """k random distinct candidates per user."""
        batch, m = obs["candidates"].shape[:2]
        return np.argsort(self.rng.random((batch, m)), axis=1)[:, : self.slate_size]


class OracleMyopicAgent(BaseAgent):
    """The slate with the highest immediate expected reward under the TRUE choice and
    conversion model, computed from the latent state (``observe_latent=True``): an upper bound
    for any myopic policy, and the declared exception to "agents see only observations".

    On the default world it is exact for both choice models: MNL by Dinkelbach's iteration
    (:func:`recsim_gym.agents.heuristics.mnl_best_slate`), cascade by an exchange-argument order and a
    dynamic programme (:func:`recsim_gym.agents.heuristics.cascade_best_slate`). On ``interest_evolution``
    it is RecSim's myopic policy (maximal click probability; every click is worth the same
    watch time).

    :param params: the world's Params
    """

    requires_latent = True

    def __init__(self, params: Any, seed: int = 0):
        self.params = params

    def act(self, obs: Observation) -> np.ndarray:
        """The myopically best slate per user."""
        if hasattr(self.params, "affinity_weight"):
            if self.params.choice_model == "cascade":
                return heuristics.cascade_myopic(obs, self.params)
            return heuristics.myopic_greedy(obs, self.params)
        from recsim_gym.agents.recsim_reference import MyopicPolicy

        return MyopicPolicy(self.params)(obs)
