"""Hand-written batched policies: uniform random and greedy rankers over candidate scores.

They read observations only (``observe_latent=True`` ones for the latent-state rankers) and
are used by the README demo and by the tests that show the default world's trade-off.
"""

from __future__ import annotations

import numpy as np

from recsim_gym.env.params import Params


def random_slates(rng: np.random.Generator, batch_size: int, params: Params) -> np.ndarray:
    """Uniformly random slates (B, k) without repeats."""
    keys = rng.random((batch_size, params.num_candidates))
    return np.argsort(keys, axis=1)[:, : params.slate_size]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores per row, best first (B, k)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _latent(obs: dict[str, np.ndarray]) -> None:
    if "interest" not in obs:
        raise ValueError("this policy reads the latent state: make the env with observe_latent=True")


def item_terms(obs: dict[str, np.ndarray], params: Params) -> dict[str, np.ndarray]:
    """Per-candidate click utility, conversion probability and value per click (B, m).

    Uses the true model on the latent observation (what an oracle knows).
    """
    _latent(obs)
    t = params.num_topics
    cand = obs["candidates"]
    topic, appeal, price_feature = cand[..., :t], cand[..., t], cand[..., t + 1]
    affinity = np.einsum("bmt,bt->bm", topic, obs["interest"])
    fatigue = np.einsum("bmt,bt->bm", topic, obs["fatigue"])
    utility = (params.affinity_weight * affinity + params.appeal_weight * appeal
               - params.fatigue_weight * fatigue)
    quality = obs["candidate_quality"]
    logit = (params.conversion_bias + params.conversion_affinity * affinity
             + params.conversion_quality * quality - params.conversion_price * price_feature)
    p_convert = 1.0 / (1.0 + np.exp(-logit))
    conv_value = 1.0
    if params.reward_mode == "revenue":
        conv_value = params.price_min * (params.price_max / params.price_min) ** price_feature
    value = params.click_weight + params.conversion_weight * p_convert * conv_value
    return {"utility": utility, "p_convert": p_convert, "value": value, "quality": quality}


def highest_appeal(obs: dict[str, np.ndarray], params: Params) -> np.ndarray:
    """The k most appealing candidates (a click maximiser's first instinct; observable only)."""
    return top_k(obs["candidates"][..., params.num_topics], params.slate_size)


def mnl_best_slate(weight: np.ndarray, value: np.ndarray, params: Params, iterations: int = 20
                   ) -> np.ndarray:
    """Slate maximising ``sum_i rho_i w_i v_i / (w_0 + sum_i rho_i w_i)`` exactly (MNL).

    ``weight`` is ``exp(utility - no_click_utility)`` per candidate, ``value`` the reward per
    click. Dinkelbach's iteration: for the current ratio ``lam`` the best slate puts the k
    largest ``w (v - lam)`` in order of decreasing examination ``rho`` (rearrangement
    inequality), then ``lam`` becomes that slate's ratio; it stops when the slate is stable.
    """
    k = params.slate_size
    rho = params.position_decay ** np.arange(k)
    lam = np.zeros((weight.shape[0], 1))
    slate = top_k(weight * value, k)
    for _ in range(iterations):
        w = np.take_along_axis(weight, slate, axis=1) * rho
        lam = ((w * np.take_along_axis(value, slate, axis=1)).sum(1) / (1.0 + w.sum(1)))[:, None]
        new = top_k(weight * (value - lam), k)
        if np.array_equal(new, slate):
            break
        slate = new
    return slate


def myopic_greedy(obs: dict[str, np.ndarray], params: Params) -> np.ndarray:
    """The slate with the highest immediate expected reward under the true MNL model (latent)."""
    terms = item_terms(obs, params)
    weight = np.exp(terms["utility"] - params.no_click_utility)
    return mnl_best_slate(weight, terms["value"], params)


def cascade_best_slate(attract: np.ndarray, value: np.ndarray, params: Params) -> np.ndarray:
    """Slate maximising the expected reward under the cascade model, exactly.

    The user scans positions in order, clicks item ``i`` with probability ``a_i`` (``attract``)
    and otherwise goes on with probability ``d = position_decay``:
    ``R = sum_i a_i v_i prod_{j<i} (1 - a_j) d``. Swapping two neighbours shows that any set is
    best shown in decreasing ``a v / (1 - d + d a)``; so, with candidates in that order, a
    dynamic programme over (candidate, items still to place) picks the best k-subset:
    ``best[j, i] = max(best[j, i+1], a_i v_i + (1 - a_i) d best[j-1, i+1])`` (O(m k) per user).
    """
    k, d = params.slate_size, params.position_decay
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


def cascade_myopic(obs: dict[str, np.ndarray], params: Params) -> np.ndarray:
    """The slate with the highest immediate expected reward under the true cascade model (latent)."""
    terms = item_terms(obs, params)
    attract = 1.0 / (1.0 + np.exp(params.no_click_utility - terms["utility"]))
    return cascade_best_slate(attract, terms["value"], params)


def quality_aware(obs: dict[str, np.ndarray], params: Params, quality_bonus: float = 3.0
                  ) -> np.ndarray:
    """Like :func:`myopic_greedy`, but each click is also worth ``quality_bonus * quality``
    (latent): it gives up some immediate reward to keep the user satisfied."""
    terms = item_terms(obs, params)
    weight = np.exp(terms["utility"] - params.no_click_utility)
    return mnl_best_slate(weight, terms["value"] + quality_bonus * terms["quality"], params)
