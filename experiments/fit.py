"""Fit the simulator to a team's own logs: ``recsim fit LOGS`` (likelihoods and indirect inference).

**Method, and why.** The likelihood of a log under the default world integrates over every
user's latent interest path (drift, regime shifts), fatigue and satisfaction and over every
item's hidden quality: a high-dimensional state-space model with no closed form. Indirect
inference (Gourieroux, Monfort and Renault 1993; Smith 1993) needs only the simulator; where
a part of the model has a likelihood that the log gives in closed form, that is used instead.
After the interest proxy is measured in a world simulated at the start (:func:`affinity_proxy`):

1. the conversion fields (:data:`CONVERSION_FIELDS`) by the likelihood of the logged
   conversions, each item's hidden quality summed out over the default family's prior given
   its appeal and each click's interest from its declared-topic match (:func:`conversion_fit`);
2. the churn fields (:data:`CHURN_FIELDS`) by the exact likelihood of the logged session ends:
   given the items' qualities, each user's satisfaction follows from what they clicked, so
   ``P(leave) = churn_base + churn_scale (1 - s)^2`` is known row by row
   (:func:`session_end_fit`, the qualities drawn from their posteriors under the fitted
   conversion model, Rubin's rules over the draws). It needs to know which sessions ended:
   the log's ``terminated`` column, or rows in time order (:func:`session_ends`); a converted
   table without that column leaves the churn fields to step 3;
3. the other fields by indirect inference, with those held: fit cheap *auxiliary* models to
   the log (:func:`auxiliary_statistics`: a conditional logit of the choice on the shown slate,
   with the user's clicks of 20 or more steps before (:func:`distant_clicks`), a logistic
   model of conversion after a click, a hazard model of session ends, and drift
   summaries), simulate logs under candidate Params with the log's logging policy, size and
   batch (the same users every time: common random numbers), fit the same auxiliary models,
   and move the Params until the two agree: Levenberg-Marquardt Gauss-Newton on the weighted
   distance, with a finite-difference Jacobian, inside the search bounds of :data:`FIT_FIELDS`.
4. the conversion likelihood's bias, as it reads the log through the interest proxy, measured
   on logs simulated at the fitted world and taken off the conversion fields (a parametric
   bootstrap: :meth:`FitProblem.conversion_bias`), and the churn fields fitted again at the
   qualities the corrected conversion model imputes.

Why the two likelihoods: the auxiliary statistics say little about the churn fields (their
estimates leaned the same way in 11 of 12 fits, docs/fit.md), and nothing that separates the
conversion fields from the imputed qualities, which adapt to any conversion model (bias and
price came back off by 2-3 standard errors in most fits); both likelihoods read every row.

The simulator is the model (no second implementation of the dynamics), and the Jacobian also
gives the uncertainty: the simulated-method-of-moments sandwich
``(1 + 1/S) (J'WJ)^-1 J'W (Sigma + D) W J (J'WJ)^-1`` with ``Sigma`` the bootstrap covariance
(over users) of the logged statistics, ``D`` that of the simulated statistics over draws of the
imputed qualities (the log's real qualities are another such draw as far as the fit can tell;
:meth:`FitProblem.draw_covariance`) and ``W`` the inverse of ``Sigma``'s diagonal; 95% intervals
per field (for the conversion and churn fields, their likelihood's inverse information).
The choice model (MNL or cascade) is picked by which auxiliary model, a conditional logit or a
cascade of logits on the same features (the first position always examined, a continuation
probability per later position), explains the logged clicks better. The auxiliary logits run
to their optimum by Newton's method, so the statistics do not depend on where they start.

**Catalog.** Items are known by their logged features (topic vector, appeal, price feature,
observed popularity). Each item's hidden quality is drawn from its posterior given its clicks
and conversions under the candidate conversion model, with the default family's prior given
its appeal (clickbait: high appeal, low quality), each click's affinity read as the interest
proxy's line in the declared-topic match with a latent residual (:func:`affinity_proxy`,
summed out by two-point quadrature); a draw, not the posterior mean, keeps the
spread of quality that policies seeking quality depend on. The catalog is thus a function of the Params,
imputed anew for every simulated world.

**Fixed, not fitted.** The world's sizes (topics, candidates, slate, history, ``max_steps``),
the fatigue gain and decay, interest reversion and regime shifts, the initial satisfaction, the
reward weights, the price range and the catalog's quality and appeal distributions come from
the log's meta or the ``default`` preset.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
from scipy.optimize import minimize

from recsim_gym.env import seeds
from recsim_gym.env.catalog import load_item_table, price_feature_of, price_of, save_item_table
from recsim_gym.env.logs import generate_logs
from recsim_gym.env.presets import make_params
from recsim_gym.env.simulator import make_simulator

#: The fitted Params fields and their search bounds.
FIT_FIELDS: dict[str, tuple[float, float]] = {
    "affinity_weight": (0.0, 15.0), "appeal_weight": (0.0, 15.0), "fatigue_weight": (0.0, 15.0),
    "no_click_utility": (-5.0, 10.0), "position_decay": (0.05, 1.0),
    "conversion_bias": (-8.0, 4.0), "conversion_affinity": (-4.0, 6.0),
    "conversion_quality": (-4.0, 10.0), "conversion_price": (-4.0, 6.0),
    "churn_base": (0.0, 0.05), "churn_scale": (0.0, 0.4), "satisfaction_rate": (0.0, 1.0),
    "no_click_penalty": (0.0, 0.3), "interest_update_rate": (0.0, 0.4), "interest_noise": (0.0, 0.15),
}
#: Format tag of a fitted-world file.
FIT_FORMAT = "recsim-fit/1"
#: Logging policies a fit can simulate (the log's meta names one).
SIMULATED_LOGGING = ("epsilon_popularity", "epsilon_affinity", "uniform", "epsilon_slate")
_GRID = np.linspace(0.0, 1.0, 51)  # quality grid of the item posteriors
_LOG_2 = float(np.log(2.0))


def _places(names: Sequence[str]) -> list[int]:
    """Where the fields ``names`` sit in a field vector ``theta`` (the order of :data:`FIT_FIELDS`)."""
    order = list(FIT_FIELDS)
    return [order.index(name) for name in names]


# --------------------------------------------------------------------------------------------
# Auxiliary statistics
# --------------------------------------------------------------------------------------------

def _slate_terms(logs: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Per shown item (n, k): declared-topic match, appeal, price, popularity, match with the
    last two clicked items (fatigue) and with older clicked items (interest)."""
    shown = np.asarray(logs["slate_features"], dtype=np.float32)  # no copy if float32 already
    topic = shown[..., :t]
    declared = logs["user_features"][:, :t].astype(np.float32)
    hist = np.asarray(logs["history"], dtype=np.float32)
    clicked = (hist[..., -3] * hist[..., -1])[..., None] * hist[..., :t]
    recent, older = clicked[:, -2:].sum(1), clicked[:, :-2].sum(1)
    return {"declared": np.einsum("nkt,nt->nk", topic, declared),
            "recent": np.einsum("nkt,nt->nk", topic, recent), "older": np.einsum("nkt,nt->nk", topic, older),
            "appeal": shown[..., t], "price": shown[..., t + 1], "popularity": shown[..., t + 2]}


def _choice_features(terms: dict[str, np.ndarray]) -> np.ndarray:
    """(n, k, 5) features of the auxiliary choice model: 1, declared-topic match, appeal,
    match with the last two clicks, match with older clicks."""
    return np.stack([np.ones_like(terms["appeal"]), terms["declared"], terms["appeal"], terms["recent"],
                     terms["older"]], axis=2)


