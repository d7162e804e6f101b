"""Google RecSim's interest-evolution env against ours, one user at a time, measured in one run.

Google RecSim needs TensorFlow (its environment module imports ``gin.tf``), so it lives in a
venv of its own; this script runs it there and ``recsim_gym``'s single env here, alternately
in fresh processes (warm-up round first), and prints each side's median steps/s and the ratio::

    python3 -m venv /tmp/grecsim
    /tmp/grecsim/bin/pip install "numpy<2" "tensorflow-cpu==2.15.1" "gin-config==0.4.0" \\
        absl-py "gym==0.26.2" scipy six
    /tmp/grecsim/bin/pip install --no-deps recsim "dopamine-rl==2.0.5"
    python scripts/bench_google_recsim.py --recsim-python /tmp/grecsim/bin/python

(TensorFlow 2.16 dropped ``tf.estimator``, which recsim imports; dopamine is only imported.)
Both sides step random valid slates and reset at episode end, as ``recsim bench env`` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

#: Run in the RecSim venv: steps/s of Google RecSim's env with random slates.
_RECSIM_SIDE = """
import json, sys, time
import numpy as np
from recsim.environments import interest_evolution
m, k, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
env = interest_evolution.create_environment(
    {"num_candidates": m, "slate_size": k, "resample_documents": True, "seed": 0})
env.reset()
rng = np.random.default_rng(0)
pool = [rng.permutation(m)[:k] for _ in range(1024)]
def run(n):
    for i in range(n):
        if env.step(pool[i % 1024])[2]:
            env.reset()
run(50)
n, elapsed = 100, 0.0
while elapsed < seconds:
    n *= 2
    start = time.perf_counter()
    run(n)
    elapsed = time.perf_counter() - start
print(json.dumps({"steps_per_s": n / elapsed}))
"""


def _rate(command: list[str]) -> float:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return float(row.get("steps_per_s", row.get("user_steps_per_s")))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Alternate the two sides; print and return the medians and their ratio."""
    parser = argparse.ArgumentParser(prog="python scripts/bench_google_recsim.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--recsim-python", required=True,
                        help="the python of a venv with Google RecSim (see above)")
    parser.add_argument("--candidates", type=int, default=10, help="m (default 10)")
    parser.add_argument("--slate", type=int, default=2, help="k (default 2)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    args = parser.parse_args(argv)
    theirs_cmd = [args.recsim_python, "-c", _RECSIM_SIDE, str(args.candidates), str(args.slate),
                  str(args.seconds)]
    # recsim_gym's side: the bench's one-configuration entry (gym.make, wrappers included)
    ours_cmd = [sys.executable, "-c",
                "import json, sys; from recsim_gym.experiments.bench import measure; "
                "print(json.dumps(measure('interest_evolution', 'single', 1, float(sys.argv[1]))))",
                str(args.seconds)]
    env_args = f"num_candidates={args.candidates}, slate_size={args.slate}"
    if (args.candidates, args.slate) != (10, 2):
        raise SystemExit("only m=10, k=2 (the preset's defaults) is wired up on recsim_gym's side")
    ours, theirs = [], []
    for round_index in range(-1, args.rounds):
        o, t = _rate(ours_cmd), _rate(theirs_cmd)
        if round_index >= 0:
            ours.append(o)
            theirs.append(t)
            print(f"round {round_index + 1}/{args.rounds}: recsim_gym {o:,.0f}, Google RecSim {t:,.0f} "
                  "steps/s", file=sys.stderr, flush=True)
    result = {"recsim_gym": statistics.median(ours), "google_recsim": statistics.median(theirs)}
    result["ratio"] = result["recsim_gym"] / result["google_recsim"]
    print(f"interest evolution, one user, {env_args}: recsim_gym {result['recsim_gym']:,.0f} steps/s, "
          f"Google RecSim {result['google_recsim']:,.0f} steps/s: {result['ratio']:.2f} x "
          f"(medians of {args.rounds} alternated rounds)")
    return result


if __name__ == "__main__":
    main()
