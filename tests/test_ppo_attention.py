"""PPO slate agents: the Plackett-Luce distribution, the policy's equivariance, save/load, ablations,
and learning a tiny world with a known optimum."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch as th

from recsim_gym.agents import reference, slates
from recsim_gym.agents.ppo_attention import (
    FUSED_ATTENTION_FROM,
    AttentionBlock,
    AttentionSlateNetwork,
    ItemStats,
    PPOSlateAgent,
    ppo_attention,
    ppo_mlp,
)
from recsim_gym.agents.sb3_vecenv import RecSimVecEnv
from recsim_gym.agents.slate_distribution import (
    PlackettLuceDistribution,
    all_slates,
    click_credit_log_prob,
    conditional_log_probs,
    encode_clicks,
    exact_entropy,
    plackett_luce_entropy,
    plackett_luce_log_prob,
)
from recsim_gym.env import rng
from recsim_gym.env.simulator import make_simulator

SMALL = dict(num_items=200, num_candidates=8, slate_size=3, history_length=4, num_topics=6)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    th.set_num_threads(1)


# --- Plackett-Luce distribution ---------------------------------------------------------------

@pytest.mark.parametrize("m,k", [(5, 3), (4, 4), (6, 1)])
def test_log_probs_sum_to_one_over_all_slates(m: int, k: int) -> None:
    scores = 2.0 * th.randn(3, m, dtype=th.float64)
    slates = all_slates(m, k)
    n = slates.shape[0]
    log_p = plackett_luce_log_prob(scores.repeat_interleave(n, 0), slates.repeat(3, 1)).view(3, n)
    np.testing.assert_allclose(log_p.exp().sum(1).numpy(), 1.0, rtol=1e-10)


def test_chain_rule_entropy_is_exact_in_expectation() -> None:
    scores = th.randn(2, 5, dtype=th.float64)
    slates = all_slates(5, 3)
    n = slates.shape[0]
    flat_scores, flat_slates = scores.repeat_interleave(n, 0), slates.repeat(2, 1)
    p = plackett_luce_log_prob(flat_scores, flat_slates).exp().view(2, n)
    estimate = plackett_luce_entropy(flat_scores, flat_slates).view(2, n)
    np.testing.assert_allclose((p * estimate).sum(1).numpy(), exact_entropy(scores, 3).numpy(), rtol=1e-10)


def test_samples_follow_the_distribution_without_duplicates() -> None:
    th.manual_seed(0)
    scores = th.tensor([[1.0, 0.0, -0.5, 0.7]])
    dist = PlackettLuceDistribution(2).proba_distribution(scores.expand(40_000, 4))
    samples = dist.sample()
    assert (samples[:, 0] != samples[:, 1]).all()
    slates = all_slates(4, 2)
    expected = plackett_luce_log_prob(scores.expand(len(slates), 4), slates).exp()
    codes = samples[:, 0] * 4 + samples[:, 1]
    observed = th.bincount(codes, minlength=16)[slates[:, 0] * 4 + slates[:, 1]].double() / 40_000
    np.testing.assert_allclose(observed.numpy(), expected.numpy(), atol=0.01)
    np.testing.assert_array_equal(dist.mode()[0].numpy(), [0, 3])


def test_log_prob_and_entropy_have_gradients() -> None:
    scores = th.randn(4, 6, requires_grad=True)
    dist = PlackettLuceDistribution(3).proba_distribution(scores)
    actions = dist.sample()
    (dist.log_prob(actions).sum() + dist.entropy().sum()).backward()
    assert th.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


def test_click_credit_credits_the_clicked_position_only() -> None:
    scores = th.randn(3, 6, dtype=th.float64)
    slates = np.array([[4, 0, 2], [1, 5, 3], [2, 3, 0]])
    marked = slates.copy()
    encode_clicks(marked, np.array([1, -1, 0]), 6)  # user 0 clicked position 1, user 1 nothing
    np.testing.assert_array_equal(marked, [[4, 6, 2], [1, 5, 3], [8, 3, 0]])
    credited = click_credit_log_prob(scores, th.as_tensor(marked))
    shown = th.as_tensor(slates)
    terms = conditional_log_probs(scores, shown).gather(-1, shown[..., None])[..., 0]
    th.testing.assert_close(credited, th.stack([terms[0, 1], terms[1].sum(), terms[2, 0]]))
    th.testing.assert_close(credited[1], plackett_luce_log_prob(scores, th.as_tensor(slates))[1])
    dist = PlackettLuceDistribution(3, click_credit=True).proba_distribution(scores)
    th.testing.assert_close(dist.log_prob(th.as_tensor(marked)), credited)
    # the entropy is the slates' own, whatever the marks
    th.testing.assert_close(dist.entropy(), plackett_luce_entropy(scores, th.as_tensor(slates)))


def test_click_credit_marks_the_rollout_and_keeps_unclicked_log_probs() -> None:
    """The buffer's slates carry the clicks the env reported, and its log-probabilities are
    recomputed under the credit: unchanged where nobody clicked, the clicked term elsewhere."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Record(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.log_probs: list[np.ndarray] = []
            self.positions: list[np.ndarray] = []

        def _on_step(self) -> bool:
            self.log_probs.append(self.locals["log_probs"].numpy().copy())
            self.positions.append(self.training_env.unwrapped.last_info["position"].copy())
            return True

    record = Record()
    agent = PPOSlateAgent(seed=0, num_envs=16, n_steps=16, batch_size=64, n_epochs=1,
                          click_credit=True, click_aux=0, env_overrides=SMALL)  # no update in between
    agent.learn("default", 256, callback=record)  # one rollout: the buffer is the one trained on
    buffer, m = agent.model.rollout_buffer, SMALL["num_candidates"]
    # PPO's update flattened the buffer user by user: (users x steps) rows
    positions = np.stack(record.positions).T.reshape(-1)
    sampled = np.stack(record.log_probs).T.reshape(-1)
    log_probs, actions = buffer.log_probs.reshape(-1), buffer.actions.reshape(-1, 3)
    clicked = positions >= 0
    assert 0 < clicked.mean() < 1
    marks = actions >= m
    np.testing.assert_array_equal(marks.sum(-1), clicked)
    np.testing.assert_array_equal(np.argmax(marks, -1)[clicked], positions[clicked])
    np.testing.assert_allclose(log_probs[~clicked], sampled[~clicked], atol=1e-5)
    assert (log_probs[clicked] > sampled[clicked]).all()  # one term of the k
    assert (log_probs <= 0).all()
    assert PPOSlateAgent().config.click_credit  # the default, chosen on tuning worlds
    off = PPOSlateAgent(seed=0, num_envs=16, n_steps=16, batch_size=64, n_epochs=1, click_credit=False,
                        click_aux=0, env_overrides=SMALL)
    off.learn("default", 256)
    assert (off.model.rollout_buffer.actions < m).all()  # off: nothing marked
    assert off.model.policy.network.score_head.out_features == 1  # no click output without the loss



