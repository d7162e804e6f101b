"""Supervised click/conversion models fit on logged data, serving the slate of highest predicted reward.

Three torch models predict, for a (user history, candidate) pair, P(click) and
P(conversion | click):

* ``logreg`` - logistic regression on hand-made cross features (candidate topic vector times the
  user's clicked-topic profile and declared topics, appeal, price, popularity, their products)
  plus one-hot item-id features (a click and a conversion weight per logged item);
* ``two_tower`` - matrix-factorisation style: a user tower (declared topics, history profile)
  and an item tower (item-id embedding + feature MLP), scored by a dot product plus biases;
* ``din`` - DIN-style (Zhou et al., KDD 2018): attention from the candidate over the user's
  history items (weights from an MLP of candidate, history item, their difference and product),
  the pooled interest concatenated with the candidate and user features into an MLP, plus
  item-id click and conversion biases.

Training examples are the logged slates. The click head is fit as a conditional logit: the
logged choice among the k shown items and "no
click" is a softmax over ``[s_1 + b_1, ..., s_k + b_k, 0]``, with ``s`` the model's item score and
``b_j`` a learned log-examination bias of position ``j`` (position-bias debiasing, as in PAL).
Unlike a pointwise per-item click label, this does not fold the competition of the other shown
items into ``s``, so ``exp(s)`` is an attraction that transfers to any slate, whoever logged it.
The conversion head is fit with a logistic loss on clicked items (label: the click converted).

Serving (``serving="mnl"``, the default) shows the slate maximising the predicted reward
``sum_j w_j rho_j v_j / (1 + sum_j w_j rho_j)``, with attraction ``w = exp(s + b_1)``, learned
examination ``rho_j = exp(b_j - b_1)`` and value per click ``v = w_click + w_conv * pCVR``
(exact, Dinkelbach's iteration: :func:`recsim_gym.agents.slates.dinkelbach_slate`). It accounts for the
items competing for the click: a top k by ``pCTR * v`` fills the slate with high-click items and
lets them crowd out the ones that convert. ``serving="topk"`` ranks candidates by
``pCTR * w_click + pCTR * pCVR * w_conv`` (``pCTR`` at position 1) and shows the top k.

Item-id features need ids; observations carry features only, so the agent maps the static
features (topic vector, appeal, price) of items it has shown (ids known from its own logs) to
their ids, and unseen items share an out-of-vocabulary embedding.

``learn(env, total_steps)`` generates ``total_steps`` logged user-steps on the env's world with
the logging policy (ε-greedy over popularity) and fits; with ``retrain_every > 0`` the budget
is split into rounds and each later round logs with the current model (online supervised
learning on the agent's own fresh logs) and refits on all logs so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recsim_gym.agents.bandits import item_keys
from recsim_gym.agents.base import BaseAgent, Observation
from recsim_gym.agents.slates import dinkelbach_slate, top_k
from recsim_gym.env import logs as recsim_logs
from recsim_gym.env import seeds
from recsim_gym.env.fields import Config, option


def _profile(history: torch.Tensor, t: int) -> torch.Tensor:
    """Mean topic vector of the clicked, valid history entries (N, T)."""
    weight = history[..., t + 3] * history[..., t + 5]
    return (history[..., :t] * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp(min=1.0)


def _user_width(user: np.ndarray, t: int) -> np.ndarray:
    """User features as (N, T+1) (declared topics, progress): other worlds' are zero-padded/cut."""
    if user.shape[1] == t + 1:
        return user
    out = np.zeros((user.shape[0], t + 1), dtype=user.dtype)
    width = min(t + 1, user.shape[1])
    out[:, :width] = user[:, :width]
    return out


