"""The simulated world: property tests over random configs and actions (valid probabilities,
states in their documented ranges, bounded rewards), statistical tests that sampled clicks and
conversions follow the reported probabilities, and the documented update rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from recsim_gym.agents.reference import item_terms
from recsim_gym.agents.slates import random_slates
from recsim_gym.env import DefaultWorld, RecSimVectorEnv, State, make_params
from recsim_gym.env.rng import seed_to_key

# ------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------


@st.composite
def configs(draw) -> dict:
    """Random valid Params overrides spanning the choice, reward and dynamics settings."""
    num_topics = draw(st.integers(2, 24))
    num_candidates = draw(st.integers(1, 30))
    rate = st.floats(0.0, 1.0)
    churn_base = draw(st.floats(0.0, 0.5))
    return dict(
        num_items=draw(st.integers(max(num_candidates, 10), 400)),
        num_topics=num_topics,
        declared_topics=draw(st.integers(1, num_topics)),
        topic_concentration=draw(st.floats(0.01, 5.0)),
        clickbait_share=draw(rate),
        num_candidates=num_candidates,
        slate_size=draw(st.integers(1, min(num_candidates, 8))),
        history_length=draw(st.integers(1, 6)),
        popular_retrieval_share=draw(rate),
        choice_model=draw(st.sampled_from(["mnl", "cascade"])),
        affinity_weight=draw(st.floats(0.0, 50.0)),
        appeal_weight=draw(st.floats(0.0, 50.0)),
        fatigue_weight=draw(st.floats(0.0, 50.0)),
        no_click_utility=draw(st.floats(-50.0, 50.0)),
        position_decay=draw(st.floats(1e-6, 1.0)),
        conversion_bias=draw(st.floats(-10.0, 10.0)),
        conversion_affinity=draw(st.floats(-10.0, 10.0)),
        conversion_quality=draw(st.floats(-10.0, 10.0)),
        conversion_price=draw(st.floats(-10.0, 10.0)),
        click_weight=draw(st.floats(0.0, 10.0)),
        conversion_weight=draw(st.floats(0.0, 10.0)),
        reward_mode=draw(st.sampled_from(["engagement", "revenue"])),
        interest_update_rate=draw(rate),
        interest_noise=draw(rate),
        interest_reversion=draw(rate),
        regime_shift_prob=draw(st.sampled_from([0.0, 0.05, 1.0])),
        fatigue_gain=draw(rate),
        fatigue_decay=draw(rate),
        satisfaction_rate=draw(rate),
        no_click_penalty=draw(rate),
        initial_satisfaction=draw(rate),
        churn_base=churn_base,
        churn_scale=draw(st.floats(0.0, 1.0 - churn_base)),
        max_steps=draw(st.integers(1, 30)),
        item_lifetime=draw(st.sampled_from([0, 1, 3, 7])),
        cold_start_ramp=draw(st.integers(1, 10)),
        catalog_seed=draw(st.integers(0, 3)),
        observe_latent=True,
        duplicate_rule=draw(st.sampled_from(["raise", "fill"])),
    )


def _sizes(params) -> tuple[int, int]:
    return params.num_candidates, params.slate_size


def _check_state(state, params) -> None:
    """The documented ranges of every latent State array, and finiteness."""
    for name in ("interest", "base_interest", "fatigue", "satisfaction"):
        value = getattr(state, name)
        assert np.isfinite(value).all(), name
    assert ((state.interest >= -1) & (state.interest <= 1)).all()
    assert ((state.base_interest >= -1) & (state.base_interest <= 1)).all()
    assert ((state.fatigue >= 0) & (state.fatigue <= 1)).all()
    assert ((state.satisfaction >= 0) & (state.satisfaction <= 1)).all()
    assert ((state.t >= 0) & (state.t <= params.max_steps)).all()
    candidates = np.sort(state.candidates, axis=1)
    assert (candidates[:, 1:] != candidates[:, :-1]).all(), "candidates repeat within a user"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), seed=st.integers(0, 2**32), steps=st.integers(1, 40))
def test_random_configs_keep_probabilities_states_and_rewards_valid(config: dict, seed: int,
                                                                    steps: int) -> None:
    batch = 4
    envs = RecSimVectorEnv(batch, autoreset_mode="SameStep", **config)
    params = envs.params
    k = params.slate_size
    obs, _ = envs.reset(seed=seed)
    assert envs.observation_space.contains(obs)
    _check_state(envs.state, params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        actions = random_slates(rng, batch, params.num_candidates, params.slate_size)
        if params.duplicate_rule == "fill":  # repeats are allowed and get replaced
            actions[:, -1] = actions[:, 0]
        obs, reward, terminated, truncated, info = envs.step(actions)
        probs = info["choice_probs"]
        assert probs.shape == (batch, k + 1)
        assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert reward.dtype.kind == "f" and np.isfinite(reward).all()
        assert (reward >= 0).all() and (reward <= params.max_reward * (1 + 1e-6)).all()
        click, conversion = info["click"], info["conversion"]
        assert not (conversion & ~click).any(), "a conversion without a click"
        assert ((info["position"] >= 0) == click).all() and ((info["item"] >= 0) == click).all()
        assert (info["position"] < k).all()
        clicked = np.flatnonzero(click)
        assert (probs[clicked, info["position"][clicked]] > 0).all(), "clicked a 0-probability slot"
        conv_value = info["revenue"] if params.reward_mode == "revenue" else conversion
        np.testing.assert_allclose(reward, params.click_weight * click + params.conversion_weight
                                   * conv_value, rtol=1e-5, atol=1e-5)
        assert (info["revenue"][~conversion] == 0).all()
        assert (info["revenue"][conversion] >= params.price_min * (1 - 1e-6)).all()
        assert not (terminated & truncated).any()
        assert np.isin(info["end_reason"], [0, 1, 2]).all()
        assert envs.observation_space.contains(obs), "observation outside observation_space"
        if "final_obs" in info:
            assert envs.observation_space.contains(info["final_obs"])
        _check_state(envs.state, params)
        assert (obs["interest"] == envs.state.interest).all()


@settings(max_examples=15, deadline=None)
@given(preset=st.sampled_from(["default", "static", "news", "ecommerce"]),
       choice_model=st.sampled_from(["mnl", "cascade"]), seed=st.integers(0, 2**32))
def test_presets_single_env_observations_in_space(preset: str, choice_model: str, seed: int) -> None:
    envs = RecSimVectorEnv(1, preset, choice_model=choice_model, max_steps=60)
    params = envs.params
    obs, _ = envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(60):
        obs, reward, *_ = envs.step(random_slates(rng, 1, params.num_candidates, params.slate_size))
        assert envs.observation_space.contains(obs)
        assert 0 <= reward[0] <= params.max_reward
        _check_state(envs.state, params)


# ------------------------------------------------------------------------------------------
# Statistical tests: sampled outcomes follow the reported probabilities
# ------------------------------------------------------------------------------------------

ALPHA = 1e-3  # fixed seeds make these deterministic; a correct simulator passes with margin


def _replicate(sim: DefaultWorld, one, n: int, seed: int):
    """``n`` copies of user state ``one`` (same interest, fatigue, satisfaction, candidates,
    history, step) whose random streams come from ``n`` different episode keys."""
    many = sim.reset(seed_to_key(np.arange(seed, seed + n), 0))
    repeat = np.zeros(n, dtype=np.int64)
    for field in dataclasses.fields(State):
        if field.name not in ("key", "stream"):  # the documented randomness of a user
            setattr(many, field.name, np.ascontiguousarray(getattr(one, field.name)[repeat]))
    return many


def _warm_up(sim: DefaultWorld, state, steps: int):
    """Step ``state`` with fixed slates so fatigue, interest and satisfaction move off reset."""
    slate = np.tile(np.arange(sim.params.slate_size), (state.batch_size, 1))
    for _ in range(steps):
        state, _ = sim.step(state, slate)
    return state


@pytest.mark.parametrize("choice_model", ["mnl", "cascade"])
@pytest.mark.parametrize("preset", ["default", "ecommerce"])
def test_click_frequencies_match_choice_probs_for_a_fixed_state(preset: str, choice_model: str
                                                                ) -> None:
    n = 60_000
    sim = DefaultWorld(make_params(preset, choice_model=choice_model, observe_latent=True))
    one = _warm_up(sim, sim.reset(seed_to_key(np.array([5]), 0)), 3)
    many = _replicate(sim, one, n, seed=10_000)
    k = sim.params.slate_size
    slate = np.tile(np.arange(k)[::-1], (n, 1))
    _, result = sim.step(many, slate)
    probs = result.choice_probs
    assert np.array_equal(probs, np.broadcast_to(probs[0], probs.shape)), (
        "same state and slate must give the same choice probabilities whatever the key")
    p = probs[0].astype(np.float64)
    p /= p.sum()
    chosen = np.where(result.click, result.position, k)
    counts = np.bincount(chosen, minlength=k + 1)
    # merge outcomes expected fewer than 20 times into one cell (chi-square approximation)
    rare = n * p < 20
    assert (~rare).sum() >= 3, p
    observed_cells, expected_cells = counts[~rare], n * p[~rare]
    if rare.any():
        observed_cells = np.append(observed_cells, counts[rare].sum())
        expected_cells = np.append(expected_cells, n * p[rare].sum())
    chi2 = stats.chisquare(observed_cells, expected_cells)
    assert chi2.pvalue > ALPHA, (counts, n * p)
    # the test has power: it rejects a model whose first two click probabilities are swapped
    swapped = p.copy()
    swapped[[0, 1]] = p[[1, 0]]
    if abs(p[0] - p[1]) > 0.01:
        assert stats.chisquare(counts[~rare], n * swapped[~rare] * counts[~rare].sum()
                               / (n * swapped[~rare]).sum()).pvalue < ALPHA

    # conversions given a click at position i ~ Binomial(clicks_i, P(convert | item at i))
    obs = sim.observe(one)
    p_convert = item_terms(obs, sim.params)["p_convert"][0, slate[0]]
    pvalues = []
    for i in range(k):
        clicked_here = result.click & (result.position == i)
        n_clicks = int(clicked_here.sum())
        successes = int(result.conversion[clicked_here].sum())
        pvalues.append(stats.binomtest(successes, n_clicks, float(p_convert[i])).pvalue)
    assert min(pvalues) > ALPHA / k, (pvalues, p_convert)
    assert not result.conversion[~result.click].any()


@pytest.mark.parametrize("choice_model", ["mnl", "cascade"])
def test_click_frequencies_match_choice_probs_along_trajectories(choice_model: str) -> None:
    """Pooled over users and steps (probabilities vary), the count of each outcome minus the sum
    of its reported probabilities is a martingale: (O - E)' V^-1 (O - E) ~ chi2(k), with
    V = sum_n diag(p_n) - p_n p_n'. Conversions: sum(conv) - sum(p_conv) over clicks ~ N(0, var)."""
    batch, steps = 512, 60
    envs = RecSimVectorEnv(batch, "news", choice_model=choice_model, observe_latent=True)
    params = envs.params
    k = params.slate_size
    obs, _ = envs.reset(seed=2024)
    rng = np.random.default_rng(1)
    observed = np.zeros(k + 1)
    expected = np.zeros(k + 1)
    covariance = np.zeros((k + 1, k + 1))
    conv_observed = conv_expected = conv_variance = 0.0
    for _ in range(steps):
        slates = random_slates(rng, batch, params.num_candidates, params.slate_size)
        p_convert = np.take_along_axis(item_terms(obs, params)["p_convert"], slates, axis=1)
        obs, _, _, _, info = envs.step(slates)
        live = info["_choice_probs"]
        p = info["choice_probs"][live].astype(np.float64)
        chosen = np.where(info["click"], info["position"], k)[live]
        observed += np.bincount(chosen, minlength=k + 1)
        expected += p.sum(axis=0)
        covariance += np.diag(p.sum(axis=0)) - p.T @ p
        clicked = live & info["click"]
        q = p_convert[clicked, info["position"][clicked]].astype(np.float64)
        conv_observed += info["conversion"][clicked].sum()
        conv_expected += q.sum()
        conv_variance += (q * (1 - q)).sum()
    diff = (observed - expected)[:k]  # drop one category: the full covariance is singular
    statistic = diff @ np.linalg.solve(covariance[:k, :k], diff)
    assert stats.chi2.sf(statistic, df=k) > ALPHA, (observed, expected)
    assert observed[:k].sum() > 2000 and conv_observed > 100
    z = (conv_observed - conv_expected) / np.sqrt(conv_variance)
    assert 2 * stats.norm.sf(abs(z)) > ALPHA, (conv_observed, conv_expected)


