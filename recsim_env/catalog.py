"""The item catalog and per-step candidate retrieval.

The catalog is the world every user shares: it is drawn once from ``Params.catalog_seed``.
Item ``i`` has a topic vector ``e_i`` on the simplex (sparse Dirichlet), a hidden quality
``q_i``, an appeal ``c_i`` (clickbait: high appeal, low quality), a price ``p_i`` (truncated
log-normal) and a popularity prior.

Catalog churn (``item_lifetime > 0``) is modelled as *shelves*: the catalog has ``num_items``
slots, and slot ``s`` holds a new item every ``item_lifetime`` user-steps (phases staggered so
that a constant share renews each step). An item's id is ``generation * num_items + slot``.
A new item inherits its slot's retrieval weight but its *observed* popularity starts at 0 and
ramps up over ``cold_start_ramp`` steps: the item cold-start problem. Time is the user's own
step counter, so a user's trajectory never depends on who else is in the batch.

Retrieval is stratified so candidates are distinct by construction, with no rejection loop:
slot ``s`` belongs to stratum ``s mod m`` and candidate ``j`` is drawn from stratum ``j``,
popularity-weighted (Walker's alias method) with probability ``popular_retrieval_share``,
otherwise uniformly. Slots are i.i.d., so strata carry no information.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsim_env.params import Params

#: Column layout of :attr:`Catalog.features` (the observable item features).
#: ``topic`` occupies the first ``num_topics`` columns; the three scalars follow.
ITEM_SCALAR_FEATURES = ("appeal", "price", "popularity")


@dataclass(frozen=True)
class Catalog:
    """Arrays describing every item (rows = item ids; see module docstring)."""

    features: np.ndarray  #: (R + 1, T + 3) float32: topic, appeal, price feature, popularity
    quality: np.ndarray  #: (R + 1,) float32 hidden quality in [0, 1]
    price: np.ndarray  #: (R + 1,) float32 price in [price_min, price_max]
    clickbait: np.ndarray  #: (R + 1,) bool
    # Row R (the last) is all zeros: the padding item of empty history entries.
    slot_phase: np.ndarray  #: (N,) int64 churn phase of each slot
    alias_prob: np.ndarray  #: (m, S) float32 alias-method acceptance per stratum
    alias_index: np.ndarray  #: (m, S) int64 alias-method fallback (index within stratum)
    stratum_size: np.ndarray  #: (m,) float32 items per stratum
    num_items: int
    num_topics: int
    generations: int

    @property
    def topics(self) -> np.ndarray:
        """(R, T) topic vectors (a view of :attr:`features`)."""
        return self.features[:, : self.num_topics]

    @property
    def appeal(self) -> np.ndarray:
        """(R,) appeal in [0, 1] (a view of :attr:`features`)."""
        return self.features[:, self.num_topics]

    @property
    def price_feature(self) -> np.ndarray:
        """(R,) log(price/price_min)/log(price_max/price_min) in [0, 1]."""
        return self.features[:, self.num_topics + 1]


def make_catalog(params: Params) -> Catalog:
    """Draw the catalog for ``params`` (deterministic in ``params.catalog_seed``)."""
    rng = np.random.default_rng(params.catalog_seed)
    n, t = params.num_items, params.num_topics
    generations = 1
    if params.item_lifetime > 0:
        generations = (params.max_steps + params.item_lifetime - 1) // params.item_lifetime + 1
    rows = n * generations

    topics = rng.gamma(params.topic_concentration, size=(rows, t))
    empty = topics.sum(axis=1) <= 1e-300
    topics[empty, rng.integers(0, t, size=int(empty.sum()))] = 1.0
    topics /= topics.sum(axis=1, keepdims=True)

    clickbait = rng.random(rows) < params.clickbait_share
    appeal = np.where(clickbait, rng.uniform(params.clickbait_appeal_min, 1.0, rows),
                      rng.uniform(0.0, params.regular_appeal_max, rows))
    quality = np.where(clickbait, rng.uniform(0.0, params.clickbait_quality_max, rows),
                       rng.beta(params.quality_alpha, params.quality_beta, rows))
    price = _truncated_lognormal(rng, params, rows)
    price_feature = np.log(price / params.price_min) / np.log(params.price_max / params.price_min)

    log_pop = params.popularity_appeal_weight * appeal[:n] + params.popularity_spread * rng.normal(
        size=n)
    popularity = np.exp(log_pop - log_pop.max())  # slot prior, max 1
    # One extra all-zero row (id ``rows``) pads empty history entries.
    features = np.zeros((rows + 1, t + 3), dtype=np.float32)
    features[:rows, :t] = topics
    features[:rows, t] = appeal
    features[:rows, t + 1] = price_feature
    features[:rows, t + 2] = np.tile(popularity, generations)
    quality, price, clickbait = (np.append(a, 0) for a in (quality, price, clickbait))

    alias_prob, alias_index, stratum_size = _stratum_alias_tables(popularity, params.num_candidates)
    slot_phase = np.zeros(n, dtype=np.int64)
    if params.item_lifetime > 0:
        slot_phase = (np.arange(n) * params.item_lifetime) // n
    quality, price, clickbait = quality.astype(np.float32), price.astype(np.float32), clickbait.astype(bool)
    for arr in (features, quality, price, clickbait):
        arr.setflags(write=False)
    return Catalog(features=features, quality=quality, price=price, clickbait=clickbait,
                   slot_phase=slot_phase,
                   alias_prob=alias_prob, alias_index=alias_index, stratum_size=stratum_size,
                   num_items=n, num_topics=t, generations=generations)


def _truncated_lognormal(rng: np.random.Generator, params: Params, size: int) -> np.ndarray:
    price = rng.lognormal(params.price_log_mean, params.price_log_std, size)
    for _ in range(1000):
        bad = (price < params.price_min) | (price > params.price_max)
        if not bad.any():
            return price
        price[bad] = rng.lognormal(params.price_log_mean, params.price_log_std, int(bad.sum()))
    raise ValueError(
        "Params.price_min/price_max leave almost no mass of the log-normal price distribution "
        f"(price_log_mean={params.price_log_mean}, price_log_std={params.price_log_std}); "
        "widen the bounds or move price_log_mean inside them")


def _stratum_alias_tables(weights: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walker alias tables for sampling a slot of each stratum ``j`` (slots j, j+m, ...)."""
    sizes = np.array([len(range(j, len(weights), m)) for j in range(m)])
    width = int(sizes.max())
    prob = np.ones((m, width), dtype=np.float32)
    alias = np.tile(np.arange(width), (m, 1))
    for j in range(m):
        w = weights[j::m]
        scaled = w * (len(w) / w.sum())
        small = [i for i in range(len(w)) if scaled[i] < 1.0]
        large = [i for i in range(len(w)) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            prob[j, s], alias[j, s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
    return prob, alias, sizes.astype(np.float32)


def retrieve(catalog: Catalog, params: Params, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Candidate item ids ``(B, m)`` from uniforms ``u`` (B, m) at user steps ``t`` (B,).

    One uniform per candidate chooses popular-vs-uniform retrieval, the slot within the
    stratum and the alias-method coin (its bits are reused after each decision).
    """
    m = params.num_candidates
    share = params.popular_retrieval_share
    popular = u < share
    if 0.0 < share < 1.0:
        v = np.where(popular, u / np.float32(share), (u - np.float32(share)) / np.float32(1 - share))
    else:
        v = u
    x = v * catalog.stratum_size
    local = x.astype(np.int64)
    np.minimum(local, (catalog.stratum_size - 1).astype(np.int64), out=local)
    if share > 0.0:
        col = np.arange(m)
        coin = x - local
        via_alias = catalog.alias_index[col, local]
        accept = coin < catalog.alias_prob[col, local]
        local = np.where(popular & ~accept, via_alias, local)
    slot = np.arange(m) + m * local
    if catalog.generations > 1:
        generation = (t[:, None] + catalog.slot_phase[slot]) // params.item_lifetime
        np.minimum(generation, catalog.generations - 1, out=generation)  # t past max_steps
        slot = slot + generation * catalog.num_items
    return slot


def candidate_popularity_ramp(catalog: Catalog, params: Params, items: np.ndarray,
                              t: np.ndarray) -> np.ndarray | None:
    """Cold-start factor in [0, 1] for observed popularity of ``items`` at steps ``t``, or None
    when the catalog does not churn."""
    if catalog.generations == 1:
        return None
    slot = items % catalog.num_items
    age = (t[:, None] + catalog.slot_phase[slot]) % params.item_lifetime
    return np.minimum(1.0, age / np.float32(params.cold_start_ramp)).astype(np.float32)
