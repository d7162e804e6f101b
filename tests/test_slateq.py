"""Slate Q-learning: exact slate optimisers, tabular SlateQ on a world with a known optimum,
deep SlateQ's TD target and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsim_gym.agents import slates as slate_optim
from recsim_gym.agents.slate_q_tabular import FullSlateQAgent, TabularSlateQAgent, TinySlateMDP
from recsim_gym.agents.slateq import (
    CROSS_KEY,
    ITEMS_KEY,
    OBS_KEYS,
    SlateQAgent,
    select_candidates,
    with_cross_features,
)
from recsim_gym.env import rng
from recsim_gym.env.simulator import make_simulator


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random small MNL slate problem: weights (B, m), values (B, m), examination rho (k,)."""
    m = draw(st.integers(2, 6))
    k = draw(st.integers(1, min(m, 3)))
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed)
    weight = np.exp(g.normal(0.0, 1.5, (4, m)))
    value = g.normal(0.0, 1.0, (4, m)) + draw(st.sampled_from([0.0, 3.0]))
    rho = np.sort(g.uniform(0.2, 1.0, k))[::-1] if draw(st.booleans()) else g.uniform(0.2, 1.0, k)
    return weight, value, rho


def _is_slate(slates: np.ndarray, m: int, k: int) -> bool:
    return slates.shape[1] == k and all(len(set(row)) == k and max(row) < m for row in slates.tolist())


@settings(max_examples=60, deadline=None)
@given(instances())
def test_lp_and_dinkelbach_match_brute_force(instance: tuple) -> None:
    weight, value, rho = instance
    best = slate_optim.slate_value(weight, value, rho, slate_optim.brute_force_slate(weight, value, rho))
    for method in ("lp", "dinkelbach"):
        slates = slate_optim.optimise_slates(method, weight, value, rho)
        assert _is_slate(slates, weight.shape[1], len(rho))
        np.testing.assert_allclose(slate_optim.slate_value(weight, value, rho, slates), best,
                                   rtol=1e-9, atol=1e-9, err_msg=method)
    for method in ("top_k", "greedy"):  # heuristics: valid slates, never above the optimum
        slates = slate_optim.optimise_slates(method, weight, value, rho)
        assert _is_slate(slates, weight.shape[1], len(rho))
        assert (slate_optim.slate_value(weight, value, rho, slates) <= best + 1e-9).all()


def test_unknown_optimiser_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown slate optimiser"):
        slate_optim.optimise_slates("best", np.ones((1, 3)), np.ones((1, 3)), np.ones(2))


# ---------------------------------------------------------------------------------------------
TINY_OBS = {"candidates": np.eye(3, dtype=np.float32)[None].repeat(2, 0),
            "user": np.eye(2, dtype=np.float32), "history": np.zeros((2, 1, 1), np.float32)}


@pytest.mark.parametrize("target", ["q_learning", "sarsa"])
def test_tabular_slateq_reaches_known_optimum(target: str) -> None:
    gamma = 0.9
    optimum = TinySlateMDP.optimal_slates(gamma)
    agent = TabularSlateQAgent(preset="tiny", abstraction="tiny", gamma=gamma, alpha=0.05, num_envs=32,
                               total_steps=20_000, target=target, optimiser="dinkelbach")
    agent.learn()
    for optimiser in ("lp", "greedy", "dinkelbach"):
        agent.config = agent.config.replace(optimiser=optimiser)
        slates = agent.act(TINY_OBS)  # candidates are the types in order: position == type
        assert {mood: tuple(slates[mood]) for mood in (0, 1)} == optimum, optimiser
    # the conditional logit learned from clicks predicts the true choice over the slates it shows
    moods = np.array([0, 1])
    logits = agent.utility[moods[:, None], slates] + agent.position_bias
    predicted = np.exp(logits) / (1.0 + np.exp(logits).sum(1, keepdims=True))
    true = TinySlateMDP(num_envs=2).choice_probs(moods, slates)[:, :-1]
    np.testing.assert_allclose(predicted, true, atol=0.05)


