"""Slate distributions without duplicates: Plackett-Luce over per-candidate scores.

A Plackett-Luce (PL) slate of size k over m candidates with scores ``s`` is drawn by sequential
masking: position 0 is a softmax draw over all candidates, position i a softmax draw over the
candidates not yet shown. Its probability is exact and cheap::

    log p(a_0..a_{k-1}) = sum_i [ s[a_i] - logsumexp_{j not in a_<i} s[j] ]

Sampling uses the Gumbel-top-k trick (the k largest ``s + Gumbel`` in decreasing order are
exactly a PL draw), so it is one ``topk`` call, not k masked softmaxes.

Entropy: the exact entropy is a sum over all m!/(m-k)! ordered slates (1.9 million at the
default m=20, k=5), so training uses the chain rule ``H = sum_i E[H(a_i | a_<i)]`` evaluated at
the slate being scored: the sum of the k conditional (masked-softmax) entropies along that slate.
It is an unbiased, differentiable estimate of the exact entropy with far lower variance than
``-log p``. :func:`exact_entropy` enumerates small instances (used by the tests).

**Click credit** (``click_credit=True``): the policy gradient of a slate multiplies its advantage
by the slate's whole log-probability, so each of the k candidates shown shares the credit for
whatever the user did. When the user clicked one of them, the step's outcome went through that
item, and the clicked position's conditional term alone is credited: ``log p(a_j | a_<j)`` for
the clicked position j. Steps without a click keep the whole slate's log-probability. The
slates carry the click in their encoding (:func:`encode_clicks`: the clicked entry is its
candidate index plus m), which the agent writes after each step.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution
from torch import nn


def _prefix_masks(actions: th.Tensor, num_candidates: int) -> th.Tensor:
    """(B, k, m) bool: ``[b, i, j]`` is True when candidate j is already in slate b before position i."""
    one_hot = nn.functional.one_hot(actions, num_candidates).to(th.bool)  # (B, k, m)
    shown = th.cumsum(one_hot.to(th.int8), dim=1).to(th.bool)  # shown at or before position i
    return th.cat([th.zeros_like(shown[:, :1]), shown[:, :-1]], dim=1)


def conditional_log_probs(scores: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """(B, k, m) log-softmax of ``scores`` at each slate position over the candidates still free
    (already shown ones get -inf)."""
    masked = scores[:, None, :].masked_fill(_prefix_masks(actions, scores.shape[-1]), float("-inf"))
    return th.log_softmax(masked, dim=-1)


def plackett_luce_log_prob(scores: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Exact log-probability (B,) of ordered slates ``actions`` (B, k) under PL with ``scores`` (B, m)."""
    log_p = conditional_log_probs(scores, actions)
    return log_p.gather(-1, actions[..., None]).squeeze(-1).sum(-1)


def encode_clicks(actions: np.ndarray, positions: np.ndarray, num_candidates: int) -> None:
    """Mark, in place, the clicked entry of each slate: ``actions[b, positions[b]] += m`` where
    ``positions[b] >= 0`` (the env's ``info["position"]``; -1: no click)."""
    rows = np.flatnonzero(positions >= 0)
    actions[rows, positions[rows]] += num_candidates


def decode_clicks(actions: th.Tensor, num_candidates: int) -> th.Tensor:
    """The slates (B, k) of :func:`encode_clicks`'s encoding, click marks removed."""
    return actions % num_candidates


