"""The interest-evolution world's step and reset: one compiled pass over B users (numba).

The same arithmetic as RecSim's interest-evolution model (the equations are in
:mod:`recsim_gym.env.interest_evolution`), fused into one loop per user as
:mod:`recsim_gym.env.kernel` does for the default world: about 60 numpy operations per step
cost ~1 us each of fixed overhead at B = 1 and a memory pass each at large B.

Random numbers are those of :func:`recsim_gym.env.rng.uniforms` (column ``j`` of user ``b`` is
``lowbias32(stream_b XOR code_j) / 2^24``): step columns 0 (choice), 1 (interest direction),
then ``m`` topic draws and ``m`` quality draws of the next documents; reset columns ``0..T``
(interest), then the first documents' ``m`` topic and ``m`` quality draws. A document's quality
is a pure function of the state (:func:`candidate_quality`), drawn only where it is read: a
step reads the k shown documents', so it makes k normal draws rather than m. A quality draw is
the standard normal quantile (:func:`ndtri`) at the midpoint ``(j + 1/2) / 2^24`` of its
24-bit uniform ``j / 2^24``, so ``|z| <= 5.42`` and never infinite.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from recsim_gym.env.kernel import _uniform
from recsim_gym.env.rng import WEYL32

#: Choice model codes (the order of ``interest_evolution.CHOICE_MODELS``).
PROPORTIONAL, LOGIT, PROPORTIONAL_CASCADE, EXPONENTIAL_CASCADE = range(4)
# Indices into the float64 constants vector (:func:`constants`).
(C_NO_CLICK_MASS, C_MIN_NORMALIZER, C_SCORE_SCALING, C_ATTENTION, C_VIDEO_LENGTH, C_STEP_PENALTY,
 C_ALPHA, C_USER_QUALITY, C_DOC_QUALITY, C_STEP_MAX, C_STEP_ZERO) = range(11)
# Indices into the int64 flags vector.
I_CHOICE, I_MAX_STEPS = range(2)

# cephes ndtri (Moshier), the algorithm of scipy.special.ndtri: rational approximations on
# |y - 1/2| <= 3/8 (P0/Q0) and in z = sqrt(-2 log y) on [2, 8) (P1/Q1) and [8, 64] (P2/Q2).
_P0 = np.array([-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
                1.39312609387279679503e1, -1.23916583867381258016e0])
_Q0 = np.array([1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
                -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
                1.59056225126211695515e1, -1.18331621121330003142e0])
_P1 = np.array([4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
                4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
                -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4])
_Q1 = np.array([1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
                1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
                -3.80806407691578277194e-2, -9.33259480895457427372e-4])
_P2 = np.array([3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
                1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
                3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9])
_Q2 = np.array([6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
                2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
                2.89247864745380683936e-6, 6.79019408009981274425e-9])
_EXP_MINUS_2 = 0.13533528323661269189
_WEYL32_BACK = (1 << 32) - int(WEYL32)  # adding it undoes one step's rng.WEYL32, mod 2^32
_SQRT_2PI = 2.50662827463100050242


@njit(cache=True, inline="always")
def _polevl(x, coef):
    value = coef[0]
    for i in range(1, coef.shape[0]):
        value = value * x + coef[i]
    return value


@njit(cache=True, inline="always")
def _p1evl(x, coef):
    value = x + coef[0]
    for i in range(1, coef.shape[0]):
        value = value * x + coef[i]
    return value


@njit(cache=True)
def ndtri(y0: float) -> float:
    """The standard normal quantile of ``y0`` in [0, 1] (cephes' algorithm, bit for bit
    ``scipy.special.ndtri``'s; ``tests/test_interest_evolution.py`` checks every input the
    world uses)."""
    if y0 <= 0.0:
        return -np.inf
    if y0 >= 1.0:
        return np.inf
    negate = True
    y = y0
    if y > 1.0 - _EXP_MINUS_2:
        y = 1.0 - y
        negate = False
    if y > _EXP_MINUS_2:
        y = y - 0.5
        y2 = y * y
        x = y + y * (y2 * _polevl(y2, _P0) / _p1evl(y2, _Q0))
        return x * _SQRT_2PI
    x = np.sqrt(-2.0 * np.log(y))
    x0 = x - np.log(x) / x
    z = 1.0 / x
    if x < 8.0:
        x1 = z * _polevl(z, _P1) / _p1evl(z, _Q1)
    else:
        x1 = z * _polevl(z, _P2) / _p1evl(z, _Q2)
    x = x0 - x1
    return -x if negate else x


@njit(cache=True)
def _block_sum(a, first, n):
    """``a[first:first + n].sum()`` for ``n <= 128`` in numpy's order: sequential below 8
    terms, else eight interleaved partial sums combined pairwise, then the rest."""
    if n < 8:
        total = -0.0
        for i in range(first, first + n):
            total += a[i]
        return total
    r = np.empty(8)
    for j in range(8):
        r[j] = a[first + j]
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += a[first + i + j]
        i += 8
    total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        total += a[first + i]
        i += 1
    return total


@njit(cache=True)
def _pairwise_sum(a, first, n):
    """``a[first:first + n].sum()`` in numpy's order (pairwise summation, the order of
    ``ndarray.sum``), so that probabilities normalise exactly as numpy does. numpy halves a
    run longer than 128 (the half rounded down to a multiple of 8) and adds the halves' sums;
    the tree is walked with an explicit stack (numba's cache cannot hold a recursive function)."""
    if n <= 128:
        return _block_sum(a, first, n)
    tasks = np.empty((128, 3), np.int64)  # (first, n, halves already summed)
    values = np.empty(128)
    top, depth = 0, 0
    tasks[0, 0], tasks[0, 1], tasks[0, 2] = first, n, 0
    while top >= 0:
        start, size, combined = tasks[top, 0], tasks[top, 1], tasks[top, 2]
        top -= 1
        if combined:  # both halves are on the value stack: left below right
            depth -= 1
            values[depth - 1] = values[depth - 1] + values[depth]
        elif size <= 128:
            values[depth] = _block_sum(a, start, size)
            depth += 1
        else:
            half = size // 2
            half -= half % 8
            tasks[top + 1, 0], tasks[top + 1, 1], tasks[top + 1, 2] = start, size, 1
            tasks[top + 2, 0], tasks[top + 2, 1], tasks[top + 2, 2] = start + half, size - half, 0
            tasks[top + 3, 0], tasks[top + 3, 1], tasks[top + 3, 2] = start, half, 0
            top += 3
    return values[0]


@njit(cache=True)
def choice_probs(scores, choice, c, out):
    """Click probability per slate position, then no-click, into ``out`` (k + 1,), from the
    raw scores ``<interest, features>`` (k,) of the slate (see ``InterestEvolutionParams``'s
    ``choice_model``). RecSim normalises the cascade probabilities too."""
    k = scores.shape[0]
    if choice == PROPORTIONAL:
        for i in range(k):
            out[i] = scores[i] - c[C_MIN_NORMALIZER]
        out[k] = c[C_NO_CLICK_MASS] - c[C_MIN_NORMALIZER]
    elif choice == LOGIT:
        top = c[C_NO_CLICK_MASS]
        for i in range(k):
            top = max(top, scores[i])
        for i in range(k):
            out[i] = np.exp(scores[i] - top)
        out[k] = np.exp(c[C_NO_CLICK_MASS] - top)
    else:
        reach = 1.0
        scale = c[C_ATTENTION] * c[C_SCORE_SCALING]
        for i in range(k):
            base = scores[i] - c[C_MIN_NORMALIZER] if choice == PROPORTIONAL_CASCADE else np.exp(scores[i])
            click = scale * base
            out[i] = reach * click
            reach = reach * (1.0 - click)
        out[k] = reach
    total = _pairwise_sum(out, 0, k + 1)
    for i in range(k + 1):
        out[i] = out[i] / total


@njit(cache=True)
def batch_choice_probs(scores, choice, c):
    """:func:`choice_probs` of every row of ``scores`` (B, k): (B, k + 1)."""
    out = np.empty((scores.shape[0], scores.shape[1] + 1))
    for b in range(scores.shape[0]):
        choice_probs(scores[b], choice, c, out[b])
    return out


@njit(cache=True, inline="always")
def _single_item_score(score, choice, c):
    """The choice model's score of an item scored alone (RecSim's ``expected_utility``)."""
    if choice == PROPORTIONAL:
        return score - c[C_MIN_NORMALIZER]
    if choice == LOGIT:
        return 1.0 / (1.0 + np.exp(c[C_NO_CLICK_MASS] - score))
    base = score - c[C_MIN_NORMALIZER] if choice == PROPORTIONAL_CASCADE else np.exp(score)
    return c[C_ATTENTION] * c[C_SCORE_SCALING] * base


@njit(cache=True, inline="always")
def normal_draw(u):
    """A standard normal from a 24-bit uniform ``u = j / 2^24``: the quantile at the midpoint
    ``(j + 1/2) / 2^24`` of its cell, exact in float64 (so never 0 or 1, never infinite)."""
    return ndtri(u + 2.0**-25)


@njit(cache=True, inline="always")
def _topics(s, codes, first, n_topics, topic_out):
    """The topics of a user's next ``m`` documents, from columns ``first .. first + m`` (a
    topic uniform ``u``: ``int(u T)`` in float32, as RecSim's ``np.random`` draw would round).
    Their qualities are drawn from the next ``m`` columns when they are read (:func:`_quality`)."""
    for j in range(topic_out.shape[0]):
        u = np.float32(_uniform(s, codes[first + j]))
        topic_out[j] = min(int(u * np.float32(n_topics)), n_topics - 1)


@njit(cache=True, inline="always")
def _quality(stream_b, t_b, topic, j, m, step_codes, reset_codes, means, quality_std):
    """The quality of document ``j`` (topic ``topic``) that a user holds: its normal draw is in
    the column after the ``m`` topic columns of the draw that made the documents, the reset's
    (stream ``stream_b``, at ``t_b = 0``) or the last step's (the stream one ``WEYL32`` back).
    Only the shown documents' qualities enter a step, so they are drawn there, not for all m."""
    if t_b == 0:
        u = _uniform(np.uint64(stream_b), reset_codes[means.shape[0] + m + j])
    else:
        before = (np.uint64(stream_b) + np.uint64(_WEYL32_BACK)) & np.uint64(0xFFFFFFFF)
        u = _uniform(before, step_codes[2 + m + j])
    return means[topic] + quality_std * normal_draw(u)


@njit(cache=True)
def candidate_quality(stream, t, cand_topic, step_codes, reset_codes, means, quality_std, out):
    """The qualities (B, m) of the documents every user holds, into ``out``."""
    m = cand_topic.shape[1]
    for b in range(cand_topic.shape[0]):
        for j in range(m):
            out[b, j] = _quality(stream[b], t[b], cand_topic[b, j], j, m, step_codes, reset_codes,
                                 means, quality_std)


@njit(cache=True, nogil=True)
def step_kernel(codes, reset_codes, means, quality_std, stream, t, interest, budget, watched,
                topic_minutes, no_clicks, cand_topic, history, response, slate, c, flags, new_stream,
                new_t, new_interest, new_budget, new_watched, new_topic_minutes, new_no_clicks,
                new_topic, new_history, new_response, reward, click, position, item, probs,
                terminated, truncated, end_reason):
    """One step for every user: reads the state arrays and ``slate``, writes the new state and
    the per-user outcome into the ``new_*`` and outcome arrays (never the inputs)."""
    b_size, n_topics = interest.shape
    k = slate.shape[1]
    h_len = history.shape[1]
    choice = flags[I_CHOICE]
    m = cand_topic.shape[1]
    scores = np.empty(k)
    shown_quality = np.empty(k)
    p = np.empty(k + 1)
    video_length = c[C_VIDEO_LENGTH]
    slope = c[C_STEP_MAX] / c[C_STEP_ZERO]
    for b in range(b_size):
        s = np.uint64(stream[b])
        new_stream[b] = stream[b] + np.uint32(0x9E3779B9)  # rng.WEYL32: the next step's counter
        for d in range(n_topics):
            new_interest[b, d] = interest[b, d]
            new_topic_minutes[b, d] = topic_minutes[b, d]
        for i in range(k):
            scores[i] = interest[b, cand_topic[b, slate[b, i]]]
            shown_quality[i] = _quality(stream[b], t[b], cand_topic[b, slate[b, i]], slate[b, i], m,
                                        codes, reset_codes, means, quality_std)
        choice_probs(scores, choice, c, p)
        # --- choice: the position whose cumulative probability first exceeds the draw ----------
        u = np.float64(np.float32(_uniform(s, codes[0])))
        cdf = 0.0
        chosen = 0
        for i in range(k):
            cdf += p[i]
            if u >= cdf:
                chosen += 1
        chosen = min(chosen, k)
        did_click = chosen < k
        pos = min(chosen, k - 1)
        topic = cand_topic[b, slate[b, pos]]
        quality = shown_quality[pos]
        theta = scores[pos]
        # --- watch time and budget (IEvUserModel) ------------------------------------------------
        watch = min(max(budget[b], 0.0), video_length) if did_click else 0.0
        utility = c[C_USER_QUALITY] * _single_item_score(theta, choice, c) + c[C_DOC_QUALITY] * quality
        if did_click:
            new_budget[b] = budget[b] - watch + c[C_ALPHA] * watch * utility
        else:
            new_budget[b] = budget[b] - c[C_STEP_PENALTY]
        # --- the clicked topic's interest moves toward (or away from) the document ---------------
        update = (c[C_STEP_MAX] - slope * abs(theta)) * (1.0 - theta)
        toward = np.float64(np.float32(_uniform(s, codes[1]))) < (theta + 1.0) / 2.0
        if did_click:
            moved = theta + update if toward else theta - update
            new_interest[b, topic] = min(max(moved, -1.0), 1.0)
        new_t[b] = t[b] + 1
        new_watched[b] = watched[b] + watch
        if did_click:
            new_topic_minutes[b, topic] += watch
        new_no_clicks[b] = no_clicks[b] + (0 if did_click else 1)
        terminated[b] = new_budget[b] <= 0.0
        truncated[b] = not terminated[b] and new_t[b] >= flags[I_MAX_STEPS]
        end_reason[b] = 1 if terminated[b] else (2 if truncated[b] else 0)
        reward[b] = np.float32(watch)
        click[b] = did_click
        position[b] = chosen if did_click else -1
        item[b] = slate[b, pos] if did_click else -1
        for i in range(k + 1):
            probs[b, i] = np.float32(p[i])
        # --- observation records: history entry (clicked item, else the first shown), response --
        for h in range(h_len - 1):  # shift by one entry (explicit loops: no slice views)
            for f in range(history.shape[2]):
                new_history[b, h, f] = history[b, h + 1, f]
        logged = topic if did_click else cand_topic[b, slate[b, 0]]
        for d in range(n_topics):
            new_history[b, h_len - 1, d] = 0.0
        new_history[b, h_len - 1, logged] = 1.0
        new_history[b, h_len - 1, n_topics] = 1.0 if did_click else 0.0
        new_history[b, h_len - 1, n_topics + 1] = np.float32(watch / video_length)
        new_history[b, h_len - 1, n_topics + 2] = 1.0
        new_response[b] = 0.0
        for i in range(k):
            new_response[b, i, cand_topic[b, slate[b, i]]] = 1.0
            new_response[b, i, n_topics + 2] = np.float32(min(max(shown_quality[i], -100.0), 100.0))
            new_response[b, i, n_topics + 3] = 1.0
        new_response[b, pos, n_topics] = 1.0 if did_click else 0.0
        new_response[b, pos, n_topics + 1] = np.float32(watch)
        # --- RecSim resamples the documents every step ---------------------------------------
        _topics(s, codes, 2, n_topics, new_topic[b])


@njit(cache=True, nogil=True)
def reset_kernel(rows, streams, codes, time_budget, stream, t, interest, budget, watched,
                 topic_minutes, no_clicks, cand_topic, history, response):
    """Start new episodes IN PLACE in ``rows`` of the state arrays (``streams``: their new
    counters): interest ``2u - 1`` per topic from columns ``0..T``, then the first documents."""
    n_topics = interest.shape[1]
    for r in range(rows.shape[0]):
        b = rows[r]
        s = np.uint64(streams[r])
        stream[b] = streams[r]
        t[b] = 0
        for d in range(n_topics):
            interest[b, d] = np.float64(np.float32(_uniform(s, codes[d]))) * 2.0 - 1.0
            topic_minutes[b, d] = 0.0
        budget[b] = time_budget
        watched[b] = 0.0
        no_clicks[b] = 0
        history[b] = 0.0
        response[b] = 0.0
        _topics(s, codes, n_topics, n_topics, cand_topic[b])


def constants(params) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's float64 constants and int64 flags for ``InterestEvolutionParams``."""
    from recsim_gym.env.interest_evolution import CHOICE_MODELS

    c = np.zeros(11)
    c[C_NO_CLICK_MASS], c[C_MIN_NORMALIZER] = params.no_click_mass, params.min_normalizer
    c[C_SCORE_SCALING], c[C_ATTENTION] = params.score_scaling, params.attention_prob
    c[C_VIDEO_LENGTH], c[C_STEP_PENALTY] = params.video_length, params.step_penalty
    c[C_ALPHA], c[C_USER_QUALITY] = params.user_update_alpha, params.user_quality_factor
    c[C_DOC_QUALITY] = params.document_quality_factor
    c[C_STEP_MAX], c[C_STEP_ZERO] = params.interest_step_max, params.interest_step_zero
    flags = np.array([CHOICE_MODELS.index(params.choice_model), params.max_steps], dtype=np.int64)
    for arr in (c, flags):
        arr.setflags(write=False)
    return c, flags
