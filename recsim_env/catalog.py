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
from the mixture ``popular_retrieval_share * popularity-weighted + rest * uniform`` through a
precomputed inverse-CDF table (one lookup per candidate). Slots are i.i.d., so strata carry no
information.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsim_gym.env.params import Params

#: Column layout of :attr:`Catalog.features` (the observable item features).
#: ``topic`` occupies the first ``num_topics`` columns; the three scalars follow.
ITEM_SCALAR_FEATURES = ("appeal", "price", "popularity")


@dataclass(frozen=True, eq=False)
class Catalog:
    """Arrays describing every item (rows = item ids; see module docstring)."""

    features: np.ndarray  #: (R + 1, T + 3) float32: topic, appeal, price feature, popularity
    hidden: np.ndarray  #: (R + 1, 3) float32: conversion logit base, quality, price
    clickbait: np.ndarray  #: (R + 1,) bool
    # Row R (the last) is all zeros: the padding item of empty history entries.
    slot_phase: np.ndarray  #: (N,) int64 churn phase of each slot
    retrieval_table: np.ndarray  #: (m, S) int32 inverse-CDF retrieval table per stratum
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

    @property
    def quality(self) -> np.ndarray:
        """(R,) hidden quality in [0, 1]."""
        return self.hidden[:, 1]

    @property
    def price(self) -> np.ndarray:
        """(R,) price in [price_min, price_max] (0 for the padding row)."""
        return self.hidden[:, 2]


def make_catalog(params: Params) -> Catalog:
    """Draw the catalog for ``params`` (deterministic in ``params.catalog_seed``), or load the
    item table of ``params.catalog_file`` (a fitted world, :func:`load_item_table`)."""
    if params.catalog_file:
        items = load_item_table(params.catalog_file, params)
        return _assemble(params, items["topics"], items["appeal"], items["price"], items["popularity"],
                         items["quality"], np.zeros(len(items["appeal"]), dtype=bool), generations=1)
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

    log_pop = params.popularity_appeal_weight * appeal[:n] + params.popularity_spread * rng.normal(
        size=n)
    popularity = np.exp(log_pop - log_pop.max())  # slot prior, max 1
    return _assemble(params, topics, appeal, price, popularity, quality, clickbait, generations)


def price_feature_of(price: np.ndarray, price_min: float, price_max: float) -> np.ndarray:
    """The observed price feature of prices in ``[price_min, price_max]``: log price scaled to
    [0, 1], ``log(price / price_min) / log(price_max / price_min)``."""
    return np.log(price / price_min) / np.log(price_max / price_min)


def price_of(price_feature: np.ndarray, price_min: float, price_max: float) -> np.ndarray:
    """The price behind a price feature: the inverse of :func:`price_feature_of`."""
    return price_min * (price_max / price_min) ** price_feature


def _assemble(params: Params, topics: np.ndarray, appeal: np.ndarray, price: np.ndarray,
              popularity: np.ndarray, quality: np.ndarray, clickbait: np.ndarray,
              generations: int) -> Catalog:
    """The catalog arrays of items (rows = slot * generations; ``popularity`` per slot)."""
    n, t = len(popularity), params.num_topics
    rows = n * generations
    price_feature = price_feature_of(price, params.price_min, params.price_max)
    # One extra all-zero row (id ``rows``) pads empty history entries.
    features = np.zeros((rows + 1, t + 3), dtype=np.float32)
    features[:rows, :t] = topics
    features[:rows, t] = appeal
    features[:rows, t + 1] = price_feature
    features[:rows, t + 2] = np.tile(popularity, generations)

    retrieval_table = _stratum_retrieval_tables(popularity, params)
    slot_phase = np.zeros(n, dtype=np.int64)
    if params.item_lifetime > 0:
        slot_phase = (np.arange(n) * params.item_lifetime) // n
    conversion_base = (params.conversion_bias + params.conversion_quality * quality
                       - params.conversion_price * price_feature)
    hidden = np.zeros((rows + 1, 3), dtype=np.float32)
    hidden[:rows] = np.stack([conversion_base, quality, price], axis=1)
    clickbait = np.append(clickbait, False)
    for arr in (features, hidden, clickbait, retrieval_table, slot_phase):
        arr.setflags(write=False)
    return Catalog(features=features, hidden=hidden, clickbait=clickbait,
                   slot_phase=slot_phase, retrieval_table=retrieval_table,
                   num_items=n, num_topics=t, generations=generations)


#: Columns of an item table file (:func:`save_item_table`): name -> (dtype, per-item shape).
ITEM_TABLE_COLUMNS = {"topics": "float64", "appeal": "float64", "price": "float64",
                      "popularity": "float64", "quality": "float64"}


