"""Off-policy evaluation checked against the simulator's ground truth (``recsim ope``).

Teams that cannot A/B test every policy estimate its value from logs. The simulator knows
the truth: it can run the target policy on the very users (and in the very states) that
produced the log. :func:`run_ope` does, for repetition ``r = 0 .. reps - 1``:

1. fit the reward model of DM and DR (the logistic-regression click model,
   :mod:`recsim_gym.agents.click_models`) on a separate log of ``model_rows`` interactions of
   the same logging policy (users of their own, :func:`recsim_gym.env.seeds.ope_log_seed`);
2. log whole user lifetimes with the logging policy (:mod:`recsim_gym.env.logging_policies`)
   until ``max(sizes)`` interactions; at every logged state it asks each target for its
   slate and records what the estimators need (:class:`~recsim_gym.experiments.ope.LoggedTerms`)
   and the exact expected click, conversion and reward of the target's slate in that state
   under the true model (:func:`recsim_gym.agents.reference.slate_outcomes`): the one-step truth;
3. run each target on the same users from their first step (same seeds) for the lifetime
   truth (the sum of rewards over the whole lifetime and over the first ``horizon`` steps);
4. estimate with every estimator of :mod:`recsim_gym.experiments.ope` on the log's first
   users up to each size (nested logs), against the truth of those same users and states.

Targets are trained first (``target_steps`` env steps with their own ``learn``, on the
harness's training users) and then frozen; ``random`` is the uniformly random policy, whose
probabilities are known (one-step truth and DM average 4 sampled slates per state). Errors are
reported over the ``reps`` independent logs: bias, standard deviation and RMSE, each relative
to the truth too. ``recsim ope --help`` lists the options; the report is ``report.md`` with
one plot per reward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsim_gym.agents import registry
from recsim_gym.agents.click_models import ClickModelAgent
from recsim_gym.agents.reference import slate_outcomes
from recsim_gym.env import logs as recsim_logs
from recsim_gym.env import rng as recsim_rng
from recsim_gym.env import seeds
from recsim_gym.env.fields import Config, option
from recsim_gym.env.logging_policies import LOGGING_POLICIES
from recsim_gym.env.simulator import make_simulator
from recsim_gym.env.spaces import random_slates
from recsim_gym.experiments.evaluate import make_train_env
from recsim_gym.experiments.ope import ONE_STEP, SEQUENTIAL, LoggedTerms, one_step, pi_weights, sequential

#: The one-step rewards estimated (per interaction), and the lifetime ones (per user).
ONE_STEP_REWARDS = ("click", "conversion")
LIFETIME_REWARDS = ("return", "return_h")
#: Sampled slates per state for the random target's truth and DM.
RANDOM_SAMPLES = 4
_OBS_KEYS = ("candidates", "history", "user")


@dataclass(frozen=True)
class OPEConfig(Config):
    """What ``recsim ope`` evaluates (every field is a command-line option)."""

    preset: str = option("default", "World preset of the default family.")
    env_overrides: dict[str, Any] = option(doc="Params overrides of the world (--set FIELD=VALUE).",
                                           factory=dict)
    logging: str = option("epsilon_slate", "Logging policy.", choices=tuple(LOGGING_POLICIES))
    epsilon: float = option(0.3, "Exploration share of epsilon_slate logging.", 0.0, 1.0, low_open=True)
    targets: tuple[str, ...] = option(("random", "popularity", "linucb", "logreg"),
                                      "Target policies (registry names).")
    sizes: tuple[int, ...] = option((1_000, 10_000, 100_000, 1_000_000),
                                    "Log sizes in interactions (nested: the first users of each log).")
    reps: int = option(5, "Independent logs (repetitions).", 2, 1000)
    target_steps: int = option(20_000, "Training env steps of each target before it is frozen.", 0)
    model_rows: int = option(50_000, "Interactions of the separate log the reward model is fit on.", 1_000)
    horizon: int = option(10, "The shorter lifetime horizon (steps from a user's start).", 1)
    cohort: int = option(4096, "Users logged at once.", 1)
    seed: int = option(0, "Seed of the targets, the logging policy and the reward model.", 0)

    def check(self) -> None:
        """Cross-field rules: known targets, positive increasing sizes."""
        known = registry.list_agents()
        for i, name in enumerate(self.targets):
            self.require(name in known, f"targets[{i}]", f"must be a registered agent, got {name!r}")
        self.require(len(self.sizes) > 0 and all(isinstance(s, int) and s >= 10 for s in self.sizes),
                     "sizes", f"must be integers >= 10, got {self.sizes}")


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

def train_targets(config: OPEConfig, params: Any) -> dict[str, Any]:
    """Every target, trained for ``target_steps`` on the harness's training users and frozen
    (``None`` for the uniformly random target)."""
    import torch

    torch.set_num_threads(1)
    agents: dict[str, Any] = {}
    for name in config.targets:
        if name == "random":
            agents[name] = None
            continue
        torch.manual_seed(config.seed)
        agent = registry.make(name, params=params, seed=config.seed)
        if callable(getattr(agent, "learn", None)) and config.target_steps > 0:
            agent.learn(make_train_env(agent, params, 64, seeds.train_seed(config.seed)),
                        config.target_steps)
        agents[name] = agent
    return agents


def _visible(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What an agent sees: the observation without the latent entries."""
    return {key: obs[key] for key in _OBS_KEYS}


