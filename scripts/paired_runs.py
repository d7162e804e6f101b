"""Paired comparison of one agent's final return across two run directories (same seeds and
held-out users), e.g. the same config at two budgets:

``python scripts/paired_runs.py experiments/results/interest_evolution
experiments/results/interest_evolution_100k --agent slateq``

Prints the per-seed returns, the mean difference (first minus second) with a 95% Student-t
interval over seeds, and how many seeds improved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recsim_gym.experiments.statistics import t_interval


def final_returns(run: Path, agent: str) -> dict[int, float]:
    """The final return per seed of ``agent``, as the run's ``summary.json`` holds it."""
    agents = json.loads((run / "summary.json").read_text())["agents"]
    if agent not in agents:
        raise SystemExit(f"{run}: no evaluations of agent {agent!r}")
    entry = agents[agent]
    return dict(zip(entry["seeds"], entry["metrics"]["return"]["per_seed"], strict=True))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="run directory (its summary.json)")
    parser.add_argument("second", type=Path, help="run directory to compare against")
    parser.add_argument("--agent", required=True, help="agent label in both runs")
    args = parser.parse_args(argv)
    a, b = final_returns(args.first, args.agent), final_returns(args.second, args.agent)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise SystemExit(f"--agent {args.agent}: the runs share {len(seeds)} seed(s); "
                         "a paired interval needs 2")
    for seed in seeds:
        print(f"seed {seed}: {a[seed]:8.1f} {b[seed]:8.1f} {a[seed] - b[seed]:+8.1f}")
    diff = np.array([a[s] - b[s] for s in seeds])
    _, low, high = t_interval(diff)
    print(f"{args.agent}: {np.mean([a[s] for s in seeds]):.1f} vs {np.mean([b[s] for s in seeds]):.1f}; "
          f"difference {diff.mean():+.1f} [{low:+.1f}, {high:+.1f}] over {len(seeds)} seeds, "
          f"{int((diff > 0).sum())} improved")


if __name__ == "__main__":
    main()
