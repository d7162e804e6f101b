"""Reference agents every comparison needs, and the oracle policies behind them.

* :class:`RandomAgent` - uniformly random slates.
* :class:`OracleMyopicAgent` - the best immediate expected reward under the TRUE model, read
  from the latent state (``observe_latent=True``): an upper bound for any myopic policy, and
  the declared exception to "agents see only observations".

The oracle functions take batched latent observations and the world's Params:
:func:`item_terms` (the true per-candidate utility, conversion probability and value),
:func:`myopic_greedy` (MNL, exact by Dinkelbach's iteration), :func:`cascade_myopic` (cascade,
exact), :func:`quality_aware` (myopic plus a bonus for quality: gives up some immediate reward
to keep the user), :func:`highest_appeal` (observable only: a click maximiser's instinct) and
:func:`interest_myopic` (RecSim's myopic policy on the interest-evolution world).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsim_gym.agents.base import BaseAgent, Observation
from recsim_gym.agents.slates import cascade_best_slate, dinkelbach_slate, random_slates, top_k
from recsim_gym.env.catalog import price_of
from recsim_gym.env.params import Params


class RandomAgent(BaseAgent):
    """Uniformly random slates without repeats.

    :param params: the world's Params (for ``slate_size``)
    :param seed: seed of the agent's own random generator
    """

    def __init__(self, params: Any, seed: int = 0):
        self.slate_size = params.slate_size
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        """k random distinct candidates per user."""
        batch, m = obs["candidates"].shape[:2]
        return random_slates(self.rng, batch, m, self.slate_size)


class OracleMyopicAgent(BaseAgent):
    """The slate with the highest immediate expected reward under the TRUE choice and
    conversion model, computed from the latent state (``observe_latent=True``).

    On the default world it is exact for both choice models: MNL by Dinkelbach's iteration
    (:func:`myopic_greedy`), cascade by an exchange-argument order and a dynamic programme
    (:func:`cascade_myopic`). On ``interest_evolution`` it is RecSim's myopic policy
    (:func:`interest_myopic`: maximal click probability; every click is worth the same watch time).

    :param params: the world's Params
    """

    requires_latent = True

    def __init__(self, params: Any, seed: int = 0):
        self.params = params

    def act(self, obs: Observation) -> np.ndarray:
        """The myopically best slate per user."""
        if hasattr(self.params, "affinity_weight"):
            if self.params.choice_model == "cascade":
                return cascade_myopic(obs, self.params)
            return myopic_greedy(obs, self.params)
        return interest_myopic(obs, self.params.slate_size)


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
        conv_value = price_of(price_feature, params.price_min, params.price_max)
    value = params.click_weight + params.conversion_weight * p_convert * conv_value
    return {"utility": utility, "p_convert": p_convert, "value": value, "quality": quality}


def slate_outcomes(obs: dict[str, np.ndarray], params: Params, slates: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Exact expected outcomes of showing ``slates`` (B, k) under the true model (latent
    observation): ``choice`` (B, k + 1) the click probability per position then no-click (the
    env's ``info["choice_probs"]``), and per user the expected ``click``, ``conversion`` and
    ``reward``. The ground truth of off-policy evaluation."""
    terms = item_terms(obs, params)
    k = slates.shape[1]
    utility = np.take_along_axis(terms["utility"], slates, axis=1).astype(np.float64)
    rho = params.position_decay ** np.arange(k)
    if params.choice_model == "cascade":
        attract = 1.0 / (1.0 + np.exp(params.no_click_utility - utility))
        # examined with probability position_decay after each unattractive item
        reach = np.concatenate([np.ones((len(slates), 1)), np.cumprod(
            (1.0 - attract) * params.position_decay, axis=1)[:, :-1]], axis=1)
        weights = attract * reach
        none = np.maximum(0.0, 1.0 - weights.sum(1))
    else:
        weights = np.exp(utility - params.no_click_utility) * rho
        none = np.ones(len(slates))
    total = weights.sum(1) + none
    choice = np.concatenate([weights, none[:, None]], axis=1) / total[:, None]
    p_convert = np.take_along_axis(terms["p_convert"], slates, axis=1)
    value = np.take_along_axis(np.broadcast_to(terms["value"], terms["utility"].shape), slates, axis=1)
    return {"choice": choice, "click": choice[:, :k].sum(1),
            "conversion": (choice[:, :k] * p_convert).sum(1), "reward": (choice[:, :k] * value).sum(1)}


def highest_appeal(obs: dict[str, np.ndarray], params: Params) -> np.ndarray:
    """The k most appealing candidates (a click maximiser's first instinct; observable only)."""
    return top_k(obs["candidates"][..., params.num_topics], params.slate_size)


def myopic_greedy(obs: dict[str, np.ndarray], params: Params) -> np.ndarray:
    """The slate with the highest immediate expected reward under the true MNL model (latent)."""
    terms = item_terms(obs, params)
    weight = np.exp(terms["utility"] - params.no_click_utility)
    return dinkelbach_slate(weight, terms["value"], params.position_decay ** np.arange(params.slate_size))


def cascade_myopic(obs: dict[str, np.ndarray], params: Params) -> np.ndarray:
    """The slate with the highest immediate expected reward under the true cascade model (latent)."""
    terms = item_terms(obs, params)
    attract = 1.0 / (1.0 + np.exp(params.no_click_utility - terms["utility"]))
    return cascade_best_slate(attract, terms["value"], params.slate_size, params.position_decay)


def quality_aware(obs: dict[str, np.ndarray], params: Params, quality_bonus: float = 3.0
                  ) -> np.ndarray:
    """Like :func:`myopic_greedy`, but each click is also worth ``quality_bonus * quality``
    (latent): it gives up some immediate reward to keep the user satisfied."""
    terms = item_terms(obs, params)
    weight = np.exp(terms["utility"] - params.no_click_utility)
    return dinkelbach_slate(weight, terms["value"] + quality_bonus * terms["quality"],
                            params.position_decay ** np.arange(params.slate_size))


def interest_myopic(obs: dict[str, np.ndarray], slate_size: int) -> np.ndarray:
    """The ``slate_size`` candidates with the highest ``<interest, features>``, best first (ties:
    lower position first): RecSim's myopic policy on the interest-evolution world, where the
    click probability rises with that affinity. Reads ``obs["interest"]``, so the env needs
    ``exposure="recsim"`` (RecSim's own exposure) or ``observe_latent=True``."""
    if "interest" not in obs:
        raise ValueError("the myopic policy reads the user's interest: make the env with "
                         "exposure='recsim' (RecSim's observation) or observe_latent=True")
    affinity = np.einsum("bmt,bt->bm", obs["candidates"], obs["interest"])
    order = np.argsort(-affinity, axis=1, kind="stable")
    return order[:, :slate_size].astype(np.int64)
