"""Statistics: the one module for confidence intervals, across users and across seeds.

* Means get a 95% Student-t interval over seeds (honest for the 3-10 seeds experiments use; a
  percentile bootstrap over 5 values is too narrow).
* Differences to a reference agent are *paired* by seed: every agent of a seed is evaluated on
  the same held-out users, so the per-seed difference removes user-to-user variance.
* Across users (one evaluation cohort): percentile-bootstrap CIs of means
  (:func:`bootstrap_mean`) and of pooled ratios such as CTR (:func:`bootstrap_ratio`, users
  resampled with their numerator and denominator).
* IQM (interquartile mean) and probability of improvement come from rliable (Agarwal et al.,
  NeurIPS 2021) with its stratified-bootstrap percentile intervals, which stay inside the
  range of the runs. With fewer than :data:`MIN_BOOTSTRAP_SEEDS` seeds those intervals are too
  narrow, and :func:`summarize` says so in its ``warnings``.
* Intervals of metrics with a range (returns >= 0, shares in [0, 1]) are kept inside it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

#: Agents that are supervised click-model baselines (the reference of the headline comparison).
SUPERVISED = ("logreg", "two_tower", "din")
#: Final metrics summarised per agent (missing ones are skipped).
METRICS = ("return", "clicks", "conversions", "revenue", "ctr", "conversion_rate",
           "session_length", "churn_rate", "coverage", "diversity", "novelty")
#: Metrics that are shares, in [0, 1].
SHARES = ("ctr", "conversion_rate", "churn_rate", "coverage", "diversity")
#: The range each metric's mean can take: intervals across seeds are kept inside it.
BOUNDS: dict[str, tuple[float, float]] = {
    **{metric: (0.0, 1.0) for metric in SHARES},
    **{metric: (0.0, float("inf")) for metric in ("return", "clicks", "conversions", "revenue",
                                                  "session_length", "novelty")},
}
#: Below this many seeds the report warns that bootstrap intervals over seeds are too narrow.
MIN_BOOTSTRAP_SEEDS = 5
#: Bootstrap resamples of the rliable intervals (its default, 50,000, takes seconds per agent).
BOOTSTRAP_REPS = 2000


def t_interval(values: np.ndarray, confidence: float = 0.95,
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and Student-t interval of ``values`` (NaN bounds for fewer than 2 values).

    ``bounds`` is the range the mean can take (e.g. ``(0, 1)`` for a share): the interval is
    intersected with it, so a coverage CI never reads past 1. The true mean lies in that range,
    so the intersection keeps the interval's coverage.
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.all(values == values[0]):
        return mean, (mean if len(values) >= 2 else float("nan")), (
            mean if len(values) >= 2 else float("nan"))
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=stats.sem(values))
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, float(low), float(high)


def bootstrap_mean(values: np.ndarray, n_resamples: int = 1000, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its 95% percentile-bootstrap CI (``scipy.stats.bootstrap``)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2 or np.all(values == values[0]):
        return mean, mean, mean
    ci = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, method="percentile",
                         vectorized=True, random_state=seed).confidence_interval
    return mean, float(ci.low), float(ci.high)


def _ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    return num.sum(axis=axis) / np.maximum(den.sum(axis=axis), 1e-12)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_resamples: int = 1000, seed: int = 0
                    ) -> tuple[float, float, float]:
    """``sum(num) / sum(den)`` and its 95% percentile-bootstrap CI, users resampled (paired)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if den.sum() <= 0:
        return float("nan"), float("nan"), float("nan")
    value = float(_ratio(num, den))
    if len(num) < 2 or (np.all(num == num[0]) and np.all(den == den[0])):
        return value, value, value
    ci = stats.bootstrap((num, den), _ratio, paired=True, n_resamples=n_resamples, method="percentile",
                         vectorized=True, random_state=seed).confidence_interval
    return value, float(ci.low), float(ci.high)


