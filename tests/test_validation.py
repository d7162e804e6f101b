"""Bad input: rejected actions raise clear errors and leave the env untouched; invalid config
values raise ``ValueError`` naming the field and its allowed range."""

from __future__ import annotations

import dataclasses
import math
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from conftest import assert_records_equal
from recsim_gym.env import InvalidActionError, Params, RecSimEnv, RecSimVectorEnv, make_params

K, M = 5, 20  # default slate size and candidate count

# (action, regexes the message must match: what was wrong and what was expected)
BAD_SINGLE_ACTIONS = [
    pytest.param(np.array([0, 1, 2, 3]), [r"shape \(4,\)", r"expected shape \(5,\)"], id="too-short"),
    pytest.param(np.array([[0, 1, 2, 3, 4]]), [r"shape \(1, 5\)", r"\(5,\)"], id="2d"),
    pytest.param(np.int64(3), [r"shape \(\)", r"\(5,\)"], id="scalar"),
    pytest.param(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), ["dtype float64", "integer"], id="float"),
    pytest.param([0.0, 1.0, 2.0, 3.0, 4.0], ["dtype float64", "integer"], id="float-list"),
    pytest.param(np.array([0, np.nan, 2, 3, 4]), ["NaN", "integer"], id="nan"),
    pytest.param(np.array([0, 1, 2, 3, 20]), [r"\b20\b", r"\[0, 20\)"], id="index-too-large"),
    pytest.param(np.array([0, -1, 2, 3, 4]), [r"-1", r"\[0, 20\)"], id="negative-index"),
    pytest.param(np.array([0, 1, 1, 3, 4]), ["repeats", "distinct"], id="duplicate"),
    pytest.param([4, 4, 4, 4, 4], ["repeats", "distinct"], id="duplicate-list"),
    pytest.param(np.array([True, False, True, False, True]), ["dtype bool", "integer"], id="bool"),
    pytest.param("01234", ["dtype", "integer"], id="string"),
    pytest.param(None, ["dtype", "integer"], id="none"),
]


def _twins(**overrides) -> tuple[RecSimEnv, RecSimEnv]:
    """Two envs on the same user, advanced by the same three valid steps."""
    envs = (RecSimEnv(**overrides), RecSimEnv(**overrides))
    for env in envs:
        env.reset(seed=17)
        for i in range(3):
            env.step(np.arange(K) + i)
    return envs


@pytest.mark.parametrize(("action", "patterns"), BAD_SINGLE_ACTIONS)
def test_single_env_rejects_bad_action_and_keeps_state(action, patterns: list[str]) -> None:
    env, twin = _twins(observe_latent=True, duplicate_rule="raise")
    with pytest.raises(InvalidActionError) as error:
        env.step(action)
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert "expected" in message
    good = np.array([7, 3, 11, 0, 19])
    for _ in range(5):
        assert_records_equal([env.step(good)], [twin.step(good)])


BAD_VECTOR_ACTIONS = [
    pytest.param(np.array([0, 1, 2, 3, 4]), [r"shape \(5,\)", r"\(3, 5\)"], id="unbatched"),
    pytest.param(np.zeros((3, 4), dtype=np.int64), [r"shape \(3, 4\)", r"\(3, 5\)"], id="short-rows"),
    pytest.param(np.tile(np.arange(5), (2, 1)), [r"shape \(2, 5\)", r"\(3, 5\)"], id="too-few-rows"),
    pytest.param(np.tile(np.arange(5.0), (3, 1)), ["dtype float64", "integer"], id="float"),
    pytest.param(np.array([[0, 1, 2, 3, 4]] * 2 + [[0, 1, np.nan, 3, 4]]), ["NaN"], id="nan"),
    pytest.param(np.array([[0, 1, 2, 3, 4]] * 2 + [[0, 1, 2, 3, 25]]), [r"\b25\b", r"\[0, 20\)"],
                 id="index-too-large"),
    pytest.param(np.array([[0, 1, 2, 3, 4], [0, 1, 2, 2, 4], [0, 1, 2, 3, 4]]),
                 ["repeats", r"row 1", "distinct"], id="duplicate-in-row-1"),
]


