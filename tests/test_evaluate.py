"""Evaluation harness: metrics match hand rollouts, every env form works, seeds, statistics, CLI."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from recsim_gym.agents import reference, registry
from recsim_gym.agents.base import BaseAgent, Transition
from recsim_gym.env import RecSimVectorEnv, seeds
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments import evaluate as ev
from recsim_gym.experiments.evaluate import METRICS, PER_USER, evaluate
from recsim_gym.experiments.statistics import bootstrap_mean


class HighestAppeal(BaseAgent):
    """Deterministic, row-independent: the k most appealing candidates."""

    def __init__(self, params):
        self.params = params

    def act(self, obs):
        return reference.highest_appeal(obs, self.params)


class PredictOnly:
    """An SB3-style policy: ``predict`` but no ``act``."""

    def __init__(self, params):
        self.k = params.slate_size

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.tile(np.arange(self.k), (obs["candidates"].shape[0], 1)), state


def test_metrics_match_single_env_rollouts() -> None:
    params = make_simulator("default").params
    agent = HighestAppeal(params)
    result = evaluate(agent, "default", n_users=4, seed=123)
    env = gym.make("recsim/default-v0")
    for b in range(4):
        obs, _ = env.reset(seed=123 + b)
        total = clicks = conversions = steps = 0.0
        while True:
            slate = agent.act({k: v[None] for k, v in obs.items()})[0]
            obs, reward, terminated, truncated, info = env.step(slate)
            total, clicks, conversions, steps = (total + reward, clicks + info["click"],
                                                 conversions + info["conversion"], steps + 1)
            if terminated or truncated:
                break
        assert result.per_user["return"][b] == pytest.approx(total, rel=1e-5)
        assert result.per_user["clicks"][b] == clicks
        assert result.per_user["conversions"][b] == conversions
        assert result.per_user["session_length"][b] == steps
        assert result.per_user["churned"][b] == float(terminated)
        assert result.per_user["ctr"][b] == pytest.approx(clicks / steps)
    assert result.user_steps == result.per_user["session_length"].sum()


@pytest.mark.parametrize("preset", ["default", "interest_evolution"])
def test_metric_ranges(preset: str) -> None:
    params = make_simulator(preset).params
    result = evaluate(registry.make("random", params=params, seed=0), preset, n_users=200, seed=0)
    per_user = result.per_user
    assert set(per_user) == set(PER_USER)
    assert all(v.shape == (200,) for v in per_user.values())
    assert np.all((per_user["ctr"] >= 0) & (per_user["ctr"] <= 1))
    rate = per_user["conversion_rate"][np.isfinite(per_user["conversion_rate"])]
    assert np.all((rate >= 0) & (rate <= 1))
    assert set(np.unique(per_user["churned"])) <= {0.0, 1.0}
    assert np.all((per_user["session_length"] >= 1) & (per_user["session_length"] <= params.max_steps))
    assert np.all((per_user["diversity"] >= -1e-9) & (per_user["diversity"] <= 1 + 1e-9))
    means = result.means()
    assert set(means) == set(METRICS)
    if preset == "default":
        assert 0 < means["click_coverage"] <= means["coverage"] <= 1
        assert np.all(per_user["novelty"] >= 0)
    else:  # no fixed catalog, no popularity feature
        assert np.isnan(means["coverage"]) and np.isnan(means["novelty"])
    for name, (mean, low, high) in result.summary(n_resamples=200).items():
        if np.isfinite(mean):
            assert low <= mean + 1e-9 and mean <= high + 1e-9, name


def test_every_env_form_gives_the_same_result() -> None:
    sim = make_simulator("news")
    agent = HighestAppeal(sim.params)
    reference = evaluate(agent, "news", n_users=30, seed=7).per_user["return"]
    for env in ("recsim/news-v0", gym.make("recsim/news-v0"), gym.make_vec("recsim/news-v0", num_envs=2),
                RecSimVectorEnv(3, preset="news"), sim, sim.params):
        np.testing.assert_array_equal(evaluate(agent, env, n_users=30, seed=7).per_user["return"],
                                      reference)
    with pytest.raises(TypeError, match="preset name"):
        evaluate(agent, 42, n_users=3)


def test_predict_only_policies_and_bad_slates() -> None:
    params = make_simulator("static").params
    result = evaluate(PredictOnly(params), "static", n_users=20, seed=0)
    assert result.per_user["return"].shape == (20,)

    class WrongShape(BaseAgent):
        def act(self, obs):
            return np.zeros((1, 2), dtype=np.int64)

    with pytest.raises(ValueError, match=r"WrongShape.act returned slates of shape \(1, 2\)"):
        evaluate(WrongShape(), "static", n_users=5)
    with pytest.raises(TypeError, match="neither act"):
        evaluate(object(), "static", n_users=5)


def test_online_learning_sees_only_live_users() -> None:
    params = make_simulator("default").params

    class Recorder(HighestAppeal):
        def __init__(self, params):
            super().__init__(params)
            self.rows = 0

        def observe(self, transition: Transition) -> None:
            batch = len(transition.reward)
            assert transition.slates.shape == (batch, params.slate_size)
            assert transition.obs["candidates"].shape[0] == batch == len(transition.info["click"])
            self.rows += batch

    agent = Recorder(params)
    frozen = evaluate(agent, "default", n_users=50, seed=3)
    assert agent.rows == 0  # learn=False: no feedback
    learning = evaluate(agent, "default", n_users=50, seed=3, learn=True)
    assert agent.rows == learning.user_steps == frozen.user_steps


def test_training_and_evaluation_users_are_disjoint(monkeypatch) -> None:
    seeds_used: list[tuple[int, int]] = []
    original = RecSimVectorEnv.reset

    def spy(self, *, seed=None, options=None):
        if seed is not None:
            seeds_used.append((int(seed), self.num_envs))
        return original(self, seed=seed, options=options)

    monkeypatch.setattr(RecSimVectorEnv, "reset", spy)
    results = ev.evaluate_agent("popularity", "static", n_users=40, seeds=[0, 1], train_steps=300,
                                num_train_envs=16)
    assert [r.extra["seed"] for r in results] == [0, 1]
    ranges = [range(start, start + n) for start, n in seeds_used]
    assert len(ranges) == 4  # a training env and an evaluation cohort per seed
    users = [set(r) for r in ranges]
    assert all(users[i].isdisjoint(users[j]) for i in range(4) for j in range(i + 1, 4))
    train, evaluation = range(seeds.train_seed(0), seeds.train_seed(99) + 10_000), seeds.eval_seed(0)
    assert evaluation > train[-1]  # the schemes cannot meet for 100 seeds


def test_summarize_seeds_and_table() -> None:
    results = ev.evaluate_agent("random", "static", n_users=50, seeds=[0, 1, 2])
    summary = ev.summarize_seeds(results, n_resamples=200)
    assert set(summary) == set(METRICS)
    ret = summary["return"]
    assert ret["users_low"] <= ret["mean"] <= ret["users_high"]
    assert ret["seeds_low"] <= ret["mean"] <= ret["seeds_high"]
    assert np.isnan(summary["coverage"]["users_low"])  # cohort-level: CI across seeds only
    boot = ev.summarize_seeds(results, n_resamples=200, seed_ci="bootstrap")["return"]
    assert boot["seeds_low"] <= ret["mean"] <= boot["seeds_high"]
    with pytest.raises(ValueError, match="seed_ci"):
        ev.summarize_seeds(results, seed_ci="normal")
    table = ev.format_table({"random": summary})
    assert "random" in table and "session_length" in table and "[" in table


def test_bootstrap_mean_edge_cases() -> None:
    assert bootstrap_mean(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0, 2.0)
    assert all(np.isnan(bootstrap_mean(np.array([np.nan]))))
    mean, low, high = bootstrap_mean(np.arange(100.0), n_resamples=500)
    assert low < mean == 49.5 < high


def test_slate_diversity() -> None:
    same = np.tile(np.eye(4)[:1], (1, 3, 1))  # three identical topic vectors
    distinct = np.eye(4)[None, :3]  # three orthogonal ones
    np.testing.assert_allclose(ev.slate_diversity(np.concatenate([same, distinct])), [0.0, 1.0])


def test_cli_prints_the_table(capsys) -> None:
    ev.main(["--env", "static", "--agents", "random", "popularity", "--users", "30", "--seeds", "2",
             "--train-steps", "200"])
    out = capsys.readouterr().out
    assert "random" in out and "popularity" in out and "churn_rate" in out and "coverage" in out
    with pytest.raises(KeyError, match="known agents"):
        ev.main(["--agents", "no_such_agent", "--users", "5", "--seeds", "1"])
