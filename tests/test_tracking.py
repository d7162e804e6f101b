"""`recsim run` logs every evaluation row and the agents' training rows to TensorBoard (and, with
the same hook, to W&B)."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

import pytest
import yaml

from recsim_gym.experiments.cli import main as cli_main

pytest.importorskip("tensorboard")


def _config(tmp_path: Path, logging: dict) -> Path:
    raw = {"name": "tb", "env": {"preset": "default", "overrides": {"num_candidates": 8, "slate_size": 3}},
           "agents": [{"name": "random"}, {"name": "logreg", "params": {"epochs": 1}},
                      {"name": "ppo_attention", "params": {"torch_threads": 1, "n_steps": 64,
                                                           "num_envs": 8}}],
           "seeds": 2, "train_steps": 2048, "num_envs": 16,
           "eval": {"every_steps": 1024, "users": 16, "final_users": 32},
           "output_dir": str(tmp_path / "run"), "logging": logging}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_match_evaluations_csv(tmp_path: Path) -> None:
    assert cli_main(["run", str(_config(tmp_path, {"tensorboard": True})), "--quiet"]) == 0
    out = tmp_path / "run"
    rows = list(csv.DictReader((out / "evaluations.csv").open()))
    for agent in ("random", "logreg", "ppo_attention"):
        for seed in (0, 1):
            scalars = _scalars(out / "tensorboard" / f"{agent}__seed{seed}")
            mine = [r for r in rows if r["agent"] == agent and r["seed"] == str(seed)]
            assert mine
            for metric in ("return", "ctr", "session_length", "coverage"):
                logged = scalars[f"eval/{metric}"]
                expected = [(int(r["env_steps"]), float(r[metric])) for r in mine]
                assert [step for step, _ in logged] == [step for step, _ in expected]
                assert [value for _, value in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
            if agent == "ppo_attention":  # SB3's losses reach the same files
                assert {"train/value_loss", "train/policy_gradient_loss",
                        "train/episode_return"} <= set(scalars)
            if agent == "logreg":
                assert scalars["train/loss"] and all(v > 0 for _, v in scalars["train/loss"])


def test_wandb_gets_the_same_rows_through_the_hook(tmp_path: Path, monkeypatch) -> None:
    logged: list[tuple[str, dict]] = []

    class Run:
        def __init__(self, name: str) -> None:
            self.name = name

        def log(self, values: dict) -> None:
            logged.append((self.name, values))

        def finish(self) -> None:
            logged.append((self.name, {"finished": True}))

    fake = types.ModuleType("wandb")
    fake.init = lambda name, group, config, reinit, dir, **kwargs: Run(name)  # noqa: A002
    monkeypatch.setitem(sys.modules, "wandb", fake)
    from recsim_gym.experiments import config as config_module

    monkeypatch.setattr(config_module, "_extra_installed", lambda module: True)
    path = _config(tmp_path, {"wandb": {"project": "recsim-test", "mode": "offline"}})
    assert cli_main(["run", str(path), "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "evaluations.csv").open()))
    evals = [(name, v) for name, v in logged if "eval/return" in v]
    assert len(evals) == len(rows)
    for row in rows:
        key = f"{row['agent']}__seed{row['seed']}"
        assert any(name == key and v["env_steps"] == int(row["env_steps"])
                   and v["eval/return"] == pytest.approx(float(row["return"])) for name, v in evals)
    assert sum("finished" in v for _, v in logged) == 6