# --------------------------------------------------------------------------------------------
# One repetition: a log, the targets scored on its states, the truth
# --------------------------------------------------------------------------------------------

@dataclass
class _Columns:
    """Growing per-row arrays of one repetition."""

    parts: dict[str, list[np.ndarray]]

    def add(self, **columns: np.ndarray) -> None:
        for key, value in columns.items():
            self.parts.setdefault(key, []).append(np.asarray(value))

    def array(self, key: str) -> np.ndarray:
        return np.concatenate(self.parts[key])


def _reward_model(config: OPEConfig, sim: Any, policy: Any, repetition: int) -> ClickModelAgent:
    """The DM/DR reward model: logreg fit on a separate log of the logging policy."""
    logs = recsim_logs.generate_logs(n_steps=config.model_rows, batch_size=min(config.cohort, 2000),
                                     sim=sim, first_user=seeds.ope_log_seed(repetition, model=True),
                                     policy=policy, seed=config.seed + 10_000 + repetition)
    return ClickModelAgent("logreg", params=sim.params, seed=config.seed).fit(logs)


def _model_outcomes(model: ClickModelAgent, logits: tuple[Any, Any], slates: np.ndarray,
                    params: Any) -> dict[str, np.ndarray]:
    """The reward model's expected click, conversion and reward of ``slates``, from its
    per-candidate ``logits`` (:meth:`ClickModelAgent.candidate_logits`, computed once a step)."""
    index = torch.from_numpy(slates)
    shown = tuple(logit.gather(1, index) for logit in logits)
    p_click, p_conv = model.proba_from_logits(*shown, at_logged_positions=True)
    return {"click": p_click.sum(1), "conversion": (p_click * p_conv).sum(1),
            "reward": (p_click * (params.click_weight + params.conversion_weight * p_conv)).sum(1)}


