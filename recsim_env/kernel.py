"""The step kernel: one compiled pass over B users (numba), the hot path of every env.

Why compiled: the numpy formulation needs ~70 array operations per step. At B = 1 (the
single Gymnasium env) each costs ~1 us of fixed overhead whatever the array size, and at
large B each makes a full pass through memory with its own temporary. One fused loop over
users does the same arithmetic with neither cost (see the benchmark in the README). This is a
compiled loop, not a Python one: the function is still pure (new output arrays, inputs
untouched) and batched, and its inputs are the same ``Params``-derived constants and ``State``
arrays that :mod:`recsim_gym.env.core` documents.

Per user ``b`` (T topics, k slate positions, m candidates, e = topic vector, q = quality):

1. ``u_i = beta <interest, e_i> - phi <fatigue, e_i> + gamma appeal_i`` for each slate item;
   MNL: ``P(i) ~ rho^i exp(u_i - u_0)``, ``P(none) ~ 1``; cascade: ``a_i = sigmoid(u_i - u_0)``,
   ``P(i) = a_i prod_{j<i} (1 - a_j) rho``. The position is drawn by inverse CDF.
2. conversion ``~ sigmoid(a0 + a2 q - a3 price_feature + a1 <interest, e>)`` after a click;
   reward ``= w_click click + w_conv conversion`` (``conversion * price`` in revenue mode).
3. satisfaction ``s += rate (q - s)`` on a click, ``s *= 1 - penalty`` otherwise; fatigue
   ``f = (1 - decay) f + gain e (1 - (1 - decay) f)`` for the clicked item;
   interest ``+= eta (2q - 1) e (1 - |interest|)`` (clicked item), ``+= kappa (base - interest)``,
   ``+= sigma sqrt(12) (U - 1/2)`` (per topic), then kept in [-1, 1]; with probability
   ``p_shift`` a regime shift redraws the base profile and interest jumps to it.
4. churn with ``churn_base + churn_scale (1 - s)^2``; truncation at ``max_steps``.
5. history shifts by one entry (clicked item, or the first shown on a no-click step) and ``m``
   new candidates are drawn from the stratified retrieval table.

Random numbers: column ``j`` of user ``b`` is ``lowbias32(stream_b XOR code_j) / 2^24``, the
same construction as :func:`recsim_gym.env.rng.uniforms`. Columns: 0 choice, 1 conversion,
2 churn, 3 regime shift, 4..4+T interest noise (only when enabled), then m retrieval draws.
:func:`reset_kernel` starts episodes (profile, satisfaction, first candidates) the same way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Indices into the float64 constants vector built by ``constants(params)``.
(C_BETA, C_GAMMA, C_PHI, C_NO_CLICK, C_RHO, C_CONV_AFFINITY, C_W_CLICK, C_W_CONV, C_ETA,
 C_NOISE, C_REVERSION, C_REGIME, C_GAIN, C_DECAY, C_SAT_RATE, C_PENALTY, C_CHURN_BASE,
 C_CHURN_SCALE, C_INIT_SATISFACTION, C_COLD_START_RAMP) = range(20)
# Indices into the int64 flags vector.
(I_CASCADE, I_REVENUE, I_NOISE_COLS, I_MAX_STEPS, I_LIFETIME, I_NUM_ITEMS, I_GENERATIONS,
 I_DECLARED) = range(8)

_MASK32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _uniform(stream: np.uint64, code: np.uint64) -> float:
    x = (stream ^ code) & _MASK32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _MASK32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _MASK32
    x ^= x >> np.uint64(16)
    return float(x >> np.uint64(8)) * (1.0 / 16777216.0)


@njit(cache=True, nogil=True)
def step_kernel(features, hidden, retrieval_table, slot_phase, codes, regime_codes, stream, t,
               interest, base_interest, fatigue, satisfaction, candidates, history, slate, c, flags,
               new_stream, new_t, new_interest, new_base, new_fatigue, new_satisfaction,
               new_candidates, new_history, reward, click, conversion, revenue, position,
               clicked_item, probs, terminated, truncated, end_reason):
    """One step for every user: reads the state arrays and ``slate``, writes the new state
    arrays and the per-user outcome into the ``new_*`` and outcome arrays (which must not be
    the inputs: the caller allocates them, or reuses a spent state's)."""
    b_size, n_topics = interest.shape
    k = slate.shape[1]
    h_len = history.shape[1]
    item_dim = features.shape[1]
    noise_cols = flags[I_NOISE_COLS]
    lifetime, num_items, generations = flags[I_LIFETIME], flags[I_NUM_ITEMS], flags[I_GENERATIONS]
    weights = np.empty(k + 1)
    scratch_declared = np.empty(n_topics, np.float32)
    preference = np.empty(n_topics)
    beta, gamma, phi, no_click, rho = c[C_BETA], c[C_GAMMA], c[C_PHI], c[C_NO_CLICK], c[C_RHO]
    cascade = flags[I_CASCADE] != 0
    examination = np.empty(k)
    for i in range(k):
        examination[i] = rho**i

    for b in range(b_size):
        s = np.uint64(stream[b])
        new_stream[b] = stream[b] + np.uint32(0x9E3779B9)  # rng.WEYL32: the next step's counter
        new_t[b] = t[b] + 1
        for d in range(n_topics):
            new_base[b, d] = base_interest[b, d]
        # --- 1. choice ---------------------------------------------------------------------
        for d in range(n_topics):
            preference[d] = beta * interest[b, d] - phi * fatigue[b, d]
        total = 0.0
        reach = 1.0
        for i in range(k):
            item = candidates[b, slate[b, i]]
            util = gamma * features[item, n_topics]
            for d in range(n_topics):
                util += features[item, d] * preference[d]
            if cascade:
                attract = 1.0 / (1.0 + np.exp(no_click - util))
                weights[i] = attract * reach
                reach *= (1.0 - attract) * rho
            else:
                weights[i] = np.exp(util - no_click) * examination[i]
            total += weights[i]
        if cascade:
            weights[k] = max(0.0, 1.0 - total)
            total += weights[k]
        else:
            weights[k] = 1.0
            total += 1.0
        draw = _uniform(s, codes[0]) * total
        pos = k
        acc = 0.0
        for i in range(k + 1):
            probs[b, i] = weights[i] / total
        for i in range(k):
            acc += weights[i]
            if draw < acc:
                pos = i
                break
        did_click = pos < k
        logged = candidates[b, slate[b, min(pos, k - 1) if did_click else 0]]

        # --- 2. conversion and reward -----------------------------------------------------
        affinity = 0.0
        for d in range(n_topics):
            affinity += features[logged, d] * interest[b, d]
        quality = hidden[logged, 1]
        p_conv = 1.0 / (1.0 + np.exp(-(hidden[logged, 0] + c[C_CONV_AFFINITY] * affinity)))
        converted = did_click and _uniform(s, codes[1]) < p_conv
        click_value = 1.0 if did_click else 0.0
        conv_flag = 1.0 if converted else 0.0
        paid = hidden[logged, 2] * conv_flag
        reward[b] = c[C_W_CLICK] * click_value + c[C_W_CONV] * (paid if flags[I_REVENUE] else conv_flag)
        click[b], conversion[b], revenue[b] = did_click, converted, paid
        position[b] = pos if did_click else -1
        clicked_item[b] = logged if did_click else -1

        # --- 3. satisfaction, fatigue, interest --------------------------------------------
        sat = satisfaction[b]
        if did_click:
            sat += c[C_SAT_RATE] * (quality - sat)
        else:
            sat *= 1.0 - c[C_PENALTY]
        new_satisfaction[b] = sat
        direction = c[C_ETA] * (2.0 * quality - 1.0)
        for d in range(n_topics):
            e = features[logged, d] * click_value
            f = fatigue[b, d] * (1.0 - c[C_DECAY])
            new_fatigue[b, d] = f + c[C_GAIN] * e * (1.0 - f)
            x = interest[b, d]
            x += direction * e * (1.0 - abs(x))
            x += c[C_REVERSION] * (base_interest[b, d] - x)
            if noise_cols:
                x += c[C_NOISE] * 3.4641016151377544 * (_uniform(s, codes[4 + d]) - 0.5)
            new_interest[b, d] = min(1.0, max(-1.0, x))
        if _uniform(s, codes[3]) < c[C_REGIME]:  # regime shift: a new profile, fully adopted
            _draw_profile(s, regime_codes, 0, flags[I_DECLARED], new_base[b], scratch_declared)
            new_interest[b] = new_base[b]

        # --- 4. episode end -------------------------------------------------------------------
        churn_p = c[C_CHURN_BASE] + c[C_CHURN_SCALE] * (1.0 - sat) * (1.0 - sat)
        churned = _uniform(s, codes[2]) < churn_p
        steps = t[b] + 1
        terminated[b] = churned
        truncated[b] = (steps >= flags[I_MAX_STEPS]) and not churned
        end_reason[b] = 1 if churned else (2 if truncated[b] else 0)

        # --- 5. history and next candidates ------------------------------------------------
        for h in range(h_len - 1):  # shift by one entry (explicit loops: no slice views)
            for f in range(history.shape[2]):
                new_history[b, h, f] = history[b, h + 1, f]
        new_history[b, h_len - 1, :item_dim] = features[logged]
        if generations > 1:  # a new item's observed popularity is still ramping up (cold start)
            age = (t[b] + slot_phase[logged % num_items]) % lifetime
            new_history[b, h_len - 1, item_dim - 1] *= min(1.0, age / c[C_COLD_START_RAMP])
        new_history[b, h_len - 1, item_dim] = click_value
        new_history[b, h_len - 1, item_dim + 1] = conv_flag
        new_history[b, h_len - 1, item_dim + 2] = 1.0
        _retrieve(s, codes, 4 + noise_cols, steps, retrieval_table, slot_phase, lifetime, num_items,
                  generations, new_candidates[b])


@njit(cache=True)
def _retrieve(s, codes, first, steps, retrieval_table, slot_phase, lifetime, num_items, generations,
              out):
    """Fill ``out`` (m,) with candidate ids: stratum j's inverse-CDF table at a uniform draw."""
    table_size = retrieval_table.shape[1]
    for j in range(out.shape[0]):
        slot = np.int64(retrieval_table[j, int(_uniform(s, codes[first + j]) * table_size)])
        if generations > 1:
            generation = min((steps + slot_phase[slot]) // lifetime, generations - 1)
            slot += generation * num_items
        out[j] = slot


@njit(cache=True)
def _draw_profile(s, codes, first, n_declared, base, declared):
    """A user profile from uniforms ``first .. first + 2T``: the ``n_declared`` topics with the
    largest first-half draws are favourites (interest in [0.5, 1], declared = 1); the others
    get interest in [-0.4, 0.4]."""
    n_topics = base.shape[0]
    rank = np.empty(n_topics)
    for d in range(n_topics):
        rank[d] = _uniform(s, codes[first + d])
    order = np.argsort(rank)
    for d in range(n_topics):
        declared[d] = 0.0
    for i in range(n_topics - n_declared, n_topics):
        declared[order[i]] = 1.0
    for d in range(n_topics):
        v = _uniform(s, codes[first + n_topics + d])
        base[d] = 0.5 + 0.5 * v if declared[d] > 0 else 0.8 * (v - 0.5)


@njit(cache=True, nogil=True)
def reset_kernel(rows, streams, codes, retrieval_table, slot_phase, c, flags, stream, t, interest,
                 base_interest, declared, fatigue, satisfaction, candidates, history):
    """Start new episodes IN PLACE in ``rows`` of the state arrays (streams: their new counters).

    Uniform columns: 0..2T profile, 2T satisfaction jitter, then m retrieval draws.
    """
    n_topics = interest.shape[1]
    for r in range(rows.shape[0]):
        b = rows[r]
        s = np.uint64(streams[r])
        stream[b] = streams[r]
        t[b] = 0
        _draw_profile(s, codes, 0, flags[I_DECLARED], base_interest[b], declared[b])
        for d in range(n_topics):
            interest[b, d] = base_interest[b, d]
            fatigue[b, d] = 0.0
        jitter = 0.2 * (_uniform(s, codes[2 * n_topics]) - 0.5)
        satisfaction[b] = min(1.0, max(0.0, c[C_INIT_SATISFACTION] + jitter))
        history[b] = 0.0
        _retrieve(s, codes, 2 * n_topics + 1, 0, retrieval_table, slot_phase, flags[I_LIFETIME],
                  flags[I_NUM_ITEMS], flags[I_GENERATIONS], candidates[b])


def constants(params, catalog) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's float64 constants and int64 flags for ``params`` and its ``catalog``."""
    c = np.zeros(20)
    c[C_BETA], c[C_GAMMA] = params.affinity_weight, params.appeal_weight
    c[C_PHI] = params.fatigue_weight if params.fatigue_gain else 0.0
    c[C_NO_CLICK], c[C_RHO] = params.no_click_utility, params.position_decay
    c[C_CONV_AFFINITY] = params.conversion_affinity
    c[C_W_CLICK], c[C_W_CONV] = params.click_weight, params.conversion_weight
    c[C_ETA], c[C_NOISE], c[C_REVERSION] = (params.interest_update_rate, params.interest_noise,
                                            params.interest_reversion)
    c[C_REGIME], c[C_GAIN], c[C_DECAY] = (params.regime_shift_prob, params.fatigue_gain,
                                          params.fatigue_decay)
    c[C_SAT_RATE], c[C_PENALTY] = params.satisfaction_rate, params.no_click_penalty
    c[C_CHURN_BASE], c[C_CHURN_SCALE] = params.churn_base, params.churn_scale
    c[C_INIT_SATISFACTION] = params.initial_satisfaction
    c[C_COLD_START_RAMP] = params.cold_start_ramp
    flags = np.zeros(8, dtype=np.int64)
    flags[I_CASCADE] = params.choice_model == "cascade"
    flags[I_REVENUE] = params.reward_mode == "revenue"
    flags[I_NOISE_COLS] = params.num_topics if params.interest_noise > 0 else 0
    flags[I_MAX_STEPS], flags[I_LIFETIME] = params.max_steps, max(params.item_lifetime, 1)
    flags[I_NUM_ITEMS], flags[I_GENERATIONS] = catalog.num_items, catalog.generations
    flags[I_DECLARED] = params.declared_topics
    for arr in (c, flags):
        arr.setflags(write=False)
    return c, flags
