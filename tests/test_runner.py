"""The experiment runner end to end: config validation, CLI, outputs, resume, backends."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from recsim_gym.experiments.cli import main as cli_main
from recsim_gym.experiments.config import ConfigError, load_config, parse_config
from recsim_gym.experiments.runner import JobFileError, seal

ROOT = Path(__file__).resolve().parents[1]


class FirstK:
    """A tiny plug-in agent (``tests.test_runner:FirstK``): shows the first k candidates."""

    def __init__(self, slate_size: int = 5, **_: object) -> None:
        self.slate_size = slate_size

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        batch = obs["candidates"].shape[0]
        return np.tile(np.arange(self.slate_size), (batch, 1))


class SlowLearner(FirstK):
    """Learns nothing but sleeps, so a run can be killed mid-way (``tests.test_runner:SlowLearner``)."""

    def learn(self, env, total_steps: int, callback=None) -> None:
        obs, _ = env.reset(seed=0)
        done = 0
        while done < total_steps:
            obs, *_ = env.step(self.act(obs))
            done += env.num_envs
            time.sleep(0.05)
            if callback is not None:
                callback(self, done)


def _config(tmp_path: Path, **overrides) -> Path:
    raw = {"name": "tiny", "env": {"preset": "static", "overrides": {"num_items": 200}},
           "agents": [{"name": "random"}, {"name": "tests.test_runner:FirstK", "label": "first_k"}],
           "seeds": 2, "train_steps": 0, "num_envs": 8,
           "eval": {"every_steps": 0, "users": 20, "final_users": 30},
           "output_dir": str(tmp_path / "run")}
    raw.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutation, key", [
    ({"agnets": []}, "agnets"),
    ({"eval": {"users": 0}}, "eval.users"),
    ({"eval": {"every": 5}}, "eval.every"),
    ({"seeds": 0}, "seeds"),
    ({"train_steps": -1}, "train_steps"),
    ({"env": {"preset": "nope"}}, "env.preset"),
    ({"env": {"preset": "default", "overrides": {"slate_size": 0}}}, "slate_size"),
    ({"env": {"preset": "default", "overrides": {"not_a_field": 1}}}, "not_a_field"),
    ({"agents": [{"name": "no_such_agent"}]}, "agents[0].name"),
    ({"agents": [{"name": "random", "lr": 3}]}, "agents[0].lr"),
    # agent hyperparameters are checked when the config is read, not when the job starts
    ({"agents": [{"name": "random"}, {"name": "slateq", "params": {"learning_rat": 1e-3}}]},
     "agents[1].params: .*learning_rat"),
    ({"agents": [{"name": "slateq", "params": {"gamma": 1.5}}]},
     "agents[0].params: SlateQConfig.gamma must be a number in [0, 1], got 1.5"),
    ({"agents": [{"name": "ppo_attention", "params": {"n_steps": 0}}]}, "agents[0].params: .*n_steps"),
    ({"agents": [{"name": "logreg", "params": {"epochs": 0}}]}, "agents[0].params: ClickModelConfig.epochs"),
    ({"agents": [{"name": "linucb", "params": {"alpha": -1}}]},
     "agents[0].params: LinUCBConfig.alpha must be a number in [0, inf), got -1"),
    # ... and so is whether the agent can train on the config's num_envs users
    ({"num_envs": 1, "agents": [{"name": "random"}, {"name": "slateq"}]},
     "num_envs (1) does not suit agents[1] (slateq): "
     "SlateQConfig.continuation_members (2) needs num_envs >= 2"),
    # issue 22, item 5: each of these crashed or was silently coerced
    ({"env": {"overrides": {"preset": "news"}}}, "env.overrides.preset: overrides are Params fields"),
    ({"env": {"overrides": {"params": 5}}}, "env.overrides.params"),
    ({"agents": [{"name": "random", "label": [1, 2]}]}, "agents[0].label must be a non-empty string"),
    ({"output_dir": 123}, "output_dir must be a non-empty string, got 123"),
    ({"agents": [{"name": "random", "label": "r a"}, {"name": "random", "label": "r_a"}]},
     "labels 'r a' and 'r_a' both name job files"),
])
def test_bad_config_names_the_key(tmp_path: Path, mutation: dict, key: str) -> None:
    # `key` is literal text, ".*" standing for anything in between
    with pytest.raises(ConfigError, match=".*".join(re.escape(part) for part in key.split(".*"))):
        load_config(_config(tmp_path, **mutation))


def test_config_files_that_are_not_configs_say_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\nagents: [random]\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(bad)
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\nagents: [random]\nseeds: 2\nseeds: 3\n")
    with pytest.raises(ConfigError, match=r"the key 'seeds' appears twice in one mapping \(lines 3 and 4\)"):
        load_config(twice)


def test_every_config_problem_is_reported_at_once() -> None:
    raw = {"name": "x", "agents": [{"name": "linucb", "params": {"alpah": 1}}, {"name": "nope"},
                                   {"name": "random", "params": {"beta": 2}}],
           "seeds": 0, "eval": {"users": 0, "final_users": -1}, "train_steps": -5, "bogus": 1,
           "logging": {"tensorboard": "yes"}}
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    lines = str(error.value).splitlines()
    assert lines[0] == "config has 9 problems (config):"
    for path in ("unknown key(s) bogus", "agents[0].params: unknown LinUCBConfig field(s) ['alpah']",
                 "agents[1].name: unknown agent 'nope'",
                 "agents[2].params: unknown RandomAgent field(s) ['beta']", "seeds must",
                 "eval.users must", "eval.final_users must", "train_steps must",
                 "logging.tensorboard must"):
        assert sum(line.startswith(f"  - {path}") for line in lines) == 1, (path, lines)


def test_a_missing_logging_extra_fails_when_the_config_is_read(monkeypatch) -> None:
    from recsim_gym.experiments import config as config_module

    monkeypatch.setattr(config_module, "_extra_installed", lambda module: False)
    with pytest.raises(ConfigError, match=r"pip install 'recsim-gym\[tensorboard\]'"):
        parse_config({"name": "x", "agents": ["random"], "logging": {"tensorboard": True}})
    with pytest.raises(ConfigError, match=r"pip install 'recsim-gym\[wandb\]'"):
        parse_config({"name": "x", "agents": ["random"], "logging": {"wandb": {"project": "p"}}})


def test_bad_config_fails_before_training(tmp_path: Path, capsys) -> None:
    code = cli_main(["run", str(_config(tmp_path, eval={"users": -3})), "--quiet"])
    assert code == 2
    assert "eval.users" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_run_writes_every_output(tmp_path: Path) -> None:
    assert cli_main(["run", str(_config(tmp_path)), "--quiet"]) == 0
    out = tmp_path / "run"
    for name in ("manifest.json", "evaluations.csv", "summary.json", "report.md", "reward_curves.png",
                 "final_return.png", "improvement.png", "metrics.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "evaluations.csv").open()))
    assert {(r["agent"], r["seed"]) for r in rows} == {
        (a, s) for a in ("random", "first_k") for s in ("0", "1")}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["agents"]) == {"random", "first_k"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and "numpy" in manifest["versions"]
    report = (out / "report.md").read_text()
    assert "| random |" in report and "reward_curves.png" in report
    # no supervised model or oracle: the probability-of-improvement plot is missing, and says why
    assert not (out / "probability_of_improvement.png").exists()
    assert "No probability-of-improvement plot: the run has no reference agent" in report
    assert "Few seeds (2)" in report
    # every job records the commit it ran on; one code version: the report names only the run's
    commits = {json.loads(p.read_text())["git_commit"] for p in (out / "jobs").glob("*.json")}
    assert commits == {manifest["git_commit"]} and "Jobs by commit" not in report
    # A second run into the same directory without --resume refuses to overwrite results.
    assert cli_main(["run", str(_config(tmp_path)), "--quiet"]) == 2
    # jobs of another code version (as a resumed run can mix) are named in the report
    for path in (out / "jobs").glob("random__*.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps(seal({**record, "git_commit": "0123456789abcdef"})))
    assert cli_main(["plot", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Jobs by commit:" in report and "`0123456789` (random)" in report


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    config = _config(tmp_path, agents=[{"name": "tests.test_runner:FirstK", "label": "a"},
                                       {"name": "tests.test_runner:SlowLearner", "label": "slow"}],
                     seeds=2, train_steps=400, eval={"every_steps": 100, "users": 10, "final_users": 10})
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recsim_gym.experiments.cli", "run", str(config), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "jobs").glob("a__seed*.json"))) < 2:
        time.sleep(0.1)
    time.sleep(0.5)  # now inside a SlowLearner job
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (out / "jobs").glob("*.json"))
    assert "a__seed0.json" in done_before and len(done_before) < 4
    assert cli_main(["run", str(config), "--quiet", "--resume"]) == 0
    done_after = sorted(p.name for p in (out / "jobs").glob("*.json"))
    assert done_after == ["a__seed0.json", "a__seed1.json", "slow__seed0.json", "slow__seed1.json"]
    rows = list(csv.DictReader((out / "evaluations.csv").open()))
    keys = [(r["agent"], r["seed"], r["env_steps"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {k[:2] for k in keys} == {(a, s) for a in ("a", "slow") for s in ("0", "1")}


def test_resume_refuses_a_changed_agent_but_takes_added_ones(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main(["run", str(_config(tmp_path)), "--quiet"]) == 0
    before = {p.name: p.read_text() for p in (out / "jobs").glob("*.json")}
    first_k = {"name": "tests.test_runner:FirstK", "label": "first_k"}
    changed = _config(tmp_path, agents=[{"name": "random"}, {**first_k, "params": {"slate_size": 3}}])
    assert cli_main(["run", str(changed), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "first_k__seed0" in err and "agent" in err
    assert {p.name: p.read_text() for p in (out / "jobs").glob("*.json")} == before  # nothing lost
    added = _config(tmp_path, agents=[{"name": "random"}, first_k, {"name": "popularity"}])
    assert cli_main(["run", str(added), "--quiet", "--resume"]) == 0
    after = {p.name: p.read_text() for p in (out / "jobs").glob("*.json")}
    assert {k: after[k] for k in before} == before
    assert {"popularity__seed0.json", "popularity__seed1.json"} <= set(after)


def test_same_results_whatever_the_worker_count(tmp_path: Path) -> None:
    serial = _config(tmp_path)
    assert cli_main(["run", str(serial), "--quiet"]) == 0
    parallel_dir = tmp_path / "parallel"
    assert cli_main(["run", str(serial), "--quiet", "--workers", "2", "--out", str(parallel_dir)]) == 0
    a = json.loads((tmp_path / "run" / "summary.json").read_text())["agents"]
    b = json.loads((parallel_dir / "summary.json").read_text())["agents"]
    for agent in a:
        assert a[agent]["metrics"]["return"]["per_seed"] == b[agent]["metrics"]["return"]["per_seed"]


def test_ray_backend_matches_local(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    config = _config(tmp_path)
    assert cli_main(["run", str(config), "--quiet"]) == 0
    ray_dir = tmp_path / "ray"
    assert cli_main(["run", str(config), "--quiet", "--backend", "ray", "--out", str(ray_dir)]) == 0
    local = json.loads((tmp_path / "run" / "summary.json").read_text())["agents"]
    remote = json.loads((ray_dir / "summary.json").read_text())["agents"]
    for agent in local:
        assert local[agent]["metrics"]["return"]["per_seed"] == \
            remote[agent]["metrics"]["return"]["per_seed"]


def test_parse_config_defaults() -> None:
    config = parse_config({"name": "x", "agents": ["random"]})
    assert config.seeds == (0, 1, 2, 3, 4) and config.output_dir == "runs/x"


def test_share_metrics_keep_their_seed_ci_inside_zero_one() -> None:
    from recsim_gym.experiments.statistics import summarize, t_interval

    coverage = [0.99, 1.0, 0.93, 1.0, 0.98]  # mean near 1, spread: the t interval passes 1
    assert t_interval(np.array(coverage))[2] > 1.0
    records = [{"agent": "a", "seed": s, "final": {"return": 10.0 + s, "coverage": c}, "curve": []}
               for s, c in enumerate(coverage)]
    metric = summarize(records)["agents"]["a"]["metrics"]["coverage"]
    assert metric["ci_high"] == 1.0 and 0.9 < metric["ci_low"] < metric["mean"] < 1.0
    # unbounded metrics keep the plain t interval
    ret = summarize(records)["agents"]["a"]["metrics"]["return"]
    assert (ret["ci_low"], ret["ci_high"]) == t_interval(np.arange(10.0, 15.0))[1:]


# --- job files that cannot lie quietly, workers that do not outlive their run (issue 22) -------

def _finished_run(tmp_path: Path) -> tuple[Path, Path]:
    config = _config(tmp_path)
    assert cli_main(["run", str(config), "--quiet"]) == 0
    return config, tmp_path / "run"


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_record", "edited_return", "renamed"])
def test_a_bad_job_file_is_named_and_only_its_job_reruns(tmp_path: Path, capsys, damage: str) -> None:
    config, out = _finished_run(tmp_path)
    path = out / "jobs" / "random__seed1.json"
    good = path.read_text()
    expected = json.loads(good)["final"]
    if damage == "truncated":
        path.write_text(good[: len(good) // 2])
    elif damage == "empty":
        path.write_text("")
    elif damage == "not_a_record":
        path.write_text('{"hello": 1}')
    elif damage == "edited_return":
        record = json.loads(good)
        record["final"]["return"] = 999.0
        path.write_text(json.dumps(record))
    else:
        (out / "jobs" / "random__seed0.json").unlink()
        path.rename(out / "jobs" / "random__seed0.json")
        path = out / "jobs" / "random__seed0.json"
    capsys.readouterr()
    assert cli_main(["run", str(config), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "re-run just that job" in err
    with pytest.raises(JobFileError):
        from recsim_gym.experiments.runner import read_record
        read_record(path)
    others = {p.name: p.read_text() for p in (out / "jobs").glob("*.json") if p != path}
    path.unlink()
    assert cli_main(["run", str(config), "--quiet", "--resume"]) == 0
    assert {name: (out / "jobs" / name).read_text() for name in others} == others  # kept
    if damage != "renamed":
        assert json.loads(path.read_text())["final"] == expected  # seeded: the same result again


def test_summary_holds_only_the_config_agents(tmp_path: Path) -> None:
    _, out = _finished_run(tmp_path)
    smaller = _config(tmp_path, agents=[{"name": "random"}])
    assert cli_main(["run", str(smaller), "--quiet", "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["agents"]) == {"random"}
    rows = list(csv.DictReader((out / "evaluations.csv").open()))
    assert {row["agent"] for row in rows} == {"random"}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(child) for child in text.split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_kill_9_under_two_workers_leaves_no_worker_and_loses_no_finished_job(tmp_path: Path) -> None:
    agents = [{"name": "tests.test_runner:FirstK", "label": "a"},
              {"name": "tests.test_runner:SlowLearner", "label": "slow"}]
    config = _config(tmp_path, agents=agents, seeds=3, train_steps=800,
                     eval={"every_steps": 0, "users": 10, "final_users": 10})
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recsim_gym.experiments.cli", "run", str(config), "--quiet",
           "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "jobs").glob("a__seed*.json"))) < 3:
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert workers, "the run should have started its worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}/status").exists()
             and "zombie" not in Path(f"/proc/{w}/status").read_text()]
    assert not alive, f"workers {alive} outlived their run"
    finished = sorted(p.name for p in (out / "jobs").glob("*.json"))
    assert {"a__seed0.json", "a__seed1.json", "a__seed2.json"} <= set(finished)
    assert len(finished) < 6
    before = {name: (out / "jobs" / name).read_text() for name in finished}
    assert cli_main(["run", str(config), "--quiet", "--resume"]) == 0
    assert {name: (out / "jobs" / name).read_text() for name in finished} == before  # kept, not re-run
    # the resumed run's results equal an uninterrupted run's
    whole = tmp_path / "whole"
    assert cli_main(["run", str(config), "--quiet", "--out", str(whole)]) == 0
    for path in sorted((whole / "jobs").glob("*.json")):
        mine, theirs = json.loads((out / "jobs" / path.name).read_text()), json.loads(path.read_text())
        assert mine["final"] == theirs["final"] and mine["curve"] == theirs["curve"], path.name


def test_cli_version_and_plot_of_a_missing_directory(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--version"])
    assert capsys.readouterr().out.startswith("recsim-gym ")
    assert cli_main(["plot", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- CLI polish (issue 23) ---------------------------------------------------------------------

def test_recsim_evaluate_is_a_subcommand(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--help"])
    assert capsys.readouterr().out.startswith("usage: recsim evaluate")
    assert cli_main(["evaluate", "--agents", "random", "--users", "5", "--seeds", "1",
                     "--train-steps", "0"]) == 0
    assert "random" in capsys.readouterr().out


def test_each_job_shows_its_training_steps_and_eval_return(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path, agents=[{"name": "linucb"}], seeds=1, train_steps=64,
                     eval={"every_steps": 32, "users": 4, "final_users": 4})
    assert cli_main(["run", str(config)]) == 0
    err = capsys.readouterr().err
    assert "linucb__seed0" in err and "eval return" in err and "jobs: 100%" in err
