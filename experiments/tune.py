"""Tuning runs for any registered agent on TUNING seeds (never the harness's seeds).

Trains one agent per seed as the runner does (:func:`recsim_gym.experiments.evaluate.evaluate_agent`:
``learn(env, train_steps)`` on a 64-user same-step-autoreset env) and evaluates it on
held-out users seeded from ``TUNE_SEED_BASE`` (far from the evaluation harness's
``EVAL_SEED_BASE``); agent seeds start at 100 so the logged training users differ from those
of the harness's seeds 0..9 too.

``python -m recsim_gym.experiments.tune --preset static --agent logreg --seeds 2 --kwargs '{"epochs": 3}'``
``python -m recsim_gym.experiments.tune --agent slateq --kwargs '{"learning_rate": 3e-4}'``
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from recsim_gym.experiments.evaluate import evaluate_agent

TUNE_SEED_BASE = 300_000_000
FIRST_AGENT_SEED = 100


def main(argv: list[str] | None = None) -> None:
    """Train and evaluate; print per-seed returns, their mean and the fit time."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--agent", default="logreg")
    parser.add_argument("--kwargs", default="{}", help="agent keyword arguments (JSON)")
    parser.add_argument("--train-steps", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=FIRST_AGENT_SEED,
                        help=f"first tuning seed (>= {FIRST_AGENT_SEED}; default {FIRST_AGENT_SEED})")
    args = parser.parse_args(argv)
    if args.first_seed < FIRST_AGENT_SEED:
        parser.error(f"--first-seed must be >= {FIRST_AGENT_SEED} (seeds below are the harness's), "
                     f"got {args.first_seed}")
    torch.set_num_threads(1)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results = evaluate_agent(args.agent, args.preset, args.users, seeds, args.train_steps,
                             agent_kwargs=json.loads(args.kwargs),
                             train_seed_of=lambda s: s * 1_000_000,
                             eval_seed_of=lambda s: TUNE_SEED_BASE + s * 1_000_000)
    returns = [r.means()["return"] for r in results]
    seconds = [r.extra["train_seconds"] for r in results]
    for s, r, ret in zip(seeds, results, returns, strict=True):
        print(f"  seed {s}: return {ret:.1f}, learn {r.extra['train_seconds']:.1f}s "
              f"(fit {r.extra.get('fit_seconds', float('nan')):.1f}s)", flush=True)
    print(f"{args.agent} {args.kwargs}: return {np.mean(returns):.1f} "
          f"learn {np.mean(seconds):.1f}s", flush=True)


if __name__ == "__main__":
    main()
