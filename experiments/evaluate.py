"""Evaluation harness: run a cohort of held-out users to the end of their lifetimes.

``evaluate(agent, env, n_users, seed)`` resets a native :class:`~recsim_gym.env.RecSimVectorEnv` of
``n_users`` slots with ``seed`` (slot ``b`` is the user seeded ``seed + b``), asks the agent for
one slate per user per step and steps until every user has churned or hit the step limit.
It talks to the env through its public interface only (observations, rewards, ``info``).
Per-user metrics (arrays of length ``n_users``):

=================== ============================================================================
``return``          lifetime (undiscounted) reward
``clicks``          clicks over the lifetime; ``conversions`` and ``revenue`` likewise
``ctr``             clicks per step (slate); cohort CTR = all clicks / all steps
``conversion_rate`` conversions per click (NaN for users who never clicked); cohort rate =
                    all conversions / all clicks
``session_length``  steps until the user left
``churned``         1 if the user churned (``terminated``), 0 if the step limit ended it
``diversity``       mean intra-slate topic dissimilarity (1 - cosine of topic vectors, pairs)
``novelty``         mean ``-log2`` observed popularity of the shown items (worlds with a
                    popularity feature; NaN otherwise)
=================== ============================================================================

and per cohort: ``coverage`` (distinct items shown / catalog size ``num_items``) and
``click_coverage`` (distinct items clicked / catalog size); items are told apart by their
static observed features (:func:`recsim_gym.agents.bandits.item_keys`), clicked ones by ``info["item"]``.
Worlds without a fixed catalog (``interest_evolution``) report NaN coverage. With catalog
churn (``item_lifetime > 0``) coverage can exceed 1.

The agent only sees the users still in their lifetime: the batch given to ``act`` shrinks as
users leave (rows keep the cohort's order), so agents must not keep per-row state across calls.

Statistics. :meth:`EvalResult.summary` gives 95% percentile-bootstrap CIs across users
(``scipy.stats.bootstrap``; for CTR and conversion rate of the pooled ratio, users resampled
with their numerator and denominator). :func:`evaluate_agent` evaluates one agent on several seeds and
:func:`summarize_seeds` pools them: the mean over all users with a bootstrap CI across users,
and a 95% CI across seeds (per-seed cohort means; Student-t by default because a percentile
bootstrap over 3-10 values is too narrow, ``seed_ci="bootstrap"`` for scipy's BCa bootstrap).

Seeds. For seed ``s`` the agent is built with ``seed=s``, evaluation users are
``EVAL_SEED_BASE + s * EVAL_SEED_STRIDE + [0, n_users)`` and agents with ``learn`` first train
for ``train_steps`` user-steps on a same-step-autoreset vector env seeded from
``TRAIN_SEED_BASE * (s + 1)`` (:mod:`recsim_gym.env.seeds`): training and
evaluation users never overlap. Every learning agent gets the same ``train_steps``;
``learn_online=True`` also lets agents ``observe`` while being evaluated.

Command line (all reference agents on ``default``, a few minutes on 2 cores)::

    python -m recsim_gym.experiments.evaluate --env default --agents all --users 2000 --seeds 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsim_gym.agents import registry
from recsim_gym.agents.bandits import item_keys
from recsim_gym.agents.base import Transition
from recsim_gym.env import RecSimVectorEnv
from recsim_gym.env.seeds import EVAL_SEED_STRIDE, eval_seed, train_seed
from recsim_gym.env.simulator import all_preset_names, make_simulator
from recsim_gym.experiments.statistics import bca_interval, bootstrap_mean, bootstrap_ratio, t_interval

PER_USER = ("return", "clicks", "conversions", "revenue", "ctr", "conversion_rate",
            "session_length", "churned", "diversity", "novelty")
#: Metrics of :meth:`EvalResult.means` (``churn_rate`` = mean of ``churned``).
METRICS = ("return", "clicks", "conversions", "revenue", "ctr", "conversion_rate",
           "session_length", "churn_rate", "coverage", "click_coverage", "diversity", "novelty")
#: The agents ``--agents all`` evaluates: the reference agents of every comparison.
REFERENCE_AGENTS = ("random", "popularity", "oracle_myopic", "epsilon_greedy", "linucb", "thompson")
_SUMS = ("return", "clicks", "conversions", "revenue", "session_length", "diversity", "novelty")


@dataclass
class EvalResult:
    """Per-user metrics of one evaluated cohort plus cohort-level coverage."""

    per_user: dict[str, np.ndarray]
    coverage: float
    seconds: float
    user_steps: int
    click_coverage: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """Cohort means of every metric of :data:`METRICS` (CTR and conversion rate pooled:
        all clicks over all steps, all conversions over all clicks)."""
        with np.errstate(invalid="ignore"):
            out = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                   for k, v in self.per_user.items() if k != "churned"}
        out["churn_rate"] = float(np.mean(self.per_user["churned"]))
        clicks = self.per_user["clicks"].sum()
        out["ctr"] = float(clicks / max(self.per_user["session_length"].sum(), 1))
        out["conversion_rate"] = float(self.per_user["conversions"].sum() / max(clicks, 1))
        out["coverage"] = self.coverage
        out["click_coverage"] = self.click_coverage
        return out

    def summary(self, n_resamples: int = 1000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
        """Mean and 95% percentile-bootstrap CI across users for every per-user metric (CTR and
        conversion rate as in :meth:`means`: pooled ratios, users resampled)."""
        out = {name: bootstrap_mean(values, n_resamples, seed) for name, values in self.per_user.items()}
        for name, (num, den) in RATIOS.items():
            out[name] = bootstrap_ratio(self.per_user[num], self.per_user[den], n_resamples, seed)
        return out


#: Pooled ratio metrics: name -> (numerator, denominator) per-user sums.
RATIOS = {"ctr": ("clicks", "session_length"), "conversion_rate": ("conversions", "clicks")}


def _params_of(env: Any) -> tuple[Any, str | None]:
    """``(params, None)`` of an env / simulator / params object, or ``(None, preset)`` of a name."""
    if isinstance(env, str):
        return None, env.split("/")[-1].removesuffix("-v0")
    for candidate in (env, getattr(env, "unwrapped", None)):
        params = getattr(candidate, "params", None)
        if params is not None:
            return params, None
    if hasattr(env, "replace") and hasattr(env, "slate_size"):  # a Params object itself
        return env, None
    raise TypeError(f"cannot evaluate on {type(env).__name__}: give a preset name, a Gymnasium id "
                    "'recsim/<preset>-v0', a recsim env or its params")


def make_eval_env(env: Any, n_users: int, latent: bool = False, autoreset_mode: str | None = None,
                  **overrides: Any) -> RecSimVectorEnv:
    """A fresh native vector env of ``n_users`` slots for the world ``env`` names or holds
    (``autoreset_mode``: the env's default when None)."""
    params, preset = _params_of(env)
    if latent:
        overrides = {**overrides, "observe_latent": True}
    mode = {} if autoreset_mode is None else {"autoreset_mode": autoreset_mode}
    if params is not None:
        return RecSimVectorEnv(n_users, params=params.replace(**overrides) if overrides else params, **mode)
    if preset == "RecSim":
        preset = overrides.pop("preset", "default")
    return RecSimVectorEnv(n_users, preset=preset, **mode, **overrides)


def make_train_env(agent: Any, env: Any, num_envs: int, seed: int, **overrides: Any) -> RecSimVectorEnv:
    """The env ``agent.learn`` trains on (runner, tuning, ``bench train``): ``num_envs``
    same-step-autoreset slots of the world ``env`` names or holds, with the latent state for
    agents that require it, reset with ``seed``."""
    train_env = make_eval_env(env, num_envs, bool(getattr(agent, "requires_latent", False)),
                              autoreset_mode="SameStep", **overrides)
    train_env.reset(seed=seed)
    return train_env


def _acting(agent: Any) -> Any:
    if callable(getattr(agent, "act", None)):
        return agent.act
    if callable(getattr(agent, "predict", None)):  # SB3 models and other predict-only policies
        return lambda obs: agent.predict(obs, deterministic=True)[0]
    raise TypeError(f"{type(agent).__name__} can not be evaluated: it has neither act(obs) nor "
                    "predict(obs, state=None, episode_start=None, deterministic=False)")


def evaluate(agent: Any, env: Any = "default", n_users: int = 1000, seed: int = 0,
             learn: bool = False, **env_overrides: Any) -> EvalResult:
    """Run ``n_users`` users seeded ``seed .. seed + n_users - 1`` to the end of their lifetimes.

    :param agent: anything with ``act(obs)`` (or an SB3-style ``predict``)
    :param env: a preset name, a Gymnasium id, a recsim env (single or vector, wrapped or not),
        a world model or a world's params; a new vector env of ``n_users`` slots is built on it
    :param n_users: cohort size
    :param seed: seed of the first user
    :param learn: also call ``agent.observe(transition)`` every step (online learning)
    :param env_overrides: Params overrides of the world
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    act = _acting(agent)
    observe = getattr(agent, "observe", None) if learn else None
    envs = make_eval_env(env, n_users, bool(getattr(agent, "requires_latent", False)), **env_overrides)
    params = envs.params
    k = params.slate_size
    n_topics = int(getattr(params, "num_topics", envs.single_observation_space["candidates"].shape[-1]))
    has_popularity = envs.single_observation_space["candidates"].shape[-1] == n_topics + 3
    catalog_size = getattr(params, "num_items", None) if has_popularity else None
    filler = np.tile(np.arange(k, dtype=np.int64), (n_users, 1))  # slates of users who left

    start = time.perf_counter()
    obs, _ = envs.reset(seed=seed)
    sums = {name: np.zeros(n_users) for name in _SUMS}
    churned = np.zeros(n_users, dtype=bool)
    alive = np.ones(n_users, dtype=bool)
    shown: list[np.ndarray] = []
    clicked: list[np.ndarray] = []
    user_steps = 0
    while True:
        rows = np.flatnonzero(alive)
        live_obs = obs if len(rows) == n_users else {key: v[rows] for key, v in obs.items()}
        live_slates = np.asarray(act(live_obs), dtype=np.int64)
        if live_slates.shape != (len(rows), k):
            raise ValueError(f"{type(agent).__name__}.act returned slates of shape {live_slates.shape}, "
                             f"expected ({len(rows)}, {k})")
        slates = filler.copy()
        slates[rows] = live_slates
        next_obs, reward, terminated, truncated, info = envs.step(slates)

        features = np.take_along_axis(live_obs["candidates"], live_slates[..., None], axis=1)
        sums["return"][rows] += reward[rows]
        sums["clicks"][rows] += info["click"][rows]
        sums["conversions"][rows] += info["conversion"][rows]
        sums["revenue"][rows] += info["revenue"][rows]
        sums["session_length"][rows] += 1
        sums["diversity"][rows] += slate_diversity(features[..., :n_topics])
        if has_popularity:
            popularity = np.maximum(features[..., n_topics + 2], 1e-6)
            sums["novelty"][rows] -= np.log2(popularity).mean(axis=1)
        if catalog_size is not None:
            shown.append(item_keys(features, n_topics).ravel())
            clicked.append(info["item"][rows][info["item"][rows] >= 0])
        if observe is not None:
            observe(Transition(live_obs, live_slates, reward[rows],
                               {key: v[rows] for key, v in next_obs.items()}, terminated[rows],
                               truncated[rows], {key: np.asarray(v)[rows] for key, v in info.items()
                                                 if not key.startswith("_") and key != "final_obs"}))
        user_steps += len(rows)
        churned[rows] |= terminated[rows]
        alive[rows] &= ~(terminated[rows] | truncated[rows])
        obs = next_obs  # NEXT_STEP autoreset: slots that ended restart next step and are ignored
        if not alive.any():
            break

    steps = np.maximum(sums["session_length"], 1)
    per_user = {
        "return": sums["return"], "clicks": sums["clicks"], "conversions": sums["conversions"],
        "revenue": sums["revenue"], "ctr": sums["clicks"] / steps,
        "conversion_rate": np.where(sums["clicks"] > 0,
                                    sums["conversions"] / np.maximum(sums["clicks"], 1), np.nan),
        "session_length": sums["session_length"], "churned": churned.astype(float),
        "diversity": sums["diversity"] / steps,
        "novelty": sums["novelty"] / steps if has_popularity else np.full(n_users, np.nan)}
    coverage = click_coverage = float("nan")
    if catalog_size:
        coverage = len(np.unique(np.concatenate(shown))) / catalog_size
        click_coverage = len(np.unique(np.concatenate(clicked))) / catalog_size
    return EvalResult(per_user=per_user, coverage=coverage, click_coverage=click_coverage,
                      seconds=time.perf_counter() - start, user_steps=user_steps)


def slate_diversity(topics: np.ndarray) -> np.ndarray:
    """Mean pairwise ``1 - cosine`` of the slate's topic vectors (B, k, T) -> (B,)."""
    k = topics.shape[1]
    if k < 2:
        return np.zeros(topics.shape[0])
    norm = topics / np.maximum(np.linalg.norm(topics, axis=2, keepdims=True), 1e-12)
    summed = norm.sum(axis=1)  # sum_ij cos_ij = |sum_i n_i|^2
    pair_sum = (summed * summed).sum(axis=1) - (norm * norm).sum(axis=(1, 2))
    return 1.0 - pair_sum / (k * (k - 1))


def evaluate_agent(name: str, env: str = "default", n_users: int = 1000, seeds: Sequence[int] = (0,),
                   train_steps: int = 0, num_train_envs: int = 64, learn_online: bool = False,
                   agent_kwargs: dict[str, Any] | None = None,
                   train_seed_of: Callable[[int], int] = train_seed,
                   eval_seed_of: Callable[[int], int] = eval_seed,
                   **env_overrides: Any) -> list[EvalResult]:
    """Build agent ``name`` once per seed, train it (if it has ``learn`` and ``train_steps > 0``)
    on training users, and evaluate it on that seed's held-out users (see the module docstring).

    ``train_seed_of`` / ``eval_seed_of`` map a seed to its first training / evaluation user: the
    runner's scheme by default; tuning (``scripts/tune.py``) passes seeds of its own.
    ``extra`` of each result holds ``seed``, ``train_seconds`` and, for agents that report it,
    ``fit_seconds``."""
    if n_users > EVAL_SEED_STRIDE:
        raise ValueError(f"n_users must be <= {EVAL_SEED_STRIDE} so seeds' users do not overlap")
    params = make_eval_env(env, 1, **env_overrides).params
    results = []
    for s in seeds:
        agent = registry.make(name, params=params, seed=s, **(agent_kwargs or {}))
        trained = 0.0
        if train_steps > 0 and callable(getattr(agent, "learn", None)):
            train_env = make_train_env(agent, params, num_train_envs, train_seed_of(s))
            start = time.perf_counter()
            agent.learn(train_env, train_steps)
            trained = time.perf_counter() - start
        result = evaluate(agent, params, n_users, seed=eval_seed_of(s), learn=learn_online)
        result.extra.update(seed=s, train_seconds=trained)
        if hasattr(agent, "fit_seconds"):
            result.extra["fit_seconds"] = agent.fit_seconds
        results.append(result)
    return results


def summarize_seeds(results: Sequence[EvalResult], n_resamples: int = 1000, seed_ci: str = "t"
                    ) -> dict[str, dict[str, float]]:
    """Per metric: ``mean`` over all users, ``users_low/high`` (bootstrap across the pooled
    users) and ``seeds_low/high`` (across per-seed cohort means; ``seed_ci`` "t" or "bootstrap")."""
    if seed_ci not in ("t", "bootstrap"):
        raise ValueError(f"seed_ci must be 't' or 'bootstrap', got {seed_ci!r}")
    per_seed = [r.means() for r in results]
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        seed_means = np.array([m[metric] for m in per_seed])
        if metric in ("coverage", "click_coverage"):  # cohort-level: no CI across users
            mean, users = float(np.mean(seed_means)), (float("nan"), float("nan"))
        else:
            if metric in RATIOS:
                num, den = (np.concatenate([r.per_user[c] for r in results]) for c in RATIOS[metric])
                mean, *users = bootstrap_ratio(num, den, n_resamples)
            else:
                column = "churned" if metric == "churn_rate" else metric
                mean, *users = bootstrap_mean(np.concatenate([r.per_user[column] for r in results]),
                                              n_resamples)
        finite = seed_means[np.isfinite(seed_means)]
        if len(finite) < 2:
            seeds = (float("nan"), float("nan"))
        elif seed_ci == "t":
            seeds = t_interval(finite)[1:]
        else:
            seeds = bca_interval(finite, n_resamples)
        out[metric] = {"mean": float(mean), "users_low": users[0], "users_high": users[1],
                       "seeds_low": seeds[0], "seeds_high": seeds[1]}
    return out


def format_table(rows: dict[str, dict[str, dict[str, float]]], metrics: Sequence[str] = METRICS) -> str:
    """Text table, one column per agent and two lines per metric: ``mean [CI across users]``
    and ``(CI across seeds)``."""
    agents = list(rows)
    width = max(26, *(len(a) + 2 for a in agents))
    lines = [f"{'metric':<16}" + "".join(f"{a:>{width}}" for a in agents)]
    for metric in metrics:
        cells = [rows[a][metric] for a in agents]
        lines.append(f"{metric:<16}" + "".join(
            f"{_num(c['mean']) + ' [' + _num(c['users_low']) + ',' + _num(c['users_high']) + ']':>{width}}"
            for c in cells))
        lines.append(f"{'':<16}" + "".join(
            f"{'(' + _num(c['seeds_low']) + ',' + _num(c['seeds_high']) + ')':>{width}}" for c in cells))
    return "\n".join(lines)


def _num(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    """``recsim evaluate --help`` (also ``python -m recsim_gym.experiments.evaluate``)."""
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="recsim evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", "--preset", dest="env", default="default", choices=all_preset_names(),
                        help="preset to evaluate on (default: default)")
    parser.add_argument("--agents", nargs="+", default=["all"],
                        help=f"agent names or package.module:ClassName; 'all' = {' '.join(REFERENCE_AGENTS)}")
    parser.add_argument("--users", type=int, default=2000, help="held-out users per seed (default: 2000)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument("--train-steps", type=int, default=20_000,
                        help="user-steps of learn() for every agent that learns (default: 20000)")
    parser.add_argument("--learn-online", action="store_true",
                        help="agents also observe() while being evaluated")
    parser.add_argument("--seed-ci", choices=("t", "bootstrap"), default="t",
                        help="CI across seeds: Student-t (default) or BCa bootstrap")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seeds < 1 or args.train_steps < 0:
        parser.error("--users and --seeds must be >= 1 and --train-steps >= 0")
    names = [n for a in args.agents for n in (REFERENCE_AGENTS if a == "all" else [a])]
    for name in names:
        registry.resolve(name)  # fail fast on a wrong name (the error lists the known ones)
    make_simulator(args.env)  # validate the world before anything runs
    rows: dict[str, dict[str, dict[str, float]]] = {}
    start = time.perf_counter()
    with tqdm(total=len(names) * args.seeds, desc="evaluating", unit="run") as progress:
        for name in names:
            results = []
            for s in range(args.seeds):
                progress.set_postfix_str(f"{name} seed {s}")
                results += evaluate_agent(name, args.env, args.users, [s], args.train_steps,
                                          learn_online=args.learn_online)
                progress.update()
            rows[name] = summarize_seeds(results, seed_ci=args.seed_ci)
    seed_label = "Student-t" if args.seed_ci == "t" else "BCa bootstrap"
    print(f"\n{args.env}: {args.seeds} seeds x {args.users:,} held-out users; learners trained "
          f"{args.train_steps:,} user-steps each{' and learning online' if args.learn_online else ''}"
          f"\nmean [95% bootstrap CI across users]\n     (95% {seed_label} CI across seeds)  "
          f"coverage: cohort-level, CI across seeds only")
    print(format_table(rows))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
