"""Evaluation harness: run a cohort of held-out users to the end of their lifetimes.

``evaluate(agent, env, n_users, seed)`` steps ``n_users`` users (seeds ``seed .. seed+n-1``)
on the batched simulator until each churns or hits the step limit, asking the agent for one
slate per user per step, and returns per-user metrics:

``return``, ``clicks``, ``conversions``, ``revenue``, ``ctr`` (clicks per step),
``conversion_rate`` (conversions per click), ``session_length`` (steps), ``churned``,
``diversity`` (mean intra-slate topic dissimilarity, 1 - cosine) and ``novelty`` (mean
-log2 observed popularity of shown items), plus the cohort's catalog ``coverage`` (share of the
catalog shown at least once). The harness (not the agent) reads the simulator state for the
shown item ids. Summaries carry 95% bootstrap CIs across users (``scipy.stats.bootstrap``);
:func:`evaluate_seeds` adds Student-t CIs across seeds.

``python -m experiments.evaluate --preset default --agents random oracle_myopic`` prints the
table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from agents import registry
from agents.base import Transition
from recsim_env import rng
from recsim_env.simulator import Simulator, all_preset_names, make_simulator

PER_USER = ("return", "clicks", "conversions", "revenue", "ctr", "conversion_rate",
            "session_length", "churned", "diversity", "novelty")


@dataclass
class EvalResult:
    """Per-user metrics of one evaluated cohort plus cohort-level coverage."""

    per_user: dict[str, np.ndarray]
    coverage: float
    seconds: float
    user_steps: int
    extra: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """Cohort means (``churn_rate`` = share of users who churned) and coverage."""
        out = {k: float(np.nanmean(v)) for k, v in self.per_user.items() if k != "churned"}
        out["churn_rate"] = float(np.mean(self.per_user["churned"]))
        clicks = self.per_user["clicks"].sum()
        out["ctr"] = float(clicks / max(self.per_user["session_length"].sum(), 1))
        out["conversion_rate"] = float(self.per_user["conversions"].sum() / max(clicks, 1))
        out["coverage"] = self.coverage
        return out

    def summary(self, n_resamples: int = 1000) -> dict[str, tuple[float, float, float]]:
        """Mean and 95% bootstrap CI across users for every per-user metric."""
        out = {}
        for name, values in self.per_user.items():
            values = values[np.isfinite(values)].astype(float)
            if len(values) < 2 or np.all(values == values[0]):
                mean = float(values.mean()) if len(values) else float("nan")
                out[name] = (mean, mean, mean)
                continue
            ci = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, method="percentile",
                                 random_state=0).confidence_interval
            out[name] = (float(values.mean()), float(ci.low), float(ci.high))
        return out


def _simulator(env: Any, agent: Any, overrides: dict[str, Any]) -> Simulator:
    latent = bool(getattr(agent, "requires_latent", False))
    if isinstance(env, Simulator):
        if latent and not env.params.observe_latent:
            return type(env)(env.params.replace(observe_latent=True))
        return env
    if hasattr(env, "sim"):  # a RecSimEnv / RecSimVectorEnv
        return _simulator(env.sim, agent, overrides)
    preset = env.split("/")[-1].removesuffix("-v0") if isinstance(env, str) else "default"
    if latent:
        overrides = {**overrides, "observe_latent": True}
    return make_simulator(preset, **overrides)


def evaluate(agent: Any, env: Any = "default", n_users: int = 1000, seed: int = 0,
             learn: bool = False, **env_overrides: Any) -> EvalResult:
    """Run ``n_users`` users seeded ``seed..seed+n_users-1`` to the end of their lifetimes.

    :param agent: anything with ``act(obs)`` (or an SB3 model with ``predict``)
    :param env: a preset name or Gymnasium id, a ``Simulator``, or a RecSim env
    :param learn: also call ``agent.observe(transition)`` every step (online learning)
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    sim = _simulator(env, agent, env_overrides)
    act = agent.act if hasattr(agent, "act") else (lambda o: agent.predict(o, deterministic=True)[0])
    start = time.perf_counter()
    state = sim.reset(rng.seed_to_key(np.arange(seed, seed + n_users)))
    obs = sim.observe(state)
    alive = np.ones(n_users, dtype=bool)
    sums = {k: np.zeros(n_users) for k in ("return", "clicks", "conversions", "revenue",
                                          "session_length", "diversity", "novelty")}
    churned = np.zeros(n_users, dtype=bool)
    n_topics = getattr(sim.params, "num_topics", obs["candidates"].shape[2])
    shown_items: list[np.ndarray] = []
    track_items = hasattr(state, "candidates") and hasattr(sim, "catalog")
    user_steps = 0
    while alive.any():
        slates = np.asarray(act(obs))
        if track_items:
            shown_items.append(np.take_along_axis(state.candidates, slates, axis=1)[alive].ravel())
        topics = np.take_along_axis(obs["candidates"][..., :n_topics], slates[..., None], axis=1)
        next_state, result = sim.step(state, slates)
        next_obs = sim.observe(next_state)
        a = alive.astype(float)
        sums["return"] += result.reward * a
        sums["clicks"] += result.click * a
        sums["conversions"] += result.conversion * a
        sums["revenue"] += result.revenue * a
        sums["session_length"] += a
        sums["diversity"] += _diversity(topics) * a
        if obs["candidates"].shape[2] > n_topics + 2:  # default world: popularity column
            popularity = np.take_along_axis(obs["candidates"][..., n_topics + 2], slates, axis=1)
            sums["novelty"] += -np.log2(np.maximum(popularity, 1e-6)).mean(axis=1) * a
        if learn and hasattr(agent, "observe"):
            info = {"click": result.click, "conversion": result.conversion, "position": result.position,
                    "item": result.item, "revenue": result.revenue}
            agent.observe(Transition(obs, slates, result.reward, next_obs, result.terminated,
                                     result.truncated, info))
        user_steps += int(alive.sum())
        churned |= alive & result.terminated
        alive &= ~(result.terminated | result.truncated)
        state, obs = next_state, next_obs
    steps = np.maximum(sums["session_length"], 1)
    per_user = {
        "return": sums["return"], "clicks": sums["clicks"], "conversions": sums["conversions"],
        "revenue": sums["revenue"], "ctr": sums["clicks"] / steps,
        "conversion_rate": np.where(sums["clicks"] > 0, sums["conversions"] / np.maximum(
            sums["clicks"], 1), np.nan),
        "session_length": sums["session_length"], "churned": churned.astype(float),
        "diversity": sums["diversity"] / steps,
        "novelty": sums["novelty"] / steps if obs["candidates"].shape[2] > n_topics + 2
        else np.full(n_users, np.nan)}
    coverage = float("nan")
    if track_items and shown_items:
        catalog_size = sim.catalog.features.shape[0] - 1
        coverage = len(np.unique(np.concatenate(shown_items))) / catalog_size
    return EvalResult(per_user=per_user, coverage=coverage, seconds=time.perf_counter() - start,
                      user_steps=user_steps)


