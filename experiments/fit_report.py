"""``recsim fit LOGS``: fit a world to logs, then check it on users the fit did not see.

The log's users are split (``--holdout``, default 20%): the fit (:func:`recsim_gym.experiments.fit.
fit_world`) sees the rest; the fitted world, run with the log's logging policy for as many
interactions as the held-out users have, is compared with them on statistics the fit did not
target directly: CTR by position, conversion rate per click, the session-length distribution,
the survival (churn) curve and topic concentration (per user, the share of clicks on the
topic clicked most). Each comes with a 95% bootstrap interval over users on both sides; a
statistic is *within sampling error* when the difference lies within the 95% interval of the
difference. Writes ``world.json`` (the fitted world, :func:`~recsim_gym.experiments.fit.load_fit`;
the whole fit with its covariance, :func:`~recsim_gym.experiments.fit.load_fit_result`),
``items.npz``, ``report.md`` and ``fit_checks.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env import seeds
from recsim_gym.env.logs import LogFormatError, generate_logs, load_logs
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import evaluate
from recsim_gym.experiments.fit import FIT_FIELDS, SIMULATED_LOGGING, FitResult, fit_world, save_fit

#: Session lengths (steps) at which the survival curve is compared.
SURVIVAL_AT = (1, 5, 10, 20, 40, 80, 120, 160)


def split_users(logs: dict[str, np.ndarray], holdout: float, seed: int = 0
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(fit part, held-out part) of a log, by user."""
    users = np.unique(logs["user"])
    gen = np.random.default_rng(seed)
    held = gen.choice(users, max(1, int(round(holdout * len(users)))), replace=False)
    mask = np.isin(logs["user"], held)
    return ({k: v[~mask] for k, v in logs.items()}, {k: v[mask] for k, v in logs.items()})


