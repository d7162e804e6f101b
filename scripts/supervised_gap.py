"""Where the supervised baselines' gap to oracle-myopic comes from: restricted oracles.

Each restricted oracle plays the exact myopic MNL slate (Dinkelbach, like ``oracle_myopic``)
with the TRUE choice/conversion equations, but replaces part of the latent state by what can
be known from observations:

* ``interest=declared``: interest = E[interest | declared topics] (0.75 on declared topics,
  0 elsewhere: the profile prior of the world), instead of the true interest;
* ``quality=appeal``: quality = E[quality | appeal] (clickbait iff appeal > the regular max),
  instead of the item's own quality (which a per-item model can learn from logs);
* ``serving=topk``: top k by expected reward per item instead of the MNL-optimal slate;
* ``quality_bonus=b``: each click is also worth ``b * quality`` (as
  :func:`recsim_gym.agents.reference.quality_aware`): not myopic any more, it shows what valuing quality
  beyond the next click is worth when only part of the state is known.

``python scripts/supervised_gap.py --preset static --users 2000 --seeds 3``
(``--preset default`` for the world with long-term effects)
(tuning seeds 100.. by default, not the evaluation harness's seeds).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from recsim_gym.agents import reference, slates
from recsim_gym.agents.base import BaseAgent
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import evaluate


class RestrictedOracle(BaseAgent):
    """Myopic oracle that may only use part of the latent state (see module docstring)."""

    requires_latent = True

    def __init__(self, params: Any, interest: str = "true", quality: str = "true",
                 serving: str = "mnl", quality_bonus: float = 0.0):
        self.params, self.interest, self.quality, self.serving = params, interest, quality, serving
        self.quality_bonus = quality_bonus

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        p = self.params
        t = p.num_topics
        obs = dict(obs)
        if self.interest == "declared":
            obs["interest"] = 0.75 * obs["user"][:, :t]
        if self.quality == "appeal":
            appeal = obs["candidates"][..., t]
            clickbait = appeal > p.regular_appeal_max
            regular_mean = p.quality_alpha / (p.quality_alpha + p.quality_beta)
            obs["candidate_quality"] = np.where(clickbait, p.clickbait_quality_max / 2, regular_mean)
        terms = reference.item_terms(obs, p)
        weight = np.exp(terms["utility"] - p.no_click_utility)
        value = terms["value"] + self.quality_bonus * terms["quality"]
        if self.serving == "topk":
            prob = weight / (1.0 + weight)
            return slates.top_k(prob * value, p.slate_size)
        return slates.dinkelbach_slate(weight, value, p.position_decay ** np.arange(p.slate_size))


VARIANTS = {
    "oracle": {},
    "oracle topk": {"serving": "topk"},
    "interest=declared": {"interest": "declared"},
    "quality=appeal": {"quality": "appeal"},
    "interest=declared, quality=appeal": {"interest": "declared", "quality": "appeal"},
    "oracle, quality bonus 3": {"quality_bonus": 3.0},
    "interest=declared, quality bonus 3": {"interest": "declared", "quality_bonus": 3.0},
    "interest=declared, quality=appeal, bonus 3": {"interest": "declared", "quality": "appeal",
                                                   "quality_bonus": 3.0},
}


def main(argv: list[str] | None = None) -> None:
    """Evaluate every restricted oracle; print mean lifetime return and its ratio to the oracle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="static")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=100_000_000)
    args = parser.parse_args(argv)
    params = make_simulator(args.preset).params
    base = None
    for name, kwargs in VARIANTS.items():
        returns = [evaluate(RestrictedOracle(params, **kwargs), args.preset, args.users,
                            seed=args.first_seed + s * 1_000_000).means()["return"]
                   for s in range(args.seeds)]
        mean = float(np.mean(returns))
        base = base or mean
        print(f"{name:<36} {mean:7.1f}  ({mean / base:.3f} of oracle)", flush=True)


if __name__ == "__main__":
    main()
