"""SB3 and Gymnasium tooling on the registered ids, used as their own docs show, with no
recsim-specific arguments: the one-liner, make_vec_env (Dummy and Subproc), A2C, renders,
RecordVideo and the spec's time limit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import recsim_gym.env  # noqa: F401  (registers the recsim/ ids)
from recsim_gym.env import RecSimEnv
from recsim_gym.env.render import FRAME_HEIGHT, FRAME_WIDTH
from recsim_gym.env.spaces import InvalidActionError

SMALL = dict(num_items=200, num_candidates=8, slate_size=3, history_length=4, num_topics=6,
             max_steps=20)


def _snapshot(model) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.policy.parameters()]


def _assert_updated(before: list[np.ndarray], model) -> None:
    """The model took gradient steps: its parameters are finite and moved from ``before``."""
    after = _snapshot(model)
    assert all(np.isfinite(a).all() for a in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_one_liner_on_the_registered_id(algo) -> None:
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=1) if algo is PPO else dict(n_steps=16)
    model = algo("MultiInputPolicy", "recsim/default-v0", seed=0, device="cpu", **kwargs)
    before = _snapshot(model)
    model.learn(128)
    assert model.num_timesteps >= 128
    _assert_updated(before, model)
    mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
    assert np.isfinite(mean) and mean >= 0


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_make_vec_env_dummy_trains(algo) -> None:
    envs = make_vec_env("recsim/default-v0", n_envs=2, seed=0, env_kwargs=SMALL)
    kwargs = dict(n_steps=32, batch_size=32, n_epochs=1) if algo is PPO else dict(n_steps=16)
    model = algo("MultiInputPolicy", envs, seed=0, device="cpu", **kwargs)
    before = _snapshot(model)
    model.learn(256)
    assert model.num_timesteps >= 256
    _assert_updated(before, model)
    envs.close()


SUBPROC_SCRIPT = """
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import recsim_gym.env  # registers the ids, in the workers too (they re-import this script)

if __name__ == "__main__":
    envs = make_vec_env("recsim/default-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        env_kwargs=dict(num_candidates=8, slate_size=3, max_steps=20))
    model = A2C("MultiInputPolicy", envs, n_steps=16, seed=0, device="cpu").learn(256)
    print("timesteps", model.num_timesteps)
    envs.close()
"""


def test_make_vec_env_subproc_trains_from_a_user_script(tmp_path) -> None:
    """SubprocVecEnv's workers (forkserver) know the ids because they import the user's script,
    as they do for any Gymnasium plug-in: the script runs as a user would run it."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(SUBPROC_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split("timesteps")[1]) >= 256


def test_subproc_workers_import_the_module_named_in_the_id() -> None:
    """Where the workers cannot re-import a script (notebooks, this test), Gymnasium's
    ``module:id`` form makes each worker import recsim_gym.env itself."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    envs = make_vec_env("recsim_gym.env:recsim/default-v0", n_envs=2, seed=0, env_kwargs=SMALL,
                        vec_env_cls=SubprocVecEnv)
    model = A2C("MultiInputPolicy", envs, n_steps=16, seed=0, device="cpu").learn(128)
    assert model.num_timesteps >= 128
    envs.close()


def test_repeats_are_filled_and_counted_by_default() -> None:
    env = RecSimEnv(**SMALL)
    env.reset(seed=3)
    _, _, _, _, info = env.step(np.array([2, 2, 2]))
    assert info["filled"] == 2
    twin = RecSimEnv(**SMALL)
    twin.reset(seed=3)
    _, _, _, _, same = twin.step(np.array([2, 0, 1]))  # what 'fill' shows for [2, 2, 2]
    assert same["filled"] == 0
    assert np.array_equal(info["choice_probs"], same["choice_probs"])
    strict = RecSimEnv(duplicate_rule="raise", **SMALL)
    strict.reset(seed=3)
    with pytest.raises(InvalidActionError, match="repeats a candidate"):
        strict.step(np.array([2, 2, 2]))


def test_vector_env_counts_filled_per_user() -> None:
    envs = gym.make_vec("recsim/default-v0", num_envs=3, **SMALL)
    envs.reset(seed=0)
    _, _, _, _, info = envs.step(np.array([[0, 1, 2], [1, 1, 2], [4, 4, 4]]))
    assert info["filled"].tolist() == [0, 1, 2]


def test_spec_reports_the_env_time_limit_including_overrides() -> None:
    env = gym.make("recsim/default-v0")
    assert env.spec.max_episode_steps == env.unwrapped.params.max_steps
    short = gym.make("recsim/default-v0", max_steps=7)
    assert short.spec.max_episode_steps == 7
    short.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = short.step(short.action_space.sample())
        steps += 1
        done = terminated or truncated
    assert steps <= 7 and (steps == 7) == (info["end_reason"] == "max_steps")


def test_ansi_render_reads_as_text() -> None:
    env = gym.make("recsim/default-v0", render_mode="ansi", **SMALL)
    env.reset(seed=0)
    assert "no slate shown yet" in env.render()
    env.step(np.array([0, 1, 2]))
    text = env.render()
    assert isinstance(text, str) and text.startswith("step 1/20 | satisfaction")
    assert "slate (* = clicked):" in text and text.count("item ") >= 3 and "reward" in text


@pytest.mark.parametrize("preset", ["default", "interest_evolution"])
def test_rgb_array_render_is_a_frame_that_changes(preset: str) -> None:
    env = gym.make(f"recsim/{preset}-v0", render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and first.dtype == np.uint8
    env.step(env.action_space.sample())
    second = env.render()
    assert not np.array_equal(first, second)  # the slate shown now appears


def test_record_video_writes_a_file(tmp_path) -> None:
    pytest.importorskip("moviepy")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(gym.make("recsim/default-v0", render_mode="rgb_array", **SMALL),
                      video_folder=str(tmp_path / "videos"), episode_trigger=lambda e: e == 0,
                      disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_bad_render_mode_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"render_mode must be one of \['ansi', 'rgb_array'\]"):
        RecSimEnv(render_mode="human")
