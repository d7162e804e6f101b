"""Off-policy estimators of a slate policy's value from logged interactions.

Notation: logged interaction ``i`` shows slate ``A_i = (A_i1, ..., A_ik)`` in context ``x_i``
and earns reward ``r_i``; ``r_ij`` is the reward credited to position ``j`` (the click's, or its
conversion's, at the clicked position; 0 at the others); ``pi0`` logs, ``pi`` is the target;
``r_hat`` is a reward model. Names and formulas as the field uses them (Open Bandit Pipeline's
names), written here from the papers:

=========  =======================================================  ==========================
estimator  value                                                    unbiased when
=========  =======================================================  ==========================
IPS        ``1/n sum_i w_i r_i``, ``w_i = pi(A_i|x_i) / pi0(A_i|x_i)``  always (pi0 covers pi)
SNIPS      ``sum_i w_i r_i / sum_i w_i``                               asymptotically
DM         ``1/n sum_i E_{A~pi(x_i)} r_hat(x_i, A)``                   the reward model is right
DR         ``DM + 1/n sum_i w_i (r_i - r_hat(x_i, A_i))``              IPS or the model is right
IIPS       ``1/n sum_i sum_j r_ij pi(A_ij at j|x_i)/pi0(A_ij at j|x_i)``  r_ij depends on the item
                                                                    at j only (Li et al. 2018)
RIPS       ``1/n sum_i sum_j r_ij pi(A_i1..A_ij|x_i)/pi0(A_i1..A_ij|x_i)``  r_ij depends on items at
                                                                    1..j only: the cascade
                                                                    (McInerney et al. 2020)
PI         ``1/n sum_i r_i q_pi(x_i)^T Gamma(x_i)^+ 1_{A_i}``          the slate reward is a sum of
                                                                    (position, item) terms
                                                                    (Swaminathan et al. 2017)
=========  =======================================================  ==========================

``1_A`` indicates the (position, candidate) pairs of slate ``A``, ``q_pi(x) = E_pi[1_A]`` and
``Gamma(x) = E_pi0[1_A 1_A^T]`` (:mod:`recsim_gym.env.logging_policies`).

Over trajectories (users, horizon H steps from the start; ``rho_t = prod_{s<=t} w_s``):
trajectory-wise IS ``1/U sum_u rho_{H-1} sum_{t<H} r_t``; per-decision (step-wise) IS
``1/U sum_u sum_{t<H} rho_t r_t``; and per-decision doubly robust (Jiang and Li, 2016) with
the immediate reward model as its value model, ``1/U sum_u sum_{t<H} [rho_t (r_t - r_hat(x_t,
A_t)) + rho_{t-1} E_pi r_hat(x_t, .)]``: unbiased for any model, so its error says how much
the model leaves unexplained, not whether it is right.

Every estimate comes with a 95% normal interval whose standard error treats each user as a
cluster (interactions of one user are not independent); SNIPS's by the delta method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: One-step estimators, in report order.
ONE_STEP = ("IPS", "SNIPS", "DM", "DR", "IIPS", "RIPS", "PI")
#: Estimators over trajectories.
SEQUENTIAL = ("TIS", "PDIS", "DR-PD")
_Z = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """An estimate and its 95% interval."""

    value: float
    low: float
    high: float


@dataclass
class LoggedTerms:
    """What the estimators need of a log for one target policy: one row per interaction.

    ``weights`` and friends are target over logging probabilities; reward-model entries may be
    None (then DM, DR and DR-PD are not computed)."""

    user: np.ndarray  #: (n,) trajectory (user) of each row
    step: np.ndarray  #: (n,) step within the trajectory (0 = its first)
    reward: np.ndarray  #: (n,) r_i
    position_reward: np.ndarray  #: (n, k) r_ij
    slate_weight: np.ndarray  #: (n,) pi(A|x) / pi0(A|x)
    marginal_weight: np.ndarray  #: (n, k) pi(A_j at j|x) / pi0(A_j at j|x)
    prefix_weight: np.ndarray  #: (n, k) pi(A_1..A_j|x) / pi0(A_1..A_j|x)
    pi_weight: np.ndarray | None = None  #: (n,) q_pi^T Gamma^+ 1_A
    model_logged: np.ndarray | None = None  #: (n,) r_hat(x_i, A_i)
    model_target: np.ndarray | None = None  #: (n,) E_pi r_hat(x_i, .)

    def take(self, rows: np.ndarray | slice) -> LoggedTerms:
        """The rows ``rows`` (a sub-log)."""
        return LoggedTerms(**{name: None if value is None else value[rows]
                              for name, value in vars(self).items()})


def clustered_mean(terms: np.ndarray, clusters: np.ndarray) -> Estimate:
    """Mean of ``terms`` with a 95% interval from the cluster-robust standard error."""
    terms = np.asarray(terms, dtype=np.float64)
    n = len(terms)
    mean = float(terms.mean())
    _, index = np.unique(clusters, return_inverse=True)
    sums = np.bincount(index, weights=terms - mean)
    g = len(sums)
    if g < 2:
        return Estimate(mean, float("nan"), float("nan"))
    se = np.sqrt(g / (g - 1) * np.sum(sums**2)) / n
    return Estimate(mean, mean - _Z * se, mean + _Z * se)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, clusters: np.ndarray) -> Estimate:
    """``sum(num) / sum(den)`` with a delta-method, cluster-robust 95% interval."""
    total = float(denominator.sum())
    if total <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    value = float(numerator.sum()) / total
    linear = clustered_mean(numerator - value * denominator, clusters)  # mean ~0 by construction
    half = (linear.high - linear.value) * len(numerator) / total
    return Estimate(value, value - half, value + half)


def one_step(terms: LoggedTerms) -> dict[str, Estimate]:
    """Every one-step estimator of the target's expected reward per interaction."""
    w, r, users = terms.slate_weight, terms.reward, terms.user
    out = {
        "IPS": clustered_mean(w * r, users),
        "SNIPS": _ratio(w * r, w, users),
        "IIPS": clustered_mean((terms.marginal_weight * terms.position_reward).sum(1), users),
        "RIPS": clustered_mean((terms.prefix_weight * terms.position_reward).sum(1), users),
    }
    if terms.model_target is not None and terms.model_logged is not None:
        out["DM"] = clustered_mean(terms.model_target, users)
        out["DR"] = clustered_mean(terms.model_target + w * (r - terms.model_logged), users)
    if terms.pi_weight is not None:
        out["PI"] = clustered_mean(terms.pi_weight * r, users)
    return {name: out[name] for name in ONE_STEP if name in out}


