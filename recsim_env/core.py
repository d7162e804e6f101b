"""The batched simulator core: pure ``reset``/``step``/``observe`` over B users at once.

Everything the Gymnasium and SB3 shells do is a view of these three functions. They take the
:class:`~recsim_gym.env.params.Params`, the shared :class:`~recsim_gym.env.catalog.Catalog` and a
:class:`State` of ``(B, ...)`` arrays, and never mutate their inputs: ``step`` returns a new
state. Randomness comes only from each user's episode key (see :mod:`recsim_gym.env.rng`), so user
``b``'s trajectory depends on its key and the slates shown to it, and on nothing else.

Dynamics of one step, for every user at once (``e`` = topic vector, ``q`` = quality; the
arithmetic runs in the compiled :mod:`recsim_gym.env.kernel`):

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

from dataclasses import dataclass

import numpy as np

from recsim_gym.env import kernel, rng
from recsim_gym.env.catalog import Catalog, candidate_popularity_ramp
from recsim_gym.env.params import Params
from recsim_gym.env.world import END_REASONS, StepResult, UserBatch, empty_observation, empty_result

__all__ = ["END_REASONS", "State", "StepResult", "observe", "observation_shapes", "reset", "reset_into",
           "step"]

#: ``StepResult.end_reason`` codes.
END_NONE, END_CHURN, END_MAX_STEPS = 0, 1, 2

#: Columns appended to each history entry after the item features.
HISTORY_FLAGS = ("click", "conversion", "valid")

_SQRT12 = np.float32(np.sqrt(12.0))


@dataclass(slots=True)
class State(UserBatch):
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




def reset(params: Params, catalog: Catalog, keys: np.ndarray) -> State:
    """Fresh users for episode keys ``keys`` (B,) uint64."""
    state = empty_state(params, keys.shape[0])
    reset_into(params, catalog, state, np.arange(keys.shape[0]), keys.astype(np.uint64))
    return state


def reset_into(params: Params, catalog: Catalog, state: State, index: np.ndarray,
               keys: np.ndarray) -> None:
    """Start new episodes with ``keys`` for users ``index`` of ``state``, IN PLACE.

    For states you own (the env shells use it for autoreset); :func:`reset` is the pure form.
    """
    constants, flags, _, _ = _kernel_inputs(params, catalog)
    codes = _reset_codes(params)
    state.key[index] = keys
    kernel.reset_kernel(np.asarray(index, dtype=np.int64), rng.stream_start(keys.astype(np.uint64)),
                        codes, catalog.retrieval_table, catalog.slot_phase, constants, flags,
                        state.stream, state.t, state.interest, state.base_interest, state.declared,
                        state.fatigue, state.satisfaction, state.candidates, state.history)


def _reset_codes(params: Params) -> np.ndarray:
    n = 2 * params.num_topics + 1 + params.num_candidates
    return rng.column_codes(n, rng.SALT_RESET).astype(np.uint64)


_KERNEL_INPUTS: dict[tuple[int, int], tuple] = {}


def _kernel_inputs(params: Params, catalog: Catalog) -> tuple[np.ndarray, ...]:
    """Kernel constants for (params, catalog), cached by identity (hashing Params per step
    would cost more than the step itself at B = 1)."""
    cached = _KERNEL_INPUTS.get((id(params), id(catalog)))
    if cached is not None and cached[0] is params and cached[1] is catalog:
        return cached[2]
    constants, flags = kernel.constants(params, catalog)
    columns = 4 + int(flags[kernel.I_NOISE_COLS]) + params.num_candidates
    codes = rng.column_codes(columns, rng.SALT_STEP).astype(np.uint64)
    regime_codes = rng.column_codes(2 * params.num_topics, rng.SALT_REGIME).astype(np.uint64)
    inputs = (constants, flags, codes, regime_codes)
    if len(_KERNEL_INPUTS) > 64:
        _KERNEL_INPUTS.clear()
    _KERNEL_INPUTS[(id(params), id(catalog))] = (params, catalog, inputs)
    return inputs


def step(params: Params, catalog: Catalog, state: State, slate: np.ndarray,
         out: tuple[State | None, StepResult | None] | None = None) -> tuple[State, StepResult]:
    """Advance every user one step given ``slate`` (B, k) of distinct candidate positions.

    The slate is assumed valid (the env shells validate it). Returns the new state and the
    per-user outcome; ``state`` is not modified. The per-user arithmetic runs in
    :func:`recsim_gym.env.kernel.step_kernel` (its docstring lists the equations).

    ``out``: a ``(state, result)`` pair whose arrays are overwritten instead of allocating new
    ones (either may be None): a spent state of the same batch size (never ``state`` itself) and a
    previous result. The env shells use it to step without allocating.
    """
    constants, flags, codes, regime_codes = _kernel_inputs(params, catalog)
    new_state, result = out if out is not None else (None, None)
    if new_state is None:
        new_state = empty_state(params, state.batch_size)
    if new_state is state:
        raise ValueError("step(out=...) must not be the state being stepped")
    new_state.key, new_state.declared = state.key, state.declared
    if result is None:
        result = empty_result(state.batch_size, params.slate_size)
    kernel.step_kernel(
        catalog.features, catalog.hidden, catalog.retrieval_table, catalog.slot_phase, codes,
        regime_codes, state.stream, state.t, state.interest, state.base_interest, state.fatigue,
        state.satisfaction, state.candidates, state.history, slate, constants, flags,
        new_state.stream, new_state.t, new_state.interest, new_state.base_interest, new_state.fatigue,
        new_state.satisfaction, new_state.candidates, new_state.history, result.reward, result.click,
        result.conversion, result.revenue, result.position, result.item, result.choice_probs,
        result.terminated, result.truncated, result.end_reason)
    return new_state, result


def empty_state(params: Params, batch_size: int) -> State:
    """Uninitialised state arrays for ``batch_size`` users (``reset`` and ``step`` fill them)."""
    b, t = batch_size, params.num_topics
    return State(
        key=np.empty(b, np.uint64), stream=np.empty(b, np.uint32), t=np.empty(b, np.int64),
        interest=np.empty((b, t), np.float32), base_interest=np.empty((b, t), np.float32),
        declared=np.empty((b, t), np.float32), fatigue=np.empty((b, t), np.float32),
        satisfaction=np.empty(b, np.float32), candidates=np.empty((b, params.num_candidates), np.int64),
        history=np.empty((b, params.history_length, t + 3 + len(HISTORY_FLAGS)), np.float32))


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
    """Observation dict with a leading batch axis: new arrays (safe to keep), or with ``out``
    (a previous observation of the same batch size) written into those arrays.

    * ``candidates`` (m, T+3): topic vector, appeal, price feature, observed popularity.
    * ``history`` (H, T+6): the last H interactions, oldest first: the clicked item (or, on a
      no-click step, the item shown first) with its features as observed then (popularity
      included), then click, conversion, valid.
    * ``user`` (T+1,): declared favourite topics (multi-hot, from sign-up: they do not follow
      drift), then the episode progress ``t / max_steps``.
    * with ``observe_latent``: ``interest``, ``fatigue``, ``satisfaction``, ``candidate_quality``.
    """
    b = state.batch_size
    if out is None:
        out = empty_observation(observation_shapes(params), b)
    # mode="clip": with out=, the default mode="raise" writes into a temporary copy first
    cand = np.take(catalog.features, state.candidates, axis=0, out=out["candidates"], mode="clip")
    ramp = candidate_popularity_ramp(catalog, params, state.candidates, state.t)
    if ramp is not None:
        cand[..., -1] *= ramp
    user = out["user"]
    user[:, :-1] = state.declared
    np.multiply(state.t, np.float32(1.0 / params.max_steps), out=user[:, -1], casting="unsafe")
    np.copyto(out["history"], state.history)
    if params.observe_latent:
        np.copyto(out["interest"], state.interest)
        np.copyto(out["fatigue"], state.fatigue)
        np.copyto(out["satisfaction"][:, 0], state.satisfaction)
        np.take(catalog.quality, state.candidates, out=out["candidate_quality"], mode="clip")
    return out