def _fit_logit(nll, size: int, start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Minimise a smooth negative log-likelihood with its gradient (L-BFGS from ``start``, by
    default zeros: a fit of a similar log's model converges in a few steps from its answer)."""
    result = minimize(nll, np.zeros(size) if start is None else start, jac=True, method="L-BFGS-B")
    return result.x, float(result.fun)


def _newton(objective, start: np.ndarray, iterations: int = 50, tolerance: float = 1e-14
            ) -> tuple[np.ndarray, float]:
    """Minimise a smooth convex loss by Newton's method with backtracking; ``objective(theta)``
    returns (loss, gradient, Hessian). Stops when the Newton decrement is below ``tolerance``:
    the optimum to about machine precision, whatever the start (a singular Hessian, a feature
    that never varies, takes the least-norm step)."""
    theta = np.asarray(start, dtype=float).copy()
    loss, grad, hess = objective(theta)
    for _ in range(iterations):
        step = np.linalg.lstsq(hess, -grad, rcond=None)[0]
        decrement = -float(grad @ step)
        if decrement <= tolerance:
            break
        t = 1.0
        while True:
            trial = objective(theta + t * step)
            if trial[0] <= loss - 0.25 * t * decrement:
                break
            t /= 2
            if t < 1e-6:  # no descent left along Newton's direction: the optimum, to rounding
                return theta, float(loss)
        theta, (loss, grad, hess) = theta + t * step, trial
    return theta, float(loss)


def choice_logit(x: np.ndarray, position: np.ndarray, cascade: bool = False,
                 start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Auxiliary choice model on shown slates: item utility ``x b + delta_j`` (x: (n, k, F),
    ``delta_0 = 0``); conditional logit with no-click utility 0 (fitted by Newton's method to
    its optimum), or (``cascade``) a cascade of attractions ``sigmoid(x b)`` scanned in order,
    going on past position j - 1 with probability ``sigmoid(delta_j)`` (:func:`_cascade_loss`;
    L-BFGS). Returns the coefficients and the mean negative log-likelihood."""
    n, k, f = x.shape
    chosen = np.where(position >= 0, position, k)
    if not cascade:
        x = x.astype(float)
        flat = x.reshape(n * k, f)
        picked = (position[:, None] == np.arange(k)).astype(float)  # the clicked item, if any

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            u = x @ theta[:f] + np.concatenate([[0.0], theta[f:]])
            top = np.maximum(u.max(1), 0.0)
            e = np.exp(u - top[:, None])
            log_total = np.log(e.sum(1) + np.exp(-top)) + top
            loss = float(np.mean(log_total - (u * picked).sum(1)))
            p = e * np.exp(top - log_total)[:, None]  # the items' choice probabilities
            diff = p - picked
            grad = np.concatenate([np.einsum("nk,nkf->f", diff, x), diff.sum(0)[1:]]) / n
            mean_x = np.einsum("nk,nkf->nf", p, x)
            hess = np.empty((f + k - 1, f + k - 1))
            hess[:f, :f] = (flat * p.reshape(-1, 1)).T @ flat - mean_x.T @ mean_x
            cross = np.einsum("nk,nkf->kf", p, x)[1:].T - mean_x.T @ p[:, 1:]
            hess[:f, f:], hess[f:, :f] = cross, cross.T
            hess[f:, f:] = np.diag(p[:, 1:].sum(0)) - p[:, 1:].T @ p[:, 1:]
            return loss, grad, hess / n

        return _newton(objective, np.zeros(f + k - 1) if start is None else start)

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        def loss(th: np.ndarray) -> float:
            return _cascade_loss(th, x, chosen, f)

        return loss(theta), _numeric_grad(loss, theta)

    theta, loss = _fit_logit(nll, f + k - 1, start)
    return theta, loss


def _cascade_loss(theta: np.ndarray, x: np.ndarray, chosen: np.ndarray, f: int) -> float:
    """Mean negative log-likelihood of the auxiliary cascade: the first position always
    examined, item j attractive with probability ``a_j = sigmoid(x_j b)``, the scan going on
    from position j - 1 to j after an unattractive item with probability
    ``sigmoid(delta_j)`` (the simulator's cascade is the case of one continuation
    probability, ``position_decay``, for every j)."""
    n, k, _ = x.shape
    a = 1.0 / (1.0 + np.exp(-(x @ theta[:f])))
    go_on = 1.0 / (1.0 + np.exp(-theta[f:]))
    reach = np.ones((n, k))
    reach[:, 1:] = np.cumprod((1.0 - a[:, :-1]) * go_on, axis=1)
    p_items = reach * a
    p = np.concatenate([p_items, np.maximum(1.0 - p_items.sum(1), 1e-300)[:, None]], 1)
    return float(-np.mean(np.log(np.maximum(p[np.arange(n), chosen], 1e-300))))


def _numeric_grad(loss, theta: np.ndarray, h: float = 1e-5) -> np.ndarray:
    grad = np.empty_like(theta)
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = h
        grad[i] = (loss(theta + step) - loss(theta - step)) / (2 * h)
    return grad


def _logistic(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Logistic regression coefficients (x: (n, F) with an intercept column), by Newton's
    method to the likelihood's optimum."""
    n = len(y)

    def objective(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        z = x @ b
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
        p = 1.0 / (1.0 + np.exp(-z))
        return loss, x.T @ (p - y) / n, (x * (p * (1.0 - p))[:, None]).T @ x / n

    return _newton(objective, np.zeros(x.shape[1]) if start is None else start)[0]


def last_rows(logs: dict[str, np.ndarray]) -> np.ndarray:
    """Per row of ``logs``, whether it is its user's last (by step): where a session ended,
    or where the end of logging cut it."""
    user = logs["user"]
    order = np.lexsort((logs["step"], user))
    last = np.zeros(len(user), dtype=bool)
    last[order[np.r_[user[order][1:] != user[order][:-1], True]]] = True
    return last


#: Steps back beyond which a user's clicks enter :func:`distant_clicks`: past fatigue's reach
#: (the default decay leaves 0.9^20 = 12% of a click's fatigue), inside interest's (reversion
#: 0.01 a step).
DISTANT_LAG = 20


def distant_clicks(logs: dict[str, np.ndarray], num_topics: int, lag: int = DISTANT_LAG) -> np.ndarray:
    """Per row (n, T): the mean topic vector of the user's clicks at least ``lag`` steps
    before the row's step (zeros where there is none), from the log's rows by user and step,
    so beyond the observed history. What a click does to the user's interest in its topics
    long after its fatigue has gone is the drift rate's signature."""
    t = num_topics
    _, user = np.unique(logs["user"], return_inverse=True)
    step = logs["step"].astype(np.int64)
    order = np.lexsort((step, user))
    user, step = user[order], step[order]
    position = logs["position"][order].astype(np.int64)
    clicked = np.flatnonzero(position >= 0)
    topics = np.zeros((len(order), t))
    topics[clicked] = logs["slate_features"][order[clicked], position[clicked], :t]
    total = np.vstack([np.zeros((1, t)), np.cumsum(topics, axis=0)])
    count = np.r_[0, np.cumsum(position >= 0)]
    key = user * (int(step.max()) + lag + 1) + step  # sorted, and key - lag stays inside its user's range
    first = np.searchsorted(user, user, side="left")
    end = np.maximum(np.searchsorted(key, key - lag, side="right"), first)
    mean = (total[end] - total[first]) / np.maximum(count[end] - count[first], 1)[:, None]
    out = np.empty_like(mean)
    out[order] = mean
    return out


#: The log's columns that :func:`auxiliary_statistics` reads.
_AUXILIARY_COLUMNS = ("user", "step", "position", "conversion", "slate_features", "history", "user_features")


def _widened(logs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The log's half-float arrays that the auxiliary statistics read, as float32 (no copy
    if they are already)."""
    return {key: np.asarray(logs[key], dtype=np.float32) for key in ("slate_features", "history")}


def auxiliary_statistics(logs: dict[str, np.ndarray], num_topics: int, start: np.ndarray | None = None
                         ) -> tuple[np.ndarray, list[str]]:
    """The auxiliary statistics of a log (values, names): the choice logit's coefficients,
    the conversion logit's, the session-end hazard's, mean rows per user, CTR and drift
    summaries. Computed the same way on the logs and on the simulated ones (the auxiliary
    models need not be right, only informative: the conditional logit serves cascade worlds
    too). ``start``: the statistics of a similar log, where the auxiliary fits start (a speed
    hint only: they run to their optimum, so the answer does not depend on it)."""
    t = num_topics
    # the stored half floats widened once, for every use below
    logs = {**logs, **_widened(logs)}
    terms = _slate_terms(logs, t)
    n, k = terms["appeal"].shape
    distant = np.einsum("nkt,nt->nk", logs["slate_features"][..., :t],
                        distant_clicks(logs, t).astype(np.float32))
    x = np.concatenate([_choice_features(terms), distant[..., None]], axis=2)
    position = logs["position"].astype(np.int64)
    begin = (lambda a, b: None) if start is None else (lambda a, b: start[a:b])
    choice, _ = choice_logit(x, position, start=begin(0, 5 + k))
    names = ["choice/intercept", "choice/declared", "choice/appeal", "choice/recent_clicks",
             "choice/older_clicks", "choice/distant_clicks", *(f"choice/position_{j}" for j in range(1, k))]
    clicked = position >= 0
    rows = np.flatnonzero(clicked)
    at = position[rows]
    cx = np.stack([np.ones(len(rows)), terms["declared"][rows, at], terms["appeal"][rows, at],
                   terms["price"][rows, at], terms["popularity"][rows, at]], axis=1)
    conversion = _logistic(cx, logs["conversion"][rows].astype(float), begin(5 + k, 10 + k))
    names += ["conversion/intercept", "conversion/declared", "conversion/appeal", "conversion/price",
              "conversion/popularity"]
    # session ends: the last logged row of each user (ended or cut by the end of logging,
    # which the simulated logs repeat)
    users = logs["user"]
    last = last_rows(logs)
    hist = logs["history"]
    valid, hist_click = hist[..., -1], hist[..., -3]
    no_clicks = (valid * (1 - hist_click)).sum(1) / hist.shape[1]
    clicked_appeal = (hist[..., t] * hist_click * valid).sum(1) / np.maximum((hist_click * valid).sum(1), 1)
    progress = logs["user_features"][:, -1].astype(np.float32)
    hazard_x = np.stack([np.ones(n), no_clicks, clicked_appeal, progress], axis=1)
    hazard = _logistic(hazard_x, last.astype(float), begin(10 + k, 14 + k))
    names += ["session_end/intercept", "session_end/recent_no_clicks", "session_end/clicked_appeal",
              "session_end/progress"]
    step = logs["step"]
    declared_click = (terms["declared"][rows, at] > 0.5).astype(float)
    early, late = step[rows] < 20, step[rows] >= 40
    last_entry = hist[:, -1]
    follow = np.flatnonzero(clicked & (last_entry[:, t + 3] > 0) & (last_entry[:, -1] > 0))
    previous = last_entry[follow, :t]
    current = logs["slate_features"][follow, position[follow], :t]
    cosine = (previous * current).sum(1) / np.maximum(
        np.linalg.norm(previous, axis=1) * np.linalg.norm(current, axis=1), 1e-9)
    _, per_user = np.unique(users, return_counts=True)
    extra = np.array([n / len(per_user), np.log(per_user).mean(), (per_user >= 10).mean(),
                      (per_user >= 40).mean(), (per_user >= 100).mean(), clicked.mean(),
                      declared_click[early].mean() if early.any() else 0.0,
                      declared_click[late].mean() if late.any() else 0.0,
                      cosine.mean() if len(cosine) else 0.0])
    names += ["rows_per_user", "log_rows_per_user", "users_with_10_rows", "users_with_40_rows",
              "users_with_100_rows", "ctr", "drift/declared_share_early", "drift/declared_share_late",
              "drift/consecutive_click_topic_cosine"]
    return np.concatenate([choice, conversion, hazard, extra]), names


def choice_family(logs: dict[str, np.ndarray], num_topics: int) -> tuple[str, dict[str, float]]:
    """``"mnl"`` or ``"cascade"``: the auxiliary choice model that explains the logged clicks
    better (mean log-likelihood per slate on 20,000 logged slates), with both log-likelihoods."""
    rows = np.random.default_rng(0).permutation(len(logs["user"]))[:20_000]  # enough to tell them apart
    terms = _slate_terms({key: value[rows] for key, value in logs.items()}, num_topics)
    n, k = terms["appeal"].shape
    x = _choice_features(terms)
    position = logs["position"][rows].astype(np.int64)
    mnl = -choice_logit(x, position, cascade=False)[1]
    cascade = -choice_logit(x, position, cascade=True)[1]
    return ("cascade" if cascade > mnl else "mnl"), {"mnl": mnl, "cascade": cascade}


# --------------------------------------------------------------------------------------------
# The fitted catalog
# --------------------------------------------------------------------------------------------

#: The interest proxy before a fit measures one: ``0 + 0.75 x`` the declared-topic match, no
#: residual spread.
PRIOR_PROXY = (0.0, 0.75, 0.0)
#: The range a stored proxy is checked against: level ``a`` and slope ``b`` of ``a + b x match``,
#: and the residual standard deviation ``r`` of the affinity around it.
PROXY_RANGE = ((-1.0, 1.0), (-2.0, 2.0), (0.0, 1.0))


@dataclass
class ItemTable:
    """The items of a log, known by their features: topic vector, appeal, price (from the
    price feature), observed popularity, and per item its clicks, conversions and the mean and
    standard deviation over its clicks of the clicking user's declared-topic match, and the
    proxy ``(a, b, r)`` that maps a match to the affinity at a click, ``a + b x match`` with a
    residual standard deviation ``r`` (the quality posterior's interest proxy;
    :func:`affinity_proxy`)."""

    topics: np.ndarray
    appeal: np.ndarray
    price: np.ndarray
    popularity: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    declared_at_click: np.ndarray
    declared_sd_at_click: np.ndarray
    index: np.ndarray = field(repr=False)  #: (n, k) item row of every shown slot
    affinity_proxy: tuple[float, float, float] = PRIOR_PROXY


def _clicked(logs: dict[str, np.ndarray], index: np.ndarray, num_topics: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log's rows with a click, the clicked item's table row (``index``: every shown
    slot's) and the clicking user's declared-topic match with it (float32)."""
    rows = np.flatnonzero(logs["position"] >= 0)
    position = logs["position"][rows].astype(np.int64)
    shown = logs["slate_features"][rows, position, :num_topics].astype(np.float32)
    match = (shown * logs["user_features"][rows, :num_topics].astype(np.float32)).sum(1)
    return rows, index[rows, position], match


def item_table(logs: dict[str, np.ndarray], num_topics: int, price_min: float, price_max: float) -> ItemTable:
    """Distinct items of the log by their static features (topic, appeal, price feature)."""
    from recsim_gym.agents.bandits import item_keys

    shown = logs["slate_features"].astype(np.float32)
    keys = item_keys(shown, num_topics)
    flat_keys = keys.ravel()
    unique, first, inverse = np.unique(flat_keys, return_index=True, return_inverse=True)
    flat = shown.reshape(-1, shown.shape[-1])
    t = num_topics
    topics = flat[first, :t].astype(np.float64)
    topics = np.maximum(topics, 0.0)
    topics /= np.maximum(topics.sum(1, keepdims=True), 1e-12)
    popularity = np.zeros(len(unique))
    np.maximum.at(popularity, inverse, flat[:, t + 2].astype(np.float64))
    index = inverse.reshape(keys.shape)
    rows, clicked_items, match = _clicked(logs, index, t)
    clicks = np.bincount(clicked_items, minlength=len(unique)).astype(float)
    conversions = np.bincount(clicked_items, weights=logs["conversion"][rows].astype(float),
                              minlength=len(unique))
    declared_at_click = (np.bincount(clicked_items, weights=match, minlength=len(unique))
                         / np.maximum(clicks, 1))
    second = np.bincount(clicked_items, weights=match.astype(np.float64) ** 2, minlength=len(unique))
    spread = np.sqrt(np.clip(second / np.maximum(clicks, 1) - declared_at_click ** 2, 0.0, 0.25))
    price_feature = np.clip(flat[first, t + 1].astype(np.float64), 0.0, 1.0)
    return ItemTable(topics=topics, appeal=np.clip(flat[first, t].astype(np.float64), 0.0, 1.0),
                     price=price_of(price_feature, price_min, price_max),
                     popularity=np.clip(popularity / max(popularity.max(), 1e-12), 1e-9, 1.0),
                     clicks=clicks, conversions=conversions, declared_at_click=declared_at_click,
                     declared_sd_at_click=spread, index=index)


def quality_log_likelihood(items: ItemTable, params: Any, price_feature: np.ndarray) -> np.ndarray:
    """Each item's log-likelihood of its clicks' conversions on the quality grid (``(items,
    grid)``, up to a constant per item) under ``params``' conversion model. The interest at a
    click is approximated by ``a + b x`` the clicking user's declared-topic match, plus a latent
    residual of standard deviation ``r`` (``items.affinity_proxy``; before a fit measures it,
    :data:`PRIOR_PROXY`: favourite topics' interest averages 0.75, the others' 0, no residual).
    The sum over an item's clicks is taken by two-point quadrature at the mean match +- its
    standard deviation, exact in the first three moments of the match (the mean alone would put
    the mean interest inside the logistic: a Jensen gap); at each point a click converts with
    the mean probability over the residual's two points, as :func:`conversion_fit` reads it."""
    level, slope, residual = items.affinity_proxy
    per_match = params.conversion_affinity * slope  # the logit's change per unit of declared match
    centre = (params.conversion_bias + params.conversion_affinity * level
              + per_match * items.declared_at_click[:, None]
              + params.conversion_quality * _GRID[None, :] - params.conversion_price * price_feature[:, None])
    spread = per_match * items.declared_sd_at_click[:, None]
    if residual == 0.0:
        softplus = 0.5 * (np.logaddexp(0.0, centre + spread) + np.logaddexp(0.0, centre - spread))
        # log p = x - softplus(x) and log (1 - p) = -softplus(x), summed over the clicks
        return items.conversions[:, None] * centre - items.clicks[:, None] * softplus
    latent = params.conversion_affinity * residual
    log_p = log_q = 0.0
    for x in (centre - spread, centre + spread):
        # log of the mean of sigmoid (and of 1 - sigmoid) at x -+ latent, half for each match point
        log_p = log_p + 0.5 * (np.logaddexp(-np.logaddexp(0.0, latent - x), -np.logaddexp(0.0, -latent - x))
                               - _LOG_2)
        log_q = log_q + 0.5 * (np.logaddexp(-np.logaddexp(0.0, x - latent), -np.logaddexp(0.0, x + latent))
                               - _LOG_2)
    return items.conversions[:, None] * log_p + (items.clicks - items.conversions)[:, None] * log_q


def affinity_proxy(logs: dict[str, np.ndarray], interest: np.ndarray, topics: np.ndarray,
                   min_clicks: int = 100) -> tuple[float, float, float]:
    """Least squares ``affinity ~ a + b x match`` over the clicks of a simulated log whose users'
    latent ``interest`` (rows, T) before each step is known, and the residuals' standard
    deviation ``r``: ``affinity`` is the interest's dot product with the clicked item's topics
    (``topics``: the catalog's, by ``slate_items``), the conversion model's input; ``match`` is
    the declared-topic match that a real log shows. Fewer than ``min_clicks`` clicks, or matches
    without spread, give :data:`PRIOR_PROXY`."""
    t = topics.shape[1]
    rows = np.flatnonzero(logs["position"] >= 0)
    position = logs["position"][rows].astype(np.int64)
    if len(rows) < min_clicks:
        return PRIOR_PROXY
    clicked = logs["slate_items"][rows, position]
    affinity = (topics[clicked] * interest[rows]).sum(1, dtype=np.float64)
    shown = logs["slate_features"][rows, position, :t].astype(np.float32)
    match = (shown * logs["user_features"][rows, :t].astype(np.float32)).sum(1).astype(np.float64)
    if match.std() < 1e-6:
        return PRIOR_PROXY
    slope, level = np.polyfit(match, affinity, 1)
    residual = affinity - (level + slope * match)  # sd <= 1: interests and affinities are in [-1, 1]
    return float(level), float(slope), float(residual.std())


class _InterestRecorder:
    """A simulator that keeps its users' latent interest before every step (for
    :func:`affinity_proxy`); everything else is the wrapped simulator's."""

    def __init__(self, sim: Any) -> None:
        self._sim, self.interest = sim, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sim, name)

    def step(self, state: Any, slates: np.ndarray, *args: Any) -> Any:
        self.interest.append(np.array(state.interest, dtype=np.float32))
        return self._sim.step(state, slates, *args)


def _quality_posterior(items: ItemTable, params: Any, price_feature: np.ndarray) -> np.ndarray:
    """Each item's posterior of quality on the grid (``(items, grid)``, unnormalised, its largest
    value 1): :func:`quality_log_likelihood` times the default family's prior given the appeal
    (:func:`item_quality`)."""
    # in log space throughout: an item with many clicks whose likelihood peaks outside its
    # prior's support (clickbait converting like a good item) must not underflow to zero
    log_post = quality_log_likelihood(items, params, price_feature) + _quality_log_prior(items, params)
    return np.exp(log_post - log_post.max(1, keepdims=True))


def item_quality(items: ItemTable, params: Any, price_feature: np.ndarray, seed: Any = 0) -> np.ndarray:
    """A draw of each item's quality from its posterior given its clicks and conversions
    (:func:`quality_log_likelihood`), with the default family's prior given the item's appeal:
    an item at or above ``clickbait_appeal_min`` is clickbait, quality uniform on [0,
    ``clickbait_quality_max``], the others ``Beta(quality_alpha, quality_beta)`` (the prior is
    the generator's, not learned: a learned prior would let the imputed qualities absorb any
    conversion weights). ``seed`` picks the draw (the fit's catalog is seed 0)."""
    post = _quality_posterior(items, params, price_feature)
    cdf = np.cumsum(post, axis=1)
    cdf /= cdf[:, -1:]
    # a draw from each item's posterior (inverse CDF at a fixed uniform per item, so the
    # catalog moves smoothly with the Params): posterior means would narrow the spread of
    # quality, and a policy that seeks quality would find less of it than in the logged world
    u = np.random.default_rng(seed).random(len(items.appeal))
    index = np.minimum((cdf < u[:, None]).sum(1), len(_GRID) - 1)
    low = np.where(index > 0, np.take_along_axis(cdf, np.maximum(index - 1, 0)[:, None], 1)[:, 0], 0.0)
    high = np.take_along_axis(cdf, index[:, None], 1)[:, 0]
    within = np.clip((u - low) / np.maximum(high - low, 1e-12), 0.0, 1.0)
    step = _GRID[1] - _GRID[0]
    return np.clip(_GRID[index] + (within - 0.5) * step, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Session ends: the churn fields by their exact likelihood
# --------------------------------------------------------------------------------------------

#: The fields behind session ends. :func:`fit_world` estimates them by the likelihood of the
#: logged session ends (:func:`session_end_fit`) after the conversion fields and before the
#: indirect inference fits the rest: the auxiliary statistics say little about them (docs/fit.md).
CHURN_FIELDS = ("churn_base", "churn_scale", "satisfaction_rate", "no_click_penalty")
_CHURN_AT = _places(CHURN_FIELDS)


@dataclass
class SessionEnds:
    """A log's rows in replay order (by user, then step), with what the session-end likelihood
    reads: where a user starts, the table row of the clicked item (-1: no click), whether the
    row's churn outcome is known (not the last row of a user cut by the end of logging or at
    ``max_steps``), and whether the user left after it."""

    first: np.ndarray
    item: np.ndarray
    known: np.ndarray
    left: np.ndarray


def session_ends(logs: dict[str, np.ndarray], index: np.ndarray, batch_size: int, max_steps: int
                 ) -> SessionEnds:
    """:class:`SessionEnds` of ``logs`` (``index``: the item table's row of every shown slot).

    With a ``terminated`` column (``generate_logs`` writes one; ``recsim logs convert`` takes
    one) every row's outcome is known, in any row order: the user left after a marked row and
    stayed after any other, including a last row that logging stopped at. Without one, the
    rows must be in time order with ``batch_size`` users logged at once (older
    ``generate_logs`` files): the users in the last ``batch_size`` rows (and a tenth more, for
    a last step that is not full) were still active when logging stopped, so their last rows,
    and last rows at ``max_steps``, are left out as unknown."""
    user, step = logs["user"], logs["step"]
    order = np.lexsort((step, user))
    sorted_user = user[order]
    first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    last = np.r_[sorted_user[1:] != sorted_user[:-1], True]
    position = logs["position"][order].astype(np.int64)
    item = np.where(position >= 0, index[order, np.maximum(position, 0)], -1)
    if "terminated" in logs:
        ended = logs["terminated"][order].astype(bool)
        return SessionEnds(first=first, item=item.astype(np.int64), known=np.ones_like(ended), left=ended)
    tail = int(np.ceil(1.1 * batch_size))
    cut = np.isin(sorted_user, user[-tail:])
    known = ~(last & (cut | (step[order] >= max_steps - 1)))
    return SessionEnds(first=first, item=item.astype(np.int64), known=known, left=last & known)


@njit(cache=True)
def _session_end_terms(first, item, known, left, quality, initial, theta):  # pragma: no cover - numba
    """Negative log-likelihood of the session ends, its gradient and the Fisher information in
    ``theta`` = (churn_base, churn_scale, satisfaction_rate, no_click_penalty): each row's
    satisfaction replayed as the kernel moves it (``s += rate (q - s)`` on a click, ``s *= 1 -
    penalty`` otherwise) from ``initial[i]`` at a user's first row ``i``, then ``P(leave) =
    base + scale (1 - s)^2``."""
    base, scale, rate, penalty = theta[0], theta[1], theta[2], theta[3]
    nll = 0.0
    grad = np.zeros(4)
    info = np.zeros((4, 4))
    dh = np.zeros(4)
    s = d_rate = d_penalty = 0.0
    for i in range(first.shape[0]):
        if first[i]:
            s, d_rate, d_penalty = initial[i], 0.0, 0.0
        if item[i] >= 0:
            q = quality[item[i]]
            d_rate = q - s + (1.0 - rate) * d_rate
            d_penalty = (1.0 - rate) * d_penalty
            s += rate * (q - s)
        else:
            d_rate = (1.0 - penalty) * d_rate
            d_penalty = -s + (1.0 - penalty) * d_penalty
            s *= 1.0 - penalty
        if not known[i]:
            continue
        gap = 1.0 - s
        h = min(max(base + scale * gap * gap, 1e-12), 1.0 - 1e-12)
        dh[0], dh[1] = 1.0, gap * gap
        dh[2], dh[3] = -2.0 * scale * gap * d_rate, -2.0 * scale * gap * d_penalty
        if left[i]:
            nll -= np.log(h)
            w = -1.0 / h
        else:
            nll -= np.log(1.0 - h)
            w = 1.0 / (1.0 - h)
        for a in range(4):
            grad[a] += w * dh[a]
            for b in range(4):
                info[a, b] += dh[a] * dh[b] / (h * (1.0 - h))
    return nll, grad, info


def _session_end_args(ends: SessionEnds, quality: np.ndarray, initial: float | np.ndarray) -> tuple:
    """:func:`_session_end_terms`' arguments before ``theta`` (``initial``: one satisfaction for
    every user, or each row's user's, in the order of ``ends``)."""
    start = np.broadcast_to(np.asarray(initial, np.float64), ends.first.shape)
    return (ends.first, ends.item, ends.known, ends.left, np.asarray(quality, np.float64),
            np.ascontiguousarray(start))


def session_end_information(ends: SessionEnds, quality: np.ndarray, initial: float | np.ndarray,
                            theta: np.ndarray) -> np.ndarray:
    """The Fisher information (4 x 4, :data:`CHURN_FIELDS`) of the session ends at ``theta``,
    given the items' ``quality`` and the ``initial`` satisfaction (:func:`session_end_fit`)."""
    return _session_end_terms(*_session_end_args(ends, quality, initial), np.asarray(theta, np.float64))[2]


def session_end_fit(ends: SessionEnds, qualities: list[np.ndarray], initial: float | np.ndarray,
                    start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum likelihood of :data:`CHURN_FIELDS` from the logged session ends, each user's
    satisfaction replayed from the ``initial`` satisfaction and the items' qualities, from
    ``start`` inside the fields' search bounds (L-BFGS-B). The qualities are not known, only
    their posteriors: ``qualities`` are draws from them (:func:`item_quality`), the likelihood
    is maximised for each, and Rubin's rules combine the estimates (their mean; covariance
    the mean inverse Fisher information plus ``1 + 1/M`` times the spread between draws, so
    the intervals carry what the log leaves open about the qualities)."""
    bounds = [FIT_FIELDS[name] for name in CHURN_FIELDS]
    low, high = np.array(bounds).T
    x0 = np.clip(start, low + 1e-3 * (high - low), high - 1e-3 * (high - low))
    estimates, within = [], []
    for quality in qualities:
        args = _session_end_args(ends, quality, initial)

        def objective(theta: np.ndarray, args: tuple = args) -> tuple[float, np.ndarray]:
            nll, grad, _ = _session_end_terms(*args, np.asarray(theta, np.float64))
            return nll, grad

        result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds)
        estimates.append(result.x)
        within.append(np.linalg.pinv(_session_end_terms(*args, result.x)[2]))
    estimates = np.array(estimates)
    between = np.cov(estimates, rowvar=False) if len(estimates) > 1 else np.zeros((4, 4))
    return estimates.mean(0), np.mean(within, axis=0) + (1.0 + 1.0 / len(estimates)) * between


# --------------------------------------------------------------------------------------------
# Conversions: the conversion fields by their marginal likelihood
# --------------------------------------------------------------------------------------------

#: The conversion model's fields. :func:`fit_world` estimates them by the likelihood of the
#: logged conversions, each item's quality integrated over the default family's prior
#: (:func:`conversion_fit`): the auxiliary statistics cannot tell them apart from the imputed
#: qualities, which adapt to any conversion model (docs/fit.md).
CONVERSION_FIELDS = ("conversion_bias", "conversion_affinity", "conversion_quality", "conversion_price")
_CONVERSION_AT = _places(CONVERSION_FIELDS)


@dataclass
class ConversionClicks:
    """A log's clicks sorted by item: the clicked item's table row, the clicking user's
    declared-topic match with it, and whether the click converted (0/1)."""

    item: np.ndarray
    match: np.ndarray
    converted: np.ndarray


def conversion_clicks(logs: dict[str, np.ndarray], index: np.ndarray, num_topics: int) -> ConversionClicks:
    """:class:`ConversionClicks` of ``logs`` (``index``: the item table's row of every shown
    slot); the match is the one :func:`item_table` averages per item."""
    rows, item, match = _clicked(logs, index, num_topics)
    order = np.argsort(item, kind="stable")
    return ConversionClicks(item=item[order].astype(np.int64), match=match[order].astype(np.float64),
                            converted=logs["conversion"][rows][order].astype(np.float64))


def _quality_log_prior(items: ItemTable, params: Any) -> np.ndarray:
    """The default family's log prior of each item's quality on the grid (``(items, grid)``,
    normalised; -inf outside a clickbait item's support), given its appeal."""
    from scipy.stats import beta

    regular = beta.pdf(np.clip(_GRID, 1e-6, 1 - 1e-6), params.quality_alpha, params.quality_beta)
    clickbait = (_GRID <= params.clickbait_quality_max).astype(float)
    prior = np.where((items.appeal >= params.clickbait_appeal_min)[:, None], clickbait / clickbait.sum(),
                     regular / regular.sum())
    with np.errstate(divide="ignore"):
        return np.log(prior)


@njit(cache=True, inline="always")
def _log_sigmoids(x):  # pragma: no cover - numba
    """``log sigmoid(x)``, ``log (1 - sigmoid(x))``, ``sigmoid(x)`` and ``1 - sigmoid(x)``, stably."""
    if x > 0.0:
        e = np.exp(-x)
        return -np.log1p(e), -x - np.log1p(e), 1.0 / (1.0 + e), e / (1.0 + e)
    e = np.exp(x)
    return x - np.log1p(e), -np.log1p(e), e / (1.0 + e), 1.0 / (1.0 + e)


@njit(cache=True, inline="always")
def _two_point(x, spread, a, residual):  # pragma: no cover - numba
    """The mean ``p`` of ``sigmoid`` at ``x - spread`` and ``x + spread``, ``log p``, ``log (1 -
    p)``, ``1 - p``, and ``p``'s derivatives in ``x`` and in the affinity weight (the two points'
    affinities ``a -+ residual``)."""
    lp_low, lq_low, p_low, q_low = _log_sigmoids(x - spread)
    lp_high, lq_high, p_high, q_high = _log_sigmoids(x + spread)
    top = max(lp_low, lp_high)
    log_p = top + np.log1p(np.exp(-abs(lp_low - lp_high))) - _LOG_2
    top = max(lq_low, lq_high)
    log_q = top + np.log1p(np.exp(-abs(lq_low - lq_high))) - _LOG_2
    d_low, d_high = 0.5 * p_low * q_low, 0.5 * p_high * q_high
    return (log_p, log_q, 0.5 * (p_low + p_high), 0.5 * (q_low + q_high), d_low + d_high,
            d_low * (a - residual) + d_high * (a + residual))


@njit(cache=True)
def _conversion_terms(item, match, converted, price_feature, log_prior, grid, theta, level, slope,
                      residual):  # pragma: no cover - numba
    """Negative log marginal likelihood of the logged conversions and its gradient in ``theta``
    = (bias, affinity, quality, price): each click converts with ``sigmoid(bias + affinity a +
    quality q - price price_feature)`` averaged over its latent affinity ``a = level + slope match
    +- residual`` (two-point quadrature), and each item's ``q`` is summed out over ``grid`` with
    the item's ``log_prior`` (clicks sorted by item)."""
    bias, affinity, quality, price = theta[0], theta[1], theta[2], theta[3]
    g_count = grid.shape[0]
    ll = np.zeros(g_count)
    dll = np.zeros((g_count, 4))
    weights = np.zeros(g_count)
    nll = 0.0
    grad = np.zeros(4)
    n = item.shape[0]
    i = 0
    while i < n:
        it = item[i]
        ll[:] = 0.0
        dll[:] = 0.0
        pf = price_feature[it]
        j = i
        while j < n and item[j] == it:
            a = level + slope * match[j]
            centre = bias + affinity * a - price * pf
            y = converted[j]
            for g in range(g_count):
                x = centre + quality * grid[g]
                if residual == 0.0:
                    _, log_q, p, _ = _log_sigmoids(x)
                    ll[g] += y * x + log_q  # log p = x - softplus(x), log (1 - p) = -softplus(x)
                    r = y - p
                    dll[g, 0] += r
                    dll[g, 1] += r * a
                    dll[g, 2] += r * grid[g]
                    dll[g, 3] -= r * pf
                    continue
                # the affinity's residual is latent: the click converts with the mean of the
                # probabilities at x -+ affinity residual (two-point quadrature)
                log_p, log_q, p, q, d, d_affinity = _two_point(x, affinity * residual, a, residual)
                ll[g] += log_p if y > 0.5 else log_q
                w = 1.0 / p if y > 0.5 else -1.0 / q
                dll[g, 0] += w * d
                dll[g, 1] += w * d_affinity
                dll[g, 2] += w * d * grid[g]
                dll[g, 3] -= w * d * pf
            j += 1
        top = -np.inf
        for g in range(g_count):
            weights[g] = ll[g] + log_prior[it, g]
            top = max(top, weights[g])
        total = 0.0
        for g in range(g_count):
            weights[g] = np.exp(weights[g] - top)
            total += weights[g]
        nll -= top + np.log(total)
        for g in range(g_count):
            for d in range(4):
                grad[d] -= weights[g] / total * dll[g, d]
        i = j
    return nll, grad


def conversion_fit(clicks: ConversionClicks, items: ItemTable, params: Any, price_feature: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Maximum likelihood of :data:`CONVERSION_FIELDS` from the logged conversions, from
    ``params``' values (L-BFGS-B inside the search bounds), and its covariance (the inverse of
    the observed information, by differences of the exact gradient). Each click's interest is
    ``items.affinity_proxy`` of its declared-topic match, with its residual spread (measured by
    the fit in a simulated world); each item's quality is integrated over the default family's prior given its
    appeal, so the qualities cannot absorb the conversion model as imputed ones do."""
    level, slope, residual = (float(v) for v in items.affinity_proxy)
    args = (clicks.item, clicks.match, clicks.converted, np.asarray(price_feature, np.float64),
            np.ascontiguousarray(_quality_log_prior(items, params)), _GRID)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        return _conversion_terms(*args, np.asarray(theta, np.float64), level, slope, residual)

    bounds = [FIT_FIELDS[name] for name in CONVERSION_FIELDS]
    start = np.array([getattr(params, name) for name in CONVERSION_FIELDS], dtype=float)
    theta = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    information = np.zeros((4, 4))
    for d in range(4):
        h = np.zeros(4)
        h[d] = 1e-4 * (1.0 + abs(theta[d]))
        information[:, d] = (objective(theta + h)[1] - objective(theta - h)[1]) / (2.0 * h[d])
    return theta, np.linalg.pinv((information + information.T) / 2.0)


#: The columns of a fitted item table that keep the evidence behind each item's quality (its
#: clicks and conversions in the log, the mean and standard deviation of the declared-topic
#: match at those clicks, its price feature), so that worlds drawn from the fit can redraw the
#: qualities too.
ITEM_EVIDENCE = ("clicks", "conversions", "declared_at_click", "declared_sd_at_click", "price_feature")


def item_evidence(catalog_file: str | Path) -> tuple[ItemTable, np.ndarray] | None:
    """The item table of a fitted catalog with its evidence columns (:data:`ITEM_EVIDENCE`) and
    the price feature, or None for a catalog without them. Checked (no pickles): all of them or
    none (a fit written before the match's standard deviation was kept reads as a spread of 0,
    the posterior it was made with), one finite value per item, ``0 <= conversions <= clicks``,
    the match's mean and the price feature in [0, 1] and its standard deviation in [0, 0.5], the
    interest proxy ``affinity_proxy`` inside :data:`PROXY_RANGE` (a fit written before it was
    measured reads as :data:`PRIOR_PROXY`, one written before its residual was, as residual 0),
    and the item table itself (:func:`load_item_table`);
    ``ValueError`` names the column."""
    columns = load_item_table(str(catalog_file))  # every column of the file, the table's checked
    present = [name for name in ITEM_EVIDENCE if name in columns]
    if not present:
        return None
    n = len(columns["appeal"])
    if present == [name for name in ITEM_EVIDENCE if name != "declared_sd_at_click"]:
        columns["declared_sd_at_click"] = np.zeros(n)  # written before f3d38e6: the mean match only
    elif len(present) != len(ITEM_EVIDENCE):
        raise ValueError(f"catalog_file {catalog_file}: evidence columns must be all of "
                         f"{list(ITEM_EVIDENCE)} or none, got {present}")
    for name in ITEM_EVIDENCE:
        if columns[name].shape != (n,) or not np.isfinite(columns[name]).all():
            raise ValueError(f"catalog_file {catalog_file}: {name} must be {n} finite values")
    clicks, conversions = columns["clicks"], columns["conversions"]
    if (conversions < 0).any() or (conversions > clicks).any():
        raise ValueError(f"catalog_file {catalog_file}: conversions must be in [0, clicks]")
    for name, high in (("declared_at_click", 1.0), ("declared_sd_at_click", 0.5), ("price_feature", 1.0)):
        if ((columns[name] < 0) | (columns[name] > high)).any():
            raise ValueError(f"catalog_file {catalog_file}: {name} must be in [0, {high:g}]")
    proxy = columns.get("affinity_proxy", np.array(PRIOR_PROXY))  # before the fit measured it
    if proxy.shape == (2,):  # written before the residual was measured: the posterior it was made with
        proxy = np.append(proxy, 0.0)
    bounds = np.array(PROXY_RANGE)
    if proxy.shape != (3,) or not ((bounds[:, 0] <= proxy) & (proxy <= bounds[:, 1])).all():
        raise ValueError(f"catalog_file {catalog_file}: affinity_proxy must be 3 values (2 before the "
                         f"residual), level in {list(PROXY_RANGE[0])}, slope in {list(PROXY_RANGE[1])} and "
                         f"residual in {list(PROXY_RANGE[2])}, got {proxy.tolist()}")
    table = ItemTable(topics=columns["topics"], appeal=columns["appeal"], price=columns["price"],
                      popularity=columns["popularity"], clicks=clicks, conversions=conversions,
                      declared_at_click=columns["declared_at_click"],
                      declared_sd_at_click=columns["declared_sd_at_click"], index=np.empty((0, 0), np.int64),
                      affinity_proxy=(float(proxy[0]), float(proxy[1]), float(proxy[2])))
    return table, columns["price_feature"]


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    """A fitted world: Params overrides (with the item table's file), 95% intervals per fitted
    field, the logged and fitted auxiliary statistics, and what the fit took."""

    overrides: dict[str, Any]
    intervals: dict[str, dict[str, float]]
    statistics: dict[str, dict[str, float]]
    choice_loglik: dict[str, float]
    seconds: float
    iterations: int
    rows: int
    #: The fitted fields' covariance (the sandwich behind ``intervals``; rows and columns in
    #: :data:`FIT_FIELDS` order, field units), or None for a file written without it.
    covariance: np.ndarray | None = None
    #: How the :data:`CHURN_FIELDS` were fitted: ``"session_ends"`` (their likelihood) or
    #: ``"statistics"`` (with the others, for a log that does not show its session ends).
    churn_fields: str = "session_ends"

    def params(self) -> Any:
        """The fitted world's Params."""
        return make_params("default", **self.overrides)

    def distance_to(self, params: Any, fields: Sequence[str] = tuple(FIT_FIELDS)) -> float:
        """The squared Mahalanobis distance of ``params``' values of ``fields`` (by default all
        fitted fields) from the fit under their block of :attr:`covariance`: chi-square with
        ``len(fields)`` degrees of freedom when ``params`` is the truth and the covariance is
        right (docs/fit.md)."""
        if self.covariance is None:
            raise ValueError("distance_to: this fit has no covariance (a file written before "
                             "recsim-fit/1 stored it); fit again")
        unknown = sorted(set(fields) - set(FIT_FIELDS))
        if unknown or not fields:
            raise ValueError(f"distance_to: fields must be a non-empty subset of {list(FIT_FIELDS)}, "
                             f"got unknown {unknown}")
        at = _places(fields)
        error = np.array([self.intervals[name]["value"] - getattr(params, name) for name in fields])
        return float(error @ np.linalg.solve(self.covariance[np.ix_(at, at)], error))

    def draw_params(self, n: int, seed: int = 0, catalog_dir: str | Path | None = None) -> list[Any]:
        """``n`` worlds drawn from the fit's uncertainty: field vectors from the normal with the
        fitted values as mean and :attr:`covariance`, each held inside its search bound
        (:data:`FIT_FIELDS`; a draw beyond it takes the bound). A policy's returns across them
        give the range of returns that the log cannot rule out
        (:func:`~recsim_gym.experiments.fit_report.return_interval`).

        With ``catalog_dir``, each world also gets its own item qualities, a fresh draw from
        every item's posterior under that world's conversion model (:func:`item_quality`),
        written there as ``items_draw<i>.npz``; without it, or for a catalog without
        :data:`ITEM_EVIDENCE`, every world keeps the fit's item table."""
        if self.covariance is None:
            raise ValueError("draw_params: this fit has no covariance (a file written before "
                             "recsim-fit/1 stored it); fit again")
        if n < 1:
            raise ValueError(f"draw_params: n must be >= 1, got {n}")
        mean = np.array([self.intervals[name]["value"] for name in FIT_FIELDS])
        draws = np.random.default_rng([seed, 27]).multivariate_normal(mean, self.covariance, size=n,
                                                                       method="eigh")
        base = self.params()
        worlds = [_with(base, theta) for theta in draws]
        evidence = item_evidence(base.catalog_file) if catalog_dir is not None and base.catalog_file else None
        if evidence is None:
            return worlds
        table, price_feature = evidence
        catalog_dir = Path(catalog_dir)
        catalog_dir.mkdir(parents=True, exist_ok=True)
        redrawn = []
        for i, params in enumerate(worlds):
            path = catalog_dir / f"items_draw{i}.npz"
            save_item_table(str(path), table.topics, table.appeal, table.price, table.popularity,
                            item_quality(table, params, price_feature, seed=[seed, i, 28]))
            redrawn.append(params.replace(catalog_file=str(path.resolve())))
        return redrawn


_LOW = np.array([b[0] for b in FIT_FIELDS.values()])
_HIGH = np.array([b[1] for b in FIT_FIELDS.values()])


def _vector(params: Any) -> np.ndarray:
    return np.array([float(getattr(params, name)) for name in FIT_FIELDS])


def _to_free(theta: np.ndarray) -> np.ndarray:
    """The search coordinates of field values: ``logit`` of their place in the bounds, so that
    Gauss-Newton steps never stick at a bound."""
    unit = np.clip((theta - _LOW) / (_HIGH - _LOW), 1e-4, 1 - 1e-4)
    return np.log(unit / (1 - unit))


def _from_free(z: np.ndarray) -> np.ndarray:
    return _LOW + (_HIGH - _LOW) / (1.0 + np.exp(-z))


def _with(base: Any, theta: np.ndarray) -> Any:
    values = {name: float(np.clip(v, *FIT_FIELDS[name])) for name, v in zip(FIT_FIELDS, theta, strict=True)}
    if values["churn_base"] + values["churn_scale"] > 1.0:
        values["churn_scale"] = 1.0 - values["churn_base"]
    return base.replace(**values)


#: Resamples of users behind the bootstrap covariance of the logged statistics. The seven
#: simulated-moment fields' covariance is a projection of it, and its inverse (what a joint
#: test of the fields, or a world drawn from the fit, depends on) comes out about
#: ``(R - 1) / (R - 9)`` too large from ``R`` resamples: 1.73 at 20, 1.09 at 100. On the slow
#: test's log of hidden world 2, 20 resamples put the truth at a squared Mahalanobis distance
#: of 39.8 over those seven fields (the 95% point is 14.1), 100 at 13.5 (docs/fit.md).
BOOTSTRAP_REPS = 100
#: Simulated logs that measure the conversion likelihood's bias at the fitted world
#: (:meth:`FitProblem.conversion_bias`; docs/fit.md).
CONVERSION_REPLICATES = 8
#: Draws of the imputed qualities whose spread of simulated statistics enters the intervals
#: (:meth:`FitProblem.draw_covariance`).
QUALITY_DRAWS = 8


class FitProblem:
    """The fit's objective: the log's auxiliary statistics, their bootstrap covariance, and the
    statistics of the log simulated under any candidate field vector ``theta`` (in
    :data:`FIT_FIELDS` order). ``fit_world`` minimises :meth:`distance`; scripts evaluate it at
    known worlds (``scripts/fit_recovery.py --diagnose``)."""

    def __init__(self, logs: dict[str, np.ndarray], meta: dict[str, Any] | None, out: str | Path,
                 bootstrap: int = BOOTSTRAP_REPS) -> None:
        meta = dict(meta or {})
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        n, k, f = logs["slate_features"].shape
        t = f - 3
        logging = meta.get("logging_policy", "epsilon_popularity")
        if logging not in SIMULATED_LOGGING:
            raise ValueError(f"logging_policy {logging!r}: a fit simulates the log's logging policy, one "
                             f"of {list(SIMULATED_LOGGING)} (set it in the log's meta)")
        self.logging, self.epsilon = logging, float(meta.get("epsilon", 0.3))
        self.batch = int(meta.get("batch_size", 500))
        max_steps = int(meta.get("max_steps", max(200, int(logs["step"].max()) + 1)))
        m = int(meta.get("num_candidates", logs["candidates"].shape[1] if "candidates" in logs
                         else max(int(logs["slate"].max()) + 1, k)))
        declared = int(np.round(logs["user_features"][:, :t].astype(np.float32).sum(1).max()))
        self.family, self.choice_loglik = choice_family(logs, t)
        self.base = make_params("default", num_topics=t, slate_size=k, num_candidates=m, max_steps=max_steps,
                                history_length=logs["history"].shape[1], declared_topics=max(declared, 1),
                                choice_model=self.family)
        self.rows, self.slate_size, self.num_topics, self.num_candidates = n, k, t, m
        self.items = item_table(logs, t, self.base.price_min, self.base.price_max)
        self.price_feature = price_feature_of(self.items.price, self.base.price_min, self.base.price_max)
        self.observed, self.names = auxiliary_statistics(logs, t)
        self.sigma = _bootstrap_covariance(logs, t, bootstrap, self.observed)
        self.weight = 1.0 / np.maximum(np.diag(self.sigma), 1e-12)
        #: None for a log that does not show its session ends (a converted table without a
        #: ``terminated`` column): then the churn fields are fitted with the others
        self.ends = (None if "terminated" not in logs and meta.get("session_ends") == "unknown"
                     else session_ends(logs, self.items.index, self.batch, max_steps))
        self.clicks = conversion_clicks(logs, self.items.index, t)
        self._tables = 0

    def world(self, theta: np.ndarray, draw: int = 0) -> Any:
        """The world of ``theta``: its fields, and the item qualities imputed under its
        conversion model (draw ``draw`` of :func:`item_quality`; a file per world: catalogs are
        cached by Params, file name included)."""
        params = _with(self.base, theta)
        table = self.out / f".items_{self._tables}.npz"
        self._tables += 1
        items = self.items
        save_item_table(str(table), items.topics, items.appeal, items.price, items.popularity,
                        item_quality(items, params, self.price_feature, seed=draw))
        return params.replace(catalog_file=str(table.resolve()), num_items=len(items.appeal))

    def simulate(self, theta: np.ndarray, draw: int = 0) -> np.ndarray:
        """The auxiliary statistics of the log simulated under ``theta`` (same users every time),
        with quality draw ``draw`` (the fit's own is 0)."""
        logged, _ = self._simulated_log(theta, draw=draw)
        return auxiliary_statistics(logged, self.num_topics, start=self.observed)[0]

    def _simulated_log(self, theta: np.ndarray, wrap: Any = None, replicate: int | None = None,
                       draw: int = 0) -> tuple[dict[str, np.ndarray], Any]:
        """The log simulated under ``theta`` and its simulator, wrapped by ``wrap`` when given:
        the fit's users and quality draw ``draw`` (0, the same every time, for the fit itself),
        or with ``replicate`` r, bias-correction log r's own users
        (:func:`seeds.fit_replicate_seed`) and draw r + 1."""
        draw, first_user, seed = ((draw, seeds.FIT_SIM_SEED, 0) if replicate is None
                                  else (replicate + 1, seeds.fit_replicate_seed(replicate), replicate + 1))
        params = self.world(theta, draw)
        sim = make_simulator(params=params)
        sim = wrap(sim) if wrap is not None else sim
        logged = generate_logs(n_steps=self.rows, batch_size=self.batch, sim=sim, policy=self.logging,
                               epsilon=self.epsilon, first_user=first_user, seed=seed)
        Path(params.catalog_file).unlink()  # read into the cached catalog already
        return logged, sim

    def calibrate(self, theta: np.ndarray) -> tuple[float, float, float]:
        """The interest proxy measured at ``theta``'s world (:func:`affinity_proxy` on the log
        that :meth:`simulate` would give there, with its users' latent interests), made the one
        the imputed catalogs use from now on; returns it. The fit measures it once, at its
        starting world (a second fit stage from the first optimum with the proxy measured
        there was tried and not kept: docs/fit.md)."""
        logged, recorder = self._simulated_log(theta, _InterestRecorder)
        interest = np.concatenate(recorder.interest)[: self.rows]
        proxy = affinity_proxy(logged, interest, recorder.catalog.topics)
        self.items = replace(self.items, affinity_proxy=proxy)
        return proxy

    def session_end_fit(self, theta: np.ndarray, draws: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """:data:`CHURN_FIELDS` and their covariance by :func:`session_end_fit` on the log's
        session ends, with ``draws`` catalogs of qualities from their posteriors under
        ``theta``'s conversion model, from ``theta``'s churn fields."""
        params = _with(self.base, theta)
        qualities = [item_quality(self.items, params, self.price_feature, seed=[i, 29]) for i in range(draws)]
        start = np.array([getattr(params, name) for name in CHURN_FIELDS], dtype=float)
        return session_end_fit(self.ends, qualities, float(self.base.initial_satisfaction), start)

    def conversion_fit(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:data:`CONVERSION_FIELDS` and their covariance by :func:`conversion_fit` on the log's
        clicks, from ``theta``'s values, with the interest proxy measured so far."""
        return conversion_fit(self.clicks, self.items, _with(self.base, theta), self.price_feature)

    def conversion_bias(self, theta: np.ndarray, replicates: int = CONVERSION_REPLICATES
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The bias of :meth:`conversion_fit` at ``theta``: its mean estimate over ``replicates``
        logs simulated there (the log's size, batch and logging policy; each log its own users
        and its own draw of the imputed qualities), read exactly as the log is read (the same
        interest proxy), minus ``theta``'s conversion fields; and the covariance of that mean."""
        params = _with(self.base, theta)
        estimates, covariances = [], []
        for r in range(replicates):
            logged, _ = self._simulated_log(theta, replicate=r)
            items = item_table(logged, self.num_topics, self.base.price_min, self.base.price_max)
            items = replace(items, affinity_proxy=self.items.affinity_proxy)
            clicks = conversion_clicks(logged, items.index, self.num_topics)
            price_feature = price_feature_of(items.price, self.base.price_min, self.base.price_max)
            estimate, covariance = conversion_fit(clicks, items, params, price_feature)
            estimates.append(estimate)
            covariances.append(covariance)
        return np.mean(estimates, axis=0) - theta[_CONVERSION_AT], np.mean(covariances, axis=0) / replicates

    def draw_covariance(self, theta: np.ndarray, draws: int = QUALITY_DRAWS) -> np.ndarray:
        """The covariance of the simulated statistics at ``theta`` over draws of the imputed
        qualities (the fit's users each time): the noise of simulating with one draw, which the
        logged statistics' bootstrap over users does not hold."""
        simulated = [self.simulate(theta, draw) for draw in range(1, draws + 1)]
        return np.cov(np.array(simulated), rowvar=False)

    def distance(self, statistics: np.ndarray) -> float:
        """The weighted squared distance of ``statistics`` from the logged ones."""
        residual = self.observed - statistics
        return float(residual @ (self.weight * residual))


def fit_world(logs: dict[str, np.ndarray], meta: dict[str, Any] | None = None, out: str | Path = "fit",
              iterations: int = 12, bootstrap: int = BOOTSTRAP_REPS, progress: Any = None) -> FitResult:
    """Fit the default world family to ``logs`` (see the module docstring); writes the item
    table to ``out/items.npz`` and returns the fit. ``meta`` gives the logging policy
    (``logging_policy``, ``epsilon``), ``batch_size``, ``max_steps`` and ``num_candidates``
    of the log, each with a default (epsilon-popularity logging, epsilon 0.3, batch 500).
    ``batch_size`` is the number of users logged at once *in these logs*: for a share of a
    log's users, that share of it (:func:`~recsim_gym.experiments.fit_report.split_for_fit`)."""
    start = time.perf_counter()
    problem = FitProblem(logs, meta, out, bootstrap)
    observed, names, sigma, base = problem.observed, problem.names, problem.sigma, problem.base
    simulate, weight = problem.simulate, problem.weight
    # the interest proxy of the quality posterior, measured at the starting world (the default
    # family at the log's sizes) before any catalog is imputed
    theta = _vector(base)
    problem.calibrate(theta)
    # the conversion fields by the likelihood of the logged conversions (qualities summed out),
    # then the churn fields by that of the logged session ends (qualities drawn under the
    # fitted conversion model); the indirect inference fits the other fields with those held
    theta[_CONVERSION_AT], conversion_covariance = problem.conversion_fit(theta)
    held = list(_CONVERSION_AT)
    if problem.ends is not None:
        theta[_CHURN_AT], churn_covariance = problem.session_end_fit(theta)
        held += _CHURN_AT
    else:
        warnings.warn("the log does not show its session ends (no 'terminated' column): the churn "
                      "fields are fitted from the session-length statistics, which a log's cut "
                      "sessions bias (docs/logs.md)", stacklevel=2)
    moving = np.ones(len(theta), dtype=bool)
    moving[held] = False
    free = _to_free(theta)  # Gauss-Newton runs in the free coordinates
    simulated = simulate(theta)
    jacobian = _jacobian_free(free, simulated, lambda z: simulate(_from_free(z)), moving)
    free, simulated, jacobian, used = _gauss_newton(problem, free, simulated, jacobian, iterations, progress,
                                                    moving)
    items, out = problem.items, problem.out
    theta = _from_free(free)
    # the conversion likelihood reads each click's interest through the proxy, and comes out
    # biased (conversion_affinity 6-7% low at 10^6 rows in three worlds): its bias measured on
    # logs simulated at the fitted world is taken off (a parametric-bootstrap correction), and
    # the mean's noise added to the covariance
    bias, bias_covariance = problem.conversion_bias(theta)
    theta[_CONVERSION_AT] = np.clip(theta[_CONVERSION_AT] - bias, _LOW[_CONVERSION_AT], _HIGH[_CONVERSION_AT])
    conversion_covariance = conversion_covariance + bias_covariance
    if problem.ends is not None:  # the churn fields again, at the qualities of the corrected model
        theta[_CHURN_AT], churn_covariance = problem.session_end_fit(theta)
    simulated = simulate(theta)
    jacobian = _jacobian(theta, simulate)  # in field units, for the intervals
    final = _with(base, theta)
    table = out / "items.npz"
    save_item_table(str(table), items.topics, items.appeal, items.price, items.popularity,
                    item_quality(items, final, problem.price_feature),
                    extra={**{name: problem.price_feature if name == "price_feature" else getattr(items, name)
                              for name in ITEM_EVIDENCE}, "affinity_proxy": np.array(items.affinity_proxy)})
    # the indirect inference's sandwich for the other fields (the held fields' columns kept in
    # the Jacobian, so the intervals still carry what their collinearity leaves open), each
    # likelihood's for its own fields, no covariance between the blocks
    # the simulated statistics' noise at the fit: the users' (as the log's: sigma) and that of
    # simulating with one draw of the qualities, which stand in for the log's unknown ones
    covariance = _sandwich(jacobian, weight, sigma + problem.draw_covariance(theta))
    covariance[held, :] = 0.0
    covariance[:, held] = 0.0
    covariance[np.ix_(_CONVERSION_AT, _CONVERSION_AT)] = conversion_covariance
    if problem.ends is not None:
        covariance[np.ix_(_CHURN_AT, _CHURN_AT)] = churn_covariance
    covariance = (covariance + covariance.T) / 2  # exactly symmetric, as the file check wants
    se = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    intervals = {name: {"value": float(v), "se": float(e), "low": float(v - 1.96 * e),
                        "high": float(v + 1.96 * e)}
                 for name, v, e in zip(FIT_FIELDS, theta, se, strict=True)}
    overrides = {name: float(getattr(final, name)) for name in FIT_FIELDS}
    overrides.update({name: getattr(base, name) for name in (
        "num_topics", "slate_size", "num_candidates", "max_steps", "history_length", "declared_topics",
        "choice_model")}, num_items=len(items.appeal), catalog_file=str(table.resolve()))
    statistics = {name: {"logged": float(o), "fitted": float(s), "se": float(np.sqrt(v))}
                  for name, o, s, v in zip(names, observed, simulated, np.diag(sigma), strict=True)}
    return FitResult(overrides=overrides, intervals=intervals, statistics=statistics,
                     choice_loglik=problem.choice_loglik, seconds=time.perf_counter() - start,
                     iterations=used, rows=problem.rows, covariance=covariance,
                     churn_fields="statistics" if problem.ends is None else "session_ends")


def _gauss_newton(problem: FitProblem, free: np.ndarray, simulated: np.ndarray, jacobian: np.ndarray,
                  iterations: int, progress: Any, moving: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Levenberg-Marquardt steps on ``problem.distance`` from ``free`` (simulated statistics
    ``simulated``), Broyden updates of ``jacobian``, a fresh Jacobian once after 3 failed steps;
    returns the point, its statistics, the Jacobian and the iterations used. Only the fields
    where ``moving`` is true move."""
    observed, weight, distance = problem.observed, problem.weight, problem.distance

    def simulate(z: np.ndarray) -> np.ndarray:
        return problem.simulate(_from_free(z))

    damping, used, stalled, refreshed = 1e-2, 0, 0, False
    for used in range(1, iterations + 1):
        objective = distance(simulated)
        active = jacobian[:, moving]
        gram = active.T @ (weight[:, None] * active)
        gradient = active.T @ (weight * (observed - simulated))
        step = np.zeros(len(free))
        step[moving] = np.clip(np.linalg.solve(gram + damping * np.diag(np.diag(gram) + 1e-9), gradient),
                               -2.0, 2.0)
        candidate = free + step
        trial = simulate(candidate)
        jacobian = jacobian + np.outer(trial - simulated - jacobian @ step, step) / max(step @ step, 1e-12)
        if distance(trial) < objective:
            free, simulated, damping, stalled = candidate, trial, damping / 3, 0
        else:
            damping, stalled = damping * 4, stalled + 1
        if progress is not None:
            progress(used, distance(simulated))
        if stalled >= 3:  # a fresh Jacobian once before giving up: Broyden's can drift
            if refreshed:
                break
            jacobian = _jacobian_free(free, simulated, simulate, moving)
            damping, stalled, refreshed = 1e-2, 0, True
    return free, simulated, jacobian, used


def _jacobian_free(z: np.ndarray, at: np.ndarray, simulate, moving: np.ndarray | None = None) -> np.ndarray:
    """Forward differences of the simulated statistics in the free coordinates (step 0.2); a
    column of zeros for a field not ``moving``."""
    columns = []
    for i in range(len(z)):
        if moving is not None and not moving[i]:
            columns.append(np.zeros_like(at))
            continue
        moved = z.copy()
        moved[i] += 0.2
        columns.append((simulate(moved) - at) / 0.2)
    return np.stack(columns, axis=1)


def _jacobian(theta: np.ndarray, simulate, step: float = 0.1) -> np.ndarray:
    """Central differences of the simulated statistics, +-``step`` of each field's search range
    (one-sided where a bound is nearer). A wide step: with one simulated log the statistics move
    by discrete events (a click, a churn), and small steps' noise inflates the Jacobian, which
    narrows the intervals (on three recovery worlds with 60,000-row logs a 3% forward step put
    14 of 45 fields outside their intervals, a 10% central step 6)."""
    columns = []
    for i in range(len(theta)):
        h = step * (_HIGH[i] - _LOW[i])
        low, high = theta.copy(), theta.copy()
        low[i], high[i] = max(theta[i] - h, _LOW[i]), min(theta[i] + h, _HIGH[i])
        columns.append((simulate(high) - simulate(low)) / (high[i] - low[i]))
    return np.stack(columns, axis=1)


def _sandwich(jacobian: np.ndarray, weight: np.ndarray, sigma: np.ndarray, ratio: float = 1.0) -> np.ndarray:
    """The simulated-method-of-moments covariance of the fitted fields (``ratio``: simulated
    over logged rows)."""
    gram = jacobian.T @ (weight[:, None] * jacobian)
    bread = np.linalg.pinv(gram)
    meat = jacobian.T @ (weight[:, None] * sigma * weight[None, :]) @ jacobian
    return (1.0 + 1.0 / ratio) * bread @ meat @ bread


def _bootstrap_covariance(logs: dict[str, np.ndarray], t: int, reps: int, start: np.ndarray) -> np.ndarray:
    """Covariance of the auxiliary statistics over resamples of users."""
    gen = np.random.default_rng(0)
    # the columns the statistics read, half floats widened once rather than in every resample
    logs = {**{key: logs[key] for key in _AUXILIARY_COLUMNS}, **_widened(logs)}
    users, inverse = np.unique(logs["user"], return_inverse=True)
    rows_of = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse))]
    draws = []
    for _ in range(reps):
        chosen = gen.integers(0, len(users), len(users))
        rows = np.concatenate([rows_of[bounds[u]:bounds[u + 1]] for u in chosen])
        resampled = {key: value[rows] for key, value in logs.items()}
        # resampled users get fresh ids so a user drawn twice counts as two users
        resampled["user"] = np.repeat(np.arange(len(chosen)), bounds[chosen + 1] - bounds[chosen])
        draws.append(auxiliary_statistics(resampled, t, start=start)[0])
    return np.cov(np.array(draws), rowvar=False)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def save_fit(result: FitResult, out: str | Path) -> Path:
    """Write ``out/world.json``: the format tag, the Params overrides (``catalog_file`` relative
    to the file), the intervals, the fitted fields' covariance, the statistics and the timing."""
    out = Path(out)
    path = out / "world.json"
    overrides = {**result.overrides, "catalog_file": Path(result.overrides["catalog_file"]).name}
    path.write_text(json.dumps({"format": FIT_FORMAT, "preset": "default", "overrides": overrides,
                                "intervals": result.intervals, "statistics": result.statistics,
                                "choice_loglik": result.choice_loglik, "seconds": result.seconds,
                                "iterations": result.iterations, "rows": result.rows,
                                "churn_fields": result.churn_fields,
                                "covariance": None if result.covariance is None
                                else np.asarray(result.covariance).tolist()}, indent=1))
    return path


def load_fit(path: str | Path) -> dict[str, Any]:
    """The Params overrides of a fitted world file (``world.json``), checked: JSON with the
    format tag, only Params fields, valid values, and an item table that loads and matches
    (``catalog_file`` is resolved against the file's folder). Runs no code from the files;
    raises ``ValueError`` naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a fitted-world file ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or data.get("format") != FIT_FORMAT:
        raise ValueError(f"{path}: not a {FIT_FORMAT} file (format: "
                         f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
    overrides = data.get("overrides")
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: 'overrides' must be a mapping of Params fields")
    overrides = dict(overrides)
    if overrides.get("catalog_file"):
        overrides["catalog_file"] = str((path.parent / overrides["catalog_file"]).resolve())
    try:
        params = make_params("default", **overrides)
        if params.catalog_file:
            load_item_table(params.catalog_file, params)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return overrides


def load_fit_result(path: str | Path) -> FitResult:
    """The whole fit in a fitted-world file: :func:`load_fit`'s checked overrides, and the
    intervals, statistics and covariance, checked too (every fitted field with a finite value
    and interval; the covariance square over :data:`FIT_FIELDS`, finite and symmetric).
    ``ValueError`` names what is wrong."""
    overrides = load_fit(path)
    data = json.loads(Path(path).read_text())
    intervals = data.get("intervals")
    if not isinstance(intervals, dict) or set(intervals) != set(FIT_FIELDS):
        raise ValueError(f"{path}: 'intervals' must give every fitted field ({', '.join(FIT_FIELDS)})")
    for name, row in intervals.items():
        if (not isinstance(row, dict) or set(row) != {"value", "se", "low", "high"}
                or not all(isinstance(v, int | float) and np.isfinite(v) for v in row.values())):
            raise ValueError(f"{path}: intervals.{name} must be finite numbers value, se, low, high")
    churn_fields = data.get("churn_fields", "session_ends")
    if churn_fields not in ("session_ends", "statistics"):
        raise ValueError(f"{path}: 'churn_fields' must be 'session_ends' or 'statistics', "
                         f"got {churn_fields!r}")
    if overrides.get("catalog_file"):
        try:
            item_evidence(overrides["catalog_file"])
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
    covariance = data.get("covariance")
    if covariance is not None:
        try:
            covariance = np.array(covariance, dtype=float)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: 'covariance' must be a matrix of numbers ({err})") from err
        d = len(FIT_FIELDS)
        if covariance.shape != (d, d):
            raise ValueError(f"{path}: 'covariance' must be {d} x {d} (FIT_FIELDS order), "
                             f"got shape {covariance.shape}")
        if not np.isfinite(covariance).all() or not np.allclose(covariance, covariance.T, atol=1e-12):
            raise ValueError(f"{path}: 'covariance' must be finite and symmetric")
    try:
        return FitResult(overrides=overrides, intervals=intervals,
                         statistics=dict(data.get("statistics") or {}),
                         choice_loglik=dict(data.get("choice_loglik") or {}),
                         seconds=float(data.get("seconds", 0.0)), iterations=int(data.get("iterations", 0)),
                         rows=int(data.get("rows", 0)), covariance=covariance, churn_fields=churn_fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
