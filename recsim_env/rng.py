"""Counter-based random numbers: one independent stream per user, drawn for a whole batch at once.

Why not one ``numpy.random.Generator`` for the batch? Because then user b's randomness would
depend on how many other users share the batch, and a vector env of B users could never
reproduce B single envs. Why not one Generator per user? Because that needs a per-user Python
loop on the step path. A counter-based generator (as in JAX's ``threefry`` keys or Philox) gives
both: every random number is a hash of ``(user episode key, step, slot)``, computed for all
users in a handful of vectorised numpy operations.

* ``seed_to_key(seed, episode)`` - the 64-bit key of one user episode. A single env reset with
  seed ``s`` and the vector env's slot ``b`` reset with seed ``s + b`` (Gymnasium's convention)
  get the same key, so their trajectories are identical.
* ``stream_start(keys)`` - a 32-bit counter per user, advanced by ``WEYL32`` every step, so at
  step ``t`` it is ``start + t * WEYL32``.
* ``uniforms(stream, n, salt)`` - ``(B, n)`` float32 uniforms in [0, 1) with 24-bit resolution
  for purpose ``salt`` (reset, step, regime shift) at the users' current counters.

The hashes are SplitMix64's finaliser (64-bit) and Chris Wellons' ``lowbias32`` (32-bit).
"""

from __future__ import annotations

import numbers
from functools import lru_cache
from typing import Any

import numpy as np

_GOLDEN64 = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = (np.uint64(s) for s in (30, 27, 31, 32))
_H1 = np.uint32(0x7FEB352D)
_H2 = np.uint32(0x846CA68B)
_S16, _S15, _S8 = np.uint32(16), np.uint32(15), np.uint32(8)
_INV24 = np.float32(2.0**-24)

# Salts separating the purposes randomness is drawn for (any distinct constants work).
SALT_RESET = 0x1
SALT_STEP = 0x2
SALT_REGIME = 0x3


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (returns a new array)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _S30)
        x = x * _M1
        x ^= x >> _S27
        x *= _M2
        x ^= x >> _S31
    return x


def hash32(x: np.ndarray) -> np.ndarray:
    """``lowbias32`` integer hash, in place on a uint32 array (returns it)."""
    x ^= x >> _S16
    x *= _H1
    x ^= x >> _S15
    x *= _H2
    x ^= x >> _S16
    return x


#: Largest user seed: every seed a shell accepts is in [0, MAX_SEED].
MAX_SEED = 2**63 - 1


def check_seed(seed: Any, where: str = "seed", count: int = 1) -> int:
    """``seed`` as an int, or ``ValueError`` naming ``where`` and the allowed range: an integer
    (0-d integer arrays too; not a bool, float or string) such that the ``count`` consecutive
    seeds ``seed .. seed + count - 1`` lie in [0, MAX_SEED]."""
    if isinstance(seed, np.ndarray) and seed.ndim == 0:
        seed = seed[()]
    high = MAX_SEED - (count - 1)
    ok = isinstance(seed, numbers.Integral) and not isinstance(seed, bool | np.bool_)
    if not ok or not 0 <= int(seed) <= high:
        span = "" if count == 1 else f" (it seeds {count} consecutive users)"
        raise ValueError(f"{where} must be an integer in [0, {high}]{span}, got {seed!r}")
    return int(seed)


def seed_to_key(seed: int | np.ndarray, episode: int | np.ndarray = 0) -> np.ndarray:
    """64-bit key(s) of the ``episode``-th episode of a user seeded with ``seed``."""
    seed = np.asarray(seed, dtype=np.uint64)
    episode = np.asarray(episode, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(mix64(seed + _GOLDEN64) + episode * _GOLDEN64)


#: Increment of a user's 32-bit stream counter per step (a Weyl sequence).
WEYL32 = np.uint32(0x9E3779B9)


def stream_start(keys: np.ndarray) -> np.ndarray:
    """Initial 32-bit stream counters (B,) uint32 of episode keys (B,) uint64."""
    return (mix64(keys) >> _S32).astype(np.uint32)


@lru_cache(maxsize=64)
def column_codes(n: int, salt: int) -> np.ndarray:
    """The per-column codes XOR-ed into a user's stream (read-only uint32 array)."""
    salt_code = np.uint32((salt * 0x632BE5AB) % 2**32)
    codes = hash32(np.arange(n, dtype=np.uint32) * np.uint32(0x85EBCA6B) + salt_code)
    codes.setflags(write=False)
    return codes


def uniforms(stream: np.ndarray, n: int, salt: int) -> np.ndarray:
    """``(B, n)`` uniforms in [0, 1) for the users' current stream counters (B,) uint32.

    Entry ``(b, j)`` is ``lowbias32(stream_b XOR code(j, salt))`` scaled to 24 bits: a function
    of that user's key, step and ``(j, salt)`` only.
    """
    x = stream[:, None] ^ column_codes(n, salt)
    hash32(x)
    x >>= _S8
    out = x.astype(np.float32)
    out *= _INV24
    return out
