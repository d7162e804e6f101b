"""The world suite: a seeded sampler over Params, split into tuning and held-out worlds that the
tools enforce, run by ``recsim run`` and aggregated across worlds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsim_gym.env import seeds
from recsim_gym.env.suite import STATIC_SHARE, sample_world, suite_worlds
from recsim_gym.experiments.config import ConfigError, parse_config
from recsim_gym.experiments.report import make_report
from recsim_gym.experiments.runner import config_job_keys, load_records, run_experiment
from recsim_gym.experiments.statistics import hierarchical_bootstrap


def test_worlds_are_deterministic_valid_and_varied() -> None:
    worlds = [sample_world(s) for s in range(300)]
    assert sample_world(7) == sample_world(7) and sample_world(7) != sample_world(8)
    for world in worlds:
        params = world.params()  # validated Params
        assert params.slate_size <= params.num_candidates
        assert params.catalog_seed == 10**6 + world.seed
    static = np.mean([w.static_like for w in worlds])
    assert abs(static - STATIC_SHARE) < 0.08
    for w in worlds:
        if w.static_like:  # the static preset's dynamics: no drift, fatigue or satisfaction churn
            p = w.params()
            assert p.interest_update_rate == p.fatigue_gain == p.churn_scale == 0.0
    assert {w.overrides["choice_model"] for w in worlds} == {"mnl", "cascade"}
    assert len({w.overrides["num_candidates"] for w in worlds}) == 4


def test_splits_are_enforced() -> None:
    assert [w.seed for w in suite_worlds("tuning", 3)] == [0, 1, 2]
    assert [w.seed for w in suite_worlds("held_out", 2)] == [seeds.FIRST_HELDOUT_WORLD,
                                                            seeds.FIRST_HELDOUT_WORLD + 1]
    assert all(w.split == "held_out" for w in suite_worlds("held_out", 5))
    with pytest.raises(ValueError, match="not tuning worlds"):
        suite_worlds("tuning", seeds=[3, seeds.FIRST_HELDOUT_WORLD])
    with pytest.raises(ValueError, match="held-out world"):
        seeds.check_tuning_world(seeds.FIRST_HELDOUT_WORLD)
    with pytest.raises(ValueError, match="world seed"):
        sample_world(seeds.LAST_WORLD + 1)


def _suite_config(**changes) -> dict:
    raw = {"name": "suite", "env": {"suite": "tuning", "worlds": [0, 2]},
           "agents": [{"name": "random"}, {"name": "oracle_myopic"}, {"name": "popularity"}],
           "seeds": [100, 101], "train_steps": 256, "num_envs": 16,
           "eval": {"every_steps": 128, "users": 12, "final_users": 24}}
    raw.update(changes)
    return raw


@pytest.mark.parametrize(("changes", "message"), [
    ({"agents": [{"name": "random"}, {"name": "popularity"}]}, "needs \\['oracle_myopic'\\]"),
    ({"seeds": [0, 1]}, "tuning suite uses tuning seeds"),
    ({"env": {"suite": "held_out", "worlds": 2, "presets": ["default"]}}, "held-out worlds only"),
    ({"env": {"suite": "tuning", "worlds": 2, "preset": "news"}}, "either env.suite"),
    ({"env": {"suite": "tuning", "worlds": [5, 1500]}}, "not tuning worlds"),
    ({"env": {"suite": "dev", "worlds": 2}}, "env.suite must be one of"),
])
def test_suite_config_errors_name_the_key(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_suite_config(**changes))


def test_a_suite_run_names_worlds_normalises_and_reports(tmp_path: Path) -> None:
    config = parse_config(_suite_config(env={"suite": "tuning", "worlds": [2], "presets": ["static"]}))
    assert [w.name for w in config.worlds] == ["w2", "static"]
    out = run_experiment(config, out_dir=tmp_path / "run", progress=False)
    keys = {p.stem for p in (out / "jobs").glob("*.json")}
    assert keys == config_job_keys(out) and "popularity__w2__seed101" in keys and len(keys) == 12
    record = json.loads((out / "jobs" / "random__static__seed100.json").read_text())
    assert record["world"] == "static" and record["static_like"] and record["spec"]["users"] == "tuning"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"] and set(summary["worlds"]) == {"w2", "static"}
    everything = summary["aggregate"]["all"]["agents"]
    assert everything["oracle_myopic"]["mean"] == pytest.approx(1.0)  # by construction
    assert everything["random"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert summary["aggregate"]["static_like"]["worlds"] == ["static"]
    vs = everything["popularity"]["vs_oracle_myopic"]
    assert set(vs["worlds"]) == {"w2", "static"} and sum(vs["verdicts"].values()) == 2
    report = make_report(out)
    text = report.read_text()
    assert "## Where each agent works" in text and "| w2 |" in text
    # coverage and diversity beside the normalised scores: the mean over worlds of each world's
    # mean over seeds
    coverage = np.mean([summary["worlds"][w]["summary"]["agents"]["popularity"]["metrics"]["coverage"]["mean"]
                        for w in ("w2", "static")])
    row = next(line for line in text.splitlines() if line.startswith("| popularity |"))
    assert "coverage | diversity |" in text and row.split(" | ")[-2] == f"{coverage:.3f}"
    # the return relative to oracle-myopic's, paired by world and seed
    returns = {(r["agent"], r["world"], r["seed"]): r["final"]["return"] for r in load_records(out)}
    ratios = [np.mean([returns["popularity", w, s] / returns["oracle_myopic", w, s] - 1 for s in (100, 101)])
              for w in ("w2", "static")]
    relative = everything["popularity"]["return_vs_oracle_myopic"]
    assert relative["mean"] == pytest.approx(np.mean(ratios))
    assert relative["ci_low"] <= relative["mean"] <= relative["ci_high"]
    assert row.split(" | ")[-3].startswith(f"{100 * relative['mean']:+.1f}%")
    assert "return_vs_oracle_myopic" not in everything["oracle_myopic"]
    # the report regenerates from the job files to the digit (rliable's bootstrap is seeded)
    assert make_report(out).read_text() == text
    for plot in ("suite_scores.png", "suite_iqm.png", "suite_curves.png"):
        assert (out / plot).stat().st_size > 1000
    # tuning users: the same job on a held-out-style (harness) run would evaluate other users
    assert record["final"]["return"] != json.loads(
        (out / "jobs" / "random__static__seed101.json").read_text())["final"]["return"]
    run_experiment(config, out_dir=out, resume=True, progress=False)  # nothing left to run


def test_hierarchical_bootstrap_finds_a_shift_and_not_noise() -> None:
    gen = np.random.default_rng(0)
    shifted = [gen.normal(0.3, 0.2, 3) + gen.normal(0, 0.1) for _ in range(12)]
    noise = [gen.normal(0.0, 0.2, 3) + gen.normal(0, 0.1) for _ in range(12)]
    _, low, high = hierarchical_bootstrap(shifted)
    assert low > 0
    mean, low, high = hierarchical_bootstrap(noise)
    assert low < 0 < high and low < mean < high


def test_one_seed_per_world_still_gets_intervals_over_worlds() -> None:
    from recsim_gym.experiments.report import _where_section
    from recsim_gym.experiments.statistics import summarize_suite

    gen = np.random.default_rng(3)
    records = []
    for w in range(8):
        low, high = gen.uniform(30, 60), gen.uniform(100, 160)
        returns = {"random": low, "oracle_myopic": high, "din": low + 0.8 * (high - low),
                   "slateq": high * 1.1 + gen.normal(0, 3)}
        records += [{"agent": a, "seed": 0, "world": f"w{w}", "static_like": False, "curve": [],
                     "final": {"return": r}} for a, r in returns.items()]
    summary = summarize_suite(records)
    slateq = summary["aggregate"]["all"]["agents"]["slateq"]
    # the IQM and the paired differences resample worlds, so they have intervals with one seed
    low, high = slateq["iqm"]["ci"]
    assert low < slateq["iqm"]["value"] < high
    vs = slateq["vs_oracle_myopic"]
    assert 0 < vs["ci_low"] < vs["mean"] < vs["ci_high"]
    assert slateq["return_vs_oracle_myopic"]["mean"] == pytest.approx(0.1, abs=0.03)
    assert sum(vs["verdicts"].values()) == 0  # no per-world interval from one seed
    assert any("One seed per world" in w for w in summary["warnings"])
    where = "\n".join(_where_section(summary, ["random", "oracle_myopic", "din", "slateq"]))
    assert "vs oracle-myopic: higher in w0 (+" in where and "(one seed: point estimates)" in where