def test_the_auxiliary_click_loss_fits_the_clicks_and_round_trips(tmp_path) -> None:
    """click_aux: a second per-candidate output learns the clicks' multinomial logit among the
    shown items (its pass over a rollout lowers the clicks' negative log-likelihood)."""
    from recsim_gym.agents.ppo_attention import _CreditClicks
    from recsim_gym.agents.slate_distribution import click_log_likelihood

    with pytest.raises(ValueError, match="click_aux"):
        PPOSlateAgent(click_aux=1.0, click_credit=False)
    assert PPOSlateAgent().config.click_aux == 1.0  # the default, chosen on tuning worlds
    agent = PPOSlateAgent(seed=0, num_envs=16, n_steps=16, batch_size=64, n_epochs=1, click_aux=1.0,
                          env_overrides=SMALL)
    agent.learn("default", 512)
    policy, buffer = agent.model.policy, agent.model.rollout_buffer
    assert policy.network.score_head.out_features == 2

    def click_nll() -> float:
        obs = {key: th.as_tensor(value.reshape(-1, *agent.model.observation_space[key].shape))
               for key, value in buffer.observations.items()}
        actions = th.as_tensor(buffer.actions.reshape(-1, 3)).long()
        with th.no_grad():
            return float(-click_log_likelihood(policy.network(obs)[0][..., 1], actions).mean())

    before = click_nll()
    callback = _CreditClicks()
    callback.init_callback(agent.model)
    for _ in range(5):
        callback._fit_clicks(buffer, policy)
    assert click_nll() < before - 0.01, (before, click_nll())
    agent.save(tmp_path / "model.zip")
    loaded = PPOSlateAgent.load(tmp_path / "model.zip", allow_pickle=True)
    assert loaded.config.click_aux == 1.0 and loaded.config.click_credit