def test_full_slate_q_reaches_optimum_with_a_bigger_table() -> None:
    optimum = TinySlateMDP.optimal_slates(0.9)
    full = FullSlateQAgent(preset="tiny", abstraction="tiny", gamma=0.9, alpha=0.05, num_envs=32,
                           total_steps=20_000).learn()
    slates = full.act(TINY_OBS)
    assert {mood: tuple(slates[mood]) for mood in (0, 1)} == optimum
    slateq = TabularSlateQAgent(preset="tiny", abstraction="tiny")
    assert full.table_size == 2 * 3**2 > slateq.table_size == 2 * (3 + 1)


def _recsim_obs(preset: str = "default", users: int = 16) -> dict[str, np.ndarray]:
    sim = make_simulator(preset)
    state = sim.reset(rng.seed_to_key(np.arange(users)))
    for _ in range(3):  # some history
        state, _ = sim.step(state, np.tile(np.arange(sim.params.slate_size), (users, 1)))
    return sim.observe(state)


def test_tabular_save_load_same_actions(tmp_path) -> None:
    agent = TabularSlateQAgent(num_envs=16, total_steps=2_000).learn()
    obs = _recsim_obs()
    agent.save(tmp_path / "tabular.npz")
    loaded = TabularSlateQAgent.load(tmp_path / "tabular.npz")
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    assert loaded.config == agent.config


# ---------------------------------------------------------------------------------------------
def _small_deep_agent(**overrides) -> SlateQAgent:
    torch.set_num_threads(1)
    config = dict(num_envs=16, total_steps=1_500, learning_starts=500, batch_size=32, hidden=32,
                  buffer_size=2_000, log_interval=500)
    return SlateQAgent(**{**config, **overrides})


def test_deep_slateq_learns_saves_and_loads(tmp_path) -> None:
    rows = []
    agent = _small_deep_agent().learn(callback=lambda a, steps: rows.append(a.learning_curve[-1]))
    assert rows and rows[-1]["env_steps"] >= 1_000 and np.isfinite(rows[-1]["td_loss"])
    obs = _recsim_obs()
    agent.save(tmp_path / "slateq.pt")
    loaded = SlateQAgent.load(tmp_path / "slateq.pt")
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))


@pytest.mark.parametrize("optimiser", ["top_k", "greedy", "dinkelbach", "lp"])
def test_deep_slateq_optimisers_give_valid_slates(optimiser: str) -> None:
    agent = _small_deep_agent(optimiser=optimiser)
    slates = agent.act(_recsim_obs(users=4))
    assert _is_slate(slates, 20, 5)


def test_td_target_reads_the_next_observation_only() -> None:
    agent = _small_deep_agent()
    obs, next_obs = _recsim_obs(users=8), _recsim_obs(users=8)
    next_obs["history"] = np.roll(next_obs["history"], 1, axis=0)  # a different next state
    to_t = lambda o: {key: torch.from_numpy(np.asarray(o[key], np.float32)) for key in OBS_KEYS}  # noqa: E731
    batch = {"obs": to_t(obs), "next_obs": to_t(next_obs), "reward": torch.ones(8),
             "done": torch.zeros(8)}
    target = agent.td_target(batch)
    assert torch.equal(agent.td_target({**batch, "obs": to_t(next_obs)}), target)
    assert not torch.equal(agent.td_target({**batch, "next_obs": to_t(obs)}), target)
    done = agent.td_target({**batch, "done": torch.ones(8)})
    assert torch.equal(done, torch.ones(8))
    # the target is a constant of the update: no gradient reaches any network through it
    assert not target.requires_grad and not agent._td_target(batch, True)[0].requires_grad


