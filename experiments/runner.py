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
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env.seeds import EVAL_SEED_BASE, EVAL_SEED_STRIDE, TRAIN_SEED_BASE
from recsim_gym.experiments.config import (
    AgentConfig,
    EnvConfig,
    ExperimentConfig,
    World,
    config_worlds,
    file_safe,
)


class ResumeError(ValueError):
    """A run directory's finished jobs do not match the config being resumed."""


class JobFileError(ValueError):
    """A job file that is not a complete, untouched job record; the message names the file."""


#: Format tag of a job record; with ``sha256`` (of the rest of the record) it is written last.
JOB_FORMAT = "recsim-job/1"
#: Keys every job record holds, with their JSON types.
RECORD_KEYS: dict[str, type | tuple[type, ...]] = {
    "agent": str, "agent_name": str, "seed": int, "spec": dict, "curve": list, "final": dict,
    "trained": bool, "final_return_per_user": list, "wall_seconds": (int, float)}
_RERUN = "remove it and run again with --resume to re-run just that job"


def job_key(label: str, seed: int, world: str | None = None) -> str:
    """File-name-safe identifier of the job of agent ``label`` and ``seed`` (its job file is
    ``jobs/<key>.json``); in a suite, of the world it ran in too."""
    return f"{file_safe(label)}__{file_safe(world) + '__' if world else ''}seed{seed}"


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON, its ``sha256`` entry left out."""
    body = {key: value for key, value in record.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=_json_default).encode()).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its format tag and content hash, as job files store it."""
    sealed = {**record, "format": JOB_FORMAT}
    sealed["sha256"] = record_hash(sealed)
    return sealed


def read_record(path: Path) -> dict[str, Any]:
    """The job record in ``path``, checked: complete JSON, the job format, every required key
    with its type, a file name that matches its agent and seed, and an untouched content hash.
    Anything else is a :class:`JobFileError` naming the file and what was wrong."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JobFileError(f"job file {path} is not a complete JSON record ({err}); {_RERUN}") from err
    if not isinstance(record, dict) or record.get("format") != JOB_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise JobFileError(f"job file {path} is not a {JOB_FORMAT} record (format: {found!r}); {_RERUN}")
    for key, kind in RECORD_KEYS.items():
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise JobFileError(f"job file {path}: {key!r} is missing or not a {kind}; {_RERUN}")
    rows = [record["final"], *record["curve"]]
    if not record["curve"] or not all(isinstance(row, dict) and isinstance(row.get("return"), int | float)
                                      for row in rows):
        raise JobFileError(f"job file {path}: the curve and final metrics need a 'return'; {_RERUN}")
    if path.stem != job_key(record["agent"], record["seed"], record.get("world")):
        raise JobFileError(f"job file {path} holds agent {record['agent']!r} seed {record['seed']}, "
                           f"not the job its name says; {_RERUN}")
    if record.get("sha256") != record_hash(record):
        raise JobFileError(f"job file {path} was changed after it was written (its content hash "
                           f"does not match); {_RERUN}")
    return record


@dataclass(frozen=True)
class Job:
    """One (agent, seed) pair of an experiment, in one of its worlds."""

    config: ExperimentConfig
    agent: AgentConfig
    seed: int
    run_dir: str | None = None  #: where the run writes (TensorBoard logs); not part of the spec
    world: World | None = None  #: the world (default: the config's one world)

    @property
    def env(self) -> World:
        """The world this job runs in."""
        return self.world if self.world is not None else self.config.worlds[0]

    @property
    def key(self) -> str:
        """File-name-safe identifier of the job."""
        return job_key(self.agent.display, self.seed, self.env.name if self.config.is_suite else None)

    @property
    def spec(self) -> dict[str, Any]:
        """What determines the job's result: world, agent and its parameters, seed, budget,
        evaluation schedule, user-seed scheme. Stored in the job's record; ``--resume``
        refuses a changed one."""
        spec = {"env": self.env.spec, "agent": asdict(self.agent), "seed": self.seed,
                "train_steps": self.config.train_steps, "num_envs": self.config.num_envs,
                "eval": asdict(self.config.eval)}
        if self.config.tuning:
            spec["users"] = "tuning"
        return json.loads(json.dumps(spec, default=str))


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


#: Line of this process's per-job progress bar (under the job bar; one line per local worker).
_BAR_POSITION = 1


def run_job(job: Job, progress: bool = False) -> dict[str, Any]:
    """Train (if the agent learns) and evaluate one (agent, seed) pair; returns its record.
    ``progress`` shows a bar of the job's training steps and newest evaluation return."""
    import torch
    from tqdm import tqdm

    from recsim_gym.experiments.training import train_and_evaluate

    torch.set_num_threads(1)
    start = time.perf_counter()
    bar = tqdm(total=job.config.train_steps, desc=f"  {job.key}", unit="step", unit_scale=True,
               position=_BAR_POSITION, leave=False, file=sys.stderr,
               disable=not progress or job.config.train_steps == 0)
    try:
        record = train_and_evaluate(job, progress=bar)
    finally:
        bar.close()
    record.update({"agent": job.agent.display, "agent_name": job.agent.name, "seed": job.seed,
                   "spec": job.spec, "wall_seconds": time.perf_counter() - start,
                   "git_commit": git_commit()})  # a resumed run may mix commits: the report says so
    if job.config.is_suite:
        record.update(world=job.env.name, world_split=job.env.split, static_like=job.env.static_like)
    return record


