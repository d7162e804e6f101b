"""A short demo: hand-written policies on a preset, lifetime returns with 95% CIs, and a plot.

``python scripts/demo.py`` runs cohorts of simulated users to the end of their lifetimes
(churn or the step limit) under four policies - uniform random, highest-appeal (a click
maximiser's instinct), the oracle myopic optimum and a quality-aware oracle - prints
lifetime return, session length, CTR and conversion rate per policy with 95% confidence
intervals over seeds, and writes ``lifetime_return.png`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsim_gym.agents import reference
from recsim_gym.env import Params
from recsim_gym.env.simulator import all_preset_names, make_simulator
from recsim_gym.experiments.evaluate import evaluate
from recsim_gym.experiments.statistics import t_interval


class OraclePolicy:
    """A latent-state policy of :mod:`recsim_gym.agents.reference` as an agent."""

    requires_latent = True

    def __init__(self, policy: Callable[[dict[str, np.ndarray], Params], np.ndarray], params: Params):
        self.policy, self.params = policy, params

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's slates."""
        return self.policy(obs, self.params)


POLICIES: dict[str, tuple[str, Callable[[Params, int], object]]] = {
    "random": ("uniform random slates", lambda p, seed: reference.RandomAgent(p, seed)),
    "highest_appeal": ("the k most appealing candidates",
                       lambda p, seed: OraclePolicy(reference.highest_appeal, p)),
    "oracle_myopic": ("best immediate expected reward (reads the latent state)",
                      lambda p, seed: OraclePolicy(reference.myopic_greedy, p)),
    "quality_aware": ("oracle myopic plus a bonus for quality (reads the latent state)",
                      lambda p, seed: OraclePolicy(reference.quality_aware, p)),
}


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (``python scripts/demo.py --help``)."""
    parser = argparse.ArgumentParser(prog="python scripts/demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", choices=all_preset_names(),
                        help="world preset (default: default)")
    parser.add_argument("--users", type=int, default=1000, help="users per seed (default: 1000)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default: 5)")
    parser.add_argument("--first-seed", type=int, default=10_000,
                        help="seed of the first cohort; cohorts use disjoint user seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"),
                        help="output directory (default: runs/demo)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seeds < 1:
        parser.error(f"--users and --seeds must be >= 1, got {args.users} and {args.seeds}")

    params = make_simulator(args.preset).params
    results: dict[str, dict] = {}
    from tqdm import tqdm
    jobs = [(name, s) for name in POLICIES for s in range(args.seeds)]
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in POLICIES}
    for name, s in tqdm(jobs, desc=f"demo on {args.preset}", unit="cohort", file=sys.stderr):
        seed = args.first_seed + s * args.users
        agent = POLICIES[name][1](params, seed)
        means = evaluate(agent, args.preset, args.users, seed=seed).means()
        per_seed[name].append({"return": means["return"], "steps": means["session_length"],
                               "ctr": means["ctr"], "cvr": means["conversion_rate"]})
    for name, rows in per_seed.items():
        results[name] = {metric: t_interval(np.array([r[metric] for r in rows]))
                         for metric in ("return", "steps", "ctr", "cvr")}

    print(f"\nPreset {args.preset!r}: {args.seeds} seeds x {args.users} users, lifetime metrics "
          "(mean [95% CI over seeds])")
    header = f"{'policy':<16} {'lifetime return':>26} {'session length':>24} {'CTR':>8} {'conv. rate':>11}"
    print(header + "\n" + "-" * len(header))
    for name, r in results.items():
        ret, steps = r["return"], r["steps"]
        print(f"{name:<16} {ret[0]:>8.1f} [{ret[1]:>6.1f}, {ret[2]:>6.1f}] "
              f"{steps[0]:>8.1f} [{steps[1]:>5.1f}, {steps[2]:>5.1f}] "
              f"{r['ctr'][0]:>8.3f} {r['cvr'][0]:>11.3f}")
    for name, (description, _) in POLICIES.items():
        print(f"  {name}: {description}")

    args.out.mkdir(parents=True, exist_ok=True)
    plot_path = args.out / "lifetime_return.png"
    _plot(results, args.preset, args.seeds, args.users, plot_path)
    payload = {"preset": args.preset, "users_per_seed": args.users, "seeds": args.seeds,
               "first_seed": args.first_seed, "results": results}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {plot_path} and {args.out / 'results.json'}")
    return payload


def _plot(results: dict, preset: str, seeds: int, users: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    means = np.array([results[n]["return"][0] for n in names])
    errors = np.array([[means[i] - results[n]["return"][1], results[n]["return"][2] - means[i]]
                       for i, n in enumerate(names)]).T
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, means, yerr=np.nan_to_num(errors), capsize=6,
           color=["#999999", "#d62728", "#1f77b4", "#2ca02c"][: len(names)])
    ax.set_ylabel("lifetime return per user (reward units)")
    ax.set_title(f"{preset}: mean lifetime return, 95% CI over {seeds} seeds x {users} users")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
