"""Train one (agent, seed) job with the config's budget and evaluate it on held-out users."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from recsim_gym.agents import registry
from recsim_gym.env import seeds
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import evaluate, make_train_env
from recsim_gym.experiments.tracking import JobTracker


def train_and_evaluate(job: Any, progress: Any = None) -> dict[str, Any]:
    """The record of one job: learning curve rows, final metrics, timing.

    ``progress`` (optional, a tqdm-like bar of ``train_steps``) is advanced as the agent trains,
    showing the newest evaluation return. Evaluation rows and the agent's training rows
    (``agent.last_training_row``) also go to the config's ``logging`` backends
    (:class:`~recsim_gym.experiments.tracking.JobTracker`).

    Agents with ``learn`` train for ``train_steps`` env steps on a (same-step autoreset) vector
    env of ``num_envs`` training users of the job's world (seeded by
    :func:`recsim_gym.env.seeds.train_seed`, or the tuning users in a tuning suite), and are
    evaluated after every ``eval.every_steps`` on the same ``eval.users`` held-out users;
    agents without ``learn`` are evaluated once. The final evaluation uses ``eval.final_users``
    held-out users.
    """
    tracker = JobTracker(job.config.logging, getattr(job, "run_dir", None), job.key,
                         job.config.name, job.spec)
    try:
        return _train_and_evaluate(job, progress, tracker)
    finally:
        tracker.close()  # also when training fails: no writer thread is left behind


def _train_and_evaluate(job: Any, progress: Any, tracker: JobTracker) -> dict[str, Any]:
    cfg = job.config
    preset, overrides = job.env.preset, job.env.overrides
    sim = make_simulator(preset, **overrides)
    np.random.seed(job.seed)  # for agents that use numpy's global RNG
    _seed_torch(job.seed)
    agent = registry.make(job.agent.name, params=sim.params, seed=job.seed, **job.agent.params)
    tuning = cfg.tuning  # a tuning suite: tuning users only (seeds.py)
    eval_seed = seeds.tune_eval_seed(job.seed) if tuning else seeds.eval_seed(job.seed)
    train_seed = seeds.tune_train_seed(job.seed) if tuning else seeds.train_seed(job.seed)
    env_spec = (preset, overrides)

    def evaluate_now(steps: int, users: int) -> dict[str, Any]:
        result = evaluate(agent, env_spec[0], users, seed=eval_seed, **env_spec[1])
        row = {"env_steps": steps, **result.means()}
        tracker.evaluation(row)
        if progress is not None:
            progress.set_postfix_str(f"eval return {row['return']:.1f}")
        return row

    curve: list[dict[str, Any]] = []
    trained = callable(getattr(agent, "learn", None)) and cfg.train_steps > 0
    train_seconds = 0.0
    if trained:
        env = make_train_env(agent, preset, cfg.num_envs, train_seed, **overrides)
        every = cfg.eval.every_steps
        next_eval = every  # curves start at the first scheduled evaluation (some agents build
        # their model inside learn and cannot act before it)
        eval_seconds = 0.0

        def callback(_agent: Any, steps_done: int) -> bool:
            nonlocal next_eval, eval_seconds
            tracker.training(getattr(_agent, "last_training_row", None), steps_done)
            if progress is not None:
                progress.update(min(steps_done, cfg.train_steps) - progress.n)
            while every and next_eval < cfg.train_steps and steps_done >= next_eval:
                start = time.perf_counter()
                curve.append(evaluate_now(next_eval, cfg.eval.users))
                eval_seconds += time.perf_counter() - start
                next_eval += every
            return True

        start = time.perf_counter()
        agent.learn(env, cfg.train_steps, callback=callback)
        if progress is not None:
            progress.update(max(cfg.train_steps - progress.n, 0))
        train_seconds = time.perf_counter() - start - eval_seconds
    final = evaluate(agent, preset, cfg.eval.final_users, seed=eval_seed, **overrides)
    final_means = final.means()
    curve.append({"env_steps": cfg.train_steps if trained else 0, **final_means})
    tracker.evaluation(curve[-1])
    return {
        "curve": curve, "final": final_means, "trained": trained,
        "final_return_per_user": final.per_user["return"].round(4).tolist(),
        "train_seconds": train_seconds,
        "train_steps_per_s": cfg.train_steps / train_seconds if trained and train_seconds else None,
    }


def _seed_torch(seed: int) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(seed)