def manifest(config: ExperimentConfig) -> dict[str, Any]:
    """Everything needed to reproduce a run: config, versions, git commit, seeds."""
    from importlib import metadata

    versions = {}
    for dist in ("recsim-gym", "numpy", "numba", "gymnasium", "stable-baselines3", "torch", "scipy"):
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
    jobs = [Job(config, agent, seed, str(out), world) for world in config.worlds
            for agent in config.agents for seed in config.seeds]
    _check_resumable(jobs, jobs_dir)
    write_atomic(out / "manifest.json", json.dumps(manifest(config), indent=2))
    todo = [job for job in jobs if not (jobs_dir / f"{job.key}.json").exists()]
    if resume and len(todo) < len(jobs):
        print(f"resuming {out}: {len(jobs) - len(todo)} of {len(jobs)} jobs already done",
              file=sys.stderr)

    _dispatch(todo, jobs_dir, backend, workers, ray_address, progress)
    collect(out, {job.key for job in jobs})
    return out


def _check_resumable(jobs: list[Job], jobs_dir: Path) -> None:
    """Refuse to resume when a finished job was run with a different spec than the config now
    asks for (its results would be mixed with the new ones under the same label)."""
    for job in jobs:
        path = jobs_dir / f"{job.key}.json"
        if not path.exists():
            continue
        stored, spec = read_record(path)["spec"], job.spec
        if stored is not None and stored != spec:
            changed = sorted(key for key in spec if stored.get(key) != spec[key])
            raise ResumeError(
                f"cannot resume: finished job {job.key} was run with different "
                f"{', '.join(changed)} than the config now gives (stored {[stored.get(k) for k in changed]}, "
                f"config {[spec[k] for k in changed]}); use a new output directory, or delete "
                f"{path} to re-run that job")


def write_record(jobs_dir: Path, job: Job, record: dict[str, Any]) -> None:
    """Write ``job``'s record, sealed, to its job file atomically."""
    write_atomic(jobs_dir / f"{job.key}.json", json.dumps(seal(record), default=_json_default))


def run_and_write(job: Job, jobs_dir: Path, progress: bool = False) -> None:
    """Run ``job`` and write its record: a worker writes its own job's file the moment the job
    ends, so finished work survives the parent's death."""
    write_record(jobs_dir, job, run_job(job, progress))


def _exit_with_parent(parent: int, slots: Any = None) -> None:
    """Worker initializer: end this process as soon as ``parent`` is gone (``kill -9`` of the
    parent leaves no idle worker behind); take the next progress-bar line from ``slots``."""
    import threading

    global _BAR_POSITION
    if slots is not None:
        with slots.get_lock():
            slots.value += 1
            _BAR_POSITION = slots.value

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _dispatch(todo: list[Job], jobs_dir: Path, backend: str, workers: int,
              ray_address: str | None, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="jobs", unit="job", disable=not progress, file=sys.stderr)
    if backend == "ray":
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("--backend ray needs Ray: pip install 'recsim-gym[ray]'") from err
        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(run_job)  # no per-job bars: workers may be remote
        pending = {remote.remote(job): job for job in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            write_record(jobs_dir, job, ray.get(done[0]))  # Ray workers may be on other machines
            bar.update()
    elif backend == "local" and workers > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        context = get_context("spawn")
        slots = context.Value("i", 0)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent,
                                 initargs=(os.getpid(), slots)) as pool:
            futures = {pool.submit(run_and_write, job, jobs_dir, progress): job for job in todo}
            for future in as_completed(futures):
                future.result()
                bar.update()
    elif backend == "local":
        for job in todo:
            run_and_write(job, jobs_dir, progress)
            bar.update()
    else:
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    bar.close()


def config_job_keys(out: Path) -> set[str] | None:
    """Job keys of the config in ``out``'s manifest (None without a manifest)."""
    path = out / "manifest.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())["config"]
    labels = [agent.get("label") or agent["name"] for agent in config["agents"]]
    worlds: list[str | None] = [None]
    if config["env"].get("suite"):
        env = EnvConfig(suite=config["env"]["suite"], worlds=tuple(config["env"]["worlds"]),
                        presets=tuple(config["env"].get("presets", ())))
        worlds = [w.name for w in config_worlds(env)]
    return {job_key(label, seed, world) for label in labels for seed in config["seeds"]
            for world in worlds}


def load_records(out: Path, keys: set[str] | None = None) -> list[dict[str, Any]]:
    """The checked (:func:`read_record`) job records of a run, in a stable order: those of
    ``keys``, by default of the config in the run's manifest (a job left over from an agent the
    config no longer has is not a result of this run)."""
    keys = config_job_keys(out) if keys is None else keys
    paths = sorted((out / "jobs").glob("*.json"))
    return [read_record(p) for p in paths if keys is None or p.stem in keys]


def collect(out: Path, keys: set[str] | None = None) -> dict[str, Any]:
    """Rebuild ``evaluations.csv`` and ``summary.json`` from the job files (atomically)."""
    from recsim_gym.experiments.statistics import summarize

    records = load_records(out, keys)
    rows = [{"agent": r["agent"], **({"world": r["world"]} if "world" in r else {}), "seed": r["seed"], **row}
            for r in records for row in r["curve"]]
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(out / "evaluations.csv", buffer.getvalue())
    if any("world" in r for r in records):
        from recsim_gym.experiments.statistics import summarize_suite

        summary = summarize_suite(records)
    else:
        summary = summarize(records)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=_json_default))
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
