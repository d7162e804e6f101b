"""Choice models: slate utilities -> probabilities of clicking each position or nothing.

A choice model is one function ``(utility (B, k), params) -> probs (B, k + 1)``, where column
``i < k`` is the probability of clicking the item at position ``i`` and the last column is the
no-click option. Rows sum to 1. ``utility`` is the position-free utility of each shown item
(interest affinity, appeal, fatigue); position effects are the model's business.
To add a model, write the function and add it to :data:`CHOICE_MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from recsim_gym.env.params import Params

ChoiceModel = Callable[[np.ndarray, Params], np.ndarray]


@lru_cache(maxsize=64)
def position_examination(position_decay: float, k: int) -> np.ndarray:
    """Examination probability ``position_decay**i`` of positions ``i = 0..k-1`` (float32)."""
    rho = (position_decay ** np.arange(k)).astype(np.float32)
    rho.setflags(write=False)
    return rho


@lru_cache(maxsize=64)
def _mnl_offset(position_decay: float, no_click_utility: float, k: int) -> np.ndarray:
    offset = (np.log(position_examination(position_decay, k)) - no_click_utility).astype(np.float32)
    offset.setflags(write=False)
    return offset


def multinomial_logit(utility: np.ndarray, params: Params) -> np.ndarray:
    """MNL with a no-click option and geometric position bias.

    ``P(i) = rho_i exp(u_i) / (exp(u_0) + sum_j rho_j exp(u_j))``, ``P(none) = exp(u_0) / (...)``,
    where ``rho_i = position_decay**i`` (i.e. ``log rho_i`` is added to the utility).
    Utilities are shifted by the no-click utility before exponentiating, so nothing overflows
    for the validated parameter ranges.
    """
    k = utility.shape[1]
    probs = np.empty((utility.shape[0], k + 1), dtype=np.float32)
    weights = probs[:, :k]
    np.add(utility, _mnl_offset(params.position_decay, params.no_click_utility, k), out=weights)
    np.exp(weights, out=weights)
    probs[:, k] = 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def cascade(utility: np.ndarray, params: Params) -> np.ndarray:
    """Cascade model: scan positions in order; click the first attractive item.

    Item ``i`` is attractive with probability ``a_i = sigmoid(u_i - no_click_utility)``; after
    an unattractive item the user examines the next position with probability
    ``position_decay``. ``P(i) = a_i prod_{j<i} (1 - a_j) position_decay``.
    """
    k = utility.shape[1]
    attract = 1.0 / (1.0 + np.exp(np.float32(params.no_click_utility) - utility))
    reach = np.ones((utility.shape[0], k), dtype=np.float32)
    if k > 1:
        np.cumprod((1.0 - attract[:, :-1]) * np.float32(params.position_decay), axis=1,
                   out=reach[:, 1:])
    probs = np.empty((utility.shape[0], k + 1), dtype=np.float32)
    np.multiply(attract, reach, out=probs[:, :k])
    probs[:, k] = np.maximum(0.0, 1.0 - probs[:, :k].sum(axis=1))
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


CHOICE_MODELS: dict[str, ChoiceModel] = {"mnl": multinomial_logit, "cascade": cascade}


def choice_probabilities(utility: np.ndarray, params: Params) -> np.ndarray:
    """Dispatch to ``params.choice_model``."""
    return CHOICE_MODELS[params.choice_model](utility, params)


def sample_choice(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Chosen column per row (``k`` = no click) by inverse CDF with uniforms ``u`` (B,)."""
    cdf = np.cumsum(probs[:, :-1], axis=1)
    return (cdf <= u[:, None]).sum(axis=1)