@pytest.mark.parametrize(("actions", "patterns"), BAD_VECTOR_ACTIONS)
def test_vector_env_rejects_bad_actions_and_keeps_state(actions, patterns: list[str]) -> None:
    envs = [RecSimVectorEnv(3, max_steps=6, duplicate_rule="raise") for _ in range(2)]
    rng = np.random.default_rng(0)
    warmup = [np.argsort(rng.random((3, M)), axis=1)[:, :K] for _ in range(8)]  # crosses autoreset
    for env in envs:
        env.reset(seed=40)
        for action in warmup:
            env.step(action)
    with pytest.raises(InvalidActionError) as error:
        envs[0].step(actions)
    for pattern in patterns:
        assert re.search(pattern, str(error.value)), (pattern, str(error.value))
    for _ in range(6):
        good = np.argsort(rng.random((3, M)), axis=1)[:, :K]
        assert_records_equal([envs[0].step(good)], [envs[1].step(good)])


def _without_filled(record: tuple) -> tuple:
    *head, info = record
    return (*head, {key: value for key, value in info.items() if key not in ("filled", "_filled")})


def test_duplicate_fill_rule_replaces_repeats_with_lowest_unused() -> None:
    env, twin = _twins()  # 'fill' is the default
    # repeats of 3 become the lowest unused positions 2 then 4, in order
    filled, shown = env.step(np.array([3, 3, 1, 3, 0])), twin.step(np.array([3, 2, 1, 4, 0]))
    assert (filled[-1]["filled"], shown[-1]["filled"]) == (2, 0)
    assert_records_equal([_without_filled(filled)], [_without_filled(shown)])
    envs, twins = RecSimVectorEnv(2), RecSimVectorEnv(2)
    envs.reset(seed=1)
    twins.reset(seed=1)
    filled = envs.step(np.array([[5, 5, 5, 5, 5], [0, 1, 2, 3, 4]]))
    shown = twins.step(np.array([[5, 0, 1, 2, 3], [0, 1, 2, 3, 4]]))
    assert filled[-1]["filled"].tolist() == [4, 0] and shown[-1]["filled"].tolist() == [0, 0]
    assert_records_equal([_without_filled(filled)], [_without_filled(shown)])


def test_duplicate_fill_rule_still_rejects_out_of_range() -> None:
    env = RecSimEnv(duplicate_rule="fill")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="outside"):
        env.step(np.array([0, 0, 1, 2, 99]))


def test_step_before_reset() -> None:
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        RecSimEnv().step(np.arange(K))
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        RecSimVectorEnv(2).step(np.tile(np.arange(K), (2, 1)))


@pytest.mark.parametrize("overrides", [dict(max_steps=3), dict(churn_base=1.0, churn_scale=0.0)],
                         ids=["truncated", "terminated"])
def test_step_after_episode_end(overrides: dict) -> None:
    env = RecSimEnv(**overrides)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(np.arange(K))
        done = terminated or truncated
    assert info["end_reason"] == ("max_steps" if "max_steps" in overrides else "churned")
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step(np.arange(K))
    env.reset()
    env.step(np.arange(K))  # fine again after a reset


def test_step_after_end_with_autoreset_disabled() -> None:
    envs = RecSimVectorEnv(2, autoreset_mode=AutoresetMode.DISABLED, max_steps=1)
    envs.reset(seed=0)
    envs.step(np.tile(np.arange(K), (2, 1)))
    with pytest.raises(RuntimeError, match="reset_mask"):
        envs.step(np.tile(np.arange(K), (2, 1)))


# ------------------------------------------------------------------------------------------
# Params validation
# ------------------------------------------------------------------------------------------

