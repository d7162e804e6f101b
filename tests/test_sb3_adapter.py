"""The SB3 VecEnv adapter: SB3's conventions (same-step autoreset, terminal_observation,
TimeLimit.truncated), SB3 wrappers (VecMonitor, VecNormalize, VecCheckNan) and equivalence with
the single-user env."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecCheckNan, VecEnv, VecMonitor, VecNormalize

from recsim_gym.agents.sb3_vecenv import RecSimVecEnv, make_vec_env
from recsim_gym.env import RecSimEnv
from recsim_gym.env.spaces import Slate

SMALL = dict(num_items=200, num_candidates=8, slate_size=3, history_length=4, num_topics=6)


def first_slates(num_envs: int, k: int) -> np.ndarray:
    return np.tile(np.arange(k, dtype=np.int64), (num_envs, 1))


def test_is_a_vecenv_with_per_user_spaces() -> None:
    env = RecSimVecEnv(5, **SMALL)
    assert isinstance(env, VecEnv) and env.num_envs == 5
    assert env.action_space == Slate(8, 3)
    obs = env.reset()
    assert set(obs) == set(env.observation_space.spaces)
    for key, space in env.observation_space.spaces.items():
        assert obs[key].shape == (5, *space.shape) and obs[key].dtype == np.float32
        assert all(space.contains(row) for row in obs[key])
    obs, rewards, dones, infos = env.step(first_slates(5, 3))
    assert rewards.shape == (5,) and rewards.dtype == np.float32
    assert dones.shape == (5,) and dones.dtype == bool
    assert isinstance(infos, list) and len(infos) == 5 and all(isinstance(i, dict) for i in infos)
    assert env.last_info is not None and env.last_info["click"].shape == (5,)


def test_float_actions_from_sb3_buffers_are_accepted() -> None:
    env = RecSimVecEnv(3, **SMALL)
    env.reset()
    env.step(first_slates(3, 3).astype(np.float32))


def test_truncation_sets_terminal_observation_and_time_limit_flag() -> None:
    env = RecSimVecEnv(4, max_steps=3, churn_base=0.0, churn_scale=0.0, **SMALL)
    env.reset()
    for step in range(3):
        obs, _, dones, infos = env.step(first_slates(4, 3))
        assert dones.all() == (step == 2)
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        terminal = info["terminal_observation"]
        assert env.observation_space.contains(terminal)
        assert terminal["user"][-1] == pytest.approx(1.0)  # progress t / max_steps at the end
    assert np.all(obs["user"][:, -1] == 0.0)  # same-step autoreset: new users
    assert np.all(obs["history"][..., -1] == 0.0)


def test_churn_is_terminal_not_truncated() -> None:
    env = RecSimVecEnv(4, churn_base=1.0, churn_scale=0.0, **SMALL)
    env.reset()
    _, _, dones, infos = env.step(first_slates(4, 3))
    assert dones.all()
    assert all(info["TimeLimit.truncated"] is False and "terminal_observation" in info for info in infos)


def test_slots_replay_the_single_env_across_autoresets() -> None:
    """Slot b seeded with s + b equals RecSimEnv reset with s + b, including autoreset episodes."""
    overrides = dict(max_steps=4, churn_base=0.2, **SMALL)
    env = RecSimVecEnv(3, **overrides)
    env.seed(100)
    obs = env.reset()
    singles = [RecSimEnv(**overrides) for _ in range(3)]
    single_obs = [single.reset(seed=100 + b)[0] for b, single in enumerate(singles)]
    rng = np.random.default_rng(0)
    for _ in range(12):
        slates = np.stack([rng.permutation(8)[:3] for _ in range(3)])
        obs, rewards, dones, infos = env.step(slates)
        for b, single in enumerate(singles):
            last, reward, terminated, truncated, _ = single.step(slates[b])
            assert rewards[b] == pytest.approx(reward)
            assert dones[b] == (terminated or truncated)
            if dones[b]:
                assert infos[b]["TimeLimit.truncated"] == (truncated and not terminated)
                for key in last:
                    np.testing.assert_array_equal(infos[b]["terminal_observation"][key], last[key])
                single_obs[b] = single.reset()[0]
            else:
                single_obs[b] = last
            for key in single_obs[b]:
                np.testing.assert_array_equal(obs[key][b], single_obs[b][key])


def test_seed_makes_resets_reproducible() -> None:
    a, b = RecSimVecEnv(3, **SMALL), RecSimVecEnv(3, **SMALL)
    assert a.seed(7) == [7, 8, 9]
    b.seed(7)
    obs_a, obs_b = a.reset(), b.reset()
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_b[key])
    assert all(s is None for s in a._seeds)  # seeds apply to one reset only (SB3 convention)


def test_attribute_and_method_access() -> None:
    env = RecSimVecEnv(3, **SMALL)
    assert env.get_attr("render_mode") == [None, None, None]
    assert env.get_attr("num_envs", indices=[0, 2]) == [3, 3]
    assert env.env_is_wrapped(VecMonitor) == [False, False, False]
    assert len(env.env_method("reset", seed=0)) == 3
    with pytest.raises(ValueError, match="share one core"):
        env.set_attr("foo", 1, indices=[0])


def test_vec_monitor_reports_episode_returns() -> None:
    env = make_vec_env(4, seed=0, max_steps=5, churn_base=0.0, churn_scale=0.0, **SMALL)
    assert isinstance(env, VecMonitor)
    env.reset()
    total = np.zeros(4)
    for _ in range(5):
        _, rewards, dones, infos = env.step(first_slates(4, 3))
        total += rewards
    assert dones.all()
    for b, info in enumerate(infos):
        assert info["episode"]["l"] == 5
        assert info["episode"]["r"] == pytest.approx(total[b], abs=1e-5)


def test_vec_normalize_and_check_nan_wrap_the_adapter() -> None:
    # no churn, so every user's episode ends at max_steps (truncation) in the same step
    base = RecSimVecEnv(4, max_steps=3, churn_base=0.0, churn_scale=0.0, **SMALL)
    env = VecNormalize(VecCheckNan(VecMonitor(base), raise_exception=True), gamma=0.99)
    env.seed(0)
    obs = env.reset()
    assert set(obs) == {"candidates", "history", "user"}
    for _ in range(3):
        obs, rewards, dones, infos = env.step(first_slates(4, 3))
        assert np.isfinite(rewards).all()
    assert dones.all()
    terminal = infos[0]["terminal_observation"]  # normalized by VecNormalize, still a per-user dict
    assert terminal["candidates"].shape == (8, 9) and np.isfinite(terminal["candidates"]).all()
    assert env.obs_rms["candidates"].count > 1


def test_sb3_ppo_runs_on_the_adapter_with_the_fill_rule(monkeypatch, tmp_path) -> None:
    """SB3's own MultiInputPolicy (MultiDiscrete head, duplicates filled) trains on the adapter."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path))  # SB3's default logger makes this directory
    env = VecMonitor(RecSimVecEnv(8, duplicate_rule="fill", max_steps=6, **SMALL))
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    assert model.num_timesteps == 64
    assert len(model.ep_info_buffer) > 0
