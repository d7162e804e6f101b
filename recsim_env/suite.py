"""A suite of worlds: a seeded sampler over the default world family's :class:`Params`.

Results tuned on one world do not say much about the next. :func:`sample_world` draws a world
variant from its world seed: which items exist (``catalog_seed``, ``num_items``), how many are
clickbait, how much satisfaction drives churn, how fast interests drift, how strong fatigue
is, what drives conversions, how many candidates and slate positions there are, and which
choice model users follow. A quarter of the worlds are *static-like* (the ``static`` preset's
dynamics: no drift, no fatigue, churn independent of satisfaction), where myopic play is
optimal and a long-term agent should only match oracle-myopic.

World seeds are split like user seeds (:mod:`recsim_gym.env.seeds`): seeds below
``FIRST_HELDOUT_WORLD`` are *tuning* worlds, seeds from there to ``LAST_WORLD`` are *held-out*
worlds, which are run once, after tuning has ended. ``python -m recsim_gym.env suite`` lists
worlds; an experiment config takes ``env: {suite: held_out, worlds: 12}``.

=========================== ====================================================================
field                       distribution per world
=========================== ====================================================================
``catalog_seed``            ``10**6 + world seed`` (a new catalog for every world)
``num_items``               2,000, 5,000 or 10,000
``clickbait_share``         U(0.1, 0.4)
``churn_scale``             U(0.02, 0.1): how much dissatisfaction drives churn
``interest_update_rate``    U(0, 0.1); ``interest_noise`` U(0, 0.03); ``regime_shift_prob``
                            U(0, 0.005): drift speed
``fatigue_gain``            U(0, 0.5); ``fatigue_decay`` U(0.05, 0.2)
``conversion_*``            bias U(-3, -1), quality U(1, 5), price U(0, 2)
``num_candidates``          10, 20, 30 or 50; ``slate_size`` 3, 5 or 8 (at most m)
``choice_model``            MNL (60%) or cascade (40%)
static-like                 25%: the ``static`` preset's dynamics override the above
=========================== ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsim_gym.env.presets import PRESETS, make_params
from recsim_gym.env.seeds import FIRST_HELDOUT_WORLD, LAST_WORLD, world_split

#: The suite's splits.
SPLITS = ("tuning", "held_out")
#: Share of the suite's worlds that are static-like.
STATIC_SHARE = 0.25


@dataclass(frozen=True)
class SuiteWorld:
    """One world of the suite: ``Params`` overrides of the ``default`` preset."""

    seed: int  #: world seed
    overrides: dict[str, Any] = field(default_factory=dict)  #: Params fields that differ from default
    static_like: bool = False  #: the static preset's dynamics (myopic play is optimal)

    @property
    def name(self) -> str:
        """``w<seed>``: the world's name in job files, tables and plots."""
        return f"w{self.seed}"

    @property
    def split(self) -> str:
        """``tuning`` or ``held_out``."""
        return world_split(self.seed)

    def params(self) -> Any:
        """The world's validated :class:`~recsim_gym.env.params.Params`."""
        return make_params("default", **self.overrides)

    def describe(self) -> str:
        """One line: choice model, sizes and the dynamics that matter."""
        o = self.overrides
        dynamics = ("static-like" if self.static_like else
                    f"drift {o['interest_update_rate']:.3f}, fatigue {o['fatigue_gain']:.2f}, "
                    f"churn {o['churn_scale']:.3f}")
        return (f"{self.name}: {o['choice_model']}, m={o['num_candidates']}, k={o['slate_size']}, "
                f"{o['num_items']} items, clickbait {o['clickbait_share']:.2f}, {dynamics}")


def sample_world(seed: int) -> SuiteWorld:
    """The world of world seed ``seed`` (deterministic; see the module docstring)."""
    if not 0 <= seed <= LAST_WORLD:
        raise ValueError(f"world seed must be in [0, {LAST_WORLD}], got {seed}")
    gen = np.random.default_rng([seed, 0x5EED])
    m = int(gen.choice([10, 20, 30, 50]))
    k = int(gen.choice([3, 5, 8]))
    overrides: dict[str, Any] = {
        "catalog_seed": 10**6 + seed,
        "num_items": int(gen.choice([2000, 5000, 10_000])),
        "clickbait_share": round(float(gen.uniform(0.1, 0.4)), 3),
        "churn_scale": round(float(gen.uniform(0.02, 0.1)), 4),
        "interest_update_rate": round(float(gen.uniform(0.0, 0.1)), 4),
        "interest_noise": round(float(gen.uniform(0.0, 0.03)), 4),
        "regime_shift_prob": round(float(gen.uniform(0.0, 0.005)), 5),
        "fatigue_gain": round(float(gen.uniform(0.0, 0.5)), 3),
        "fatigue_decay": round(float(gen.uniform(0.05, 0.2)), 3),
        "conversion_bias": round(float(gen.uniform(-3.0, -1.0)), 3),
        "conversion_quality": round(float(gen.uniform(1.0, 5.0)), 3),
        "conversion_price": round(float(gen.uniform(0.0, 2.0)), 3),
        "num_candidates": m,
        "slate_size": min(k, m),
        "choice_model": "mnl" if gen.random() < 0.6 else "cascade",
    }
    static_like = bool(gen.random() < STATIC_SHARE)
    if static_like:
        overrides.update(PRESETS["static"][1])
    return SuiteWorld(seed=seed, overrides=overrides, static_like=static_like)


def suite_worlds(split: str, count: int | None = None, seeds: list[int] | None = None) -> list[SuiteWorld]:
    """The first ``count`` worlds of ``split`` (or the worlds of ``seeds``, which must all
    belong to ``split``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    first, last = (0, FIRST_HELDOUT_WORLD - 1) if split == "tuning" else (FIRST_HELDOUT_WORLD, LAST_WORLD)
    if seeds is None:
        if count is None or not 1 <= count <= last - first + 1:
            raise ValueError(f"count must be in [1, {last - first + 1}], got {count}")
        seeds = list(range(first, first + count))
    outside = [s for s in seeds if not first <= s <= last]
    if outside:
        raise ValueError(f"world seeds {outside[:5]} are not {split} worlds (those are "
                         f"{first}..{last})")
    return [sample_world(s) for s in seeds]
