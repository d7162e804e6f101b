"""The long-term trade-off is real on ``default`` and absent on ``static``.

On ``default`` clickbait wins the next click but costs satisfaction, so the user leaves early:
both myopic policies (``highest_appeal`` and the exact myopic optimum ``myopic_greedy``) earn
less lifetime return than ``quality_aware``. On ``static`` nothing but the next step matters, so
``quality_aware`` cannot beat ``myopic_greedy``.

Statistics: each replicate is one block of ``USERS`` users (vector env ``reset(seed=s)`` seeds
slot b with s + b, so replicate seeds are ``USERS`` apart and share no user); every policy
sees the same users (paired design); the 95% t-interval of the mean per-replicate difference
is taken over replicates. Seeds start at 1000: 0..999 were used while calibrating the world.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy import stats

from recsim_gym.agents.reference import highest_appeal, myopic_greedy, quality_aware
from recsim_gym.env import RecSimVectorEnv

USERS = 200
REPLICATES = 6
SEEDS = [1000 + USERS * i for i in range(REPLICATES)]


@cache
def lifetime_return(preset: str, policy, seed: int) -> float:
    """Mean undiscounted return over the first episode of ``USERS`` users seeded ``seed + b``."""
    envs = RecSimVectorEnv(USERS, preset, observe_latent=True)
    obs, _ = envs.reset(seed=seed)
    total = np.zeros(USERS)
    done = np.zeros(USERS, dtype=bool)
    while not done.all():
        obs, reward, terminated, truncated, _ = envs.step(policy(obs, envs.params))
        total += np.where(done, 0.0, reward)
        done |= terminated | truncated
    return float(total.mean())


def paired_interval(better, worse, preset: str) -> tuple[float, float, np.ndarray]:
    """95% t-interval of the mean per-seed difference ``return(better) - return(worse)``."""
    diff = np.array([lifetime_return(preset, better, s) - lifetime_return(preset, worse, s)
                     for s in SEEDS])
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    return float(low), float(high), diff


def test_replicates_do_not_share_users() -> None:
    slots = [set(range(s, s + USERS)) for s in SEEDS]
    assert all(a.isdisjoint(b) for i, a in enumerate(slots) for b in slots[i + 1:])
    assert min(SEEDS) >= 1000 and len(SEEDS) >= 5


@pytest.mark.parametrize("myopic", [highest_appeal, myopic_greedy], ids=lambda f: f.__name__)
def test_quality_aware_beats_myopic_policies_on_default(myopic) -> None:
    low, high, diff = paired_interval(quality_aware, myopic, "default")
    assert low > 0, f"95% CI of quality_aware - {myopic.__name__}: [{low:.2f}, {high:.2f}]; {diff}"


def test_quality_aware_does_not_beat_myopic_greedy_on_static() -> None:
    low, high, diff = paired_interval(quality_aware, myopic_greedy, "static")
    assert not low > 0, f"95% CI of quality_aware - myopic_greedy: [{low:.2f}, {high:.2f}]; {diff}"


def test_myopic_greedy_is_the_best_myopic_policy_on_static() -> None:
    """Sanity for the static claim: the exact myopic optimum beats the literal appeal ranker."""
    low, _, diff = paired_interval(myopic_greedy, highest_appeal, "static")
    assert low > 0, diff
