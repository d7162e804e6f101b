"""Probe deep SlateQ's value split: are the continuation's item-to-item differences signal or noise?

Deep SlateQ scores a candidate by ``R(s, j) + C(s, j)`` (immediate reward plus continuation,
:class:`recsim_gym.agents.slateq.ItemQNetwork`). Given two agents trained with different seeds on the same
world, this prints, on the same observations (users stepped by the first agent's policy), the
spread of each part across the candidates of a user (standard deviation of its deviations from
the user's candidate mean), how well the two agents agree on those deviations (correlation across
seeds: reproducible differences are signal, seed-specific ones are noise), the correlation of R's
and C's deviations within an agent, and the mean gap C(s, clicked) - C(s, no click).

    python -m recsim_gym.agents.slateq --preset static --total-steps 400000 --seed 100 --save a.pt
    python -m recsim_gym.agents.slateq --preset static --total-steps 400000 --seed 101 --save b.pt
    python scripts/slateq_probe.py a.pt b.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsim_gym.agents.slateq import OBS_KEYS, SlateQAgent
from recsim_gym.env import RecSimVectorEnv


def value_parts(agent: SlateQAgent, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``R`` and ``C`` per candidate (B, m) and for no click (B,), from the network the agent acts
    with (its weight average when it has one)."""
    net = agent.averaged.get("q", agent.q)
    if not net.split:
        raise ValueError("the agent has no R/C split (split_immediate off, or a world without a catalog)")
    x = {key: torch.as_tensor(np.asarray(obs[key], np.float32)) for key in OBS_KEYS}
    with torch.no_grad():
        r, r_none, c, c_none = (part.numpy() for part in net.parts(x))
    return {"R": r, "R_none": r_none, "C": c, "C_none": c_none}


def probe(agents: list[SlateQAgent], users: int = 500, steps: tuple[int, ...] = (0, 5, 20, 50),
          seed: int = 123) -> list[dict[str, Any]]:
    """One row per probed step: spreads, cross-seed agreement, R-C correlation, click-none gap."""
    if len(agents) != 2:
        raise ValueError(f"probe needs exactly 2 agents, got {len(agents)}")
    preset = agents[0].config.preset
    env = RecSimVectorEnv(users, preset=preset)
    obs, _ = env.reset(seed=seed)
    rows = []
    for t in range(max(steps) + 1):
        current = {key: obs[key] for key in OBS_KEYS}
        if t in steps:
            parts = [value_parts(agent, current) for agent in agents]
            dev = {name: [p[name] - p[name].mean(1, keepdims=True) for p in parts] for name in ("R", "C")}
            row: dict[str, Any] = {"step": t}
            for name in ("R", "C"):
                row[f"{name}_spread"] = [float(d.std()) for d in dev[name]]
                first, second = (d.ravel() for d in dev[name])
                row[f"{name}_agreement"] = float(np.corrcoef(first, second)[0, 1])
            row["R_C_correlation"] = [float(np.corrcoef(r.ravel(), c.ravel())[0, 1])
                                      for r, c in zip(dev["R"], dev["C"], strict=True)]
            row["C_click_minus_none"] = [float((p["C"].mean(1) - p["C_none"]).mean()) for p in parts]
            rows.append(row)
        obs, *_ = env.step(agents[0].act(current))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Load two saved agents, probe them, print one line per probed step."""
    parser = argparse.ArgumentParser(prog="python scripts/slateq_probe.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agents", nargs=2, type=Path, metavar="AGENT",
                        help="two agents saved by `python -m recsim_gym.agents.slateq --save`")
    parser.add_argument("--users", type=int, default=500, help="users stepped together (default 500)")
    parser.add_argument("--seed", type=int, default=123, help="seed of those users (default 123)")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error(f"--users must be >= 1, got {args.users}")
    for path in args.agents:
        if not path.is_file():
            parser.error(f"no saved agent at {path}")
    torch.set_num_threads(1)
    agents = [SlateQAgent.load(path) for path in args.agents]
    if agents[0].config.preset != agents[1].config.preset:
        parser.error(f"the agents were trained on different presets: {agents[0].config.preset!r}, "
                     f"{agents[1].config.preset!r}")
    print(f"preset {agents[0].config.preset}: item deviations of R and C (agent 1 / agent 2)")
    for row in probe(agents, args.users, seed=args.seed):
        print(f"step {row['step']:3d}: spread R {row['R_spread'][0]:.3f}/{row['R_spread'][1]:.3f}, "
              f"C {row['C_spread'][0]:.3f}/{row['C_spread'][1]:.3f}; agreement across seeds "
              f"R {row['R_agreement']:.2f}, C {row['C_agreement']:.2f}; corr(R, C) "
              f"{row['R_C_correlation'][0]:.2f}/{row['R_C_correlation'][1]:.2f}; "
              f"C click - none {row['C_click_minus_none'][0]:+.3f}/{row['C_click_minus_none'][1]:+.3f}")


if __name__ == "__main__":
    main()
