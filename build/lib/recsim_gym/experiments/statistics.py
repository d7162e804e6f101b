"""Statistics: the one module for confidence intervals, across users and across seeds.

* Means get a 95% Student-t interval over seeds (honest for the 3-10 seeds experiments use; a
  percentile bootstrap over 5 values is too narrow).
* Differences to a reference agent are *paired* by seed: every agent of a seed is evaluated on
  the same held-out users, so the per-seed difference removes user-to-user variance.
* Across users (one evaluation cohort): percentile-bootstrap CIs of means
  (:func:`bootstrap_mean`) and of pooled ratios such as CTR (:func:`bootstrap_ratio`, users
  resampled with their numerator and denominator).
* IQM (interquartile mean) and probability of improvement follow rliable (Agarwal et al.,
  NeurIPS 2021), with percentile-bootstrap CIs from ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

#: Agents that are supervised click-model baselines (the reference of the headline comparison).
SUPERVISED = ("logreg", "two_tower", "din")
#: Final metrics summarised per agent (missing ones are skipped).
METRICS = ("return", "clicks", "conversions", "revenue", "ctr", "conversion_rate",
           "session_length", "churn_rate", "coverage", "diversity", "novelty")
#: Metrics that are shares, in [0, 1]: their CIs across seeds are kept inside that range.
SHARES = ("ctr", "conversion_rate", "churn_rate", "coverage")


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


def iqm(values: np.ndarray) -> float:
    """Interquartile mean (25% trimmed mean)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y)/2 over all pairs of runs (the Mann-Whitney U statistic / nm)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    return float(((x > y) + 0.5 * (x == y)).mean())


def bootstrap_ci(statistic, *samples: np.ndarray, n_resamples: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile-bootstrap 95% CI of ``statistic(*samples)`` (independent resampling)."""
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    if any(len(s) < 2 for s in samples):
        return float("nan"), float("nan")
    if all(np.all(s == s[0]) for s in samples):
        value = statistic(*samples)
        return value, value
    result = stats.bootstrap(samples, statistic, n_resamples=n_resamples, method="percentile",
                             paired=False, vectorized=False, random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


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
            if len(values) == len(seeds) and values:
                mean, low, high = t_interval(np.array(values),
                                             bounds=(0.0, 1.0) if metric in SHARES else None)
                entry["metrics"][metric] = {"mean": mean, "ci_low": low, "ci_high": high,
                                            "per_seed": values}
        returns = np.array([by_seed[s]["return"] for s in seeds])
        entry["iqm_return"] = {"value": iqm(returns),
                               "ci": bootstrap_ci(lambda x: iqm(x), returns)}
        if reference is not None and reference != agent:
            ref = final[reference]
            shared = [s for s in seeds if s in ref]
            if shared:
                diff = np.array([by_seed[s]["return"] - ref[s]["return"] for s in shared])
                mean, low, high = t_interval(diff)
                ref_returns = np.array([ref[s]["return"] for s in shared])
                mine = np.array([by_seed[s]["return"] for s in shared])
                entry["vs_reference"] = {
                    "reference": reference, "paired_seeds": shared,
                    "return_difference": {"mean": mean, "ci_low": low, "ci_high": high},
                    "probability_of_improvement": {
                        "value": probability_of_improvement(mine, ref_returns),
                        "ci": bootstrap_ci(probability_of_improvement, mine, ref_returns)},
                }
        agents[agent] = entry
    return {"reference": reference, "agents": agents,
            "confidence": "95% Student-t over seeds; IQM/PoI: 95% percentile bootstrap"}