def test_churn_frequency_matches_documented_probability() -> None:
    """P(leave) = churn_base + churn_scale (1 - satisfaction)^2 with the post-step satisfaction."""
    batch = 4096
    sim = DefaultWorld(make_params("default", churn_base=0.01, churn_scale=0.5, max_steps=1000))
    state = sim.reset(seed_to_key(np.arange(batch), 0))
    rng = np.random.default_rng(0)
    observed = expected = variance = 0.0
    for _ in range(5):
        state, result = sim.step(state, random_slates(rng, batch, *_sizes(sim.params)))
        q = 0.01 + 0.5 * (1 - state.satisfaction.astype(np.float64)) ** 2
        observed += result.terminated.sum()
        expected += q.sum()
        variance += (q * (1 - q)).sum()
        assert (result.end_reason[result.terminated] == 1).all()
    z = (observed - expected) / np.sqrt(variance)
    assert 2 * stats.norm.sf(abs(z)) > ALPHA, (observed, expected)


# ------------------------------------------------------------------------------------------
# Documented update rules (through DefaultWorld and State)
# ------------------------------------------------------------------------------------------

def test_satisfaction_and_fatigue_follow_the_documented_updates() -> None:
    params = make_params("default", interest_noise=0.0, regime_shift_prob=0.0)
    sim = DefaultWorld(params)
    batch = 2000
    state = sim.reset(seed_to_key(np.arange(batch), 0))
    state = _warm_up(sim, state, 2)
    slates = random_slates(np.random.default_rng(0), batch, params.num_candidates, params.slate_size)
    new, result = sim.step(state, slates)
    click = result.click
    assert 0 < click.sum() < batch
    quality = sim.catalog.quality[result.item[click]]
    s = state.satisfaction.astype(np.float64)
    expected = np.where(click, 0.0, s * (1 - params.no_click_penalty))
    expected[click] = s[click] + params.satisfaction_rate * (quality - s[click])
    np.testing.assert_allclose(new.satisfaction, expected, rtol=1e-5, atol=1e-6)

    decayed = state.fatigue.astype(np.float64) * (1 - params.fatigue_decay)
    np.testing.assert_allclose(new.fatigue[~click], decayed[~click], rtol=1e-5, atol=1e-6)
    topics = sim.catalog.topics[result.item[click]]
    grown = decayed[click] + params.fatigue_gain * topics * (1 - decayed[click])
    np.testing.assert_allclose(new.fatigue[click], grown, rtol=1e-5, atol=1e-6)
    # interest moves toward a clicked high-quality item's main topic, away for a low-quality one
    main = np.argmax(topics, axis=1)
    rows = np.flatnonzero(click)
    change = new.interest[rows, main] - state.interest[rows, main]
    pull = params.interest_reversion * (state.base_interest[rows, main] - state.interest[rows, main])
    endogenous = change - pull
    good, bad = quality > 0.6, quality < 0.4
    assert (endogenous[good] >= -1e-6).all() and (endogenous[bad] <= 1e-6).all()
    assert (endogenous[good] > 1e-4).mean() > 0.5


