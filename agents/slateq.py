"""Deep SlateQ (Ie et al., IJCAI 2019) in torch, one file, CleanRL style.

SlateQ decomposes the value of a slate into item values weighted by the user's choice::

    Q(s, A) = sum_{j in A} P(j | s, A) Qbar(s, j) + P(none | s, A) Qbar(s, none)

* ``Qbar(s, j)`` (:class:`ItemQNetwork`): an MLP over [candidate features, user context], the
  context an MLP over the user features and the flattened history; the candidate features are
  extended by user x candidate topic products (:mod:`recsim_gym.agents.features`); a second head gives
  ``Qbar(s, none)``, the value of a step without a click (no-clicks cost satisfaction or time
  budget in our worlds, so it is not zero). Each candidate's score also gets a learned per-item
  offset, the item found by hashing its static features (``item_buckets``,
  :func:`recsim_gym.agents.features.hashed_item_ids`): observations hide an item's quality, but the
  conversions and satisfaction it brings are the item's own, so a per-item term can learn them.
  ``Qbar = R + C`` (``split_immediate``, on with per-item offsets): ``R`` and the offsets fit
  the immediate reward, ``C`` the discounted rest of the TD target and reads the item's offset
  as an input. The offsets then learn from the reward, whose noise is small, and not from the
  continuation, whose spread across users is far larger than the differences between items.
  ``C`` comes from an ensemble (``continuation_members``, default 2) of networks with their own
  trunks. Each member fits only the transitions of its own training users (env slots i, i + K,
  ...) and bootstraps from its own ``C``, so the members' errors about individual users are
  independent and averaging them cancels part of the noise that ``C``'s item-to-item
  differences pick up; the differences are also shrunk by how far the members agree on them.
* ``P(j | s, A)`` (:class:`ChoiceNetwork`): a conditional logit learned from the clicks seen in
  ``info`` (never the simulator's ``choice_probs`` or latent state): utility ``u(s, j)`` from the
  same kind of MLP, plus a learned log-examination bias per position; no-click utility 0.
* TD learning on the *consumed* item: ``Qbar(s, j) <- r + gamma * Q(s', A*(s'))`` where
  ``j`` is the clicked item (or "none") and ``A*(s')`` maximises the decomposed ``Q`` at the
  NEXT observation ``s'`` (fed to the target network; RecSim's SlateQ fed the current one,
  its issue #26). ``A*`` is picked by the online network and valued by the target network
  (double Q). ``n_step > 1`` sums n discounted rewards before bootstrapping
  (:class:`NStepQueue`). The TD loss is the squared error: Huber's linear tails would fit the
  median target, which ignores the rare churn transitions that carry the long-term value.
* Slates are optimised with :mod:`recsim_gym.agents.slates`: ``top_k``, ``greedy``, ``dinkelbach``
  (exact, batched) or ``lp`` (exact, ``scipy.optimize.linprog``; slow), for acting and targets.

Exploration is epsilon-greedy per user (a uniformly random slate). Training runs on the native
:class:`recsim_gym.env.RecSimVectorEnv` with ``SAME_STEP`` autoreset so the true last observation of
each episode is stored. ``recsim run`` with a config naming ``slateq`` trains and evaluates it.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn
from torch.nn.functional import embedding, linear

from recsim_gym.agents.base import BaseAgent
from recsim_gym.agents.features import cross_feature_dim, cross_features, hashed_item_ids, item_id_columns
from recsim_gym.agents.slates import OPTIMISERS, optimise_slates, random_slates
from recsim_gym.env import RecSimVectorEnv, seeds
from recsim_gym.env.fields import Config, option
from recsim_gym.env.simulator import make_simulator, simulator_for

OBS_KEYS = ("candidates", "history", "user")
SLOT_KEY = "slot"  # the env slot (user) a transition came from, carried through the n-step queue
CROSS_KEY = "cross_features"  # cached user x candidate features in a batch (with_cross_features)
IDS_KEY = "item_ids"  # cached hashed item ids of a batch's candidates (SlateQAgent._prepared)
ITEMS_KEY = "item_inputs"  # cached [candidates, cross features] of a batch (SlateQAgent._prepared)
CONTEXT_KEY = "context_inputs"  # cached [user, flattened history] of a batch (context_inputs)


@dataclass(frozen=True)
class SlateQConfig(Config):
    """Hyperparameters of deep SlateQ (defaults for ``default``; evidence in docs/agents.md)."""

    preset: str = option("default", "World preset to train on when learn() builds its own env.")
    num_envs: int = option(64, "Users stepped together (vector env).", 1)
    total_steps: int = option(300_000, "Training budget in user-steps.", 0)
    gamma: float = option(0.99, "Discount of the TD target.", 0.0, 1.0)
    learning_rate: float = option(3e-4, "Adam step size (Q and choice networks); 1e-3 on "
                                  "interest_evolution.", 0.0, low_open=True)
    buffer_size: int = option(50_000, "Replay buffer capacity.", 1)
    batch_size: int = option(256, "Replay minibatch size.", 1)
    learning_starts: int = option(5_000, "User-steps before learning.", 0)
    gradient_steps: int = option(1, "Updates per vector-env step.", 1)
    n_step: int = option(1, "TD target over n rewards before bootstrapping.", 1)
    target_tau: float = option(0.05, "Polyak rate of the target network.", 0.0, 1.0, low_open=True)
    epsilon_start: float = option(1.0, "Initial random-slate probability.", 0.0, 1.0)
    epsilon_end: float = option(0.05, "Final random-slate probability.", 0.0, 1.0)
    exploration_fraction: float = option(0.3, "Share of the budget over which epsilon decays "
                                         "linearly.", 0.0, 1.0)
    optimiser: str = option("dinkelbach", "Slate optimiser for acting and targets.",
                            choices=OPTIMISERS)
    hidden: int = option(64, "Width of the MLPs.", 1)
    cross_features: bool = option(True, "Add user x candidate topic products to the candidate inputs.")
    item_buckets: int = option(65_536, "Buckets of the learned per-item offsets (items hashed by "
                               "their static features; 0: none; unused without a catalog).", 0)
    split_immediate: bool = option(True, "Qbar = R + C: R and the offsets fit the immediate "
                                   "reward, C the discounted continuation (needs offsets).")
    continuation_members: int = option(2, "Networks of the C ensemble; each fits its own users "
                                       "(env slots i, i + K, ...) and bootstraps from its own C.", 1)
    truncation_is_terminal: bool = option(True, "Do not bootstrap at max_steps (the lifetime "
                                          "ends there; progress is observed).")
    reward_scale: float = option(0.1, "Rewards are multiplied by this for learning.", 0.0,
                                 low_open=True)
    average_tau: float = option(0.001, "Weight averaging for deterministic acting: a mean from "
                                "the end of exploration on, then exponential at this rate "
                                "(0: act with the online weights).", 0.0, 1.0)
    max_grad_norm: float = option(10.0, "Gradient clipping norm.", 0.0, low_open=True)
    seed: int = option(0, "Seed of torch, exploration and the agent's own training users.", 0)
    log_interval: int = option(10_000, "User-steps between callbacks.", 1)


# ---------------------------------------------------------------------------------------------
# Networks
class ContextEncoder(nn.Module):
    """User features + flattened history -> context vector (B, hidden)."""

    def __init__(self, user_dim: int, history_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(user_dim + history_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs``: :func:`context_inputs` (B, user + H x history features)."""
        first, second = self.net[0], self.net[2]  # functional: no module-call overhead per layer
        return torch.relu(linear(torch.relu(linear(inputs, first.weight, first.bias)),
                                   second.weight, second.bias))


