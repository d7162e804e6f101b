"""Slate utilities: random slates, top-k, and exact slate optimisers for MNL and cascade choice.

Every agent builds its slates with these functions (one place for each):

* :func:`random_slates` - uniformly random slates of distinct candidates (defined beside the
  ``Slate`` space in :mod:`recsim_gym.env.spaces`, where the simulator's logging policy uses it);
* :func:`top_k` - the k highest scores per row, best first;
* the MNL optimisers below (:func:`optimise_slates` dispatches by name) and
  :func:`cascade_best_slate` for the cascade model.

MNL with position bias.

The SlateQ decomposition values a slate ``A = (a_0, ..., a_{k-1})`` (ordered, distinct
candidates) as the choice-weighted sum of item values::

    Q(s, A) = (w_0 v_0 + sum_p rho_p w_{a_p} v_{a_p}) / (w_0 + sum_p rho_p w_{a_p})

with ``w_i > 0`` the MNL weight (``exp`` of the utility) of candidate ``i``, ``w_0`` the
no-click weight with value ``v_0``, and ``rho_p > 0`` the examination weight of position ``p``.
Subtracting ``v_0`` everywhere reduces it to ``v_0 + R(A)`` with
``R(A) = sum rho w (v - v_0) / (w_0 + sum rho w)``, so the optimisers below take the values
*relative to no-click* and ``w_0`` is folded into the weights (``weight = w_i / w_0``).

Optimisers (each ``(weight (B, m), value (B, m), rho (k,)) -> slates (B, k)``):

* :func:`top_k_slate` - the k largest ``weight * value`` (SlateQ's "top-k"; not exact).
* :func:`greedy_slate` - fill positions one by one with the item that most raises ``R``
  (SlateQ's "greedy"; not exact).
* :func:`dinkelbach_slate` - exact, batched: Dinkelbach's iteration on the ratio.
* :func:`lp_slate` - exact: the fractional assignment LP (Charnes-Cooper transform) solved by
  ``scipy.optimize.linprog``, one instance per row (slow; the reference the others are tested on).
* :func:`brute_force_slate` - enumeration of all ordered slates (tiny instances, tests).
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit
from scipy.optimize import linprog

from recsim_gym.env.spaces import random_slates

__all__ = ["OPTIMISERS", "brute_force_slate", "cascade_best_slate", "dinkelbach_slate", "greedy_slate",
           "lp_slate", "optimise_slates", "random_slates", "slate_value", "top_k", "top_k_slate"]

OPTIMISERS = ("top_k", "greedy", "dinkelbach", "lp")


def slate_value(weight: np.ndarray, value: np.ndarray, rho: np.ndarray, slates: np.ndarray
                ) -> np.ndarray:
    """``R(A)`` of each row's slate (B,): value relative to no-click, no-click weight 1."""
    w = np.take_along_axis(weight, slates, axis=1) * rho
    return (w * np.take_along_axis(value, slates, axis=1)).sum(1) / (1.0 + w.sum(1))


