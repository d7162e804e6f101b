"""Interaction logs from a logging policy, as columnar arrays (for supervised click models).

One row per user-step (one slate impression). Schema (``k`` = slate size, ``T`` = topics,
``H`` = history length; features are stored as float16 to keep logs small):

=================  =================  ==========================================================
column             dtype, shape       meaning
=================  =================  ==========================================================
``user``           int64 (n,)         user id (the seed the user was reset with)
``step``           int32 (n,)         step within the user's episode (0-based)
``slate``          int16 (n, k)       shown candidate positions (best first)
``slate_items``    int32 (n, k)       catalog ids of the shown items (what the system showed)
``slate_features`` float16 (n,k,T+3)  observed features of the shown items (obs ``candidates``)
``history``        float16 (n,H,T+6)  observation ``history`` before the step
``user_features``  float16 (n, U)     observation ``user`` before the step (U = T+1 here)
``propensity``     float32 (n, k)     P(logging policy puts that item at that position | the
                                      positions above it)
``click``          bool (n,)          the user clicked an item of the slate
``position``       int8 (n,)          clicked position, -1 for no click
``conversion``     bool (n,)          the click converted
``revenue``        float32 (n,)       price of a converted item, else 0
``reward``         float32 (n,)       the env's reward
=================  =================  ==========================================================

Optional columns (schema version 2; a version-1 log has none), for off-policy evaluation of
policies other than the logger (:mod:`recsim_gym.experiments.ope_run`):

=================  =================  ==========================================================
``candidates``     float16 (n,m,T+3)  every candidate's observed features (obs ``candidates``):
                                      what a target policy needs to choose its own slate
``marginal``       float32 (n, k)     P(logging policy puts the logged item at that position),
                                      what independent IPS divides by
``terminated``     bool (n,)          the user left after this row (only on a user's last row);
                                      false: they stayed, though logging or ``max_steps`` may
                                      have stopped there. Every row's churn outcome, in any
                                      row order (``recsim fit``'s churn fields)
=================  =================  ==========================================================

Files are ``.npz`` (``numpy.savez_compressed``) plus a ``__meta__`` JSON entry naming the schema
version, the logging policy and the sizes; :func:`load_logs` validates every column (names,
dtypes, shapes, row counts) and its values (propensities, positions, clicks, conversions,
finite features) and raises :class:`LogFormatError` naming the column and the first bad row.
Parquet is not used: pyarrow is not a dependency of recsim.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env import rng as recsim_rng
from recsim_gym.env.simulator import make_simulator
from recsim_gym.env.spaces import random_slates

SCHEMA_VERSION = 2
#: Schema versions load_logs reads (version 1: no optional columns).
READABLE_VERSIONS = (1, 2)
#: A logging policy: ``policy(obs, generator) -> (slates (B, k), propensities (B, k))``.
LoggingPolicy = Callable[[dict[str, np.ndarray], np.random.Generator], tuple[np.ndarray, np.ndarray]]


class LogFormatError(ValueError):
    """A log file is not a valid recsim interaction log (wrong schema or truncated)."""


def _columns(k: int, t: int, h: int, u: int | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Expected dtype and per-row shape of every column."""
    return {"user": ("int64", ()), "step": ("int32", ()), "slate": ("int16", (k,)),
            "slate_items": ("int32", (k,)), "slate_features": ("float16", (k, t + 3)),
            "history": ("float16", (h, t + 6)), "user_features": ("float16", (t + 1 if u is None else u,)),
            "propensity": ("float32", (k,)), "click": ("bool", ()), "position": ("int8", ()),
            "conversion": ("bool", ()), "revenue": ("float32", ()), "reward": ("float32", ())}


