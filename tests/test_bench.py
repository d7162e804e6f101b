"""The training benchmark: times each variant, writes JSON, rejects bad arguments by name."""

from __future__ import annotations

import json

import pytest

from recsim_gym.experiments import bench


def test_train_benchmark_times_each_variant(tmp_path, capsys) -> None:
    out = tmp_path / "train.json"
    tiny = '{"num_envs": 8, "n_steps": 8, "batch_size": 32, "n_epochs": 1}'
    slateq = '{"learning_starts": 64, "batch_size": 32, "hidden": 16}'
    bench.main(["train", f"ppo_attention:{tiny}", f"slateq:{slateq}", "--steps", "128", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["agent"] for row in rows] == ["ppo_attention", "slateq"]
    assert rows[0]["kwargs"]["num_envs"] == 8 and rows[1]["kwargs"]["hidden"] == 16
    assert all(row["steps"] == 128 and row["seconds"] > 0 and row["steps_per_s"] > 0 for row in rows)
    assert "x the first" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["train", "nope"], "unknown agent"),
    (["train", "ppo_attention:[1]"], "must be a JSON object"),
    (["train", "ppo_attention:{bad"], "bad JSON"),
    (["train", "random", "--steps", "0"], "--steps"),
    (["train", "random"], "has no learn()"),
])
def test_train_benchmark_rejects_bad_arguments(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        bench.main(argv)
    assert message in capsys.readouterr().err + str(raised.value.code)
