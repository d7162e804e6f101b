"""Fuzz tests (hypothesis): every generated input is either accepted or refused with the
project's own error type, and a refused input leaves the env state and the files unchanged."""

from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsim_gym.env import InvalidActionError, Params, RecSimVectorEnv
from recsim_gym.env.logs import LogFormatError, generate_logs, validate_logs
from recsim_gym.experiments.config import ConfigError, parse_config

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                      st.lists(st.integers(-3, 30), max_size=6))


@FUZZ
@given(st.one_of(
    st.lists(st.integers(-5, 30), min_size=0, max_size=8),
    st.lists(st.lists(st.integers(-5, 30), min_size=0, max_size=7), min_size=1, max_size=4),
    st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=5, max_size=5),
             min_size=3, max_size=3),
    ANY_VALUE))
def test_any_action_is_shown_or_refused_without_touching_the_users(action) -> None:
    envs, twin = RecSimVectorEnv(3), RecSimVectorEnv(3)
    envs.reset(seed=11)
    twin.reset(seed=11)
    try:
        envs.step(np.asarray(action, dtype=object) if isinstance(action, list) else action)
    except InvalidActionError:
        good = np.tile(np.arange(5), (3, 1))
        after, *_ = envs.step(good)
        expected, *_ = twin.step(good)
        for key in expected:
            np.testing.assert_array_equal(after[key], expected[key])


PARAM_NAMES = [f.name for f in dataclasses.fields(Params)]


@FUZZ
@given(st.dictionaries(st.sampled_from(PARAM_NAMES + ["num_itemz", "preset"]), ANY_VALUE, max_size=4))
def test_any_params_are_built_or_refused_with_a_value_error(overrides: dict) -> None:
    try:
        params = Params(**{k: v for k, v in overrides.items() if k in PARAM_NAMES})
        Params().replace(**overrides)
    except ValueError:
        return
    for f in dataclasses.fields(params):  # an accepted value is a valid one, never clipped
        value = getattr(params, f.name)
        if isinstance(value, float):
            assert math.isfinite(value)


CONFIG_KEYS = ["name", "env", "agents", "seeds", "train_steps", "num_envs", "eval", "output_dir",
               "bogus"]


@FUZZ
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), st.one_of(
    ANY_VALUE,
    st.fixed_dictionaries({"preset": st.sampled_from(["default", "static", "moon", 3])}),
    st.lists(st.one_of(st.sampled_from(["random", "linucb", "nope"]),
                       st.fixed_dictionaries({"name": st.sampled_from(["random", "linucb"]),
                                              "params": st.dictionaries(
                                                  st.sampled_from(["alpha", "ridge", "x"]),
                                                  ANY_VALUE, max_size=2)})), max_size=3),
    st.dictionaries(st.sampled_from(["users", "final_users", "every_steps", "x"]), ANY_VALUE,
                    max_size=2)), max_size=6))
def test_any_config_is_read_or_refused_with_a_config_error(raw: dict) -> None:
    try:
        parse_config(raw)
    except ConfigError:
        pass


@pytest.fixture(scope="module")
def small_logs() -> dict[str, np.ndarray]:
    return generate_logs("static", n_steps=200, batch_size=40, seed=3)


@FUZZ
@given(st.sampled_from(["propensity", "slate", "position", "click", "conversion", "revenue",
                        "reward", "slate_features", "user_features", "step"]),
       st.integers(0, 199), st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                      st.integers(-200, 200), st.booleans()))
def test_any_edited_log_is_valid_or_refused_with_a_log_format_error(small_logs, column, row,
                                                                    value) -> None:
    logs = {name: array.copy() for name, array in small_logs.items()}
    target = logs[column].reshape(len(logs[column]), -1)
    try:
        with np.errstate(all="ignore"):
            target[row, 0] = value
    except (OverflowError, ValueError):
        return  # the value does not fit the column's dtype at all
    try:
        validate_logs(logs)
    except LogFormatError:
        pass


@pytest.fixture(scope="module")
def agent_file(tmp_path_factory) -> Path:
    from recsim_gym.agents import registry
    from recsim_gym.env.simulator import make_simulator

    path = tmp_path_factory.mktemp("agent") / "linucb.zip"
    registry.make("linucb", params=make_simulator("default").params, seed=1).save(path)
    return path


@FUZZ
@given(st.data())
def test_any_damaged_agent_file_is_refused_with_an_agent_file_error(agent_file, tmp_path_factory,
                                                                    data) -> None:
    from recsim_gym.agents.base import BaseAgent
    from recsim_gym.agents.persistence import AgentFileError

    raw = bytearray(agent_file.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("damaged") / "agent.zip"
    path.write_bytes(bytes(raw))
    try:
        BaseAgent.load(path)
    except AgentFileError:
        pass
    except zipfile.BadZipFile as err:  # pragma: no cover - would be a finding
        raise AssertionError(f"raw zip error escaped: {err}") from err
    assert path.read_bytes() == bytes(raw)  # loading never writes
