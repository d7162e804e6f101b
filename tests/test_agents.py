"""Agent protocol and registry: names, plug-ins, protocol errors, reference agents."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from recsim_gym.agents import reference, registry
from recsim_gym.agents.base import BaseAgent
from recsim_gym.env.simulator import all_preset_names, make_simulator
from recsim_gym.experiments.evaluate import evaluate


def _write_module(tmp_path: Path, monkeypatch, name: str, source: str) -> None:
    """A module ``name`` on ``sys.path`` (removed from ``sys.modules`` after the test)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_unknown_name_lists_known_agents() -> None:
    with pytest.raises(KeyError, match="random") as err:
        registry.make("no_such_agent")
    assert "oracle_myopic" in str(err.value) and "package.module:ClassName" in str(err.value)


def test_module_class_string_is_found_and_evaluated(tmp_path: Path, monkeypatch) -> None:
    _write_module(tmp_path, monkeypatch, "my_policies", """
        import numpy as np

        class LastK:
            def __init__(self, params, seed=0):
                self.k, self.seed = params.slate_size, seed

            def act(self, obs):
                m = obs["candidates"].shape[1]
                return np.tile(np.arange(m - 1, m - 1 - self.k, -1), (obs["candidates"].shape[0], 1))
    """)
    params = make_simulator("static").params
    agent = registry.make("my_policies:LastK", params=params, seed=4)
    assert agent.seed == 4
    result = evaluate(agent, "static", n_users=20, seed=0)
    assert result.per_user["return"].shape == (20,)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        registry.make("my_policies:Nope")
    with pytest.raises(ValueError, match="package.module:ClassName"):
        registry.resolve(":Nothing")


def test_protocol_errors_name_the_missing_method(tmp_path: Path, monkeypatch) -> None:
    _write_module(tmp_path, monkeypatch, "not_agents", """
        class NoAct:
            def learn(self, env, total_steps, callback=None):
                pass

        class ActWithoutObs:
            def act(self):
                return None

        class ObserveNotCallable:
            observe = 3

            def act(self, obs):
                return None
    """)
    with pytest.raises(TypeError, match=r"'not_agents:NoAct' .* no act\(obs\) method"):
        registry.make("not_agents:NoAct")
    with pytest.raises(TypeError, match="act must take one argument"):
        registry.make("not_agents:ActWithoutObs")
    with pytest.raises(TypeError, match="'observe' is not a method"):
        registry.make("not_agents:ObserveNotCallable")
    # a misspelt hyperparameter reads the same for every agent: unknown ...; valid ...
    with pytest.raises(ValueError, match=r"unknown RandomAgent field\(s\) \['no_such_option'\]; "
                                         r"valid fields: \[\] \('random' takes no hyperparameters\)"):
        registry.make("random", params=make_simulator("static").params, no_such_option=1)
    with pytest.raises(ValueError, match=r"unknown LinUCBConfig field\(s\) \['alpah'\]; valid fields"):
        registry.make("linucb", params=make_simulator("static").params, alpah=1)


def test_predict_is_the_sb3_signature() -> None:
    sim = make_simulator("default")
    agent = registry.make("random", params=sim.params, seed=0)
    obs = sim.observe(sim.reset(np.arange(3, dtype=np.uint64)))
    slates, state = agent.predict(obs, state=None, episode_start=np.ones(3, bool), deterministic=True)
    assert slates.shape == (3, sim.params.slate_size) and state is None


@pytest.mark.parametrize("choice_model", ["mnl", "cascade"])
@pytest.mark.parametrize("position_decay", [0.5, 0.9, 1.0])
def test_oracle_myopic_is_exact(choice_model: str, position_decay: float) -> None:
    """The oracle's slate is as good as the best of all ordered k-subsets (brute force)."""
    from itertools import permutations

    from recsim_gym.env.choice import choice_probabilities

    sim = make_simulator("default", choice_model=choice_model, position_decay=position_decay,
                         num_candidates=7, slate_size=3, observe_latent=True)
    obs = sim.observe(sim.reset(np.arange(30, dtype=np.uint64)))
    terms = reference.item_terms(obs, sim.params)

    def expected_reward(slates: np.ndarray) -> np.ndarray:
        utility = np.take_along_axis(terms["utility"], slates, axis=1).astype(np.float32)
        probs = choice_probabilities(utility, sim.params)[:, :-1]
        return (probs * np.take_along_axis(terms["value"], slates, axis=1)).sum(axis=1)

    slates = registry.make("oracle_myopic", params=sim.params).act(obs)
    assert all(len(set(row)) == 3 for row in slates.tolist())
    best = np.max([expected_reward(np.tile(p, (30, 1))) for p in permutations(range(7), 3)], axis=0)
    np.testing.assert_allclose(expected_reward(slates), best, rtol=1e-5)


def test_oracle_myopic_beats_random_with_cascade_choice() -> None:
    params = make_simulator("default", choice_model="cascade").params
    returns = {name: evaluate(registry.make(name, params=params, seed=0), params, n_users=300,
                              seed=5000).per_user["return"] for name in ("random", "oracle_myopic")}
    diff = returns["oracle_myopic"] - returns["random"]
    assert diff.mean() - 2.6 * diff.std(ddof=1) / np.sqrt(len(diff)) > 0, diff.mean()


