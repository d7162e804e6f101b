"""User x candidate cross features from the observation (torch), shared by the learning agents.

An MLP over ``[candidate, user context]`` has to learn products such as "how much of this
candidate's topic has the user clicked lately" from ReLU sums, which takes many samples.
:func:`cross_features` hands those products over directly (as the logistic-regression baseline's
hand-made crosses and DIN's candidate-to-history attention do). Everything is computed from the
observation only; both observation layouts of :mod:`recsim_gym.env` work:

* ``candidates`` (B, m, >= T): the first T columns are the item's topic vector;
* ``history`` (B, H, >= T + 3): the first T columns are the topic of the entry's item and the
  last three are (click, engagement: conversion or watch fraction, valid);
* ``user`` (B, U): when ``U > T``, the first T columns are declared topics (``default`` family).

Per candidate the features are: the elementwise products of its topic vector with the clicked-
topic profile of the history (T) and with the declared topics (T, when present), then the dot
products with the clicked, engaged, shown-but-skipped and last-step-clicked profiles (and the
declared topics when present).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recsim_gym.agents.bandits import item_keys


def cross_feature_dim(num_topics: int, user_dim: int) -> int:
    """Number of features :func:`cross_features` returns per candidate."""
    declared = user_dim > num_topics
    return num_topics * (1 + declared) + 4 + declared


def cross_features(candidates: torch.Tensor, history: torch.Tensor, user: torch.Tensor,
                   num_topics: int) -> torch.Tensor:
    """(B, m, :func:`cross_feature_dim`) user x candidate features; see the module docstring.
    Profiles and dot products are batched matrix products (one each)."""
    t = num_topics
    topic = candidates[..., :t]  # (B, m, T)
    h_topic = history[..., :t]  # (B, H, T)
    click, engaged, valid = history[..., -3], history[..., -2], history[..., -1]
    # clicked, engaged and shown-but-skipped profiles: history-weighted topic sums / H
    weights = torch.stack([click * valid, engaged * valid, (1.0 - click) * valid], dim=1)
    profiles = torch.bmm(weights / history.shape[1], h_topic)  # (B, 3, T)
    last = (click[:, -1] * valid[:, -1])[:, None] * h_topic[:, -1]
    every, scaled = [profiles, last[:, None]], [profiles[:, :1]]
    if user.shape[1] > t:
        declared = user[:, None, :t]
        every.append(declared)
        scaled.append(declared)
    products = (topic[:, :, None] * torch.cat(scaled, dim=1)[:, None]).flatten(2)
    dots = torch.bmm(topic, torch.cat(every, dim=1).transpose(1, 2))
    return torch.cat([products, dots], dim=2)


def item_id_columns(sim: Any) -> int | None:
    """How many leading candidate columns identify an item for :func:`hashed_item_ids` (topic
    vector, appeal, price), or None in a world without a catalog (RecSim's interest evolution
    draws new documents every step), where per-item terms have nothing to learn."""
    if getattr(sim, "catalog", None) is None:
        return None
    return min(sim.params.num_topics + 2, sim.observation_space()["candidates"].shape[-1])


def hashed_item_ids(candidates: torch.Tensor, columns: int, buckets: int) -> torch.Tensor:
    """(B, m) hashed item ids in ``[0, buckets)`` from the first ``columns`` candidate features
    (static per item: topic vector, appeal, price), the hashing trick over
    :func:`recsim_gym.agents.bandits.item_keys` (the bandits' and click models' item key).

    Observations carry no item ids, but an item's static features identify it; hashing them
    into a fixed table lets an agent learn per-item terms (e.g. the hidden quality) online,
    without a vocabulary. Distinct items collide with probability about ``catalog / buckets``.
    """
    keys = item_keys(candidates.detach().numpy(), columns - 2)
    return torch.from_numpy((keys % np.uint64(buckets)).astype(np.int64))
