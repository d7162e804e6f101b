"""Online learners: popularity and contextual bandits (epsilon-greedy, LinUCB, Thompson sampling).

All four learn from slate feedback through :meth:`observe` and rank candidates by a score,
showing the top k (best first). ``learn(env, total_steps)`` runs them online on a vector env
for that many env steps; evaluation then uses the learned model (frozen unless the harness
is asked to keep learning).

Context features of a (user, candidate) pair, for the linear bandits: the candidate's
observable features (on the default world: topic vector, appeal, price feature, popularity),
the element-wise product of its topic vector with the user's recent click profile (mean topic
vector of the clicked history entries) and with the declared interests (zeros on worlds
without them), and a bias.

Feedback: the clicked item is labelled with the step's reward (click plus conversion value, so
the models learn expected immediate reward, not just clicks); the items shown *above* it were
examined and
skipped (negatives); items below the click and all items of a no-click slate get no label
apart from the first position, which was examined (a cascade-style reading of slate feedback
that avoids teaching the model the position bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from recsim_gym.agents.base import BaseAgent, Observation, Transition
from recsim_gym.agents.slates import random_slates, top_k
from recsim_gym.env.fields import Config, option


def item_keys(candidates: np.ndarray, num_topics: int) -> np.ndarray:
    """64-bit keys identifying items by their static features (topic vector, appeal, price):
    ``sum_c mix(bits_c * w_c) * 0xBF58476D1CE4E5B9`` over the float32 bit patterns of the
    first ``num_topics + 2`` columns, ``w_c = (c + 1) * golden | 1`` and ``mix(x) = x ^ x >> 29``
    (mod 2^64; one compiled pass, :func:`_keys`)."""
    static = np.ascontiguousarray(candidates[..., : num_topics + 2], dtype=np.float32)
    flat = static.view(np.uint32).reshape(-1, static.shape[-1])
    return _keys(flat).reshape(static.shape[:-1])


@njit(cache=True, nogil=True)
def _keys(bits: np.ndarray) -> np.ndarray:
    out = np.empty(bits.shape[0], np.uint64)
    golden, finish = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)
    for row in range(bits.shape[0]):
        total = np.uint64(0)
        for c in range(bits.shape[1]):
            mixed = np.uint64(bits[row, c]) * ((np.uint64(c + 1) * golden) | np.uint64(1))
            mixed ^= mixed >> np.uint64(29)
            total += mixed * finish
        out[row] = total
    return out


def _candidate_dim(params: Any) -> int:
    from recsim_gym.env.simulator import simulator_for

    return simulator_for(params).observation_space()["candidates"].shape[-1]


def _user_dim(params: Any) -> int:
    from recsim_gym.env.simulator import simulator_for

    return simulator_for(params).observation_space()["user"].shape[-1]


def _labels(transition: Transition, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) labels (the step's reward at the clicked position - click plus conversion value -,
    0 where examined and skipped) and a mask of labelled positions."""
    position = np.asarray(transition.info["position"])
    slots = np.arange(k)[None, :]
    clicked = position[:, None] == slots
    examined = np.where(position[:, None] >= 0, slots <= position[:, None], slots == 0)
    return clicked * np.asarray(transition.reward, dtype=float)[:, None], examined


def _run_online(agent: Any, env: Any, total_steps: int, callback: Any) -> None:
    """Act and observe on ``env`` (a RecSimVectorEnv) for ``total_steps`` user-steps."""
    from gymnasium.vector import AutoresetMode

    obs, _ = env.reset()
    done = 0
    ended = np.zeros(env.num_envs, dtype=bool)
    next_step_reset = env.autoreset_mode == AutoresetMode.NEXT_STEP
    while done < total_steps:
        slates = agent.act(obs)
        next_obs, reward, terminated, truncated, info = env.step(slates)
        live = ~ended if next_step_reset else np.ones(env.num_envs, dtype=bool)
        # (with NEXT_STEP autoreset, slots that only restarted this step carry no feedback)
        if live.any():
            agent.observe(Transition(
                {k: v[live] for k, v in obs.items()}, slates[live], reward[live],
                {k: v[live] for k, v in next_obs.items()}, terminated[live], truncated[live],
                {k: np.asarray(v)[live] for k, v in info.items()
                 if not k.startswith("_") and k != "final_obs"}))
        done += int(live.sum())
        ended = terminated | truncated
        obs = next_obs
        if callback is not None and callback(agent, done) is False:
            break


