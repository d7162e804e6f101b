"""Throughput benchmarks.

``python -m recsim_gym.experiments.bench env`` measures user-steps per second of the single env (through
``gymnasium.make``, wrappers included) and of the native vector env at several batch sizes,
with random valid slates, plus each configuration's peak resident memory (every
configuration runs in its own subprocess, so peaks do not mix). It also times a plain copy of
the same observation bytes: the memory-bandwidth floor of producing those observations.
Prints a table and writes JSON. ``python -m recsim_gym.experiments.bench eval`` times the evaluation
harness (random agent, 10,000 users to the end of their lifetimes).

``python -m recsim_gym.experiments.bench train`` times training: env-steps per second of ``learn`` for each
given agent (and keyword variant) on the same preset and budget, one after another in this
process, so their ratios are measured in one run. The rate counts the steps actually trained
(PPO trains whole rollouts). The variant ``sb3_cartpole`` is the floor a PPO user knows:
stable-baselines3's own PPO with its MLP policy on ``CartPole-v1``, on PPO-attention's schedule
(users as envs, rollout, minibatch, epochs); ``ppo_attention sb3_cartpole`` prints their ratio.
``sb3_mlp`` is SB3's own PPO (``MultiInputPolicy``) on the preset itself, on the same schedule:
the floor on the same observations and slates.
``--compare REF`` (``env`` and ``train``) runs the same
measurements at git commit REF too, alternated with this checkout, and prints this/REF ratios.

Figures are only comparable within one run (shared, noisy machines): compare ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env.spaces import random_slates

DEFAULT_BATCH_SIZES = (1, 64, 1024, 4096)
#: ``bench train`` variant: SB3's PPO-MLP on CartPole on PPO-attention's default schedule.
SB3_CARTPOLE = "sb3_cartpole"
#: ``bench train`` variant: SB3's PPO ``MultiInputPolicy`` on the bench's preset (through
#: :class:`~recsim_gym.agents.sb3_vecenv.RecSimVecEnv`), on PPO-attention's default schedule.
SB3_MLP = "sb3_mlp"
SB3_VARIANTS = (SB3_CARTPOLE, SB3_MLP)


class _SB3PPO:
    """SB3's own PPO with its MLP policy on PPO-attention's schedule (envs, ``n_steps``,
    ``batch_size``, ``n_epochs``; keyword overrides replace them): on ``CartPole-v1`` when
    ``preset`` is None (``sb3_cartpole``), else ``MultiInputPolicy`` on that preset's batched
    vector env (``sb3_mlp``: what SB3 itself costs on the same observations and slates)."""

    def __init__(self, seed: int = 0, preset: str | None = None, **overrides: Any):
        from recsim_gym.agents.ppo_attention import PPOSlateConfig

        config = PPOSlateConfig()
        self.schedule = {"num_envs": config.num_envs, "n_steps": config.n_steps,
                         "batch_size": config.batch_size, "n_epochs": config.n_epochs}
        unknown = sorted(set(overrides) - set(self.schedule))
        if unknown:
            name = SB3_CARTPOLE if preset is None else SB3_MLP
            raise SystemExit(f"{name} takes only {sorted(self.schedule)}, got {unknown}")
        self.schedule.update(overrides)
        self.seed, self.preset, self.model = seed, preset, None

    def learn(self, env: Any, steps: int) -> None:
        """Train for ``steps`` env-steps (``env`` is ignored: the variant makes its own)."""
        from stable_baselines3 import PPO

        s = self.schedule
        if self.preset is None:
            from stable_baselines3.common.env_util import make_vec_env

            vec, policy = make_vec_env("CartPole-v1", n_envs=s["num_envs"], seed=self.seed), "MlpPolicy"
        else:
            from recsim_gym.agents.sb3_vecenv import make_vec_env as make_recsim_vec_env

            vec = make_recsim_vec_env(s["num_envs"], preset=self.preset, seed=self.seed)
            policy = "MultiInputPolicy"
        self.model = PPO(policy, vec, n_steps=s["n_steps"], batch_size=s["batch_size"],
                         n_epochs=s["n_epochs"], seed=self.seed, device="cpu", verbose=0)
        self.model.learn(total_timesteps=steps)


def _slate_pool(rng: np.random.Generator, m: int, k: int, batch: int | None, n: int) -> list:
    shape = (n,) if batch is None else (n, batch)
    pool = random_slates(rng, int(np.prod(shape)), m, k).reshape(shape + (k,))
    return list(pool)


def measure(preset: str, mode: str, batch_size: int, seconds: float, seed: int = 0,
            reuse_buffers: bool = False) -> dict[str, Any]:
    """Steps/s of one configuration in this process (``mode`` = 'single' or 'vector';
    ``reuse_buffers``: the vector env's no-allocation mode)."""
    import gymnasium as gym

    import recsim_gym.env  # noqa: F401  (registers the ids)

    env_id = f"recsim/{preset}-v0"
    rng = np.random.default_rng(seed)
    if mode == "single":
        env = gym.make(env_id)
        params = env.unwrapped.params
        pool = _slate_pool(rng, params.num_candidates, params.slate_size, None, 1024)
        env.reset(seed=seed)
        step = env.step

        def run(n: int) -> None:
            for i in range(n):
                _, _, terminated, truncated, _ = step(pool[i % 1024])
                if terminated or truncated:
                    env.reset()
        users = 1
    else:
        env = gym.make_vec(env_id, num_envs=batch_size, **({"reuse_buffers": True} if reuse_buffers else {}))
        params = env.unwrapped.params if hasattr(env, "unwrapped") else env.params
        pool = _slate_pool(rng, params.num_candidates, params.slate_size, batch_size, 8)
        env.reset(seed=seed)

        def run(n: int) -> None:
            for i in range(n):
                env.step(pool[i % 8])
        users = batch_size

    run(3)  # warm-up
    n, elapsed = 1, 0.0
    while elapsed < seconds:  # grow the step count until one timed run lasts long enough
        n = max(2 * n, int(n * seconds / max(elapsed, 1e-9)) if elapsed > 0.05 else 2 * n)
        start = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - start
    steps_per_s = n * users / elapsed
    obs = env.reset(seed=seed)[0]
    obs_bytes = int(sum(v.nbytes for v in obs.values())) * (batch_size if mode == "single" else 1)
    floor = _copy_floor(obs_bytes)
    return {
        "preset": preset, "mode": mode, "batch_size": batch_size,
        "user_steps_per_s": steps_per_s, "seconds": elapsed, "steps": n * users,
        "obs_bytes_per_step": obs_bytes,
        "copy_floor_user_steps_per_s": users / floor if mode != "single" else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "reuse_buffers": reuse_buffers,
    }


def _copy_floor(nbytes: int) -> float:
    """Seconds to copy ``nbytes`` once (best of several): the observation bandwidth floor."""
    src = np.ones(max(nbytes // 4, 1), dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return best


def bench_env(presets: list[str], batch_sizes: list[int], seconds: float, out: Path,
              reuse_buffers: bool = False) -> list[dict]:
    """Run every configuration in its own subprocess; print a table and write JSON to ``out``."""
    configs = [(p, "single", 1) for p in presets] + [
        (p, "vector", b) for p in presets for b in batch_sizes]
    rows = []
    try:
        from tqdm import tqdm
        iterator = tqdm(configs, desc="bench env", unit="config", file=sys.stderr)
    except ImportError:  # pragma: no cover
        iterator = configs
    for preset, mode, batch in iterator:
        cmd = [sys.executable, "-m", "recsim_gym.experiments.bench", "_one", preset, mode, str(batch),
               str(seconds), *(["reuse"] if reuse_buffers else [])]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"benchmark {preset}/{mode}/B={batch} failed:\n{result.stderr}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(format_table(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "env", "python": platform.python_version(),
               "machine": platform.machine(), "processor": platform.processor(),
               "numpy": np.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of benchmark rows."""
    head = (f"{'preset':<19} {'env':<22} {'user-steps/s':>14} {'ns/user-step':>13} "
            f"{'copy floor/s':>14} {'peak RSS MiB':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        env = "gymnasium.make" if r["mode"] == "single" else f"vector B={r['batch_size']}"
        floor = r["copy_floor_user_steps_per_s"]
        env += " (reused)" if r.get("reuse_buffers") and r["mode"] != "single" else ""
        lines.append(f"{r['preset']:<19} {env:<22} {r['user_steps_per_s']:>14,.0f} "
                     f"{1e9 / r['user_steps_per_s']:>13,.0f} "
                     f"{(f'{floor:,.0f}' if floor else '-'):>14} {r['peak_rss_mib']:>13.0f}")
    return "\n".join(lines)


def bench_eval(preset: str, users: int, out: Path) -> dict[str, Any]:
    """Time :func:`recsim_gym.experiments.evaluate.evaluate` of the random agent on ``users`` users."""
    from recsim_gym.agents import registry
    from recsim_gym.env.simulator import make_simulator
    from recsim_gym.experiments.evaluate import evaluate

    params = make_simulator(preset).params
    evaluate(registry.make("random", params=params), preset, 50, seed=0)  # warm-up (compile)
    start = time.perf_counter()
    result = evaluate(registry.make("random", params=params), preset, users, seed=0)
    seconds = time.perf_counter() - start
    row = {"benchmark": "eval", "preset": preset, "agent": "random", "users": users,
           "seconds": seconds, "user_steps": result.user_steps,
           "user_steps_per_s": result.user_steps / seconds,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"evaluate(random, {preset}, {users:,} users): {seconds:.1f} s, "
          f"{result.user_steps:,} user-steps ({row['user_steps_per_s']:,.0f}/s), "
          f"mean lifetime return {result.means()['return']:.1f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    print(f"wrote {out}")
    return row


def bench_train(preset: str, variants: list[tuple[str, dict[str, Any]]], steps: int, threads: int,
                out: Path, seed: int = 0) -> list[dict[str, Any]]:
    """Time ``learn(env, steps)`` of each ``(agent, kwargs)`` variant on a vector env of ``preset``;
    rows with env-steps/s."""
    import torch

    from recsim_gym.agents import registry
    from recsim_gym.env.simulator import make_simulator
    from recsim_gym.experiments.evaluate import make_train_env

    torch.set_num_threads(threads)  # process-wide, as the CLI wants
    params = make_simulator(preset).params
    agents = [_SB3PPO(seed, None if name == SB3_CARTPOLE else preset, **kwargs) if name in SB3_VARIANTS
              else registry.make(name, params=params, seed=seed, **kwargs) for name, kwargs in variants]
    for (name, _), agent in zip(variants, agents, strict=True):  # check all before timing any
        if not callable(getattr(agent, "learn", None)):
            raise SystemExit(f"agent {name!r} has no learn(): it trains online or from logs, "
                             "which this benchmark does not time")
    sim = make_simulator(preset)  # warm-up: the first variant must not pay numba's compilation
    state = sim.reset(np.arange(2, dtype=np.uint64))
    sim.step(state, random_slates(np.random.default_rng(seed), 2, sim.params.num_candidates,
                                  sim.params.slate_size))
    rows: list[dict[str, Any]] = []
    for (name, kwargs), agent in zip(variants, agents, strict=True):
        # as the runner trains, on the same users for every variant (agents that step their own
        # number of users, as PPO does, take the env's params)
        env = None if name in SB3_VARIANTS else make_train_env(agent, preset, 64, seed)
        start = time.perf_counter()
        agent.learn(env, steps)
        seconds = time.perf_counter() - start
        trained = steps_trained(agent, steps)
        rows.append({"benchmark": "train", "preset": preset, "agent": name, "kwargs": kwargs,
                     "steps": steps, "steps_trained": trained, "threads": threads,
                     "seconds": seconds, "steps_per_s": trained / seconds})
        ratio = rows[-1]["steps_per_s"] / rows[0]["steps_per_s"]
        asked = "" if trained == steps else f" (asked for {steps:,}; it trains in whole batches)"
        print(f"{name} {json.dumps(kwargs)}: {trained:,} env-steps{asked} in {seconds:.1f} s = "
              f"{rows[-1]['steps_per_s']:,.0f}/s ({ratio:.2f} x the first)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return rows


def steps_trained(agent: Any, asked: int) -> int:
    """The env-steps ``learn`` actually took: PPO trains whole rollouts (``n_steps`` x envs), so
    it can take more than it was asked for; agents that count their steps say so."""
    model = getattr(agent, "model", None)
    for value in (getattr(model, "num_timesteps", None), getattr(agent, "env_steps", None)):
        if isinstance(value, int) and value > 0:
            return value
    return asked


def _rates(what: str, rows: list[dict[str, Any]]) -> list[tuple[str, float, bool]]:
    """``(label, rate, counts trained steps)`` of each row of a ``bench env`` or ``bench train``
    result (older train results report the steps asked for, not those trained)."""
    if what == "env":
        return [(f"{r['preset']} {'single' if r['mode'] == 'single' else 'vector B=' + str(r['batch_size'])}",
                 r["user_steps_per_s"], True) for r in rows]
    return [(f"{r['agent']} {json.dumps(r['kwargs'])}", r.get("steps_trained", r["steps"]) / r["seconds"],
             "steps_trained" in r) for r in rows]


def compare(ref: str, what: str, argv: list[str], rounds: int, out: Path) -> list[dict[str, Any]]:
    """``bench WHAT`` (``env`` or ``train``) of this checkout and of commit ``ref``, alternated
    ``rounds`` times in fresh processes (this, ref, this, ref, ...) on the same machine in one
    invocation; prints each row's median rate on both sides and their ratio.

    ``ref`` is checked out into a temporary git worktree and imported in place of this
    checkout through a ``recsim_gym`` shim on ``PYTHONPATH`` (it must have this package layout:
    ``recsim_env/``, ``agents/``, ``experiments/``)."""
    import os
    import statistics
    import tempfile

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists() and subprocess.run(
            ["git", "-C", str(root), "rev-parse"], capture_output=True).returncode != 0:
        raise SystemExit(f"--compare needs a git checkout of recsim-gym; {root} is not one")
    with tempfile.TemporaryDirectory(prefix="recsim-bench-") as tmp:
        tree = Path(tmp) / "ref"
        added = subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), ref],
                               capture_output=True, text=True)
        if added.returncode != 0:
            raise SystemExit(f"--compare {ref}: cannot check it out: {added.stderr.strip()}")
        try:
            shim = Path(tmp) / "shim" / "recsim_gym"
            shim.mkdir(parents=True)
            for name, source in (("env", "recsim_env"), ("agents", "agents"), ("experiments", "experiments")):
                if not (tree / source / "__init__.py").exists():
                    raise SystemExit(f"--compare {ref}: it has no {source}/ package (commits before "
                                     "the recsim_gym layout cannot be compared this way)")
                (shim / name).symlink_to(tree / source)
            sides = {"this": dict(os.environ),
                     ref: {**os.environ, "PYTHONPATH": os.pathsep.join(
                         [str(shim.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}}
            rates: dict[tuple[str, str], list[float]] = {}
            asked_only: set[str] = set()
            for round_index in range(-1, rounds):  # round -1 warms up (numba compiles its cache)
                for side, env in sides.items():
                    result = Path(tmp) / f"{round_index}-{'ref' if side == ref else 'this'}.json"
                    done = subprocess.run([sys.executable, "-m", "recsim_gym.experiments.bench", what,
                                           *argv, "--out", str(result)], env=env, cwd=tmp,
                                          capture_output=True, text=True)
                    if done.returncode != 0:
                        raise SystemExit(f"bench {what} at {side} failed:\n{done.stderr[-2000:]}")
                    if round_index < 0:
                        continue
                    for label, rate, trained in _rates(what, json.loads(result.read_text())["rows"]):
                        if not trained:
                            asked_only.add(side)
                        rates.setdefault((label, side), []).append(rate)
                    print(f"round {round_index + 1}/{rounds}: {side} done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
    rows = []
    labels = list(dict.fromkeys(label for label, _ in rates))
    unit = "user-steps/s" if what == "env" else "env-steps/s"
    print(f"\nmedian {unit} over {rounds} alternated rounds after a warm-up round (this "
          f"checkout vs {ref})")
    if asked_only:
        print(f"note: {', '.join(sorted(asked_only))} reports the steps asked for, not those trained; "
              "for agents that train whole rollouts (PPO) give --steps a multiple of the rollout")
    for label in labels:
        mine, theirs = (statistics.median(rates[(label, side)]) for side in ("this", ref))
        rows.append({"variant": label, "this": mine, "ref": theirs, "ratio": mine / theirs})
        print(f"{label:<48} {mine:>10,.0f} {theirs:>10,.0f}   {mine / theirs:.2f} x {ref}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ref": ref, "what": what, "rounds": rounds, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return rows


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    """``agent`` or ``agent:{json kwargs}``."""
    name, _, kwargs = text.partition(":")
    try:
        parsed = json.loads(kwargs) if kwargs else {}
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"bad JSON keyword arguments in {text!r}: {error}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"keyword arguments in {text!r} must be a JSON object")
    return name, parsed


def _without_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--x v`` or ``--x=v``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(tuple(f"{name}=" for name in names)):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``python -m recsim_gym.experiments.bench --help``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_one"]:  # internal: one configuration, JSON on stdout
        preset, mode, batch, seconds = argv[1], argv[2], int(argv[3]), float(argv[4])
        print(json.dumps(measure(preset, mode, batch, seconds, reuse_buffers=argv[5:] == ["reuse"])))
        return
    from recsim_gym.env.simulator import all_preset_names

    parser = argparse.ArgumentParser(prog="recsim bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    env = sub.add_parser("env", help="env throughput (user-steps/s) and peak memory")
    env.add_argument("--presets", nargs="+", default=["default"],
                     choices=all_preset_names(), help="presets to measure (default: default)")
    env.add_argument("--batch-sizes", nargs="+", type=int, default=list(DEFAULT_BATCH_SIZES),
                     help="vector env batch sizes (default: 1 64 1024 4096)")
    env.add_argument("--seconds", type=float, default=2.0,
                     help="minimum timed seconds per configuration (default: 2)")
    env.add_argument("--out", type=Path, default=Path("bench_results/env.json"),
                     help="JSON output path (default: bench_results/env.json)")
    env.add_argument("--reuse-buffers", action="store_true",
                     help="vector envs write every step into the same arrays (reuse_buffers=True)")
    env.add_argument("--compare", metavar="REF", default=None,
                     help="also measure at git commit REF, alternated with this checkout in fresh "
                          "processes, and print the ratios")
    env.add_argument("--rounds", type=int, default=2,
                     help="alternated rounds per side with --compare (default: 2)")
    ev = sub.add_parser("eval", help="time the evaluation harness (random agent, full lifetimes)")
    ev.add_argument("--preset", default="default", choices=all_preset_names())
    ev.add_argument("--users", type=int, default=10_000, help="users (default: 10000)")
    ev.add_argument("--out", type=Path, default=Path("bench_results/eval.json"))
    tr = sub.add_parser("train", help="training throughput (env-steps/s of learn) per agent variant")
    tr.add_argument("variants", nargs="+", type=_variant, metavar="AGENT[:JSON]",
                    help='agents to time, e.g. ppo_attention \'ppo_attention:{"item_stats_buckets": 0}\' '
                         f'(and, on PPO-attention\'s schedule, SB3\'s own PPO-MLP: {SB3_CARTPOLE} on '
                         f'CartPole, {SB3_MLP} on the preset)')
    tr.add_argument("--preset", default="default", choices=all_preset_names())
    tr.add_argument("--steps", type=int, default=100_000, help="env-steps per variant (default: 100000)")
    tr.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    tr.add_argument("--out", type=Path, default=Path("bench_results/train.json"))
    tr.add_argument("--compare", metavar="REF", default=None,
                    help="also run the same variants at git commit REF, alternated with this "
                         "checkout in fresh processes, and print the ratios")
    tr.add_argument("--rounds", type=int, default=2,
                    help="alternated rounds per side with --compare (default: 2)")
    args = parser.parse_args(argv)
    if args.what == "train":
        from recsim_gym.agents import registry

        unknown = [name for name, _ in args.variants
                   if name not in registry.list_agents() and name not in SB3_VARIANTS]
        if unknown:
            parser.error(f"unknown agent(s) {unknown}; registered: {sorted(registry.list_agents())}")
        if args.steps < 1 or args.threads < 1 or args.rounds < 1:
            parser.error(f"--steps, --threads and --rounds must be >= 1, got {args.steps}, "
                         f"{args.threads}, {args.rounds}")
        if args.compare:
            passed = _without_options(argv[1:], ("--compare", "--rounds", "--out"))
            compare(args.compare, "train", passed, args.rounds, args.out)
            return
        bench_train(args.preset, args.variants, args.steps, args.threads, args.out)
        return
    if args.what == "eval":
        if args.users < 1:
            parser.error(f"--users must be >= 1, got {args.users}")
        bench_eval(args.preset, args.users, args.out)
        return
    if any(b < 1 for b in args.batch_sizes):
        parser.error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    if args.seconds <= 0 or args.rounds < 1:
        parser.error(f"--seconds must be > 0 and --rounds >= 1, got {args.seconds}, {args.rounds}")
    if args.compare:
        compare(args.compare, "env", _without_options(argv[1:], ("--compare", "--rounds", "--out")),
                args.rounds, args.out)
        return
    bench_env(args.presets, args.batch_sizes, args.seconds, args.out, args.reuse_buffers)


if __name__ == "__main__":
    main()