@pytest.mark.parametrize("members", [1, 2])
def test_cached_cross_features_give_the_same_values_and_are_read(members: int) -> None:
    agent = _small_deep_agent(continuation_members=members)
    assert agent.num_topics is not None  # cross features are on by default
    x = {key: torch.from_numpy(np.asarray(o, np.float32)) for key, o in _recsim_obs(users=8).items()
         if key in OBS_KEYS}
    cached = with_cross_features(x, agent.num_topics)
    assert CROSS_KEY not in x and with_cross_features(cached, agent.num_topics) is cached
    for net in (agent.q, agent.q_target, agent.choice):
        for plain, fast in zip(net(x), net(cached), strict=True):
            assert torch.equal(plain, fast)
    wrong = {**cached, CROSS_KEY: torch.zeros_like(cached[CROSS_KEY])}
    assert not torch.equal(agent.q(wrong)[0], agent.q(x)[0])  # the networks use the cache


@pytest.mark.parametrize("members", [1, 2])
def test_networks_on_the_shown_candidates_give_the_gathered_full_values(members: int) -> None:
    # the update and the target score only the slate's k candidates (select_candidates); that is
    # exact because every candidate's score depends on its own features and the user alone
    agent = _small_deep_agent(continuation_members=members)
    x = agent._prepared({key: torch.from_numpy(np.asarray(o, np.float32))
                         for key, o in _recsim_obs(users=8).items() if key in OBS_KEYS})
    slates = torch.from_numpy(np.stack([np.random.default_rng(i).permutation(20)[:5] for i in range(8)]))
    shown = select_candidates(x, slates)
    assert shown[ITEMS_KEY].shape == (8, 5, x[ITEMS_KEY].shape[2])
    assert "candidates" not in shown and CROSS_KEY not in shown  # joined into ITEMS_KEY: not gathered
    with torch.no_grad():
        full_r, full_rn, full_c = agent.q.member_parts(x)
        r, rn, c = agent.q.member_parts(shown)
        torch.testing.assert_close(r, full_r.gather(1, slates))
        torch.testing.assert_close(rn, full_rn)
        for (ci, cn), (fi, fn) in zip(c, full_c, strict=True):
            torch.testing.assert_close(ci, fi.gather(1, slates))
            torch.testing.assert_close(cn, fn)
        torch.testing.assert_close(agent.choice(shown)[0], agent.choice(x)[0].gather(1, slates))


@pytest.mark.parametrize("epsilon", [0.0, 0.4, 1.0])
def test_exploring_act_scores_only_the_greedy_users_and_matches_full_scoring(epsilon: float) -> None:
    # act(deterministic=False) runs the networks on the users that do not explore only; their
    # slates must be those of scoring every user, and the explorers' the same random draws
    agent = _small_deep_agent(continuation_members=2)
    obs = _recsim_obs(users=32)
    agent.epsilon = epsilon
    state = agent.rng.bit_generator.state
    slates = agent.act(obs, deterministic=False)
    agent.rng.bit_generator.state = state
    explore = agent.rng.random(32) < epsilon if epsilon > 0 else np.zeros(32, bool)
    expected = agent.act(obs, deterministic=True)  # every user scored (no average yet: online nets)
    if explore.any():
        expected[explore] = slate_optim.random_slates(agent.rng, int(explore.sum()), 20, agent.slate_size)
    assert 0 < explore.sum() < 32 or epsilon in (0.0, 1.0)
    np.testing.assert_array_equal(slates, expected)


def test_member_targets_bootstrap_each_member_from_its_own_continuation() -> None:
    agent = _small_deep_agent(continuation_members=2)
    to_t = lambda o: {key: torch.from_numpy(np.asarray(o[key], np.float32)) for key in OBS_KEYS}  # noqa: E731
    batch = {"obs": to_t(_recsim_obs(users=8)), "next_obs": to_t(_recsim_obs(users=8)),
             "reward": torch.ones(8), "done": torch.zeros(8)}
    first, second = agent.q_target.members
    with torch.no_grad():
        for net in (agent.q_target, agent.q):  # full agreement: w = 1
            net.agreement.fill_(1.0)
            net.spread.fill_(1.0)
        second.load_state_dict(first.state_dict())  # identical members: each target is the shared one
    per_member = agent.td_target(batch, per_member=True)
    assert per_member.shape == (2, 8)
    torch.testing.assert_close(per_member, agent.td_target(batch).expand(2, -1))
    with torch.no_grad():
        second.item_out[1].bias.add_(1.0)  # only the second member's C moves, by 1 everywhere
        second.none.bias.add_(1.0)
    moved = agent.td_target(batch, per_member=True)
    torch.testing.assert_close(moved[0], per_member[0])
    torch.testing.assert_close(moved[1], per_member[1] + agent.config.gamma)
    clicks = {"slate": torch.arange(5).repeat(8, 1), "position": torch.zeros(8, dtype=torch.long),
              "immediate": torch.ones(8), "discount": torch.full((8,), 0.9), "slot": torch.arange(8)}
    assert np.isfinite(agent.update({**batch, **clicks})["td_loss"])