def save_item_table(path: str, topics: np.ndarray, appeal: np.ndarray, price: np.ndarray,
                    popularity: np.ndarray, quality: np.ndarray,
                    extra: dict[str, np.ndarray] | None = None) -> str:
    """Write an item table (a fitted world's catalog) as ``.npz``: topic vectors (N, T) on the
    simplex, appeal, quality in [0, 1], price > 0 and popularity prior in (0, 1]. ``extra``:
    more per-item columns, which the simulator does not read (a fit keeps its evidence there)."""
    np.savez_compressed(path, topics=np.asarray(topics, np.float64), appeal=np.asarray(appeal, np.float64),
                        price=np.asarray(price, np.float64), popularity=np.asarray(popularity, np.float64),
                        quality=np.asarray(quality, np.float64),
                        **{name: np.asarray(v, np.float64) for name, v in (extra or {}).items()})
    return str(path)


def load_item_table(path: str, params: Params | None = None) -> dict[str, np.ndarray]:
    """Read and check an item table (no pickles): every column present, N items, values in
    range, and (with ``params``) ``num_items``, ``num_topics`` and the price range matching.
    Raises ``ValueError`` naming the file and the column."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            items = {name: np.asarray(archive[name], np.float64) for name in archive.files}
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any other failure: not an item table
        raise ValueError(f"catalog_file {path}: not an item table .npz ({type(err).__name__}: {err})"
                         ) from err
    missing = sorted(set(ITEM_TABLE_COLUMNS) - set(items))
    if missing:
        raise ValueError(f"catalog_file {path}: missing columns {missing}")
    n = len(items["appeal"])
    topics = items["topics"]
    problems = []
    if topics.ndim != 2 or topics.shape[0] != n:
        problems.append(f"topics must be (N, T) with N = {n} items, got {topics.shape}")
    for name in ("appeal", "price", "popularity", "quality"):
        if items[name].shape != (n,) or not np.isfinite(items[name]).all():
            problems.append(f"{name} must be {n} finite values")
    if not problems:
        if (topics < 0).any() or not np.allclose(topics.sum(1), 1.0, atol=1e-5):
            problems.append("topics rows must be non-negative and sum to 1")
        for name, low, high in (("appeal", 0.0, 1.0), ("quality", 0.0, 1.0), ("popularity", 1e-12, 1.0)):
            if (items[name] < low).any() or (items[name] > high).any():
                problems.append(f"{name} must lie in [{low}, {high}]")
        if params is not None:
            if n != params.num_items or topics.shape[1] != params.num_topics:
                problems.append(f"holds {n} items of {topics.shape[1]} topics; the params say "
                                f"num_items={params.num_items}, num_topics={params.num_topics}")
            if (items["price"] < params.price_min).any() or (items["price"] > params.price_max).any():
                problems.append(f"price must lie in [price_min, price_max] = [{params.price_min}, "
                                f"{params.price_max}]")
    if problems:
        raise ValueError(f"catalog_file {path}: " + "; ".join(problems))
    return items


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


#: Entries per stratum of the inverse-CDF retrieval table (probability resolution 1/4096).
RETRIEVAL_TABLE_SIZE = 4096


def _stratum_retrieval_tables(popularity: np.ndarray, params: Params) -> np.ndarray:
    """(m, S) slot ids: entry ``s`` of row ``j`` is the inverse CDF at ``(s + 0.5) / S`` of the
    retrieval distribution of stratum ``j`` (slots j, j+m, ...): the mixture
    ``share * popularity-weighted + (1 - share) * uniform``."""
    m, size = params.num_candidates, RETRIEVAL_TABLE_SIZE
    table = np.empty((m, size), dtype=np.int32)
    quantiles = (np.arange(size) + 0.5) / size
    for j in range(m):
        slots = np.arange(j, len(popularity), m)
        pop = popularity[slots] / popularity[slots].sum()
        mix = params.popular_retrieval_share * pop + (1 - params.popular_retrieval_share) / len(slots)
        cdf = np.cumsum(mix)
        table[j] = slots[np.minimum(np.searchsorted(cdf / cdf[-1], quantiles), len(slots) - 1)]
    return table


def candidate_popularity_ramp(catalog: Catalog, params: Params, items: np.ndarray,
                              t: np.ndarray) -> np.ndarray | None:
    """Cold-start factor in [0, 1] for observed popularity of ``items`` at steps ``t``, or None
    when the catalog does not churn."""
    if catalog.generations == 1:
        return None
    slot = items % catalog.num_items
    age = (t[:, None] + catalog.slot_phase[slot]) % params.item_lifetime
    return np.minimum(1.0, age / np.float32(params.cold_start_ramp)).astype(np.float32)
