"""Across-seed statistics come from rliable, stay inside each metric's range, and say when the
seeds are too few; the committed reports' figures equal rliable's."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics

from recsim_gym.experiments.statistics import (
    BOUNDS,
    MIN_BOOTSTRAP_SEEDS,
    _iqm_matrix,
    _poi_matrix,
    _rliable_matrix,
    iqm,
    probability_of_improvement,
    rliable_interval,
    summarize,
)

# Single-world runs (a suite's summary.json holds per-world summaries and aggregates instead).
_SUMMARIES = {path: "suite" in json.loads(path.read_text()) for path in sorted(
    (Path(__file__).resolve().parents[1] / "experiments" / "results").glob("*/summary.json"))}
RESULTS = [path for path, suite in _SUMMARIES.items() if not suite]
SUITES = [path for path, suite in _SUMMARIES.items() if suite]


@functools.cache
def _today(path: Path) -> dict:
    """The summary recomputed with today's code from a committed run's per-seed values."""
    return summarize(_records(json.loads(path.read_text())))


def _records(summary: dict) -> list[dict]:
    """Job-like records rebuilt from a summary's per-seed final metrics."""
    records = []
    for agent, entry in summary["agents"].items():
        for i, seed in enumerate(entry["seeds"]):
            final = {m: float(v["per_seed"][i]) for m, v in entry["metrics"].items()}
            records.append({"agent": agent, "seed": seed, "final": final, "curve": []})
    return records


