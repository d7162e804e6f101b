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

from dataclasses import dataclass, fields
from functools import lru_cache

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


@dataclass(slots=True)
class State:
    """Latent and observable state of B users. All arrays have a leading batch axis.

    Treated as immutable: :func:`step` returns a new state and never writes into this one.
    """

    key: np.ndarray  #: (B,) uint64 episode key (see rng.seed_to_key)
    stream: np.ndarray  #: (B,) uint32 random-stream counter (advanced every step)
    t: np.ndarray  #: (B,) int64 steps taken in the episode
    interest: np.ndarray  #: (B, T) float32 in [-1, 1]
    base_interest: np.ndarray  #: (B, T) float32 in [-1, 1], target of mean reversion
    declared: np.ndarray  #: (B, T) float32 multi-hot favourite topics (observable)
    fatigue: np.ndarray  #: (B, T) float32 in [0, 1]
    satisfaction: np.ndarray  #: (B,) float32 in [0, 1]
    candidates: np.ndarray  #: (B, m) int64 candidate item ids for the next slate
    history: np.ndarray  #: (B, H, T+6) float32 last H interactions, oldest first (observation)

    @property
    def batch_size(self) -> int:
        """Number of users B."""
        return int(self.t.shape[0])

    def take(self, index: np.ndarray | slice) -> State:
        """The sub-batch of users ``index`` (copies)."""
        return State(*(getattr(self, name)[index] for name in STATE_FIELDS))

    def assign(self, index: np.ndarray, other: State) -> None:
        """Overwrite users ``index`` with ``other``'s users, IN PLACE. Only for states you own
        (the env shells use it for autoreset)."""
        for name in STATE_FIELDS:
            target = getattr(self, name)
            if not target.flags.writeable:
                target = target.copy()
                setattr(self, name, target)
            target[index] = getattr(other, name)


STATE_FIELDS = tuple(f.name for f in fields(State))


@dataclass(slots=True)
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


@lru_cache(maxsize=64)
def _offsets(b: int, width: int) -> np.ndarray:
    """Flat-index offsets ``row * width`` (B, 1) for gathering one entry per row."""
    offsets = (np.arange(b, dtype=np.int64) * width)[:, None]
    offsets.setflags(write=False)
    return offsets