def _weights(obs: dict[str, np.ndarray], logged: np.ndarray, target: np.ndarray | None,
             p0: dict[str, np.ndarray], gram_pinv: np.ndarray | None = None,
             labels: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """Target over logging probabilities of the logged slate, its positions and prefixes, and
    the pseudo-inverse weight (None without the logging policy's ``gram_pinv``)."""
    m = obs["candidates"].shape[1]
    k = logged.shape[1]
    if target is None:  # the uniformly random target
        falling = np.cumprod(m - np.arange(k, dtype=np.float64))
        prefix = np.broadcast_to(1.0 / falling, logged.shape)
        marginal = np.full(logged.shape, 1.0 / m)
    else:
        same = logged == target
        prefix = np.cumprod(same, axis=1).astype(np.float64)
        marginal = same.astype(np.float64)
    return {"slate_weight": prefix[:, -1] / p0["slate"], "marginal_weight": marginal / p0["marginal"],
            "prefix_weight": prefix / p0["prefix"],
            "pi_weight": None if gram_pinv is None else pi_weights(gram_pinv, labels, logged, target)}


def log_repetition(config: OPEConfig, sim: Any, policy: Any, targets: dict[str, Any],
                   repetition: int) -> dict[str, Any]:
    """Log whole lifetimes with ``policy`` until ``max(sizes)`` interactions and score every
    target on each logged state; returns the per-row columns and the users."""
    params = sim.params
    model = _reward_model(config, sim, policy, repetition)
    gram_pinv = np.linalg.pinv(policy.gram(params.num_candidates))
    gen = np.random.default_rng([config.seed, repetition])
    rows = _Columns({})
    first_user = seeds.ope_log_seed(repetition)
    users_logged = 0
    total = 0
    while total < max(config.sizes):
        cohort = np.arange(first_user + users_logged, first_user + users_logged + config.cohort)
        users_logged += config.cohort
        state = sim.reset(recsim_rng.seed_to_key(cohort))
        live = np.arange(len(cohort))
        step = 0
        while live.size:
            sub = state.take(live)
            obs = sim.observe(sub)
            seen = _visible(obs)
            logged, _ = policy(seen, gen)
            p0 = {"slate": policy.slate_probability(seen, logged), "marginal": policy.marginals(seen, logged),
                  "prefix": policy.prefix_probability(seen, logged)}
            labels = policy.canonical_order(seen)
            sub_next, result = sim.step(sub, logged)
            position = result.position
            per_position = np.zeros(logged.shape)
            clicked = position >= 0
            row = {"user": cohort[live], "step": np.full(live.size, step),
                   "click": result.click.astype(float), "conversion": result.conversion.astype(float),
                   "reward": result.reward.astype(float), "clicked_position": position}
            logits = model.candidate_logits(seen["candidates"], seen["history"], seen["user"])
            model_logged = _model_outcomes(model, logits, logged, params)
            for reward in ONE_STEP_REWARDS + ("reward",):
                row[f"model_logged/{reward}"] = model_logged[reward]
            for name, agent in targets.items():
                target = None if agent is None else np.asarray(agent.act(seen), dtype=np.int64)
                for key, value in _weights(seen, logged, target, p0, gram_pinv, labels).items():
                    row[f"{name}/{key}"] = value
                if target is None:
                    samples = [random_slates(gen, live.size, params.num_candidates, params.slate_size)
                               for _ in range(RANDOM_SAMPLES)]
                else:
                    samples = [target]
                truth = [slate_outcomes(obs, params, s) for s in samples]
                guess = [_model_outcomes(model, logits, s, params) for s in samples]
                for reward in ONE_STEP_REWARDS + ("reward",):
                    row[f"{name}/truth/{reward}"] = np.mean([t[reward] for t in truth], axis=0)
                    row[f"{name}/model_target/{reward}"] = np.mean([g[reward] for g in guess], axis=0)
            per_position[clicked, position[clicked]] = 1.0
            row["clicked_at"] = per_position
            rows.add(**row)
            total += live.size
            state.assign(live, sub_next)
            ended = result.terminated | result.truncated
            live = live[~ended]
            step += 1
    columns = {key: rows.array(key) for key in rows.parts}
    order = np.lexsort((columns["step"], columns["user"]))
    return {"columns": {key: value[order] for key, value in columns.items()},
            "first_user": first_user, "users": users_logged}


def lifetime_truth(agent: Any, params: Any, first_user: int, users: int, horizon: int,
                   gen: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-user lifetime return and return over the first ``horizon`` steps of ``agent`` (None:
    uniformly random slates) run on users ``first_user ..`` from their first step."""
    sim = make_simulator(params=params.replace(observe_latent=False))
    state = sim.reset(recsim_rng.seed_to_key(np.arange(first_user, first_user + users)))
    returns, short = np.zeros(users), np.zeros(users)
    live = np.arange(users)
    step = 0
    while live.size:
        sub = state.take(live)
        obs = sim.observe(sub)
        slates = (random_slates(gen, live.size, params.num_candidates, params.slate_size)
                  if agent is None else np.asarray(agent.act(obs), dtype=np.int64))
        sub_next, result = sim.step(sub, slates)
        returns[live] += result.reward
        if step < horizon:
            short[live] += result.reward
        state.assign(live, sub_next)
        live = live[~(result.terminated | result.truncated)]
        step += 1
    return {"return": returns, "return_h": short}


def _terms(columns: dict[str, np.ndarray], name: str, reward: str, rows: np.ndarray) -> LoggedTerms:
    """The estimators' inputs for target ``name`` and ``reward`` on ``rows``."""
    value = columns[reward if reward in ("click", "conversion") else "reward"][rows]
    key = reward if reward in ("click", "conversion") else "reward"
    return LoggedTerms(
        user=columns["user"][rows], step=columns["step"][rows], reward=value,
        position_reward=columns["clicked_at"][rows] * value[:, None],
        slate_weight=columns[f"{name}/slate_weight"][rows],
        marginal_weight=columns[f"{name}/marginal_weight"][rows],
        prefix_weight=columns[f"{name}/prefix_weight"][rows], pi_weight=columns[f"{name}/pi_weight"][rows],
        model_logged=columns[f"model_logged/{key}"][rows],
        model_target=columns[f"{name}/model_target/{key}"][rows])


def estimate_repetition(config: OPEConfig, log: dict[str, Any], truths: dict[str, dict[str, np.ndarray]]
                        ) -> list[dict[str, Any]]:
    """Every estimate of every target, reward and size on one repetition's log, with the truth."""
    columns = log["columns"]
    user_rows = np.cumsum(np.bincount(columns["user"] - log["first_user"], minlength=log["users"]))
    out = []
    for size in config.sizes:
        users = int(np.searchsorted(user_rows, size) + 1)  # the first users whose rows reach size
        rows = np.flatnonzero(columns["user"] < log["first_user"] + users)
        for name in config.targets:
            for reward in ONE_STEP_REWARDS:
                truth = float(columns[f"{name}/truth/{reward}"][rows].mean())
                for estimator, est in one_step(_terms(columns, name, reward, rows)).items():
                    out.append({"target": name, "reward": reward, "size": size, "rows": int(rows.size),
                                "estimator": estimator, "value": est.value, "low": est.low,
                                "high": est.high, "truth": truth})
            for reward in LIFETIME_REWARDS:
                truth = float(truths[name][reward][:users].mean())
                horizon = config.horizon if reward == "return_h" else None
                for estimator, est in sequential(_terms(columns, name, "reward", rows), horizon).items():
                    out.append({"target": name, "reward": reward, "size": size, "rows": int(rows.size),
                                "estimator": estimator, "value": est.value, "low": est.low,
                                "high": est.high, "truth": truth})
    return out


#: Trained targets of this process, by config: every repetition evaluates the same frozen
#: targets (same seed), so a worker trains them once.
_TRAINED: dict[str, dict[str, Any]] = {}


def run_repetition(config: OPEConfig, repetition: int) -> list[dict[str, Any]]:
    """Train the targets (once per process), log, compute the truth and estimate: one
    repetition's rows."""
    sim = make_simulator(config.preset, observe_latent=True, **config.env_overrides)
    params = sim.params.replace(observe_latent=False)
    policy = _policy(config, params)
    key = json.dumps([config.preset, config.env_overrides, list(config.targets), config.target_steps,
                      config.seed], sort_keys=True)  # what the trained targets depend on
    if key not in _TRAINED:
        _TRAINED.clear()
        _TRAINED[key] = train_targets(config, params)
    targets = _TRAINED[key]
    log = log_repetition(config, sim, policy, targets, repetition)
    gen = np.random.default_rng([config.seed, repetition, 1])
    truths = {name: lifetime_truth(agent, params, log["first_user"], log["users"], config.horizon, gen)
              for name, agent in targets.items()}
    rows = estimate_repetition(config, log, truths)
    for row in rows:
        row["repetition"] = repetition
    return rows


def _policy(config: OPEConfig, params: Any) -> Any:
    cls = LOGGING_POLICIES[config.logging]
    return cls(params.slate_size, config.epsilon) if config.logging == "epsilon_slate" else cls(
        params.slate_size)


# --------------------------------------------------------------------------------------------
# A log from elsewhere: estimates without a truth
# --------------------------------------------------------------------------------------------

def estimate_log(logs: dict[str, np.ndarray], target: Any, meta: dict[str, Any] | None = None,
                 chunk: int = 20_000) -> dict[str, dict[str, Any]]:
    """Every estimator the log supports of ``target``'s value (an agent with ``act``, or None
    for the uniformly random policy), per reward: ``click``, ``conversion`` and ``reward`` per
    interaction, and ``return`` per user when the log holds whole lifetimes (every user from
    step 0 to the end, in order, which the meta says with ``whole_lifetimes: true``).

    The log needs the optional ``candidates`` column (the target chooses among them).
    IPS, SNIPS and RIPS use the logged ``propensity``; IIPS the ``marginal`` column, or a
    logging policy named in ``meta`` (``logging_policy``: ``uniform`` or ``epsilon_slate``
    with ``epsilon``) whose probabilities are then recomputed; PI that named policy; DM and DR
    a logistic-regression click model fit on the log itself. Estimators the log cannot support
    are listed under ``"missing"`` with the reason."""
    from recsim_gym.env.logs import validate_logs

    validate_logs(logs)
    if "candidates" not in logs:
        raise ValueError("the log has no 'candidates' column: a target policy needs every candidate "
                         "of each logged state (log with generate_logs(..., full_observations=True))")
    meta = meta or {}
    n, k = logs["slate"].shape
    slates = logs["slate"].astype(np.int64)
    prefix0 = np.cumprod(logs["propensity"].astype(np.float64), axis=1)
    policy = None
    name = meta.get("logging_policy")
    if name in LOGGING_POLICIES:
        cls = LOGGING_POLICIES[name]
        policy = cls(k, float(meta.get("epsilon", 0.3))) if name == "epsilon_slate" else cls(k)
    missing: dict[str, str] = {}
    columns: dict[str, list[np.ndarray]] = {}
    weights_ok = True
    model = _log_model(logs)
    params_like = _RewardWeights(meta)
    gram_pinv = None if policy is None else np.linalg.pinv(policy.gram(logs["candidates"].shape[1]))
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        obs = {"candidates": logs["candidates"][rows].astype(np.float32),
               "history": logs["history"][rows].astype(np.float32),
               "user": logs["user_features"][rows].astype(np.float32)}
        logged = slates[rows]
        p0 = {"slate": prefix0[rows, -1], "prefix": prefix0[rows]}
        if "marginal" in logs:
            p0["marginal"] = logs["marginal"][rows].astype(np.float64)
        elif policy is not None:
            p0["marginal"] = policy.marginals(obs, logged)
        else:
            p0["marginal"] = np.ones(logged.shape)
        labels = None
        if policy is not None:
            weights_ok &= bool(np.allclose(policy.prefix_probability(obs, logged), p0["prefix"], rtol=1e-4))
            labels = policy.canonical_order(obs)
        chosen = None if target is None else np.asarray(target.act(obs), dtype=np.int64)
        w = _weights(obs, logged, chosen, p0, gram_pinv, labels)
        logits = model.candidate_logits(obs["candidates"], obs["history"], obs["user"])
        guess_logged = _model_outcomes(model, logits, logged, params_like)
        samples = ([chosen] if chosen is not None else
                   [random_slates(np.random.default_rng([start, i]), len(logged), obs["candidates"].shape[1],
                                  k) for i in range(RANDOM_SAMPLES)])
        guesses = [_model_outcomes(model, logits, s, params_like) for s in samples]
        for key, value in w.items():
            if value is not None:
                columns.setdefault(key, []).append(value)
        for reward in ("click", "conversion", "reward"):
            columns.setdefault(f"model_logged/{reward}", []).append(guess_logged[reward])
            columns.setdefault(f"model_target/{reward}", []).append(np.mean([g[reward] for g in guesses], 0))
    merged = {key: np.concatenate(value) for key, value in columns.items()}
    if meta.get("propensities") == "unknown":
        for name in ("IPS", "SNIPS", "DR", "IIPS", "RIPS", "PI"):
            missing[name] = "the log's propensities are unknown (converted without a propensity column)"
    if "marginal" not in logs and policy is None:
        missing.setdefault("IIPS", "no 'marginal' column and no known logging policy in the meta")
    if (policy is None or not weights_ok) and "PI" not in missing:
        missing["PI"] = ("no known logging policy in the meta" if policy is None else
                         "the named logging policy does not give the logged propensities")
    clicked_at = np.zeros((n, k))
    hit = logs["position"] >= 0
    clicked_at[np.flatnonzero(hit), logs["position"][hit].astype(np.int64)] = 1.0
    out: dict[str, dict[str, Any]] = {}
    values = {"click": logs["click"].astype(float), "conversion": logs["conversion"].astype(float),
              "reward": logs["reward"].astype(float)}
    for reward, value in values.items():
        terms = LoggedTerms(user=logs["user"], step=logs["step"].astype(np.int64), reward=value,
                            position_reward=clicked_at * value[:, None], slate_weight=merged["slate_weight"],
                            marginal_weight=merged["marginal_weight"], prefix_weight=merged["prefix_weight"],
                            pi_weight=merged.get("pi_weight"), model_logged=merged[f"model_logged/{reward}"],
                            model_target=merged[f"model_target/{reward}"])
        estimates = one_step(terms)
        out[reward] = {name: est for name, est in estimates.items() if name not in missing}
        if reward == "reward" and meta.get("whole_lifetimes") and _whole_trajectories(logs):
            out["return"] = sequential(terms)
    if not (meta.get("whole_lifetimes") and _whole_trajectories(logs)):
        missing["return"] = ("a lifetime needs every user's whole trajectory from step 0 in order "
                             "and the meta's whole_lifetimes: true")
    out["missing"] = missing
    return out


class _RewardWeights:
    """The click and conversion weights of the reward (from the meta; the default world's)."""

    def __init__(self, meta: dict[str, Any]):
        self.click_weight = float(meta.get("click_weight", 1.0))
        self.conversion_weight = float(meta.get("conversion_weight", 2.0))


def _log_model(logs: dict[str, np.ndarray]) -> ClickModelAgent:
    """The DM/DR reward model of a log: logreg fit on the log itself."""
    return ClickModelAgent("logreg", params=None, seed=0).fit(
        {key: value for key, value in logs.items() if key not in ("candidates", "marginal")})


def _whole_trajectories(logs: dict[str, np.ndarray]) -> bool:
    """Every user's rows are steps 0, 1, 2, ... in order (then per-user sums are lifetimes)."""
    order = np.lexsort((logs["step"], logs["user"]))
    users, steps = logs["user"][order], logs["step"][order].astype(np.int64)
    first = np.r_[True, users[1:] != users[:-1]]
    expected = np.arange(len(users)) - np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    return bool(np.array_equal(steps, expected))


# --------------------------------------------------------------------------------------------
# All repetitions: errors, report
# --------------------------------------------------------------------------------------------

def summarize_errors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (target, reward, size, estimator) over repetitions: mean truth, bias, standard
    deviation and RMSE of the estimates (absolute and relative to the truth), and how often
    the 95% interval held the truth."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["reward"], row["size"], row["estimator"]), []).append(row)
    out = []
    for (target, reward, size, estimator), members in groups.items():
        values = np.array([r["value"] for r in members])
        truths = np.array([r["truth"] for r in members])
        errors = values - truths
        truth = float(truths.mean())
        scale = abs(truth) if abs(truth) > 0 else float("nan")
        finite = np.isfinite(values)
        covered = [r["low"] <= r["truth"] <= r["high"] for r in members if np.isfinite(r["low"])]
        out.append({
            "target": target, "reward": reward, "size": size, "estimator": estimator,
            "reps": len(members), "truth": truth,
            "bias": float(errors[finite].mean()) if finite.any() else float("nan"),
            "sd": float(values[finite].std(ddof=1)) if finite.sum() > 1 else float("nan"),
            "rmse": float(np.sqrt((errors[finite] ** 2).mean())) if finite.any() else float("nan"),
            "relative_rmse": (float(np.sqrt((errors[finite] ** 2).mean()) / scale) if finite.any()
                              else float("nan")),
            "relative_bias": float(errors[finite].mean() / scale) if finite.any() else float("nan"),
            "coverage": float(np.mean(covered)) if covered else float("nan"),
            "undefined": int((~finite).sum())})
    return out


def run_ope(config: OPEConfig, out: Path, workers: int = 1, progress: bool = True) -> Path:
    """Every repetition (in ``workers`` processes), the error summary, ``ope.json``, the plots
    and ``report.md`` in ``out``; returns the report's path."""
    from tqdm import tqdm

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=config.reps, desc="ope repetitions", unit="log", disable=not progress, file=sys.stderr)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for part in pool.map(run_repetition, [config] * config.reps, range(config.reps)):
                rows += part
                bar.update()
    else:
        for repetition in range(config.reps):
            rows += run_repetition(config, repetition)
            bar.update()
    bar.close()
    summary = summarize_errors(rows)
    seconds = time.perf_counter() - start
    from recsim_gym.experiments.runner import git_commit, write_atomic

    write_atomic(out / "ope.json", json.dumps({
        "config": {**asdict(config), "targets": list(config.targets), "sizes": list(config.sizes)},
        "git_commit": git_commit(), "seconds": seconds, "workers": workers, "estimates": rows,
        "errors": summary}, indent=1))
    from recsim_gym.experiments.ope_report import write_report

    return write_report(out)


def main(argv: list[str] | None = None) -> int:
    """``recsim ope --help``."""
    defaults = OPEConfig()
    parser = argparse.ArgumentParser(prog="recsim ope", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=defaults.preset)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a Params override of the world (repeatable), e.g. --set num_candidates=10")
    parser.add_argument("--logging", default=defaults.logging, choices=tuple(LOGGING_POLICIES),
                        help=f"logging policy (default {defaults.logging})")
    parser.add_argument("--epsilon", type=float, default=defaults.epsilon,
                        help=f"exploration of epsilon_slate logging (default {defaults.epsilon})")
    parser.add_argument("--targets", nargs="+", default=list(defaults.targets),
                        help="target policies (default: %(default)s)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(defaults.sizes),
                        help="log sizes in interactions (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=defaults.reps, help="independent logs (default 5)")
    parser.add_argument("--target-steps", type=int, default=defaults.target_steps,
                        help="training env steps of each target (default 20000)")
    parser.add_argument("--model-rows", type=int, default=defaults.model_rows,
                        help="interactions of the reward model's own log (default 50000)")
    parser.add_argument("--horizon", type=int, default=defaults.horizon,
                        help="the shorter lifetime horizon in steps (default 10)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=1, help="processes (repetitions in parallel)")
    parser.add_argument("--log", type=Path, default=None,
                        help="estimate the targets' values from this log (recsim's .npz format with "
                             "the optional 'candidates' column) instead of checking the estimators")
    parser.add_argument("--out", type=Path, default=Path("runs/ope"), help="output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        overrides = {}
        for item in args.set:
            field, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
            try:  # numbers and booleans as JSON, anything else (mnl, cascade) as text
                overrides[field] = json.loads(value)
            except json.JSONDecodeError:
                overrides[field] = value
        config = OPEConfig(preset=args.preset, env_overrides=overrides, logging=args.logging,
                           epsilon=args.epsilon,
                           targets=tuple(args.targets), sizes=tuple(sorted(set(args.sizes))),
                           reps=args.reps, target_steps=args.target_steps, model_rows=args.model_rows,
                           horizon=args.horizon, seed=args.seed)
        make_simulator(config.preset, **config.env_overrides)
    except ValueError as err:
        parser.error(str(err))
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.log is not None:
        return _estimate_file(config, args.log)
    report = run_ope(config, args.out, workers=args.workers, progress=not args.quiet)
    print(f"wrote {report} (estimates and errors: {args.out / 'ope.json'})")
    return 0


def _estimate_file(config: OPEConfig, path: Path) -> int:
    """``recsim ope --log FILE``: every estimate the log supports, per target and reward."""
    from recsim_gym.env.logs import LogFormatError, load_logs

    try:
        logs, meta = load_logs(path)
    except (FileNotFoundError, LogFormatError) as err:
        print(f"recsim ope: {err}", file=sys.stderr)
        return 2
    params = make_simulator(config.preset, **config.env_overrides).params
    targets = train_targets(config, params)
    for name, agent in targets.items():
        try:
            result = estimate_log(logs, agent, meta)
        except ValueError as err:
            print(f"recsim ope: {path}: {err}", file=sys.stderr)
            return 2
        print(f"\ntarget {name}: estimates [95% CI] from {len(logs['user']):,} logged interactions")
        for reward, estimates in result.items():
            if reward == "missing":
                continue
            cells = "  ".join(f"{est_name} {e.value:.4g} [{e.low:.4g}, {e.high:.4g}]"
                              for est_name, e in estimates.items())
            print(f"  {reward:<10} {cells}")
        for what, why in result["missing"].items():
            print(f"  (no {what}: {why})")
    return 0


__all__ = ["LIFETIME_REWARDS", "ONE_STEP", "ONE_STEP_REWARDS", "OPEConfig", "SEQUENTIAL", "estimate_log",
           "main", "run_ope", "summarize_errors"]