def click_credit_log_prob(scores: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """(B,) log-probability credited for slates whose clicked entry is marked by
    :func:`encode_clicks`: the clicked position's conditional term where a click is marked, the
    whole slate's (:func:`plackett_luce_log_prob`) elsewhere."""
    clicked = actions >= scores.shape[-1]
    items = decode_clicks(actions, scores.shape[-1])
    terms = conditional_log_probs(scores, items).gather(-1, items[..., None]).squeeze(-1)
    weight = th.where(clicked.any(-1, keepdim=True), clicked.to(terms.dtype), th.ones_like(terms))
    return (terms * weight).sum(-1)


def click_log_likelihood(utilities: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """(B,) multinomial-logit log-likelihood of the marked click (or of no click, utility 0)
    among each slate's shown items, from per-candidate click ``utilities`` (B, m) and slates
    marked by :func:`encode_clicks`."""
    num_candidates = utilities.shape[-1]
    clicked = actions >= num_candidates
    utility = utilities.gather(-1, decode_clicks(actions, num_candidates))  # (B, k)
    log_z = th.logsumexp(th.cat([th.zeros_like(utility[:, :1]), utility], 1), 1)
    return (utility * clicked).sum(1) - log_z


def plackett_luce_entropy(scores: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Chain-rule entropy estimate (B,): the k conditional entropies along ``actions``, summed."""
    log_p = conditional_log_probs(scores, actions)
    p = log_p.exp()
    return -(p * log_p.masked_fill(p == 0, 0.0)).sum(-1).sum(-1)


def sample_plackett_luce(scores: th.Tensor, slate_size: int) -> th.Tensor:
    """PL slates (B, k) by Gumbel-top-k: exact samples, no repeats, in display order."""
    uniform = th.rand_like(scores).clamp_(min=1e-20, max=1.0 - 1e-7)
    gumbel = -th.log(-th.log(uniform))
    return th.topk(scores + gumbel, slate_size, dim=-1).indices


def all_slates(num_candidates: int, slate_size: int) -> th.Tensor:
    """Every ordered slate of distinct candidates, (m!/(m-k)!, k); for small instances only."""
    return th.tensor(list(itertools.permutations(range(num_candidates), slate_size)), dtype=th.long)


def exact_entropy(scores: th.Tensor, slate_size: int) -> th.Tensor:
    """Exact PL entropy (B,) by enumerating every slate; for small instances (tests)."""
    slates = all_slates(scores.shape[-1], slate_size)
    b, n = scores.shape[0], slates.shape[0]
    log_p = plackett_luce_log_prob(scores.repeat_interleave(n, 0), slates.repeat(b, 1)).view(b, n)
    return -(log_p.exp() * log_p).sum(-1)


class PlackettLuceDistribution(Distribution):
    """SB3 :class:`Distribution` of slates of ``slate_size`` distinct candidates (Plackett-Luce).

    Parameterised by one score per candidate (B, m), so it stays permutation-equivariant when
    the scores are. ``entropy()`` is the chain-rule estimate along the last slate passed to
    :meth:`log_prob` (or sampled); see the module docstring. With ``click_credit``,
    :meth:`log_prob` reads click-marked slates (:func:`click_credit_log_prob`).
    """

    def __init__(self, slate_size: int, click_credit: bool = False):
        super().__init__()
        self.slate_size = slate_size
        self.click_credit = click_credit
        self.scores: th.Tensor | None = None
        self._last_actions: th.Tensor | None = None

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """A linear scorer from per-candidate latents (B, m, latent_dim) to scores (B, m)."""
        return _Scorer(latent_dim)

    def proba_distribution(self, scores: th.Tensor) -> PlackettLuceDistribution:
        """Set the candidate scores (B, m)."""
        self.scores = scores
        self._last_actions = None
        return self

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """Exact log-probability (B,) of slates (B, k); with ``click_credit``, the credited one of
        click-marked slates."""
        actions = actions.long()
        if self.click_credit:
            self._last_actions = decode_clicks(actions, self.scores.shape[-1])
            return click_credit_log_prob(self.scores, actions)
        self._last_actions = actions
        return plackett_luce_log_prob(self.scores, self._last_actions)

    def entropy(self) -> th.Tensor | None:
        """Chain-rule entropy estimate along the last scored/sampled slates (B,)."""
        if self._last_actions is None:
            self._last_actions = self.sample()
        return plackett_luce_entropy(self.scores, self._last_actions)

    def sample(self) -> th.Tensor:
        """Exact PL slates (B, k)."""
        self._last_actions = sample_plackett_luce(self.scores, self.slate_size)
        return self._last_actions

    def mode(self) -> th.Tensor:
        """The most likely slate: the k highest scores in decreasing order (B, k)."""
        return th.topk(self.scores, self.slate_size, dim=-1).indices

    def actions_from_params(self, scores: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Slates from scores (B, m)."""
        self.proba_distribution(scores)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, scores: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Sampled slates and their log-probabilities."""
        actions = self.actions_from_params(scores)
        return actions, self.log_prob(actions)


class _Scorer(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.linear = nn.Linear(latent_dim, 1)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        return self.linear(latent).squeeze(-1)