def _gather_rows(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[b, index[b, j]]`` for a (B, W) table and (B, J) index (a flat ``np.take``)."""
    return np.take(table, index + _offsets(*table.shape[:2]))


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
    keys = keys.astype(np.uint64)
    stream = rng.stream_start(keys)
    u = rng.uniforms(stream, 2 * t + 1 + params.num_candidates, rng.SALT_RESET)
    base, declared = _profiles(params, u[:, : 2 * t])
    satisfaction = np.clip(params.initial_satisfaction + 0.2 * (u[:, 2 * t] - 0.5), 0.0, 1.0)
    steps = np.zeros(b, dtype=np.int64)
    history = np.zeros((b, params.history_length, t + 3 + len(HISTORY_FLAGS)), dtype=np.float32)
    return State(
        key=keys, stream=stream, t=steps, interest=base.copy(), base_interest=base,
        declared=declared, fatigue=np.zeros((b, t), dtype=np.float32),
        satisfaction=satisfaction.astype(np.float32),
        candidates=retrieve(catalog, params, u[:, 2 * t + 1:], steps), history=history)


def _preference(params: Params, state: State) -> np.ndarray:
    """(B, T+3, 1) weights so that ``item_features @ preference`` is the position-free utility
    ``beta <interest, e> - phi <fatigue, e> + gamma appeal``."""
    t = params.num_topics
    pref = np.zeros((state.batch_size, t + 3, 1), dtype=np.float32)
    np.multiply(state.interest, np.float32(params.affinity_weight), out=pref[:, :t, 0])
    if params.fatigue_weight and params.fatigue_gain:
        pref[:, :t, 0] -= np.float32(params.fatigue_weight) * state.fatigue
    pref[:, t, 0] = params.appeal_weight
    return pref


def slate_utility(params: Params, catalog: Catalog, state: State, items: np.ndarray) -> np.ndarray:
    """Position-free utility (B, k) of showing ``items`` (B, k) to each user."""
    feats = np.take(catalog.features, items, axis=0)
    return np.matmul(feats, _preference(params, state))[..., 0]


def conversion_probability(params: Params, catalog: Catalog, state: State, items: np.ndarray
                           ) -> np.ndarray:
    """P(convert | click) (B, J) for ``items`` (B, J)."""
    topic = np.take(catalog.topics, items, axis=0)
    affinity = np.matmul(topic, state.interest[:, :, None])[..., 0]
    logit = np.take(catalog.hidden[:, 0], items) + np.float32(params.conversion_affinity) * affinity
    return 1.0 / (1.0 + np.exp(-logit))


def step(params: Params, catalog: Catalog, state: State, slate: np.ndarray
         ) -> tuple[State, StepResult]:
    """Advance every user one step given ``slate`` (B, k) of distinct candidate positions.

    The slate is assumed valid (the env shells validate it). Returns the new state and the
    per-user outcome; ``state`` is not modified.
    """
    b, n_topics, k = state.batch_size, params.num_topics, slate.shape[1]
    items = _gather_rows(state.candidates, slate)

    # --- choice ------------------------------------------------------------------------
    probs = choice_probabilities(slate_utility(params, catalog, state, items), params)
    noise_cols = n_topics if params.interest_noise > 0 else 0
    u = rng.uniforms(state.stream, 4 + noise_cols + params.num_candidates, rng.SALT_STEP)
    position = sample_choice(probs, u[:, 0])
    click = position < k
    shown = np.minimum(position, k - 1)
    chosen = _gather_rows(items, shown[:, None])  # (B, 1): clicked item, or the first one shown
    logged = np.where(click[:, None], chosen, items[:, :1])[:, 0]

    # --- conversion and reward ----------------------------------------------------------
    item_feats = np.take(catalog.features, logged, axis=0)  # (B, T+3)
    topic = item_feats[:, :n_topics]
    conv_base, quality, price = np.take(catalog.hidden, logged, axis=0).T
    affinity = np.einsum("bt,bt->b", topic, state.interest)
    p_convert = 1.0 / (1.0 + np.exp(-(conv_base + np.float32(params.conversion_affinity) * affinity)))
    conversion = (u[:, 1] < p_convert) & click
    revenue = price * conversion
    reward = np.float32(params.click_weight) * click
    reward += np.float32(params.conversion_weight) * (
        revenue if params.reward_mode == "revenue" else conversion)

    # --- satisfaction, fatigue, interest -------------------------------------------------
    s = state.satisfaction
    rate = np.float32(params.satisfaction_rate)
    satisfaction = np.where(click, s + rate * (quality - s), s * np.float32(1 - params.no_click_penalty))
    clicked_topic = topic * click[:, None]  # zero row when nothing was clicked
    fatigue = state.fatigue
    if params.fatigue_gain or params.fatigue_decay:
        fatigue = fatigue * np.float32(1.0 - params.fatigue_decay)
        fatigue += np.float32(params.fatigue_gain) * clicked_topic * (1.0 - fatigue)
    interest = state.interest
    if params.interest_update_rate:
        direction = (quality - np.float32(0.5)) * np.float32(2.0 * params.interest_update_rate)
        interest = interest + direction[:, None] * clicked_topic * (1.0 - np.abs(interest))
    if params.interest_reversion:
        interest = interest + np.float32(params.interest_reversion) * (state.base_interest - interest)
    if noise_cols:
        noise = u[:, 4:4 + noise_cols] - np.float32(0.5)
        noise *= np.float32(params.interest_noise) * _SQRT12
        interest = np.clip(interest + noise, -1.0, 1.0)
    base = state.base_interest
    if params.regime_shift_prob:
        shifted = np.flatnonzero(u[:, 3] < params.regime_shift_prob)
        if shifted.size:
            new_base, _ = _profiles(params, rng.uniforms(state.stream[shifted], 2 * n_topics,
                                                         rng.SALT_REGIME))
            base = base.copy()
            base[shifted] = new_base
            interest = interest.copy()
            interest[shifted] = new_base

    # --- episode end ----------------------------------------------------------------------
    steps = state.t + 1
    churn_p = np.float32(params.churn_scale) * np.square(1.0 - satisfaction)
    churn_p += np.float32(params.churn_base)
    terminated = u[:, 2] < churn_p
    truncated = steps >= params.max_steps
    truncated &= ~terminated
    end_reason = terminated.astype(np.int8)
    end_reason[truncated] = END_MAX_STEPS

    # --- history and next candidates -----------------------------------------------------
    entry = np.empty((b, 1, state.history.shape[2]), dtype=np.float32)
    entry[:, 0, : n_topics + 3] = item_feats
    entry[:, 0, n_topics + 3] = click
    entry[:, 0, n_topics + 4] = conversion
    entry[:, 0, n_topics + 5] = 1.0
    history = np.concatenate([state.history[:, 1:], entry], axis=1)
    candidates = retrieve(catalog, params, u[:, 4 + noise_cols:], steps)

    new_state = State(key=state.key, stream=state.stream + rng.WEYL32, t=steps, interest=interest,
                      base_interest=base, declared=state.declared, fatigue=fatigue,
                      satisfaction=satisfaction, candidates=candidates, history=history)
    result = StepResult(reward=reward, click=click, conversion=conversion, revenue=revenue,
                        position=np.where(click, position, -1),
                        item=np.where(click, logged, -1), choice_probs=probs,
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


def observe(params: Params, catalog: Catalog, state: State) -> dict[str, np.ndarray]:
    """Observation dict with a leading batch axis. Every array is new (safe to keep).

    * ``candidates`` (m, T+3): topic vector, appeal, price feature, observed popularity.
    * ``history`` (H, T+6): the last H interactions, oldest first: the clicked item (or, on a
      no-click step, the item shown first) with its features, then click, conversion, valid.
    * ``user`` (T+1,): declared favourite topics (multi-hot, from sign-up: they do not follow
      drift), then the episode progress ``t / max_steps``.
    * with ``observe_latent``: ``interest``, ``fatigue``, ``satisfaction``, ``candidate_quality``.
    """
    cand = np.take(catalog.features, state.candidates, axis=0)
    ramp = candidate_popularity_ramp(catalog, params, state.candidates, state.t)
    if ramp is not None:
        cand[..., -1] *= ramp
    user = np.empty((state.batch_size, params.num_topics + 1), dtype=np.float32)
    user[:, :-1] = state.declared
    user[:, -1] = state.t * np.float32(1.0 / params.max_steps)
    obs = {"candidates": cand, "history": state.history.copy(), "user": user}
    if params.observe_latent:
        obs["interest"] = state.interest.copy()
        obs["fatigue"] = state.fatigue.copy()
        obs["satisfaction"] = state.satisfaction[:, None].copy()
        obs["candidate_quality"] = np.take(catalog.quality, state.candidates)
    return obs
