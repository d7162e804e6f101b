"""The interest_evolution preset: RecSim's interest-evolution model on the batched core."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import recsim_gym.env  # noqa: F401  (registers the ids)
from conftest import assert_obs_equal
from recsim_gym.agents.reference import OracleMyopicAgent, RandomAgent, interest_myopic
from recsim_gym.agents.slates import random_slates
from recsim_gym.env.interest_evolution import (
    CHOICE_MODELS,
    END_REASONS,
    InterestEvolutionParams,
    InterestEvolutionWorld,
    make_simulator,
)
from recsim_gym.env.rng import seed_to_key
from recsim_gym.experiments.statistics import t_interval
from scripts.recsim_reference import run_episodes

ENV_ID = "recsim/interest_evolution-v0"


@pytest.mark.parametrize("overrides", [
    {}, {"exposure": "recsim"}, {"observe_latent": True, "exposure": "recsim"},
    {"num_candidates": 5, "slate_size": 5, "choice_model": "exponential_cascade"}])
def test_check_env_passes(overrides):
    env = gym.make(ENV_ID, **overrides)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_registered_single_and_vector():
    env = gym.make(ENV_ID, num_candidates=10, slate_size=2)
    assert env.unwrapped.params == InterestEvolutionParams(num_candidates=10, slate_size=2)
    envs = gym.make_vec(ENV_ID, num_envs=3, num_candidates=10, slate_size=2)
    obs, _ = envs.reset(seed=0)
    assert obs["candidates"].shape == (3, 10, 20)
    obs, reward, *_ = envs.step(np.array([[0, 1]] * 3))
    assert reward.shape == (3,) and envs.observation_space.contains(obs)


def test_params_validation():
    with pytest.raises(ValueError, match="num_topics"):
        InterestEvolutionParams(num_topics=0)
    with pytest.raises(ValueError, match="slate_size"):
        InterestEvolutionParams(num_candidates=3, slate_size=4)
    with pytest.raises(ValueError, match="choice_model"):
        InterestEvolutionParams(choice_model="mnl")
    with pytest.raises(ValueError, match="min_normalizer"):
        InterestEvolutionParams(min_normalizer=-0.5)
    with pytest.raises(ValueError, match="score_scaling"):
        InterestEvolutionParams(choice_model="exponential_cascade", score_scaling=0.5)
    with pytest.raises(ValueError, match="unknown"):
        InterestEvolutionParams().replace(churn_base=0.1)
    with pytest.raises(ValueError, match="InterestEvolutionParams"):
        make_simulator(params=recsim_gym.env.Params())
    assert InterestEvolutionParams().max_reward == 4.0


def test_recsim_defaults():
    p = InterestEvolutionParams()
    means = p.quality_means()
    assert means.shape == (20,) and p.num_trashy == 14
    assert np.allclose(means[:14], np.linspace(-3, 0, 14)) and np.allclose(means[14:], np.linspace(0, 3, 6))
    assert (p.time_budget, p.step_penalty, p.video_length, p.no_click_mass, p.min_normalizer) == (
        200.0, 0.5, 4.0, 1.0, -1.0)
    assert p.user_update_alpha == pytest.approx(0.9 / 3.4) and p.choice_model == "proportional"


def test_documents_distribution():
    sim = make_simulator(num_candidates=50)
    state = sim.reset(seed_to_key(np.arange(4000)))
    topic, quality = state.cand_topic.ravel(), sim.candidate_quality(state).ravel()
    counts = np.bincount(topic, minlength=20)
    assert counts.min() > 0.9 * topic.size / 20 and counts.max() < 1.1 * topic.size / 20
    residual = quality - sim.params.quality_means()[topic]
    assert abs(residual.mean()) < 0.002 and residual.std() == pytest.approx(0.1, rel=0.02)
    assert np.all((state.interest >= -1) & (state.interest <= 1))
    assert abs(state.interest.mean()) < 0.01 and state.interest.std() == pytest.approx(
        1 / np.sqrt(3), rel=0.02)


def test_candidate_quality_is_the_documented_draw():
    """The qualities the state implies (drawn only where read) are the documented columns of
    the draw that made the documents: the reset's, then each step's (the stream before it),
    reproduced here with numpy and scipy; the step reads the same values for the shown ones."""
    from scipy.special import ndtri

    from recsim_gym.env import rng

    sim = make_simulator(num_candidates=7, slate_size=3, exposure="recsim")
    p, m = sim.params, 7
    means = p.quality_means()
    state, before = sim.reset(seed_to_key(np.arange(500))), None
    for step in range(3):
        if before is None:
            u = rng.uniforms(state.stream, p.num_topics + 2 * m, rng.SALT_RESET)[:, p.num_topics + m:]
        else:
            u = rng.uniforms(before.stream, 2 + 2 * m, rng.SALT_STEP)[:, 2 + m:]
        expected = means[state.cand_topic] + p.quality_std * ndtri(u.astype(np.float64) + 2.0**-25)
        quality = sim.candidate_quality(state)
        np.testing.assert_array_equal(quality, expected)
        np.testing.assert_array_equal(sim.candidate_quality(state), quality)  # a function of the state
        slates = random_slates(np.random.default_rng(step), 500, m, 3)
        before = state
        state, _ = sim.step(state, slates)
        shown = np.take_along_axis(quality, slates, axis=1).astype(np.float32)
        np.testing.assert_array_equal(state.response[:, :, p.num_topics + 2], shown)


@pytest.mark.parametrize("choice_model", CHOICE_MODELS)
def test_choice_probabilities_sum_to_one(choice_model):
    sim = make_simulator(choice_model=choice_model, num_candidates=6, slate_size=4)
    scores = np.random.default_rng(0).uniform(-1, 1, (1000, 4))
    probs = sim.choice_probs(scores)
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0)


def test_proportional_choice_is_recsims():
    sim = make_simulator()
    scores = np.array([[0.5, -1.0], [1.0, 1.0]])
    expected = np.array([[1.5, 0.0, 2.0], [2.0, 2.0, 2.0]])
    assert np.allclose(sim.choice_probs(scores), expected / expected.sum(axis=1, keepdims=True))


def test_step_dynamics_follow_recsim():
    """Budget, reward and interest updates of one step, user by user."""
    sim = make_simulator(observe_latent=True)
    p = sim.params
    state = sim.reset(seed_to_key(np.arange(5000)))
    slates = np.tile(np.array([3, 7]), (5000, 1))
    new, result = sim.step(state, slates)
    click = result.click
    assert 0.2 < click.mean() < 0.6
    rows = np.flatnonzero(click)
    item = result.item[rows]
    quality = sim.candidate_quality(state)[rows, item]
    topic = state.cand_topic[rows, item]
    assert np.allclose(result.reward[rows], 4.0) and np.all(result.reward[~click] == 0)
    assert np.allclose(new.budget[rows], 200 - 4 + p.user_update_alpha * 4 * quality)
    assert np.allclose(new.budget[~click], 199.5)
    changed = new.interest != state.interest
    assert not changed[~click].any()
    assert np.all(changed[rows].sum(axis=1) <= 1)
    theta, moved = state.interest[rows, topic], new.interest[rows, topic]
    size = 0.3 * (1 - np.abs(theta)) * (1 - theta)
    assert np.all(np.isclose(np.abs(moved - theta), size, atol=1e-12) | np.isclose(np.abs(moved), 1))
    up = moved > theta
    assert abs(up.mean() - ((theta + 1) / 2).mean()) < 0.03  # P(toward) = (theta + 1) / 2
    probs = result.choice_probs[:, :2].sum(axis=1)
    assert abs(click.mean() - probs.mean()) < 0.02


def test_budget_exhaustion_terminates_with_partial_watch():
    sim = make_simulator()
    state = sim.reset(seed_to_key(np.arange(64)))
    state.budget[:] = 1.5
    new, result = sim.step(state, np.tile(np.array([0, 1]), (64, 1)))
    click = result.click
    assert np.allclose(result.reward[click], 1.5)
    assert np.all(result.terminated[~click] == (new.budget[~click] <= 0))
    assert np.all(np.array(END_REASONS)[result.end_reason[result.terminated]] == "time_budget_exhausted")


def _records(obs, reward, terminated, truncated, info):
    return obs, reward, terminated, truncated, {k: info[k] for k in ("click", "position", "item")}


def test_deterministic_and_vector_equals_single():
    params = dict(num_candidates=6, slate_size=3, exposure="recsim", observe_latent=True)
    n_users, n_steps = 4, 120
    rng = np.random.default_rng(1)
    actions = [random_slates(rng, n_users, 6, 3) for _ in range(n_steps)]
    envs = gym.make_vec(ENV_ID, num_envs=n_users, **params)
    obs, _ = envs.reset(seed=10)
    vector = [(obs, None)]
    for a in actions:
        obs, reward, terminated, truncated, info = envs.step(a)
        vector.append((obs, (reward, terminated, truncated, info)))
    for b in range(n_users):
        for _ in range(2):  # twice: determinism
            env = gym.make(ENV_ID, **params)
            obs, _ = env.reset(seed=10 + b)
            assert_obs_equal(obs, {k: v[b] for k, v in vector[0][0].items()}, f"user {b} reset")
            done = False
            for i, a in enumerate(actions):
                v_obs, (v_reward, v_term, v_trunc, v_info) = vector[i + 1]
                if done:  # the vector env resets this slot (NEXT_STEP autoreset)
                    obs, _ = env.reset()
                    done = False
                else:
                    obs, reward, term, trunc, info = env.step(a[b])
                    assert reward == v_reward[b] and term == v_term[b] and trunc == v_trunc[b]
                    assert info["click"] == v_info["click"][b] and info["item"] == v_info["item"][b]
                    assert np.array_equal(info["choice_probs"], v_info["choice_probs"][b])
                    assert info["end_reason"] == END_REASONS[v_info["end_reason"][b]]
                    done = term or trunc
                assert_obs_equal(obs, {k: v[b] for k, v in v_obs.items()}, f"user {b} step {i}")


def test_reference_policies():
    sim = make_simulator(exposure="recsim")
    state = sim.reset(seed_to_key(np.arange(8)))
    obs = sim.observe(state)
    slates = OracleMyopicAgent(sim.params).act(obs)
    affinity = np.take_along_axis(state.interest, state.cand_topic, axis=1)
    best = np.sort(affinity, axis=1)[:, ::-1][:, :2]
    assert np.allclose(np.take_along_axis(affinity, slates, axis=1), best)
    random = RandomAgent(sim.params, seed=0).act(obs)
    assert random.shape == (8, 2) and np.all(random[:, 0] != random[:, 1])
    with pytest.raises(ValueError, match="exposure='recsim'"):
        interest_myopic(make_simulator().observe(state), 2)


# --------------------------------------------------------------------------------------------
# Agreement with RecSim's figures and with a line-by-line scalar transcription of its model
# --------------------------------------------------------------------------------------------

def _scalar_recsim_episode(rng: np.random.Generator, policy: str, m: int = 10, k: int = 2
                           ) -> tuple[float, int]:
    """One episode of RecSim's interest-evolution model written as RecSim runs it: one user, a
    Python loop, fresh documents every step. Independent of the batched implementation."""
    means = np.concatenate((np.linspace(-3, 0, 14), np.linspace(0, 3, 6)))
    interest = rng.uniform(-1, 1, 20)
    budget, total, steps = 200.0, 0.0, 0

    def documents():
        topics = rng.integers(0, 20, m)
        return topics, rng.normal(means[topics], 0.1)

    topics, quality = documents()
    while True:
        if policy == "random":
            slate = rng.permutation(m)[:k]
        else:
            slate = np.argsort(-interest[topics], kind="stable")[:k]
        scores = np.append(interest[topics[slate]], 1.0) + 1.0  # proportional, min_normalizer -1
        choice = rng.choice(k + 1, p=scores / scores.sum())
        steps += 1
        if choice < k:
            c, q = topics[slate[choice]], quality[slate[choice]]
            watch = min(budget, 4.0)
            total += watch
            theta = interest[c]
            update = (0.3 - 0.3 * abs(theta)) * (1.0 - theta)
            interest[c] = np.clip(theta + update if rng.random() < (theta + 1) / 2 else theta - update,
                                  -1, 1)
            budget += -watch + 0.9 / 3.4 * watch * q
        else:
            budget -= 0.5
        if budget <= 0:
            return total, steps
        topics, quality = documents()


@pytest.mark.slow
def test_returns_agree_with_recsim():
    """m = 10, k = 2: RecSim's own code gives about 154-155 (random) and 166 (myopic) minutes,
    random episodes a bit over 80 steps."""
    random_ret, random_len = zip(*(run_episodes("random", 5000, s) for s in range(3)), strict=True)
    myopic_ret, _ = zip(*(run_episodes("myopic", 5000, s) for s in range(3)), strict=True)
    random_ret, random_len, myopic_ret = map(np.concatenate, (random_ret, random_len, myopic_ret))
    mean, low, high = t_interval(random_ret)
    assert low <= 155.0 and high >= 154.0, (mean, low, high)
    assert 153.5 < mean < 155.5
    mean, low, high = t_interval(myopic_ret)
    assert low - 0.5 <= 166.0 <= high + 0.5, (mean, low, high)
    assert 80.0 < random_len.mean() < 88.0


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["random", "myopic"])
def test_batched_model_matches_scalar_transcription(policy):
    rng = np.random.default_rng(123)
    scalar = np.array([_scalar_recsim_episode(rng, policy) for _ in range(2000)])
    batched_ret, batched_len = run_episodes(policy, 10000, 7)
    for ours, theirs in ((batched_ret, scalar[:, 0]), (batched_len, scalar[:, 1])):
        diff = ours.mean() - theirs.mean()
        se = np.sqrt(ours.var() / ours.size + theirs.var() / theirs.size)
        assert abs(diff) < 3.5 * se, (ours.mean(), theirs.mean(), se)


def test_simulator_class_is_registered():
    assert ENV_ID in recsim_gym.env.env_ids()
    assert isinstance(gym.make(ENV_ID).unwrapped.sim, InterestEvolutionWorld)