def context_inputs(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """User features and the flattened history (B, U + H F): every context encoder's input,
    concatenated once per batch by :meth:`SlateQAgent._prepared` (``CONTEXT_KEY``)."""
    cached = obs.get(CONTEXT_KEY)
    return cached if cached is not None else torch.cat([obs["user"], obs["history"].flatten(1)], dim=1)


class CandidateScorer(nn.Module):
    """Context + candidate features -> one score per candidate (B, m), plus a context head (B,).

    With ``num_topics`` set, the candidate features are extended by the user x candidate
    :func:`recsim_gym.agents.features.cross_features` (topic products with the history and declared topics).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], hidden: int, num_topics: int | None = None,
                 item_buckets: int = 0, id_columns: int = 0):
        super().__init__()
        (h, fh), (_, fc), (fu,) = shapes["history"], shapes["candidates"], shapes["user"]
        self.num_topics = num_topics
        if num_topics is not None:
            fc += cross_feature_dim(num_topics, fu)
        self.context = ContextEncoder(fu, h * fh, hidden)
        # first layer of the item MLP on [candidate, context], split so the context part is
        # computed once per user rather than once per candidate
        self.item_in = nn.Linear(fc, hidden)
        self.context_in = nn.Linear(hidden, hidden, bias=False)
        self.item_out = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 1))
        self.none = nn.Linear(hidden, 1)
        # per-item score offsets, looked up by hashed static features (features.hashed_item_ids)
        self.id_columns, self.item_bias = id_columns, None
        if item_buckets > 0:
            self.item_bias = nn.Embedding(item_buckets, 1)
            nn.init.zeros_(self.item_bias.weight)

    def trunk(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Pre-activation item hidden layer (B, m, hidden), context (B, hidden) and the per-item
        offsets (B, m), ``None`` without ``item_buckets``."""
        ctx = self.context.forward(context_inputs(obs))
        cand = obs.get(ITEMS_KEY)  # candidates and cross features, joined once per batch
        if cand is None:
            cand = obs["candidates"]
            if self.num_topics is not None:
                cross = obs.get(CROSS_KEY)  # computed once per observation batch
                if cross is None:
                    cross = cross_features(cand, obs["history"], obs["user"], self.num_topics)
                cand = torch.cat([cand, cross], 2)
        # item_in(cand) + context_in(ctx) as one GEMM whose bias rows carry each user's context
        b, m = cand.shape[:2]
        rows = (self.item_in.bias + linear(ctx, self.context_in.weight)).repeat_interleave(m, dim=0)
        joint = torch.addmm(rows, cand.reshape(b * m, -1), self.item_in.weight.t()).view(b, m, -1)
        offset = None
        if self.item_bias is not None:
            ids = obs.get(IDS_KEY)  # hashed once per observation batch by SlateQAgent._prepared
            if ids is None:
                ids = hashed_item_ids(obs["candidates"], self.id_columns, self.item_bias.num_embeddings)
            offset = embedding(ids, self.item_bias.weight).squeeze(-1)
        return joint, ctx, offset

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        joint, ctx, offset = self.trunk(obs)
        scores = self.item_scores(joint)
        if offset is not None:
            scores = scores + offset
        return scores, self.none_value(ctx)

    def item_scores(self, joint: torch.Tensor) -> torch.Tensor:
        """``item_out`` (ReLU, Linear) on the pre-activation item layer: (B, m)."""
        out = self.item_out[1]
        return linear(torch.relu(joint), out.weight, out.bias).squeeze(2)

    def none_value(self, ctx: torch.Tensor) -> torch.Tensor:
        """The no-click head on the context: (B,)."""
        return linear(ctx, self.none.weight, self.none.bias).squeeze(1)


class ContinuationMember(CandidateScorer):
    """One continuation network of an ensemble (:attr:`SlateQConfig.continuation_members`): its
    own context and item MLPs; reads the item's (detached) R offset as an input."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], hidden: int, num_topics: int | None = None):
        super().__init__(shapes, hidden, num_topics)
        self.offset_in = nn.Linear(1, hidden, bias=False)

    def values(self, obs: dict[str, torch.Tensor], offset: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``C`` per candidate (B, m) and for no click (B,)."""
        joint, ctx, _ = self.trunk(obs)
        if offset is not None:
            joint = torch.addcmul(joint, offset.detach()[..., None], self.offset_in.weight[:, 0])
        return self.item_scores(joint), self.none_value(ctx)


class ItemQNetwork(CandidateScorer):
    """``Qbar(s, j)`` for every candidate (B, m) and ``Qbar(s, none)`` (B,).

    With ``split``, ``Qbar = R + C`` (:attr:`SlateQConfig.split_immediate`): the inherited heads
    and per-item offsets give the immediate reward ``R``; a second pair of heads on the same
    trunk gives the continuation ``C``, which sees the item's (detached) offset as an input
    instead of having offsets of its own. With ``members`` >= 2, ``C`` comes from that many
    :class:`ContinuationMember` networks, their item-to-item differences shrunk by their
    agreement (:attr:`SlateQConfig.continuation_members`; buffers ``agreement`` and ``spread``
    hold the running averages, :attr:`shrinkage` the factor).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], hidden: int, num_topics: int | None = None,
                 item_buckets: int = 0, id_columns: int = 0, split: bool = False, members: int = 1):
        super().__init__(shapes, hidden, num_topics, item_buckets, id_columns)
        self.split = split
        self.members = nn.ModuleList()
        if split and members >= 2:
            self.members.extend(ContinuationMember(shapes, hidden, num_topics) for _ in range(members))
        elif split:
            self.continuation_out = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 1))
            self.continuation_none = nn.Linear(hidden, 1)
            self.offset_in = nn.Linear(1, hidden, bias=False)
        if len(self.members) >= 2:  # running E[D_i D_j] (member pairs), E[mean(D)^2]: w = their ratio
            self.register_buffer("agreement", torch.zeros(()))
            self.register_buffer("spread", torch.zeros(()))

    @property
    def shrinkage(self) -> float:
        """Weight ``w`` of the members' mean item deviations in ``C`` (1 without an ensemble)."""
        if len(self.members) < 2 or self.spread.item() <= 0:
            return 1.0
        return float(min(max(self.agreement.item() / self.spread.item(), 0.0), 1.0))

    def member_parts(self, obs: dict[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``(R items, R none, [(C items, C none) per continuation network])``; needs ``split``."""
        joint, ctx, offset = self.trunk(obs)
        reward = self.item_scores(joint)
        if offset is not None:
            reward = reward + offset
        if len(self.members):
            continuations = [member.values(obs, offset) for member in self.members]
        else:
            continuation_joint = joint
            if offset is not None:
                continuation_joint = torch.addcmul(joint, offset.detach()[..., None],
                                                   self.offset_in.weight[:, 0])
            continuations = [(self.continuation_out(continuation_joint).squeeze(2),
                              self.continuation_none(ctx).squeeze(1))]
        return reward, self.none_value(ctx), continuations

    @torch.no_grad()
    def record_agreement(self, continuations: list[tuple[torch.Tensor, torch.Tensor]],
                         rate: float = 0.01) -> None:
        """Fold one batch's member deviations into the running averages behind :attr:`shrinkage`."""
        if len(continuations) < 2:
            return
        deviations = torch.stack([c - c.mean(1, keepdim=True) for c, _ in continuations])  # (K, B, m)
        k = len(continuations)
        total = deviations.sum(0)
        pairs = ((total**2).mean() - (deviations**2).mean(1).mean(1).sum()) / (k * (k - 1))
        spread = (deviations.mean(0) ** 2).mean()
        first = self.spread.item() == 0
        self.agreement.copy_(pairs if first else (1 - rate) * self.agreement + rate * pairs)
        self.spread.copy_(spread if first else (1 - rate) * self.spread + rate * spread)

    def parts(self, obs: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(R items (B, m), R none (B,), C items (B, m), C none (B,))``; needs ``split``."""
        reward, reward_none, continuations = self.member_parts(obs)
        return reward, reward_none, *self.combine(continuations)

    def combine(self, continuations: list[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``C`` (B, m) and ``C(none)`` (B,) from the members' ``(C items, C none)``: the one
        network's, or the members' mean with its item deviations shrunk by :attr:`shrinkage`."""
        if len(continuations) == 1:
            return continuations[0]
        mean = torch.stack([c for c, _ in continuations]).mean(0)
        centre = mean.mean(1, keepdim=True)
        return centre + self.shrinkage * (mean - centre), torch.stack([n for _, n in continuations]).mean(0)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.split:
            return super().forward(obs)
        reward, reward_none, continuation, continuation_none = self.parts(obs)
        return reward + continuation, reward_none + continuation_none


class ChoiceNetwork(CandidateScorer):
    """Conditional logit: candidate utilities (B, m) and log-examination per position (k,).

    ``P(position p | s, A) = exp(u_{A_p} + b_p) / (1 + sum_q exp(u_{A_q} + b_q))``, ``b_0 = 0``.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], hidden: int, slate_size: int,
                 num_topics: int | None = None, item_buckets: int = 0, id_columns: int = 0):
        super().__init__(shapes, hidden, num_topics, item_buckets, id_columns)
        self.position_bias = nn.Parameter(torch.zeros(max(slate_size - 1, 0)))

    def log_examination(self) -> torch.Tensor:
        return torch.cat([torch.zeros(1), self.position_bias])

    def slate_logits(self, utility: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """Logits of (each position, no click) (B, k+1) for the shown ``slates``."""
        shown = utility.gather(1, slates) + self.log_examination()
        return torch.cat([shown, torch.zeros_like(shown[:, :1])], dim=1)


# ---------------------------------------------------------------------------------------------
class ReplayBuffer:
    """Fixed-size ring buffer of (obs, slate, click position, reward, next obs, done, discount,
    immediate); ``reward`` is the n-step discounted sum, ``discount`` the bootstrap factor
    gamma^n and ``immediate`` the first step's reward alone."""

    def __init__(self, capacity: int, shapes: dict[str, tuple[int, ...]], slate_size: int):
        self.capacity, self.size, self.cursor = capacity, 0, 0
        self.obs = {key: np.zeros((capacity, *shapes[key]), np.float32) for key in OBS_KEYS}
        self.next_obs = {key: np.zeros((capacity, *shapes[key]), np.float32) for key in OBS_KEYS}
        self.slate = np.zeros((capacity, slate_size), np.int64)
        self.position = np.zeros(capacity, np.int64)  # k = no click
        self.reward = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.discount = np.zeros(capacity, np.float32)
        self.immediate = np.zeros(capacity, np.float32)
        self.slot = np.zeros(capacity, np.int64)

    def add(self, obs: dict[str, np.ndarray], slate: np.ndarray, position: np.ndarray,
            reward: np.ndarray, next_obs: dict[str, np.ndarray], done: np.ndarray,
            discount: np.ndarray, immediate: np.ndarray) -> None:
        n = len(reward)
        if self.cursor + n <= self.capacity:  # a plain slice copies faster than an index array
            index: slice | np.ndarray = slice(self.cursor, self.cursor + n)
        else:
            index = (self.cursor + np.arange(n)) % self.capacity
        for key in OBS_KEYS:
            self.obs[key][index] = obs[key]
            self.next_obs[key][index] = next_obs[key]
        self.slate[index], self.position[index] = slate, position
        self.reward[index], self.done[index], self.discount[index] = reward, done, discount
        self.immediate[index] = immediate
        self.slot[index] = obs.get(SLOT_KEY, 0)
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: np.random.Generator) -> dict[str, Any]:
        index = generator.integers(0, self.size, batch_size)
        return {
            "obs": {key: torch.from_numpy(self.obs[key][index]) for key in OBS_KEYS},
            "next_obs": {key: torch.from_numpy(self.next_obs[key][index]) for key in OBS_KEYS},
            "slate": torch.from_numpy(self.slate[index]),
            "position": torch.from_numpy(self.position[index]),
            "reward": torch.from_numpy(self.reward[index]),
            "done": torch.from_numpy(self.done[index]),
            "discount": torch.from_numpy(self.discount[index]),
            "immediate": torch.from_numpy(self.immediate[index]),
            "slot": torch.from_numpy(self.slot[index]),
        }


class NStepQueue:
    """Turns per-step vector-env transitions into n-step ones, per user slot.

    Each pending step ``t`` of slot ``b`` accumulates ``sum_i gamma^i r_(t+i)``; it is emitted
    with the current next observation once it holds ``n`` rewards, or when the slot's episode
    ends (then with the rewards it has, and the end's ``done``), and with its own first reward.
    With ``n = 1`` every step is emitted at once: plain one-step TD."""

    def __init__(self, n: int, gamma: float, num_envs: int):
        self.n, self.gamma, self.num_envs = n, gamma, num_envs
        self.steps: list[dict[str, Any]] = []  # oldest first; each holds (B,) arrays

    def push(self, obs: dict[str, np.ndarray], slate: np.ndarray, position: np.ndarray,
             reward: np.ndarray, next_obs: dict[str, np.ndarray], ended: np.ndarray,
             done: np.ndarray, live: np.ndarray) -> list[tuple]:
        """Add one vector step (``live`` marks slots whose step is a real transition) and return
        the ``ReplayBuffer.add`` argument tuples that are complete."""
        self.steps.append({"obs": obs, "slate": slate,
                           "position": position, "immediate": np.asarray(reward, np.float32).copy(),
                           "return": np.zeros(self.num_envs, np.float32),
                           "discount": np.ones(self.num_envs, np.float32), "pending": live.copy()})
        out = []
        for age, step in enumerate(reversed(self.steps)):
            step["return"] += step["discount"] * reward
            step["discount"] *= self.gamma
            emit = step["pending"] & (ended | (age + 1 >= self.n))
            if emit.any():
                out.append(({key: value[emit] for key, value in step["obs"].items()}, step["slate"][emit],
                            step["position"][emit], step["return"][emit],
                            {key: value[emit] for key, value in next_obs.items()}, done[emit],
                            step["discount"][emit], step["immediate"][emit]))
                step["pending"] &= ~emit
        self.steps = [step for step in self.steps if step["pending"].any()]
        return out


def _tensors(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(np.asarray(obs[key], np.float32)) for key in OBS_KEYS}


def with_cross_features(obs: dict[str, torch.Tensor], num_topics: int | None) -> dict[str, torch.Tensor]:
    """``obs`` plus its user x candidate :func:`recsim_gym.agents.features.cross_features` under
    ``CROSS_KEY`` (unchanged when ``num_topics`` is None), so that the R, continuation, choice
    and target networks reading one batch compute them once rather than once each."""
    if num_topics is None or CROSS_KEY in obs:
        return obs
    cross = cross_features(obs["candidates"], obs["history"], obs["user"], num_topics)
    return {**obs, CROSS_KEY: cross}


def select_candidates(obs: dict[str, torch.Tensor], items: torch.Tensor) -> dict[str, torch.Tensor]:
    """``obs`` with its candidates (and their cached cross features and item ids) narrowed to
    ``items`` (B, j) in that order; user and history unchanged. Every network scores each
    candidate from its own features and the user's context, so scoring the narrowed
    observation gives the same per-item values as scoring all m and gathering (ensemble
    centring aside, :meth:`ItemQNetwork.combine`), at j/m of the item cost. A prepared batch
    (:meth:`SlateQAgent._prepared`) is narrowed in its joined item inputs only, which is all
    the trunks read; its raw candidates and cross features are left out of the result."""
    out = dict(obs)
    keys: tuple[str, ...] = ("candidates", CROSS_KEY)
    if ITEMS_KEY in obs:
        keys = (ITEMS_KEY,)
        out.pop("candidates", None)
        out.pop(CROSS_KEY, None)
    for key in keys:
        if key in obs:
            value = obs[key]
            out[key] = value.gather(1, items[..., None].expand(-1, -1, value.shape[2]))
    if IDS_KEY in obs:
        out[IDS_KEY] = obs[IDS_KEY].gather(1, items)
    return out


# ---------------------------------------------------------------------------------------------
class SlateQAgent(BaseAgent):
    """Deep SlateQ agent (:mod:`recsim_gym.agents.base` protocol): ``act(obs) -> slates (B, k)``,
    ``learn(env | None, total_steps, callback)``, ``save(path)`` / ``SlateQAgent.load(path)``.
    Reads only ``candidates``, ``history``, ``user``; ``learning_curve`` holds the log rows."""

    name = "slateq"

    def __init__(self, config: SlateQConfig | None = None, seed: int | None = None, params: Any = None,
                 **overrides: Any):
        if seed is not None:
            overrides["seed"] = seed
        self.config = (config or SlateQConfig()).replace(**overrides)
        self.learning_curve: list[dict[str, Any]] = []
        cfg = self.config
        # the world's params (as the registry passes them) fix the shapes; else the preset's
        sim = make_simulator(cfg.preset) if params is None else simulator_for(params)
        space = sim.observation_space()
        self.shapes = {key: tuple(space[key].shape) for key in OBS_KEYS}
        self.slate_size = sim.params.slate_size
        torch.manual_seed(cfg.seed)
        topics = sim.params.num_topics if cfg.cross_features else None
        self.num_topics = topics
        # per-item offsets need items that come back: off in worlds without a catalog
        id_columns = item_id_columns(sim)
        ids = {"item_buckets": 0 if id_columns is None else cfg.item_buckets, "id_columns": id_columns or 0}
        split = cfg.split_immediate and ids["item_buckets"] > 0
        members = cfg.continuation_members
        nets = dict(split=split, members=members)
        self.q = ItemQNetwork(self.shapes, cfg.hidden, topics, **ids, **nets)
        self.q_target = ItemQNetwork(self.shapes, cfg.hidden, topics, **ids, **nets)
        self.q_target.load_state_dict(self.q.state_dict())
        self.choice = ChoiceNetwork(self.shapes, cfg.hidden, self.slate_size, topics, **ids)
        # fused: one kernel for every parameter instead of a Python loop over them
        self.optimizer = torch.optim.Adam([*self.q.parameters(), *self.choice.parameters()],
                                          lr=cfg.learning_rate, fused=True)
        self.averaged: dict[str, nn.Module] = {}  # filled once exploration ends (average_tau > 0)
        self.averaged_updates = 0
        self.exploring = True
        self.rng = np.random.default_rng(cfg.seed)
        self.epsilon = 0.0
        self.env_steps = 0
        self._param_lists: dict[str, Any] = {}  # parameter lists of the fused updates (_pairs)

    def _prepared(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``obs`` with what every network reading it shares, computed once: the cross features,
        the candidates' hashed item ids (the Q, target and choice networks hash alike) and the
        joined item and context inputs of the trunks."""
        obs = with_cross_features(obs, self.num_topics)
        if self.q.item_bias is not None and IDS_KEY not in obs:
            obs = {**obs, IDS_KEY: hashed_item_ids(obs["candidates"], self.q.id_columns,
                                                   self.q.item_bias.num_embeddings)}
        if ITEMS_KEY not in obs:  # what every network's trunk reads, joined once
            items = obs["candidates"]
            if CROSS_KEY in obs:
                items = torch.cat([items, obs[CROSS_KEY]], 2)
            obs = {**obs, ITEMS_KEY: items, CONTEXT_KEY: context_inputs(obs)}
        return obs

    def _online_networks(self) -> dict[str, nn.Module]:
        """The trained networks, by the names :attr:`averaged` keeps their averages under."""
        return {"q": self.q, "choice": self.choice}

    # ------------------------------------------------------------------ acting
    def _best_slates(self, q_items: torch.Tensor, q_none: torch.Tensor, utility: torch.Tensor,
                     choice: ChoiceNetwork | None = None) -> np.ndarray:
        rho = (choice or self.choice).log_examination().detach().exp().numpy()
        value = (q_items - q_none[:, None]).detach().numpy()
        return optimise_slates(self.config.optimiser, utility.detach().exp().numpy(), value, rho)

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """Best slates under the learned Q and choice model; epsilon-random if not deterministic."""
        users, m = obs["candidates"].shape[:2]
        explore = np.zeros(users, bool)
        if not deterministic and self.epsilon > 0:
            explore = self.rng.random(users) < self.epsilon
        slates = np.empty((users, self.slate_size), np.int64)
        greedy = ~explore
        if greedy.any():  # the networks score only the users who do not explore
            rows = {key: obs[key] for key in OBS_KEYS} if greedy.all() else \
                {key: np.asarray(obs[key])[greedy] for key in OBS_KEYS}
            x = self._prepared(_tensors(rows))
            q_net, choice_net = self.q, self.choice
            if deterministic and self.averaged:
                q_net, choice_net = self.averaged["q"], self.averaged["choice"]
            q_items, q_none = q_net(x)
            utility, _ = choice_net(x)
            slates[greedy] = self._best_slates(q_items, q_none, utility, choice_net)
        if explore.any():
            slates[explore] = random_slates(self.rng, int(explore.sum()), m, self.slate_size)
        return slates


    # ------------------------------------------------------------------ learning
    def td_target(self, batch: dict[str, Any], per_member: bool = False) -> torch.Tensor:
        """``r + discount (1 - done) Q_target(s', A*(s'))`` (``discount`` = gamma^n, default gamma):
        reads only reward, done, discount and the NEXT obs. ``per_member`` (with a continuation
        ensemble): one target per member (K, B), each valuing ``A*`` with ``R`` plus that
        member's own ``C`` (as in bootstrapped DQN, so errors do not travel between members)."""
        return self._td_target(batch, per_member)[0]

    @torch.no_grad()
    def _td_target(self, batch: dict[str, Any], per_member: bool
                   ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """:meth:`td_target` and the online network's continuations over all of ``s'``'s
        candidates (what :meth:`ItemQNetwork.record_agreement` folds in).

        ``A*`` needs the online networks on every candidate; the target network values only
        the k items of ``A*``, so it runs on those alone (:func:`select_candidates`), except
        for a shared target of an ensemble, whose item deviations are centred over all m."""
        cfg, k = self.config, self.slate_size
        next_obs = self._prepared(batch["next_obs"])
        next_utility, _ = self.choice(next_obs)
        continuations: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.q.split:  # double Q: A* by the online network
            reward, reward_none, continuations = self.q.member_parts(next_obs)
            c_items, c_none = self.q.combine(continuations)
            next_q_online, next_none_online = reward + c_items, reward_none + c_none
        else:
            next_q_online, next_none_online = self.q(next_obs)
        best = torch.from_numpy(self._best_slates(next_q_online, next_none_online, next_utility))
        probs = self.choice.slate_logits(next_utility, best).softmax(1)
        if per_member or len(self.q_target.members) < 2:
            shown = select_candidates(next_obs, best)
            if self.q_target.split:
                reward, reward_none, members = self.q_target.member_parts(shown)
                values = [(reward + c, reward_none + n) for c, n in members]
                if not per_member:
                    values = values[:1]  # one network: the combined C is its own
            else:
                values = [self.q_target(shown)]
        else:
            items, none = self.q_target(next_obs)
            values = [(items.gather(1, best), none)]
        next_value = torch.stack([(probs[:, :k] * items).sum(1) + probs[:, k] * none
                                  for items, none in values])
        discount = batch.get("discount", torch.full_like(batch["reward"], cfg.gamma))
        targets = batch["reward"] + discount * (1.0 - batch["done"]) * next_value
        return (targets if per_member else targets[0]), continuations

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One gradient step on the TD loss of the consumed item plus the choice log-loss (with
        ``split_immediate``: R's loss on the immediate reward plus C's on the rest of the target)."""
        cfg, k = self.config, self.slate_size
        for key in ("obs", "next_obs"):
            batch[key] = self._prepared(batch[key])
        member_targets = len(self.q.members) >= 2
        target, next_continuations = self._td_target(batch, member_targets)  # (K, B) if members
        # the losses read only the shown slate: the networks run on its k candidates, not all m
        shown = select_candidates(batch["obs"], batch["slate"])
        clicked = batch["position"] < k
        item = batch["position"].clamp(max=k - 1)[:, None]

        def consumed(items: torch.Tensor, none: torch.Tensor) -> torch.Tensor:
            return torch.where(clicked, items.gather(1, item).squeeze(1), none)

        loss_fn = nn.functional.mse_loss
        logs = {}
        if self.q.split:
            reward, reward_none, continuations = self.q.member_parts(shown)
            immediate = batch["immediate"]
            reward_loss = loss_fn(consumed(reward, reward_none), immediate)
            if len(continuations) == 1:
                td_loss = loss_fn(consumed(*continuations[0]), target - immediate)
            else:  # member i fits only the users of env slots i, i + K, ... and its own target
                members = len(continuations)
                own = batch["slot"][None] % members == torch.arange(members)[:, None]
                weights = members * own.float()
                td_loss = sum((w * loss_fn(consumed(*c), t - immediate, reduction="none")).mean()
                              for w, c, t in zip(weights, continuations, target, strict=True))
                # agreement over all m candidates: the online pass over s' in the target has them
                self.q.record_agreement(next_continuations)
                logs["continuation_shrinkage"] = self.q.shrinkage
            logs["reward_loss"] = reward_loss.item()
            td_loss = td_loss + reward_loss
        else:
            q_items, q_none = self.q(shown)
            td_loss = loss_fn(consumed(q_items, q_none), target)
        utility, _ = self.choice(shown)
        positions = torch.arange(k).expand(len(utility), k)
        choice_loss = nn.functional.cross_entropy(
            self.choice.slate_logits(utility, positions), batch["position"])
        self.optimizer.zero_grad()
        (td_loss + choice_loss).backward()
        trained = self._trained_parameters()
        nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm, foreach=True)
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._pairs("q_target")[1], self._pairs("q_target")[0], cfg.target_tau)
            for b, tb in zip(*self._pairs("q_target", buffers=True), strict=True):
                tb.copy_(b)  # the shrinkage statistics are the online network's
            if cfg.average_tau > 0 and not self.exploring:
                self.averaged_updates += 1
                rate = max(cfg.average_tau, 1.0 / self.averaged_updates)
                for name, online in self._online_networks().items():
                    if name not in self.averaged:  # the first rate is 1: any copy will do
                        self.averaged[name] = copy.deepcopy(online)
                    online_params, averaged_params = self._pairs(name)
                    torch._foreach_lerp_(averaged_params, online_params, rate)
                    for b, ab in zip(*self._pairs(name, buffers=True), strict=True):
                        ab.copy_(b)
        return {"td_loss": td_loss.item(), "choice_loss": choice_loss.item(), **logs}

    def _trained_parameters(self) -> list[nn.Parameter]:
        """The Q and choice networks' parameters (what Adam steps), listed once."""
        if "trained" not in self._param_lists:
            self._param_lists["trained"] = [*self.q.parameters(), *self.choice.parameters()]
        return self._param_lists["trained"]

    def _pairs(self, name: str, buffers: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(online parameters, their copy's) for the target network (``"q_target"``) or an
        averaged network (``"q"``, ``"choice"``), listed once: the Polyak and averaging
        updates then run as one fused ``torch._foreach_lerp_`` each. ``buffers``: the two
        networks' buffers instead (copied, not averaged)."""
        key = f"{name}/buffers" if buffers else name
        if key not in self._param_lists:
            online = self.q if name == "q_target" else self._online_networks()[name]
            copy_ = self.q_target if name == "q_target" else self.averaged[name]
            if buffers:
                self._param_lists[key] = (list(online.buffers()), list(copy_.buffers()))
            else:
                self._param_lists[key] = ([p.data for p in online.parameters()],
                                          [p.data for p in copy_.parameters()])
        return self._param_lists[key]

    def check_train_env(self, num_envs: int) -> None:
        """Raise ``ValueError`` if ``learn`` cannot train on ``num_envs`` users: user-split
        continuation members need at least one env slot each (a member would get no data)."""
        members = len(self.q.members) if self.q.split else 1
        if members >= 2 and num_envs < members:
            raise ValueError(f"SlateQConfig.continuation_members ({members}) needs num_envs >= "
                             f"{members} (each member fits its own users), got {num_envs} envs; "
                             "use more envs or continuation_members=1")

    def learn(self, env: RecSimVectorEnv | None = None, total_steps: int | None = None,
              callback: Callable[[Any, int], bool | None] | None = None) -> SlateQAgent:
        """Train for ``total_steps`` user-steps on a vector env of the config's preset (built
        when ``None``; SAME_STEP or NEXT_STEP autoreset). Every ``log_interval`` user-steps a
        row (``env_steps``, ``episode_return``, ``episodes``, ``steps_per_second``, losses,
        ``epsilon``) is appended to ``learning_curve`` and ``callback(agent, steps_done)`` is
        called; returning ``False`` stops training."""
        cfg = self.config
        total_steps = cfg.total_steps if total_steps is None else total_steps
        if env is None:
            env = RecSimVectorEnv(cfg.num_envs, preset=cfg.preset, autoreset_mode=AutoresetMode.SAME_STEP)
        if env.autoreset_mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
            raise ValueError("SlateQAgent.learn needs SAME_STEP or NEXT_STEP autoreset")
        shapes = {key: tuple(env.single_observation_space[key].shape) for key in OBS_KEYS}
        if shapes != self.shapes:
            raise ValueError(f"env observations {shapes} do not match the agent's preset "
                             f"{self.config.preset!r} {self.shapes}")
        self.check_train_env(env.num_envs)
        slots = np.arange(env.num_envs)
        restarting = np.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: slot only resets this step
        buffer = ReplayBuffer(cfg.buffer_size, self.shapes, self.slate_size)
        queue = NStepQueue(cfg.n_step, cfg.gamma, env.num_envs)
        obs, _ = env.reset(seed=seeds.agent_train_seed(cfg.seed))
        returns = np.zeros(env.num_envs)
        finished: list[float] = []
        losses: dict[str, float] = {}
        start, last_log, start_steps = time.perf_counter(), self.env_steps, self.env_steps
        while self.env_steps - start_steps < total_steps:
            progress = (self.env_steps - start_steps) / max(cfg.exploration_fraction * total_steps, 1)
            self.epsilon = cfg.epsilon_start + min(progress, 1.0) * (cfg.epsilon_end - cfg.epsilon_start)
            self.exploring = progress < 1.0
            slates = self.act(obs, deterministic=False)
            next_obs, reward, terminated, truncated, info = env.step(slates)
            ended = terminated | truncated
            stored_next = next_obs
            if ended.any() and "final_obs" in info:
                stored_next = {key: next_obs[key].copy() for key in OBS_KEYS}
                for key in OBS_KEYS:
                    stored_next[key][ended] = info["final_obs"][key][ended]
            done = terminated | (truncated & cfg.truncation_is_terminal)
            position = np.where(info["click"], info["position"], self.slate_size)
            next_stored = {key: stored_next[key] for key in OBS_KEYS}
            stored = {**{key: obs[key] for key in OBS_KEYS}, SLOT_KEY: slots}
            for transition in queue.push(stored, slates, position,
                                         reward * cfg.reward_scale, next_stored, ended, done, ~restarting):
                buffer.add(*transition)
            if env.autoreset_mode == AutoresetMode.NEXT_STEP:
                restarting = ended
            returns += reward
            finished.extend(returns[ended].tolist())
            returns[ended] = 0.0
            obs = next_obs
            self.env_steps += env.num_envs
            if buffer.size >= cfg.learning_starts:
                for _ in range(cfg.gradient_steps):
                    losses = self.update(buffer.sample(cfg.batch_size, self.rng))
            if self.env_steps - last_log >= cfg.log_interval:
                last_log = self.env_steps
                row = {"env_steps": self.env_steps, "episodes": len(finished),
                       "episode_return": float(np.mean(finished)) if finished else float("nan"),
                       "epsilon": self.epsilon, **losses,
                       "steps_per_second": (self.env_steps - start_steps) / (time.perf_counter() - start)}
                finished = []
                self.learning_curve.append(row)
                self.last_training_row = row
                if callback is not None and callback(self, self.env_steps - start_steps) is False:
                    break
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write config, networks and step count to ``path`` (torch file)."""
        torch.save({"config": dataclasses.asdict(self.config), "q": self.q.state_dict(),
                    "q_target": self.q_target.state_dict(), "choice": self.choice.state_dict(),
                    "averaged": {name: net.state_dict() for name, net in self.averaged.items()},
                    "averaged_updates": self.averaged_updates,
                    "env_steps": self.env_steps}, path)

    @classmethod
    def load(cls, path: str | Path) -> SlateQAgent:
        """Rebuild an agent written by :meth:`save` (``torch.load(weights_only=True)``: no code
        from the file runs); a file of another kind raises ``AgentFileError``."""
        from recsim_gym.agents.persistence import AgentFileError

        try:
            data = torch.load(path, weights_only=True)
            agent = cls(SlateQConfig(**data["config"]))
            agent.q.load_state_dict(data["q"])
            agent.q_target.load_state_dict(data["q_target"])
            agent.choice.load_state_dict(data["choice"])
            for name, state in data.get("averaged", {}).items():
                agent.averaged[name] = copy.deepcopy(agent._online_networks()[name])
                agent.averaged[name].load_state_dict(state)
            agent.averaged_updates = int(data.get("averaged_updates", 0))
            agent.env_steps = int(data["env_steps"])
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means: not a SlateQ file
            raise AgentFileError(f"{path}: not a SlateQ agent file written by SlateQAgent.save "
                                 f"({type(err).__name__}: {str(err)[:200]})") from err
        return agent
