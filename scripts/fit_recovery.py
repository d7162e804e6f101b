"""How well ``recsim fit`` recovers hidden worlds: fields, held-out statistics, policy returns.

For each hidden world (:func:`hidden_world`: every fitted field drawn uniformly in a
range around the default, a random choice model and catalog), log ``--rows`` interactions with
epsilon-popularity (or ``--logging epsilon_affinity``) logging, hold out 20% of the users, fit, and report

* each fitted field against the truth: inside its 95% interval, or within 10%;
* the held-out statistics within sampling error;
* the lifetime return of random, oracle-myopic and logreg (trained ``--train-steps`` on each
  world) on the true and on the fitted world, ``--users`` held-out users each;
* the 95% range of the fit-trained policies' returns over ``--draws`` worlds drawn from the
  fit's uncertainty (:func:`~recsim_gym.experiments.fit_report.return_interval`), and whether
  the same policies' return on the true world lies inside it.

``python scripts/fit_recovery.py --worlds 0 1 2 --rows 100000`` (docs/fit.md has its output).
``--diagnose`` fits nothing: it prints, at each world's true Params, how much of each field's
effect on the auxiliary statistics the other fields can reproduce (:func:`collinearity`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from recsim_gym.agents import registry
from recsim_gym.env import seeds
from recsim_gym.env.logs import generate_logs
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import evaluate, make_train_env
from recsim_gym.experiments.fit import FIT_FIELDS, FitProblem, _jacobian, _vector, fit_world
from recsim_gym.experiments.fit_report import compare, return_interval, simulate_fitted, split_for_fit

POLICIES = ("random", "oracle_myopic", "logreg")

#: Where the hidden worlds' fitted fields are drawn (uniformly), inside the fit's search bounds.
HIDDEN_RANGES = {
    "affinity_weight": (2.0, 6.0), "appeal_weight": (2.0, 6.0), "fatigue_weight": (1.0, 5.0),
    "no_click_utility": (2.0, 4.0), "position_decay": (0.7, 0.95), "conversion_bias": (-3.0, -1.0),
    "conversion_affinity": (0.5, 1.5), "conversion_quality": (2.0, 4.0), "conversion_price": (0.5, 1.5),
    "churn_base": (0.001, 0.005), "churn_scale": (0.02, 0.08), "satisfaction_rate": (0.1, 0.3),
    "no_click_penalty": (0.01, 0.05), "interest_update_rate": (0.02, 0.1), "interest_noise": (0.005, 0.02),
}


def hidden_world(seed: int) -> dict:
    """A randomly drawn world: every fitted field uniform in :data:`HIDDEN_RANGES`, a choice
    model and a catalog of its own."""
    gen = np.random.default_rng([seed, 27])
    world = {name: float(gen.uniform(*HIDDEN_RANGES[name])) for name in FIT_FIELDS}
    world.update(choice_model="mnl" if gen.random() < 0.5 else "cascade",
                 catalog_seed=int(gen.integers(1, 10**6)))
    return world




def collinearity(problem: FitProblem, params) -> dict[str, dict]:
    """Per fitted field, at ``params``: the R² of its Jacobian column on the other fields'
    columns (the share of its effect on the statistics that they can reproduce; variance
    inflation ``1 / (1 - R²)``), the size of the rest (``unique``: about the inverse of the
    field's standard error as a share of its search range, for one log's worth of noise) and
    the three fields whose columns are closest (cosine). Columns are weighted as the fit weighs
    the statistics and scaled to the search ranges."""
    names = list(FIT_FIELDS)
    span = np.array([high - low for low, high in FIT_FIELDS.values()])
    jac = np.sqrt(problem.weight)[:, None] * _jacobian(_vector(params), problem.simulate) * span[None, :]
    unit = jac / np.maximum(np.linalg.norm(jac, axis=0), 1e-300)
    cosine = unit.T @ unit
    out = {}
    for i, name in enumerate(names):
        others = np.delete(jac, i, axis=1)
        rest = jac[:, i] - others @ np.linalg.lstsq(others, jac[:, i], rcond=None)[0]
        r2 = 1.0 - np.sum(rest ** 2) / max(np.sum(jac[:, i] ** 2), 1e-300)
        closest = sorted((j for j in range(len(names)) if j != i), key=lambda j: -abs(cosine[i, j]))[:3]
        unique = float(np.linalg.norm(rest))
        out[name] = {"r2": float(r2), "unique": unique,
                     "closest": {names[j]: float(cosine[i, j]) for j in closest}}
    return out


def trained_policies(params, train_steps: int) -> dict:
    """Each of :data:`POLICIES`, trained ``train_steps`` on ``params`` where it learns."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for name in POLICIES:
        torch.manual_seed(0)
        agent = registry.make(name, params=params, seed=0)
        if callable(getattr(agent, "learn", None)):
            agent.learn(make_train_env(agent, params, 64, seeds.train_seed(0)), train_steps)
        out[name] = agent
    return out


