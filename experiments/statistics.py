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
    matrices = [np.asarray(r, dtype=float).reshape(-1, 1) for r in runs]
    if any(len(m) < 2 for m in matrices):
        return float(func(*matrices)), float("nan"), float("nan")
    return _seeded_estimate(matrices[0] if len(matrices) == 1 else matrices,
                            lambda *m: np.array([func(*m)]), reps, seed)


def _seeded_estimate(score: np.ndarray | list[np.ndarray], func, reps: int, seed: int,
                     task_bootstrap: bool = False) -> tuple[float, float, float]:
    """rliable's ``get_interval_estimates`` (percentile) for one score matrix (or list of
    them), made repeatable: rliable's StratifiedBootstrap draws its resamples from numpy's
    global generator and ignores the RandomState it is given, so the global state is seeded
    (and restored) here; otherwise a report regenerated from the same job files gets other
    interval bounds."""
    from rliable import library

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # rliable hands arch a RandomState, which arch deprecates
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = library.get_interval_estimates(
                {"x": score}, func, method="percentile", task_bootstrap=task_bootstrap, reps=reps,
                random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def _iqm_matrix(m: np.ndarray) -> float:
    """rliable's ``aggregate_iqm`` (scipy's ``trim_mean`` of all runs x tasks at 25%) computed
    without scipy's argument machinery (~0.6 ms a call): every bootstrap resample calls it."""
    flat = np.asarray(m, dtype=float).ravel()
    low = int(0.25 * flat.size)
    high = flat.size - low
    return float(np.mean(np.partition(flat, (low, high - 1))[low:high]))


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


def suite_seed_warnings(seeds_by_agent: dict[str, list[int]]) -> list[str]:
    """Sentences for a suite report about what its seeds per world allow (its across-world
    intervals resample worlds, so they exist with one seed per world)."""
    counts = sorted({len(s) for s in seeds_by_agent.values()})
    if not counts or counts[0] >= MIN_BOOTSTRAP_SEEDS:
        return []
    if counts[0] < 2:
        return ["One seed per world: the across-world intervals resample worlds; per-world "
                "intervals and verdicts need 2 or more seeds, so the per-world comparisons are "
                "point estimates."]
    return [f"Few seeds per world ({counts[0]}): the per-world Student-t intervals and verdicts "
            "are wide; the across-world intervals resample worlds and then these seeds."]


def summarize(records: list[dict[str, Any]], bootstrap: bool = True) -> dict[str, Any]:
    """Per-agent summary of job records (``agent``, ``seed``, ``final`` metrics, ``curve``).
    ``bootstrap=False`` leaves out the rliable intervals of IQM and P(improvement) (a suite's
    per-world summaries: its cross-world aggregates carry the intervals)."""
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
        value, low, high = (rliable_interval(_iqm_matrix, returns) if bootstrap
                            else (_iqm_matrix(returns.reshape(-1, 1)), float("nan"), float("nan")))
        entry["iqm_return"] = {"value": value, "ci": (low, high)}
        if reference is not None and reference != agent:
            ref = final[reference]
            shared = [s for s in seeds if s in ref]
            if shared:
                diff = np.array([by_seed[s]["return"] - ref[s]["return"] for s in shared])
                mean, low, high = t_interval(diff)
                ref_returns = np.array([ref[s]["return"] for s in shared])
                mine = np.array([by_seed[s]["return"] for s in shared])
                _, poi_low, poi_high = (rliable_interval(_poi_matrix, mine, ref_returns) if bootstrap
                                        else (None, float("nan"), float("nan")))
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


# --- across worlds: a suite -------------------------------------------------------------------

#: The agents a suite normalises every world by: score = (R - R_low) / (R_high - R_low).
NORMALISERS = ("random", "oracle_myopic")


def world_normalisers(records: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per world, the mean final return of random and of oracle-myopic over their seeds."""
    out = {}
    for world in dict.fromkeys(r["world"] for r in records):
        means = []
        for agent in NORMALISERS:
            returns = [r["final"]["return"] for r in records if r["world"] == world and r["agent"] == agent]
            means.append(float(np.mean(returns)) if returns else float("nan"))
        out[world] = (means[0], means[1])
    return out


def normalised_scores(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, float]]]:
    """``agent -> world -> seed -> (R - R_random) / (R_oracle - R_random)``, each world's random
    and oracle-myopic returns averaged over their seeds (so oracle-myopic scores about 1)."""
    norm = world_normalisers(records)
    return {agent: {world: {seed: (value - norm[world][0]) / (norm[world][1] - norm[world][0])
                            for seed, value in by_seed.items()}
                    for world, by_seed in by_world.items()}
            for agent, by_world in final_returns(records).items()}


def final_returns(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, float]]]:
    """``agent -> world -> seed -> final return`` of a suite's job records."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in records:
        out.setdefault(r["agent"], {}).setdefault(r["world"], {})[r["seed"]] = r["final"]["return"]
    return out


def _shared_seeds(mine: dict[str, dict[int, float]], theirs: dict[str, dict[int, float]],
                  worlds: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per world of ``worlds``, two agents' values on the seeds both ran (same users), in seed
    order; worlds without a shared seed are left out."""
    out = {}
    for world in worlds:
        a, b = mine.get(world, {}), theirs.get(world, {})
        shared = sorted(set(a) & set(b))
        if shared:
            out[world] = (np.array([a[s] for s in shared]), np.array([b[s] for s in shared]))
    return out


def hierarchical_bootstrap(per_world: list[np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0
                           ) -> tuple[float, float, float]:
    """Mean over worlds of the mean over seeds of ``per_world`` values (one array of per-seed
    values per world), with a 95% percentile interval that resamples worlds and then seeds
    within each drawn world: worlds are the unit a result should generalise over."""
    gen = np.random.default_rng(seed)
    point = float(np.mean([v.mean() for v in per_world]))
    if len(per_world) < 2:
        return point, float("nan"), float("nan")
    stats_ = np.empty(reps)
    for i in range(reps):
        drawn = gen.integers(0, len(per_world), len(per_world))
        stats_[i] = np.mean([per_world[w][gen.integers(0, len(per_world[w]), len(per_world[w]))].mean()
                             for w in drawn])
    low, high = np.percentile(stats_, [2.5, 97.5])
    return point, float(low), float(high)


def _paired(scores: dict[str, dict[str, dict[int, float]]], agent: str, reference: str,
            worlds: list[str]) -> dict[str, Any] | None:
    """The paired (same world, same seed: same users) difference of normalised scores."""
    per_world, rows = [], {}
    for world, (mine, theirs) in _shared_seeds(scores[agent], scores[reference], worlds).items():
        diff = mine - theirs
        per_world.append(diff)
        mean, low, high = t_interval(diff)
        verdict = "n/a" if not np.isfinite(low) else ("above" if low > 0 else "below" if high < 0 else "tie")
        rows[world] = {"mean": mean, "ci_low": low, "ci_high": high, "verdict": verdict}
    if not per_world:
        return None
    mean, low, high = hierarchical_bootstrap(per_world)
    t_mean, t_low, t_high = t_interval(np.array([d.mean() for d in per_world]))
    return {"reference": reference, "mean": mean, "ci_low": low, "ci_high": high,
            "t_over_worlds": {"ci_low": t_low, "ci_high": t_high},
            "worlds": rows, "verdicts": {v: sum(r["verdict"] == v for r in rows.values())
                                         for v in ("above", "tie", "below")}}


def _relative_to_oracle(returns: dict[str, dict[str, dict[int, float]]], agent: str,
                        worlds: list[str]) -> dict[str, float] | None:
    """The agent's final return relative to oracle-myopic's, ``R / R_oracle - 1``, paired by
    world and seed (same users): mean over worlds of the per-world mean over seeds, with the
    95% hierarchical bootstrap. Unlike the normalised score it does not blow up where
    oracle-myopic is close to random (static-like worlds), so "within 5%" reads off it."""
    per_world = []
    for mine, theirs in _shared_seeds(returns[agent], returns.get("oracle_myopic", {}), worlds).values():
        positive = theirs > 0
        if positive.any():
            per_world.append(mine[positive] / theirs[positive] - 1.0)
    if not per_world:
        return None
    mean, low, high = hierarchical_bootstrap(per_world)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def _aggregate(scores: dict[str, dict[str, dict[int, float]]], worlds: list[str],
               returns: dict[str, dict[str, dict[int, float]]] | None = None) -> dict[str, Any]:
    """Normalised IQM (rliable, bootstrap over worlds and seeds), mean, paired differences to
    oracle-myopic and to the best supervised model, and (given raw ``returns``) the return
    relative to oracle-myopic's, over ``worlds``."""
    if not worlds:
        return {}
    agents: dict[str, Any] = {}
    for agent, by_world in scores.items():
        present = [w for w in worlds if w in by_world]
        if len(present) < len(worlds):
            continue
        n = min(len(by_world[w]) for w in worlds)
        matrix = np.array([[by_world[w][s] for w in worlds] for s in sorted(by_world[worlds[0]])[:n]])
        point, low, high = _rliable_matrix(matrix)
        agents[agent] = {"iqm": {"value": point, "ci": (low, high)}, "mean": float(matrix.mean()),
                         "runs": int(matrix.size)}
    supervised = [a for a in agents if a.split(":")[-1] in SUPERVISED or a in SUPERVISED]
    best = max(supervised, key=lambda a: agents[a]["iqm"]["value"]) if supervised else None
    for agent in agents:
        for key, reference in (("vs_oracle_myopic", "oracle_myopic"), ("vs_best_supervised", best)):
            if reference is not None and reference != agent and reference in scores:
                paired = _paired(scores, agent, reference, worlds)
                if paired is not None:
                    agents[agent][key] = paired
        if returns is not None and agent != "oracle_myopic":
            relative = _relative_to_oracle(returns, agent, worlds)
            if relative is not None:
                agents[agent]["return_vs_oracle_myopic"] = relative
    return {"worlds": worlds, "best_supervised": best, "agents": agents}


def _rliable_matrix(matrix: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
                    ) -> tuple[float, float, float]:
    """rliable's IQM of a (runs x tasks) score matrix with its bootstrap interval over tasks
    and runs within them (rliable's ``task_bootstrap``): the worlds of a suite are a sample of
    the worlds a user may have, so the interval says what another sample of worlds would
    give, and it exists with one run per world."""
    if matrix.size < 2:
        return _iqm_matrix(matrix), float("nan"), float("nan")
    return _seeded_estimate(matrix, lambda m: np.array([_iqm_matrix(m)]), reps, seed, task_bootstrap=True)


def summarize_suite(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary of a suite run: :func:`summarize` per world, and across worlds the normalised
    scores' IQM and paired differences (:func:`_aggregate`) over all worlds, over the worlds
    with long-term effects (``dynamic``) and over the static-like ones."""
    worlds = list(dict.fromkeys(r["world"] for r in records))
    static = {r["world"] for r in records if r.get("static_like")}
    per_world = {w: summarize([r for r in records if r["world"] == w], bootstrap=False) for w in worlds}
    norm = world_normalisers(records)
    incomplete = [w for w, (low, high) in norm.items() if not (np.isfinite(low) and np.isfinite(high))]
    scores = normalised_scores([r for r in records if r["world"] not in incomplete]) if (
        len(incomplete) < len(worlds)) else {}
    complete = [w for w in worlds if w not in incomplete]
    returns = final_returns(records)
    warnings_ = suite_seed_warnings({a: sorted({r["seed"] for r in records if r["agent"] == a})
                                     for a in dict.fromkeys(r["agent"] for r in records)})
    if incomplete:
        warnings_.append(f"worlds {incomplete} lack random or oracle-myopic runs, so they are left "
                         "out of the normalised scores")
    small = [w for w in complete if norm[w][1] - norm[w][0] < 0.1 * max(abs(norm[w][1]), 1e-9)]
    if small:
        warnings_.append(f"in worlds {small} oracle-myopic is within 10% of random, so their "
                         "normalised scores are large and noisy (IQM trims them; raw returns are "
                         "in the per-world tables)")
    return {
        "suite": True, "worlds": {w: {"static_like": w in static, "normalisers": norm[w],
                                      "summary": per_world[w]} for w in worlds},
        "aggregate": {"all": _aggregate(scores, complete, returns),
                      "dynamic": _aggregate(scores, [w for w in complete if w not in static], returns),
                      "static_like": _aggregate(scores, [w for w in complete if w in static], returns)},
        "warnings": warnings_,
        "confidence": "normalised score = (R - R_random) / (R_oracle_myopic - R_random) per world "
                      "(means over seeds); IQM: rliable, bootstrap over worlds and over seeds "
                      "within them (task_bootstrap); paired differences: mean over worlds of "
                      "the per-world mean over seeds, 95% hierarchical bootstrap (worlds, then "
                      "seeds), as is the return relative to oracle-myopic's (R / R_oracle - 1); "
                      "per-world verdicts from Student-t intervals over seeds",
    }