def test_entry_point_plugin_is_found_and_evaluated(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "my_recsys"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        import numpy as np

        class FirstK:
            def __init__(self, params):
                self.k = params.slate_size

            def act(self, obs):
                return np.tile(np.arange(self.k), (obs["candidates"].shape[0], 1))
    """))
    dist = tmp_path / "my_recsys-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-recsys\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[recsim.agents]\nfirst_k = my_recsys:FirstK\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "first_k" in registry.list_agents()
    sim = make_simulator("static")
    agent = registry.make("first_k", params=sim.params)
    result = evaluate(agent, "static", n_users=20, seed=0)
    assert result.per_user["return"].shape == (20,)
    sys.modules.pop("my_recsys", None)


def test_base_agent_save_load_roundtrip(tmp_path: Path) -> None:
    params = make_simulator("default").params
    agent = registry.make("random", params=params, seed=3)
    agent.save(tmp_path / "a.pkl")
    restored = type(agent).load(tmp_path / "a.pkl")
    obs = make_simulator("default").observe(make_simulator("default").reset(np.arange(4, dtype=np.uint64)))
    np.testing.assert_array_equal(agent.act(obs), restored.act(obs))
    assert isinstance(agent, BaseAgent)


@pytest.mark.parametrize("preset", all_preset_names())
def test_oracle_myopic_beats_random_on_every_preset(preset: str) -> None:
    params = make_simulator(preset).params
    returns = {}
    for name in ("random", "oracle_myopic"):
        agent = registry.make(name, params=params, seed=0)
        returns[name] = evaluate(agent, preset, n_users=300, seed=5000).per_user["return"]
    diff = returns["oracle_myopic"] - returns["random"]  # same users: paired
    assert diff.mean() - 2.6 * diff.std(ddof=1) / np.sqrt(len(diff)) > 0, (preset, diff.mean())


def _learned_return(name: str, steps: int, preset: str = "static") -> np.ndarray:
    from recsim_gym.env import RecSimVectorEnv

    params = make_simulator(preset).params
    agent = registry.make(name, params=params, seed=0)
    if hasattr(agent, "learn"):
        env = RecSimVectorEnv(64, preset=preset)
        env.reset(seed=3_000_000)  # training users, disjoint from the evaluation users below
        agent.learn(env, steps)
    return evaluate(agent, preset, n_users=400, seed=9000).per_user["return"]


@pytest.mark.parametrize("name", ["epsilon_greedy", "linucb", "thompson"])
def test_bandits_beat_random_clearly_on_static(name: str) -> None:
    random_return = _learned_return("random", 0)
    diff = _learned_return(name, 20_000) - random_return  # same users: paired
    assert diff.mean() > 0.05 * random_return.mean(), (name, diff.mean(), random_return.mean())
    assert diff.mean() - 2.6 * diff.std(ddof=1) / np.sqrt(len(diff)) > 0


def test_popularity_beats_random_on_static() -> None:
    diff = _learned_return("popularity", 50_000) - _learned_return("random", 0)
    assert diff.mean() - 2.6 * diff.std(ddof=1) / np.sqrt(len(diff)) > 0, diff.mean()


def test_example_custom_agent_runs_and_beats_random() -> None:
    import runpy

    root = Path(__file__).resolve().parents[1]
    namespace = runpy.run_path(str(root / "examples" / "custom_agent.py"))
    params = make_simulator("default").params
    mine = evaluate(namespace["TopicMatcher"](params), "default", n_users=300, seed=11).per_user["return"]
    rand = evaluate(registry.make("random", params=params), "default", n_users=300, seed=11)
    assert mine.mean() > rand.per_user["return"].mean()
    assert "topic_matcher" in registry.list_agents()


#: Small budgets so every built-in can act after ``learn``.
_TINY = {
    "ppo_attention": {"num_envs": 8, "n_steps": 16, "batch_size": 64, "n_epochs": 1, "torch_threads": 1},
    "ppo_mlp": {"num_envs": 8, "n_steps": 16, "batch_size": 64, "n_epochs": 1, "torch_threads": 1},
    "slateq": {"learning_starts": 64, "batch_size": 32},
}
_SKIP = {"full_slate_q"}  # whole-slate tables only exist for tiny configs (tests/test_slateq.py)


def _trained(name: str, preset: str, params) -> object:
    from recsim_gym.env import RecSimVectorEnv

    agent = registry.make(name, params=params, seed=0, **_TINY.get(name, {}))
    if hasattr(agent, "learn"):
        overrides = {"observe_latent": True} if getattr(agent, "requires_latent", False) else {}
        env = RecSimVectorEnv(16, preset=preset, autoreset_mode="SameStep", **overrides)
        env.reset(seed=0)
        agent.learn(env, 256)
    return agent


@pytest.mark.parametrize("preset", all_preset_names())
@pytest.mark.parametrize("name", [n for n in registry.BUILTINS if n not in _SKIP])
def test_every_builtin_agent_runs_on_every_preset_single_and_vector(name: str, preset: str) -> None:
    import gymnasium as gym

    from recsim_gym.env import RecSimVectorEnv

    latent = {"observe_latent": True} if name == "oracle_myopic" else {}
    params = make_simulator(preset, **latent).params
    agent = _trained(name, preset, params)
    envs = RecSimVectorEnv(4, preset=preset, **latent)
    obs, _ = envs.reset(seed=1)
    for _ in range(3):
        slates = np.asarray(agent.act(obs))
        assert envs.action_space.contains(slates.astype(np.int64))
        obs, *_ = envs.step(slates)
    env = gym.make(f"recsim/{preset}-v0", **latent)
    single_obs, _ = env.reset(seed=1)
    for _ in range(3):
        slate = np.asarray(agent.act({k: v[None] for k, v in single_obs.items()}))[0]
        single_obs, _, terminated, truncated, _ = env.step(slate.astype(np.int64))
        if terminated or truncated:
            single_obs, _ = env.reset()
