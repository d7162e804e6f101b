"""Run an experiment grid: every (agent, seed) pair, the same training budget, held-out users.

Layout of a run directory::

    manifest.json        config, package versions, git commit, seeds (written first)
    jobs/<label>__seed<s>.json   one file per finished (agent, seed) pair, written atomically
    evaluations.csv      every evaluation row (agent, seed, env_steps, metrics...)
    summary.json         final metrics per agent: mean and 95% CI over seeds
    report.md + *.png    written by ``recsim plot`` (and at the end of ``recsim run``)

A job's file appears only when the job is complete (temporary file + ``os.replace``), so a run
killed at any point - even ``kill -9`` - resumes with ``--resume``: finished pairs are kept,
the rest re-run from scratch, and the CSV/summary are rebuilt from the job files (no lost or
duplicated rows).

Seeds: for config seed ``s`` the agent is seeded with ``s``, training users are the vector-env
slots seeded from ``TRAIN_SEED_BASE * (s + 1)``, and evaluation users come from
``EVAL_SEED_BASE + s * EVAL_SEED_STRIDE`` onward: training and evaluation users never overlap.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env.seeds import EVAL_SEED_BASE, EVAL_SEED_STRIDE, TRAIN_SEED_BASE
from recsim_gym.experiments.config import AgentConfig, ExperimentConfig, file_safe


class ResumeError(ValueError):
    """A run directory's finished jobs do not match the config being resumed."""


@dataclass(frozen=True)
class Job:
    """One (agent, seed) pair of an experiment."""

    config: ExperimentConfig
    agent: AgentConfig
    seed: int

    @property
    def key(self) -> str:
        """File-name-safe identifier of the job."""
        return f"{file_safe(self.agent.display)}__seed{self.seed}"

    @property
    def spec(self) -> dict[str, Any]:
        """What determines the job's result: world, agent and its parameters, seed, budget,
        evaluation schedule. Stored in the job's record; ``--resume`` refuses a changed one."""
        return json.loads(json.dumps({
            "env": asdict(self.config.env), "agent": asdict(self.agent), "seed": self.seed,
            "train_steps": self.config.train_steps, "num_envs": self.config.num_envs,
            "eval": asdict(self.config.eval)}, default=str))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the code that runs (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def run_job(job: Job) -> dict[str, Any]:
    """Train (if the agent learns) and evaluate one (agent, seed) pair; returns its record."""
    import torch

    from recsim_gym.experiments.training import train_and_evaluate

    torch.set_num_threads(1)
    start = time.perf_counter()
    record = train_and_evaluate(job)
    record.update({"agent": job.agent.display, "agent_name": job.agent.name, "seed": job.seed,
                   "spec": job.spec, "wall_seconds": time.perf_counter() - start,
                   "git_commit": git_commit()})  # a resumed run may mix commits: the report says so
    return record


def manifest(config: ExperimentConfig) -> dict[str, Any]:
    """Everything needed to reproduce a run: config, versions, git commit, seeds."""
    from importlib import metadata

    versions = {}
    for dist in ("recsim", "numpy", "numba", "gymnasium", "stable-baselines3", "torch", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"config": config.to_dict(), "versions": versions, "python": platform.python_version(),
            "git_commit": git_commit(), "seeds": list(config.seeds),
            "seed_scheme": {"train_seed_base": TRAIN_SEED_BASE, "eval_seed_base": EVAL_SEED_BASE,
                            "eval_seed_stride": EVAL_SEED_STRIDE},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_experiment(config: ExperimentConfig, out_dir: Path | None = None, resume: bool = False,
                   backend: str = "local", workers: int = 1, ray_address: str | None = None,
                   progress: bool = True) -> Path:
    """Run every (agent, seed) job of ``config`` not already finished; returns the run dir."""
    out = Path(out_dir or config.output_dir)
    jobs_dir = out / "jobs"
    if out.exists() and any(jobs_dir.glob("*.json")) and not resume:
        raise FileExistsError(f"{out} already holds results; pass --resume to continue that run "
                              "or choose another output directory")
    jobs = [Job(config, agent, seed) for agent in config.agents for seed in config.seeds]
    _check_resumable(jobs, jobs_dir)
    write_atomic(out / "manifest.json", json.dumps(manifest(config), indent=2))
    todo = [job for job in jobs if not (jobs_dir / f"{job.key}.json").exists()]
    if resume and len(todo) < len(jobs):
        print(f"resuming {out}: {len(jobs) - len(todo)} of {len(jobs)} jobs already done",
              file=sys.stderr)

    def finished(job: Job, record: dict[str, Any]) -> None:
        write_atomic(jobs_dir / f"{job.key}.json", json.dumps(record))

    _dispatch(todo, finished, backend, workers, ray_address, progress)
    collect(out)
    return out


def _check_resumable(jobs: list[Job], jobs_dir: Path) -> None:
    """Refuse to resume when a finished job was run with a different spec than the config now
    asks for (its results would be mixed with the new ones under the same label)."""
    for job in jobs:
        path = jobs_dir / f"{job.key}.json"
        if not path.exists():
            continue
        stored, spec = json.loads(path.read_text()).get("spec"), job.spec
        if stored is not None and stored != spec:
            changed = sorted(key for key in spec if stored.get(key) != spec[key])
            raise ResumeError(
                f"cannot resume: finished job {job.key} was run with different "
                f"{', '.join(changed)} than the config now gives (stored {[stored.get(k) for k in changed]}, "
                f"config {[spec[k] for k in changed]}); use a new output directory, or delete "
                f"{path} to re-run that job")


def _dispatch(todo: list[Job], finished: Callable[[Job, dict], None], backend: str, workers: int,
              ray_address: str | None, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="jobs", unit="job", disable=not progress, file=sys.stderr)
    if backend == "ray":
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("--backend ray needs Ray: pip install 'recsim[ray]'") from err
        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(run_job)
        pending = {remote.remote(job): job for job in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            finished(job, ray.get(done[0]))
            bar.update()
    elif backend == "local" and workers > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, job): job for job in todo}
            for future in as_completed(futures):
                finished(futures[future], future.result())
                bar.update()
    elif backend == "local":
        for job in todo:
            bar.set_postfix_str(job.key)
            finished(job, run_job(job))
            bar.update()
    else:
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    bar.close()


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every finished job record of a run, in a stable order."""
    return [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.json"))]


def collect(out: Path) -> dict[str, Any]:
    """Rebuild ``evaluations.csv`` and ``summary.json`` from the job files (atomically)."""
    from recsim_gym.experiments.statistics import summarize

    records = load_records(out)
    rows = [{"agent": r["agent"], "seed": r["seed"], **row} for r in records for row in r["curve"]]
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(out / "evaluations.csv", buffer.getvalue())
    summary = summarize(records)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=_json_default))
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