# --- policy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("context", [29, FUSED_ATTENTION_FROM - 1, FUSED_ATTENTION_FROM, 59])
def test_the_attention_block_is_scaled_dot_product_attention_at_every_context_length(context: int) -> None:
    th.manual_seed(0)
    block = AttentionBlock(d_model=16, num_heads=2, ff_dim=32)
    x, memory = th.randn(5, 21, 16, requires_grad=True), th.randn(5, context, 16)
    out = block(x, memory)
    # the block written out with torch's own attention (its fused kernel at any length)
    queries, keys = block.norm_query(x), block.norm_query(memory)
    q = block.query(queries).view(5, 21, 2, 8).transpose(1, 2)
    k, v = block.key_value(keys).view(5, context, 2, 2, 8).permute(2, 0, 3, 1, 4)
    attended = th.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(5, 21, 16)
    mid = x + block.out(attended)
    expected = mid + block.feed_forward(block.norm_ff(mid))
    th.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    grad, = th.autograd.grad(out.square().sum(), x)
    expected_grad, = th.autograd.grad(expected.square().sum(), x)
    th.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_permuting_candidates_permutes_scores(num_layers: int) -> None:
    env = RecSimVecEnv(4, **SMALL)
    obs = {key: th.as_tensor(value) for key, value in env.reset().items()}
    for _ in range(3):  # some history
        obs = {key: th.as_tensor(value) for key, value in env.step(np.tile(np.arange(3), (4, 1)))[0].items()}
    net = AttentionSlateNetwork(env.observation_space, outputs=2, d_model=16, num_heads=2,
                                num_layers=num_layers, ff_dim=32)
    perm = th.randperm(8)
    permuted = dict(obs, candidates=obs["candidates"][:, perm])
    with th.no_grad():
        scores, value = net(obs)
        scores_p, value_p = net(permuted)
    th.testing.assert_close(scores_p, scores[:, perm], rtol=1e-5, atol=1e-5)
    th.testing.assert_close(value_p, value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ["attention", "mlp"])
def test_agent_variants_learn_act_and_round_trip(tmp_path, encoder: str) -> None:
    agent = PPOSlateAgent(encoder=encoder, seed=0, num_envs=8, n_steps=8,
                          batch_size=32, n_epochs=1, log_dir=str(tmp_path / "logs"), env_overrides=SMALL)
    agent.learn("default", 128)
    assert (tmp_path / "logs" / "progress.csv").exists()
    obs = RecSimVecEnv(5, **SMALL).reset()
    slates = agent.act(obs)
    assert slates.shape == (5, 3) and slates.dtype == np.int64
    assert all(len(set(row)) == 3 for row in slates.tolist())
    agent.save(tmp_path / "model.zip")
    loaded = PPOSlateAgent.load(tmp_path / "model.zip", allow_pickle=True, env_overrides=SMALL)
    assert loaded.config.encoder == encoder
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  agent.predict(obs, deterministic=True)[0])
    loaded.learn("default", 64)  # a loaded model keeps training on a fresh env


