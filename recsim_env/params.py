"""Every constant of the simulated world, in one frozen, validated dataclass.

Each field carries its documentation and its allowed range as dataclass metadata, so
validation, `--help`-style listings and the README's config table all come from one place.
Bad values raise ``ValueError`` naming the field and the allowed range; nothing is clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsim_gym.env.fields import Config, option
from recsim_gym.env.fields import field_table as config_field_table


@dataclass(frozen=True)
class Params(Config):
    """All parameters of the simulated world (catalog, users, choice, dynamics, episode).

    Build one with keyword overrides, e.g. ``Params(num_candidates=30)``, or from a preset with
    :func:`recsim_gym.env.presets.make_params`. Fields are validated on construction.
    """

    # --- catalog -----------------------------------------------------------------------
    num_items: int = option(5000, "Items in the catalog at any time.", 10, 1_000_000, group="catalog")
    num_topics: int = option(16, "Number of topics T; item topic vectors and user interests live in R^T.",
                         2, 256, group="catalog")
    topic_concentration: float = option(0.15, "Dirichlet concentration of item topic vectors "
                                    "(small = items about one topic).", 0.0, 10.0, low_open=True,
                                    group="catalog")
    clickbait_share: float = option(0.25, "Share of items that are clickbait (high appeal, low quality).",
                                0.0, 1.0, group="catalog")
    clickbait_appeal_min: float = option(0.6, "Clickbait appeal ~ U(clickbait_appeal_min, 1).", 0.0, 1.0,
                                     group="catalog")
    clickbait_quality_max: float = option(0.25, "Clickbait quality ~ U(0, clickbait_quality_max).",
                                      0.0, 1.0, group="catalog")
    regular_appeal_max: float = option(0.6, "Regular-item appeal ~ U(0, regular_appeal_max).", 0.0, 1.0,
                                   group="catalog")
    quality_alpha: float = option(5.0, "Regular-item quality ~ Beta(quality_alpha, quality_beta).",
                              0.0, 100.0, low_open=True, group="catalog")
    quality_beta: float = option(2.0, "See quality_alpha.", 0.0, 100.0, low_open=True, group="catalog")
    price_log_mean: float = option(3.0, "Item price is log-normal with this mean of log(price).",
                               -10.0, 20.0, group="catalog")
    price_log_std: float = option(0.8, "Std of log(price).", 0.0, 5.0, group="catalog")
    price_min: float = option(1.0, "Prices are drawn log-normal, then redrawn until within "
                          "[price_min, price_max].", 0.0, 1e9, low_open=True, group="catalog")
    price_max: float = option(1000.0, "Upper price bound (see price_min).", 0.0, 1e9, low_open=True,
                          group="catalog")
    popularity_appeal_weight: float = option(2.0, "log(popularity prior) = weight * appeal + "
                                         "popularity_spread * N(0,1).", -20.0, 20.0, group="catalog")
    popularity_spread: float = option(1.0, "Spread of log popularity (see popularity_appeal_weight).",
                                  0.0, 10.0, group="catalog")
    item_lifetime: int = option(0, "Catalog churn: each catalog slot gets a new item every item_lifetime "
                            "user-steps (staggered across slots); 0 disables churn.", 0, 1_000_000,
                            group="catalog")
    cold_start_ramp: int = option(20, "With churn, a new item's observed popularity ramps linearly from 0 "
                              "to its prior over this many steps (item cold start).", 1, 1_000_000,
                              group="catalog")
    catalog_seed: int = option(0, "Seed of the catalog (the world): the same for every user and episode.",
                           0, 2**63 - 1, group="catalog")
    catalog_file: str = option("", "An item table (.npz from recsim fit: topics, appeal, price, "
                               "popularity, quality) used as the catalog instead of drawing one; "
                               "its N items must equal num_items.", group="catalog")

    # --- retrieval, slate, observation ----------------------------------------------------
    num_candidates: int = option(20, "Candidates m retrieved per user per step.", 1, 10_000,
                             group="slate")
    popular_retrieval_share: float = option(0.5, "Probability that a candidate slot is filled by "
                                        "popularity-weighted rather than uniform retrieval.",
                                        0.0, 1.0, group="slate")
    slate_size: int = option(5, "Slate size k (distinct candidates, ordered by position).", 1, 10_000,
                         group="slate")
    history_length: int = option(8, "History length H: the last H interactions in the observation.",
                             1, 10_000, group="slate")
    declared_topics: int = option(3, "Favourite topics per user; observable as a multi-hot "
                              "'declared interests' user feature.", 1, 256, group="slate")
    observe_latent: bool = option(False, "Expose the latent state (interest, fatigue, satisfaction, "
                              "candidate quality) in the observation. For oracles and debugging.",
                              group="slate")
    duplicate_rule: str = option("fill", "What a slate with a repeated candidate does: 'fill' each "
                             "repeat with the lowest-index unused candidate (info['filled'] counts "
                             "them), or 'raise' InvalidActionError (strict: for agents that must "
                             "emit distinct slates).", choices=("raise", "fill"), group="slate")

    # --- choice ------------------------------------------------------------------------------
    choice_model: str = option("mnl", "'mnl': multinomial logit over the slate plus no-click; "
                           "'cascade': scan positions in order, click the first attractive item.",
                           choices=("mnl", "cascade"), group="choice")
    affinity_weight: float = option(4.0, "beta: weight of interest affinity <interest, topic> in utility.",
                                0.0, 50.0, group="choice")
    appeal_weight: float = option(4.0, "gamma: weight of item appeal in utility.", 0.0, 50.0,
                              group="choice")
    fatigue_weight: float = option(3.0, "phi: weight of topic fatigue <fatigue, topic> in utility.",
                               0.0, 50.0, group="choice")
    no_click_utility: float = option(3.0, "Utility of the no-click option.", -50.0, 50.0, group="choice")
    position_decay: float = option(0.85, "Examination probability at position i is position_decay**i "
                               "(enters MNL utility as log, scales cascade examination).", 0.0, 1.0,
                               low_open=True, group="choice")

    # --- conversion and reward --------------------------------------------------------------
    conversion_bias: float = option(-2.0, "alpha0 of P(convert | click) = sigmoid(alpha0 + alpha1 "
                                "affinity + alpha2 quality - alpha3 price_feature).", -50.0, 50.0,
                                group="reward")
    conversion_affinity: float = option(1.0, "alpha1 (see conversion_bias).", -50.0, 50.0, group="reward")
    conversion_quality: float = option(3.0, "alpha2 (see conversion_bias).", -50.0, 50.0, group="reward")
    conversion_price: float = option(1.0, "alpha3; price_feature = log(price/price_min) / "
                                 "log(price_max/price_min) in [0, 1].", -50.0, 50.0, group="reward")
    click_weight: float = option(1.0, "Reward per click.", 0.0, 1e6, group="reward")
    conversion_weight: float = option(2.0, "Reward per conversion (times price when reward_mode="
                                  "'revenue').", 0.0, 1e6, group="reward")
    reward_mode: str = option("engagement", "'engagement': click_weight*click + conversion_weight*"
                          "conversion; 'revenue': click_weight*click + conversion_weight*price*"
                          "conversion.", choices=("engagement", "revenue"), group="reward")

    # --- user dynamics -----------------------------------------------------------------------
    interest_update_rate: float = option(0.05, "Endogenous drift: a click moves interest in the item's "
                                     "topics up (quality > 0.5) or down, scaled by (1 - |interest|).",
                                     0.0, 1.0, group="dynamics")
    interest_noise: float = option(0.01, "Exogenous random walk: per-step std of uniform noise on "
                               "interest (interest is then kept in [-1, 1]).", 0.0, 1.0,
                               group="dynamics")
    interest_reversion: float = option(0.01, "Exogenous mean reversion of interest toward the user's "
                                   "base profile, per step.", 0.0, 1.0, group="dynamics")
    regime_shift_prob: float = option(0.002, "Per-step probability that the user's base profile and "
                                  "interest are redrawn (rare regime shift).", 0.0, 1.0,
                                  group="dynamics")
    fatigue_gain: float = option(0.3, "A click on topic vector e raises fatigue by fatigue_gain * e * "
                             "(1 - fatigue).", 0.0, 1.0, group="dynamics")
    fatigue_decay: float = option(0.1, "Fatigue decays by this fraction every step.", 0.0, 1.0,
                              group="dynamics")
    satisfaction_rate: float = option(0.15, "A click moves satisfaction toward the item's quality by "
                                  "this fraction.", 0.0, 1.0, group="dynamics")
    no_click_penalty: float = option(0.03, "A step without a click multiplies satisfaction by "
                                 "(1 - no_click_penalty).", 0.0, 1.0, group="dynamics")
    initial_satisfaction: float = option(0.7, "Satisfaction at the start of an episode (+-0.1 jitter, "
                                     "kept in [0, 1]).", 0.0, 1.0, group="dynamics")
    churn_base: float = option(0.002, "Per-step leave probability = churn_base + churn_scale * "
                           "(1 - satisfaction)**2.", 0.0, 1.0, group="dynamics")
    churn_scale: float = option(0.05, "See churn_base.", 0.0, 1.0, group="dynamics")
    max_steps: int = option(200, "Episode step limit (truncated=True).", 1, 1_000_000, group="dynamics")

    def check(self) -> None:
        """Cross-field rules (each field's own range is checked by :class:`Config`)."""
        self.require(self.slate_size <= self.num_candidates, "slate_size",
               f"must be <= num_candidates ({self.num_candidates}), got {self.slate_size}")
        self.require(self.num_candidates <= self.num_items, "num_candidates",
               f"must be <= num_items ({self.num_items}), got {self.num_candidates}")
        self.require(self.declared_topics <= self.num_topics, "declared_topics",
               f"must be <= num_topics ({self.num_topics}), got {self.declared_topics}")
        self.require(self.price_min < self.price_max, "price_max",
               f"must be > price_min ({self.price_min}), got {self.price_max}")
        self.require(self.churn_base + self.churn_scale <= 1.0, "churn_scale",
               f"churn_base + churn_scale must be <= 1, got {self.churn_base + self.churn_scale}")
        if self.catalog_file:
            self.require(self.item_lifetime == 0, "item_lifetime",
                         f"must be 0 with a catalog_file (a fitted catalog has no churn), got "
                         f"{self.item_lifetime}")
        generations = 1
        if self.item_lifetime > 0:
            generations = -(-self.max_steps // self.item_lifetime) + 1
        catalog_mib = self.num_items * generations * (self.num_topics + 6) * 4 / 2**20
        self.require(catalog_mib <= MAX_CATALOG_MIB, "num_items",
               f"with num_topics={self.num_topics}, item_lifetime={self.item_lifetime} and "
               f"max_steps={self.max_steps} gives a catalog of {catalog_mib:,.0f} MiB "
               f"({self.num_items * generations:,} items); the limit is {MAX_CATALOG_MIB} MiB: "
               "use fewer items or topics, or a longer item_lifetime")

    @property
    def max_reward(self) -> float:
        """Upper bound of the per-step reward (rewards are always >= 0)."""
        conv = self.conversion_weight * (self.price_max if self.reward_mode == "revenue" else 1.0)
        return float(self.click_weight + conv)


#: Largest catalog (item features over all churn generations) a Params may ask for.
MAX_CATALOG_MIB = 1024


def field_table(cls: type = Params) -> list[dict[str, str]]:
    """One row per field of ``cls`` (default: :class:`Params`): name, group, default, allowed,
    doc - for docs and listings."""
    return config_field_table(cls)