BAD_PARAMS = [
    pytest.param(dict(num_items=-5), "num_items", r"\[10, ", id="negative-num_items"),
    pytest.param(dict(num_items=0), "num_items", r"\[10, ", id="zero-num_items"),
    pytest.param(dict(num_candidates=10, slate_size=11), "slate_size", "num_candidates",
                 id="slate-larger-than-candidates"),
    pytest.param(dict(num_items=10, num_candidates=11, slate_size=5), "num_candidates", "num_items",
                 id="candidates-larger-than-catalog"),
    pytest.param(dict(choice_model="probit"), "choice_model", "'mnl'", id="unknown-choice-model"),
    pytest.param(dict(reward_mode="profit"), "reward_mode", "'revenue'", id="unknown-reward-mode"),
    pytest.param(dict(affinity_weight=math.nan), "affinity_weight", "must be a number in", id="nan-weight"),
    pytest.param(dict(click_weight=math.inf), "click_weight", "must be a number in", id="inf-weight"),
    pytest.param(dict(conversion_weight=-1.0), "conversion_weight", r"\[0, ", id="negative-weight"),
    pytest.param(dict(position_decay=0.0), "position_decay", r"\(0, 1\]", id="open-lower-bound"),
    pytest.param(dict(fatigue_gain=1.5), "fatigue_gain", r"\[0, 1\]", id="rate-above-one"),
    pytest.param(dict(num_topics=2.5), "num_topics", "int", id="float-for-int"),
    pytest.param(dict(max_steps=True), "max_steps", "int", id="bool-for-int"),
    pytest.param(dict(observe_latent="yes"), "observe_latent", "bool", id="str-for-bool"),
    pytest.param(dict(declared_topics=5, num_topics=4), "declared_topics", "num_topics",
                 id="declared-more-than-topics"),
    pytest.param(dict(churn_base=0.6, churn_scale=0.6), "churn_scale", "<= 1", id="churn-sum"),
    pytest.param(dict(price_min=10.0, price_max=5.0), "price_max", "price_min", id="price-bounds"),
]


@pytest.mark.parametrize(("overrides", "field", "pattern"), BAD_PARAMS)
def test_invalid_params_name_the_field(overrides: dict, field: str, pattern: str) -> None:
    for build in (lambda: Params(**overrides), lambda: make_params("default", **overrides),
                  lambda: gym.make("recsim/default-v0", **overrides),
                  lambda: gym.make_vec("recsim/default-v0", num_envs=2, **overrides)):
        with pytest.raises(ValueError, match=re.escape(field)) as error:
            build()
        assert re.search(pattern, str(error.value)), str(error.value)


RANGED_FIELDS = [f for f in dataclasses.fields(Params) if f.metadata.get("low") is not None]


@pytest.mark.parametrize("field", RANGED_FIELDS, ids=[f.name for f in RANGED_FIELDS])
def test_every_numeric_field_rejects_values_outside_its_range(field: dataclasses.Field) -> None:
    low, high = field.metadata["low"], field.metadata["high"]
    below = low if field.metadata["low_open"] else low - 1
    cast = int if field.type in (int, "int") else float
    for value in (cast(below), cast(high * 2 + 1)):
        pattern = rf"Params\.{field.name} must be (an integer|a number) in"
        with pytest.raises(ValueError, match=pattern) as error:
            Params(**{field.name: value})
        assert repr(value) in str(error.value) or str(value) in str(error.value)


def test_unknown_override_names_it_and_lists_valid_fields() -> None:
    for build in (lambda: gym.make("recsim/default-v0", num_itemz=100),
                  lambda: gym.make_vec("recsim/news-v0", num_envs=2, num_itemz=100),
                  lambda: make_params("static", num_itemz=100),
                  lambda: Params().replace(num_itemz=100)):
        with pytest.raises(ValueError, match="num_itemz") as error:
            build()
        assert "num_items" in str(error.value)  # the valid names are listed