@dataclass(frozen=True)
class PopularityConfig(Config):
    """Hyperparameters of :class:`PopularityAgent`."""

    smoothing: float = option(5.0, "Pseudo-impressions at the global mean reward (shrinks rarely "
                              "shown items).", 0.0, low_open=True)
    seed: int = option(0, "Unused (the agent is deterministic); accepted like every agent's.", 0)


@dataclass(frozen=True)
class LinearBanditConfig(Config):
    """Hyperparameters shared by the linear bandits."""

    ridge: float = option(1.0, "Prior precision of the weights.", 0.0, low_open=True)
    seed: int = option(0, "Seed of the exploration.", 0)


@dataclass(frozen=True)
class EpsilonGreedyConfig(LinearBanditConfig):
    """Hyperparameters of :class:`EpsilonGreedyAgent`."""

    epsilon: float = option(0.1, "Probability of a random slate while learning.", 0.0, 1.0)


@dataclass(frozen=True)
class LinUCBConfig(LinearBanditConfig):
    """Hyperparameters of :class:`LinUCBAgent`."""

    alpha: float = option(1.0, "Width of the upper confidence bound.", 0.0)


@dataclass(frozen=True)
class ThompsonConfig(LinearBanditConfig):
    """Hyperparameters of :class:`ThompsonAgent`."""

    scale: float = option(0.5, "Scale of the posterior draws.", 0.0)


class PopularityAgent(BaseAgent):
    """Shows the candidates that earned the most per impression so far: the reward their clicks
    produced (conversions included) over their shows, smoothed toward the global mean with
    ``smoothing`` pseudo-shows (learned online; ties: observed popularity prior). Items are told
    apart by their static features (:func:`item_keys`).

    :param smoothing: pseudo-impressions at the global mean reward (shrinks rarely shown items)
    """

    def __init__(self, params: Any, seed: int = 0, **hyperparameters: Any):
        self.config = PopularityConfig().replace(seed=seed, **hyperparameters)
        self.slate_size, self.num_topics = params.slate_size, params.num_topics
        # identifying columns: topic, appeal, price where the world has them (on worlds whose
        # candidates are only a topic, "popularity" becomes popularity per topic)
        self.key_columns = min(_candidate_dim(params), params.num_topics + 2)
        self.keys = np.empty(0, dtype=np.uint64)
        self.clicks = np.empty(0)
        self.shows = np.empty(0)

    def _lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.searchsorted(self.keys, keys)
        index = np.minimum(index, max(len(self.keys) - 1, 0))
        found = (self.keys[index] == keys) if len(self.keys) else np.zeros(keys.shape, bool)
        return index, found

    def act(self, obs: Observation) -> np.ndarray:
        """Top-k by smoothed reward per impression, then by observed popularity."""
        keys = item_keys(obs["candidates"], self.key_columns - 2)
        index, found = self._lookup(keys)
        prior = self.clicks.sum() / max(self.shows.sum(), 1.0)
        earned = np.where(found, self.clicks[index] if len(self.clicks) else 0.0, 0.0)
        shows = np.where(found, self.shows[index] if len(self.shows) else 0.0, 0.0)
        smoothing = self.config.smoothing
        score = (earned + smoothing * prior) / (shows + smoothing)
        if obs["candidates"].shape[-1] > self.num_topics + 2:  # observed popularity breaks ties
            score = score + 1e-3 * obs["candidates"][..., self.num_topics + 2]
        return top_k(score, self.slate_size)

    def observe(self, transition: Transition) -> None:
        """Add each shown item's earned reward (and a show) to its counts."""
        shown = np.take_along_axis(item_keys(transition.obs["candidates"], self.key_columns - 2),
                                   transition.slates, axis=1)
        clicked, _ = _labels(transition, self.slate_size)
        keys, inverse = np.unique(shown.ravel(), return_inverse=True)
        add_clicks = np.bincount(inverse, weights=clicked.ravel(), minlength=len(keys))
        add_shows = np.bincount(inverse, minlength=len(keys)).astype(float)
        merged = np.union1d(self.keys, keys)
        clicks, shows = np.zeros(len(merged)), np.zeros(len(merged))
        clicks[np.searchsorted(merged, self.keys)] += self.clicks
        shows[np.searchsorted(merged, self.keys)] += self.shows
        clicks[np.searchsorted(merged, keys)] += add_clicks
        shows[np.searchsorted(merged, keys)] += add_shows
        self.keys, self.clicks, self.shows = merged, clicks, shows

    def learn(self, env: Any, total_steps: int, callback: Any = None) -> None:
        """Collect click counts online for ``total_steps`` env steps."""
        _run_online(self, env, total_steps, callback)