def test_cross_features_are_on_for_recsim_worlds_and_unused_without_topics() -> None:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    import recsim_gym.env  # noqa: F401  (registers the ids)

    agent = PPOSlateAgent(seed=0, num_envs=8, n_steps=8, batch_size=32, n_epochs=1, env_overrides=SMALL)
    assert agent.config.cross_features  # the default, chosen on tuning worlds (docs/agents.md)
    agent.learn("default", 64)
    assert agent.model.policy.network.cross_topics == make_simulator("default", **SMALL).params.num_topics
    # a VecEnv that does not give its world's params has no topics to cross with
    foreign = DummyVecEnv([lambda: gym.make("recsim/default-v0", **SMALL)] * 2)
    other = PPOSlateAgent(seed=0, n_steps=8, batch_size=16, n_epochs=1)
    other.learn(foreign, 16)
    assert other.model.policy.network.cross_topics is None
    # click credit reads the clicks from each env's info there: at most one mark per slate
    marks = (other.model.rollout_buffer.actions >= SMALL["num_candidates"]).sum(-1)
    assert marks.max() == 1 and marks.sum() > 0


def test_item_stats_count_clicks_and_conversions_only_once_committed() -> None:
    candidates = np.random.default_rng(0).random((2, 4, 6)).astype(np.float32)
    stats = ItemStats(buckets=1 << 16, columns=6)
    before = stats(th.as_tensor(candidates))
    # user 0 clicked slate position 1 (candidate 2) and converted; user 1 did not click
    stats.record(candidates, np.array([[0, 2], [1, 3]]), np.array([1, -1]), np.array([True, False]))
    th.testing.assert_close(stats(th.as_tensor(candidates)), before)  # pending until commit
    stats.record(candidates, np.array([[3, 0], [1, 3]]), np.array([1, 0]), np.array([False, False]))
    stats.commit()
    ids = stats.ids(th.as_tensor(candidates))
    assert stats.counts[ids[0, 2]].tolist() == [1.0, 1.0]  # one click, converted
    assert stats.counts[ids[0, 0]].tolist() == [1.0, 0.0]  # one click, not converted
    assert stats.counts[ids[1, 1]].tolist() == [1.0, 0.0]
    assert float(stats.counts.sum()) == 4.0 and not stats.pending.any()
    features = stats(th.as_tensor(candidates))
    # the converting item is above the global rate (1/3), the others below; unseen items at 0
    assert features[0, 2, 0] > 0 > features[0, 0, 0] and features[1, 1, 0] < 0
    assert features[0, 1, 0] == 0 and features[0, 1, 1] == 0 and features[0, 2, 1] > 0