def test_unknown_preset() -> None:
    for build in (lambda: make_params("moon"), lambda: gym.make("recsim/RecSim-v0", preset="moon"),
                  lambda: RecSimVectorEnv(2, preset="moon")):
        with pytest.raises(ValueError, match="moon") as error:
            build()
        assert "default" in str(error.value)  # the known presets are listed


def test_bad_vector_env_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        RecSimVectorEnv(0)
    with pytest.raises(ValueError):
        RecSimVectorEnv(2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="render_mode"):
        RecSimEnv(render_mode="human")


def test_params_are_frozen_and_coerce_numpy_scalars() -> None:
    params = Params(num_items=np.int64(100), affinity_weight=np.float32(2.5), observe_latent=np.True_)
    assert type(params.num_items) is int and params.num_items == 100
    assert type(params.affinity_weight) is float and params.affinity_weight == 2.5
    assert params.observe_latent is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.num_items = 10  # type: ignore[misc]
    assert Params(num_items=100) == params.replace(affinity_weight=4.0, observe_latent=False)


def test_presets_are_valid_and_distinct() -> None:
    presets = {name: make_params(name) for name in ("default", "static", "news", "ecommerce")}
    assert len({repr(p) for p in presets.values()}) == 4
    static = presets["static"]
    assert static.interest_update_rate == static.interest_noise == static.fatigue_gain == 0.0
    assert static.churn_scale == 0.0
    assert presets["ecommerce"].reward_mode == "revenue"


# --- agent hyperparameters ---------------------------------------------------------------------

BAD_AGENT_VALUES = [  # (agent, bad keyword arguments, what the message must say)
    pytest.param("slateq", {"learning_rate": 0.0},
                 r"SlateQConfig\.learning_rate must be a number in \(0, inf\), got 0\.0", id="slateq-lr"),
    pytest.param("slateq", {"gamma": float("nan")},
                 r"SlateQConfig\.gamma must be a number in \[0, 1\], got nan", id="slateq-gamma-nan"),
    pytest.param("slateq", {"batch_size": 2.5},
                 r"SlateQConfig\.batch_size must be an integer in \[1, inf\)", id="slateq-batch-float"),
    pytest.param("slateq", {"target_tau": 0},
                 r"SlateQConfig\.target_tau must be a number in \(0, 1\]", id="slateq-tau-zero"),
    pytest.param("slateq", {"optimiser": "best"},
                 r"SlateQConfig\.optimiser must be one of \[", id="slateq-optimiser"),
    pytest.param("ppo_attention", {"gae_lambda": 1.1},
                 r"PPOSlateConfig\.gae_lambda must be a number in \[0, 1\]", id="ppo-lambda"),
    pytest.param("ppo_attention", {"ent_coef": -0.1},
                 r"PPOSlateConfig\.ent_coef must be a number in \[0, inf\)", id="ppo-ent"),
    pytest.param("ppo_attention", {"d_model": 33},
                 r"PPOSlateConfig\.d_model \(33\) must be divisible by num_heads", id="ppo-heads"),
    pytest.param("ppo_mlp", {"mlp_hidden": (256, 0)},
                 r"PPOSlateConfig\.mlp_hidden\[1\] must be an integer", id="ppo-mlp-hidden"),
    pytest.param("slate_q_tabular", {"alpha": 1.5},
                 r"TabularSlateQConfig\.alpha must be a number in \(0, 1\]", id="tabular-alpha"),
    pytest.param("slate_q_tabular", {"target": "td"},
                 r"TabularSlateQConfig\.target must be one of", id="tabular-target"),
    pytest.param("din", {"epsilon": 2.0},
                 r"ClickModelConfig\.epsilon must be a number in \[0, 1\], got 2\.0", id="din-epsilon"),
    pytest.param("linucb", {"alpha": float("nan")},
                 r"LinUCBConfig\.alpha must be a number in \[0, inf\), got nan", id="linucb-alpha-nan"),
    pytest.param("thompson", {"ridge": 0.0},
                 r"ThompsonConfig\.ridge must be a number in \(0, inf\), got 0\.0", id="thompson-ridge"),
    pytest.param("epsilon_greedy", {"epsilon": 1.5},
                 r"EpsilonGreedyConfig\.epsilon must be a number in \[0, 1\]", id="egreedy-epsilon"),
    pytest.param("popularity", {"smoothing": float("inf")},
                 r"PopularityConfig\.smoothing must be a number in \(0, inf\), got inf", id="popularity-inf"),
    pytest.param("logreg", {"lr": -1.0},
                 r"ClickModelConfig\.lr must be a number in \(0, inf\)", id="logreg-lr"),
]


