"""A custom agent in one file: show the candidates closest to the user's declared topics that
do not look like clickbait. Run it: ``python examples/custom_agent.py``; use it in a config
as ``name: examples.custom_agent:TopicMatcher`` (from the repository root) or register it."""

import numpy as np

from recsim_gym.agents import registry
from recsim_gym.agents.base import BaseAgent
from recsim_gym.experiments.evaluate import evaluate


class TopicMatcher(BaseAgent):
    """Score = topic match with declared interests, minus a penalty for very high appeal."""

    def __init__(self, params, appeal_cap: float = 0.6):
        self.k, self.t, self.appeal_cap = params.slate_size, params.num_topics, appeal_cap

    def act(self, obs: dict) -> np.ndarray:
        cand = obs["candidates"]  # (B, m, T+3): topic vector, appeal, price, popularity
        match = np.einsum("bmt,bt->bm", cand[..., : self.t], obs["user"][:, : self.t])
        score = match - (cand[..., self.t] >= self.appeal_cap)  # skip likely clickbait
        return np.argsort(-score, axis=1)[:, : self.k]  # best first


registry.register("topic_matcher", TopicMatcher, "declared-topic match without clickbait")

if __name__ == "__main__":
    from recsim_gym.env.simulator import make_simulator

    params = make_simulator("default").params
    for name in ("random", "topic_matcher"):
        result = evaluate(registry.make(name, params=params), "default", n_users=1000, seed=0)
        print(f"{name:<14} lifetime return {result.means()['return']:.1f}")