def _optional_columns(k: int, t: int, m: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Expected dtype and per-row shape of the optional columns."""
    return {"candidates": ("float16", (m, t + 3)), "marginal": ("float32", (k,)), "terminated": ("bool", ())}


def uniform_policy(k: int) -> LoggingPolicy:
    """Uniformly random slates; propensity of position j is ``1 / (m - j)``."""
    def policy(obs: dict[str, np.ndarray], gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        batch, m = obs["candidates"].shape[:2]
        slates = random_slates(gen, batch, m, k)
        prop = np.broadcast_to(1.0 / (m - np.arange(k)), (batch, k)).astype(np.float32)
        return slates, prop
    return policy


def _epsilon_greedy_policy(k: int, epsilon: float, score: Callable[[dict[str, np.ndarray]], np.ndarray]
                           ) -> LoggingPolicy:
    """ε-greedy over ``score(obs)`` (B, m), position by position: with probability ε a uniformly
    random remaining candidate, else the best-scored remaining one. Propensity of the chosen
    item at position j: ``ε / (m - j) + (1 - ε) * [it is the best remaining]``."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")

    def policy(obs: dict[str, np.ndarray], gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        batch, m = obs["candidates"].shape[:2]
        scores = score(obs) + 1e-9 * gen.random((batch, m))  # tie-break
        taken = np.zeros((batch, m), dtype=bool)
        slates = np.empty((batch, k), dtype=np.int64)
        prop = np.empty((batch, k), dtype=np.float32)
        rows = np.arange(batch)
        for j in range(k):
            masked = np.where(taken, -np.inf, scores)
            best = masked.argmax(axis=1)
            explore = gen.random(batch) < epsilon
            keys = np.where(taken, np.inf, gen.random((batch, m)))
            rand = keys.argmin(axis=1)
            chosen = np.where(explore, rand, best)
            slates[:, j] = chosen
            prop[:, j] = epsilon / (m - j) + (1.0 - epsilon) * (chosen == best)
            taken[rows, chosen] = True
        return slates, prop
    return policy


def epsilon_popularity_policy(k: int, epsilon: float = 0.3) -> LoggingPolicy:
    """ε-greedy over observed popularity (the last candidate feature), position by position:
    with probability ε a uniformly random remaining candidate, else the most popular remaining
    one. Propensity of the chosen item at position j: ``ε / (m - j) + (1 - ε) * [it is the most
    popular remaining]``."""
    return _epsilon_greedy_policy(k, epsilon, lambda obs: obs["candidates"][..., -1].astype(np.float64))


def affinity_score(obs: dict[str, np.ndarray]) -> np.ndarray:
    """A personalised ranker's score from observables only (B, m): the candidate's weight on the
    user's declared topics (``user[:, :T]`` multi-hot, ``candidates[..., :T]`` topic weights)
    plus its observed popularity."""
    cand = obs["candidates"].astype(np.float64)
    t = cand.shape[2] - 3
    declared = obs["user"][:, :t].astype(np.float64)
    return np.einsum("bmt,bt->bm", cand[..., :t], declared) + cand[..., -1]


def epsilon_affinity_policy(k: int, epsilon: float = 0.3) -> LoggingPolicy:
    """ε-greedy over :func:`affinity_score` (declared-topic match plus popularity), position by
    position, with the propensities of :func:`epsilon_popularity_policy`: logs of a service
    that personalises, which show users more of what they like than popularity logs do."""
    return _epsilon_greedy_policy(k, epsilon, affinity_score)


def logging_policy(name: str, k: int, epsilon: float = 0.3) -> LoggingPolicy:
    """The named logging policy for slates of ``k``: ``"epsilon_popularity"``,
    ``"epsilon_affinity"``, ``"epsilon_slate"`` or ``"uniform"``."""
    if name == "uniform":
        return uniform_policy(k)
    if name == "epsilon_popularity":
        return epsilon_popularity_policy(k, epsilon)
    if name == "epsilon_affinity":
        return epsilon_affinity_policy(k, epsilon)
    if name == "epsilon_slate":
        from recsim_gym.env.logging_policies import EpsilonSlateLogging

        return EpsilonSlateLogging(k, epsilon)
    raise ValueError(f"unknown logging policy {name!r}: 'epsilon_popularity', "
                     "'epsilon_affinity', 'epsilon_slate' or 'uniform'")


def generate_logs(preset: str = "static", n_steps: int = 10_000, batch_size: int = 500,
                  first_user: int = 0, policy: str | LoggingPolicy = "epsilon_popularity",
                  epsilon: float = 0.3, seed: int = 0, sim: Any = None,
                  full_observations: bool = False, **overrides: Any) -> dict[str, np.ndarray]:
    """Run a logging policy on ``batch_size`` users at a time until ``n_steps`` user-steps are
    logged; ended users are replaced by new ones (ids ``first_user``, ``first_user + 1``, ...).

    :param policy: ``"epsilon_popularity"``, ``"epsilon_affinity"``, ``"uniform"``, ``"epsilon_slate"`` or a
        :data:`LoggingPolicy` (one of :mod:`recsim_gym.env.logging_policies` also logs marginals)
    :param full_observations: also log every candidate (``candidates``) and, for a policy that
        knows them, the ``marginal`` probabilities: what off-policy evaluation needs
    :returns: the columns of the schema above (exactly ``n_steps`` rows), with ``terminated``
    """
    sim = sim if sim is not None else make_simulator(preset, **overrides)
    params = sim.params
    k = params.slate_size
    if isinstance(policy, str):
        policy = logging_policy(policy, k, epsilon)
    gen = np.random.default_rng(seed)
    batch = max(1, min(batch_size, n_steps))
    users = np.arange(first_user, first_user + batch, dtype=np.int64)
    next_user = first_user + batch
    state = sim.reset(recsim_rng.seed_to_key(users))
    steps = np.zeros(batch, dtype=np.int32)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in (*_columns(k, 1, 1), "terminated")}
    marginals = getattr(policy, "marginals", None)
    if full_observations:
        chunks["candidates"] = []
        if marginals is not None:
            chunks["marginal"] = []
    logged = 0
    while logged < n_steps:
        obs = sim.observe(state)
        slates, prop = policy(obs, gen)
        # catalog ids of the shown items (worlds without a candidate-id state log -1)
        ids = getattr(state, "candidates", None)
        items = np.take_along_axis(ids, slates, axis=1) if ids is not None else np.full(slates.shape, -1)
        shown = np.take_along_axis(obs["candidates"], slates[..., None], axis=1)
        state, result = sim.step(state, slates)
        take = min(batch, n_steps - logged)
        row = {"user": users, "step": steps, "slate": slates.astype(np.int16),
               "slate_items": items.astype(np.int32), "slate_features": shown.astype(np.float16),
               "history": obs["history"].astype(np.float16),
               "user_features": obs["user"].astype(np.float16), "propensity": prop.astype(np.float32),
               "click": result.click.astype(bool), "position": result.position.astype(np.int8),
               "conversion": result.conversion.astype(bool),
               "revenue": result.revenue.astype(np.float32), "reward": result.reward.astype(np.float32),
               "terminated": result.terminated.astype(bool)}
        if full_observations:
            row["candidates"] = obs["candidates"].astype(np.float16)
            if marginals is not None:
                row["marginal"] = marginals(obs, slates).astype(np.float32)
        for name, values in row.items():
            chunks[name].append(np.array(values[:take]))
        logged += take
        steps = steps + 1
        ended = np.flatnonzero(result.terminated | result.truncated)
        if ended.size:
            new = np.arange(next_user, next_user + ended.size, dtype=np.int64)
            next_user += ended.size
            users = users.copy()
            users[ended] = new
            steps[ended] = 0
            sim.reset_into(state, ended, recsim_rng.seed_to_key(new))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def validate_logs(logs: dict[str, np.ndarray], source: str = "logs", num_candidates: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Check names, dtypes, shapes and row counts, then values: propensities finite and in
    (0, 1], features and rewards finite, slate positions distinct, >= 0 and below
    ``num_candidates`` when given, clicks, positions, conversions and revenue consistent.
    Raise :class:`LogFormatError` naming the column (and the first bad row) otherwise."""
    for name in ("slate_features", "history"):
        if name not in logs:
            raise LogFormatError(f"{source}: missing column {name!r}")
    k, t3 = logs["slate_features"].shape[1:] if logs["slate_features"].ndim == 3 else (0, 0)
    h = logs["history"].shape[1] if logs["history"].ndim == 3 else 0
    user = logs.get("user_features")
    u = user.shape[1] if user is not None and user.ndim == 2 else None
    expected = _columns(k, t3 - 3, h, u)
    missing = sorted(set(expected) - set(logs))
    if missing:
        raise LogFormatError(f"{source}: missing columns {missing}")
    m = logs["candidates"].shape[1] if "candidates" in logs and logs["candidates"].ndim == 3 else 0
    optional = _optional_columns(k, t3 - 3, m)
    unknown = sorted(set(logs) - set(expected) - set(optional))
    if unknown:
        raise LogFormatError(f"{source}: unknown columns {unknown}; a log has {sorted(expected)} and "
                             f"optionally {sorted(optional)}")
    expected.update({name: spec for name, spec in optional.items() if name in logs})
    if u != t3 - 2:
        raise LogFormatError(f"{source}: column 'user_features' has width {u}, expected "
                             f"{t3 - 2} (T + 1 for T = {t3 - 3} topics, from slate_features)")
    n = len(logs["user"])
    for name, (dtype, shape) in expected.items():
        column = logs[name]
        if str(column.dtype) != dtype or column.shape[1:] != shape:
            raise LogFormatError(f"{source}: column {name!r} is {column.dtype}{column.shape[1:]}, "
                                 f"expected {dtype}{shape}")
        if len(column) != n:
            raise LogFormatError(f"{source}: column {name!r} has {len(column)} rows, 'user' has {n} "
                                 "(truncated file?)")
    _check_values(logs, source, k, num_candidates)
    if "candidates" in logs:
        if num_candidates is not None and m != num_candidates:
            raise LogFormatError(f"{source}: column 'candidates' holds {m} candidates per row, the "
                                 f"meta says num_candidates = {num_candidates}")
        _first_bad(source, "candidates", ~np.isfinite(logs["candidates"]), "values must be finite")
        _first_bad(source, "slate", logs["slate"].astype(np.int64) >= m,
                   f"positions must be < the {m} logged candidates")
        shown = np.take_along_axis(logs["candidates"], logs["slate"].astype(np.int64)[..., None], axis=1)
        _first_bad(source, "slate_features", shown != logs["slate_features"],
                   "must be the logged candidates at the slate's positions")
    if "marginal" in logs:
        marginal = logs["marginal"]
        _first_bad(source, "marginal", ~np.isfinite(marginal) | (marginal <= 0) | (marginal > 1),
                   "marginal probabilities must be in (0, 1]")
    if "terminated" in logs:
        _first_bad(source, "terminated", logs["terminated"] & ~_last_rows(logs["user"], logs["step"]),
                   "a session ends on the user's last row (the highest step) only")
    return logs


def _last_rows(user: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Whether each row is its user's only row at the user's highest step."""
    order = np.lexsort((step, user))
    u, s = user[order], step[order]
    last = np.r_[u[1:] != u[:-1], True]
    last &= np.r_[True, (u[1:] != u[:-1]) | (s[1:] != s[:-1])]  # no other row at that step
    out = np.empty(len(user), dtype=bool)
    out[order] = last
    return out


def _first_bad(source: str, name: str, bad: np.ndarray, rule: str) -> None:
    """Raise ``LogFormatError`` naming the column, the first bad row and the rule, if any row
    of ``bad`` (n, ...) is true."""
    rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
    if rows.size:
        raise LogFormatError(f"{source}: column {name!r}, row {rows[0]} (and {rows.size - 1} more): "
                             f"{rule}")


def _check_values(logs: dict[str, np.ndarray], source: str, k: int, num_candidates: int | None
                  ) -> None:
    """Value rules of a log (each error names the column and the first bad row)."""
    for name in ("slate_features", "history", "user_features", "revenue", "reward", "propensity"):
        _first_bad(source, name, ~np.isfinite(logs[name]), "values must be finite")
    prop = logs["propensity"]
    _first_bad(source, "propensity", (prop <= 0) | (prop > 1), "propensities must be in (0, 1]")
    slate = logs["slate"].astype(np.int64)
    high = f"< num_candidates ({num_candidates})" if num_candidates else "a candidate position"
    _first_bad(source, "slate", (slate < 0) | (slate >= (num_candidates or np.iinfo(np.int16).max)),
               f"positions must be >= 0 and {high}")
    ordered = np.sort(slate, axis=1)
    _first_bad(source, "slate", ordered[:, 1:] == ordered[:, :-1], "a slate shows each candidate once")
    position = logs["position"].astype(np.int64)
    _first_bad(source, "position", (position < -1) | (position >= k),
               f"the clicked position must be -1 (no click) or in [0, {k})")
    _first_bad(source, "click", logs["click"] != (position >= 0),
               "click must be true exactly when position >= 0")
    _first_bad(source, "conversion", logs["conversion"] & ~logs["click"], "a conversion needs a click")
    _first_bad(source, "revenue", (logs["revenue"] < 0) | ((logs["revenue"] > 0) & ~logs["conversion"]),
               "revenue must be >= 0, and 0 without a conversion")
    _first_bad(source, "reward", logs["reward"] < 0, "rewards are >= 0")
    _first_bad(source, "step", logs["step"] < 0, "steps are >= 0")


def save_logs(logs: dict[str, np.ndarray], path: str | Path, **meta: Any) -> Path:
    """Write ``logs`` to ``path`` (``.npz``) with a ``__meta__`` entry; returns the path."""
    validate_logs(logs, num_candidates=meta.get("num_candidates"))
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    info = {"schema_version": SCHEMA_VERSION, "rows": int(len(logs["user"])), **meta}
    np.savez_compressed(path, __meta__=np.array(json.dumps(info)), **logs)
    return path


def load_logs(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and validate a log written by :func:`save_logs`: ``(columns, meta)``.

    :raises LogFormatError: on a file that is not a recsim log, is truncated or has a wrong schema
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
        raise LogFormatError(f"{path}: not a readable recsim log (corrupted or truncated .npz): "
                             f"{err}") from err
    if "__meta__" not in data:
        raise LogFormatError(f"{path}: no __meta__ entry - not a recsim interaction log")
    try:
        meta = json.loads(str(data.pop("__meta__")))
    except json.JSONDecodeError as err:
        raise LogFormatError(f"{path}: the __meta__ entry is not JSON ({err})") from err
    if not isinstance(meta, dict):
        raise LogFormatError(f"{path}: the __meta__ entry is not a JSON object")
    if meta.get("schema_version") not in READABLE_VERSIONS:
        raise LogFormatError(f"{path}: schema version {meta.get('schema_version')}, "
                             f"expected one of {list(READABLE_VERSIONS)}")
    if meta["schema_version"] == 1 and {"candidates", "marginal", "terminated"} & set(data):
        raise LogFormatError(f"{path}: a schema version 1 log has no optional columns")
    validate_logs(data, str(path), meta.get("num_candidates"))
    if len(data["user"]) != meta.get("rows"):
        raise LogFormatError(f"{path}: {len(data['user'])} rows, meta says {meta.get('rows')} (truncated?)")
    return data, meta


def split_by_user(logs: dict[str, np.ndarray], test_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Held-out split by user id (no user in both parts)."""
    users = np.unique(logs["user"])
    test_users = np.random.default_rng(seed).choice(users, max(1, int(len(users) * test_fraction)),
                                                    replace=False)
    test = np.isin(logs["user"], test_users)
    return ({k: v[~test] for k, v in logs.items()}, {k: v[test] for k, v in logs.items()})
