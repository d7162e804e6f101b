"""The batched simulator core: pure ``reset``/``step``/``observe`` over B users at once.

Everything the Gymnasium and SB3 shells do is a view of these three functions. They take the
:class:`~recsim_env.params.Params`, the shared :class:`~recsim_env.catalog.Catalog` and a
:class:`State` of ``(B, ...)`` arrays, and never mutate their inputs: ``step`` returns a new
state. Randomness comes only from each user's episode key (see :mod:`recsim_env.rng`), so user
``b``'s trajectory depends on its key and the slates shown to it, and on nothing else.

Dynamics of one step, for every user at once (``e`` = topic vector, ``q`` = quality):

1. utility ``u_j = beta <interest, e_j> + gamma appeal_j - phi <fatigue, e_j>``; the choice model
   turns the slate's utilities into click probabilities per position plus no-click.
2. a click on ``j`` converts with ``sigmoid(a0 + a1 <interest, e_j> + a2 q_j - a3 price_j)``;
   reward ``= click_weight * click + conversion_weight * conversion (* price for revenue)``.
3. satisfaction moves toward ``q_j`` on a click, decays on a no-click step; fatigue decays and
   grows on the clicked topics; interest moves with consumption (endogenous), a random walk with
   mean reversion (exogenous), and rare regime shifts.
4. the user leaves with ``churn_base + churn_scale (1 - satisfaction)^2`` (terminated), or the
   episode hits ``max_steps`` (truncated); new candidates are retrieved.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from recsim_env import rng
from recsim_env.catalog import Catalog, candidate_popularity_ramp, retrieve
from recsim_env.choice import choice_probabilities, sample_choice
from recsim_env.params import Params

#: ``StepResult.end_reason`` codes.
END_NONE, END_CHURN, END_MAX_STEPS = 0, 1, 2
END_REASONS = ("", "churned", "max_steps")

#: Columns appended to each history entry after the item features.
HISTORY_FLAGS = ("click", "conversion", "valid")

_SQRT12 = np.float32(np.sqrt(12.0))


@dataclass(frozen=True)
class State:
    """Latent and observable state of B users. All arrays have a leading batch axis."""

    key: np.ndarray  #: (B,) uint64 episode key (see rng.seed_to_key)
    t: np.ndarray  #: (B,) int64 steps taken in the episode
    interest: np.ndarray  #: (B, T) float32 in [-1, 1]
    base_interest: np.ndarray  #: (B, T) float32 in [-1, 1], target of mean reversion
    declared: np.ndarray  #: (B, T) float32 multi-hot favourite topics (observable)
    fatigue: np.ndarray  #: (B, T) float32 in [0, 1]
    satisfaction: np.ndarray  #: (B,) float32 in [0, 1]
    candidates: np.ndarray  #: (B, m) int64 candidate item ids for the next slate
    history_items: np.ndarray  #: (B, H) int64 item ids, oldest first (padding = catalog row R)
    history_flags: np.ndarray  #: (B, H, 3) float32 click, conversion, valid

    @property
    def batch_size(self) -> int:
        """Number of users B."""
        return int(self.t.shape[0])

    def take(self, index: np.ndarray | slice) -> State:
        """The sub-batch of users ``index``."""
        return State(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def merge(self, mask: np.ndarray, other: State) -> State:
        """A state with users where ``mask`` is True taken from ``other``."""
        out = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            shaped = mask.reshape((-1,) + (1,) * (mine.ndim - 1))
            out[f.name] = np.where(shaped, theirs, mine)
        return State(**out)


@dataclass(frozen=True)
class StepResult:
    """Per-user outcome of one step (arrays of shape (B,) unless noted)."""

    reward: np.ndarray  #: float32, in [0, params.max_reward]
    click: np.ndarray  #: bool
    conversion: np.ndarray  #: bool
    revenue: np.ndarray  #: float32 price of a converted item, else 0
    position: np.ndarray  #: int64 clicked slate position, -1 for no click
    item: np.ndarray  #: int64 clicked item id, -1 for no click
    choice_probs: np.ndarray  #: (B, k + 1) float32 click probability per position, then no-click
    terminated: np.ndarray  #: bool, the user churned
    truncated: np.ndarray  #: bool, the episode hit max_steps (and the user did not churn)
    end_reason: np.ndarray  #: int8 code into END_REASONS


def _padding_row(catalog: Catalog) -> int:
    return catalog.features.shape[0] - 1


def _profiles(params: Params, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base interest profiles and declared multi-hot from uniforms ``u`` (B, 2T)."""
    t = params.num_topics
    favourite = np.argsort(u[:, :t], axis=1)[:, t - params.declared_topics:]
    declared = np.zeros((u.shape[0], t), dtype=np.float32)
    np.put_along_axis(declared, favourite, 1.0, axis=1)
    base = np.where(declared > 0, 0.5 + 0.5 * u[:, t:], 0.8 * (u[:, t:] - 0.5)).astype(np.float32)
    return base, declared


