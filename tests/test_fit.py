"""Fitting the simulator to logs: item tables and fitted-world files load safely, plain tables
convert with clear errors, the auxiliary statistics respond to the Params, and (slow) a fit
recovers the hidden Params of randomly drawn worlds and reproduces held-out statistics."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import recsim_gym.env  # noqa: F401  (registers the ids)
from recsim_gym.env.catalog import load_item_table, save_item_table
from recsim_gym.env.log_tables import from_tables
from recsim_gym.env.logs import LogFormatError, generate_logs, save_logs
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.config import ConfigError, parse_config
from recsim_gym.experiments.fit import (
    CHURN_FIELDS,
    FIT_FIELDS,
    PRIOR_PROXY,
    ConversionClicks,
    FitProblem,
    FitResult,
    ItemTable,
    _conversion_terms,
    _quality_log_prior,
    _session_end_terms,
    _vector,
    affinity_proxy,
    auxiliary_statistics,
    conversion_fit,
    distant_clicks,
    fit_world,
    item_evidence,
    item_quality,
    item_table,
    load_fit,
    load_fit_result,
    quality_log_likelihood,
    save_fit,
    session_end_fit,
    session_end_information,
    session_ends,
)
from scripts.fit_recovery import hidden_world

T = 4
CHOICE_FIELDS = ("affinity_weight", "appeal_weight", "fatigue_weight", "no_click_utility", "position_decay")


def _items(tmp_path: Path, n: int = 50, evidence: bool = False) -> Path:
    """A random item table; with ``evidence``, a fit's evidence columns too: the first half of
    the items clicked 2,000 times (half of them converting), the rest never."""
    gen = np.random.default_rng(0)
    topics = gen.dirichlet(np.ones(T), n)
    clicks = np.where(np.arange(n) < n // 2, 2000.0, 0.0)
    extra = {"clicks": clicks, "conversions": clicks / 2, "declared_at_click": np.full(n, 0.5),
             "declared_sd_at_click": np.full(n, 0.2), "price_feature": gen.random(n)} if evidence else None
    return Path(save_item_table(str(tmp_path / "items.npz"), topics, gen.random(n) * 0.5,
                                gen.uniform(2, 500, n), gen.uniform(0.01, 1, n), gen.random(n), extra=extra))


def test_a_world_runs_on_an_item_table(tmp_path: Path) -> None:
    path = _items(tmp_path)
    env = gym.make("recsim/default-v0", catalog_file=str(path), num_items=50, num_topics=T,
                   declared_topics=2)
    obs, _ = env.reset(seed=0)
    assert obs["candidates"].shape == (20, T + 3)
    catalog = env.unwrapped.sim.catalog
    table = load_item_table(str(path))
    np.testing.assert_allclose(catalog.quality[:50], table["quality"], rtol=1e-6)
    for _ in range(5):
        env.step(env.action_space.sample())
    with pytest.raises(ValueError, match="num_items"):
        make_simulator("default", catalog_file=str(path), num_items=51, num_topics=T, declared_topics=2)
    with pytest.raises(ValueError, match="item_lifetime"):
        make_simulator("default", catalog_file=str(path), num_items=50, num_topics=T, declared_topics=2,
                       item_lifetime=10)


def test_a_bad_item_table_names_its_column(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", topics=np.ones((3, T)), appeal=np.array([0.1, 2.0, 0.3]),
             price=np.ones(3) * 5, popularity=np.ones(3), quality=np.ones(3) * 0.5)
    with pytest.raises(ValueError, match="topics rows must be non-negative and sum to 1"):
        load_item_table(str(tmp_path / "bad.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an item table"):
        load_item_table(str(tmp_path / "junk.npz"))


def _fit_file(tmp_path: Path, **changes) -> Path:
    items = _items(tmp_path)
    overrides = {"num_items": 50, "num_topics": T, "declared_topics": 2, "catalog_file": items.name,
                 "affinity_weight": 3.5}
    data = {"format": "recsim-fit/1", "preset": "default", "overrides": overrides}
    data.update(changes)
    path = tmp_path / "world.json"
    path.write_text(json.dumps(data))
    return path


def test_a_fitted_world_file_loads_into_gym_and_configs(tmp_path: Path) -> None:
    overrides = load_fit(_fit_file(tmp_path))
    assert Path(overrides["catalog_file"]).is_absolute()
    env = gym.make("recsim/default-v0", **overrides)
    assert env.unwrapped.params.affinity_weight == 3.5
    config = parse_config({"name": "f", "env": {"fitted": str(tmp_path / "world.json")},
                           "agents": ["random"], "seeds": 1})
    assert config.env.overrides["num_items"] == 50


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "something-else"}, "not a recsim-fit/1 file"),
    ({"overrides": {"num_items": 50, "no_such_field": 1}}, "no_such_field"),
    ({"overrides": {"num_items": 49, "num_topics": T, "declared_topics": 2, "catalog_file": "items.npz"}},
     "num_items"),
    ({"overrides": {"num_items": 50, "num_topics": T, "declared_topics": 2, "catalog_file": "gone.npz"}},
     "gone.npz"),
])
def test_a_bad_fitted_world_file_is_refused(tmp_path: Path, changes: dict, message: str) -> None:
    path = _fit_file(tmp_path, **changes)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_fit(path)
    with pytest.raises(ConfigError, match="env.fitted"):
        parse_config({"name": "f", "env": {"fitted": str(path)}, "agents": ["random"], "seeds": 1})


def _fit_result(tmp_path: Path, se_share: float = 0.05, evidence: bool = False) -> FitResult:
    """A fit by hand: the default world's fields on a 50-item table, each with a standard error
    of ``se_share`` of its search range, and correlated conversion fields."""
    items = _items(tmp_path, evidence=evidence)
    base = make_simulator("default", catalog_file=str(items), num_items=50, num_topics=T,
                          declared_topics=2).params
    values = np.array([float(getattr(base, name)) for name in FIT_FIELDS])
    se = se_share * np.array([high - low for low, high in FIT_FIELDS.values()])
    correlation = np.eye(len(FIT_FIELDS))
    i, j = list(FIT_FIELDS).index("conversion_bias"), list(FIT_FIELDS).index("conversion_quality")
    correlation[i, j] = correlation[j, i] = -0.8
    covariance = correlation * np.outer(se, se)
    intervals = {name: {"value": v, "se": e, "low": v - 1.96 * e, "high": v + 1.96 * e}
                 for name, v, e in zip(FIT_FIELDS, values, se, strict=True)}
    overrides = {name: float(getattr(base, name)) for name in FIT_FIELDS}
    overrides.update(num_items=50, num_topics=T, declared_topics=2, catalog_file=str(items))
    return FitResult(overrides=overrides, intervals=intervals, statistics={}, choice_loglik={},
                     seconds=1.0, iterations=1, rows=100, covariance=covariance)


def test_a_fit_round_trips_with_its_covariance_and_draws_worlds_from_it(tmp_path: Path) -> None:
    result = _fit_result(tmp_path)
    loaded = load_fit_result(save_fit(result, tmp_path))
    np.testing.assert_array_equal(loaded.covariance, result.covariance)
    assert loaded.intervals == result.intervals and loaded.params() == result.params()
    draws = loaded.draw_params(400, seed=3)
    again = loaded.draw_params(5, seed=3)
    assert [p.affinity_weight for p in draws[:5]] == [p.affinity_weight for p in again]
    assert draws[0].affinity_weight != loaded.draw_params(1, seed=4)[0].affinity_weight
    theta = np.array([[float(getattr(p, name)) for name in FIT_FIELDS] for p in draws])
    low, high = np.array(list(FIT_FIELDS.values())).T
    assert ((theta >= low) & (theta <= high)).all()
    assert all(p.catalog_file == result.params().catalog_file for p in draws)
    # away from the bounds the draws have the fit's mean, spread and correlation
    names = list(FIT_FIELDS)
    for name in ("affinity_weight", "conversion_bias", "conversion_quality"):
        column, iv = theta[:, names.index(name)], result.intervals[name]
        assert abs(column.mean() - iv["value"]) < 4 * iv["se"] / np.sqrt(len(draws))
        assert 0.85 < column.std() / iv["se"] < 1.15
    bias, quality = theta[:, names.index("conversion_bias")], theta[:, names.index("conversion_quality")]
    r = np.corrcoef(bias, quality)[0, 1]
    assert -0.88 < r < -0.72


def test_the_distance_to_a_world_weighs_each_field_by_the_fits_covariance(tmp_path: Path) -> None:
    result = _fit_result(tmp_path)
    fitted = result.params()
    assert result.distance_to(fitted) == 0.0
    se = result.intervals["conversion_bias"]["se"]
    # two standard errors on conversion_bias, which is correlated -0.8 with conversion_quality:
    # 4 / (1 - 0.8^2), more than 4 because the fit says the two move against each other; on
    # both in the same direction, (2, 2) @ inv([[1, -0.8], [-0.8, 1]]) @ (2, 2) = 8 / 0.2
    one = fitted.replace(conversion_bias=fitted.conversion_bias + 2 * se)
    assert result.distance_to(one) == pytest.approx(4.0 / (1 - 0.8**2))
    q = result.intervals["conversion_quality"]["se"]
    both = one.replace(conversion_quality=fitted.conversion_quality + 2 * q)
    assert result.distance_to(both) == pytest.approx(8.0 / 0.2)
    # a block of fields on its own: conversion_bias alone is 2 of its standard errors away
    assert result.distance_to(one, ["conversion_bias"]) == pytest.approx(4.0)
    assert result.distance_to(both, ["conversion_bias", "conversion_quality"]) == pytest.approx(8.0 / 0.2)
    with pytest.raises(ValueError, match="subset of"):
        result.distance_to(one, ["conversion_bias", "catalog_seed"])


@pytest.mark.parametrize("name", ["oracle_myopic", "random"])
def test_a_return_interval_is_a_point_when_the_fit_is_certain(tmp_path: Path, name: str) -> None:
    from recsim_gym.agents import registry
    from recsim_gym.experiments.fit_report import return_interval

    certain = _fit_result(tmp_path, se_share=0.0)
    agent = registry.make(name, params=certain.params(), seed=0)
    point = return_interval(agent, certain, n_users=40, draws=3)
    # every world gets the agent in the state it was given: a random policy too
    assert point["low"] == point["high"] == point["fitted"] == point["draws"][0]
    assert return_interval(agent, certain, n_users=40, draws=1)["fitted"] == point["fitted"]
    wide = return_interval(agent, _fit_result(tmp_path, se_share=0.1), n_users=40, draws=8)
    assert wide["low"] < wide["high"] and len(set(wide["draws"])) == 8


def test_drawn_worlds_redraw_item_qualities_from_the_fits_evidence(tmp_path: Path) -> None:
    result = load_fit_result(save_fit(_fit_result(tmp_path, se_share=0.0, evidence=True), tmp_path))
    fitted = load_item_table(result.params().catalog_file)
    assert [p.catalog_file for p in result.draw_params(2)] == [result.params().catalog_file] * 2
    worlds = result.draw_params(40, seed=1, catalog_dir=tmp_path / "draws")
    tables = [load_item_table(p.catalog_file, p) for p in worlds]
    assert len({p.catalog_file for p in worlds}) == 40
    for name in ("topics", "appeal", "price", "popularity"):
        assert all(np.array_equal(table[name], fitted[name]) for table in tables)
    quality = np.array([table["quality"] for table in tables])
    again = result.draw_params(1, seed=1, catalog_dir=tmp_path / "again")[0]
    np.testing.assert_array_equal(load_item_table(again.catalog_file)["quality"], quality[0])
    # the fields are certain here: 2,000 clicks pin an item's quality down, and an item never
    # clicked keeps its prior's spread
    spread = quality.std(axis=0)
    assert spread[:25].max() < 0.05 and spread[25:].mean() > 0.15


def test_the_report_names_fields_the_log_cannot_bound(tmp_path: Path) -> None:
    from recsim_gym.experiments.fit_report import bound_not_ruled_out

    assert bound_not_ruled_out(_fit_result(tmp_path, se_share=0.0)) == {}
    wide = _fit_result(tmp_path, se_share=0.1)  # churn_base 0.002 +- 0.0098 reaches below 0
    flagged = bound_not_ruled_out(wide)
    assert flagged["churn_base"] == 0.0 and "affinity_weight" not in flagged
    for name, bound in flagged.items():
        iv = wide.intervals[name]
        assert iv["low"] <= bound or iv["high"] >= bound


def test_a_certain_fit_still_ranges_over_its_items_qualities(tmp_path: Path) -> None:
    from recsim_gym.agents import registry
    from recsim_gym.experiments.fit_report import return_interval

    certain = _fit_result(tmp_path, se_share=0.0, evidence=True)
    agent = registry.make("oracle_myopic", params=certain.params(), seed=0)
    interval = return_interval(agent, certain, n_users=40, draws=6)
    assert interval["low"] < interval["high"] and len(set(interval["draws"])) > 1


@pytest.mark.parametrize(("change", "message"), [
    ({"conversions": "more"}, "conversions must be in"),
    ({"price_feature": None}, "all of"),
    ({"declared_at_click": "nan"}, "declared_at_click must be 50 finite"),
    ({"declared_sd_at_click": "wide"}, r"declared_sd_at_click must be in \[0, 0.5\]"),
    ({"clicks": "short"}, "clicks must be 50 finite"),
    ({"affinity_proxy": "steep"}, r"affinity_proxy must be 3 values \(2 before the residual\), level in "),
    ({"affinity_proxy": "one"}, "affinity_proxy must be 3 values"),
    ({"affinity_proxy": "negative"}, r"residual in \[0.0, 1.0\]"),
])
def test_bad_item_evidence_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    path = save_fit(_fit_result(tmp_path, evidence=True), tmp_path)
    table = tmp_path / "items.npz"
    with np.load(table) as archive:
        columns = {name: archive[name] for name in archive.files}
    for name, how in change.items():
        if how is None:
            del columns[name]
        elif how == "more":
            columns[name] = columns["clicks"] + 1
        elif how == "nan":
            columns[name] = np.full(50, np.nan)
        elif how == "wide":
            columns[name] = np.full(50, 0.6)
        elif how == "steep":
            columns[name] = np.array([0.1, 2.5, 0.1])
        elif how == "negative":
            columns[name] = np.array([0.1, 0.7, -0.1])
        elif how == "one":
            columns[name] = np.array([0.1])
        else:
            columns[name] = columns[name][:10]
    np.savez(table, **columns)
    with pytest.raises(ValueError, match=message):
        load_fit_result(path)


def test_a_fit_written_before_the_match_spread_was_kept_still_draws(tmp_path: Path) -> None:
    save_fit(_fit_result(tmp_path, evidence=True), tmp_path)
    table = tmp_path / "items.npz"
    with np.load(table) as archive:
        columns = {name: archive[name] for name in archive.files if name != "declared_sd_at_click"}
    np.savez(table, **columns)
    items, _ = item_evidence(table)
    assert np.all(items.declared_sd_at_click == 0.0) and items.declared_sd_at_click.shape == (50,)
    assert items.affinity_proxy == PRIOR_PROXY  # nor was the interest proxy measured then


def test_a_fit_written_before_the_residual_was_measured_reads_as_none(tmp_path: Path) -> None:
    save_fit(_fit_result(tmp_path, evidence=True), tmp_path)
    table = tmp_path / "items.npz"
    with np.load(table) as archive:
        columns = {name: archive[name] for name in archive.files}
    columns["affinity_proxy"] = np.array([0.05, 0.66])  # (a, b) only: the posterior it was made with
    np.savez(table, **columns)
    items, _ = item_evidence(table)
    assert items.affinity_proxy == (0.05, 0.66, 0.0)


@pytest.mark.parametrize(("covariance", "message"), [
    (None, "no covariance"),
    ([[1.0, 2.0], [2.0, 1.0]], "must be 15 x 15"),
    ("diag-nan", "finite and symmetric"),
    ("asymmetric", "finite and symmetric"),
    ([["a"] * 15] * 15, "matrix of numbers"),
])
def test_a_bad_covariance_is_refused(tmp_path: Path, covariance: object, message: str) -> None:
    path = save_fit(_fit_result(tmp_path), tmp_path)
    data = json.loads(path.read_text())
    if covariance == "diag-nan":
        data["covariance"][0][0] = float("nan")
    elif covariance == "asymmetric":
        data["covariance"][0][1] += 1.0
    else:
        data["covariance"] = covariance
    path.write_text(json.dumps(data))
    if covariance is None:
        with pytest.raises(ValueError, match=message):
            load_fit_result(path).draw_params(2)
    else:
        with pytest.raises(ValueError, match=message):
            load_fit_result(path)


def test_a_log_without_its_session_ends_fits_the_churn_fields_with_the_others(tmp_path: Path) -> None:
    # a converted table without a terminated column cannot show who left: the fit says so (a
    # warning, the result, its file and the report) instead of reading cut sessions as churns
    from recsim_gym.experiments.fit_report import churn_method

    logs = generate_logs(n_steps=2000, batch_size=50, sim=make_simulator("default"), seed=0)
    logs = {name: column for name, column in logs.items() if name != "terminated"}
    meta = {"batch_size": 50, "num_candidates": 20, "session_ends": "unknown"}
    with pytest.warns(UserWarning, match="does not show its session ends"):
        result = fit_world(logs, meta, tmp_path, iterations=1, bootstrap=4)
    assert result.churn_fields == "statistics" and result.iterations <= 1
    assert np.all(np.linalg.eigvalsh(result.covariance) > -1e-12)
    assert load_fit_result(save_fit(result, tmp_path)).churn_fields == "statistics"
    assert "does not mark its session ends" in churn_method(result)


def test_the_fit_takes_the_conversion_likelihoods_measured_bias_off(tmp_path: Path, monkeypatch) -> None:
    # the conversion likelihood's estimate, less its bias measured on logs simulated at the fitted
    # world, with the noise of that measurement added to its covariance
    from recsim_gym.experiments.fit import CONVERSION_FIELDS

    estimate = np.array([-1.5, 1.1, 2.5, 0.7])
    covariance = np.diag([0.04, 0.01, 0.09, 0.16])
    bias, bias_covariance = np.array([0.1, -0.2, 0.05, -0.3]), np.diag([0.01, 0.01, 0.01, 0.04])
    measured_at = []

    def measured_bias(problem, theta, replicates=8):
        measured_at.append(theta[[list(FIT_FIELDS).index(name) for name in CONVERSION_FIELDS]].copy())
        return bias, bias_covariance

    monkeypatch.setattr(FitProblem, "conversion_fit", lambda problem, theta: (estimate.copy(), covariance))
    monkeypatch.setattr(FitProblem, "conversion_bias", measured_bias)
    logs = generate_logs(n_steps=2000, batch_size=50, sim=make_simulator("default"), seed=0)
    result = fit_world(logs, {"batch_size": 50, "num_candidates": 20}, tmp_path, iterations=1, bootstrap=4)
    np.testing.assert_allclose(measured_at, [estimate])  # measured where the likelihood put them
    for i, name in enumerate(CONVERSION_FIELDS):
        assert result.intervals[name]["value"] == pytest.approx(estimate[i] - bias[i])
        se = np.sqrt(covariance[i, i] + bias_covariance[i, i])
        assert result.intervals[name]["se"] == pytest.approx(se)
        assert result.overrides[name] == pytest.approx(estimate[i] - bias[i])


def test_the_draw_covariance_is_nothing_where_every_draw_of_the_qualities_is_the_same(
        tmp_path: Path, monkeypatch) -> None:
    # every draw imputes quality 0.5: the simulated logs are one log (the same users and random
    # numbers), so their statistics cannot spread
    import recsim_gym.experiments.fit as fit_module

    monkeypatch.setattr(fit_module, "item_quality",
                        lambda items, params, price_feature, seed=0: np.full(len(items.appeal), 0.5))
    logs = generate_logs(n_steps=3000, batch_size=50, sim=make_simulator("default"), seed=0)
    problem = FitProblem(logs, {"batch_size": 50, "num_candidates": 20}, tmp_path, bootstrap=4)
    draws = problem.draw_covariance(_vector(problem.base), draws=3)
    # nothing but the rounding of np.cov's mean
    np.testing.assert_allclose(draws, 0.0, atol=1e-12 * np.diag(problem.sigma).max())


def test_the_draw_covariance_spreads_with_the_real_imputation(tmp_path: Path) -> None:
    # the qualities drawn as the fit draws them differ between draws, so the statistics spread:
    # a positive semi-definite covariance with a positive diagonal somewhere
    logs = generate_logs(n_steps=3000, batch_size=50, sim=make_simulator("default"), seed=0)
    problem = FitProblem(logs, {"batch_size": 50, "num_candidates": 20}, tmp_path, bootstrap=4)
    draws = problem.draw_covariance(_vector(problem.base), draws=3)
    assert draws.shape == (len(problem.observed),) * 2
    assert np.diag(draws).max() > 0 and np.all(np.linalg.eigvalsh(draws) > -1e-12)
    assert not list(tmp_path.glob("*.npz"))  # the drawn catalogs are cleaned up


def test_the_draw_covariance_widens_the_indirect_inference_intervals(tmp_path: Path, monkeypatch) -> None:
    # the same fit with the draw noise as large as the users' (D = Sigma): the sandwich doubles,
    # so the indirect-inference fields' standard errors grow by sqrt(2) and nothing else moves
    from recsim_gym.experiments.fit import CONVERSION_FIELDS

    logs = generate_logs(n_steps=2000, batch_size=50, sim=make_simulator("default"), seed=0)
    meta = {"batch_size": 50, "num_candidates": 20}
    monkeypatch.setattr(FitProblem, "draw_covariance", lambda problem, theta, draws=8: 0 * problem.sigma)
    without = fit_world(logs, meta, tmp_path / "a", iterations=1, bootstrap=4)
    monkeypatch.setattr(FitProblem, "draw_covariance", lambda problem, theta, draws=8: problem.sigma.copy())
    with_draws = fit_world(logs, meta, tmp_path / "b", iterations=1, bootstrap=4)
    for name in FIT_FIELDS:
        before, after = without.intervals[name], with_draws.intervals[name]
        assert after["value"] == before["value"]
        if name in CHURN_FIELDS or name in CONVERSION_FIELDS or before["se"] == 0:
            assert after["se"] == pytest.approx(before["se"])
        else:
            assert after["se"] == pytest.approx(np.sqrt(2) * before["se"])


def test_a_fit_file_without_every_interval_is_refused(tmp_path: Path) -> None:
    path = save_fit(_fit_result(tmp_path), tmp_path)
    data = json.loads(path.read_text())
    del data["intervals"]["churn_base"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="every fitted field"):
        load_fit_result(path)
    data["intervals"]["churn_base"] = {"value": "x", "se": 0, "low": 0, "high": 0}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="intervals.churn_base"):
        load_fit_result(path)
    data = json.loads(save_fit(_fit_result(tmp_path), tmp_path).read_text())
    data["churn_fields"] = "guessed"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'churn_fields' must be 'session_ends' or 'statistics'"):
        load_fit_result(path)


def test_recsim_fit_writes_a_world_with_its_covariance_and_a_report(tmp_path: Path, capsys) -> None:
    from recsim_gym.experiments.fit_report import main

    logs = generate_logs(n_steps=4000, batch_size=50, sim=make_simulator("default"), seed=0)
    path = save_logs(logs, tmp_path / "log.npz", logging_policy="epsilon_popularity", epsilon=0.3,
                     batch_size=50, max_steps=200, num_candidates=20)
    assert main([str(path), "--out", str(tmp_path / "fit")]) == 0
    result = load_fit_result(tmp_path / "fit" / "world.json")
    assert result.churn_fields == "session_ends"  # a generated log marks its session ends
    se = np.array([result.intervals[name]["se"] for name in FIT_FIELDS])
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), se, rtol=1e-9)
    table, _ = item_evidence(result.params().catalog_file)  # the fit keeps its items' evidence
    assert 0 < table.clicks.sum() < (logs["position"] >= 0).sum()  # the fitted 80% of the users' clicks
    level, slope, residual = table.affinity_proxy  # and the interest proxy it measured at the start
    assert table.affinity_proxy != PRIOR_PROXY and -0.2 < level < 0.3 and 0.3 < slope < 1.0
    assert 0.02 < residual < 0.4  # the affinity is not a function of the declared match
    env = gym.make("recsim/default-v0", **load_fit(tmp_path / "fit" / "world.json"))
    env.reset(seed=0)
    report = (tmp_path / "fit" / "report.md").read_text()
    captured = capsys.readouterr()
    assert "held-out checks" in captured.out and "## Held-out checks" in report
    # the progress lines number the Gauss-Newton steps on through both stages of the fit
    steps = [int(line.split()[1].rstrip(":")) for line in captured.err.splitlines()
             if line.startswith("step ")]
    assert steps == list(range(1, result.iterations + 1)), steps
    assert "the log cannot rule out" in report
    assert (tmp_path / "fit" / "fit_checks.png").stat().st_size > 0
    assert main([str(tmp_path / "missing.npz"), "--out", str(tmp_path / "fit2")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def _tables(tmp_path: Path, events: str) -> tuple[Path, Path]:
    (tmp_path / "items.csv").write_text("item,topic,appeal,price,popularity\n"
                                        "a,0,0.2,10,0.5\nb,1,0.9,20,0.9\nc,2,0.4,5,0.1\nd,0,0.5,50,1.0\n")
    (tmp_path / "events.csv").write_text("user,time,slate,clicked_item,converted\n" + events)
    return tmp_path / "events.csv", tmp_path / "items.csv"


def test_a_plain_table_converts_into_a_log(tmp_path: Path) -> None:
    events, items = _tables(tmp_path, "alice,1,a b c,b,1\nalice,2,c d a,,0\nbob,5,d|a|b,d,0\n"
                                      "alice,3,b c d,c,0\n")
    logs, meta = from_tables(events, items, history_length=3)
    assert logs["step"].tolist() == [0, 1, 2, 0] and logs["position"].tolist() == [1, -1, 1, 0]
    assert meta["propensities"] == "unknown" and meta["num_candidates"] == 3
    # alice's third row sees her first two rows in its history: the clicked b, then c shown first
    hist = logs["history"][2].astype(np.float32)
    assert hist[1, 1] == 1.0 and hist[1, -3:].tolist() == [1.0, 1.0, 1.0]  # b, clicked, converted
    assert hist[2, 2] == 1.0 and hist[2, -3:].tolist() == [0.0, 0.0, 1.0]  # c shown first, no click
    assert logs["reward"].tolist() == [3.0, 0.0, 1.0, 1.0]


def test_a_table_with_terminated_marks_the_session_ends(tmp_path: Path) -> None:
    # rows out of time order: the flag follows its row; without the column the meta says the
    # ends are unknown (recsim fit then cannot use their likelihood)
    _, items = _tables(tmp_path, "")
    events = tmp_path / "ends.csv"
    events.write_text("user,time,slate,clicked_item,converted,terminated\n"
                      "alice,2,c d a,,0,1\nbob,5,d|a|b,d,0,0\nalice,1,a b c,b,1,0\n")
    logs, meta = from_tables(events, items)
    assert logs["user"].tolist() == [0, 0, 1] and logs["terminated"].tolist() == [False, True, False]
    assert meta["session_ends"] == "known"
    assert from_tables(*_tables(tmp_path, "alice,1,a b c,b,1\n"))[1]["session_ends"] == "unknown"
    for rows, message in [("alice,1,a b c,b,1,1\nalice,2,c d a,,0,0\n", "'terminated', row 0: 1 only on"),
                          ("alice,1,a b c,b,1,2\n", "'terminated', row 0: .*not 0 or 1")]:
        events.write_text("user,time,slate,clicked_item,converted,terminated\n" + rows)
        with pytest.raises(LogFormatError, match=message):
            from_tables(events, items)


@pytest.mark.parametrize(("events", "message"), [
    ("alice,1,a b c,z,0\n", "'clicked_item', row 0: item 'z' was not in that row's slate"),
    ("alice,1,a b x,,0\n", "item 'x' is not in the items table"),
    ("alice,1,a b,,0\nbob,1,a b c,,0\n", "same number"),
    ("alice,1,a b c,,1\n", "a conversion needs a click"),
])
def test_a_bad_table_names_the_column_and_row(tmp_path: Path, events: str, message: str) -> None:
    with pytest.raises(LogFormatError, match=message):
        from_tables(*_tables(tmp_path, events))
    (tmp_path / "events.csv").write_text("user,slate,clicked_item,converted\nalice,a b c,,0\n")
    with pytest.raises(LogFormatError, match="missing columns \\['time'\\]"):
        from_tables(tmp_path / "events.csv", tmp_path / "items.csv")


def test_the_auxiliary_statistics_follow_the_params() -> None:
    # the choice logit's appeal coefficient tracks appeal_weight, its position terms log(decay^j)
    names, values = None, {}
    for appeal in (2.0, 6.0):
        sim = make_simulator("default", appeal_weight=appeal)
        stats, names = auxiliary_statistics(generate_logs(n_steps=20_000, sim=sim, seed=0), 16)
        values[appeal] = dict(zip(names, stats, strict=True))
    assert values[6.0]["choice/appeal"] > values[2.0]["choice/appeal"] + 2.5
    for j in range(1, 5):
        assert values[2.0][f"choice/position_{j}"] == pytest.approx(j * np.log(0.85), abs=0.12)


def test_the_auxiliary_fits_reach_their_likelihoods_optimum_from_any_start() -> None:
    # the choice logit and the two logistic regressions of the auxiliary statistics return the
    # maximum of their likelihoods: the answer of an independent optimiser run to a tight
    # tolerance, whatever the start (the fit starts them at the logged statistics, so an answer
    # that depended on the start would move the simulated statistics with it)
    from scipy.optimize import minimize

    from recsim_gym.experiments.fit import _logistic, choice_logit

    gen = np.random.default_rng(3)
    n, k, f = 4_000, 3, 4
    x = gen.normal(size=(n, k, f)).astype(np.float32)
    u = x @ np.array([0.8, -0.5, 0.3, 0.0]) + np.array([0.0, -0.4, -0.9])
    gumbel = u - np.log(-np.log(gen.random((n, k))))
    outside = -np.log(-np.log(gen.random(n)))
    position = np.where(gumbel.max(1) > outside, gumbel.argmax(1), -1)
    chosen = np.where(position >= 0, position, k)

    def choice_loss(theta: np.ndarray) -> float:
        utility = np.concatenate([x @ theta[:f] + np.r_[0.0, theta[f:]], np.zeros((n, 1))], axis=1)
        top = utility.max(1, keepdims=True)
        log_p = utility - top - np.log(np.exp(utility - top).sum(1, keepdims=True))
        return float(-log_p[np.arange(n), chosen].mean())

    reference = minimize(choice_loss, np.zeros(f + k - 1), method="BFGS", options={"gtol": 1e-10}).x
    for start in (None, np.full(f + k - 1, 2.0)):
        theta, loss = choice_logit(x, position, start=start)
        np.testing.assert_allclose(theta, reference, atol=1e-7)
        assert loss == pytest.approx(choice_loss(reference), abs=1e-9)

    features = np.column_stack([np.ones(n), gen.normal(size=(n, 2))])
    y = (gen.random(n) < 1 / (1 + np.exp(-(features @ np.array([-1.0, 0.7, -0.2]))))).astype(float)

    def logistic_loss(b: np.ndarray) -> float:
        z = features @ b
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    reference = minimize(logistic_loss, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    for start in (None, np.array([3.0, -3.0, 3.0])):
        np.testing.assert_allclose(_logistic(features, y, start), reference, atol=1e-7)


@pytest.mark.parametrize("family", ["mnl", "cascade"])
def test_the_choice_family_is_read_off_the_clicks(family: str) -> None:
    # a cascade world with a high click rate (hidden world 5's choice fields) was read as MNL
    # while the auxiliary cascade examined its first position only half the time
    from recsim_gym.experiments.fit import choice_family

    hidden = {name: hidden_world(5)[name] for name in CHOICE_FIELDS}
    for fields in ({}, hidden):
        sim = make_simulator("default", choice_model=family, **fields)
        logs = generate_logs(n_steps=20_000, sim=sim, seed=0)
        assert choice_family(logs, 16)[0] == family, fields


def test_distant_clicks_are_the_users_clicks_twenty_steps_back_in_any_row_order() -> None:
    logs = generate_logs(n_steps=3_000, sim=make_simulator("default"), seed=0, batch_size=50)
    expected = np.zeros((len(logs["user"]), 16))
    for i in range(len(logs["user"])):
        earlier = np.flatnonzero((logs["user"] == logs["user"][i]) & (logs["step"] <= logs["step"][i] - 20)
                                 & (logs["position"] >= 0))
        if len(earlier):
            shown = logs["slate_features"][earlier, logs["position"][earlier], :16]
            expected[i] = shown.astype(float).mean(0)
    assert (np.abs(expected).sum(1) > 0).mean() > 0.2  # the check has rows with such clicks
    np.testing.assert_allclose(distant_clicks(logs, 16), expected, atol=1e-6)
    shuffled = np.random.default_rng(0).permutation(len(logs["user"]))
    reordered = {key: value[shuffled] for key, value in logs.items()}
    np.testing.assert_allclose(distant_clicks(reordered, 16), expected[shuffled], atol=1e-6)


def test_the_distant_clicks_coefficient_follows_the_drift_rate() -> None:
    # clicks mostly land on items of quality < 0.5, which drift pulls the user's interest away
    # from: with fast drift, topics clicked 20+ steps ago are chosen less
    coefficient = {}
    for rate in (0.0, 0.3):
        stats, names = auxiliary_statistics(generate_logs(
            n_steps=40_000, sim=make_simulator("default", interest_update_rate=rate), seed=0), 16)
        coefficient[rate] = dict(zip(names, stats, strict=True))["choice/distant_clicks"]
    assert coefficient[0.3] < coefficient[0.0] - 1.5


def test_collinearity_finds_a_field_the_others_can_mimic() -> None:
    from types import SimpleNamespace

    from scripts.fit_recovery import collinearity

    d = len(FIT_FIELDS)
    gen = np.random.default_rng(0)
    columns = gen.normal(size=(40, d))
    columns[:, 1] = 2.0 * columns[:, 0] - columns[:, 2]  # appeal_weight: a mix of two others
    span = np.array([high - low for low, high in FIT_FIELDS.values()])
    problem = SimpleNamespace(weight=np.ones(40), simulate=lambda theta: columns @ (theta / span))
    table = collinearity(problem, make_simulator("default").params)
    assert table["appeal_weight"]["r2"] > 0.999 and table["appeal_weight"]["unique"] < 1e-6
    assert set(table["appeal_weight"]["closest"]) >= {"affinity_weight"}
    assert all(0.0 <= row["r2"] < 0.9 for name, row in table.items()
               if name not in ("affinity_weight", "appeal_weight", "fatigue_weight"))


def test_item_quality_stays_finite_when_the_evidence_contradicts_the_prior() -> None:
    # clickbait (appeal above clickbait_appeal_min: quality at most clickbait_quality_max a
    # priori) that converts like the best items, seen in thousands of clicks: its likelihood
    # underflows over the whole of its prior's support, and the posterior must not be 0/0
    params = make_simulator("default").params
    appeal = np.array([0.99, 0.5, 0.5])
    assert appeal[0] >= params.clickbait_appeal_min > appeal[1]
    clicks, conversions = np.array([20_000.0, 20_000.0, 3.0]), np.array([19_000.0, 19_000.0, 1.0])
    items = ItemTable(topics=np.full((3, 2), 0.5), appeal=appeal, price=np.ones(3), popularity=np.ones(3),
                      clicks=clicks, conversions=conversions, declared_at_click=np.ones(3),
                      declared_sd_at_click=np.zeros(3), index=np.zeros((1, 1), dtype=np.int64))
    quality = item_quality(items, params, np.zeros(3))
    assert np.all(np.isfinite(quality)), quality
    assert params.clickbait_quality_max - 0.03 <= quality[0] <= params.clickbait_quality_max + 0.01
    assert quality[1] > 0.9  # the same evidence on a regular item: near the top


@pytest.mark.parametrize("residual", [0.0, 0.15])
def test_the_quality_likelihood_sums_over_each_clicks_own_match(residual: float) -> None:
    # each item's clicks split evenly between two declared-topic matches, and each click's
    # affinity off the proxy by -+ residual with equal chance (latent): the two-point
    # quadratures are then exact, and the per-click sum of log marginal probabilities is what
    # the posterior must use (the mean match inside the logistic differs from it: the Jensen gap)
    params = make_simulator("default").params
    gen = np.random.default_rng(3)
    n = 6
    low, high = gen.uniform(0.0, 0.4, n), gen.uniform(0.6, 1.0, n)
    clicks = np.full(n, 400.0)
    conversions = gen.integers(0, 400, n).astype(float)
    items = ItemTable(topics=np.full((n, 2), 0.5), appeal=np.full(n, 0.3), price=np.ones(n),
                      popularity=np.ones(n), clicks=clicks, conversions=conversions,
                      declared_at_click=(low + high) / 2, declared_sd_at_click=(high - low) / 2,
                      index=np.zeros((1, 1), dtype=np.int64), affinity_proxy=(0.0, 0.75, residual))
    price_feature = gen.random(n)
    grid = np.linspace(0.0, 1.0, 51)

    def per_click(match: np.ndarray, converted: np.ndarray) -> np.ndarray:
        p = 0.0
        for latent in (-residual, residual):
            logit = (params.conversion_bias + params.conversion_affinity * (0.75 * match[:, None] + latent)
                     + params.conversion_quality * grid - params.conversion_price * price_feature[:, None])
            p = p + 0.5 / (1.0 + np.exp(-logit))
        return converted[:, None] * np.log(p) + (200.0 - converted)[:, None] * np.log(1.0 - p)

    # half the conversions at each match; only differences along the grid are identified
    exact = per_click(low, conversions / 2) + per_click(high, conversions / 2)
    got = quality_log_likelihood(items, params, price_feature)
    np.testing.assert_allclose(got - got[:, :1], exact - exact[:, :1], rtol=1e-9, atol=1e-7)
    items.declared_sd_at_click = np.zeros(n)
    mean_only = quality_log_likelihood(items, params, price_feature)
    assert np.abs((mean_only - mean_only[:, :1]) - (exact - exact[:, :1])).max() > 1e-3


def test_the_interest_proxy_is_the_line_through_the_affinity_at_clicks() -> None:
    # two topics, one-hot items and declared topics; users' interest 0.6 in their declared
    # topic and 0.1 in the other, so the affinity at a click is exactly 0.1 + 0.5 x match. The
    # slot not clicked shows the other topic, and rows without a click must not count
    gen = np.random.default_rng(4)
    n = 400
    declared = gen.integers(0, 2, n)
    position = np.where(gen.random(n) < 0.25, -1, gen.integers(0, 2, n))
    item_topic = gen.integers(0, 2, (n, 2))
    item_topic[:, 1] = 1 - item_topic[:, 0]
    topics = np.eye(2)  # catalog item i has topic i
    interest = np.where(np.arange(2)[None, :] == declared[:, None], 0.6, 0.1)
    slate_features = np.zeros((n, 2, 5), np.float16)
    slate_features[np.arange(n)[:, None], np.arange(2)[None, :], item_topic] = 1.0
    user_features = np.zeros((n, 3), np.float16)
    user_features[np.arange(n), declared] = 1.0
    logs = {"position": position.astype(np.int8), "slate_items": item_topic.astype(np.int32),
            "slate_features": slate_features, "user_features": user_features}
    level, slope, residual = affinity_proxy(logs, interest, topics)
    assert level == pytest.approx(0.1, abs=1e-9) and slope == pytest.approx(0.5, abs=1e-9)
    assert residual == pytest.approx(0.0, abs=1e-6)
    assert affinity_proxy({**logs, "position": np.full(n, -1, np.int8)}, interest, topics) == PRIOR_PROXY
    # an interest off its declared level by -+0.1 (the same in both topics, so the affinity at
    # a click moves by it whatever the item): the same line, and a residual of 0.1
    off = np.where(gen.random(n) < 0.5, -0.1, 0.1)
    level, slope, residual = affinity_proxy(logs, interest + off[:, None], topics)
    assert slope == pytest.approx(0.5, abs=0.04) and residual == pytest.approx(0.1, abs=0.005)


def test_the_proxy_measured_in_the_world_predicts_its_conversions() -> None:
    # at the true Params and the items' true qualities, the conversion model with the interest
    # proxy the fit measures in the world predicts the log's conversions; the prior's 0.75 x
    # match understates the affinity at a click, so too few, which the quality posterior then
    # put on quality (docs/fit.md)
    sim = make_simulator("default", **hidden_world(0))
    params = sim.params
    logs = generate_logs(n_steps=100_000, batch_size=500, sim=sim, seed=5)
    meta = {"logging_policy": "epsilon_popularity", "epsilon": 0.3, "batch_size": 500,
            "max_steps": params.max_steps, "num_candidates": params.num_candidates}
    with tempfile.TemporaryDirectory() as tmp:
        problem = FitProblem(logs, meta, tmp, bootstrap=2)
        truth = np.zeros(len(problem.items.appeal))
        truth[problem.items.index.ravel()] = sim.catalog.quality[logs["slate_items"].ravel()]

        def z_score(items: ItemTable) -> float:
            level, slope, residual = items.affinity_proxy
            interest = level + slope * items.declared_at_click
            centre = (params.conversion_bias + params.conversion_affinity * interest
                      + params.conversion_quality * truth - params.conversion_price * problem.price_feature)
            p = 0.0
            for spread in (slope * items.declared_sd_at_click, -slope * items.declared_sd_at_click):
                for latent in (-residual, residual):
                    p = p + 0.25 / (1 + np.exp(-centre - params.conversion_affinity * (spread + latent)))
            expected, sd = (items.clicks * p).sum(), np.sqrt((items.clicks * p * (1 - p)).sum())
            return (expected - items.conversions.sum()) / sd

        prior = z_score(problem.items)
        level, slope, residual = problem.calibrate(_vector(params))
        assert problem.items.affinity_proxy == (level, slope, residual) and residual > 0.02
        measured = z_score(problem.items)
    assert prior < -3.0, prior
    assert abs(measured) < 2.0, (level, slope, measured)


def test_session_ends_know_which_rows_ended_a_session() -> None:
    # without a terminated column (an older log, rows in time order): a user's last row ends
    # the session unless logging stopped while the user was active (the users of the log's
    # last batch of rows) or the user reached max_steps
    logs = generate_logs(preset="default", n_steps=3_000, batch_size=50, seed=2, num_topics=T,
                         declared_topics=2, max_steps=40)
    index = np.zeros(logs["slate"].shape, np.int64)
    older = {name: column for name, column in logs.items() if name != "terminated"}
    ends = session_ends(older, index, batch_size=50, max_steps=40)
    order = np.lexsort((logs["step"], logs["user"]))
    user, step = logs["user"][order], logs["step"][order]
    last = np.r_[user[1:] != user[:-1], True]
    active_at_end = np.isin(user, logs["user"][-50:])
    assert (ends.first == np.r_[True, user[1:] != user[:-1]]).all()
    assert (ends.known[~last]).all()  # every row before a user's last says: stayed
    assert not ends.known[last & active_at_end].any() and not ends.known[last & (step >= 39)].any()
    assert (ends.left == (last & ends.known)).all() and ends.left.sum() > 20
    clicked = logs["position"][order] >= 0
    assert ((ends.item >= 0) == clicked).all()
    # with it, every row's outcome is known, the same where the time order told it, and in
    # any row order (a converted log is grouped by user)
    exact = session_ends(logs, index, batch_size=50, max_steps=40)
    assert exact.known.all() and (exact.left == logs["terminated"][order]).all()
    assert (exact.left[ends.known] == ends.left[ends.known]).all()
    assert exact.left[last & active_at_end].sum() < exact.left[last & ~active_at_end].sum()
    shuffled = np.random.default_rng(0).permutation(len(order))
    grouped = session_ends({name: column[shuffled] for name, column in logs.items()}, index[shuffled],
                           batch_size=50, max_steps=40)
    for name in ("first", "item", "known", "left"):
        assert (getattr(grouped, name) == getattr(exact, name)).all(), name


def test_session_end_likelihood_gradient_matches_finite_differences() -> None:
    logs = generate_logs(preset="default", n_steps=4_000, batch_size=100, seed=3)
    params = make_simulator("default").params
    items = item_table(logs, params.num_topics, params.price_min, params.price_max)
    ends = session_ends(logs, items.index, 100, params.max_steps)
    quality = np.random.default_rng(0).random(len(items.appeal))
    args = (ends.first, ends.item, ends.known, ends.left, quality, np.full(len(ends.first), 0.6))
    theta = np.array([0.01, 0.08, 0.3, 0.05])
    nll, grad, info = _session_end_terms(*args, theta)
    for i in range(4):
        h = 1e-6 * np.eye(4)[i]
        numeric = (_session_end_terms(*args, theta + h)[0] - _session_end_terms(*args, theta - h)[0]) / 2e-6
        assert numeric == pytest.approx(grad[i], rel=1e-4, abs=1e-3), i
    assert np.isfinite(nll) and np.all(np.linalg.eigvalsh(info) > 0)


def _conversion_world(seed: int, n_items: int = 400, clicks_per_item: int = 60, residual: float = 0.0):
    """Clicks generated by the conversion model itself: qualities from the default family's
    prior given appeal, an affinity off the proxy of the match by -+ ``residual`` (equal chance)."""
    params = make_simulator("default").params
    gen = np.random.default_rng(seed)
    appeal = gen.random(n_items)
    clickbait = appeal >= params.clickbait_appeal_min
    quality = np.where(clickbait, gen.uniform(0, params.clickbait_quality_max, n_items),
                       gen.beta(params.quality_alpha, params.quality_beta, n_items))
    price_feature = gen.random(n_items)
    item = np.repeat(np.arange(n_items), clicks_per_item)
    match = gen.random(len(item))
    proxy = (0.05, 0.7, residual)
    theta = np.array([-1.5, 1.2, 3.0, 0.8])
    latent = np.where(gen.random(len(item)) < 0.5, -residual, residual)
    logit = (theta[0] + theta[1] * (proxy[0] + proxy[1] * match + latent) + theta[2] * quality[item]
             - theta[3] * price_feature[item])
    converted = (gen.random(len(item)) < 1 / (1 + np.exp(-logit))).astype(float)
    items = ItemTable(topics=np.ones((n_items, 1)), appeal=appeal, price=np.ones(n_items),
                      popularity=np.ones(n_items), clicks=np.full(n_items, float(clicks_per_item)),
                      conversions=np.bincount(item, weights=converted, minlength=n_items),
                      declared_at_click=np.full(n_items, 0.5), declared_sd_at_click=np.zeros(n_items),
                      index=np.zeros((1, 1), dtype=np.int64), affinity_proxy=proxy)
    return ConversionClicks(item=item, match=match, converted=converted), items, price_feature, theta, params


@pytest.mark.parametrize("residual", [0.0, 0.3])
def test_conversion_likelihood_gradient_matches_finite_differences(residual: float) -> None:
    clicks, items, price_feature, theta, params = _conversion_world(0, n_items=60, clicks_per_item=20,
                                                                    residual=residual)
    args = (clicks.item, clicks.match, clicks.converted, price_feature, _quality_log_prior(items, params),
            np.linspace(0.0, 1.0, 51))
    nll, grad = _conversion_terms(*args, theta, *items.affinity_proxy)
    for i in range(4):
        h = 1e-6 * np.eye(4)[i]
        numeric = (_conversion_terms(*args, theta + h, *items.affinity_proxy)[0]
                   - _conversion_terms(*args, theta - h, *items.affinity_proxy)[0]) / 2e-6
        assert numeric == pytest.approx(grad[i], rel=1e-5, abs=1e-4), i
    assert np.isfinite(nll) and nll > 0


def test_conversion_fit_recovers_the_conversion_fields_with_qualities_unknown() -> None:
    # the qualities are never seen: summed out over their prior, the four fields come back
    # within 3 standard errors (the imputed-quality statistics could not tell bias and price
    # from quality: docs/fit.md); the fit starts from the default family's values
    for seed in (1, 2):
        clicks, items, price_feature, theta, params = _conversion_world(seed)
        estimate, covariance = conversion_fit(clicks, items, params, price_feature)
        z = (estimate - theta) / np.sqrt(np.diag(covariance))
        assert np.all(np.abs(z) < 3.0), (seed, estimate, z)
        assert np.all(np.sqrt(np.diag(covariance)) < [0.3, 0.3, 0.4, 0.3])


def test_conversion_fit_reads_the_affinitys_latent_residual() -> None:
    # each click's affinity off the proxy by -+0.5: told the residual, the likelihood is exact
    # and the fields come back within 3 standard errors; read as if the affinity were the proxy,
    # the flatter response is put on the other fields: quality's weight comes back well below
    # the truth (about 6 standard errors here)
    clicks, items, price_feature, theta, params = _conversion_world(1, n_items=600, clicks_per_item=100,
                                                                    residual=0.5)
    estimate, covariance = conversion_fit(clicks, items, params, price_feature)
    se = np.sqrt(np.diag(covariance))
    assert np.all(np.abs(estimate - theta) < 3.0 * se), (estimate, (estimate - theta) / se)
    unaware = replace(items, affinity_proxy=(0.05, 0.7, 0.0))
    ignored, _ = conversion_fit(clicks, unaware, params, price_feature)
    assert ignored[2] < theta[2] - 3.0 * se[2], (ignored, se)


def test_session_end_fit_recovers_the_churn_fields_from_true_qualities() -> None:
    # with the items' true qualities, the likelihood of the logged session ends gives back the
    # churn fields within their intervals (the fit imputes the qualities instead: docs/fit.md)
    sim = make_simulator("default", **hidden_world(1))
    params = sim.params
    logs = generate_logs(n_steps=60_000, batch_size=500, sim=sim, seed=7)
    items = item_table(logs, params.num_topics, params.price_min, params.price_max)
    truth = np.zeros(len(items.appeal))
    truth[items.index.ravel()] = sim.catalog.quality[logs["slate_items"].ravel()]
    ends = session_ends(logs, items.index, 500, params.max_steps)
    start = np.array([0.02, 0.2, 0.5, 0.1])  # far from the truth
    value, covariance = session_end_fit(ends, [truth], params.initial_satisfaction, start)
    true = np.array([getattr(params, name) for name in CHURN_FIELDS])
    z = (value - true) / np.sqrt(np.diag(covariance))
    assert np.all(np.abs(z) < 3.0), dict(zip(CHURN_FIELDS, z.round(2), strict=True))
    # several catalogs of qualities: the estimates' mean, and Rubin's rules add their spread
    # to the mean of the intervals
    other = np.clip(truth + np.random.default_rng(1).normal(0, 0.05, len(truth)), 0, 1)
    value_other, covariance_other = session_end_fit(ends, [other], params.initial_satisfaction, start)
    pooled_value, pooled = session_end_fit(ends, [truth, other], params.initial_satisfaction, start)
    np.testing.assert_allclose(pooled_value, (value + value_other) / 2, rtol=1e-6)
    spread = 1.5 * (value - value_other) ** 2 / 2  # (1 + 1/M) x the sample variance of M = 2
    np.testing.assert_allclose(np.diag(pooled), np.diag(covariance + covariance_other) / 2 + spread,
                               rtol=1e-6)


def test_item_table_keeps_each_items_match_spread() -> None:
    logs = generate_logs(preset="default", n_steps=3_000, seed=1, num_topics=T, declared_topics=2)
    params = make_simulator("default").params
    items = item_table(logs, T, params.price_min, params.price_max)
    pos = logs["position"].astype(int)
    rows = np.flatnonzero(pos >= 0)
    item = items.index[rows, pos[rows]]
    match = (logs["slate_features"][rows, pos[rows], :T].astype(np.float64)
             * logs["user_features"][rows, :T].astype(np.float32)).sum(1)
    busiest = np.bincount(item).argmax()
    np.testing.assert_allclose(items.declared_sd_at_click[busiest], match[item == busiest].std(), atol=1e-6)
    assert items.declared_sd_at_click[busiest] > 0.0
    assert np.all(items.declared_sd_at_click[items.clicks <= 1] == 0.0)


def test_satisfaction_paths_replay_the_simulators_satisfaction() -> None:
    from recsim_gym.env import rng as recsim_rng
    from recsim_gym.env.logs import epsilon_popularity_policy
    from scripts.fit_recovery import satisfaction_paths

    sim = make_simulator("default", observe_latent=True, satisfaction_rate=0.3, no_click_penalty=0.05)
    inner, seen = epsilon_popularity_policy(sim.params.slate_size, 0.3), []

    def recording(obs, gen):
        seen.append(np.array(obs["satisfaction"][:, 0], dtype=np.float64))
        return inner(obs, gen)

    logs = generate_logs(n_steps=6_000, batch_size=100, sim=sim, seed=3, first_user=70_000, policy=recording)
    ids, where = np.unique(logs["user"], return_inverse=True)
    initial = np.asarray(sim.reset(recsim_rng.seed_to_key(ids)).satisfaction, dtype=np.float64)[where]
    paths = satisfaction_paths(logs, sim.catalog.hidden[:, 1], initial, sim.params)
    truth = np.concatenate(seen)[:len(logs["user"])]
    assert truth.std() > 0.05  # satisfaction moves in this log
    np.testing.assert_allclose(paths["before"], truth, atol=1e-5)
    # the derivatives agree with replaying at a slightly different rate and penalty
    for field, key in (("satisfaction_rate", "d_rate"), ("no_click_penalty", "d_penalty")):
        h = 1e-6
        bumped = sim.params.replace(**{field: getattr(sim.params, field) + h})
        moved = satisfaction_paths(logs, sim.catalog.hidden[:, 1], initial, bumped)["after"]
        np.testing.assert_allclose((moved - paths["after"]) / h, paths[key], atol=1e-4)


def test_session_end_likelihood_replays_satisfaction_as_the_checked_replay_does() -> None:
    # the fit's compiled replay (session_end_information) against satisfaction_paths, which the
    # test above checks against the simulator's own satisfaction: the same Fisher information
    from recsim_gym.env import rng as recsim_rng
    from scripts.fit_recovery import churn_information, satisfaction_paths

    sim = make_simulator("default", satisfaction_rate=0.3, no_click_penalty=0.05)
    logs = generate_logs(n_steps=6_000, batch_size=100, sim=sim, seed=4, first_user=80_000)
    ids, where = np.unique(logs["user"], return_inverse=True)
    initial = np.asarray(sim.reset(recsim_rng.seed_to_key(ids)).satisfaction, dtype=np.float64)[where]
    quality = sim.catalog.hidden[:, 1]
    ends = session_ends(logs, logs["slate_items"].astype(np.int64), 100, sim.params.max_steps)
    order = np.lexsort((logs["step"], logs["user"]))
    known = np.empty_like(ends.known)
    known[order] = ends.known
    paths = satisfaction_paths(logs, quality, initial, sim.params)
    expected = churn_information({name: v[known] for name, v in paths.items()}, sim.params)
    theta = np.array([getattr(sim.params, name) for name in CHURN_FIELDS])
    np.testing.assert_allclose(session_end_information(ends, quality, initial[order], theta), expected,
                               rtol=1e-9)


def test_churn_information_gives_the_binomial_standard_error() -> None:
    from scripts.fit_recovery import churn_information

    # satisfied users leave with churn_base, unsatisfied ones with churn_base + churn_scale: the
    # bound on churn_base is the binomial standard error of the satisfied users' rate
    params = make_simulator("default", churn_base=0.004, churn_scale=0.05).params
    n_satisfied, n_unsatisfied = 30_000, 70_000
    after = np.r_[np.ones(n_satisfied), np.zeros(n_unsatisfied)]
    zeros = np.zeros_like(after)
    info = churn_information({"after": after, "d_rate": zeros, "d_penalty": zeros}, params)
    covariance = np.linalg.inv(info[:2, :2])
    assert np.sqrt(covariance[0, 0]) == pytest.approx(np.sqrt(0.004 * 0.996 / n_satisfied), rel=1e-9)
    assert np.sqrt(covariance[1, 1]) == pytest.approx(
        np.sqrt(0.004 * 0.996 / n_satisfied + 0.054 * 0.946 / n_unsatisfied), rel=1e-9)


def test_the_fit_simulates_a_user_split_with_its_share_of_concurrent_users() -> None:
    from recsim_gym.experiments.fit_report import split_for_fit

    meta = {"batch_size": 200, "logging_policy": "epsilon_popularity"}
    rows_per_user = {"part": [], "matched": [], "whole log's batch": []}
    for seed in range(3):
        logs = generate_logs(n_steps=40_000, batch_size=200, sim=make_simulator("default"), seed=seed,
                             first_user=1_000 + seed * 100_000)
        train, train_meta, heldout = split_for_fit(logs, meta, 0.2, seed=seed)
        users = np.unique(logs["user"])
        assert len(np.unique(train["user"])) + len(np.unique(heldout["user"])) == len(users)
        assert train_meta["batch_size"] == round(200 * len(np.unique(train["user"])) / len(users))
        assert meta["batch_size"] == 200 and train_meta["logging_policy"] == "epsilon_popularity"
        rows_per_user["part"].append(len(train["user"]) / len(np.unique(train["user"])))
        for label, batch in (("matched", train_meta["batch_size"]), ("whole log's batch", 200)):
            simulated = generate_logs(n_steps=len(train["user"]), batch_size=batch,
                                      sim=make_simulator("default"), seed=9,
                                      first_user=5_000_000 + seed * 100_000)
            rows_per_user[label].append(len(simulated["user"]) / len(np.unique(simulated["user"])))
    # the end of logging cuts as many users short in the part as in a log simulated with its
    # share of the concurrent users; with the whole log's batch, more (shorter logged lives)
    mean = {label: float(np.mean(v)) for label, v in rows_per_user.items()}
    assert abs(mean["matched"] - mean["part"]) < 0.5 < mean["part"] - mean["whole log's batch"], mean


# --- recovery (slow) -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])  # 0-2 MNL worlds, 3 the first cascade one
def test_a_fit_recovers_a_hidden_world(tmp_path: Path, seed: int) -> None:
    from recsim_gym.experiments.fit_report import compare, simulate_fitted, split_for_fit

    hidden = hidden_world(seed)
    true = make_simulator("default", **hidden).params
    meta = {"logging_policy": "epsilon_popularity", "epsilon": 0.3, "batch_size": 500, "max_steps": 200,
            "num_candidates": 20}
    logs = generate_logs(n_steps=100_000, batch_size=500, sim=make_simulator(params=true), seed=seed,
                         first_user=10_000_000 + seed * 100_000)
    train, train_meta, heldout = split_for_fit(logs, meta, 0.2)
    result = fit_world(train, train_meta, tmp_path)
    assert result.overrides["choice_model"] == hidden["choice_model"]
    se = np.array([result.intervals[name]["se"] for name in FIT_FIELDS])
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), se, rtol=1e-9)
    table, _ = item_evidence(result.params().catalog_file)  # the fit keeps its items' evidence
    assert 0 < table.clicks.sum() < (logs["position"] >= 0).sum()  # the fitted 80% of the users' clicks
    level, slope, residual = table.affinity_proxy  # and the interest proxy it measured at the start
    assert table.affinity_proxy != PRIOR_PROXY and -0.2 < level < 0.3 and 0.3 < slope < 1.0
    assert 0.02 < residual < 0.4  # the affinity is not a function of the declared match
    misses = {}
    for name in FIT_FIELDS:
        interval, value = result.intervals[name], getattr(true, name)
        inside = interval["low"] <= value <= interval["high"]
        close = abs(interval["value"] - value) <= 0.1 * abs(value)
        if not (inside or close):
            misses[name] = (f"true {value:.4g}, fit {interval['value']:.4g} "
                            f"[{interval['low']:.4g}, {interval['high']:.4g}]")
    # What the fit achieves today (docs/fit.md): the choice family always comes back, and 0, 1, 1
    # and 1 fields fall outside their intervals and beyond 10% (fatigue_weight +2.16 se in world
    # 1, interest_noise -2.80 in world 2, interest_update_rate -2.57 in world 3). Calibrated 95%
    # intervals miss 2.25 of 45 fields on average (none at all in 10% of such runs), so the
    # test allows two misses a world. The choice model is what the log shows most directly: its
    # five fields must be right jointly (squared Mahalanobis distance under their covariance,
    # chi-square with 5 degrees of freedom, below the 99.9% point), which a wrong choice family
    # fails by orders of magnitude (cascade worlds read as MNL, before the auxiliary cascade
    # examined the first position every time: position_decay 54 to 309 se off).
    from scipy.stats import chi2

    choice = result.distance_to(true, CHOICE_FIELDS)
    assert choice < chi2.ppf(0.999, len(CHOICE_FIELDS)), (choice, misses)
    assert len(misses) <= 2, misses
    # all fields at once: the truth's squared Mahalanobis distance under the fit's covariance is
    # chi-square with 15 degrees of freedom if the intervals are right jointly (23.3, 19.5, 23.3
    # and 14.3 today; world 2 gave 51.5 with 20 bootstrap resamples, docs/fit.md)
    distance = result.distance_to(true)
    assert distance < chi2.ppf(0.999, len(FIT_FIELDS)), distance
    checks = compare(heldout, simulate_fitted(result, meta, len(logs["user"]), 0.2), 16)
    outside = [c["statistic"] for c in checks if not c["within_sampling_error"]]
    # 20 statistics at 95%: one may fall outside by chance, which is issue 27's target. Today
    # 1, 1, 0 and 0 do (1, 4 and 1 in worlds 0-2 before the session-end likelihood), so the
    # test allows 3.
    assert len(checks) == 20
    assert len(outside) <= 3, outside
