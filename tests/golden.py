"""Behaviour fingerprints that a restructure must keep bit for bit.

``python -m tests.golden --write`` records, in ``tests/golden.json``, SHA-256 digests of

* a seeded rollout of every preset's vector env under fixed random slates (observations,
  rewards, terminations, truncations and every info array), and
* one short runner job of every built-in agent (train with the agent's defaults, then evaluate
  on held-out users): the learning curve, the final metrics and every user's return.

``tests/test_golden.py`` recomputes them and compares. A digest that changes means behaviour
changed: that is a finding to explain, never a file to regenerate silently.

The env digests are exact integer and IEEE arithmetic and hold on every machine. The agent
digests also hash float results whose last bits depend on the CPU's instruction set: numpy's
SIMD ``log2``/``exp`` (novelty, diversity), BLAS, and torch's kernels, whose ulp differences
training amplifies. They are recorded per *float platform*, named by :func:`float_platform` (a
digest of such results on fixed inputs); on a platform with no record they are skipped, and
``python -m tests.golden --write`` adds that platform's record (at a commit whose behaviour is
known to be unchanged).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).with_name("golden.json")

#: PPO's options added after its digests were recorded, at the values they were recorded with.
_PPO_AS_RECORDED: dict[str, Any] = {"click_credit": False, "click_aux": 0}

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
    # click credit and the auxiliary click loss (on by default since they were chosen on tuning
    # worlds) pinned off: these digests were recorded without them on three float platforms, and
    # this keeps them the fingerprint of the PPO update they have always pinned; their own tests
    # are in tests/test_ppo_attention.py
    ("ppo_attention", "default", {}, "ppo_attention", {"torch_threads": 1, **_PPO_AS_RECORDED}, 8192),
    ("ppo_mlp", "default", {}, "ppo_mlp", {"torch_threads": 1, **_PPO_AS_RECORDED}, 8192),
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


def float_platform() -> str:
    """Digest of float results that differ between CPU instruction sets: numpy's vectorised
    transcendental functions and BLAS, a numba-compiled loop, and the torch kernels the agents
    train with (linear layers forward and backward, softmax, attention, layer norm, Adam)."""
    import torch
    from numba import njit

    @njit(cache=False)
    def _loop(x):  # numba's own code generation for exp/log
        total = 0.0
        for v in x:
            total += np.exp(v) * np.log1p(abs(v))
        return total

    gen = np.random.default_rng(7)
    x = gen.normal(size=4099)
    a, b = gen.normal(size=(67, 67)), gen.normal(size=67)
    parts: list[Any] = [np.log2(np.abs(x) + 1e-3), np.exp(x), np.log(np.abs(x) + 1e-3), np.tanh(x),
                        np.linalg.norm(x.reshape(-1, 1)[:4096].reshape(64, 64), axis=1),
                        np.linalg.solve(a @ a.T + np.eye(67), b), a @ a, np.array(_loop(x))]
    torch.manual_seed(7)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = torch.nn.Sequential(torch.nn.Linear(37, 128), torch.nn.ReLU(), torch.nn.LayerNorm(128),
                                  torch.nn.Linear(128, 1))
        optim = torch.optim.Adam(net.parameters(), lr=1e-3)
        inputs = torch.randn(256, 20, 37)
        q, k, v = torch.randn(3, 64, 2, 29, 8).unbind(0)
        for _ in range(3):
            out = net(inputs).squeeze(-1)
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            loss = out.softmax(1).square().sum() + torch.nn.functional.mse_loss(out, out.tanh().detach())
            optim.zero_grad()
            loss.backward()
            optim.step()
            parts += [out.detach().numpy(), attended.numpy()]
        parts += [p.detach().numpy() for p in net.parameters()]
    finally:
        torch.set_num_threads(threads)
    return _digest(*parts)[:12]


def read_golden() -> dict[str, Any]:
    """``tests/golden.json``: ``{"env": {key: digest}, "platforms": {platform: {"cpu": ...,
    "agents": {key: digest}}}}``."""
    return json.loads(GOLDEN.read_text())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


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


def write_golden(result: dict[str, str]) -> None:
    """Record ``result``: the env digests (which must equal any already recorded: they do not
    depend on the platform) and this float platform's agent digests."""
    golden = read_golden() if GOLDEN.exists() else {"env": {}, "platforms": {}}
    env = {key: value for key, value in result.items() if key.startswith("env/")}
    changed = sorted(key for key in env if golden["env"].get(key, env[key]) != env[key])
    if changed:
        raise SystemExit(f"env digests {changed} differ from the record: behaviour changed")
    golden["env"].update(env)
    agents = {key: value for key, value in result.items() if key.startswith("agent/")}
    golden["platforms"][float_platform()] = {"cpu": _cpu_name(), "agents": agents}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    result = fingerprints()
    print(json.dumps(result, indent=1))
    print(f"float platform {float_platform()} ({_cpu_name()})")
    if "--write" in sys.argv:
        write_golden(result)