def test_deep_slateq_runs_on_interest_evolution() -> None:
    agent = _small_deep_agent(preset="interest_evolution", total_steps=600, learning_starts=200)
    agent.learn()
    slates = agent.act(_recsim_obs("interest_evolution", users=4))
    assert _is_slate(slates, 10, 2)
    assert agent.q.item_bias is None  # documents are new every step there: no per-item offsets
    assert not agent.q.split  # ... and so no reward/continuation split


def test_per_item_offsets_are_learned_and_follow_the_item() -> None:
    agent = _small_deep_agent().learn()
    assert agent.q.item_bias is not None and agent.choice.item_bias is not None
    assert agent.q.item_bias.weight.abs().sum() > 0  # trained away from the zero start
    # the offset of an item is the same wherever it appears among the candidates
    obs = {key: torch.from_numpy(np.asarray(v, np.float32)) for key, v in _recsim_obs(users=2).items()
           if key in OBS_KEYS}
    flipped = {**obs, "candidates": obs["candidates"].flip(1)}
    with torch.no_grad():
        np.testing.assert_allclose(agent.q(flipped)[0].numpy(), agent.q(obs)[0].flip(1).numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", [
    {"continuation_members": 1}, {"continuation_members": 2}])
def test_split_q_offsets_learn_from_the_immediate_reward_only(variant: dict) -> None:
    """Qbar = R + C; the per-item offsets get no gradient from the continuation's TD error."""
    agent = _small_deep_agent(**variant)
    assert agent.q.split
    with torch.no_grad():
        agent.q.item_bias.weight.normal_(0.0, 0.1)  # as if trained (they start at zero)
    obs = {key: torch.from_numpy(np.asarray(v, np.float32)) for key, v in _recsim_obs(users=8).items()
           if key in OBS_KEYS}
    with torch.no_grad():
        reward, reward_none, continuation, continuation_none = agent.q.parts(obs)
        q_items, q_none = agent.q(obs)
    torch.testing.assert_close(q_items, reward + continuation)
    torch.testing.assert_close(q_none, reward_none + continuation_none)
    slate = torch.arange(5).repeat(8, 1)
    position = torch.tensor([0, 1, 2, 3, 4, 5, 5, 0])  # 5 = no click
    consumed = torch.where(position < 5, reward.gather(1, slate.gather(1, position.clamp(max=4)[:, None]))
                           .squeeze(1), reward_none)
    batch = {"obs": obs, "next_obs": obs, "slate": slate, "position": position,
             "reward": consumed + 1.0, "immediate": consumed, "done": torch.zeros(8),
             "discount": torch.full((8,), 0.99), "slot": torch.arange(8)}
    # R already predicts the immediate reward exactly: only the continuation is wrong
    losses = agent.update(batch)
    assert losses["reward_loss"] < 1e-10 < losses["td_loss"]
    assert agent.q.item_bias.weight.grad.abs().max() == 0
    readers = [member.offset_in for member in agent.q.members] or [agent.q.offset_in]
    assert len(readers) == max(variant["continuation_members"], 1)
    for layer in readers:  # C (every member of it) reads the offsets as an input
        assert layer.weight.grad.abs().max() > 0