class LinearBandit(BaseAgent):
    """Shared linear model of P(click | user, candidate) on :meth:`features`; subclasses pick
    the exploration rule. Ridge regression with prior precision ``ridge``.

    :param params: the world's Params
    :param ridge: prior precision of the weights
    :param seed: exploration randomness
    """

    name = "linear_bandit"
    #: The hyperparameter dataclass of the subclass.
    config_class: type[LinearBanditConfig] = LinearBanditConfig

    def __init__(self, params: Any, seed: int = 0, **hyperparameters: Any):
        self.config = self.config_class().replace(seed=seed, **hyperparameters)
        ridge, seed = self.config.ridge, self.config.seed
        self.slate_size, self.num_topics = params.slate_size, params.num_topics
        self.declared = _user_dim(params) > params.num_topics  # default world: declared topics
        d = _candidate_dim(params) + 2 * self.num_topics + 1
        self.precision = ridge * np.eye(d)
        self.target = np.zeros(d)
        self.weights = np.zeros(d)
        self.covariance = np.eye(d) / ridge
        self.rng = np.random.default_rng(seed)

    def features(self, obs: Observation) -> np.ndarray:
        """(B, m, F + 2T + 1) context features of every (user, candidate) pair."""
        t = self.num_topics
        cand = obs["candidates"]
        hist = obs["history"]
        clicked = hist[..., -3:-2]  # click flag column (history ends with click, ..., valid)
        profile = (hist[..., :t] * clicked).sum(axis=1) / np.maximum(clicked.sum(axis=1), 1.0)
        declared = obs["user"][:, :t] if self.declared else np.zeros_like(profile)
        topic = cand[..., :t]
        bias = np.ones(cand.shape[:2] + (1,))
        return np.concatenate([cand, topic * profile[:, None, :], topic * declared[:, None, :], bias],
                              axis=2)

    def observe(self, transition: Transition) -> None:
        """Ridge-regression update from the labelled slate positions."""
        x = np.take_along_axis(self.features(transition.obs), transition.slates[..., None], axis=1)
        labels, mask = _labels(transition, self.slate_size)
        x, y = x[mask], labels[mask]
        self.precision += x.T @ x
        self.target += x.T @ y
        self.covariance = np.linalg.inv(self.precision)
        self.weights = self.covariance @ self.target

    def learn(self, env: Any, total_steps: int, callback: Any = None) -> None:
        """Learn online (acting with exploration) for ``total_steps`` env steps."""
        self.exploring = True
        try:
            _run_online(self, env, total_steps, callback)
        finally:
            self.exploring = False

    exploring = False

    def scores(self, obs: Observation, x: np.ndarray) -> np.ndarray:
        """Exploration-adjusted scores (B, m); the greedy estimate when not exploring."""
        return x @ self.weights

    def act(self, obs: Observation) -> np.ndarray:
        """Top-k candidates by score."""
        x = self.features(obs)
        return top_k(self.scores(obs, x), self.slate_size)


class EpsilonGreedyAgent(LinearBandit):
    """Greedy on the ridge estimate; while learning, each slate is random with prob. epsilon."""

    name = "epsilon_greedy"

    config_class = EpsilonGreedyConfig

    def act(self, obs: Observation) -> np.ndarray:
        """Greedy slates, random ones with probability epsilon while learning."""
        slates = super().act(obs)
        if self.exploring:
            explore = self.rng.random(len(slates)) < self.config.epsilon
            random = random_slates(self.rng, *obs["candidates"].shape[:2], self.slate_size)
            slates = np.where(explore[:, None], random, slates)
        return slates


class LinUCBAgent(LinearBandit):
    """Upper confidence bound ``x w + alpha sqrt(x^T A^-1 x)`` while learning."""

    name = "linucb"

    config_class = LinUCBConfig

    def scores(self, obs: Observation, x: np.ndarray) -> np.ndarray:
        """Optimistic scores while learning."""
        mean = x @ self.weights
        if not self.exploring:
            return mean
        width = np.sqrt(np.maximum(np.einsum("bmd,de,bme->bm", x, self.covariance, x), 0.0))
        return mean + self.config.alpha * width


class ThompsonAgent(LinearBandit):
    """Thompson sampling: one weight draw from the Gaussian posterior per step while learning."""

    name = "thompson"

    config_class = ThompsonConfig

    def scores(self, obs: Observation, x: np.ndarray) -> np.ndarray:
        """Scores under sampled weights while learning."""
        if not self.exploring:
            return x @ self.weights
        draw = self.rng.multivariate_normal(self.weights, self.config.scale**2 * self.covariance,
                                            method="cholesky")
        return x @ draw
