"""How well ``recsim fit`` recovers hidden worlds: fields, held-out statistics, policy returns.

For each hidden world (:func:`hidden_world`: every fitted field drawn uniformly in a
range around the default, a random choice model and catalog), log ``--rows`` interactions with
epsilon-popularity (or ``--logging epsilon_affinity``) logging, hold out 20% of the users, fit, and report

* each fitted field against the truth: inside its 95% interval, or within 10%;
* the held-out statistics within sampling error;
* the lifetime return of random, oracle-myopic and logreg (trained ``--train-steps`` on each
  world) on the true and on the fitted world, ``--users`` held-out users each; and the same
  policy's two returns (the one trained on, or reading, the fit: on the fitted world and on the
  true world), which leave out how differently a learner trains on two worlds (logreg's return
  moves by 1-4% between training seeds on one world);
* the 95% range of the fit-trained policies' returns over ``--draws`` worlds drawn from the
  fit's uncertainty (:func:`~recsim_gym.experiments.fit_report.return_interval`), and whether
  the same policies' return on the true world lies inside it.

``python scripts/fit_recovery.py --worlds 0 1 2 --rows 100000`` (docs/fit.md has its output).
``--diagnose`` fits nothing: it prints, at each world's true Params, how much of each field's
effect on the auxiliary statistics the other fields can reproduce (:func:`collinearity`), the
standard error of ``churn_base`` that even an estimator knowing every user's satisfaction would
have on the same log (:func:`oracle_churn_se`), and how far that moves two policies' returns.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from recsim_gym.agents import registry
from recsim_gym.env import seeds
from recsim_gym.env.logs import generate_logs
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import make_train_env
from recsim_gym.experiments.fit import (
    CHURN_FIELDS,
    FIT_FIELDS,
    FitProblem,
    _jacobian,
    _vector,
    fit_world,
    item_evidence,
    last_rows,
)
from recsim_gym.experiments.fit_report import (
    compare,
    policy_return,
    return_interval,
    simulate_fitted,
    split_for_fit,
)

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


def satisfaction_paths(logs: dict[str, np.ndarray], quality: np.ndarray, initial: np.ndarray,
                       params) -> dict[str, np.ndarray]:
    """Each logged row's satisfaction after its step, replayed from what the simulator knows:
    every item's hidden ``quality``, each row's user's ``initial`` satisfaction and the true
    ``params`` (the kernel's ``s += rate (q - s)`` on a click, ``s *= 1 - penalty`` otherwise).
    Also its derivatives in ``satisfaction_rate`` and ``no_click_penalty`` (``d_rate``,
    ``d_penalty``) and the satisfaction before the step (``before``). Rows of a user must
    come in step order, as in a log."""
    user, position = logs["user"], logs["position"].astype(np.int64)
    order = np.lexsort((logs["step"], user))
    first = np.r_[True, user[order][1:] != user[order][:-1]]
    rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    clicked = position >= 0
    q = np.zeros(len(user))
    q[clicked] = quality[logs["slate_items"][clicked, position[clicked]]]
    rate, penalty = float(params.satisfaction_rate), float(params.no_click_penalty)
    out = {name: np.empty(len(user)) for name in ("after", "before", "d_rate", "d_penalty")}
    s = initial[order[first]].astype(np.float64)
    d_rate, d_penalty = np.zeros_like(s), np.zeros_like(s)
    users_at = np.cumsum(first) - 1  # each sorted row's user, 0..U-1
    for r in range(int(rank.max()) + 1):
        rows = order[rank == r]
        u = users_at[rank == r]
        out["before"][rows] = s[u]
        c, qu = clicked[rows], q[rows]
        d_rate[u] = np.where(c, qu - s[u] + (1 - rate) * d_rate[u], (1 - penalty) * d_rate[u])
        d_penalty[u] = np.where(c, (1 - rate) * d_penalty[u], -s[u] + (1 - penalty) * d_penalty[u])
        s[u] = np.where(c, s[u] + rate * (qu - s[u]), s[u] * (1 - penalty))
        out["after"][rows], out["d_rate"][rows], out["d_penalty"][rows] = s[u], d_rate[u], d_penalty[u]
    return out


def churn_information(paths: dict[str, np.ndarray], params) -> np.ndarray:
    """The Fisher information (4 x 4, :data:`CHURN_FIELDS`) of the exact session-end
    likelihood, ``P(leave) = churn_base + churn_scale (1 - s)^2`` per row, given satisfaction
    paths (:func:`satisfaction_paths`, rows whose end is unknown left out by the caller)."""
    gap = 1.0 - paths["after"]
    scale = float(params.churn_scale)
    hazard = float(params.churn_base) + scale * gap ** 2
    grad = np.stack([np.ones_like(gap), gap ** 2, -2 * scale * gap * paths["d_rate"],
                     -2 * scale * gap * paths["d_penalty"]], axis=1)
    return (grad / (hazard * (1 - hazard))[:, None]).T @ grad


def active_at_end(logs: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """The users still active when ``generate_logs`` stopped (its rows come in blocks of
    ``batch_size``, one per step, the last perhaps partial): their last rows are cut, not
    churned."""
    return np.unique(logs["user"][(len(logs["user"]) // batch_size - 1) * batch_size:])


def oracle_churn_se(logs: dict[str, np.ndarray], sim, cut_users: np.ndarray) -> dict[str, float]:
    """The standard errors of :data:`CHURN_FIELDS` for an estimator that knows every item's
    quality and every user's satisfaction, from ``logs`` of ``sim`` (all of a user's rows
    or none): a lower bound for any fit of those logs. The last rows of ``cut_users``
    (:func:`active_at_end`) and rows at ``max_steps`` say nothing of churn and are left out."""
    from recsim_gym.env import rng as recsim_rng

    params = sim.params
    user = logs["user"]
    ids, where = np.unique(user, return_inverse=True)
    initial = np.asarray(sim.reset(recsim_rng.seed_to_key(ids)).satisfaction, dtype=np.float64)[where]
    paths = satisfaction_paths(logs, sim.catalog.hidden[:, 1], initial, params)
    known = ~(last_rows(logs) & (np.isin(user, cut_users) | (logs["step"] >= params.max_steps - 1)))
    info = churn_information({name: v[known] for name, v in paths.items()}, params)
    return dict(zip(CHURN_FIELDS, np.sqrt(np.diag(np.linalg.inv(info))).tolist(), strict=True))


def churn_sensitivity(params, se: float, users: int) -> dict[str, tuple[float, float, float]]:
    """Random's and oracle-myopic's mean return with ``churn_base`` one ``se`` lower, as it
    is, and one ``se`` higher: how much a log's uncertainty about it moves a policy's return."""
    out = {}
    for name in ("random", "oracle_myopic"):
        values = []
        for shift in (-se, 0.0, se):
            world = params.replace(churn_base=max(0.0, params.churn_base + shift))
            values.append(policy_return(registry.make(name, params=world, seed=0), world, users))
        out[name] = tuple(values)
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


def main() -> None:
    """Run every world and print one line per field and a summary per world."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 1, 3],
                        help="hidden_world seeds (default: 0 1 3, two MNL worlds and the first cascade one)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument("--draws", type=int, default=16,
                        help="worlds drawn from the fit's uncertainty for the return intervals")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--diagnose", action="store_true",
                        help="fit nothing: print each field's collinearity at the true Params and the "
                             "bound on churn_base's standard error")
    parser.add_argument("--logging", choices=("epsilon_popularity", "epsilon_affinity"),
                        default="epsilon_popularity", help="the logs' logging policy (epsilon 0.3)")
    args = parser.parse_args()
    meta = {"logging_policy": args.logging, "epsilon": 0.3, "batch_size": 500, "max_steps": 200,
            "num_candidates": 20}
    report = []
    for seed in args.worlds:
        hidden = hidden_world(seed)
        true = make_simulator("default", **hidden).params
        sim = make_simulator(params=true)
        logs = generate_logs(n_steps=args.rows, batch_size=500, sim=sim, seed=seed,
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
            oracle = oracle_churn_se(train, sim, active_at_end(logs, meta["batch_size"]))
            span = FIT_FIELDS["churn_base"][1] - FIT_FIELDS["churn_base"][0]
            fit_se = span / table["churn_base"]["unique"]
            bound = oracle["churn_base"]
            print(f"  churn_base {true.churn_base:.4f}: the fit's unique part gives an se of {fit_se:.5f} "
                  f"({fit_se / true.churn_base:.0%}); knowing every user's satisfaction, {bound:.5f} "
                  f"({bound / true.churn_base:.0%})")
            moves = churn_sensitivity(true, bound, args.users)
            for name, (low, mid, high) in moves.items():
                print(f"  {name:14s} return {mid:7.1f}; churn_base -/+ that se: {low:7.1f} "
                      f"({low / mid - 1:+.1%}), {high:7.1f} ({high / mid - 1:+.1%})")
            report.append({"world": seed, "collinearity": table, "oracle_churn_se": oracle,
                           "fit_churn_base_se": fit_se, "churn_base_sensitivity": moves})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = fit_world(train, train_meta, tmp)
            seconds = time.perf_counter() - start
            proxy = item_evidence(result.overrides["catalog_file"])[0].affinity_proxy
            checks = compare(heldout, simulate_fitted(result, meta, len(logs["user"]), 0.2), 16)
            on_true = trained_policies(true, args.train_steps)
            on_fit = trained_policies(result.params(), args.train_steps)
            returns_true = {name: policy_return(agent, true, args.users) for name, agent in on_true.items()}
            intervals = {name: return_interval(agent, result, args.users, args.draws)
                         for name, agent in on_fit.items()}
            returns_fit = {name: iv["fitted"] for name, iv in intervals.items()}
            transfer = {name: policy_return(agent, true, args.users) for name, agent in on_fit.items()}
        fields = []
        for name in FIT_FIELDS:
            iv, value = result.intervals[name], float(getattr(true, name))
            fields.append({"field": name, "true": value, "fit": iv["value"], "low": iv["low"],
                           "high": iv["high"], "inside": iv["low"] <= value <= iv["high"],
                           "within_10pct": abs(iv["value"] - value) <= 0.1 * abs(value)})
        row = {"world": seed, "choice_model": hidden["choice_model"],
               "mahalanobis2": result.distance_to(true),
               "fitted_choice": result.overrides["choice_model"],
               "fit_seconds": seconds, "train_rows": len(train["user"]), "affinity_proxy": proxy,
               "fields": fields,
               "checks_within": sum(c["within_sampling_error"] for c in checks), "checks": len(checks),
               "checks_outside": [c["statistic"] for c in checks if not c["within_sampling_error"]],
               "returns_true": returns_true, "returns_fitted": returns_fit,
               "return_intervals": {name: {"low": iv["low"], "high": iv["high"], "true_world": transfer[name],
                                           "inside": iv["low"] <= transfer[name] <= iv["high"],
                                           "same_policy_gap": returns_fit[name] / transfer[name] - 1}
                                    for name, iv in intervals.items()}}
        report.append(row)
        print(f"\nworld {seed} ({hidden['choice_model']}; fitted {row['fitted_choice']}), "
              f"fit {seconds:.0f} s on {len(train['user']):,} rows; interest proxy (measured at the start) "
              f"{proxy[0]:+.3f} + {proxy[1]:.3f} x match, residual sd {proxy[2]:.3f}")
        for f in fields:
            mark = "inside" if f["inside"] else ("within 10%" if f["within_10pct"] else "MISS")
            print(f"  {f['field']:22s} true {f['true']:9.4g}  fit {f['fit']:9.4g} [{f['low']:9.4g}, "
                  f"{f['high']:9.4g}]  {mark}")
        print(f"  all fields at once: squared Mahalanobis distance of the truth {row['mahalanobis2']:.1f} "
              f"(chi-square, {len(fields)} degrees of freedom: 95% point {chi2.ppf(0.95, len(fields)):.1f})")
        print(f"  held-out checks within sampling error: {row['checks_within']}/{row['checks']} "
              f"(outside: {row['checks_outside']})")
        for name in POLICIES:
            a, b = returns_true[name], returns_fit[name]
            iv = row["return_intervals"][name]
            print(f"  {name:14s} return true {a:7.1f}  fitted {b:7.1f}  ({100 * (b - a) / a:+.1f}%)  "
                  f"trained on the fit: true world {iv['true_world']:7.1f} "
                  f"(fitted {100 * iv['same_policy_gap']:+.1f}%), fit's draws "
                  f"[{iv['low']:7.1f}, {iv['high']:7.1f}] {'inside' if iv['inside'] else 'OUTSIDE'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
