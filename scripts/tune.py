"""Tuning runs for any registered agent on TUNING seeds (never the harness's seeds).

Trains one agent per seed as the runner does (:func:`recsim_gym.experiments.evaluate.evaluate_agent`:
``learn(env, train_steps)`` on a 64-user same-step-autoreset env) and evaluates it on
held-out tuning users (:mod:`recsim_gym.env.seeds`: far from the harness's evaluation users);
agent seeds start at ``FIRST_TUNING_SEED`` (100) so the training users differ from the
harness's too.

``python scripts/tune.py --preset static --agent logreg --seeds 2 --kwargs '{"epochs": 3}'``
``python scripts/tune.py --agent slateq --kwargs '{"learning_rate": 3e-4}'``
``python scripts/tune.py --worlds 0 1 2 --agent slateq`` (tuning worlds of the suite; held-out
worlds are refused). Across worlds, prefer ``recsim run`` with a config whose
``env.suite`` is ``tuning``: it normalises each world by random and oracle-myopic.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from recsim_gym.env import seeds
from recsim_gym.experiments.evaluate import evaluate_agent


def main(argv: list[str] | None = None) -> None:
    """Train and evaluate; print per-seed returns, their mean and the fit time."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--worlds", type=int, nargs="+", default=None,
                        help="tuning worlds of the suite (world seeds < 1000) instead of --preset")
    parser.add_argument("--agent", default="logreg")
    parser.add_argument("--kwargs", default="{}", help="agent keyword arguments (JSON)")
    parser.add_argument("--train-steps", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    first = seeds.FIRST_TUNING_SEED
    parser.add_argument("--world-overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--first-seed", type=int, default=first,
                        help=f"first tuning seed (>= {first}; default {first})")
    args = parser.parse_args(argv)
    try:
        seeds.check_tuning_seed(args.first_seed)
    except ValueError as err:
        parser.error(f"--first-seed: {err}")
    if args.worlds is not None:
        from recsim_gym.env.suite import sample_world

        for world in args.worlds:
            try:
                seeds.check_tuning_world(world)
            except ValueError as err:
                parser.error(f"--worlds: {err}")
        for world in args.worlds:
            print(sample_world(world).describe(), flush=True)
            main([*_without_worlds(argv), "--preset", "default", "--world-overrides",
                  json.dumps(sample_world(world).overrides)])
        return
    torch.set_num_threads(1)
    tuning = range(args.first_seed, args.first_seed + args.seeds)
    results = evaluate_agent(args.agent, args.preset, args.users, tuning, args.train_steps,
                             agent_kwargs=json.loads(args.kwargs),
                             train_seed_of=seeds.tune_train_seed, eval_seed_of=seeds.tune_eval_seed,
                             **json.loads(args.world_overrides))
    returns = [r.means()["return"] for r in results]
    seconds = [r.extra["train_seconds"] for r in results]
    for s, r, ret in zip(tuning, results, returns, strict=True):
        print(f"  seed {s}: return {ret:.1f}, learn {r.extra['train_seconds']:.1f}s "
              f"(fit {r.extra.get('fit_seconds', float('nan')):.1f}s)", flush=True)
    print(f"{args.agent} {args.kwargs}: return {np.mean(returns):.1f} "
          f"learn {np.mean(seconds):.1f}s", flush=True)


def _without_worlds(argv: list[str] | None) -> list[str]:
    """``argv`` (default: the command line) without ``--worlds`` and its values."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if "--worlds" not in args:
        return args
    start = args.index("--worlds")
    end = start + 1
    while end < len(args) and not args[end].startswith("--"):
        end += 1
    return args[:start] + args[end:]


if __name__ == "__main__":
    main()
