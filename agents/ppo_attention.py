"""PPO with an attention encoder over the user's history and the candidate set (stable-baselines3).

The policy (:class:`SlatePolicy`, an SB3 ``ActorCriticPolicy``) reads the observation as tokens:

* one **user** token (declared topics, episode progress),
* H **history** tokens (item features + click/conversion flags, with a learned recency
  embedding; empty slots at the start of an episode carry ``valid = 0``),
* m **candidate** tokens (topic vector, appeal, price, popularity, and the user x candidate topic
  products of :func:`recsim_gym.agents.features.cross_features`; *no* positional embedding).

**Why joint self-attention** (one transformer encoder over all 1 + H + m tokens) rather than
cross-attention from candidates to history only: a candidate's value here depends on the user
(history -> interest, fatigue) AND on the other candidates (what else could fill the slate; e.g.
a second item of a fatigued topic is worth less, a quality item is worth more when the
alternatives are clickbait). Self-attention over the joint set contains the candidate -> history
cross-attention as a sub-block and adds candidate <-> candidate and history <-> history
interactions, in one layer. At the default sizes (29 tokens, d = 16) the quadratic attention
term is no larger than the token-wise linear layers, so the extra interactions are nearly free.
Without positional information on candidates the encoder is permutation-equivariant in them:
permuting the candidates permutes the scores, and the value (mean-pooled) is invariant.

**Item statistics** (``item_stats_buckets``, on by default in worlds with a catalog): each
candidate token also carries its item's click and conversion counts from the agent's own
training experience (:class:`ItemStats`: a shrunk conversion rate per click and the evidence
behind it). Quality is hidden and is each item's own, so without per-item terms the policy can
only guess it from appeal and price; learning a per-item score through the policy gradient alone
would be slow. On ``default`` (tuning seeds 100/101, 400k steps, width 32) the statistics
took PPO-attention from 79.2/64.5 to 147.2/148.7.

A linear head turns each candidate token into a score; the slate is a Plackett-Luce draw
without duplicates (:mod:`recsim_gym.agents.slate_distribution`: exact log-probabilities, chain-rule
entropy). The value head reads the user token and the mean candidate token.

**Click credit** (``click_credit``, on by default): the policy gradient of a step on which the
user clicked credits the clicked position's term of the slate's log-probability, not all k
terms, so its noise does not grow with the slate size. The agent marks each step's click in
the rollout buffer's slates and recomputes the rollout's log-probabilities under the credit
before PPO's update. Chosen on 11 tuning worlds (docs/suite.md): ahead where the slate space
is large, slightly behind with 10 candidates and slates of 3-5.

**Auxiliary click loss** (``click_aux``, weight 1.0 by default): a second output per candidate
is a click utility, fit once per rollout (before PPO's update) to the marked clicks by their
multinomial-logit likelihood among the shown items, the no-click utility 0. It shares the
encoder with the policy, so the clicks, a dense and nearly noise-free signal, shape the
representation that the noisy policy gradient reads.

Ablation: ``encoder="mlp"`` (the ``ppo_mlp`` agent), an MLP over the flattened observation
(not equivariant) that emits the m scores.

:class:`PPOSlateAgent` wraps SB3's ``PPO`` with the batched ``RecSimVecEnv`` adapter and a
documented hyperparameter dataclass.

Speed (default preset and config, CPU, one torch thread; cProfile of 98k training steps): about
86% of training time is the PPO update and ~14% the rollouts (the simulator and adapter ~3%).
Across both, the network's forward passes take ~40% (torch's fused attention kernel alone ~17%
at width 16) and the backward passes ~38%. The encoder therefore uses a hand-written pre-norm
block (fused QKV, unmasked attention: ~25% faster than ``nn.TransformerEncoderLayer`` with a
padding mask; below :data:`FUSED_ATTENTION_FROM` context tokens as plain matrix products, which
made training 1.1-1.3x faster than torch's fused CPU kernel there) and, in the last layer, only
the user and candidate tokens query (history outputs are never read). The default width
16 trains about 1.3x faster than width 32 (``recsim bench train``). On a shared
2-core machine, prefer ``torch_threads=1`` per process: two threads on oversubscribed cores
collapse. The item statistics (hashing every candidate in every forward, plus the per-step
counting) add about 5-7%.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from recsim_gym.agents.base import BaseAgent
from recsim_gym.agents.features import cross_feature_dim, cross_features, hashed_item_ids, item_id_columns
from recsim_gym.agents.slate_distribution import PlackettLuceDistribution, click_log_likelihood, encode_clicks
from recsim_gym.env.fields import Config, option

ENCODERS = ("attention", "mlp")


# ---------------------------------------------------------------------------------------------
# Networks: observation dict -> (per-candidate logits (B, m, outputs), value (B,))
# ---------------------------------------------------------------------------------------------

#: From this many context tokens on, attention runs in torch's fused CPU kernel
#: (``scaled_dot_product_attention``); below it as two batched matrix products and a softmax.
#: Whole PPO-attention training on ``default`` (torch 2.13, one thread, in one process), the two
#: forms' rates alternated: 1.09-1.17x for the matrix products at m = 10 (19 context tokens),
#: 1.15-1.37x at m = 20 (29), 1.14-1.17x at m = 30, 1.06-1.14x at m = 40 (49), and 0.86-0.93x
#: at m = 50 (59), where the fused kernel's not materialising the (queries x keys) weights wins.
FUSED_ATTENTION_FROM = 54


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: queries attend to ``context`` (itself for self-attention), then a
    feed-forward layer. Fused QKV; no mask (see :class:`AttentionSlateNetwork` on why nothing is
    masked), so long contexts take torch's fused CPU kernel (:data:`FUSED_ATTENTION_FROM`)."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm_query = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Linear(ff_dim, d_model))

    def forward(self, x: th.Tensor, context: th.Tensor | None = None) -> th.Tensor:
        """``x`` (B, L, d) attends to ``context`` (B, C, d), default ``x``; returns (B, L, d)."""
        b, length, d = x.shape
        h = self.num_heads
        queries = self.norm_query(x)
        context = queries if context is None else self.norm_query(context)
        q = self.query(queries).view(b, length, h, d // h).transpose(1, 2)
        k, v = self.key_value(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        if context.shape[1] >= FUSED_ATTENTION_FROM:
            attended = nn.functional.scaled_dot_product_attention(q, k, v)
        else:  # the same attention; at these sizes the fused kernel's overhead dominates
            weights = th.softmax((q * (d // h) ** -0.5) @ k.transpose(-1, -2), dim=-1)
            attended = weights @ v
        x = x + self.out(attended.transpose(1, 2).reshape(b, length, d))
        return x + self.feed_forward(self.norm_ff(x))


class AttentionSlateNetwork(nn.Module):
    """Transformer encoder over user, history and candidate tokens (see the module docstring).

    Every layer is self-attention over all 1 + H + m tokens. Empty history slots (start of an
    episode) are not masked: they are zero feature vectors with their ``valid`` flag 0 plus a
    recency embedding, which the model can learn to ignore; leaving attention unmasked keeps
    long contexts on torch's fused kernel and saves the masking everywhere.

    :param observation_space: the per-user ``Dict`` space (``candidates``, ``history``, ``user``)
    :param outputs: logits per candidate (1: the Plackett-Luce score)
    :param cross_topics: when set (the world's number of topics), candidate tokens also carry
        the user x candidate :func:`recsim_gym.agents.features.cross_features`
    :param item_stats: ``(buckets, columns)``: candidate tokens also carry the :class:`ItemStats`
        features of a table of that many buckets, hashing the first ``columns`` features
    """

    def __init__(self, observation_space: spaces.Dict, outputs: int, d_model: int, num_heads: int,
                 num_layers: int, ff_dim: int, value_hidden: int = 64,
                 cross_topics: int | None = None, item_stats: tuple[int, int] | None = None):
        super().__init__()
        self.cross_topics = cross_topics
        candidate_dim = observation_space["candidates"].shape[-1]
        self.history_length, history_dim = observation_space["history"].shape
        user_dim = observation_space["user"].shape[0]
        if cross_topics is not None:
            candidate_dim += cross_feature_dim(cross_topics, user_dim)
        self.item_stats = None if item_stats is None else ItemStats(*item_stats)
        candidate_dim += 0 if item_stats is None else ItemStats.FEATURES
        self.candidate_in = nn.Linear(candidate_dim, d_model)
        self.history_in = nn.Linear(history_dim, d_model)
        self.history_position = nn.Parameter(0.02 * th.randn(self.history_length, d_model))
        self.user_in = nn.Linear(user_dim, d_model)
        self.blocks = nn.ModuleList(AttentionBlock(d_model, num_heads, ff_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.score_head = nn.Linear(d_model, outputs)
        self.value_head = nn.Sequential(nn.Linear(2 * d_model, value_hidden), nn.Tanh(),
                                        nn.Linear(value_hidden, 1))

    def forward(self, obs: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor]:
        """Logits (B, m, outputs) and values (B,)."""
        user = self.user_in(obs["user"])[:, None]
        context = th.cat([user, self.history_in(obs["history"]) + self.history_position], dim=1)
        candidates = self.candidate_in(_candidate_inputs(obs, self.cross_topics, self.item_stats))
        tokens = th.cat([context, candidates], dim=1)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        # Last layer: only the user and candidate outputs are read, so only they query
        # (keys/values are still every token): same outputs, ~1/3 less work at H=8, m=20.
        queries = th.cat([tokens[:, :1], tokens[:, context.shape[1]:]], dim=1)
        queries = self.blocks[-1](queries, tokens)
        user, candidates = queries[:, 0], queries[:, 1:]
        candidates = self.norm(candidates)
        pooled = th.cat([user, candidates.mean(dim=1)], dim=-1)
        return self.score_head(candidates), self.value_head(pooled).squeeze(-1)


def _candidate_inputs(obs: dict[str, th.Tensor], cross_topics: int | None,
                      item_stats: ItemStats | None = None) -> th.Tensor:
    """Candidate features, extended by the cross features when ``cross_topics`` is set and by
    the item statistics when ``item_stats`` is given."""
    parts = [obs["candidates"]]
    if cross_topics is not None:
        parts.append(cross_features(obs["candidates"], obs["history"], obs["user"], cross_topics))
    if item_stats is not None:
        parts.append(item_stats(obs["candidates"]))
    return parts[0] if len(parts) == 1 else th.cat(parts, dim=2)


class ItemStats(nn.Module):
    """Per-item click and conversion counters from the agent's own experience, as candidate features.

    Observations hide an item's quality, which drives conversions (and, through satisfaction,
    how long users stay). A policy-gradient learner has no cheap way to learn per-item terms:
    each item's score would get a small, noisy share of the advantage. Production rankers carry
    such counters as features; here they are counts in a hashed table
    (:func:`recsim_gym.agents.features.hashed_item_ids`), kept as buffers of the policy so SB3's zip
    save/load carries them. Per candidate the features are, with ``n`` clicks and ``c``
    conversions of its bucket and the global conversion rate ``g`` (updated on commit):

    * ``scale * ((c + prior * g) / (n + prior) - g)``: the shrunk conversion rate per click
      relative to the average (conversion, unlike the click rate, does not depend on the slate
      position or on the competing items);
    * ``log1p(n) / log1p(1000)``: how much evidence there is.

    Counts come only from outcomes the agent observes (which shown item was clicked, whether it
    converted). They are recorded during a rollout and committed at the start of the next one
    (:meth:`record`, :meth:`commit`), so the features of a rollout's observations are the same
    when the rollout is collected and when PPO trains on it (the old and new log-probabilities
    of the ratio see the same inputs). Acting outside training never changes them.
    """

    FEATURES = 2

    def __init__(self, buckets: int, columns: int, prior: float = 5.0, scale: float = 4.0):
        super().__init__()
        if buckets < 1:
            raise ValueError(f"item_stats_buckets must be >= 1, got {buckets}")
        self.buckets, self.columns, self.prior, self.scale = buckets, columns, prior, scale
        self.register_buffer("counts", th.zeros(buckets, 2, dtype=th.float64))  # clicks, conversions
        self.register_buffer("rate", th.zeros((), dtype=th.float64))  # conversions / clicks overall
        self.pending = np.zeros((buckets, 2))

    def ids(self, candidates: th.Tensor) -> th.Tensor:
        """(B, m) hashed ids of the candidates."""
        return hashed_item_ids(candidates, self.columns, self.buckets)

    def forward(self, candidates: th.Tensor) -> th.Tensor:
        """(B, m, 2) features of the candidates (see the class docstring)."""
        rate = float(self.rate)
        counts = self.counts[self.ids(candidates)]
        n, c = counts[..., 0], counts[..., 1]
        shrunk = (c + self.prior * rate) / (n + self.prior) - rate
        evidence = th.log1p(n) / np.log1p(1000.0)
        return th.stack([self.scale * shrunk, evidence], dim=-1).to(candidates.dtype)

    def record(self, candidates: np.ndarray, slates: np.ndarray, position: np.ndarray,
               conversion: np.ndarray) -> None:
        """Add one step's outcomes to the pending counts: ``candidates`` (B, m, D) shown to the
        users, their ``slates`` (B, k), the clicked slate ``position`` (B,; -1 for no click) and
        whether the click ``conversion`` happened (B,)."""
        users = np.flatnonzero(np.asarray(position) >= 0)
        if users.size == 0:
            return
        chosen = np.asarray(slates)[users, np.asarray(position)[users]].astype(np.int64)
        items = th.as_tensor(np.asarray(candidates)[users, chosen][:, None])
        ids = self.ids(items)[:, 0].numpy()
        np.add.at(self.pending, (ids, 0), 1.0)
        np.add.at(self.pending, (ids, 1), np.asarray(conversion, dtype=np.float64)[users])

    def commit(self) -> None:
        """Move the pending counts into the features."""
        self.counts += th.from_numpy(self.pending)
        self.pending[:] = 0.0
        clicks, conversions = self.counts.sum(0)
        self.rate.fill_(float(conversions / clicks) if float(clicks) > 0 else 0.0)


class MlpSlateNetwork(nn.Module):
    """Ablation: an MLP over the flattened observation (and flattened cross features, when
    ``cross_topics`` is set) emits all m x outputs logits and the value."""

    def __init__(self, observation_space: spaces.Dict, outputs: int, hidden: tuple[int, ...],
                 cross_topics: int | None = None, item_stats: tuple[int, int] | None = None):
        super().__init__()
        self.num_candidates = observation_space["candidates"].shape[0]
        self.outputs, self.cross_topics = outputs, cross_topics
        self.item_stats = None if item_stats is None else ItemStats(*item_stats)
        self.keys = ("history", "user")
        layers: list[nn.Module] = []
        width = sum(int(np.prod(observation_space[key].shape)) for key in ("candidates", *self.keys))
        if cross_topics is not None:
            width += self.num_candidates * cross_feature_dim(cross_topics, observation_space["user"].shape[0])
        if item_stats is not None:
            width += self.num_candidates * ItemStats.FEATURES
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.score_head = nn.Linear(width, self.num_candidates * outputs)
        self.value_head = nn.Linear(width, 1)

    def forward(self, obs: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor]:
        """Logits (B, m, outputs) and values (B,)."""
        candidates = _candidate_inputs(obs, self.cross_topics, self.item_stats)
        flat = th.cat([candidates.flatten(1), *(obs[key].flatten(1) for key in self.keys)], dim=1)
        latent = self.trunk(flat)
        logits = self.score_head(latent).view(-1, self.num_candidates, self.outputs)
        return logits, self.value_head(latent).squeeze(-1)


class _NoFeatures(BaseFeaturesExtractor):
    """Placeholder: the slate networks read the observation dict themselves."""

    def __init__(self, observation_space: spaces.Space):
        super().__init__(observation_space, features_dim=1)

    def forward(self, observations: Any) -> Any:
        return observations


# ---------------------------------------------------------------------------------------------
# SB3 policy
# ---------------------------------------------------------------------------------------------

class SlatePolicy(ActorCriticPolicy):
    """Actor-critic over slates: a slate network (attention or MLP) and a slate distribution.

    :param network_kwargs: the slate network's sizes, :meth:`PPOSlateConfig.network_kwargs`:
        ``encoder`` (``"attention"`` or ``"mlp"``), ``d_model``, ``num_heads``, ``num_layers``,
        ``ff_dim``, ``mlp_hidden``, ``cross_topics`` (topics of the cross features, None: off) and
        ``item_stats`` (``(buckets, columns)`` of the :class:`ItemStats` features, None: off)
    :param click_credit: the slate distribution credits a clicked step to the clicked position
        only (:class:`PlackettLuceDistribution`; the agent marks the clicks in the rollout)
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.MultiDiscrete,
                 lr_schedule: Any, network_kwargs: dict[str, Any] | None = None,
                 click_credit: bool = False, click_aux: float = 0.0, **kwargs: Any):
        self.network_kwargs = {**PPOSlateConfig().network_kwargs(), **(network_kwargs or {})}
        self.click_credit = bool(click_credit)
        self.click_aux = float(click_aux)
        if self.network_kwargs["encoder"] not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.network_kwargs['encoder']!r}")
        kwargs.setdefault("features_extractor_class", _NoFeatures)
        kwargs["ortho_init"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        slate_size = int(self.action_space.nvec.shape[0])
        net = self.network_kwargs
        item_stats = None if net["item_stats"] is None else tuple(net["item_stats"])
        outputs = 2 if self.click_aux > 0 else 1  # channel 1: the click utility
        if net["encoder"] == "attention":
            self.network: nn.Module = AttentionSlateNetwork(
                self.observation_space, outputs, net["d_model"], net["num_heads"], net["num_layers"],
                net["ff_dim"], cross_topics=net["cross_topics"], item_stats=item_stats)
        else:
            self.network = MlpSlateNetwork(self.observation_space, outputs, tuple(net["mlp_hidden"]),
                                           net["cross_topics"], item_stats)
        self.action_dist: Distribution = PlackettLuceDistribution(slate_size, self.click_credit)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(network_kwargs=dict(self.network_kwargs), click_credit=self.click_credit,
                    click_aux=self.click_aux)
        return data

    def _distribution(self, obs: dict[str, th.Tensor]) -> tuple[Distribution, th.Tensor]:
        logits, values = self.network(obs)
        return self.action_dist.proba_distribution(logits[..., 0]), values

    def forward(self, obs: dict[str, th.Tensor], deterministic: bool = False
                ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Slates (B, k), values (B, 1) and log-probabilities (B,)."""
        distribution, values = self._distribution(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values[:, None], distribution.log_prob(actions)

    def evaluate_actions(self, obs: dict[str, th.Tensor], actions: th.Tensor
                         ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Values (B, 1), log-probabilities and entropies (B,) of the given slates."""
        distribution, values = self._distribution(obs)
        log_prob = distribution.log_prob(actions.long())
        return values[:, None], log_prob, distribution.entropy()

    def get_distribution(self, obs: dict[str, th.Tensor]) -> Distribution:
        """The slate distribution at ``obs``."""
        return self._distribution(obs)[0]

    def predict_values(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Values (B, 1)."""
        return self.network(obs)[1][:, None]

    def candidate_scores(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Per-candidate logits (B, m, outputs), for analysis and tests."""
        return self.network(obs)[0]


# ---------------------------------------------------------------------------------------------
# Agent
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PPOSlateConfig(Config):
    """Hyperparameters of the PPO slate agents (defaults for ``default``; evidence in docs/agents.md)."""

    encoder: str = option("attention", "Slate network: the attention encoder, or an MLP (ablation).",
                          choices=ENCODERS)
    num_envs: int = option(128, "Users stepped together by the batched core during training.", 1)
    n_steps: int = option(64, "Steps per user per rollout (rollout = num_envs * n_steps).", 1)
    batch_size: int = option(512, "Minibatch size of the PPO update.", 1)
    n_epochs: int = option(4, "Passes over each rollout.", 1)
    learning_rate: float = option(5e-4, "Adam step size.", 0.0, low_open=True)
    gamma: float = option(0.99, "Discount; churn effects play out over tens of steps.", 0.0, 1.0)
    gae_lambda: float = option(0.9, "GAE lambda.", 0.0, 1.0)
    clip_range: float = option(0.2, "PPO ratio clip.", 0.0, low_open=True)
    ent_coef: float = option(0.003, "Entropy bonus (chain-rule slate entropy).", 0.0)
    vf_coef: float = option(0.5, "Value-loss weight.", 0.0)
    max_grad_norm: float = option(0.5, "Gradient clipping.", 0.0, low_open=True)
    normalize_reward: bool = option(True, "Scale rewards by a running return std during training.")
    d_model: int = option(16, "Attention token width.", 1)
    num_heads: int = option(2, "Attention heads (must divide d_model).", 1)
    num_layers: int = option(1, "Transformer layers.", 1)
    ff_dim: int = option(32, "Transformer feed-forward width.", 1)
    mlp_hidden: tuple[int, ...] = option((256, 256), "Hidden sizes of the MLP encoder.")
    cross_features: bool = option(True, "Candidate inputs also carry user x candidate topic "
                                  "products (unused when the env does not give its topics).")
    click_credit: bool = option(True, "Credit a step with a click to the clicked item's "
                                "position in the slate's log-probability, not to the whole slate.")
    click_aux: float = option(1.0, "Weight of an auxiliary loss: the clicks' multinomial-logit "
                              "likelihood on a second per-candidate output (0: off; needs click_credit).",
                              0.0)
    item_stats_buckets: int = option(65_536, "Hashed buckets of the per-item click/conversion "
                                     "counters on candidate tokens (0: off; unused without a catalog).", 0)
    deterministic: bool = option(True, "act() shows the most likely slate (False: samples).")
    torch_threads: int | None = option(None, "torch threads during learn/act (None: torch's setting).", 1)
    seed: int | None = option(None, "Seed of the policy initialisation, sampling and training users.", 0)
    tensorboard_log: str | None = option(None, "Directory for TensorBoard logs (SB3 logger).")
    log_dir: str | None = option(None, "Directory for CSV logs (progress.csv, SB3 logger).")
    verbose: int = option(0, "SB3 verbosity.", 0, 2)
    env_overrides: dict[str, Any] = option(doc="Extra Params overrides for the training env.",
                                           factory=dict)

    def check(self) -> None:
        """Cross-field rules."""
        self.require(self.d_model % self.num_heads == 0, "d_model",
                     f"({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        self.require(self.click_aux == 0 or self.click_credit, "click_aux",
                     f"({self.click_aux}) needs click_credit=True (the loss reads the clicks it marks)")
        for i, width in enumerate(self.mlp_hidden):
            ok = isinstance(width, int | np.integer) and not isinstance(width, bool) and width >= 1
            self.require(ok, f"mlp_hidden[{i}]", f"must be an integer in [1, inf), got {width!r}")
        if self.tensorboard_log is not None:  # SB3 would fail only when learn() starts logging
            import importlib.util

            self.require(importlib.util.find_spec("tensorboard") is not None, "tensorboard_log",
                         "needs TensorBoard, which is not installed: pip install "
                         "'recsim-gym[tensorboard]'")

    def network_kwargs(self, num_topics: int | None = None, id_columns: int | None = None
                       ) -> dict[str, Any]:
        """The slate network's sizes, :class:`SlatePolicy`'s ``network_kwargs`` (``num_topics``:
        the world's, for the cross features; ``id_columns``: the static candidate columns that
        identify an item, None when the world has no catalog, which turns the item statistics
        off)."""
        item_stats = None
        if self.item_stats_buckets > 0 and id_columns is not None:
            item_stats = (int(self.item_stats_buckets), int(id_columns))
        return dict(encoder=self.encoder, d_model=self.d_model, num_heads=self.num_heads,
                    num_layers=self.num_layers, ff_dim=self.ff_dim, mlp_hidden=tuple(self.mlp_hidden),
                    cross_topics=num_topics if self.cross_features else None, item_stats=item_stats)


class PPOSlateAgent(BaseAgent):
    """PPO slate agent: ``learn`` on the batched simulator, ``act`` on batched observations.

    :param config: hyperparameters; keyword ``overrides`` replace its fields
    """

    name = "ppo_attention"

    def __init__(self, config: PPOSlateConfig | None = None, **overrides: Any):
        self.config = (config or PPOSlateConfig()).replace(**overrides)
        self.model: Any = None  # stable_baselines3.PPO once learn/load ran
        self.train_env: Any = None
        #: Training statistics of the last rollout (see :meth:`learn`).
        self.last_training_row: dict[str, float] = {}

    # -- environment ------------------------------------------------------------------------
    def make_train_env(self, env: Any = "default") -> Any:
        """SB3 VecEnv for ``env``: a preset name, a recsim env/simulator (its params), or an SB3 VecEnv."""
        from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

        from recsim_gym.agents.sb3_vecenv import RecSimVecEnv

        if isinstance(env, VecEnv):
            return env
        overrides = dict(self.config.env_overrides)
        params = getattr(env, "params", None)
        if params is not None:
            vec: VecEnv = RecSimVecEnv(self.config.num_envs, params=params.replace(**overrides))
        else:
            vec = RecSimVecEnv(self.config.num_envs, preset=str(env), **overrides)
        if self.config.seed is not None:
            vec.seed(self.config.seed)
        vec = VecMonitor(vec)
        if self.config.normalize_reward:
            vec = VecNormalize(vec, norm_obs=False, norm_reward=True, gamma=self.config.gamma)
        return vec

    def _build_model(self, vec_env: Any) -> None:
        from stable_baselines3 import PPO

        c = self.config
        params = getattr(vec_env.unwrapped, "params", None)
        num_topics = getattr(params, "num_topics", None)
        id_columns = None if params is None else item_id_columns(vec_env.unwrapped.env.sim)
        self.model = PPO(SlatePolicy, vec_env, learning_rate=c.learning_rate, n_steps=c.n_steps,
                         batch_size=c.batch_size, n_epochs=c.n_epochs, gamma=c.gamma,
                         gae_lambda=c.gae_lambda, clip_range=c.clip_range, ent_coef=c.ent_coef,
                         vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm,
                         policy_kwargs={"network_kwargs": c.network_kwargs(num_topics, id_columns),
                                        "click_credit": c.click_credit, "click_aux": c.click_aux},
                         tensorboard_log=c.tensorboard_log, seed=c.seed, verbose=c.verbose, device="cpu")

    def _set_logger(self) -> None:
        """The SB3 logger of the config: CSV (and TensorBoard) in ``log_dir`` if given, else SB3's
        TensorBoard logging if ``tensorboard_log``, else stdout (``verbose``) or nothing."""
        from stable_baselines3.common.logger import Logger, configure, make_output_format

        c = self.config
        if c.log_dir is not None:
            formats = ["csv"] + (["tensorboard"] if c.tensorboard_log else [])
            formats += ["stdout"] if c.verbose else []
            self.model.set_logger(configure(c.log_dir, formats))
        elif c.tensorboard_log is None:
            # SB3's own logger (configure(None, ...)) makes an empty /tmp/SB3-<time> directory
            # on every learn(); with nothing to write there, log to stdout (verbose) or nowhere
            outputs = [make_output_format("stdout", "")] if c.verbose else []
            self.model.set_logger(Logger(None, outputs))

    # -- protocol --------------------------------------------------------------------------
    def learn(self, env: Any = None, total_steps: int = 100_000, callback: Any = None) -> PPOSlateAgent:
        """Train for ``total_steps`` env-steps (user-steps) with PPO; continues a loaded/trained model.

        ``env``: None (the ``default`` preset), a preset name, a recsim env/simulator (its params are
        used; the agent steps its own ``config.num_envs`` users on them) or an SB3 VecEnv.
        ``callback``: an SB3 callback, or the agent protocol's ``callback(agent, steps_done)``,
        called after every rollout (returning False stops training); :attr:`last_training_row`
        then holds ``env_steps``, ``episode_return``, ``episode_length``, ``episodes`` and
        ``steps_per_second``.
        """
        env = "default" if env is None else env
        if callback is not None and not isinstance(callback, BaseCallback | list):
            callback = _ProtocolCallback(self, callback)
        with _TorchThreads(self.config.torch_threads):
            if self.model is None:
                self.train_env = self.make_train_env(env)
                self._build_model(self.train_env)
            elif self.model.get_env() is None:
                self.train_env = self.make_train_env(env)
                self.model.set_env(self.train_env)
            if not self.model._custom_logger:
                self._set_logger()
            callbacks = [] if callback is None else callback if isinstance(callback, list) else [callback]
            stats = self.model.policy.network.item_stats
            if stats is not None:
                callbacks = [_ItemStatsCallback(stats), *callbacks]
            if self.model.policy.click_credit:  # others see unmarked slates, a credited buffer
                callbacks = [_CreditClicks(), *callbacks, _MarkClicks()]
            callback = callbacks or None
            self.model.learn(total_timesteps=total_steps, callback=callback, reset_num_timesteps=False)
        return self

    def act(self, obs: dict[str, np.ndarray], deterministic: bool | None = None) -> np.ndarray:
        """Slates (B, k) for batched observations (``deterministic`` defaults to the config's)."""
        return self.predict(obs, deterministic=self.config.deterministic if deterministic is None
                            else deterministic)[0]

    def predict(self, obs: dict[str, np.ndarray], state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """SB3-style ``predict``: (slates (B, k) int64, None)."""
        if self.model is None:
            raise RuntimeError("the agent has no model yet: call learn() or load() first")
        keys = ("candidates", "history", "user")
        with _TorchThreads(self.config.torch_threads), th.no_grad():
            tensors = {key: th.as_tensor(np.asarray(obs[key], dtype=np.float32)) for key in keys}
            policy = self.model.policy
            policy.set_training_mode(False)
            slates = policy._distribution(tensors)[0].get_actions(deterministic=deterministic)
        return slates.numpy().astype(np.int64), None

    def save(self, path: str | Path) -> None:
        """Save through SB3's zip format (policy weights, optimizer, hyperparameters)."""
        if self.model is None:
            raise RuntimeError("nothing to save: call learn() first")
        self.model.save(str(path))

    @classmethod
    def load(cls, path: str | Path, config: PPOSlateConfig | None = None, *,
             allow_pickle: bool = False, **overrides: Any) -> PPOSlateAgent:
        """Load a model saved by :meth:`save`. SB3's zip format unpickles parts of the file
        (``PPO.load``), which runs code from it, so this refuses unless ``allow_pickle=True``:
        pass it only for files you made or trust."""
        from stable_baselines3 import PPO

        from recsim_gym.agents.persistence import AgentFileError

        if not allow_pickle:
            raise AgentFileError(f"{path}: PPO agent files are SB3 zips, and loading one unpickles "
                                 "parts of it (code from the file could run); pass "
                                 "allow_pickle=True only for a file you trust")
        agent = cls(config, **overrides)
        try:
            agent.model = PPO.load(str(path), device="cpu")
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means: not an SB3 PPO zip
            raise AgentFileError(f"{path}: not a PPO agent file written by PPOSlateAgent.save "
                                 f"({type(err).__name__}: {str(err)[:200]})") from err
        policy = agent.model.policy
        model = agent.model
        net = policy.network_kwargs
        agent.config = agent.config.replace(
            encoder=net["encoder"], d_model=net["d_model"], num_heads=net["num_heads"],
            num_layers=net["num_layers"], ff_dim=net["ff_dim"], mlp_hidden=tuple(net["mlp_hidden"]),
            cross_features=net["cross_topics"] is not None,
            item_stats_buckets=0 if net["item_stats"] is None else net["item_stats"][0],
            click_credit=bool(getattr(policy, "click_credit", False)),
            click_aux=float(getattr(policy, "click_aux", 0.0)),
            num_envs=model.n_envs,
            n_steps=model.n_steps, batch_size=model.batch_size, n_epochs=model.n_epochs, gamma=model.gamma,
            gae_lambda=model.gae_lambda)
        return agent


class _ProtocolCallback(BaseCallback):
    """Adapts the protocol's ``callback(agent, steps_done)`` to SB3's API (after every rollout)."""

    def __init__(self, agent: PPOSlateAgent, function: Any):
        super().__init__()
        self.agent, self.function, self.keep_going = agent, function, True

    def _on_training_start(self) -> None:
        self.start, self.start_steps, self.keep_going = time.perf_counter(), self.num_timesteps, True

    def _on_step(self) -> bool:
        return self.keep_going

    def _on_rollout_end(self) -> None:
        episodes = list(self.model.ep_info_buffer)
        nan = float("nan")
        row = {"env_steps": int(self.num_timesteps), "episodes": len(episodes),
               "episode_return": float(np.mean([e["r"] for e in episodes])) if episodes else nan,
               "episode_length": float(np.mean([e["l"] for e in episodes])) if episodes else nan,
               "steps_per_second": (self.num_timesteps - self.start_steps)
               / max(time.perf_counter() - self.start, 1e-9),
               # SB3's losses of the last update (train/policy_gradient_loss, train/value_loss, ...)
               **{name: value for name, value in self.model.logger.name_to_value.items()
                  if name.startswith("train/")}}
        self.agent.last_training_row = row
        self.keep_going = self.function(self.agent, int(self.num_timesteps)) is not False


class _ItemStatsCallback(BaseCallback):
    """Records every training step's clicks and conversions into :class:`ItemStats`; the counts
    are committed when a rollout starts (after PPO trained on the previous one) and at the end."""

    def __init__(self, stats: ItemStats):
        super().__init__()
        self.stats = stats

    def _on_rollout_start(self) -> None:
        self.stats.commit()

    def _on_step(self) -> bool:
        info = self.training_env.unwrapped.last_info
        candidates = self.locals["obs_tensor"]["candidates"].cpu().numpy()
        self.stats.record(candidates, self.locals["clipped_actions"], info["position"], info["conversion"])
        return True

    def _on_training_end(self) -> None:
        self.stats.commit()


class _MarkClicks(BaseCallback):
    """Click credit, part 1 (``PPOSlateConfig.click_credit``): marks each step's clicked entry in
    the slate the rollout buffer keeps (:func:`encode_clicks`). Runs after every other callback's
    ``on_step``, which so see the slates unmarked. The click positions come from
    :class:`RecSimVecEnv`'s batched info, else from each env's ``info["position"]``; an env that
    reports neither gets no marks (whole-slate credit)."""

    def _on_step(self) -> bool:
        info = getattr(self.training_env.unwrapped, "last_info", None)
        if info is not None and "position" in info:
            positions = np.asarray(info["position"])
        else:
            positions = np.array([i.get("position", -1) for i in self.locals["infos"]])
        encode_clicks(self.locals["actions"], positions, int(self.model.action_space.nvec[0]))
        return True


class _CreditClicks(BaseCallback):
    """Click credit, part 2: at the rollout's end, before any other callback's ``on_rollout_end``
    and PPO's update, recomputes the buffer's log-probabilities of the marked slates as the
    distribution credits them, so that PPO's ratio compares like with like."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer, policy = self.model.rollout_buffer, self.model.policy
        if policy.click_aux > 0:
            self._fit_clicks(buffer, policy)
        policy.set_training_mode(False)
        with th.no_grad():
            for t in range(buffer.buffer_size):  # one step of every user at a time
                obs = {key: th.as_tensor(value[t]) for key, value in buffer.observations.items()}
                log_prob = policy.get_distribution(obs).log_prob(th.as_tensor(buffer.actions[t]))
                buffer.log_probs[t] = log_prob.numpy()

    def _fit_clicks(self, buffer: Any, policy: SlatePolicy) -> None:
        """One pass of the auxiliary click loss over the rollout: the clicked item's (or no
        click's) multinomial-logit likelihood among the shown ones, utilities from the network's
        second output, the no-click utility 0."""
        policy.set_training_mode(True)
        n = buffer.buffer_size * buffer.n_envs
        space = self.model.observation_space
        obs_all = {key: th.as_tensor(value.reshape(n, *space[key].shape))
                   for key, value in buffer.observations.items()}
        actions_all = th.as_tensor(buffer.actions.reshape(n, -1)).long()
        order = th.randperm(n)
        for start in range(0, n, self.model.batch_size):
            idx = order[start:start + self.model.batch_size]
            obs = {key: value[idx] for key, value in obs_all.items()}
            log_lik = click_log_likelihood(policy.network(obs)[0][..., 1], actions_all[idx])
            loss = -policy.click_aux * log_lik.mean()
            policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), self.model.max_grad_norm)
            policy.optimizer.step()


class _TorchThreads:
    """Context manager: ``torch.set_num_threads(n)`` inside, restored after (None = unchanged)."""

    def __init__(self, n: int | None):
        self.n, self.previous = n, th.get_num_threads()

    def __enter__(self) -> None:
        if self.n is not None:
            th.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.n is not None:
            th.set_num_threads(self.previous)


def ppo_attention(params: Any = None, seed: int | None = None, **overrides: Any) -> PPOSlateAgent:
    """PPO with the attention encoder and the Plackett-Luce slate head (registry factory; the
    world ``params`` come with the env given to ``learn``)."""
    return PPOSlateAgent(seed=seed, **overrides)


def ppo_mlp(params: Any = None, seed: int | None = None, **overrides: Any) -> PPOSlateAgent:
    """Ablation: PPO with the MLP encoder (same Plackett-Luce slate head)."""
    overrides.setdefault("encoder", "mlp")
    agent = PPOSlateAgent(seed=seed, **overrides)
    agent.name = "ppo_mlp"
    return agent
