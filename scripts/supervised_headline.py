"""Issue 7's acceptance check: best supervised model vs oracle-myopic, paired by seed.

Uses the evaluation harness (:func:`recsim_gym.experiments.evaluate.evaluate_agent`: its seeds, training
and held-out users) for ``oracle_myopic`` and the given click models, and prints per seed the
lifetime returns, the learn (log + fit) time, and over seeds the mean with a 95% Student-t CI
and the paired ratio model / oracle with its 95% CI.

``python scripts/supervised_headline.py --env static --agents logreg --seeds 5``
"""

from __future__ import annotations

import argparse

import numpy as np

from recsim_gym.experiments.evaluate import evaluate_agent
from recsim_gym.experiments.statistics import t_interval


def main(argv: list[str] | None = None) -> None:
    """Evaluate and print the comparison."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="static")
    parser.add_argument("--agents", nargs="+", default=["logreg"])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=200_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    oracle = np.array([r.means()["return"] for r in
                       evaluate_agent("oracle_myopic", args.env, args.users, seeds)])
    mean, low, high = t_interval(oracle)
    print(f"{args.env} oracle_myopic: {mean:.1f} [{low:.1f}, {high:.1f}]  per seed "
          f"{np.round(oracle, 1).tolist()}", flush=True)
    for name in args.agents:
        results = evaluate_agent(name, args.env, args.users, seeds, args.train_steps)
        ours = np.array([r.means()["return"] for r in results])
        seconds = [r.extra["train_seconds"] for r in results]
        mean, low, high = t_interval(ours)
        ratio = t_interval(ours / oracle)
        print(f"{args.env} {name}: {mean:.1f} [{low:.1f}, {high:.1f}]  per seed "
              f"{np.round(ours, 1).tolist()}; / oracle {ratio[0]:.3f} [{ratio[1]:.3f}, "
              f"{ratio[2]:.3f}] (paired by seed); learn {np.mean(seconds):.1f}s "
              f"(max {np.max(seconds):.1f}s)", flush=True)


if __name__ == "__main__":
    main()
