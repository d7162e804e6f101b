"""Random and myopic policies on RecSim's interest-evolution preset: returns and episode lengths.

Reproduces the RecSim/SlateQ reference figures (RecSim's own code: about 154-155 minutes of
watch time per session for random slates and 166 for the myopic policy at m = 10, k = 2; random
episodes last a bit over 80 steps)::

    python scripts/recsim_reference.py --candidates 10 --slate 2 --users 5000 --seeds 5

Each seed is one batch of ``--users`` users (one episode each) run through
``gym.make_vec("recsim/interest_evolution-v0", exposure="recsim")``; both policies meet the
same users (same episode keys). Printed: mean episode return with a 95% interval over all
episodes (episodes are i.i.d.) and over the per-seed means (Student t), the paired
myopic - random difference, and episode-length statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

import recsim_gym.env  # noqa: F401  (registers the ids)
from recsim_gym.agents.reference import OracleMyopicAgent, RandomAgent
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import evaluate
from recsim_gym.experiments.statistics import t_interval

REFERENCE_POLICIES = {"random": RandomAgent, "myopic": OracleMyopicAgent}

ENV_ID = "recsim/interest_evolution-v0"


def run_episodes(policy: str, users: int, seed: int, candidates: int = 10, slate: int = 2,
                 **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """One episode for each of ``users`` users (slot ``b`` seeded ``seed * users + b``).

    Returns per-episode total reward (minutes watched) and length (steps), each (users,).
    """
    overrides.setdefault("exposure", "recsim")
    params = make_simulator("interest_evolution", num_candidates=candidates, slate_size=slate,
                            **overrides).params
    result = evaluate(REFERENCE_POLICIES[policy](params, seed=seed), params, users, seed=seed * users)
    return result.per_user["return"], result.per_user["session_length"].astype(np.int64)


def _interval(values: np.ndarray) -> str:
    mean, low, high = t_interval(values)
    return f"{mean:8.2f}  [{low:.2f}, {high:.2f}]"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and print the table; returns the figures as a dict."""
    parser = argparse.ArgumentParser(
        prog="python scripts/recsim_reference.py",
        description="Mean episode return (watch time, 95%% CIs) and episode lengths of the random "
                    "and myopic policies on the interest_evolution preset (RecSim's model).")
    parser.add_argument("--candidates", type=int, default=10, help="candidates m (default 10)")
    parser.add_argument("--slate", type=int, default=2, help="slate size k (default 2)")
    parser.add_argument("--users", type=int, default=5000, help="users (episodes) per seed")
    parser.add_argument("--seeds", type=int, default=5, help="independent seeds (user batches)")
    parser.add_argument("--policies", nargs="+", default=list(REFERENCE_POLICIES),
                        choices=list(REFERENCE_POLICIES), help="policies to run")
    parser.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    print(f"interest_evolution (RecSim model), m={args.candidates}, k={args.slate}, "
          f"{args.users} users x {args.seeds} seeds per policy")
    results: dict[str, Any] = {}
    per_episode: dict[str, np.ndarray] = {}
    for name in args.policies:
        start = time.perf_counter()
        runs = [run_episodes(name, args.users, s, args.candidates, args.slate)
                for s in range(args.seeds)]
        returns = np.concatenate([r for r, _ in runs])
        lengths = np.concatenate([n for _, n in runs])
        seed_means = np.array([r.mean() for r, _ in runs])
        per_episode[name] = returns
        mean, low, high = t_interval(returns)
        s_mean, s_low, s_high = t_interval(seed_means)
        results[name] = {
            "return_mean": mean, "return_ci95": [low, high],
            "return_seed_means": seed_means.tolist(), "return_seed_ci95": [s_low, s_high],
            "length_mean": float(lengths.mean()), "length_std": float(lengths.std()),
            "length_median": float(np.median(lengths)),
            "length_p5_p95": [float(np.percentile(lengths, 5)), float(np.percentile(lengths, 95))],
            "length_min_max": [int(lengths.min()), int(lengths.max())],
            "seconds": time.perf_counter() - start,
        }
        print(f"\n{name}")
        print(f"  return (all {len(returns)} episodes)  {_interval(returns)}")
        print(f"  return (over {args.seeds} seed means)  {_interval(seed_means)}  "
              f"seeds: {', '.join(f'{v:.2f}' for v in seed_means)}")
        print(f"  episode length  mean {lengths.mean():.2f}  std {lengths.std():.2f}  median "
              f"{np.median(lengths):.0f}  p5-p95 {np.percentile(lengths, 5):.0f}-"
              f"{np.percentile(lengths, 95):.0f}  min-max {lengths.min()}-{lengths.max()}  "
              f"({results[name]['seconds']:.1f} s)")
    if {"random", "myopic"} <= set(per_episode):
        diff = per_episode["myopic"] - per_episode["random"]
        mean, low, high = t_interval(diff)
        results["myopic_minus_random"] = {"mean": mean, "ci95": [low, high]}
        print(f"\nmyopic - random (paired, same users)  {_interval(diff)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