def _half_rounded(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to float16 precision, as float32: what a log stores (features are float16
    there), so the model sees the same inputs when it is fit and when it serves. torch converts
    float32 several times faster than numpy, with the same (round-to-nearest-even) result;
    float64 goes through numpy, which rounds it once, not twice."""
    if x.dtype == np.float64:
        return x.astype(np.float16).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float16).to(torch.float32).numpy()


class ClickNet(nn.Module):
    """Base: ``forward`` returns click and conversion logits (N,) for candidate rows."""

    def __init__(self, num_topics: int, slate_size: int):
        super().__init__()
        self.t = num_topics
        self.position_bias = nn.Parameter(torch.zeros(slate_size))

    def logits(self, cand: torch.Tensor, item: torch.Tensor, history: torch.Tensor,
               user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(click logit without position bias, conversion logit), each (N,)."""
        raise NotImplementedError


class LogRegNet(ClickNet):
    """Two logistic regressions on hand-made cross features."""

    def features(self, cand: torch.Tensor, history: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        t = self.t
        topic, scalars = cand[:, :t], cand[:, t:t + 3]
        profile = _profile(history, t)
        declared = user[:, :t]
        match_hist = (topic * profile).sum(1, keepdim=True)
        match_decl = (topic * declared).sum(1, keepdim=True)
        return torch.cat([topic * profile, topic * declared, topic, scalars, match_hist, match_decl,
                          match_hist * scalars, match_decl * scalars, scalars * scalars], dim=1)

    def __init__(self, num_topics: int, slate_size: int, num_items: int = 0, item_ids: bool = True):
        super().__init__(num_topics, slate_size)
        width = 3 * num_topics + 3 + 2 + 6 + 3
        self.click = nn.Linear(width, 1)
        self.conv = nn.Linear(width, 1)
        # one-hot item-id features (a click and a conversion weight per item; row 0: unseen items)
        self.item_bias = nn.Embedding(num_items + 1, 2) if item_ids else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)

    def logits(self, cand, item, history, user):  # noqa: D102
        x = self.features(cand, history, user)
        click, conv = self.click(x).squeeze(1), self.conv(x).squeeze(1)
        if self.item_bias is not None:
            b = self.item_bias(item)
            click, conv = click + b[:, 0], conv + b[:, 1]
        return click, conv


class TwoTowerNet(ClickNet):
    """User tower and item tower (id embedding + features), dot product scores."""

    def __init__(self, num_topics: int, slate_size: int, num_items: int = 1, dim: int = 32):
        super().__init__(num_topics, slate_size)
        t = num_topics
        self.user_tower = nn.Sequential(nn.Linear(2 * t + 1, 64), nn.ReLU(), nn.Linear(64, 2 * dim))
        self.item_features = nn.Sequential(nn.Linear(t + 3, 64), nn.ReLU(), nn.Linear(64, 2 * dim))
        self.item_id = nn.Embedding(num_items + 1, 2 * dim)  # row 0: out of vocabulary
        nn.init.normal_(self.item_id.weight, std=0.01)
        self.item_bias = nn.Embedding(num_items + 1, 2)
        nn.init.zeros_(self.item_bias.weight)
        self.bias = nn.Linear(t + 3, 2)
        self.dim = dim

    def logits(self, cand, item, history, user):  # noqa: D102
        u = self.user_tower(torch.cat([user[:, :self.t], _profile(history, self.t),
                                       history[:, :, self.t + 3].mean(1, keepdim=True)], dim=1))
        v = self.item_features(cand) + self.item_id(item)
        d = self.dim
        b = self.bias(cand) + self.item_bias(item)
        click = (u[:, :d] * v[:, :d]).sum(1) + b[:, 0]
        conv = (u[:, d:] * v[:, d:]).sum(1) + b[:, 1]
        return click, conv


class DINNet(ClickNet):
    """Attention from the candidate over history items, pooled interest -> MLP."""

    def __init__(self, num_topics: int, slate_size: int, num_items: int = 0, dim: int = 32):
        super().__init__(num_topics, slate_size)
        t = num_topics
        self.embed_cand = nn.Linear(t + 3, dim)
        self.embed_hist = nn.Linear(t + 6, dim)
        self.attention = nn.Sequential(nn.Linear(4 * dim, 32), nn.ReLU(), nn.Linear(32, 1))
        self.head = nn.Sequential(nn.Linear(2 * dim + t + 1 + t + 4, 64), nn.ReLU(), nn.Linear(64, 2))
        # item-id click and conversion biases (row 0: unseen items): what features do not tell
        # about an item, e.g. its conversion rate
        self.item_bias = nn.Embedding(num_items + 1, 2)
        nn.init.zeros_(self.item_bias.weight)

    def logits(self, cand, item, history, user):  # noqa: D102
        c = self.embed_cand(cand)  # (N, d)
        h = self.embed_hist(history)  # (N, H, d)
        ce = c[:, None, :].expand_as(h)
        score = self.attention(torch.cat([ce, h, ce - h, ce * h], dim=-1)).squeeze(-1)
        # DIN keeps raw (unnormalised) activation weights; invalid history slots are masked out
        weight = torch.sigmoid(score) * history[..., self.t + 5]
        interest = (weight[..., None] * h).sum(1)
        match = (cand[:, :self.t] * _profile(history, self.t)).sum(1, keepdim=True)
        out = self.head(torch.cat([c, interest, user, cand[:, :self.t] * user[:, :self.t],
                                   cand[:, self.t:self.t + 3], match], dim=1))
        out = out + self.item_bias(item)
        return out[:, 0], out[:, 1]


NETS: dict[str, type[ClickNet]] = {"logreg": LogRegNet, "two_tower": TwoTowerNet, "din": DINNet}


@dataclass(frozen=True)
class ClickModelConfig(Config):
    """Hyperparameters of the supervised click models (logreg, two-tower, DIN)."""

    epochs: int = option(3, "Passes over the logs per fit.", 1)
    batch_rows: int = option(256, "Logged slates per gradient step.", 1)
    lr: float | None = option(None, "Adam learning rate (None: 0.02 for logreg, 0.003 for the "
                              "deep models).", 0.0, low_open=True)
    epsilon: float = option(0.3, "Exploration of the epsilon-popularity logging policy of learn().",
                            0.0, 1.0)
    retrain_every: int = option(0, "If > 0, learn() refits every this many user-steps on fresh logs.", 0)
    serving: str = option("mnl", "Slate: exact best predicted reward under the MNL reading "
                          "('mnl'), or top k by predicted reward per item ('topk').",
                          choices=("mnl", "topk"))
    seed: int = option(0, "Seed of torch and the logging policy.", 0)


class ClickModelAgent(BaseAgent):
    """A supervised click/conversion model served as the slate of highest predicted reward.

    :param model: ``"logreg"``, ``"two_tower"`` or ``"din"``
    :param params: the world's Params (slate size, reward weights, sizes)
    :param epochs: passes over the logs per fit
    :param batch_rows: logged slates per gradient step
    :param lr: Adam learning rate (default 0.02 for logreg, 0.003 for the deep models)
    :param epsilon: exploration of the ε-popularity logging policy used by ``learn``
    :param retrain_every: if > 0, ``learn`` refits every this many user-steps on its own fresh logs
    :param serving: ``"mnl"`` - the slate maximising predicted reward under the multinomial-logit
        reading of the model (attraction ``exp(s + b_1)`` = odds of pCTR, learned examination per
        position, ``w_click + w_conv * pCVR`` as value per click; exact, by Dinkelbach's
        iteration): it accounts for items competing for the click; ``"topk"`` - top k by
        predicted reward per item
    :param seed: seed for torch and the logging policy
    """

    def __init__(self, model: str = "logreg", params: Any = None,
                 config: ClickModelConfig | None = None, **overrides: Any):
        if model not in NETS:
            raise ValueError(f"model must be one of {sorted(NETS)}, got {model!r}")
        self.config = (config or ClickModelConfig()).replace(**overrides)
        self.model_name = model
        self.params = params
        self.w_click = float(getattr(params, "click_weight", 1.0))
        self.w_conv = float(getattr(params, "conversion_weight", 1.0))
        self.net: ClickNet | None = None
        self.vocab_keys = np.zeros(0, dtype=np.uint64)
        self.vocab_ids = np.zeros(0, dtype=np.int64)
        self.fit_seconds = 0.0

    @property
    def lr(self) -> float:
        """Adam learning rate: the config's, else 0.02 for logreg and 0.003 for the deep models."""
        if self.config.lr is not None:
            return self.config.lr
        return 2e-2 if self.model_name == "logreg" else 3e-3

    def rebuild_module(self, name: str) -> ClickNet:
        """The click network for its topics, slate size and vocabulary (``net_shape``)."""
        if name != "net":
            return super().rebuild_module(name)
        t, k, num_items = self.net_shape
        return NETS[self.model_name](t, k, num_items=num_items).eval()

    # ---- item ids ---------------------------------------------------------------------------
    def _keys(self, features: np.ndarray) -> np.ndarray:
        t = features.shape[-1] - 3
        return item_keys(_half_rounded(features), t)

    def _build_vocab(self, logs: dict[str, np.ndarray]) -> None:
        keys = self._keys(logs["slate_features"]).ravel()
        ids = logs["slate_items"].ravel().astype(np.int64)
        keys = keys[ids >= 0]
        ids = ids[ids >= 0]
        self.vocab_keys, first = np.unique(keys, return_index=True)
        self.vocab_ids = ids[first]

    def _item_index(self, features: np.ndarray) -> np.ndarray:
        """Embedding rows (item id + 1; 0 for items never logged) of candidates' features."""
        keys = self._keys(features)
        if self.vocab_keys.size == 0:
            return np.zeros(keys.shape, dtype=np.int64)
        where = np.clip(np.searchsorted(self.vocab_keys, keys), 0, self.vocab_keys.size - 1)
        hit = self.vocab_keys[where] == keys
        return np.where(hit, self.vocab_ids[where] + 1, 0)

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, logs: dict[str, np.ndarray], epochs: int | None = None) -> ClickModelAgent:
        """Fit click and conversion heads on logged slates (all shown items are examples)."""
        torch.manual_seed(self.config.seed)
        start = time.perf_counter()
        n, k, f = logs["slate_features"].shape
        t = f - 3
        num_items = int(getattr(self.params, "num_items", 0) or max(1, logs["slate_items"].max() + 1))
        self._build_vocab(logs)
        if self.net is None:
            self.net_shape = (t, k, num_items)
            self.net = self.rebuild_module("net")
            # start the position biases at the logged click rates per position (softmax: odds
            # against no click)
            rate = (logs["position"][:, None] == np.arange(k)).mean(0).clip(1e-3, 1 - 1e-3)
            rest = max(float((logs["position"] < 0).mean()), 1e-3)
            bias = np.log(rate / rest)
            self.net.position_bias.data = torch.from_numpy(bias).float()
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        cand_all = torch.from_numpy(logs["slate_features"])
        item_all = torch.from_numpy(self._item_index(logs["slate_features"]))
        hist_all = torch.from_numpy(logs["history"])
        user_all = torch.from_numpy(_user_width(logs["user_features"], t))
        pos_all = torch.from_numpy(logs["position"].astype(np.int64))
        conv_all = torch.from_numpy(logs["conversion"].astype(np.float32))
        slot = torch.arange(k)
        gen = torch.Generator().manual_seed(self.config.seed)
        bce = nn.functional.binary_cross_entropy_with_logits
        self.net.train()
        epoch_loss, epoch_rows = 0.0, 0
        for _ in range(self.config.epochs if epochs is None else epochs):
            epoch_loss, epoch_rows = 0.0, 0
            for rows in torch.randperm(n, generator=gen).split(self.config.batch_rows):
                b = len(rows)
                cand = cand_all[rows].float().reshape(b * k, f)
                item = item_all[rows].reshape(b * k)
                hist = hist_all[rows].float().repeat_interleave(k, 0)
                user = user_all[rows].float().repeat_interleave(k, 0)
                clicked = (pos_all[rows][:, None] == slot).reshape(-1).float()
                click_logit, conv_logit = self.net.logits(cand, item, hist, user)
                click_logit = click_logit + self.net.position_bias.repeat(b)
                # choice among the k shown items and no-click (logit 0)
                choice = torch.cat([click_logit.reshape(b, k), torch.zeros(b, 1)], dim=1)
                target = torch.where(pos_all[rows] < 0, k, pos_all[rows])
                loss = nn.functional.cross_entropy(choice, target)
                mask = clicked > 0
                if mask.any():
                    conv_label = conv_all[rows].repeat_interleave(k)[mask]
                    loss = loss + bce(conv_logit[mask], conv_label)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss, epoch_rows = epoch_loss + loss.item() * b, epoch_rows + b
        self.net.eval()
        #: the last epoch's mean loss (choice cross-entropy + conversion log-loss), for the logs
        self.last_training_row = {"loss": epoch_loss / max(epoch_rows, 1), "logged_steps": n}
        self.fit_seconds += time.perf_counter() - start
        return self

    # ---- prediction and serving -------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, candidates: np.ndarray, history: np.ndarray, user: np.ndarray,
                      at_logged_positions: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(pCTR, pCVR given click), each (B, m), for every candidate; pCTR at position 0 (the
        click probability of the item shown alone there), or with ``at_logged_positions`` at the
        column's slate position (for logged slates; the softmax model then gives the choice
        probabilities within the logged slate, the other items competing)."""
        return self.proba_from_logits(*self.candidate_logits(candidates, history, user),
                                      at_logged_positions=at_logged_positions)

    @torch.no_grad()
    def candidate_logits(self, candidates: np.ndarray, history: np.ndarray, user: np.ndarray
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(click logit without position bias, conversion logit), each (B, m): what
        :meth:`predict_proba` turns into probabilities. An item's logits do not depend on the
        other items shown with it, so callers that score several slates from the same
        candidates compute them once and gather (:meth:`proba_from_logits`)."""
        if self.net is None:
            raise RuntimeError("the click model is not fitted: call learn(env, steps) or fit(logs)")
        b, m, f = candidates.shape
        cand = torch.from_numpy(_half_rounded(candidates)).reshape(b * m, f)
        item = torch.from_numpy(self._item_index(candidates)).reshape(b * m)
        hist = torch.from_numpy(_half_rounded(history)).repeat_interleave(m, 0)
        usr = torch.from_numpy(_user_width(_half_rounded(user), f - 3)).repeat_interleave(m, 0)
        click, conv = self.net.logits(cand, item, hist, usr)
        return click.reshape(b, m), conv.reshape(b, m)

    @torch.no_grad()
    def proba_from_logits(self, click: torch.Tensor, conv: torch.Tensor,
                          at_logged_positions: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_proba` from :meth:`candidate_logits` (B, m); with
        ``at_logged_positions`` the m columns are the slate's positions (m = k)."""
        b, m = click.shape
        if at_logged_positions:
            choice = torch.cat([click + self.net.position_bias[None, :], torch.zeros(b, 1)], dim=1)
            p_click = torch.softmax(choice, dim=1)[:, :m].numpy()
        else:
            p_click = torch.sigmoid(click + self.net.position_bias[0]).numpy()
        return p_click, torch.sigmoid(conv).numpy()

    def scores(self, obs: Observation) -> np.ndarray:
        """Predicted immediate reward of every candidate (B, m)."""
        p_click, p_conv = self.predict_proba(obs["candidates"], obs["history"], obs["user"])
        return p_click * self.w_click + p_click * p_conv * self.w_conv

    def act(self, obs: Observation) -> np.ndarray:
        """The slate of highest predicted reward (``serving="mnl"``) or the k candidates of
        highest predicted reward per item (``"topk"``), best first."""
        k = int(getattr(self.params, "slate_size", 0) or 5)
        if self.config.serving == "mnl":
            p_click, p_conv = self.predict_proba(obs["candidates"], obs["history"], obs["user"])
            p_click = np.clip(p_click.astype(np.float64), 1e-9, 1 - 1e-9)
            bias = self.net.position_bias.detach().numpy().astype(np.float64)
            examination = np.exp(bias - bias[0])
            return dinkelbach_slate(p_click / (1 - p_click), self.w_click + self.w_conv * p_conv,
                                    examination)
        return top_k(self.scores(obs), k)

    def _policy(self) -> recsim_logs.LoggingPolicy:
        """This agent as a logging policy (greedy, propensity 1 for its choices)."""
        def policy(obs: Observation, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            slates = self.act(obs)
            return slates, np.ones(slates.shape, dtype=np.float32)
        return policy

    def learn(self, env: Any, total_steps: int, callback: Any = None) -> ClickModelAgent:
        """Log ``total_steps`` user-steps on ``env``'s world with the logging policy and fit
        (with ``retrain_every``: further rounds logged by the current model, refit on all)."""
        sim = getattr(env, "sim", env)
        if self.params is None:
            self.params = sim.params
            self.w_click = float(getattr(self.params, "click_weight", 1.0))
            self.w_conv = float(getattr(self.params, "conversion_weight", 1.0))
        batch = int(getattr(env, "num_envs", 256))
        cfg = self.config
        first = cfg.retrain_every if cfg.retrain_every > 0 else total_steps
        logs = recsim_logs.generate_logs(n_steps=min(first, total_steps), batch_size=batch, sim=sim,
                                         first_user=seeds.click_log_seed(cfg.seed),
                                         epsilon=cfg.epsilon, seed=cfg.seed)
        self.fit(logs)
        done = len(logs["user"])
        if callback is not None and callback(self, done) is False:
            return self
        round_index = 1
        while done < total_steps:
            n = min(cfg.retrain_every, total_steps - done)
            fresh = recsim_logs.generate_logs(n_steps=n, batch_size=batch, sim=sim,
                                              first_user=seeds.click_log_seed(cfg.seed, round_index),
                                              policy=self._policy(), seed=cfg.seed + round_index)
            logs = {key: np.concatenate([logs[key], fresh[key]]) for key in logs}
            self.fit(logs, epochs=1)
            done += n
            round_index += 1
            if callback is not None and callback(self, done) is False:
                break
        return self


class LogRegAgent(ClickModelAgent):
    """Logistic regression on cross features (see :mod:`recsim_gym.agents.click_models`)."""

    def __init__(self, params: Any = None, seed: int = 0, **kwargs: Any):
        super().__init__("logreg", params=params, seed=seed, **kwargs)


class TwoTowerAgent(ClickModelAgent):
    """Two-tower / MF model with item-id and feature towers (see :mod:`recsim_gym.agents.click_models`)."""

    def __init__(self, params: Any = None, seed: int = 0, **kwargs: Any):
        super().__init__("two_tower", params=params, seed=seed, **kwargs)


class DINAgent(ClickModelAgent):
    """DIN-style attention click model (see :mod:`recsim_gym.agents.click_models`)."""

    def __init__(self, params: Any = None, seed: int = 0, **kwargs: Any):
        super().__init__("din", params=params, seed=seed, **kwargs)
