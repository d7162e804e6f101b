"""The restructure keeps behaviour bit for bit: every preset's seeded rollout and every built-in
agent's seeded train-and-evaluate job hash to the digests recorded in ``tests/golden.json``
(see ``tests/golden.py``; recorded at a8622d7, before any file moved).

The agent digests include torch and numba floating point, so they hold on one machine kind
(CI runs on the developers' kind). If one fails with no code change, run ``python -m
tests.golden`` at the recording commit on the same machine before suspecting the code.
"""

from __future__ import annotations

import json

import pytest

from tests.golden import GOLDEN, fingerprints

EXPECTED: dict[str, str] = json.loads(GOLDEN.read_text())


def test_golden_covers_every_preset_and_agent_job() -> None:
    from recsim_gym.env.simulator import all_preset_names
    from tests.golden import AGENT_JOBS

    assert {f"env/{p}" for p in all_preset_names()} | {f"agent/{j[0]}" for j in AGENT_JOBS} == set(EXPECTED)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_behaviour_is_bit_identical(key: str) -> None:
    assert fingerprints({key}) == {key: EXPECTED[key]}, f"{key} changed behaviour"
