"""Named worlds: each preset is a set of overrides of the :class:`Params` defaults."""

from __future__ import annotations

from typing import Any

from recsim_gym.env.params import Params

#: Preset name -> (one-line description, Params overrides).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": (
        "Drift, fatigue, satisfaction-driven churn and conversions: clickbait wins the next click "
        "but costs the user; a myopic click maximiser is not optimal.", {}),
    "static": (
        "Sanity check: no drift, no fatigue, churn independent of satisfaction. A myopic policy "
        "is optimal here, so RL should only match it.",
        dict(interest_update_rate=0.0, interest_noise=0.0, interest_reversion=0.0,
             regime_shift_prob=0.0, fatigue_gain=0.0, fatigue_decay=0.0, satisfaction_rate=0.0,
             no_click_penalty=0.0, churn_base=0.005, churn_scale=0.0)),
    "news": (
        "Fast-moving interests and strong fatigue; conversions (subscriptions) are rare.",
        dict(interest_update_rate=0.1, interest_noise=0.04, interest_reversion=0.02,
             regime_shift_prob=0.01, fatigue_gain=0.5, fatigue_decay=0.15, appeal_weight=3.0,
             conversion_bias=-4.0, max_steps=100)),
    "ecommerce": (
        "Revenue reward; conversion is price sensitive; bigger candidate sets and slates.",
        dict(num_candidates=30, slate_size=8, reward_mode="revenue", click_weight=0.0,
             conversion_weight=0.1, conversion_price=4.0, conversion_bias=-1.0,
             interest_noise=0.005, fatigue_gain=0.15, price_log_mean=3.5)),
}


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    return list(PRESETS)


def make_params(preset: str = "default", params: Params | None = None, **overrides: Any) -> Params:
    """Params of ``preset`` (or of ``params`` when given) with keyword ``overrides`` applied.

    Unknown presets and unknown or invalid fields raise ``ValueError`` naming what is wrong.
    """
    if params is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known presets: {preset_names()}")
        params = Params().replace(**PRESETS[preset][1])
    return params.replace(**overrides) if overrides else params