def _diversity(topics: np.ndarray) -> np.ndarray:
    """Mean pairwise (1 - cosine similarity) of the slate's topic vectors, per user (B,)."""
    k = topics.shape[1]
    if k < 2:
        return np.zeros(topics.shape[0])
    norm = topics / np.maximum(np.linalg.norm(topics, axis=2, keepdims=True), 1e-12)
    cosine = np.einsum("bit,bjt->bij", norm, norm)
    off_diagonal = (cosine.sum(axis=(1, 2)) - np.trace(cosine, axis1=1, axis2=2)) / (k * (k - 1))
    return 1.0 - off_diagonal


def evaluate_seeds(make_agent: Any, env: Any, n_users: int, seeds: list[int], **kwargs: Any
                   ) -> dict[str, tuple[float, float, float]]:
    """Cohort means per seed (users ``seed * 10**6 ...``), then mean and 95% t-CI across seeds."""
    from experiments.statistics import t_interval

    per_seed: dict[str, list[float]] = {}
    for s in seeds:
        agent = make_agent(s) if callable(make_agent) and not hasattr(make_agent, "act") else make_agent
        for name, value in evaluate(agent, env, n_users, seed=s * 10**6, **kwargs).means().items():
            per_seed.setdefault(name, []).append(value)
    return {name: t_interval(np.array(values)) for name, values in per_seed.items()}


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.evaluate --help``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", choices=all_preset_names())
    parser.add_argument("--agents", nargs="+", default=["random", "oracle_myopic"],
                        help="agent names (see `recsim agents`); non-learning agents only")
    parser.add_argument("--users", type=int, default=1000, help="users per seed")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seeds < 1:
        parser.error("--users and --seeds must be >= 1")
    sim = make_simulator(args.preset)
    metrics = ("return", "ctr", "conversion_rate", "session_length", "churn_rate", "coverage",
               "diversity", "novelty")
    print(f"{args.preset}: {args.seeds} seeds x {args.users} users (mean [95% CI over seeds])")
    print(f"{'agent':<16}" + "".join(f"{m:>26}" for m in metrics))
    for name in args.agents:
        start = time.perf_counter()
        result = evaluate_seeds(lambda s, n=name: registry.make(n, params=sim.params, seed=s),
                                args.preset, args.users, list(range(args.seeds)))
        cells = "".join(f"{result[m][0]:>10.3f} [{result[m][1]:>6.2f},{result[m][2]:>6.2f}]"
                        for m in metrics)
        print(f"{name:<16}{cells}  ({time.perf_counter() - start:.1f}s)", file=sys.stdout)


if __name__ == "__main__":
    main()
