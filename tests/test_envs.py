"""The Gymnasium shells: env checkers, registration, determinism, and the vector env reproducing
single envs user by user (seed mapping ``s + b``, episodes across autoresets)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import recsim_gym.env
from conftest import (
    STEP_INFO_KEYS,
    assert_info_equal,
    assert_obs_equal,
    assert_records_equal,
    single_info_from_vector,
    single_rollout,
    slot,
)
from recsim_gym.agents.slates import random_slates
from recsim_gym.env import RecSimEnv, RecSimVectorEnv, make_params

ENV_IDS = recsim_gym.env.env_ids()


# ------------------------------------------------------------------------------------------
# Checkers and registration
# ------------------------------------------------------------------------------------------

def test_every_preset_is_registered() -> None:
    assert "recsim/RecSim-v0" in ENV_IDS
    for preset in ("default", "static", "news", "ecommerce"):
        assert f"recsim/{preset}-v0" in ENV_IDS
    for env_id in ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker(env_id: str) -> None:
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_env_checker(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns about the 2-D observation entries; fine
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ["recsim/default-v0", "recsim/ecommerce-v0"])
def test_checkers_with_latent_observation(env_id: str) -> None:
    env = gym.make(env_id, observe_latent=True)
    gym_check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(env.unwrapped, warn=True)
    obs, _ = env.reset(seed=0)
    assert {"interest", "fatigue", "satisfaction", "candidate_quality"} <= set(obs)


def test_latent_state_hidden_by_default() -> None:
    obs, _ = gym.make("recsim/default-v0").reset(seed=0)
    assert set(obs) == {"candidates", "history", "user"}


def test_make_applies_preset_and_overrides() -> None:
    env = gym.make("recsim/RecSim-v0", preset="news")
    assert env.unwrapped.params == make_params("news")
    env = gym.make("recsim/news-v0", num_candidates=30, max_steps=7)
    assert env.unwrapped.params == make_params("news", num_candidates=30, max_steps=7)
    assert env.observation_space["candidates"].shape[0] == 30
    assert env.action_space.nvec.tolist() == [30] * make_params("news").slate_size
    assert gym.make("recsim/default-v0").unwrapped.params == make_params("default")


def test_make_vec_builds_the_native_vector_env() -> None:
    envs = gym.make_vec("recsim/ecommerce-v0", num_envs=3, max_steps=9)
    assert isinstance(envs, RecSimVectorEnv)  # not a Sync/AsyncVectorEnv of copies
    assert envs.num_envs == 3
    assert envs.params == make_params("ecommerce", max_steps=9)
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    actions = envs.action_space.sample()
    assert actions.shape == (3, envs.params.slate_size)
    obs, reward, terminated, truncated, info = envs.step(actions)
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert envs.observation_space.contains(obs)
    for key in STEP_INFO_KEYS:
        assert info[key].shape[0] == 3 and info["_" + key].all()


def test_action_space_samples_distinct_positions() -> None:
    env = RecSimEnv(num_candidates=6, slate_size=6)
    env.action_space.seed(0)
    for _ in range(50):
        slate = env.action_space.sample()
        assert sorted(slate.tolist()) == list(range(6))
        assert env.action_space.contains(slate)
    assert not env.action_space.contains(np.array([0, 0, 1, 2, 3, 4]))


def test_info_contents_single_env() -> None:
    env = RecSimEnv()
    env.reset(seed=5)
    k = env.params.slate_size
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and isinstance(terminated, bool)
        assert isinstance(info["click"], bool) and isinstance(info["conversion"], bool)
        assert info["choice_probs"].shape == (k + 1,)
        assert info["end_reason"] in ("", "churned", "max_steps")
        if info["click"]:
            assert 0 <= info["position"] < k and info["item"] >= 0
        else:
            assert info["position"] == -1 and info["item"] == -1 and not info["conversion"]
        if terminated or truncated:
            break


# ------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------

def _actions(params, n: int, seed: int, batch: int | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if batch is None:
        return [random_slates(rng, 1, params.num_candidates, params.slate_size)[0] for _ in range(n)]
    return [random_slates(rng, batch, params.num_candidates, params.slate_size) for _ in range(n)]


@pytest.mark.parametrize("preset", ["default", "news", "ecommerce"])
def test_single_env_same_seed_same_trajectory(preset: str) -> None:
    overrides = dict(max_steps=25, observe_latent=True)
    params = make_params(preset, **overrides)
    actions = _actions(params, 80, seed=1)
    first = single_rollout(RecSimEnv(preset, **overrides), 42, actions)
    second = single_rollout(RecSimEnv(preset, **overrides), 42, actions)
    assert_records_equal(first, second)
    env = RecSimEnv(preset, **overrides)  # the same instance, re-seeded, replays too
    single_rollout(env, 7, actions[:10])
    assert_records_equal(single_rollout(env, 42, actions), first)


def test_single_env_different_seeds_differ() -> None:
    params = make_params("default")
    actions = _actions(params, 30, seed=1)
    first = single_rollout(RecSimEnv(), 42, actions)
    second = single_rollout(RecSimEnv(), 43, actions)
    assert not np.array_equal(first[0][0]["candidates"], second[0][0]["candidates"])
    probs_a = np.array([r[4]["choice_probs"] for r in first if r[4]][:20])
    probs_b = np.array([r[4]["choice_probs"] for r in second if r[4]][:20])
    assert not np.array_equal(probs_a, probs_b)


def test_unseeded_resets_give_new_users() -> None:
    env = RecSimEnv()
    first, _ = env.reset(seed=3)
    second, _ = env.reset()
    assert not np.array_equal(first["candidates"], second["candidates"])
    other, _ = RecSimEnv().reset()
    assert not np.array_equal(first["candidates"], other["candidates"])


def _vector_rollout(envs: RecSimVectorEnv, seed, actions: list[np.ndarray]) -> list[tuple]:
    obs, _ = envs.reset(seed=seed)
    records = [(obs, np.zeros(envs.num_envs), np.zeros(envs.num_envs, bool),
                np.zeros(envs.num_envs, bool), {})]
    for action in actions:
        records.append(envs.step(action))
    return records


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_same_seed_same_trajectory(mode: AutoresetMode) -> None:
    overrides = dict(max_steps=15, observe_latent=True, autoreset_mode=mode)
    params = make_params("news", max_steps=15)
    actions = _actions(params, 50, seed=2, batch=8)
    first = _vector_rollout(RecSimVectorEnv(8, "news", **overrides), 100, actions)
    second = _vector_rollout(RecSimVectorEnv(8, "news", **overrides), 100, actions)
    assert_records_equal(first, second)
    other = _vector_rollout(RecSimVectorEnv(8, "news", **overrides), 200, actions)
    assert not np.array_equal(first[0][0]["candidates"], other[0][0]["candidates"])
    assert not np.array_equal(np.array([r[1] for r in first]), np.array([r[1] for r in other]))


def test_vector_env_users_are_independent_of_each_other() -> None:
    """Slot b of reset(seed=s) is the user of seed s + b, whatever the batch size."""
    small = RecSimVectorEnv(2)
    large = RecSimVectorEnv(5)
    obs_small, _ = small.reset(seed=11)
    obs_large, _ = large.reset(seed=9)
    assert_obs_equal(slot(obs_small, 0), slot(obs_large, 2))
    assert_obs_equal(slot(obs_small, 1), slot(obs_large, 3))


def test_vector_env_seed_list() -> None:
    envs = RecSimVectorEnv(3)
    obs, _ = envs.reset(seed=[30, 10, 20])
    for b, seed in enumerate([30, 10, 20]):
        single_obs, _ = RecSimEnv().reset(seed=seed)
        assert_obs_equal(slot(obs, b), single_obs)
    with pytest.raises(ValueError, match="seeds"):
        envs.reset(seed=[1, 2])


def test_vector_reset_without_seed_starts_every_slots_next_episode() -> None:
    envs = RecSimVectorEnv(3)
    envs.reset(seed=50)
    envs.step(np.tile(np.arange(5), (3, 1)))
    obs, _ = envs.reset()
    for b in range(3):
        single = RecSimEnv()
        single.reset(seed=50 + b)
        assert_obs_equal(slot(obs, b), single.reset()[0])


# ------------------------------------------------------------------------------------------
# Vector env == B single envs, across autoresets
# ------------------------------------------------------------------------------------------

EQUIVALENCE_CASES = [
    pytest.param("default", dict(max_steps=12), id="default"),
    pytest.param("news", dict(max_steps=12, item_lifetime=5), id="news-churn"),
    pytest.param("ecommerce", dict(max_steps=20, item_lifetime=5, churn_base=0.08, observe_latent=True),
                 id="ecommerce-churn-terminations"),
]


def _replay_slot(b: int, seed: int, preset: str, overrides: dict, obs0: dict, steps: list,
                 mode: AutoresetMode) -> tuple[int, int, int]:
    """Replay slot ``b``'s actions in a single env seeded ``seed + b`` and check every output.

    Returns (episodes started, terminations, truncations) seen in the slot."""
    env = RecSimEnv(preset, **overrides)
    single_obs, _ = env.reset(seed=seed + b)
    assert_obs_equal(slot(obs0, b), single_obs, f"slot {b} reset")
    episodes, terminations, truncations, ended = 1, 0, 0, False
    for i, (action, (obs, reward, terminated, truncated, info)) in enumerate(steps):
        where = f"slot {b} step {i}"
        if ended and mode == AutoresetMode.NEXT_STEP:  # this vector step only reset the slot
            single_obs, _ = env.reset()
            episodes += 1
            assert_obs_equal(slot(obs, b), single_obs, where + " (autoreset)")
            assert reward[b] == 0 and not terminated[b] and not truncated[b]
            assert not any(info["_" + key][b] for key in STEP_INFO_KEYS)
            ended = False
            continue
        assert all(info["_" + key][b] for key in STEP_INFO_KEYS)
        single_obs, single_reward, single_term, single_trunc, single_info = env.step(action[b])
        assert reward[b] == single_reward, where
        assert bool(terminated[b]) == single_term and bool(truncated[b]) == single_trunc, where
        assert_info_equal(single_info_from_vector(info, b), single_info, where)
        ended = single_term or single_trunc
        terminations += single_term
        truncations += single_trunc
        if ended and mode == AutoresetMode.SAME_STEP:
            assert info["_final_obs"][b], where
            assert_obs_equal(slot(info["final_obs"], b), single_obs, where + " (final obs)")
            single_obs, _ = env.reset()
            episodes += 1
            ended = False
        elif mode == AutoresetMode.SAME_STEP and "_final_obs" in info:
            assert not info["_final_obs"][b], where
        assert_obs_equal(slot(obs, b), single_obs, where)
    return episodes, terminations, truncations


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize(("preset", "overrides"), EQUIVALENCE_CASES)
def test_vector_env_equals_single_envs(preset: str, overrides: dict, mode: AutoresetMode) -> None:
    batch, seed, n_steps = 6, 500, 70
    envs = RecSimVectorEnv(batch, preset, autoreset_mode=mode, **overrides)
    obs0, _ = envs.reset(seed=seed)
    rng = np.random.default_rng(9)
    steps = []
    for _ in range(n_steps):
        action = random_slates(rng, batch, envs.params.num_candidates, envs.params.slate_size)
        steps.append((action, envs.step(action)))
    totals = np.zeros(3, dtype=int)
    for b in range(batch):
        episodes, terminations, truncations = _replay_slot(b, seed, preset, overrides, obs0, steps, mode)
        assert episodes >= 4, f"slot {b}: only {episodes} episodes; the test must cross autoresets"
        totals += (episodes, terminations, truncations)
    assert totals[2] > 0
    if "churn_base" in overrides:
        assert totals[1] > 0, "expected some churn terminations in this configuration"


def test_vector_env_disabled_autoreset_with_reset_mask() -> None:
    overrides = dict(max_steps=4)
    envs = RecSimVectorEnv(3, autoreset_mode=AutoresetMode.DISABLED, **overrides)
    singles = [RecSimEnv(**overrides) for _ in range(3)]
    obs, _ = envs.reset(seed=70)
    for b, env in enumerate(singles):
        env.reset(seed=70 + b)
    rng = np.random.default_rng(0)
    for _ in range(4):
        action = random_slates(rng, 3, envs.params.num_candidates, envs.params.slate_size)
        obs, reward, _, truncated, _ = envs.step(action)
        for b, env in enumerate(singles):
            single_obs, single_reward, *_ = env.step(action[b])
            assert_obs_equal(slot(obs, b), single_obs)
            assert reward[b] == single_reward
    assert truncated.all()
    with pytest.raises(RuntimeError, match="reset_mask"):
        envs.step(random_slates(rng, 3, envs.params.num_candidates, envs.params.slate_size))
    obs, _ = envs.reset(options={"reset_mask": np.array([False, True, False])})
    assert_obs_equal(slot(obs, 1), singles[1].reset()[0])
    with pytest.raises(RuntimeError):  # slots 0 and 2 are still over
        envs.step(random_slates(rng, 3, envs.params.num_candidates, envs.params.slate_size))


def test_next_step_autoreset_ignores_action_of_finished_slot() -> None:
    envs = RecSimVectorEnv(2, max_steps=1)
    envs.reset(seed=0)
    envs.step(np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]))
    # both slots ended: this step only resets them, whatever (valid) slate is shown
    obs_a, reward, *_ = envs.step(np.array([[0, 1, 2, 3, 4], [9, 8, 7, 6, 5]]))
    twin = RecSimVectorEnv(2, max_steps=1)
    twin.reset(seed=0)
    twin.step(np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]))
    obs_b, *_ = twin.step(np.array([[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]]))
    assert_obs_equal(obs_a, obs_b)
    assert (reward == 0).all()


@pytest.mark.parametrize("preset", ["default", "interest_evolution"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_reused_buffers_give_the_same_trajectory_in_the_same_arrays(preset: str, mode: AutoresetMode
                                                                    ) -> None:
    plain = RecSimVectorEnv(6, preset=preset, autoreset_mode=mode, max_steps=9)
    reused = RecSimVectorEnv(6, preset=preset, autoreset_mode=mode, max_steps=9, reuse_buffers=True)
    gen = np.random.default_rng(3)
    obs_a, _ = plain.reset(seed=40)
    obs_b, _ = reused.reset(seed=40)
    first = {key: value for key, value in obs_b.items()}
    rewards = None
    for _ in range(25):  # past max_steps: autoresets included
        slates = random_slates(gen, 6, plain.params.num_candidates, plain.params.slate_size)
        step_a = plain.step(slates)
        step_b = reused.step(slates)
        assert_obs_equal(step_a[0], step_b[0])
        for a, b in zip(step_a[1:4], step_b[1:4], strict=True):
            np.testing.assert_array_equal(a, b)
        assert step_a[4].keys() == step_b[4].keys()
        for key, value in step_a[4].items():
            if key == "final_obs":
                assert_obs_equal(value, step_b[4][key])
            else:
                np.testing.assert_array_equal(value, step_b[4][key], err_msg=key)
        assert all(step_b[0][key] is first[key] for key in first)  # written in place every step
        rewards = step_b[1] if rewards is None else rewards
        assert step_b[1] is rewards
    with pytest.raises(ValueError, match="reuse_buffers"):
        RecSimVectorEnv(2, reuse_buffers="yes")


def test_observations_are_fresh_arrays() -> None:
    env = RecSimEnv(observe_latent=True)
    obs, _ = env.reset(seed=1)
    kept = {key: value.copy() for key, value in obs.items()}
    for value in obs.values():
        value[...] = -7.0  # scribbling on the returned observation must not touch the env
    twin = RecSimEnv(observe_latent=True)
    twin.reset(seed=1)
    action = np.arange(env.params.slate_size)
    assert_records_equal([env.step(action)], [twin.step(action)])
    assert kept["candidates"].min() >= 0.0


@pytest.mark.parametrize("preset", ["default", "interest_evolution"])
def test_vector_observations_stay_as_returned_and_keys_do_not_overlap(preset: str) -> None:
    """Without reuse_buffers an observation is the caller's: the next steps leave it alone, and
    its keys (views of one allocation) never share memory."""
    envs = RecSimVectorEnv(5, preset=preset, observe_latent=True, max_steps=4)
    gen = np.random.default_rng(0)
    obs, _ = envs.reset(seed=8)
    kept = {key: value.copy() for key, value in obs.items()}
    for _ in range(6):  # autoresets included
        envs.step(random_slates(gen, 5, envs.params.num_candidates, envs.params.slate_size))
    assert_obs_equal(obs, kept)
    values = list(obs.values())
    assert not any(np.shares_memory(a, b) for i, a in enumerate(values) for b in values[i + 1:])
    for value in obs.values():
        value[...] = -3.0  # writing one key does not touch another
    assert all((value == -3.0).all() for value in obs.values())


def test_native_vector_env_equals_gymnasium_sync_vector_env() -> None:
    """Gymnasium's own SyncVectorEnv of single envs (same s + b seeding, NEXT_STEP autoreset)
    runs the same trajectories; its batched action space keeps slates free of repeats."""
    overrides = dict(max_steps=8, item_lifetime=5)
    native = gym.make_vec("recsim/news-v0", num_envs=4, **overrides)
    sync = gym.make_vec("recsim/news-v0", num_envs=4, vectorization_mode="sync", **overrides)
    assert not isinstance(sync, RecSimVectorEnv)
    sync.action_space.seed(3)
    for _ in range(20):  # a Box here would sample repeated candidates
        assert sync.action_space.contains(sync.action_space.sample())
    obs_native, _ = native.reset(seed=60)
    obs_sync, _ = sync.reset(seed=60)
    assert_obs_equal(obs_native, obs_sync)
    for _ in range(30):
        actions = sync.action_space.sample()
        out_native, out_sync = native.step(actions), sync.step(actions)
        assert_obs_equal(out_native[0], out_sync[0])
        for a, b in zip(out_native[1:4], out_sync[1:4], strict=True):
            assert np.array_equal(a, b)
        info_native, info_sync = out_native[4], out_sync[4]
        for key in ("click", "conversion", "position", "choice_probs"):
            present = info_sync.get("_" + key, np.zeros(4, dtype=bool))
            assert np.array_equal(info_native["_" + key], present)
            if present.any():
                assert np.array_equal(info_native[key][present], info_sync[key][present])
    sync.close()


def test_observation_reports_history_and_progress() -> None:
    """history: last H interactions oldest first, newest = clicked item (or the first shown on a
    no-click step) with click/conversion/valid flags; user[-1] = t / max_steps."""
    env = RecSimEnv(observe_latent=True)
    params = env.params
    t, h = params.num_topics, params.history_length
    obs, _ = env.reset(seed=21)
    assert not obs["history"].any(), "history starts empty (valid flag 0)"
    assert obs["user"][-1] == 0.0 and obs["user"][:t].sum() == params.declared_topics
    rng = np.random.default_rng(0)
    clicks = 0
    for step in range(1, 40):
        slate = random_slates(rng, 1, params.num_candidates, params.slate_size)[0]
        new, _, terminated, truncated, info = env.step(slate)
        newest = new["history"][-1]
        shown = slate[info["position"]] if info["click"] else slate[0]
        np.testing.assert_array_equal(newest[: t + 3], obs["candidates"][shown])
        assert newest[t + 3:].tolist() == [float(info["click"]), float(info["conversion"]), 1.0]
        np.testing.assert_array_equal(new["history"][:-1], obs["history"][1:])
        assert new["user"][-1] == pytest.approx(step / params.max_steps, rel=1e-6)
        assert (new["history"][:, -1] == 1.0).sum() == min(step, h)
        clicks += info["click"]
        obs = new
        if terminated or truncated:
            break
    assert clicks > 0


def test_vector_env_accepts_numpy_sizes_and_zero_d_seeds() -> None:
    envs = recsim_gym.env.RecSimVectorEnv(np.int64(3))
    a, _ = envs.reset(seed=np.array(5))
    b, _ = recsim_gym.env.RecSimVectorEnv(3).reset(seed=5)
    np.testing.assert_array_equal(a["candidates"], b["candidates"])


def test_reset_mask_with_seed_reseeds_only_masked_slots() -> None:
    envs = recsim_gym.env.RecSimVectorEnv(3, autoreset_mode="Disabled")
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    obs, _ = envs.reset(seed=[10, 11, 12], options={"reset_mask": np.array([False, True, False])})
    single = recsim_gym.env.RecSimEnv()
    expected, _ = single.reset(seed=11)
    np.testing.assert_array_equal(obs["candidates"][1], expected["candidates"])
    assert obs["user"][0, -1] > 0 and obs["user"][2, -1] > 0  # untouched slots kept their step


def test_history_shows_cold_start_popularity_as_it_was_observed() -> None:
    env = recsim_gym.env.RecSimEnv(item_lifetime=10, cold_start_ramp=50, observe_latent=True)
    obs, _ = env.reset(seed=1)
    t = env.params.num_topics
    seen = []
    for _ in range(30):
        shown_popularity = obs["candidates"][:, t + 2]
        obs, _, terminated, truncated, info = env.step(np.arange(env.params.slate_size))
        if info["click"]:
            seen.append((shown_popularity[info["position"]], obs["history"][-1, t + 2]))
        if terminated or truncated:
            break
    assert seen, "no click in 30 steps"
    for shown, logged in seen:
        assert logged == pytest.approx(shown, rel=1e-5, abs=1e-7)