def _per_user(logs: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Per-user sums the statistics are ratios of: rows, clicks per position, conversions,
    and the clicks on the user's most clicked topic."""
    users, inverse = np.unique(logs["user"], return_inverse=True)
    k = logs["slate"].shape[1]
    position = logs["position"].astype(np.int64)
    per = {"rows": np.bincount(inverse, minlength=len(users)).astype(float)}
    for j in range(k):
        per[f"click_{j}"] = np.bincount(inverse, weights=(position == j), minlength=len(users))
    per["clicks"] = sum(per[f"click_{j}"] for j in range(k))
    per["conversions"] = np.bincount(inverse, weights=logs["conversion"].astype(float), minlength=len(users))
    rows = np.flatnonzero(position >= 0)
    topic = logs["slate_features"][rows, position[rows], :t].astype(np.float32).argmax(1)
    counts = np.zeros((len(users), t))
    np.add.at(counts, (inverse[rows], topic), 1.0)
    per["top_topic_clicks"] = counts.max(1)
    return per


def statistics(per: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """The compared statistics from per-user sums."""
    rows = per["rows"]
    out = {f"ctr_position_{j}": per[f"click_{j}"].sum() / rows.sum() for j in range(k)}
    out["conversion_rate"] = per["conversions"].sum() / max(per["clicks"].sum(), 1.0)
    out["session_length_mean"] = rows.mean()
    for q in (0.25, 0.5, 0.75, 0.9):
        out[f"session_length_q{int(q * 100)}"] = float(np.quantile(rows, q))
    for step in SURVIVAL_AT:
        out[f"survival_{step}"] = float((rows >= step).mean())
    clicked = per["clicks"] > 0
    out["topic_concentration"] = float((per["top_topic_clicks"][clicked] / per["clicks"][clicked]).mean())
    return out


def compare(heldout: dict[str, np.ndarray], fitted: dict[str, np.ndarray], t: int, reps: int = 200
            ) -> list[dict[str, Any]]:
    """Each statistic on both logs with 95% bootstrap intervals over users, and whether the
    difference is within the 95% interval of the difference (sampling error)."""
    k = heldout["slate"].shape[1]
    gen = np.random.default_rng(0)
    sides = {"heldout": _per_user(heldout, t), "fitted": _per_user(fitted, t)}
    values = {name: statistics(per, k) for name, per in sides.items()}
    draws: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for name, per in sides.items():
        users = len(per["rows"])
        for _ in range(reps):
            pick = gen.integers(0, users, users)
            draws[name].append(statistics({key: v[pick] for key, v in per.items()}, k))
    rows = []
    for stat in values["heldout"]:
        spread = {name: np.array([d[stat] for d in draws[name]]) for name in sides}
        diff = values["fitted"][stat] - values["heldout"][stat]
        half = 1.96 * np.sqrt(spread["heldout"].var(ddof=1) + spread["fitted"].var(ddof=1))
        rows.append({"statistic": stat, "heldout": values["heldout"][stat], "fitted": values["fitted"][stat],
                     "heldout_ci": [float(np.quantile(spread["heldout"], 0.025)),
                                    float(np.quantile(spread["heldout"], 0.975))],
                     "fitted_ci": [float(np.quantile(spread["fitted"], 0.025)),
                                   float(np.quantile(spread["fitted"], 0.975))],
                     "difference": float(diff), "difference_half_width": float(half),
                     "within_sampling_error": bool(abs(diff) <= half)})
    return rows


def split_for_fit(logs: dict[str, np.ndarray], meta: dict[str, Any], holdout: float, seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """(fit part, its meta, held-out part) of a log split by users (:func:`split_users`).

    The fit simulates logs with the meta's ``batch_size`` users at a time, and that number
    decides how many users the end of logging cuts short and how far into their lives the
    first users get. A random share of the users sees, in expectation, that share of the
    concurrent users: the fit part's meta says so (with the whole log's 500 the simulated
    logs of an 80% part cut more users short and stop before any reached ``max_steps``,
    which biased the churn and satisfaction fields)."""
    train, heldout = split_users(logs, holdout, seed)
    share = len(np.unique(train["user"])) / len(np.unique(logs["user"]))
    batch = int(meta.get("batch_size", 500))
    return train, {**meta, "batch_size": max(1, int(round(batch * share)))}, heldout


def simulate_fitted(result: FitResult, meta: dict[str, Any], rows: int, holdout: float
                    ) -> dict[str, np.ndarray]:
    """The fitted world's counterpart of the held-out users: a log as large as the original
    (``rows`` interactions, the log's logging policy and batch, users of its own), split by
    users in the same way, so that the users cut short by the end of logging are as few in both."""
    logged = generate_logs(n_steps=rows, batch_size=int(meta.get("batch_size", 500)),
                           sim=make_simulator(params=result.params()),
                           policy=meta.get("logging_policy", "epsilon_popularity"),
                           epsilon=float(meta.get("epsilon", 0.3)),
                           first_user=seeds.FIT_SIM_SEED + 50_000_000, seed=1)
    return split_users(logged, holdout, seed=1)[1]


def policy_return(agent: Any, params: Any, n_users: int = 2000) -> float:
    """Mean lifetime return of a copy of ``agent`` on ``n_users`` evaluation users
    (``seeds.eval_seed(0)``) of ``params``: the same users in every world, and a stochastic
    policy starting from the random state it was given (``agent`` itself is left as it was)."""
    fresh = copy.deepcopy(agent)
    return float(evaluate(fresh, params, n_users, seed=seeds.eval_seed(0)).means()["return"])


def return_interval(agent: Any, result: FitResult, n_users: int = 2000, draws: int = 16, seed: int = 0
                    ) -> dict[str, Any]:
    """A policy's lifetime return on the fitted world and its 95% range over worlds drawn from
    the fit's uncertainty (:meth:`FitResult.draw_params`): ``agent`` (trained or not) is
    evaluated on ``n_users`` users, the same users (``seeds.eval_seed(0)``) in every world, so
    the range is that of the fitted fields and of the items' qualities (redrawn in each world
    from their posteriors, where the fit kept the evidence), not of the users. Each world gets
    a copy of ``agent`` as given, so a stochastic policy starts from the same random state in
    every world (and ``agent`` itself is left as it was). Returns ``fitted``, ``low``, ``high``
    (2.5 and 97.5 percentiles) and ``draws``."""
    fitted = policy_return(agent, result.params(), n_users)
    with tempfile.TemporaryDirectory() as catalogs:
        values = [policy_return(agent, params, n_users)
                  for params in result.draw_params(draws, seed, catalog_dir=catalogs)]
    low, high = np.percentile(values, [2.5, 97.5])
    return {"fitted": fitted, "low": float(low), "high": float(high), "draws": values}


def bound_not_ruled_out(result: FitResult) -> dict[str, float]:
    """The fitted fields whose 95% interval reaches past a search bound (:data:`FIT_FIELDS`),
    each with that bound: values at the edge of what the fit considers, which the log cannot
    rule out."""
    out = {}
    for name, (low, high) in FIT_FIELDS.items():
        iv = result.intervals[name]
        if iv["low"] <= low:
            out[name] = low
        elif iv["high"] >= high:
            out[name] = high
    return out


def churn_method(result: FitResult) -> str:
    """How the report says the churn fields were fitted."""
    if result.churn_fields == "session_ends":
        return "the churn fields by the likelihood of the logged session ends"
    return ("the churn fields too (**the log does not mark its session ends**, so they come from the "
            "session-length statistics, which cut sessions bias: add a `terminated` column, docs/logs.md)")


def write_report(out: Path, result: FitResult, checks: list[dict[str, Any]], source: str) -> Path:
    """``report.md`` and ``fit_checks.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {c["statistic"]: c for c in checks}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    k = sum(1 for name in by_name if name.startswith("ctr_position_"))
    ctr = [by_name[f"ctr_position_{j}"] for j in range(k)]
    survival = [by_name[f"survival_{s}"] for s in SURVIVAL_AT]
    names = ["conversion_rate", "topic_concentration"]
    other = [by_name[n] for n in names]
    for offset, side in ((-0.2, "heldout"), (0.2, "fitted")):
        axes[0].bar(np.arange(k) + offset, [c[side] for c in ctr], 0.4, label=side,
                    yerr=_error_bars(ctr, side), capsize=3)
        axes[1].errorbar(np.array(SURVIVAL_AT) * (1 + offset / 10), [c[side] for c in survival],
                         yerr=_error_bars(survival, side), marker="o", capsize=3, label=side)
        axes[2].bar(np.arange(len(names)) + offset, [c[side] for c in other], 0.4, label=side,
                    yerr=_error_bars(other, side), capsize=3)
    axes[0].set(title="CTR by position", xlabel="slate position", ylabel="clicks per slate")
    axes[1].set(title="share of users with at least n steps", xlabel="n (steps)", xscale="log")
    axes[2].set_xticks(range(len(names)), ["conversion rate\n(per click)", "topic concentration"])
    axes[2].set_title("conversions and topic concentration")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Held-out users of the log against the fitted world (95% bootstrap intervals over users)")
    fig.tight_layout()
    fig.savefig(out / "fit_checks.png", dpi=110)
    plt.close(fig)
    within = sum(c["within_sampling_error"] for c in checks)
    lines = [f"# Fitted world: {source}", "",
             f"Fit by indirect inference, the conversion fields by the likelihood of the logged "
             f"conversions, {churn_method(result)} "
             f"(`recsim_gym/experiments/fit.py`), on {result.rows:,} logged "
             f"interactions in {result.seconds:.0f} s ({result.iterations} Gauss-Newton steps); choice "
             f"model `{result.overrides['choice_model']}` (auxiliary log-likelihood per slate: MNL "
             f"{result.choice_loglik['mnl']:.4f}, cascade {result.choice_loglik['cascade']:.4f}); "
             f"{result.overrides['num_items']:,} items in the fitted catalog. Use it with "
             "`gym.make(\"recsim/default-v0\", **load_fit(\"world.json\"))` or `env: {fitted: "
             "world.json}` in an experiment config.", "",
             "| field | fitted | 95% interval | the log cannot rule out |", "|---|---|---|---|"]
    unbounded = bound_not_ruled_out(result)
    for name in FIT_FIELDS:
        iv = result.intervals[name]
        bound = f"{unbounded[name]:g} (a search bound)" if name in unbounded else ""
        lines.append(f"| `{name}` | {iv['value']:.4g} | [{iv['low']:.4g}, {iv['high']:.4g}] | {bound} |")
    if unbounded:
        lines += ["", f"The intervals of {', '.join(f'`{n}`' for n in unbounded)} reach past a search bound: "
                  "the log says little about them, and a policy whose return depends on them (for the "
                  "churn fields, any policy that keeps users satisfied) should be read by its range over "
                  "the fit's draws, not by its return on the fitted world (docs/fit.md)."]
    lines += ["", "`world.json` also keeps the fields' covariance: `load_fit_result(\"world.json\")."
              "draw_params(16, catalog_dir=\"draws\")` gives worlds drawn from the fit's uncertainty (fields "
              "and item qualities, kept with their evidence in `items.npz`), and `return_interval(agent, "
              "result)` (`recsim_gym.experiments.fit_report`) the range of a policy's return over them.",
              "", f"## Held-out checks: {within} of {len(checks)} within sampling error", "",
              "![held-out checks](fit_checks.png)", "",
              "| statistic | held-out users | fitted world | difference | 95% half-width | within |",
              "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['statistic']} | {c['heldout']:.4g} | {c['fitted']:.4g} | "
                     f"{c['difference']:+.3g} | {c['difference_half_width']:.3g} | "
                     f"{'yes' if c['within_sampling_error'] else 'NO'} |")
    lines += ["", "## Auxiliary statistics (what the fit matched)", "",
              "| statistic | logged | fitted world | logged s.e. |", "|---|---|---|---|"]
    for name, row in result.statistics.items():
        lines.append(f"| {name} | {row['logged']:.4g} | {row['fitted']:.4g} | {row['se']:.3g} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _error_bars(rows: list[dict[str, Any]], side: str) -> np.ndarray:
    """Matplotlib's (2, n) error bars from each row's ``side`` value and its 95% interval."""
    return np.abs(np.array([[r[side] - r[f"{side}_ci"][0], r[f"{side}_ci"][1] - r[side]] for r in rows]).T)


def main(argv: list[str] | None = None) -> int:
    """``recsim fit --help``."""
    parser = argparse.ArgumentParser(prog="recsim fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, help="an interaction log (.npz, recsim's format; docs/logs.md)")
    parser.add_argument("--out", type=Path, default=Path("fit"), help="output directory (default fit/)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share of users held out for the checks (default 0.2)")
    parser.add_argument("--logging", default=None, choices=SIMULATED_LOGGING,
                        help="the log's logging policy if its meta does not name it")
    parser.add_argument("--epsilon", type=float, default=None, help="its exploration share")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="users the log was collected from at once (default: the meta's, else 500)")
    args = parser.parse_args(argv)
    if not 0.0 < args.holdout < 0.9:
        parser.error(f"--holdout must be in (0, 0.9), got {args.holdout}")
    try:
        logs, meta = load_logs(args.logs)
    except (FileNotFoundError, LogFormatError) as err:
        print(f"recsim fit: {err}", file=sys.stderr)
        return 2
    for key, value in (("logging_policy", args.logging), ("epsilon", args.epsilon),
                       ("batch_size", args.batch_size)):
        if value is not None:
            meta[key] = value
    train, train_meta, heldout = split_for_fit(logs, meta, args.holdout)
    t = logs["slate_features"].shape[2] - 3
    try:
        result = fit_world(train, train_meta, args.out,
                           progress=lambda i, d: print(f"step {i}: distance {d:.1f}", file=sys.stderr))
    except ValueError as err:
        print(f"recsim fit: {err}", file=sys.stderr)
        return 2
    world = save_fit(result, args.out)
    checks = compare(heldout, simulate_fitted(result, meta, len(logs["user"]), args.holdout), t)
    (args.out / "checks.json").write_text(json.dumps(checks, indent=1))
    report = write_report(args.out, result, checks, str(args.logs))
    print(f"wrote {world} and {report} ({sum(c['within_sampling_error'] for c in checks)} of {len(checks)} "
          f"held-out checks within sampling error; fit took {result.seconds:.0f} s)")
    return 0
