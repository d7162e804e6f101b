"""A fresh process loads the compiled kernels from numba's on-disk cache instead of compiling
them again (issue 24: the main job's first job paid ~20 s of compilation in every process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import json, gymnasium as gym
import recsim_gym.env  # noqa: F401
from recsim_gym.env import ie_kernel, kernel
for env_id in ("recsim/default-v0", "recsim/interest_evolution-v0"):
    env = gym.make(env_id)
    env.reset(seed=0)
    env.step(env.action_space.sample())
stats = {}
for module in (kernel, ie_kernel):
    for name in ("step_kernel", "reset_kernel"):
        s = getattr(module, name).stats
        stats[f"{module.__name__}.{name}"] = [sum(s.cache_hits.values()), sum(s.cache_misses.values())]
print(json.dumps(stats))
"""


def _probe(cache: Path) -> dict[str, list[int]]:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_the_kernels_from_the_cache(tmp_path: Path) -> None:
    first = _probe(tmp_path)
    assert all(misses >= 1 for _, misses in first.values()), first  # an empty cache compiles
    second = _probe(tmp_path)
    assert all(hits >= 1 and misses == 0 for hits, misses in second.values()), second
