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
    # PPO trains whole rollouts of n_steps x num_envs = 64 steps: 128 is two of them; SlateQ
    # steps 64 users at a time
    assert [row["steps_trained"] for row in rows] == [128, 128]
    assert all(row["steps_per_s"] == row["steps_trained"] / row["seconds"] for row in rows)
    assert "x the first" in capsys.readouterr().out


def test_the_rate_counts_the_steps_actually_trained(tmp_path, capsys) -> None:
    out = tmp_path / "train.json"
    tiny = '{"num_envs": 8, "n_steps": 8, "batch_size": 32, "n_epochs": 1}'
    bench.main(["train", f"ppo_attention:{tiny}", "--steps", "100", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["steps"] == 100 and row["steps_trained"] == 128  # two rollouts of 64
    assert "128 env-steps (asked for 100" in capsys.readouterr().out


def test_sb3_cartpole_runs_sb3_ppo_on_the_given_schedule(tmp_path) -> None:
    out = tmp_path / "train.json"
    tiny = '{"num_envs": 4, "n_steps": 16, "batch_size": 32, "n_epochs": 1}'
    bench.main(["train", f"sb3_cartpole:{tiny}", "--steps", "100", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["agent"] == "sb3_cartpole" and row["steps_trained"] == 128  # two rollouts of 64
    from recsim_gym.agents.ppo_attention import PPOSlateConfig

    c = PPOSlateConfig()  # PPO-attention's schedule unless overridden
    assert bench._SB3PPO().schedule == {"num_envs": c.num_envs, "n_steps": c.n_steps,
                                        "batch_size": c.batch_size, "n_epochs": c.n_epochs}


def test_sb3_mlp_runs_sb3_ppo_on_the_preset(tmp_path) -> None:
    out = tmp_path / "train.json"
    tiny = '{"num_envs": 4, "n_steps": 16, "batch_size": 32, "n_epochs": 1}'
    bench.main(["train", f"sb3_mlp:{tiny}", "--preset", "static", "--steps", "100", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["agent"] == "sb3_mlp" and row["preset"] == "static" and row["steps_trained"] == 128
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    agent = bench._SB3PPO(0, "static", num_envs=4, n_steps=16, batch_size=32, n_epochs=1)
    agent.learn(None, 64)
    assert isinstance(agent.model.policy, MultiInputActorCriticPolicy)
    assert agent.model.env.num_envs == 4  # the preset's batched env, not CartPole
    assert agent.model.observation_space["candidates"].shape[0] == 20  # static's candidates


@pytest.mark.slow  # four fresh processes
def test_compare_alternates_this_checkout_and_a_commit(tmp_path, capsys) -> None:
    import subprocess

    root = bench.Path(bench.__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = tmp_path / "compare.json"
    bench.main(["train", "popularity", "--steps", "256", "--compare", "HEAD", "--rounds", "1",
                "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["variant"] == "popularity {}" and row["this"] > 0 and row["ref"] > 0
    assert row["ratio"] == pytest.approx(row["this"] / row["ref"])
    assert "x HEAD" in capsys.readouterr().out


def test_compare_refuses_an_unknown_commit(tmp_path) -> None:
    with pytest.raises(SystemExit, match="cannot check it out"):
        bench.main(["train", "popularity", "--steps", "64", "--compare", "no-such-ref-xyz",
                    "--out", str(tmp_path / "c.json")])


def test_without_options_drops_options_and_their_values() -> None:
    argv = ["slateq", "--steps", "5", "--compare", "HEAD~1", "--rounds=3", "--out", "x.json"]
    assert bench._without_options(argv, ("--compare", "--rounds", "--out")) == ["slateq", "--steps", "5"]


@pytest.mark.parametrize("argv,message", [
    (["train", "nope"], "unknown agent"),
    (["train", "ppo_attention:[1]"], "must be a JSON object"),
    (["train", "ppo_attention:{bad"], "bad JSON"),
    (["train", "random", "--steps", "0"], "--steps"),
    (["train", "random"], "has no learn()"),
    (["train", 'sb3_cartpole:{"gamma": 0.9}'], "takes only"),
    (["train", 'sb3_mlp:{"gamma": 0.9}'], "sb3_mlp takes only"),
])
def test_train_benchmark_rejects_bad_arguments(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        bench.main(argv)
    assert message in capsys.readouterr().err + str(raised.value.code)