@pytest.mark.parametrize("name, kwargs, message", BAD_AGENT_VALUES)
def test_bad_agent_hyperparameters_name_the_field_and_range(name: str, kwargs: dict, message: str) -> None:
    from recsim_gym.agents import registry

    with pytest.raises(ValueError, match=message):
        registry.make(name, params=make_params("default"), seed=0, **kwargs)


@pytest.mark.parametrize("name", ["slateq", "ppo_attention", "slate_q_tabular"])
def test_unknown_agent_hyperparameter_lists_the_fields(name: str) -> None:
    from recsim_gym.agents import registry

    message = r"unknown \w+Config field\(s\) \['gama'\]; valid fields: \[.*'gamma'"
    with pytest.raises(ValueError, match=message):
        registry.make(name, params=make_params("default"), seed=0, gama=0.9)


# --- seeds and autoreset modes (issue 22, item 6) --------------------------------------------

BAD_SEEDS = [1.5, "1", True, -1, 2**63, 2**64 - 2, np.float64(3.0), [1, 2.0, 3], ["1", 2, 3]]


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=[repr(s) for s in BAD_SEEDS])
def test_bad_seeds_are_errors_in_both_envs_and_change_nothing(seed) -> None:
    envs = RecSimVectorEnv(3)
    before, _ = envs.reset(seed=7)
    with pytest.raises(ValueError, match=r"reset\(seed=\.\.\.\)(\[\d\])? must be an integer in \[0, "):
        envs.reset(seed=seed)
    after, *_ = envs.step(np.tile(np.arange(5), (3, 1)))  # the env still runs on seed 7's users
    twin = RecSimVectorEnv(3)
    twin.reset(seed=7)
    expected, *_ = twin.step(np.tile(np.arange(5), (3, 1)))
    np.testing.assert_array_equal(after["history"], expected["history"])
    if not isinstance(seed, list):
        with pytest.raises(ValueError, match=r"reset\(seed=\.\.\.\) must be an integer in \[0, "):
            gym.make("recsim/default-v0").reset(seed=seed)


def test_the_vector_env_refuses_seeds_whose_slots_would_wrap() -> None:
    from recsim_gym.env.rng import MAX_SEED

    RecSimVectorEnv(3).reset(seed=MAX_SEED - 2)  # slots MAX_SEED - 2 .. MAX_SEED
    with pytest.raises(ValueError, match="3 consecutive users"):
        RecSimVectorEnv(3).reset(seed=MAX_SEED - 1)


def test_autoreset_mode_accepts_names_and_values_and_lists_them() -> None:
    from gymnasium.vector import AutoresetMode

    for mode in ("disabled", "Disabled", "DISABLED", AutoresetMode.DISABLED):
        assert RecSimVectorEnv(2, autoreset_mode=mode).autoreset_mode is AutoresetMode.DISABLED
    with pytest.raises(ValueError, match="'SameStep' / 'same_step'.*got 'bogus'"):
        RecSimVectorEnv(2, autoreset_mode="bogus")


def test_interest_evolution_errors_name_their_own_class() -> None:
    with pytest.raises(ValueError, match=r"^InterestEvolutionParams\.exposure must be one of"):
        gym.make("recsim/interest_evolution-v0", exposure="nope")
