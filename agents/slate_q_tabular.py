"""Tabular slate Q-learning with the SlateQ decomposition, and a full-slate tabular baseline.

SlateQ (Ie et al., 2019) values a slate by the user's choice over it::

    Q(s, A) = sum_{j in A} P(j | s, A) Qbar(s, j) + P(none | s, A) Qbar(s, none)

so only an item-level table ``Qbar[state, item_class]`` (plus ``Qbar[state, none]``) is
learned, by TD on the consumed item: ``Qbar(s, j) += alpha (r + gamma V(s') - Qbar(s, j))``,
with ``V(s') = max_A Q(s', A)`` (``target="q_learning"``) or ``Q(s', A')`` of the slate the
agent shows next (``target="sarsa"``). The table has ``S x (I + 1)`` entries; the full-slate
learner (:class:`FullSlateQAgent`) needs ``S x I**k`` and sees each entry far less often.

**State abstraction** (``abstraction="recsim"``, from the observation only):
``recent_topic x engagement``: the dominant topic of the items clicked in the history window
(sum of their topic vectors, argmax; "none" if no click) and the number of clicks in the window
bucketed into ``engagement_buckets`` equal bins.
**Item abstraction**: ``topic x appeal bucket``: the candidate's dominant topic and its observed
appeal in ``appeal_buckets`` equal bins of [0, 1] (one bin when the world has no appeal feature).
``abstraction="tiny"`` is for :class:`TinySlateMDP` (state and item class are observed one-hots).

**Choice model**: a tabular conditional logit ``P(p | s, A) ∝ exp(U[s, class(A_p)] + b_p)``,
no click ∝ 1, learned by stochastic gradient ascent on the log-likelihood of observed clicks
(``choice_model="learned"``), or given (``choice_model="configured"`` with ``choice_utility``
and ``choice_position_bias``). Slates are optimised by :mod:`recsim_gym.agents.slate_optim`
(``top_k``, ``greedy``, ``dinkelbach`` or ``lp``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from recsim_gym.agents.base import BaseAgent, Transition
from recsim_gym.agents.slates import OPTIMISERS, optimise_slates, random_slates
from recsim_gym.env import RecSimVectorEnv, seeds
from recsim_gym.env.fields import Config, option
from recsim_gym.env.simulator import make_simulator, simulator_for


@dataclass(frozen=True)
class TabularSlateQConfig(Config):
    """Hyperparameters of tabular SlateQ (and of the full-slate baseline)."""

    preset: str = option("default", "World preset ('tiny': TinySlateMDP).")
    num_envs: int = option(64, "Users stepped together.", 1)
    total_steps: int = option(200_000, "Training budget in user-steps.", 0)
    gamma: float = option(0.95, "Discount.", 0.0, 1.0)
    alpha: float = option(0.1, "TD step size (per table entry, batch-averaged).", 0.0, 1.0,
                          low_open=True)
    target: str = option("q_learning", "TD target.", choices=("q_learning", "sarsa"))
    optimiser: str = option("dinkelbach", "Slate optimiser.", choices=OPTIMISERS)
    choice_model: str = option("learned", "Choice model: learned from clicks, or configured "
                               "(choice_utility).", choices=("learned", "configured"))
    choice_learning_rate: float = option(0.05, "SGD rate of the logit.", 0.0, low_open=True)
    choice_utility: list[list[float]] | None = option(
        None, "Configured utility table U[state][item_class] (choice_model='configured').")
    choice_position_bias: list[float] | None = option(
        None, "Configured log-examination per position (default all 0).")
    abstraction: str = option("recsim", "State and item abstraction.", choices=("recsim", "tiny"))
    engagement_buckets: int = option(3, "Bins of clicks in the history.", 1)
    appeal_buckets: int = option(3, "Bins of candidate appeal.", 1)
    epsilon_start: float = option(1.0, "Initial random-slate probability.", 0.0, 1.0)
    epsilon_end: float = option(0.05, "Final random-slate probability.", 0.0, 1.0)
    exploration_fraction: float = option(0.3, "Budget share of the decay.", 0.0, 1.0)
    truncation_is_terminal: bool = option(True, "No bootstrap at max_steps.")
    seed: int = option(0, "Seed of exploration and the agent's own training users.", 0)
    log_interval: int = option(10_000, "User-steps between callbacks.", 1)


# ---------------------------------------------------------------------------------------------
# A tiny world with a known optimum
class TinySlateMDP:
    """Two user moods, three item types, slates of 2 of the 3 candidates; a vector env.

    Item types (every step the candidates are the three types in a random order):
    ``clickbait`` (MNL weight 4, reward 1, makes the user *annoyed*), ``quality`` (weight 1,
    reward 1, makes the user *happy*), ``filler`` (weight 0.5, reward 0, no mood change).
    Annoyed users click with weights x 0.1. Each step the user leaves with probability
    ``leave_prob``. Myopically clickbait wins; in the long run showing it is a loss, so
    the optimal slate (computed exactly by :meth:`optimal_slates`) avoids it.
    Observation: ``candidates`` (3, 3) one-hot types, ``user`` (2,) one-hot mood, ``history``
    (1, 1) zeros. ``info`` has ``click``, ``position`` and ``final_obs`` (SAME_STEP autoreset).
    """

    weight = np.array([4.0, 1.0, 0.5])
    reward_of = np.array([1.0, 1.0, 0.0])
    next_mood = np.array([1, 0, -1])  # -1 = unchanged
    annoyed_scale = 0.1
    rho = np.array([1.0, 0.8])
    num_states, num_types, slate_size = 2, 3, 2

    def __init__(self, num_envs: int = 16, leave_prob: float = 0.05):
        self.num_envs, self.leave_prob = num_envs, leave_prob
        self.autoreset_mode = AutoresetMode.SAME_STEP

    def _obs(self) -> dict[str, np.ndarray]:
        eye_t, eye_s = np.eye(self.num_types, dtype=np.float32), np.eye(self.num_states, dtype=np.float32)
        return {"candidates": eye_t[self.types], "user": eye_s[self.mood],
                "history": np.zeros((self.num_envs, 1, 1), np.float32)}

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.rng = np.random.default_rng(seed)
        self.mood = np.zeros(self.num_envs, np.int64)
        self.types = np.argsort(self.rng.random((self.num_envs, self.num_types)), axis=1)
        return self._obs(), {}

    def choice_probs(self, mood: np.ndarray, slate_types: np.ndarray) -> np.ndarray:
        """True (B, k+1) click probabilities per position, then no click."""
        w = self.weight[slate_types] * self.rho * np.where(mood == 1, self.annoyed_scale, 1.0)[:, None]
        return np.concatenate([w, np.ones((len(w), 1))], axis=1) / (1.0 + w.sum(1, keepdims=True))

    def step(self, slates: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        rows = np.arange(self.num_envs)
        shown = self.types[rows[:, None], slates]
        cdf = np.cumsum(self.choice_probs(self.mood, shown), axis=1)
        choice = (self.rng.random(self.num_envs)[:, None] >= cdf[:, :-1]).sum(1)
        click = choice < self.slate_size
        clicked = shown[rows, np.minimum(choice, self.slate_size - 1)]
        reward = np.where(click, self.reward_of[clicked], 0.0).astype(np.float32)
        move = np.where(click, self.next_mood[clicked], -1)
        self.mood = np.where(move >= 0, move, self.mood)
        terminated = self.rng.random(self.num_envs) < self.leave_prob
        self.types = np.argsort(self.rng.random((self.num_envs, self.num_types)), axis=1)
        info: dict[str, Any] = {"click": click, "position": np.where(click, choice, -1)}
        if terminated.any():
            info["final_obs"] = self._obs()
            self.mood[terminated] = 0
        return self._obs(), reward, terminated, np.zeros_like(terminated), info

    @classmethod
    def optimal_slates(cls, gamma: float, leave_prob: float = 0.05, sweeps: int = 2000
                       ) -> dict[int, tuple[int, ...]]:
        """Optimal ordered slate of item *types* per mood, by value iteration over full slates."""
        slates = list(itertools.permutations(range(cls.num_types), cls.slate_size))
        value = np.zeros(cls.num_states)
        env = cls(num_envs=1)
        for _ in range(sweeps):
            q = np.zeros((cls.num_states, len(slates)))
            for s in range(cls.num_states):
                for a, slate in enumerate(slates):
                    probs = env.choice_probs(np.array([s]), np.array([slate]))[0]
                    total = probs[-1] * gamma * (1 - leave_prob) * value[s]
                    for p, t in enumerate(slate):
                        nxt = s if cls.next_mood[t] < 0 else cls.next_mood[t]
                        total += probs[p] * (cls.reward_of[t] + gamma * (1 - leave_prob) * value[nxt])
                    q[s, a] = total
            value = q.max(1)
        return {s: slates[int(q[s].argmax())] for s in range(cls.num_states)}


# ---------------------------------------------------------------------------------------------
# Abstractions: observation -> state index (B,), candidate classes (B, m)
class Abstraction:
    """State and item abstraction of a world (see the module docstring)."""

    def __init__(self, config: TabularSlateQConfig, params: Any = None):
        self.kind = config.abstraction
        if self.kind == "tiny":
            self.num_states, self.num_items = TinySlateMDP.num_states, TinySlateMDP.num_types
            self.slate_size = TinySlateMDP.slate_size
            return
        if self.kind != "recsim":
            raise ValueError(f"TabularSlateQConfig.abstraction must be 'recsim' or 'tiny', got {self.kind!r}")
        sim = make_simulator(config.preset) if params is None else simulator_for(params)
        space = sim.observation_space()
        self.num_topics = sim.params.num_topics
        self.slate_size = sim.params.slate_size
        self.has_appeal = space["candidates"].shape[1] > self.num_topics
        self.history_length = space["history"].shape[0]
        self.engagement = config.engagement_buckets
        self.appeal = config.appeal_buckets if self.has_appeal else 1
        self.num_states = (self.num_topics + 1) * self.engagement
        self.num_items = self.num_topics * self.appeal

    def states(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind == "tiny":
            return obs["user"].argmax(1)
        history = obs["history"]
        clicked = history[..., -3] * history[..., -1]  # click flag x valid flag
        profile = np.einsum("bh,bht->bt", clicked, history[..., : self.num_topics])
        topic = np.where(clicked.sum(1) > 0, profile.argmax(1), self.num_topics)
        bucket = np.minimum((clicked.sum(1) * self.engagement / (self.history_length + 1)).astype(int),
                            self.engagement - 1)
        return topic * self.engagement + bucket

    def items(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        cand = obs["candidates"]
        if self.kind == "tiny":
            return cand.argmax(2)
        topic = cand[..., : self.num_topics].argmax(2)
        if not self.has_appeal:
            return topic
        bucket = np.minimum((cand[..., self.num_topics] * self.appeal).astype(int), self.appeal - 1)
        return topic * self.appeal + bucket


def _make_env(config: TabularSlateQConfig) -> Any:
    if config.preset == "tiny":
        return TinySlateMDP(config.num_envs)
    return RecSimVectorEnv(config.num_envs, preset=config.preset, autoreset_mode=AutoresetMode.SAME_STEP)


def _next_obs(next_obs: dict[str, np.ndarray], ended: np.ndarray, info: dict[str, Any]
              ) -> dict[str, np.ndarray]:
    """The true next observation: ``final_obs`` where an episode ended (SAME_STEP autoreset)."""
    if not ended.any() or "final_obs" not in info:  # NEXT_STEP: next_obs is already the last one
        return next_obs
    out = {key: value.copy() for key, value in next_obs.items()}
    for key in out:
        out[key][ended] = info["final_obs"][key][ended]
    return out


def _epsilon_explore(rng: np.random.Generator, epsilon: float, slates: np.ndarray,
                     obs: dict[str, np.ndarray]) -> np.ndarray:
    """Replace each slate by a uniformly random one with probability ``epsilon`` (in place)."""
    if epsilon > 0:
        explore = rng.random(len(slates)) < epsilon
        if explore.any():
            slates[explore] = random_slates(rng, int(explore.sum()), obs["candidates"].shape[1],
                                             slates.shape[1])
    return slates


# ---------------------------------------------------------------------------------------------
class TabularSlateQAgent(BaseAgent):
    """Tabular SlateQ (:mod:`recsim_gym.agents.base` protocol): ``act(obs)``, ``learn(env | None,
    total_steps, callback)``, ``save``/``load``; ``learning_curve`` holds the log rows."""

    name = "slate_q_tabular"

    def __init__(self, config: TabularSlateQConfig | None = None, seed: int | None = None,
                 params: Any = None, **overrides: Any):
        if seed is not None:
            overrides["seed"] = seed
        self.config = cfg = (config or TabularSlateQConfig()).replace(**overrides)
        self.learning_curve: list[dict[str, Any]] = []
        # the world's params (as the registry passes them) fix the abstraction; else the preset's
        self.abstraction = Abstraction(cfg, params)
        s, i, k = self.abstraction.num_states, self.abstraction.num_items, self.abstraction.slate_size
        self.q_items = np.zeros((s, i))  # Qbar(s, item class)
        self.q_none = np.zeros(s)  # Qbar(s, none)
        if cfg.choice_model == "configured":
            if cfg.choice_utility is None:
                raise ValueError("choice_model='configured' needs choice_utility")
            self.utility = np.array(cfg.choice_utility, dtype=np.float64).reshape(s, i)
            bias = cfg.choice_position_bias or [0.0] * k
            self.position_bias = np.array(bias, dtype=np.float64)
        else:  # "learned"
            self.utility, self.position_bias = np.zeros((s, i)), np.zeros(k)
        self.rng = np.random.default_rng(cfg.seed)
        self.epsilon = 0.0
        self.env_steps = 0

    @property
    def table_size(self) -> int:
        """Learned value entries."""
        return self.q_items.size + self.q_none.size

    # ------------------------------------------------------------------ acting
    def _best(self, states: np.ndarray, classes: np.ndarray) -> np.ndarray:
        weight = np.exp(self.utility[states[:, None], classes])
        value = self.q_items[states[:, None], classes] - self.q_none[states, None]
        return optimise_slates(self.config.optimiser, weight, value, np.exp(self.position_bias))

    def _slate_value(self, states: np.ndarray, classes: np.ndarray, slates: np.ndarray) -> np.ndarray:
        shown = np.take_along_axis(classes, slates, axis=1)
        logits = self.utility[states[:, None], shown] + self.position_bias
        w = np.exp(logits)
        den = 1.0 + w.sum(1)
        return ((w * self.q_items[states[:, None], shown]).sum(1) + self.q_none[states]) / den

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Best slates (B, k) under the table and choice model; epsilon-random when exploring."""
        slates = self._best(self.abstraction.states(obs), self.abstraction.items(obs))
        return slates if deterministic else _epsilon_explore(self.rng, self.epsilon, slates, obs)

    # ------------------------------------------------------------------ learning
    def update(self, obs: dict[str, np.ndarray], slates: np.ndarray, reward: np.ndarray,
               position: np.ndarray, next_obs: dict[str, np.ndarray], done: np.ndarray,
               next_slates: np.ndarray | None = None) -> None:
        """One batched TD and choice-model update from transitions (``position`` -1 = no click;
        ``next_slates`` = the slates shown at ``next_obs``, needed for ``target='sarsa'``)."""
        cfg, k = self.config, slates.shape[1]
        states, classes = self.abstraction.states(obs), self.abstraction.items(obs)
        next_states, next_classes = self.abstraction.states(next_obs), self.abstraction.items(next_obs)
        if cfg.target == "sarsa" and next_slates is not None:
            chosen_next = next_slates
        else:
            chosen_next = self._best(next_states, next_classes)
        next_value = self._slate_value(next_states, next_classes, chosen_next)
        target = reward + cfg.gamma * (1.0 - done) * next_value
        rows = np.arange(len(states))
        shown = np.take_along_axis(classes, slates, axis=1)
        click = position >= 0
        item = shown[rows, np.maximum(position, 0)]
        # TD on the consumed item (batch-averaged per table entry)
        for table, index, sel in ((self.q_items, (states, item), click), (self.q_none, (states,), ~click)):
            flat = np.ravel_multi_index(tuple(ix[sel] for ix in index), table.shape)
            delta = target[sel] - table.ravel()[flat]
            total = np.bincount(flat, delta, minlength=table.size)
            count = np.bincount(flat, minlength=table.size)
            table += (cfg.alpha * total / np.maximum(count, 1)).reshape(table.shape)
        # conditional-logit gradient step on the observed choice
        if cfg.choice_model == "learned":
            logits = self.utility[states[:, None], shown] + self.position_bias
            w = np.exp(logits)
            probs = w / (1.0 + w.sum(1, keepdims=True))
            grad = -probs
            grad[rows[click], position[click]] += 1.0
            lr = cfg.choice_learning_rate
            flat = np.ravel_multi_index((np.repeat(states, k), shown.ravel()), self.utility.shape)
            total = np.bincount(flat, grad.ravel(), minlength=self.utility.size)
            count = np.bincount(flat, minlength=self.utility.size)
            self.utility += (lr * total / np.maximum(count, 1)).reshape(self.utility.shape)
            self.position_bias[1:] += lr * grad[:, 1:].mean(0)

    def observe(self, transition: Transition) -> None:
        """Online update from an :class:`recsim_gym.agents.base.Transition` batch (Q-learning target)."""
        info = transition.info
        position = np.where(info["click"], info["position"], -1)
        done = transition.terminated | (transition.truncated & self.config.truncation_is_terminal)
        self.update(transition.obs, transition.slates, transition.reward, position,
                    transition.next_obs, done.astype(np.float64))

    def learn(self, env: Any = None, total_steps: int | None = None,
              callback: Callable[[Any, int], bool | None] | None = None) -> TabularSlateQAgent:
        """Train on a SAME_STEP-autoreset vector env (built from the config when ``None``);
        every ``log_interval`` user-steps a row goes to ``learning_curve`` and
        ``callback(agent, steps_done)`` is called; ``False`` stops."""
        if env is not None and env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("TabularSlateQAgent.learn needs AutoresetMode.SAME_STEP")
        cfg = self.config
        env = _make_env(cfg) if env is None else env
        total_steps = cfg.total_steps if total_steps is None else total_steps
        obs, _ = env.reset(seed=seeds.agent_train_seed(cfg.seed))
        returns, finished, start, last = np.zeros(env.num_envs), [], self.env_steps, self.env_steps
        self.epsilon = cfg.epsilon_start
        slates = self.act(obs, deterministic=False)
        while self.env_steps - start < total_steps:
            next_obs, reward, terminated, truncated, info = env.step(slates)
            ended = terminated | truncated
            true_next = _next_obs(next_obs, ended, info)
            progress = (self.env_steps - start) / max(cfg.exploration_fraction * total_steps, 1)
            self.epsilon = cfg.epsilon_start + min(progress, 1.0) * (cfg.epsilon_end - cfg.epsilon_start)
            next_slates = self.act(true_next, deterministic=False)
            done = (terminated | (truncated & cfg.truncation_is_terminal)).astype(np.float64)
            position = np.where(info["click"], info["position"], -1)
            self.update(obs, slates, reward, position, true_next, done, next_slates)
            if ended.any():  # the next slate of a finished user is for the new user
                next_slates[ended] = self.act({key: v[ended] for key, v in next_obs.items()}, False)
            returns += reward
            finished.extend(returns[ended].tolist())
            returns[ended] = 0.0
            obs, slates = next_obs, next_slates
            self.env_steps += env.num_envs
            if self.env_steps - last >= cfg.log_interval:
                last = self.env_steps
                row = {"env_steps": self.env_steps, "episodes": len(finished), "epsilon": self.epsilon,
                       "episode_return": float(np.mean(finished)) if finished else float("nan")}
                finished = []
                self.learning_curve.append(row)
                if callback is not None and callback(self, self.env_steps - start) is False:
                    break
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write config and tables to ``path`` (``.npz``)."""
        with open(path, "wb") as handle:
            np.savez(handle, config=json.dumps(dataclasses.asdict(self.config)), q_items=self.q_items,
                     q_none=self.q_none, utility=self.utility, position_bias=self.position_bias,
                     env_steps=self.env_steps)

    @classmethod
    def load(cls, path: str | Path) -> TabularSlateQAgent:
        """Rebuild an agent written by :meth:`save` (``np.load`` without pickles); a file of
        another kind or shape raises ``AgentFileError``."""
        from recsim_gym.agents.persistence import AgentFileError

        try:
            data = np.load(path, allow_pickle=False)
            agent = cls(TabularSlateQConfig(**json.loads(str(data["config"]))))
            for name in ("q_items", "q_none", "utility", "position_bias"):
                table = data[name]
                if table.shape != getattr(agent, name).shape:
                    raise ValueError(f"{name} has shape {table.shape}, the config gives "
                                     f"{getattr(agent, name).shape}")
                setattr(agent, name, table.copy())
            agent.env_steps = int(data["env_steps"])
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means: not a tabular SlateQ file
            raise AgentFileError(f"{path}: not a tabular SlateQ agent file written by "
                                 f"TabularSlateQAgent.save ({type(err).__name__}: {str(err)[:200]})") from err
        return agent


# ---------------------------------------------------------------------------------------------
class FullSlateQAgent(BaseAgent):
    """Tabular Q-learning over whole slates: ``Q[state, (class of position 0, ..., k-1)]``.

    The table has ``S * I**k`` entries (vs ``S * (I + 1)`` for SlateQ) and each is updated only
    when exactly that slate is shown; acting enumerates all ``m! / (m-k)!`` ordered slates, so it
    is for tiny configs only. No choice model is needed (or used).
    """

    name = "full_slate_q"

    def __init__(self, config: TabularSlateQConfig | None = None, **overrides: Any):
        self.config = cfg = (config or TabularSlateQConfig()).replace(**overrides)
        self.abstraction = Abstraction(cfg)
        s, i, k = self.abstraction.num_states, self.abstraction.num_items, self.abstraction.slate_size
        if i**k > 10**6:
            raise ValueError(f"full-slate table of {s} x {i}**{k} entries is too large")
        self.q = np.zeros((s, i**k))
        self.powers = i ** np.arange(k - 1, -1, -1)
        self.rng = np.random.default_rng(cfg.seed)
        self.epsilon, self.env_steps = 0.0, 0

    @property
    def table_size(self) -> int:
        """Learned value entries."""
        return self.q.size

    def _slate_ids(self, classes: np.ndarray, slates: np.ndarray) -> np.ndarray:
        return (np.take_along_axis(classes, slates, axis=1) * self.powers).sum(1)

    def _best(self, states: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        every = np.array(list(itertools.permutations(range(classes.shape[1]), self.abstraction.slate_size)))
        ids = (classes[:, every] * self.powers).sum(2)  # (B, slates)
        values = self.q[states[:, None], ids]
        best = values.argmax(1)
        return every[best], values[np.arange(len(best)), best]

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Greedy (or epsilon-greedy) slate from the table."""
        slates, _ = self._best(self.abstraction.states(obs), self.abstraction.items(obs))
        return slates if deterministic else _epsilon_explore(self.rng, self.epsilon, slates, obs)

    def learn(self, env: Any = None, total_steps: int | None = None,
              callback: Callable[[Any, int], bool | None] | None = None) -> FullSlateQAgent:
        """Q-learning on whole slates (same loop and exploration schedule as SlateQ)."""
        cfg = self.config
        env = _make_env(cfg) if env is None else env
        total_steps = cfg.total_steps if total_steps is None else total_steps
        obs, _ = env.reset(seed=seeds.agent_train_seed(cfg.seed))
        start = self.env_steps
        while self.env_steps - start < total_steps:
            progress = (self.env_steps - start) / max(cfg.exploration_fraction * total_steps, 1)
            self.epsilon = cfg.epsilon_start + min(progress, 1.0) * (cfg.epsilon_end - cfg.epsilon_start)
            slates = self.act(obs, deterministic=False)
            next_obs, reward, terminated, truncated, info = env.step(slates)
            ended = terminated | truncated
            true_next = _next_obs(next_obs, ended, info)
            _, next_value = self._best(self.abstraction.states(true_next), self.abstraction.items(true_next))
            done = terminated | (truncated & cfg.truncation_is_terminal)
            target = reward + cfg.gamma * (1.0 - done) * next_value
            flat = np.ravel_multi_index((self.abstraction.states(obs),
                                         self._slate_ids(self.abstraction.items(obs), slates)), self.q.shape)
            delta = np.bincount(flat, target - self.q.ravel()[flat], minlength=self.q.size)
            count = np.bincount(flat, minlength=self.q.size)
            self.q += (cfg.alpha * delta / np.maximum(count, 1)).reshape(self.q.shape)
            obs = next_obs
            self.env_steps += env.num_envs
            if callback is not None and self.env_steps % cfg.log_interval < env.num_envs:
                if callback(self, self.env_steps - start) is False:
                    break
        return self