def _place(items_best_first: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Put the r-th best item at the position with the r-th largest ``rho`` (rearrangement)."""
    order = np.argsort(-rho, kind="stable")
    slates = np.empty_like(items_best_first)
    slates[:, order] = items_best_first
    return slates


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores per row, best first (ties: lower index first,
    by a stable sort; ``argpartition`` would break ties arbitrarily)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def top_k_slate(weight: np.ndarray, value: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """The k candidates with the largest ``weight * value``, best at the most examined position."""
    return _place(top_k(weight * value, len(rho)), rho)


def greedy_slate(weight: np.ndarray, value: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Fill positions (most examined first) with the candidate that most raises ``R``."""
    b, m = weight.shape
    rows = np.arange(b)
    num = np.zeros(b)
    den = np.ones(b)
    used = np.zeros((b, m), dtype=bool)
    picks = np.empty((b, len(rho)), dtype=np.int64)
    for r, p in enumerate(np.argsort(-rho, kind="stable")):
        w = rho[p] * weight
        ratio = (num[:, None] + w * value) / (den[:, None] + w)
        ratio[used] = -np.inf
        pick = ratio.argmax(1)
        picks[:, r] = pick
        used[rows, pick] = True
        num += w[rows, pick] * value[rows, pick]
        den += w[rows, pick]
    return _place(picks, rho)


def dinkelbach_slate(weight: np.ndarray, value: np.ndarray, rho: np.ndarray, iterations: int = 50
                     ) -> np.ndarray:
    """Exact maximiser of ``R``: for ratio ``lam`` the best slate takes the k largest
    ``w (v - lam)`` (at positions by decreasing ``rho``); ``lam`` becomes that slate's ratio,
    which never decreases; stop when no row's ratio rises by more than 1e-12 (finite: at most
    C(m, k) slates). One compiled pass over rows (:func:`_dinkelbach_rows`)."""
    rho = np.asarray(rho, dtype=np.float64)
    return _dinkelbach_rows(np.ascontiguousarray(weight, dtype=np.float64),
                            np.ascontiguousarray(value, dtype=np.float64), rho,
                            np.argsort(-rho, kind="stable"), iterations)


@njit(cache=True, nogil=True)
def _top_k_into(scores, k, chosen, taken):
    """The k largest ``scores`` into ``chosen``, best first (ties: lower index first)."""
    m = scores.shape[0]
    for j in range(m):
        taken[j] = False
    for r in range(k):
        best = -1
        for j in range(m):
            if not taken[j] and (best < 0 or scores[j] > scores[best]):
                best = j
        chosen[r] = best
        taken[best] = True


@njit(cache=True, nogil=True)
def _ratio(weight, value, rho, order, chosen):
    """``R`` of the slate that puts ``chosen[r]`` at position ``order[r]``."""
    num = 0.0
    den = 0.0
    for r in range(chosen.shape[0]):
        w = weight[chosen[r]] * rho[order[r]]
        num += w * value[chosen[r]]
        den += w
    return num / (1.0 + den)


@njit(cache=True, nogil=True)
def _dinkelbach_rows(weight, value, rho, order, iterations):
    b, m = weight.shape
    k = rho.shape[0]
    slates = np.empty((b, k), np.int64)
    scores = np.empty(m)
    taken = np.empty(m, np.bool_)
    current = np.empty(k, np.int64)
    trial = np.empty(k, np.int64)
    for row in range(b):
        for j in range(m):
            scores[j] = weight[row, j] * value[row, j]
        _top_k_into(scores, k, current, taken)
        lam = _ratio(weight[row], value[row], rho, order, current)
        for _ in range(iterations):
            for j in range(m):
                scores[j] = weight[row, j] * (value[row, j] - lam)
            _top_k_into(scores, k, trial, taken)
            ratio = _ratio(weight[row], value[row], rho, order, trial)
            if not ratio > lam + 1e-12:
                break
            current[:] = trial
            lam = ratio
        for r in range(k):
            slates[row, order[r]] = current[r]
    return slates


def lp_slate(weight: np.ndarray, value: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Exact maximiser of ``R`` by linear programming, one row at a time.

    Variables ``x_ip`` (item i at position p) relaxed to the assignment polytope (each position
    filled once, each item at most once). ``R`` is linear-fractional in ``x``; the Charnes-Cooper
    transform ``y = x t``, ``t = 1 / (1 + sum rho_p w_i x_ip)`` makes it the LP::

        max  sum_ip rho_p w_i v_i y_ip
        s.t. sum_i y_ip = t  (each p),  sum_p y_ip <= t  (each i),
             t + sum_ip rho_p w_i y_ip = 1,  y, t >= 0.

    A linear-fractional objective attains its maximum at a vertex of the polytope, and the
    transform maps vertices to vertices, so the dual simplex's basic solution is integral
    (a slate) up to round-off; positions are read off with ``argmax_i y_ip``.
    """
    b, m = weight.shape
    k = len(rho)
    n = m * k  # y_ip at column i * k + p, then t
    slates = np.empty((b, k), dtype=np.int64)
    pos_rows = np.zeros((k, n + 1))
    for p in range(k):
        pos_rows[p, p:n:k] = 1.0
        pos_rows[p, n] = -1.0
    item_rows = np.zeros((m, n + 1))
    for i in range(m):
        item_rows[i, i * k:(i + 1) * k] = 1.0
        item_rows[i, n] = -1.0
    for row in range(b):
        rw = np.outer(weight[row], rho).ravel()
        c = -np.append(rw * np.repeat(value[row], k), 0.0)
        a_eq = np.vstack([pos_rows, np.append(rw, 1.0)])
        b_eq = np.append(np.zeros(k), 1.0)
        res = linprog(c, A_ub=item_rows, b_ub=np.zeros(m), A_eq=a_eq, b_eq=b_eq,
                      bounds=(0, None), method="highs-ds")
        if res.status != 0:
            raise RuntimeError(f"slate LP failed on row {row}: {res.message}")
        y = res.x[:n].reshape(m, k) / res.x[n]
        slates[row] = y.argmax(0)
    return slates


def brute_force_slate(weight: np.ndarray, value: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Enumerate every ordered slate of k distinct candidates (tiny m, k only)."""
    m, k = weight.shape[1], len(rho)
    every = np.array(list(itertools.permutations(range(m), k)), dtype=np.int64)
    best = np.empty((weight.shape[0], k), dtype=np.int64)
    for row in range(weight.shape[0]):
        values = slate_value(np.broadcast_to(weight[row], (len(every), m)),
                             np.broadcast_to(value[row], (len(every), m)), rho, every)
        best[row] = every[values.argmax()]
    return best


def cascade_best_slate(attract: np.ndarray, value: np.ndarray, slate_size: int, decay: float
                       ) -> np.ndarray:
    """Slate maximising the expected reward under the cascade model, exactly.

    The user scans positions in order, clicks item ``i`` with probability ``a_i`` (``attract``)
    and otherwise goes on with probability ``d = decay``:
    ``R = sum_i a_i v_i prod_{j<i} (1 - a_j) d``. Swapping two neighbours shows that any set is
    best shown in decreasing ``a v / (1 - d + d a)``; so, with candidates in that order, a
    dynamic programme over (candidate, items still to place) picks the best k-subset:
    ``best[j, i] = max(best[j, i+1], a_i v_i + (1 - a_i) d best[j-1, i+1])`` (O(m k) per user).
    """
    k, d = slate_size, decay
    batch, m = attract.shape
    order = np.argsort(-(attract * value) / (1.0 - d + d * attract), axis=1, kind="stable")
    a = np.take_along_axis(attract, order, axis=1)
    gain = a * np.take_along_axis(value, order, axis=1)
    best = np.zeros((k + 1, m + 1, batch))
    best[1:, m] = -np.inf  # cannot place items past the end
    take = np.zeros((k + 1, m, batch), dtype=bool)
    for i in range(m - 1, -1, -1):
        for j in range(1, k + 1):
            with_i = gain[:, i] + (1.0 - a[:, i]) * d * best[j - 1, i + 1]
            take[j, i] = with_i > best[j, i + 1]
            best[j, i] = np.where(take[j, i], with_i, best[j, i + 1])
    slate = np.empty((batch, k), dtype=np.int64)
    left = np.full(batch, k)
    filled = np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)
    for i in range(m):
        chosen = (left > 0) & take[left, i, rows]
        slate[rows[chosen], filled[chosen]] = order[chosen, i]
        filled += chosen
        left -= chosen
    return slate


def optimise_slates(method: str, weight: np.ndarray, value: np.ndarray, rho: np.ndarray
                    ) -> np.ndarray:
    """Dispatch by name: one of :data:`OPTIMISERS`."""
    weight = np.asarray(weight, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    rho = np.asarray(rho, dtype=np.float64)
    if method == "top_k":
        return top_k_slate(weight, value, rho)
    if method == "greedy":
        return greedy_slate(weight, value, rho)
    if method == "dinkelbach":
        return dinkelbach_slate(weight, value, rho)
    if method == "lp":
        return lp_slate(weight, value, rho)
    raise ValueError(f"unknown slate optimiser {method!r}; choose one of {OPTIMISERS}")
