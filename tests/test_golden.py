"""Behaviour is kept bit for bit: every preset's seeded rollout and every built-in agent's
seeded train-and-evaluate job hash to the digests recorded in ``tests/golden.json`` (see
``tests/golden.py``; first recorded at a8622d7, before the restructure moved any file).

The env digests hold on every machine. The agent digests include numpy's SIMD, BLAS and torch
floating point, so they are recorded per float platform (:func:`tests.golden.float_platform`)
and compared only on a platform that has a record; elsewhere they are skipped with the command
that records one. A digest that fails on a recorded platform is a behaviour change to explain.
"""

from __future__ import annotations

import functools

import pytest

from tests.golden import AGENT_JOBS, _cpu_name, fingerprints, float_platform, read_golden

GOLDEN = read_golden()
AGENT_KEYS = sorted(f"agent/{job[0]}" for job in AGENT_JOBS)


@functools.lru_cache(maxsize=1)
def _platform() -> str:
    return float_platform()


def test_golden_covers_every_preset_and_agent_job() -> None:
    from recsim_gym.env.simulator import all_preset_names

    assert set(GOLDEN["env"]) == {f"env/{p}" for p in all_preset_names()}
    for record in GOLDEN["platforms"].values():
        assert set(record["agents"]) <= set(AGENT_KEYS)


def test_the_float_platform_is_a_stable_name() -> None:
    assert _platform() == float_platform()  # same machine, same digest: it names the platform


@pytest.mark.parametrize("key", sorted(GOLDEN["env"]))
def test_env_behaviour_is_bit_identical(key: str) -> None:
    assert fingerprints({key}) == {key: GOLDEN["env"][key]}, f"{key} changed behaviour"


@pytest.mark.parametrize("key", AGENT_KEYS)
def test_agent_behaviour_is_bit_identical(key: str) -> None:
    record = GOLDEN["platforms"].get(_platform())
    if record is None or key not in record["agents"]:
        pytest.skip(f"no {key} digest for float platform {_platform()} ({_cpu_name()}); recorded: "
                    f"{ {p: r['cpu'] for p, r in GOLDEN['platforms'].items()} }. Record it with "
                    "`python -m tests.golden --write` at a commit whose behaviour is known")
    assert fingerprints({key}) == {key: record["agents"][key]}, f"{key} changed behaviour"