def test_static_preset_has_no_drift_no_fatigue_and_constant_churn() -> None:
    sim = DefaultWorld(make_params("static"))
    batch = 1000
    state = sim.reset(seed_to_key(np.arange(batch), 0))
    start = state
    rng = np.random.default_rng(0)
    terminated = 0
    for _ in range(20):
        state, result = sim.step(state, random_slates(rng, batch, *_sizes(sim.params)))
        terminated += result.terminated.sum()
        assert np.array_equal(state.interest, start.interest)
        assert np.array_equal(state.satisfaction, start.satisfaction)
        assert not state.fatigue.any()
    # churn is 0.005 per step whatever the satisfaction: 100 expected of 20 000 user-steps
    assert stats.binomtest(int(terminated), 20 * batch, 0.005).pvalue > ALPHA


def test_simulator_step_is_pure() -> None:
    sim = DefaultWorld(make_params("news", observe_latent=True))
    state = sim.reset(seed_to_key(np.arange(8), 0))
    snapshot = {name: np.copy(getattr(state, name)) for name in ("interest", "fatigue", "satisfaction",
                                                                 "candidates", "history", "t")}
    slates = random_slates(np.random.default_rng(0), 8, sim.params.num_candidates, sim.params.slate_size)
    new_a, result_a = sim.step(state, slates)
    new_b, result_b = sim.step(state, slates)
    for name, value in snapshot.items():
        assert np.array_equal(getattr(state, name), value), f"step modified state.{name}"
    assert np.array_equal(result_a.choice_probs, result_b.choice_probs)
    assert np.array_equal(result_a.reward, result_b.reward)
    assert np.array_equal(new_a.interest, new_b.interest)
    assert (new_a.t == state.t + 1).all()


def test_interest_drifts_and_fatigue_builds_on_default() -> None:
    """The default world is not static: interests drift and repeated topics tire the user."""
    sim = DefaultWorld(make_params("default"))
    batch = 500
    state = sim.reset(seed_to_key(np.arange(batch), 0))
    start = state.interest.copy()
    slate = np.tile(np.arange(sim.params.slate_size), (batch, 1))
    for _ in range(30):
        state, _ = sim.step(state, slate)
    assert np.abs(state.interest - start).mean() > 0.01
    assert state.fatigue.max() > 0.1