def test_user_split_members_fit_only_their_own_users() -> None:
    from recsim_gym.agents.slateq import SLOT_KEY, NStepQueue, ReplayBuffer

    agent = _small_deep_agent(continuation_members=2)
    obs = {key: torch.from_numpy(np.asarray(v, np.float32)) for key, v in _recsim_obs(users=8).items()
           if key in OBS_KEYS}
    batch = {"obs": obs, "next_obs": obs, "slate": torch.arange(5).repeat(8, 1),
             "position": torch.tensor([0, 1, 2, 3, 4, 5, 5, 0]), "reward": torch.ones(8),
             "immediate": torch.ones(8), "done": torch.zeros(8), "discount": torch.full((8,), 0.99),
             "slot": torch.tensor([0, 2, 4, 6, 0, 2, 4, 6])}  # only member 0's users
    agent.update(batch)
    first, second = agent.q.members
    assert first.item_in.weight.grad.abs().max() > 0
    assert second.item_in.weight.grad.abs().max() == 0
    # the replay buffer keeps each transition's env slot through the n-step queue
    queue, buffer = NStepQueue(2, 0.9, num_envs=3), ReplayBuffer(10, agent.shapes, 5)
    step = {key: np.asarray(v.numpy()[:3]) for key, v in obs.items()}
    no = np.zeros(3, bool)
    for _ in range(3):
        for transition in queue.push({**step, SLOT_KEY: np.arange(3)}, np.zeros((3, 5), int),
                                     np.zeros(3, int), np.ones(3), step, no, no, ~no):
            buffer.add(*transition)
    assert buffer.size == 6 and sorted(buffer.slot[:6].tolist()) == [0, 0, 1, 1, 2, 2]


def test_user_split_members_need_an_env_slot_each() -> None:
    agent = _small_deep_agent(continuation_members=3, num_envs=2)
    message = r"continuation_members \(3\) needs num_envs >= 3 .*got 2 envs"
    with pytest.raises(ValueError, match=message):
        agent.learn()
    # without a continuation ensemble, one env is fine
    _small_deep_agent(continuation_members=1, num_envs=1, total_steps=600).learn()


def test_weight_average_is_a_mean_then_exponential_and_serves_deterministic_acting() -> None:
    agent = _small_deep_agent(average_tau=0.4)
    obs = {key: torch.from_numpy(np.asarray(v, np.float32)) for key, v in _recsim_obs(users=8).items()
           if key in OBS_KEYS}
    batch = {"obs": obs, "next_obs": obs, "slate": torch.arange(5).repeat(8, 1),
             "position": torch.tensor([0, 1, 2, 3, 4, 5, 5, 0]), "reward": torch.ones(8),
             "immediate": torch.ones(8), "done": torch.zeros(8), "discount": torch.full((8,), 0.99),
             "slot": torch.arange(8)}
    agent.update(batch)
    assert agent.averaged == {}  # nothing is averaged while exploring
    agent.exploring = False
    weights = []
    for _ in range(4):
        agent.update(batch)
        weights.append(agent.q.item_out[1].weight.detach().clone())
    # rates 1, 1/2 (a plain mean of the first two), then max(0.4, 1/3) and max(0.4, 1/4) = 0.4
    expected = (weights[0] + weights[1]) / 2
    for w in weights[2:]:
        expected = 0.6 * expected + 0.4 * w
    torch.testing.assert_close(agent.averaged["q"].item_out[1].weight, expected)
    raw = _recsim_obs(users=8)
    served = agent.act(raw)
    with torch.no_grad():
        for param in agent.q.parameters():
            param.normal_()  # wreck the online network: deterministic acting must not change
    np.testing.assert_array_equal(agent.act(raw), served)
    assert not np.array_equal(agent.act(raw, deterministic=False), served)


def test_registry_builds_and_trains_on_a_next_step_env() -> None:
    from gymnasium.vector import AutoresetMode

    from recsim_gym.agents import registry
    from recsim_gym.env import RecSimVectorEnv

    torch.set_num_threads(1)
    agent = registry.make("recsim_gym.agents.slateq:SlateQAgent", seed=3, num_envs=8, learning_starts=200,
                         batch_size=32, hidden=16, buffer_size=1_000, log_interval=200)
    assert agent.config.seed == 3
    env = RecSimVectorEnv(8, autoreset_mode=AutoresetMode.NEXT_STEP, max_steps=20)
    steps = []
    agent.learn(env, total_steps=400, callback=lambda a, done: steps.append(done))
    assert steps and steps[-1] >= 200
    tabular = registry.make("recsim_gym.agents.slate_q_tabular:TabularSlateQAgent", seed=1)
    assert tabular.act(_recsim_obs(users=3)).shape == (3, 5)