def bca_interval(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% BCa-bootstrap CI of the mean of ``values`` (a point interval when all are equal)."""
    values = np.asarray(values, dtype=float)
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    ci = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, method="BCa",
                         random_state=seed).confidence_interval
    return float(ci.low), float(ci.high)


def reference_agent(final: dict[str, dict[int, dict[str, float]]]) -> str | None:
    """The best supervised baseline by mean final return; else oracle-myopic; else None."""
    supervised = [a for a in final if a.split(":")[-1] in SUPERVISED or a in SUPERVISED]
    if supervised:
        return max(supervised, key=lambda a: np.mean([m["return"] for m in final[a].values()]))
    for candidate in ("oracle_myopic", "oracle-myopic"):
        if candidate in final:
            return candidate
    return None


# --- across seeds: rliable ------------------------------------------------------------------

def iqm(values: np.ndarray) -> float:
    """Interquartile mean of the runs (rliable's ``aggregate_iqm``)."""
    return float(_iqm_matrix(np.asarray(values, dtype=float).reshape(-1, 1)))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) over runs of X and Y, ties counting 1/2 (rliable's ``probability_of_improvement``)."""
    from rliable import metrics

    return float(metrics.probability_of_improvement(np.asarray(x, dtype=float).reshape(-1, 1),
                                                    np.asarray(y, dtype=float).reshape(-1, 1)))


def rliable_interval(func, *runs: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
                     ) -> tuple[float, float, float]:
    """rliable's point estimate of ``func`` and its 95% stratified-bootstrap percentile interval
    (runs resampled independently per sample; percentile intervals stay inside the range of
    the data). NaN bounds when a sample has fewer than 2 runs."""
    from rliable import library

    matrices = [np.asarray(r, dtype=float).reshape(-1, 1) for r in runs]
    if any(len(m) < 2 for m in matrices):
        return float(func(*matrices)), float("nan"), float("nan")
    scores = {"x": matrices[0] if len(matrices) == 1 else matrices}
    with warnings.catch_warnings():  # rliable hands arch a RandomState, which arch deprecates
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = library.get_interval_estimates(
            scores, lambda *m: np.array([func(*m)]), method="percentile", reps=reps,
            random_state=np.random.RandomState(seed))
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def _iqm_matrix(m: np.ndarray) -> float:
    from rliable import metrics

    return metrics.aggregate_iqm(m)


def _poi_matrix(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's probability of improvement for one task (its Mann-Whitney U / nm, ties 1/2),
    computed without scipy's test machinery: each bootstrap resample calls it."""
    return float(((x[:, None, 0] > y[None, :, 0]) + 0.5 * (x[:, None, 0] == y[None, :, 0])).mean())


def seed_warnings(seeds_by_agent: dict[str, list[int]]) -> list[str]:
    """Sentences for the report about what the seed counts allow."""
    notes = []
    counts = sorted({len(s) for s in seeds_by_agent.values()})
    if counts and counts[0] < 2:
        single = [a for a, s in seeds_by_agent.items() if len(s) < 2]
        notes.append(f"{', '.join(single)}: one seed, so no interval across seeds is shown.")
    if counts and counts[0] < MIN_BOOTSTRAP_SEEDS:
        notes.append(
            f"Few seeds ({counts[0]}{'-' + str(counts[-1]) if len(counts) > 1 else ''}): the "
            f"bootstrap intervals of IQM and P(improvement) resample only these runs and are too "
            f"narrow below {MIN_BOOTSTRAP_SEEDS} seeds (read them as the spread of the runs, not as "
            "95% intervals); the Student-t intervals of means are wide for the same reason.")
    return notes


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-agent summary of job records (``agent``, ``seed``, ``final`` metrics, ``curve``)."""
    final: dict[str, dict[int, dict[str, float]]] = {}
    for r in records:
        final.setdefault(r["agent"], {})[r["seed"]] = r["final"]
    reference = reference_agent(final)
    agents: dict[str, Any] = {}
    for agent, by_seed in final.items():
        seeds = sorted(by_seed)
        entry: dict[str, Any] = {"seeds": seeds, "metrics": {}}
        for metric in METRICS:
            values = [by_seed[s][metric] for s in seeds if metric in by_seed[s]]
            # a metric a world does not define (NaN, e.g. coverage without a catalog) is left out
            if len(values) == len(seeds) and values and np.isfinite(values).all():
                mean, low, high = t_interval(np.array(values), bounds=BOUNDS.get(metric))
                entry["metrics"][metric] = {"mean": mean, "ci_low": low, "ci_high": high,
                                            "per_seed": values}
        returns = np.array([by_seed[s]["return"] for s in seeds])
        value, low, high = rliable_interval(_iqm_matrix, returns)
        entry["iqm_return"] = {"value": value, "ci": (low, high)}
        if reference is not None and reference != agent:
            ref = final[reference]
            shared = [s for s in seeds if s in ref]
            if shared:
                diff = np.array([by_seed[s]["return"] - ref[s]["return"] for s in shared])
                mean, low, high = t_interval(diff)
                ref_returns = np.array([ref[s]["return"] for s in shared])
                mine = np.array([by_seed[s]["return"] for s in shared])
                _, poi_low, poi_high = rliable_interval(_poi_matrix, mine, ref_returns)
                poi = probability_of_improvement(mine, ref_returns)
                entry["vs_reference"] = {
                    "reference": reference, "paired_seeds": shared,
                    "return_difference": {"mean": mean, "ci_low": low, "ci_high": high},
                    "probability_of_improvement": {"value": poi, "ci": (poi_low, poi_high)},
                }
        agents[agent] = entry
    return {"reference": reference, "agents": agents,
            "warnings": seed_warnings({a: e["seeds"] for a, e in agents.items()}),
            "confidence": "means: 95% Student-t over seeds, kept inside each metric's range; "
                          "IQM and P(improvement): rliable, 95% stratified-bootstrap percentile "
                          f"intervals ({BOOTSTRAP_REPS:,} resamples)"}