def test_there_are_committed_runs() -> None:
    assert len(RESULTS) >= 3


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.parent.name)
def test_a_committed_suite_summary_is_normalised(path: Path) -> None:
    # each world's returns are normalised by its own random and oracle-myopic means, so over
    # any set of worlds those two agents' mean normalised scores are exactly 0 and 1
    aggregate = json.loads(path.read_text())["aggregate"]
    assert aggregate, path
    groups = [group for group in aggregate.values() if group]  # a suite may have no static-like world
    assert groups, path
    for group in groups:
        assert group["agents"]["random"]["mean"] == pytest.approx(0.0, abs=1e-9)
        assert group["agents"]["oracle_myopic"]["mean"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_committed_reports_equal_rliable(path: Path) -> None:
    committed = json.loads(path.read_text())
    for entry in committed["agents"].values():
        returns = np.array(entry["metrics"]["return"]["per_seed"])
        expected = metrics.aggregate_iqm(returns.reshape(-1, 1))
        assert entry["iqm_return"]["value"] == pytest.approx(expected, rel=1e-12)
        assert iqm(returns) == pytest.approx(expected, rel=1e-12)
        vs = entry.get("vs_reference")
        if vs:
            ref = committed["agents"][vs["reference"]]
            ref_returns = np.array([ref["metrics"]["return"]["per_seed"][ref["seeds"].index(s)]
                                    for s in vs["paired_seeds"]])
            mine = np.array([returns[entry["seeds"].index(s)] for s in vs["paired_seeds"]])
            expected = metrics.probability_of_improvement(mine.reshape(-1, 1), ref_returns.reshape(-1, 1))
            assert vs["probability_of_improvement"]["value"] == pytest.approx(expected, abs=1e-12)
    # the summary recomputed today from the same per-seed values gives the same point estimates
    today = _today(path)
    for agent, entry in today["agents"].items():
        stored = committed["agents"][agent]["iqm_return"]["value"]
        assert entry["iqm_return"]["value"] == pytest.approx(stored)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_no_interval_leaves_its_metric_range(path: Path) -> None:
    today = _today(path)
    for agent, entry in today["agents"].items():
        for metric, m in entry["metrics"].items():
            low, high = BOUNDS.get(metric, (-np.inf, np.inf))
            assert low <= m["ci_low"] <= m["mean"] <= m["ci_high"] <= high, (agent, metric, m)
        value, (ci_low, ci_high) = entry["iqm_return"]["value"], entry["iqm_return"]["ci"]
        assert 0.0 <= ci_low <= value <= ci_high
        if "vs_reference" in entry:
            poi = entry["vs_reference"]["probability_of_improvement"]
            assert 0.0 <= poi["ci"][0] <= poi["value"] <= poi["ci"][1] <= 1.0


def test_a_nonnegative_mean_near_zero_keeps_its_interval_above_zero() -> None:
    records = [{"agent": "a", "seed": s, "final": {"return": r, "churn_rate": c}, "curve": []}
               for s, (r, c) in enumerate([(0.0, 0.0), (0.1, 0.0), (3.0, 0.2)])]
    m = summarize(records)["agents"]["a"]["metrics"]
    assert m["return"]["ci_low"] == 0.0 and m["churn_rate"]["ci_low"] == 0.0  # t would go below 0


def test_bootstrap_intervals_stay_within_the_runs() -> None:
    runs = np.array([3.0, 5.0, 8.0, 9.0, 20.0])
    value, low, high = rliable_interval(lambda m: metrics.aggregate_iqm(m), runs)
    assert value == pytest.approx(iqm(runs)) and runs.min() <= low <= value <= high <= runs.max()
    assert np.isnan(rliable_interval(lambda m: metrics.aggregate_iqm(m), runs[:1])[1])


def test_bootstrap_intervals_repeat_under_their_seed_and_leave_numpys_global_state_alone() -> None:
    # rliable resamples from numpy's global generator whatever random_state it is given
    runs = np.random.default_rng(0).normal(size=(2, 8))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = rliable_interval(_iqm_matrix, runs[0], reps=300)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.random(10)  # another global state: same interval
    assert rliable_interval(_iqm_matrix, runs[0], reps=300) == first
    assert rliable_interval(_iqm_matrix, runs[0], reps=300, seed=1) != first
    assert rliable_interval(_poi_matrix, runs[0], runs[1], reps=300) == rliable_interval(
        _poi_matrix, runs[0], runs[1], reps=300)
    # the suite's IQM over a (seeds x worlds) matrix goes through the same seeding
    matrix = np.random.default_rng(1).normal(size=(3, 6))
    first = _rliable_matrix(matrix, reps=300)
    np.random.random(10)
    assert _rliable_matrix(matrix, reps=300) == first != _rliable_matrix(matrix, reps=300, seed=1)


def test_probability_of_improvement_counts_ties_as_half() -> None:
    assert probability_of_improvement([1, 2], [1, 2]) == 0.5
    assert probability_of_improvement([3, 4], [1, 2]) == 1.0
    assert probability_of_improvement([1, 3], [2, 2]) == 0.5
    # the statistic each bootstrap resample computes is rliable's, without scipy's test machinery
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, (2, 5)).astype(float)
        assert _poi_matrix(x[:, None], y[:, None]) == pytest.approx(probability_of_improvement(x, y))


def test_the_resampled_iqm_is_rlables() -> None:
    # each bootstrap resample computes rliable's aggregate_iqm without scipy's wrapper
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (2, 1), (3, 1), (5, 1), (3, 4), (7, 12), (10, 3)]:
        for _ in range(10):
            m = rng.normal(size=shape) * rng.choice([1.0, 100.0])
            assert _iqm_matrix(m) == pytest.approx(metrics.aggregate_iqm(m), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("seeds", "warned"), [(1, True), (3, True), (MIN_BOOTSTRAP_SEEDS, False)])
def test_few_seeds_are_named(seeds: int, warned: bool) -> None:
    records = [{"agent": a, "seed": s, "final": {"return": 10.0 + s + i}, "curve": []}
               for i, a in enumerate(["random", "logreg"]) for s in range(seeds)]
    warnings = summarize(records)["warnings"]
    assert bool(warnings) == warned
    if seeds == 1:
        assert any("one seed" in w for w in warnings)
    if warned:
        assert any(f"below {MIN_BOOTSTRAP_SEEDS} seeds" in w for w in warnings)