def test_item_stats_stay_fixed_within_a_rollout_and_round_trip(tmp_path) -> None:
    """PPO's ratio compares log-probabilities at collection and at training time: the features
    must not change in between (counts commit at the next rollout's start)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class CheckRatio(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.gaps: list[float] = []

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buffer = self.model.rollout_buffer
            obs = {key: th.as_tensor(value.reshape(-1, *value.shape[2:]))
                   for key, value in buffer.observations.items()}
            actions = th.as_tensor(buffer.actions.reshape(-1, buffer.actions.shape[-1]))
            with th.no_grad():
                _, log_prob, _ = self.model.policy.evaluate_actions(obs, actions)
            self.gaps.append(float((log_prob - th.as_tensor(buffer.log_probs.reshape(-1))).abs().max()))

    check = CheckRatio()
    agent = PPOSlateAgent(seed=0, num_envs=16, n_steps=16, batch_size=64, n_epochs=1, env_overrides=SMALL)
    agent.learn("default", 3 * 256, callback=check)
    stats = agent.model.policy.network.item_stats
    assert len(check.gaps) == 3 and max(check.gaps) < 1e-4, check.gaps
    clicks, conversions = stats.counts.sum(0).tolist()
    assert 0 < conversions <= clicks <= 3 * 256 and not stats.pending.any()
    agent.save(tmp_path / "model.zip")
    loaded = PPOSlateAgent.load(tmp_path / "model.zip", allow_pickle=True)
    assert loaded.config.item_stats_buckets == stats.buckets
    th.testing.assert_close(loaded.model.policy.network.item_stats.counts, stats.counts)
    off = PPOSlateAgent(seed=0, num_envs=8, n_steps=8, batch_size=32, item_stats_buckets=0,
                        env_overrides=SMALL)
    off.learn("default", 64)
    assert off.model.policy.network.item_stats is None


def test_row_callback_reports_and_can_stop_training() -> None:
    calls: list[int] = []
    agent = PPOSlateAgent(seed=0, num_envs=8, n_steps=8, batch_size=32, n_epochs=1, env_overrides=SMALL)
    agent.learn(None, 1000, callback=lambda a, steps: calls.append(steps) or len(calls) < 2)
    assert calls == [64, 128] and agent.model.num_timesteps < 1000
    row = agent.last_training_row
    assert {"episode_return", "episode_length", "episodes", "steps_per_second"} <= set(row)


def test_learning_without_log_dirs_leaves_no_sb3_directories(tmp_path, monkeypatch) -> None:
    # SB3's default logger makes an empty tempdir/SB3-<time> directory on every learn()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    agent = PPOSlateAgent(seed=0, num_envs=8, n_steps=8, batch_size=32, n_epochs=1, env_overrides=SMALL)
    agent.learn(None, 64)
    agent.save(tmp_path / "model.zip")
    PPOSlateAgent.load(tmp_path / "model.zip", allow_pickle=True, env_overrides=SMALL).learn(None, 64)
    assert agent.model.num_timesteps == 64
    assert (tmp_path / "model.zip").exists() and not list(tmp_path.glob("SB3-*"))


def test_registry_builds_the_agents() -> None:
    from recsim_gym.agents import registry

    added = [name for name in ("ppo_attention", "ppo_mlp") if name not in registry.list_agents()]
    for name in added:  # until the lead adds them to registry.BUILTINS
        registry.register(name, f"recsim_gym.agents.ppo_attention:{name}")
    try:
        agent = registry.make("ppo_attention", seed=3, num_envs=4)
        assert agent.config.seed == 3 and agent.config.num_envs == 4
        assert registry.make("ppo_mlp").config.encoder == "mlp"
    finally:
        for name in added:
            registry._REGISTRY.pop(name, None)


def test_factories_name_the_ablation() -> None:
    assert ppo_attention().config.encoder == "attention"
    mlp = ppo_mlp()
    assert mlp.config.encoder == "mlp" and mlp.name == "ppo_mlp"
    with pytest.raises(ValueError, match="encoder"):
        ppo_attention(encoder="rnn")


# --- learning -----------------------------------------------------------------------------------

#: A static world where clicks depend only on the observable appeal and reward = click: the
#: optimal slate is the k most appealing candidates, best first (reference.highest_appeal).
TINY = dict(num_items=200, num_topics=4, declared_topics=1, num_candidates=8, slate_size=2,
            history_length=2, affinity_weight=0.0, conversion_weight=0.0, max_steps=20, churn_base=0.0)


def expected_click_rate(sim, policy, users: int = 2000, steps: int = 10) -> float:
    """Mean click probability per step (from the choice model, so no sampling noise)."""
    state = sim.reset(rng.seed_to_key(np.arange(users) + 10**6))
    total = 0.0
    for _ in range(steps):
        state, result = sim.step(state, policy(sim.observe(state)))
        total += float((1.0 - result.choice_probs[:, -1]).mean())
    return total / steps


def test_ppo_attention_learns_the_known_optimum_of_a_tiny_world() -> None:
    sim = make_simulator("static", **TINY)
    generator = np.random.default_rng(0)
    random = expected_click_rate(
        sim, lambda o: slates.random_slates(generator, len(o["user"]), sim.params.num_candidates,
                                            sim.params.slate_size))
    best = expected_click_rate(sim, lambda o: reference.highest_appeal(o, sim.params))
    agent = ppo_attention(seed=0, num_envs=64, n_steps=16, batch_size=256, n_epochs=4, learning_rate=1e-3,
                          gamma=0.9, ent_coef=0.0)
    agent.learn(sim, 20_000)
    learned = expected_click_rate(sim, lambda o: agent.predict(o, deterministic=True)[0])
    assert learned >= random + 0.8 * (best - random), (random, learned, best)