def reset(params: Params, catalog: Catalog, keys: np.ndarray) -> State:
    """Fresh users for episode keys ``keys`` (B,) uint64."""
    b, t = keys.shape[0], params.num_topics
    u = rng.uniforms(rng.step_keys(keys, 0, rng.SALT_RESET), 2 * t + 1 + params.num_candidates)
    base, declared = _profiles(params, u[:, : 2 * t])
    satisfaction = np.clip(params.initial_satisfaction + 0.2 * (u[:, 2 * t] - 0.5), 0.0, 1.0)
    steps = np.zeros(b, dtype=np.int64)
    h = params.history_length
    return State(
        key=keys.astype(np.uint64), t=steps, interest=base.copy(), base_interest=base,
        declared=declared, fatigue=np.zeros((b, t), dtype=np.float32),
        satisfaction=satisfaction.astype(np.float32),
        candidates=retrieve(catalog, params, u[:, 2 * t + 1:], steps),
        history_items=np.full((b, h), _padding_row(catalog), dtype=np.int64),
        history_flags=np.zeros((b, h, len(HISTORY_FLAGS)), dtype=np.float32),
    )


def slate_utility(params: Params, catalog: Catalog, state: State, items: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Position-free utility (B, k) of showing ``items`` (B, k) and the interest affinity (B, k)."""
    t = params.num_topics
    feats = catalog.features[items]
    topic = feats[..., :t]
    affinity = np.matmul(topic, state.interest[:, :, None])[..., 0]
    utility = np.float32(params.affinity_weight) * affinity
    utility += np.float32(params.appeal_weight) * feats[..., t]
    if params.fatigue_weight and params.fatigue_gain:
        utility -= np.float32(params.fatigue_weight) * np.matmul(topic, state.fatigue[:, :, None])[
            ..., 0]
    return utility, affinity


def conversion_probability(params: Params, catalog: Catalog, affinity: np.ndarray,
                           items: np.ndarray) -> np.ndarray:
    """P(convert | click) for clicked ``items`` given their interest ``affinity``."""
    logit = (params.conversion_bias + params.conversion_affinity * affinity
             + params.conversion_quality * catalog.quality[items]
             - params.conversion_price * catalog.price_feature[items])
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def step(params: Params, catalog: Catalog, state: State, slate: np.ndarray
         ) -> tuple[State, StepResult]:
    """Advance every user one step given ``slate`` (B, k) of distinct candidate positions.

    The slate is assumed valid (the env shells validate it). Returns the new state and the
    per-user outcome; ``state`` is not modified.
    """
    b, t_dim, k = state.batch_size, params.num_topics, slate.shape[1]
    m = params.num_candidates
    rows = np.arange(b)
    items = np.take_along_axis(state.candidates, slate, axis=1)

    # --- choice ------------------------------------------------------------------------
    utility, affinity = slate_utility(params, catalog, state, items)
    probs = choice_probabilities(utility, params)
    noise_cols = t_dim if params.interest_noise > 0 else 0
    u = rng.uniforms(rng.step_keys(state.key, state.t, rng.SALT_STEP), 4 + noise_cols + m)
    position = sample_choice(probs, u[:, 0])
    click = position < k
    shown = np.minimum(position, k - 1)
    clicked_item = items[rows, shown]
    clicked_affinity = affinity[rows, shown]

    # --- conversion and reward ----------------------------------------------------------
    p_convert = conversion_probability(params, catalog, clicked_affinity, clicked_item)
    conversion = click & (u[:, 1] < p_convert)
    price = catalog.price[clicked_item]
    revenue = np.where(conversion, price, np.float32(0.0))
    conv_value = revenue if params.reward_mode == "revenue" else conversion
    reward = (np.float32(params.click_weight) * click
              + np.float32(params.conversion_weight) * conv_value).astype(np.float32)

    # --- satisfaction, fatigue, interest -------------------------------------------------
    quality = catalog.quality[clicked_item]
    satisfaction = np.where(
        click, state.satisfaction + np.float32(params.satisfaction_rate) * (quality - state.satisfaction),
        state.satisfaction * np.float32(1.0 - params.no_click_penalty))
    topic = catalog.topics[clicked_item] * click[:, None]  # zero row when nothing was clicked
    fatigue = state.fatigue
    if params.fatigue_gain or params.fatigue_decay:
        fatigue = fatigue * np.float32(1.0 - params.fatigue_decay)
        fatigue += np.float32(params.fatigue_gain) * topic * (1.0 - fatigue)
    interest = state.interest
    if params.interest_update_rate:
        direction = (2.0 * quality - 1.0) * np.float32(params.interest_update_rate)
        interest = interest + direction[:, None] * topic * (1.0 - np.abs(interest))
    if params.interest_reversion:
        interest = interest + np.float32(params.interest_reversion) * (state.base_interest - interest)
    if noise_cols:
        interest = interest + (np.float32(params.interest_noise) * _SQRT12) * (
            u[:, 4:4 + noise_cols] - np.float32(0.5))
        interest = np.clip(interest, -1.0, 1.0)
    base, declared = state.base_interest, state.declared
    if params.regime_shift_prob:
        shifted = u[:, 3] < params.regime_shift_prob
        if shifted.any():
            idx = np.flatnonzero(shifted)
            new_u = rng.uniforms(rng.step_keys(state.key[idx], state.t[idx], rng.SALT_REGIME),
                                 2 * t_dim)
            new_base, _ = _profiles(params, new_u)
            base = base.copy()
            base[idx] = new_base
            interest = interest.copy() if interest is state.interest else interest
            interest[idx] = new_base

    # --- episode end ----------------------------------------------------------------------
    steps = state.t + 1
    churn_p = params.churn_base + params.churn_scale * np.square(1.0 - satisfaction)
    terminated = u[:, 2] < churn_p
    truncated = (steps >= params.max_steps) & ~terminated
    end_reason = (terminated * END_CHURN + truncated * END_MAX_STEPS).astype(np.int8)

    # --- history and next candidates -----------------------------------------------------
    logged = np.where(click, clicked_item, items[:, 0])
    flags = np.empty((b, 1, len(HISTORY_FLAGS)), dtype=np.float32)
    flags[:, 0, 0], flags[:, 0, 1], flags[:, 0, 2] = click, conversion, 1.0
    history_items = np.concatenate([state.history_items[:, 1:], logged[:, None]], axis=1)
    history_flags = np.concatenate([state.history_flags[:, 1:], flags], axis=1)
    candidates = retrieve(catalog, params, u[:, 4 + noise_cols:], steps)

    new_state = replace(state, t=steps, interest=interest, base_interest=base, declared=declared,
                        fatigue=fatigue, satisfaction=satisfaction.astype(np.float32),
                        candidates=candidates, history_items=history_items,
                        history_flags=history_flags)
    result = StepResult(reward=reward, click=click, conversion=conversion,
                        revenue=revenue.astype(np.float32),
                        position=np.where(click, position, -1),
                        item=np.where(click, clicked_item, -1), choice_probs=probs,
                        terminated=terminated, truncated=truncated, end_reason=end_reason)
    return new_state, result


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------

def observation_shapes(params: Params) -> dict[str, tuple[tuple[int, ...], float, float]]:
    """Per-user ``{key: (shape, low, high)}`` of the observation dict."""
    t, m, h = params.num_topics, params.num_candidates, params.history_length
    item = t + 3
    shapes = {
        "candidates": ((m, item), 0.0, 1.0),
        "history": ((h, item + len(HISTORY_FLAGS)), 0.0, 1.0),
        "user": ((t + 1,), 0.0, 1.0),
    }
    if params.observe_latent:
        shapes.update({
            "interest": ((t,), -1.0, 1.0),
            "fatigue": ((t,), 0.0, 1.0),
            "satisfaction": ((1,), 0.0, 1.0),
            "candidate_quality": ((m,), 0.0, 1.0),
        })
    return shapes


def observe(params: Params, catalog: Catalog, state: State,
            out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Observation dict with a leading batch axis, written into ``out`` when given.

    * ``candidates`` (m, T+3): topic vector, appeal, price feature, observed popularity.
    * ``history`` (H, T+6): the last H interactions, oldest first: the clicked item (or, on a
      no-click step, the item shown first) with its features, then click, conversion, valid.
    * ``user`` (T+1,): declared favourite topics (multi-hot, from sign-up: they do not follow
      drift), then the episode progress ``t / max_steps``.
    * with ``observe_latent``: ``interest``, ``fatigue``, ``satisfaction``, ``candidate_quality``.
    """
    b = state.batch_size
    if out is None:
        out = {key: np.empty((b,) + shape, dtype=np.float32)
               for key, (shape, _, _) in observation_shapes(params).items()}
    item_dim = catalog.features.shape[1]
    cand = out["candidates"]
    np.take(catalog.features, state.candidates, axis=0, out=cand)
    ramp = candidate_popularity_ramp(catalog, params, state.candidates, state.t)
    if ramp is not None:
        cand[..., item_dim - 1] *= ramp
    hist = out["history"]
    hist[..., :item_dim] = catalog.features[state.history_items]
    hist[..., item_dim:] = state.history_flags
    user = out["user"]
    user[:, :-1] = state.declared
    user[:, -1] = state.t / np.float32(params.max_steps)
    if params.observe_latent:
        out["interest"][:] = state.interest
        out["fatigue"][:] = state.fatigue
        out["satisfaction"][:, 0] = state.satisfaction
        out["candidate_quality"][:] = catalog.quality[state.candidates]
    return out