def sequential(terms: LoggedTerms, horizon: int | None = None) -> dict[str, Estimate]:
    """Trajectory-wise IS, per-decision IS and per-decision DR of the expected sum of rewards
    over a user's first ``horizon`` steps (None: the whole lifetime). Rows must hold complete
    trajectories from step 0."""
    keep = np.ones(len(terms.user), dtype=bool) if horizon is None else terms.step < horizon
    t = terms.take(keep)
    order = np.lexsort((t.step, t.user))
    t = t.take(order)
    users, start = np.unique(t.user, return_index=True)
    lengths = np.diff(np.append(start, len(t.user)))
    index = np.repeat(np.arange(len(users)), lengths)  # trajectory of each row
    # rho_t = prod_{s<=t} w_s within each trajectory, through logs (a zero weight stays zero)
    zero = t.slate_weight <= 0
    cum_log = np.cumsum(np.log(np.where(zero, 1.0, t.slate_weight)))
    cum_zero = np.cumsum(zero)
    before_log = np.repeat(np.concatenate([[0.0], cum_log[start[1:] - 1]]), lengths)
    before_zero = np.repeat(np.concatenate([[0], cum_zero[start[1:] - 1]]), lengths)
    rho = np.where(cum_zero > before_zero, 0.0, np.exp(cum_log - before_log))
    previous = np.concatenate([[1.0], rho[:-1]])
    previous[start] = 1.0  # rho_{-1} = 1 at each trajectory's first step
    last = np.append(start[1:], len(t.user)) - 1
    returns = np.bincount(index, weights=t.reward)
    out = {"TIS": _per_user(rho[last] * returns),
           "PDIS": _per_user(np.bincount(index, weights=rho * t.reward))}
    if t.model_target is not None and t.model_logged is not None:
        terms_dr = rho * (t.reward - t.model_logged) + previous * t.model_target
        out["DR-PD"] = _per_user(np.bincount(index, weights=terms_dr))
    return out


def _per_user(values: np.ndarray) -> Estimate:
    """Mean over users (independent) with a 95% normal interval."""
    mean = float(values.mean())
    if len(values) < 2:
        return Estimate(mean, float("nan"), float("nan"))
    se = float(values.std(ddof=1) / np.sqrt(len(values)))
    return Estimate(mean, mean - _Z * se, mean + _Z * se)


def pi_weights(gram_pinv: np.ndarray, labels: np.ndarray, logged: np.ndarray,
               target: np.ndarray | None = None) -> np.ndarray:
    """``q_pi(x)^T Gamma(x)^+ 1_A`` per row (n,): ``gram_pinv`` is the pseudo-inverse of the
    canonical context's Gram matrix (k m, k m), ``labels`` (n, m) each row's relabelling onto
    it, ``logged`` (n, k) the logged slates; ``target`` (n, k) a deterministic target's slates
    (None: the uniformly random target, ``q = 1/m`` everywhere)."""
    n, k = logged.shape
    m = labels.shape[1]
    logged_index = np.arange(k) * m + np.take_along_axis(labels, logged, axis=1)  # (n, k)
    if target is None:
        columns = gram_pinv.sum(axis=0) / m  # q^T M for the uniform q, then read at 1_A
        return columns[logged_index].sum(1)
    target_index = np.arange(k) * m + np.take_along_axis(labels, target, axis=1)
    return gram_pinv[target_index[:, :, None], logged_index[:, None, :]].sum(axis=(1, 2))
