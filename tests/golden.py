"""Behaviour fingerprints that a restructure must keep bit for bit.

``python -m tests.golden --write`` records, in ``tests/golden.json``, SHA-256 digests of

* a seeded rollout of every preset's vector env under fixed random slates (observations,
  rewards, terminations, truncations and every info array), and
* one short runner job of every built-in agent (train with the agent's defaults, then evaluate
  on held-out users): the learning curve, the final metrics and every user's return.

``tests/test_golden.py`` recomputes them and compares. A digest that changes means behaviour
changed: that is a finding to explain, never a file to regenerate silently.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).with_name("golden.json")

#: (label, preset, overrides, agent, agent params, train_steps); budgets are the smallest that
#: make each learner update its model at least once with its default hyperparameters.
AGENT_JOBS: tuple[tuple[str, str, dict[str, Any], str, dict[str, Any], int], ...] = (
    ("random", "default", {}, "random", {}, 0),
    ("oracle_myopic", "default", {}, "oracle_myopic", {}, 0),
    ("popularity", "default", {}, "popularity", {}, 2048),
    ("epsilon_greedy", "default", {}, "epsilon_greedy", {}, 2048),
    ("linucb", "default", {}, "linucb", {}, 2048),
    ("thompson", "default", {}, "thompson", {}, 2048),
    ("logreg", "default", {}, "logreg", {}, 4096),
    ("two_tower", "default", {}, "two_tower", {}, 4096),
    ("din", "default", {}, "din", {}, 4096),
    ("slateq", "default", {}, "slateq", {}, 6144),
    ("slateq_ie", "interest_evolution", {}, "slateq", {}, 6144),
    ("ppo_attention", "default", {}, "ppo_attention", {"torch_threads": 1}, 8192),
    ("ppo_mlp", "default", {}, "ppo_mlp", {"torch_threads": 1}, 8192),
    ("slate_q_tabular", "default", {}, "slate_q_tabular", {}, 4096),
)


#: The info keys the digests were recorded with (info keys added later, such as ``filled``, are
#: new behaviour with tests of their own, not a change to these).
GOLDEN_INFO_KEYS = ("choice_probs", "click", "conversion", "end_reason", "item", "position", "revenue")


def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(np.asarray(array))
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


def env_fingerprint(preset: str, users: int = 16, steps: int = 60) -> str:
    """Digest of a seeded vector-env rollout of ``preset`` under seeded random distinct slates."""
    import gymnasium as gym

    envs = gym.make_vec(f"recsim/{preset}-v0", num_envs=users)
    obs, _ = envs.reset(seed=1234)
    m = envs.single_observation_space["candidates"].shape[0]
    k = envs.unwrapped.params.slate_size
    rng = np.random.default_rng(99)
    parts: list[Any] = [obs[key] for key in sorted(obs)]
    for _ in range(steps):
        slates = np.argsort(rng.random((users, m)), axis=1)[:, :k]
        obs, reward, terminated, truncated, info = envs.step(slates)
        parts += [obs[key] for key in sorted(obs)] + [reward, terminated, truncated]
        parts += [np.asarray(info[key]) for key in GOLDEN_INFO_KEYS]
    envs.close()
    return _digest(*parts)


def agent_fingerprint(preset: str, overrides: dict[str, Any], agent: str, params: dict[str, Any],
                      train_steps: int) -> str:
    """Digest of one runner job (curve, final metrics, per-user returns) of ``agent``."""
    import torch

    from recsim_gym.experiments.config import parse_config
    from recsim_gym.experiments.runner import Job
    from recsim_gym.experiments.training import train_and_evaluate

    torch.set_num_threads(1)
    config = parse_config({
        "name": "golden", "env": {"preset": preset, "overrides": overrides},
        "agents": [{"name": agent, "params": params}], "seeds": [3], "train_steps": train_steps,
        "num_envs": 32, "eval": {"every_steps": train_steps // 2, "users": 32, "final_users": 64}})
    record = train_and_evaluate(Job(config=config, agent=config.agents[0], seed=3))
    curve = [[row[key] for key in sorted(row)] for row in record["curve"]]
    return _digest(np.array(curve, dtype=np.float64), np.array(record["final_return_per_user"]))


def fingerprints(only: set[str] | None = None) -> dict[str, str]:
    """Every digest (or those named in ``only``), keyed ``env/<preset>`` and ``agent/<label>``."""
    import recsim_gym.env  # noqa: F401  (registers the ids)
    from recsim_gym.env.simulator import all_preset_names

    out: dict[str, str] = {}
    for preset in all_preset_names():
        if only is None or f"env/{preset}" in only:
            out[f"env/{preset}"] = env_fingerprint(preset)
    for label, preset, overrides, agent, params, steps in AGENT_JOBS:
        if only is None or f"agent/{label}" in only:
            out[f"agent/{label}"] = agent_fingerprint(preset, overrides, agent, params, steps)
    return out


if __name__ == "__main__":
    result = fingerprints()
    print(json.dumps(result, indent=1))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
