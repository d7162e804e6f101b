"""Benchmark: log size and fit time of the supervised click models on N logged interactions.

``python scripts/bench_supervised.py --steps 1000000 --models logreg,two_tower,din --epochs 1``
(one interaction = one logged slate impression, i.e. one user-step). Single torch thread.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from recsim_gym.agents.click_models import ClickModelAgent
from recsim_gym.env.logs import generate_logs, load_logs, save_logs
from recsim_gym.env.simulator import make_simulator


def main(argv: list[str] | None = None) -> None:
    """Generate, save, reload and fit; print timings and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="static")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--models", default="logreg,two_tower,din")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sim = make_simulator(args.preset)
    start = time.perf_counter()
    logs = generate_logs(n_steps=args.steps, sim=sim, batch_size=1000, first_user=10_000_000)
    print(f"generate {args.steps} interactions: {time.perf_counter() - start:.1f}s", flush=True)
    in_memory = sum(column.nbytes for column in logs.values())
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = save_logs(logs, os.path.join(folder, "logs.npz"))
        saved = time.perf_counter() - start
        size = path.stat().st_size
        start = time.perf_counter()
        load_logs(path)
        loaded = time.perf_counter() - start
    print(f"log size: {in_memory / 1e6:.0f} MB in memory, {size / 1e6:.0f} MB on disk (.npz), "
          f"save {saved:.1f}s, load+validate {loaded:.1f}s", flush=True)
    for name in args.models.split(","):
        agent = ClickModelAgent(name, params=sim.params, epochs=args.epochs)
        start = time.perf_counter()
        agent.fit(logs)
        seconds = time.perf_counter() - start
        print(f"fit {name}: {seconds:.0f}s for {args.epochs} epoch(s) "
              f"({args.steps * args.epochs / seconds:.0f} interactions/s)", flush=True)


if __name__ == "__main__":
    main()
