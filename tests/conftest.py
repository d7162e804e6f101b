"""Shared helpers for the simulator tests: rollouts, comparisons of observations and infos."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsim_gym.env import END_REASONS

#: Info keys every step carries (single env: scalars, vector env: (B,) arrays).
STEP_INFO_KEYS = ("click", "conversion", "revenue", "position", "item", "choice_probs", "end_reason")


def slot(obs: dict[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    """User ``b``'s observation out of a batched observation dict."""
    return {key: value[b] for key, value in obs.items()}


def assert_obs_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], where: str = ""
                     ) -> None:
    """Observation dicts with the same keys and bit-identical arrays."""
    assert set(actual) == set(expected), f"{where}: observation keys differ"
    for key in expected:
        a, e = np.asarray(actual[key]), np.asarray(expected[key])
        assert a.shape == e.shape, f"{where}: obs[{key!r}] shape {a.shape} != {e.shape}"
        assert np.array_equal(a, e), f"{where}: obs[{key!r}] differs"


def single_info_from_vector(info: dict[str, Any], b: int) -> dict[str, Any]:
    """User ``b``'s step info of a vector env, in the single env's format."""
    out = {key: info[key][b] for key in STEP_INFO_KEYS}
    out["end_reason"] = END_REASONS[int(out["end_reason"])]
    return out


def assert_info_equal(actual: dict[str, Any], expected: dict[str, Any], where: str = "") -> None:
    """The step-info entries of two infos are identical (probabilities bit for bit)."""
    for key in STEP_INFO_KEYS:
        a, e = actual[key], expected[key]
        if key == "choice_probs":
            assert np.array_equal(np.asarray(a), np.asarray(e)), f"{where}: info[{key!r}] differs"
        else:
            assert a == e, f"{where}: info[{key!r}] = {a!r}, expected {e!r}"


def single_rollout(env, seed: int, actions: list[np.ndarray]) -> list[tuple]:
    """Reset ``env`` with ``seed`` and play ``actions``, resetting (without seed) after each episode
    end. Returns one record per reset or step: ``(obs, reward, terminated, truncated, info)``."""
    obs, _ = env.reset(seed=seed)
    records: list[tuple] = [(obs, 0.0, False, False, {})]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        records.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, _ = env.reset()
            records.append((obs, 0.0, False, False, {}))
    return records


def assert_records_equal(first: list[tuple], second: list[tuple]) -> None:
    """Two rollouts (lists of ``(obs, reward, terminated, truncated, info)``) are identical."""
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        assert_obs_equal(a[0], b[0], f"record {i}")
        assert np.array_equal(np.asarray(a[1]), np.asarray(b[1])), f"record {i}: reward differs"
        assert np.array_equal(np.asarray(a[2]), np.asarray(b[2])), f"record {i}: terminated differs"
        assert np.array_equal(np.asarray(a[3]), np.asarray(b[3])), f"record {i}: truncated differs"
        assert set(a[4]) == set(b[4]), f"record {i}: info keys differ"
        for key in a[4]:
            if isinstance(a[4][key], dict):
                assert_obs_equal(a[4][key], b[4][key], f"record {i} info[{key!r}]")
            else:
                assert np.array_equal(np.asarray(a[4][key]), np.asarray(b[4][key])), (
                    f"record {i}: info[{key!r}] differs")
