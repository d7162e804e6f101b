"""RL Baselines3 Zoo trains and evaluates on the registered ids with the shipped hyperparameters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from recsim_gym.agents.zoo import ALGOS, load
from recsim_gym.env.registration import env_ids


@pytest.mark.parametrize("algo", ALGOS)
def test_every_registered_id_has_hyperparameters(algo: str) -> None:
    hyperparams = load(algo)
    assert set(hyperparams) == set(env_ids())
    for entry in hyperparams.values():
        assert entry["policy"] == "MultiInputPolicy" and entry["n_timesteps"] > 0


def test_unknown_algo_is_refused() -> None:
    with pytest.raises(ValueError, match=r"algo must be one of \('ppo', 'a2c'\)"):
        load("dqn")


@pytest.mark.parametrize("algo", ALGOS)
def test_rl_zoo_trains_and_evaluates_with_env_kwargs_reaching_the_eval_env(algo, tmp_path) -> None:
    pytest.importorskip("rl_zoo3")
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", "recsim/default-v0",
               "--gym-packages", "recsim_gym.env", "--conf-file", f"recsim_gym.agents.zoo.{algo}",
               "-n", "512", "--eval-freq", "256", "--eval-episodes", "2", "--n-eval-envs", "1",
               "-f", str(tmp_path / "logs"), "--seed", "0", "--hyperparams", "n_envs:2",
               "--env-kwargs", "max_steps:30", "num_candidates:8", "slate_size:3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    runs = list((tmp_path / "logs" / algo).glob("recsim-default-v0_*"))
    assert len(runs) == 1 and (runs[0] / "recsim-default-v0.zip").exists()
    evaluations = np.load(runs[0] / "evaluations.npz")
    assert evaluations["timesteps"].size >= 1
    assert evaluations["ep_lengths"].max() <= 30  # the eval env got --env-kwargs too