def mean_return(agent, params, users: int) -> float:
    """Mean lifetime return of ``agent`` on ``users`` evaluation users of ``params``."""
    return float(evaluate(agent, params, users, seed=seeds.eval_seed(0)).means()["return"])


def main() -> None:
    """Run every world and print one line per field and a summary per world."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument("--draws", type=int, default=16,
                        help="worlds drawn from the fit's uncertainty for the return intervals")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--diagnose", action="store_true",
                        help="fit nothing: print each field's collinearity at the true Params")
    parser.add_argument("--logging", choices=("epsilon_popularity", "epsilon_affinity"),
                        default="epsilon_popularity", help="the logs' logging policy (epsilon 0.3)")
    args = parser.parse_args()
    meta = {"logging_policy": args.logging, "epsilon": 0.3, "batch_size": 500, "max_steps": 200,
            "num_candidates": 20}
    report = []
    for seed in args.worlds:
        hidden = hidden_world(seed)
        true = make_simulator("default", **hidden).params
        logs = generate_logs(n_steps=args.rows, batch_size=500, sim=make_simulator(params=true), seed=seed,
                             first_user=20_000_000 + seed * 1_000_000, policy=args.logging)
        train, train_meta, heldout = split_for_fit(logs, meta, 0.2)
        if args.diagnose:
            with tempfile.TemporaryDirectory() as tmp:
                problem = FitProblem(train, train_meta, tmp)
                table = collinearity(problem, true)
            print(f"\nworld {seed}: {len(problem.names)} statistics; share of each field's effect that "
                  "the other fields reproduce (R²)")
            for name, row in table.items():
                closest = ", ".join(f"{n} {c:+.2f}" for n, c in row["closest"].items())
                print(f"  {name:22s} R² {row['r2']:.3f}  unique {row['unique']:8.1f}  closest: {closest}")
            report.append({"world": seed, "collinearity": table})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = fit_world(train, train_meta, tmp)
            seconds = time.perf_counter() - start
            checks = compare(heldout, simulate_fitted(result, meta, len(logs["user"]), 0.2), 16)
            on_true = trained_policies(true, args.train_steps)
            on_fit = trained_policies(result.params(), args.train_steps)
            returns_true = {name: mean_return(agent, true, args.users) for name, agent in on_true.items()}
            intervals = {name: return_interval(agent, result, args.users, args.draws)
                         for name, agent in on_fit.items()}
            returns_fit = {name: iv["fitted"] for name, iv in intervals.items()}
            transfer = {name: mean_return(agent, true, args.users) for name, agent in on_fit.items()}
        fields = []
        for name in FIT_FIELDS:
            iv, value = result.intervals[name], float(getattr(true, name))
            fields.append({"field": name, "true": value, "fit": iv["value"], "low": iv["low"],
                           "high": iv["high"], "inside": iv["low"] <= value <= iv["high"],
                           "within_10pct": abs(iv["value"] - value) <= 0.1 * abs(value)})
        row = {"world": seed, "choice_model": hidden["choice_model"],
               "fitted_choice": result.overrides["choice_model"],
               "fit_seconds": seconds, "train_rows": len(train["user"]), "fields": fields,
               "checks_within": sum(c["within_sampling_error"] for c in checks), "checks": len(checks),
               "checks_outside": [c["statistic"] for c in checks if not c["within_sampling_error"]],
               "returns_true": returns_true, "returns_fitted": returns_fit,
               "return_intervals": {name: {"low": iv["low"], "high": iv["high"], "true_world": transfer[name],
                                           "inside": iv["low"] <= transfer[name] <= iv["high"]}
                                    for name, iv in intervals.items()}}
        report.append(row)
        print(f"\nworld {seed} ({hidden['choice_model']}; fitted {row['fitted_choice']}), "
              f"fit {seconds:.0f} s "
              f"on {len(train['user']):,} rows")
        for f in fields:
            mark = "inside" if f["inside"] else ("within 10%" if f["within_10pct"] else "MISS")
            print(f"  {f['field']:22s} true {f['true']:9.4g}  fit {f['fit']:9.4g} [{f['low']:9.4g}, "
                  f"{f['high']:9.4g}]  {mark}")
        print(f"  held-out checks within sampling error: {row['checks_within']}/{row['checks']} "
              f"(outside: {row['checks_outside']})")
        for name in POLICIES:
            a, b = returns_true[name], returns_fit[name]
            iv = row["return_intervals"][name]
            print(f"  {name:14s} return true {a:7.1f}  fitted {b:7.1f}  ({100 * (b - a) / a:+.1f}%)  "
                  f"trained on the fit: true world {iv['true_world']:7.1f}, fit's draws "
                  f"[{iv['low']:7.1f}, {iv['high']:7.1f}] {'inside' if iv['inside'] else 'OUTSIDE'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