def test_n_step_queue_sums_discounted_rewards_and_flushes_at_episode_end() -> None:
    from recsim_gym.agents.slateq import NStepQueue

    gamma, queue = 0.5, NStepQueue(3, 0.5, num_envs=2)
    out = []
    live = np.ones(2, bool)
    ended_at = {2: np.array([True, False])}  # slot 0's episode ends at step 2
    for t in range(5):
        obs = {"x": t + np.array([0.0, 10.0])}  # slot 1's observations are t + 10
        ended = ended_at.get(t, np.zeros(2, bool))
        out += [(t, *tr) for tr in queue.push(obs, np.zeros((2, 1), int), np.zeros(2, int),
                                               np.full(2, 10.0**t), {"x": t + 1 + np.array([0.0, 10.0])},
                                               ended, ended, live)]
    got = {(int(o["x"][i]), int(n["x"][i])): (float(r[i]), bool(d[i]), float(disc[i]))
           for _, o, _, _, r, n, d, disc, _ in out for i in range(len(r))}
    first = {(int(o["x"][i]), int(n["x"][i])): float(imm[i]) for _, o, *_, n, _, _, imm in out
             for i in range(len(imm))}
    assert first[(10, 13)] == 1 and first[(1, 3)] == 10 and first[(12, 15)] == 100  # own reward
    # a full 3-step transition from step 0: 1 + 0.5*10 + 0.25*100, bootstrap gamma^3 from obs 3
    assert got[(10, 13)] == (1 + 5 + 25, False, gamma**3)
    # slot 0 ends at step 2: steps 0-2 flush with the rewards they have and done=True
    assert got[(0, 3)] == (1 + 5 + 25, True, gamma**3)
    assert got[(1, 3)] == (10 + 50, True, gamma**2) and got[(2, 3)] == (100, True, gamma)
    # slot 1 keeps going: steps 1 and 2 complete at steps 3 and 4
    assert got[(11, 14)] == (10 + 50 + 250, False, gamma**3)
    assert got[(12, 15)] == (100 + 500 + 2500, False, gamma**3)
    # each slot emitted steps 0-2 exactly once; slot 0's steps 3 and 4 (new episode) are pending
    assert sum(len(tr[1]["x"]) for tr in out) == 3 + 3 and len(got) == 6


def test_one_step_queue_emits_every_transition_at_once() -> None:
    from recsim_gym.agents.slateq import NStepQueue

    queue = NStepQueue(1, 0.9, num_envs=3)
    live = np.array([True, False, True])
    (out,) = queue.push({"x": np.arange(3.0)}, np.zeros((3, 1), int), np.zeros(3, int), np.ones(3),
                        {"x": np.arange(3.0) + 1}, np.zeros(3, bool), np.zeros(3, bool), live)
    np.testing.assert_array_equal(out[0]["x"], [0.0, 2.0])
    np.testing.assert_allclose(out[6], [0.9, 0.9])
    assert queue.steps == []


@pytest.mark.slow
def test_deep_slateq_learns_well_past_random_on_default() -> None:
    """60k env steps of deep SlateQ with its defaults score well above random on held-out users."""
    from recsim_gym.experiments.evaluate import evaluate

    torch.set_num_threads(1)
    agent = SlateQAgent(total_steps=60_000, seed=11).learn()
    learned = evaluate(agent, "default", n_users=600, seed=424_242).means()["return"]
    random = evaluate(_RandomSlates(), "default", n_users=600, seed=424_242).means()["return"]
    assert learned > random + 15, (learned, random)  # measured: 83.5 vs 47.8


class _RandomSlates:
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        keys = np.random.default_rng(0).random(obs["candidates"].shape[:2])
        return np.argsort(keys, axis=1)[:, :5]


def test_continuation_probe_measures_agreement_between_seeds(tmp_path, capsys) -> None:
    from scripts import slateq_probe

    first, second = (_small_deep_agent(seed=s, average_tau=0.0).learn() for s in (0, 1))
    same = slateq_probe.probe([first, first], users=40, steps=(0, 3))
    assert [row["step"] for row in same] == [0, 3]
    for row in same:  # an agent agrees with itself exactly
        assert row["R_agreement"] == pytest.approx(1.0) and row["C_agreement"] == pytest.approx(1.0)
    rows = slateq_probe.probe([first, second], users=40, steps=(0,))
    assert -1.0 <= rows[0]["C_agreement"] < 0.999
    parts = slateq_probe.value_parts(first, _recsim_obs(users=40))
    assert parts["C"].shape == (40, 20) and parts["C_none"].shape == (40,)
    # the printed gap is C's candidate mean minus its no-click value, as documented
    obs, _ = slateq_probe.RecSimVectorEnv(40, preset="default").reset(seed=123)
    direct = slateq_probe.value_parts(first, {key: obs[key] for key in OBS_KEYS})
    gap = float((direct["C"].mean(1) - direct["C_none"]).mean())
    assert rows[0]["C_click_minus_none"][0] == pytest.approx(gap)
    first.save(tmp_path / "a.pt")
    second.save(tmp_path / "b.pt")
    slateq_probe.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--users", "20"])
    assert "agreement across seeds" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        slateq_probe.main([str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")])


def test_continuation_ensemble_shrinks_by_member_agreement() -> None:
    from recsim_gym.agents.slateq import ItemQNetwork

    shapes = {"candidates": (20, 8), "history": (4, 3), "user": (6,)}
    net = ItemQNetwork(shapes, 8, item_buckets=16, id_columns=2, split=True, members=2)
    assert net.shrinkage == 1.0  # no evidence yet
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(4000, 20, generator=gen)
    none = torch.zeros(4000)

    def fed(members: list[torch.Tensor]) -> float:
        net.spread.zero_()
        net.record_agreement([(c, none) for c in members], rate=1.0)
        return net.shrinkage

    # members that agree keep their differences; independent noise is shrunk away
    assert fed([signal, signal + 3.0]) == pytest.approx(1.0)
    assert fed([signal, torch.randn(4000, 20, generator=gen)]) < 0.02
    # signal plus independent noise of equal variance: w = 1 / (1 + 1/2)
    noisy = [signal + torch.randn(4000, 20, generator=gen) for _ in range(2)]
    assert fed(noisy) == pytest.approx(2 / 3, abs=0.02)
    # C keeps each user's candidate mean and scales the mean deviations by w
    obs = {key: torch.randn(5, *shape, generator=gen) for key, shape in shapes.items()}
    obs["candidates"][..., :2] = torch.randint(0, 3, (5, 20, 2), generator=gen).float()
    _, _, members = net.member_parts(obs)
    mean = torch.stack([c for c, _ in members]).mean(0)
    _, _, continuation, _ = net.parts(obs)
    centre = mean.mean(1, keepdim=True)
    torch.testing.assert_close(continuation, centre + net.shrinkage * (mean - centre))


def test_continuation_ensemble_agent_learns_saves_and_loads(tmp_path) -> None:
    agent = _small_deep_agent(continuation_members=2).learn()
    row = agent.learning_curve[-1]
    assert 0.0 <= row["continuation_shrinkage"] <= 1.0
    assert agent.q.shrinkage == agent.q_target.shrinkage == agent.averaged["q"].shrinkage
    agent.save(tmp_path / "slateq.pt")
    loaded = SlateQAgent.load(tmp_path / "slateq.pt")
    assert loaded.q.shrinkage == agent.q.shrinkage
    obs = _recsim_obs()
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    with pytest.raises(ValueError, match=r"continuation_members must be an integer in \[1, inf\)"):
        SlateQAgent(continuation_members=0)
