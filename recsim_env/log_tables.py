"""Interaction logs from plain tables: bring a team's own data into recsim's log format.

``recsim logs convert EVENTS.csv --items ITEMS.csv --out log.npz`` (or :func:`from_tables`)
turns one row per shown slate into a log (:mod:`recsim_gym.env.logs`, ``docs/logs.md``).

**Events table** (CSV; one row per slate shown to a user):

================  ========  ====================================================================
column            required  meaning
================  ========  ====================================================================
``user``          yes       user id (any text or integer)
``time``          yes       anything that orders a user's rows (an integer step, a timestamp)
``slate``         yes       the shown item ids in display order, separated by spaces or ``|``
``clicked_item``  yes       the clicked item's id, empty (or ``-1``) for no click
``converted``     yes       1 if the click converted, else 0
``propensity``    no        P(the logging policy showed this slate): the whole slate's
                            probability, spread evenly over its positions; without it,
                            propensities are unknown (the meta says so, and off-policy
                            estimators that need them refuse)
``terminated``    no        1 on a user's last row if they left the service after it (by your
                            churn definition, e.g. no visit in the 30 days after it), else 0;
                            without it the meta says ``session_ends: unknown`` and ``recsim fit``
                            cannot use the likelihood of the session ends
================  ========  ====================================================================

**Items table** (CSV; one row per item): ``item`` (id), ``topic_0 .. topic_{T-1}`` (the topic
vector; normalised to sum 1) or ``topic`` (one topic index per item), ``appeal`` in [0, 1],
``price`` > 0 and ``popularity`` in [0, 1].

What the tables cannot hold is filled in and said in the meta: the candidate set is the shown
slate (``num_candidates`` = slate size), declared topics are unknown (zeros), and each
history entry is the user's previous row (the clicked item, or the first shown on a no-click
row). The reward is ``click + 2 conversion`` (the default world's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.env.catalog import price_feature_of
from recsim_gym.env.logs import LogFormatError, validate_logs

#: Required columns of the events and items tables.
EVENT_COLUMNS = ("user", "time", "slate", "clicked_item", "converted")
ITEM_COLUMNS = ("item", "appeal", "price", "popularity")


def _read_csv(path: str | Path, what: str) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure: say which table
        raise LogFormatError(f"{what} table {path}: not a readable CSV ({type(err).__name__}: "
                             f"{err})") from err


def _items(table: Any, source: str, price_min: float, price_max: float
           ) -> tuple[dict[str, int], np.ndarray]:
    """Item id -> row, and the (N, T + 3) observed features: topic vector, appeal, price
    feature (log price scaled to [0, 1] over [price_min, price_max]), popularity."""
    missing = [c for c in ITEM_COLUMNS if c not in table.columns]
    topic_columns = sorted((c for c in table.columns if c.startswith("topic_")), key=lambda c: int(c[6:]))
    if not topic_columns and "topic" not in table.columns:
        missing.append("topic_0..topic_{T-1} or topic")
    if missing:
        raise LogFormatError(f"items table {source}: missing columns {missing}")
    ids = table["item"].tolist()
    if len(set(ids)) != len(ids):
        raise LogFormatError(f"items table {source}: column 'item' repeats ids")
    try:
        if topic_columns:
            topics = table[topic_columns].astype(float).to_numpy()
        else:
            index = table["topic"].astype(int).to_numpy()
            if (index < 0).any():
                raise ValueError("negative topic")
            topics = np.eye(index.max() + 1)[index]
        scalars = {c: table[c].astype(float).to_numpy() for c in ("appeal", "price", "popularity")}
    except ValueError as err:
        raise LogFormatError(f"items table {source}: a topic, appeal, price or popularity value is not a "
                             f"number ({err})") from err
    problems = []
    if (topics < 0).any() or (topics.sum(1) <= 0).any():
        problems.append("topic vectors must be non-negative with a positive sum")
    if ((scalars["appeal"] < 0) | (scalars["appeal"] > 1)).any():
        problems.append("appeal must be in [0, 1]")
    if ((scalars["price"] < price_min) | (scalars["price"] > price_max)).any():
        problems.append(f"price must be in [{price_min}, {price_max}]")
    if ((scalars["popularity"] < 0) | (scalars["popularity"] > 1)).any():
        problems.append("popularity must be in [0, 1]")
    if problems:
        raise LogFormatError(f"items table {source}: " + "; ".join(problems))
    topics = topics / topics.sum(1, keepdims=True)
    price_feature = price_feature_of(scalars["price"], price_min, price_max)
    features = np.column_stack([topics, scalars["appeal"], price_feature, scalars["popularity"]])
    return {item: i for i, item in enumerate(ids)}, features.astype(np.float32)


def _flags(column: Any, what: str) -> np.ndarray:
    """A 0/1 column as booleans; anything else raises :class:`LogFormatError` naming the row."""
    values = column.to_numpy()
    try:
        numbers = values.astype(float)
    except ValueError:
        numbers = np.full(len(values), np.nan)
    bad = ~np.isin(numbers, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LogFormatError(f"{what}, row {row}: {values[row]!r} is not 0 or 1")
    return numbers.astype(bool)


def from_tables(events: str | Path, items: str | Path, history_length: int = 8, max_steps: int = 200,
                price_min: float = 1.0, price_max: float = 1000.0
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(log columns, meta)`` from an events table and an items table (see the module
    docstring); every problem raises :class:`~recsim_gym.env.logs.LogFormatError` naming the
    table, the column and the first bad row."""
    table = _read_csv(events, "events")
    missing = [c for c in EVENT_COLUMNS if c not in table.columns]
    if missing:
        raise LogFormatError(f"events table {events}: missing columns {missing} (required: "
                             f"{list(EVENT_COLUMNS)})")
    index, features = _items(_read_csv(items, "items"), str(items), price_min, price_max)
    t = features.shape[1] - 3
    slates = [s.replace("|", " ").split() for s in table["slate"]]
    k = len(slates[0]) if slates else 0
    bad = next((i for i, s in enumerate(slates) if len(s) != k or len(set(s)) != k), None)
    if k == 0 or bad is not None:
        raise LogFormatError(f"events table {events}: column 'slate', row {bad or 0}: every slate must "
                             f"list the same number (here {k}) of distinct item ids")
    unknown = next((i for i, s in enumerate(slates) for item in s if item not in index), None)
    if unknown is not None:
        raise LogFormatError(f"events table {events}: column 'slate', row {unknown}: item "
                             f"{next(x for x in slates[unknown] if x not in index)!r} is not in the "
                             "items table")
    item_rows = np.array([[index[x] for x in s] for s in slates], dtype=np.int64)
    clicked = table["clicked_item"].tolist()
    position = np.full(len(table), -1, dtype=np.int64)
    for row, (item, shown) in enumerate(zip(clicked, slates, strict=True)):
        if item not in ("", "-1"):
            if item not in shown:
                raise LogFormatError(f"events table {events}: column 'clicked_item', row {row}: item "
                                     f"{item!r} was not in that row's slate")
            position[row] = shown.index(item)
    try:
        converted = table["converted"].astype(int).to_numpy().astype(bool)
        times = table["time"].astype(float).to_numpy()
    except ValueError as err:
        raise LogFormatError(f"events table {events}: column 'converted' (0/1) or 'time' (a number) "
                             f"holds something else ({err})") from err
    if (converted & (position < 0)).any():
        row = int(np.flatnonzero(converted & (position < 0))[0])
        raise LogFormatError(f"events table {events}: column 'converted', row {row}: a conversion "
                             "needs a click")
    users_text = table["user"].to_numpy()
    _, user = np.unique(users_text, return_inverse=True)
    order = np.lexsort((times, user))
    ends_known = "terminated" in table.columns
    if ends_known:
        terminated = _flags(table["terminated"], f"events table {events}: column 'terminated'")
        last = np.empty(len(order), dtype=bool)
        last[order] = np.r_[user[order][1:] != user[order][:-1], True]
        if (terminated & ~last).any():
            raise LogFormatError(f"events table {events}: column 'terminated', row "
                                 f"{int(np.flatnonzero(terminated & ~last)[0])}: 1 only on a user's last "
                                 "row (by time): a user leaves once")
    user, item_rows, position, converted = user[order], item_rows[order], position[order], converted[order]
    n = len(order)
    first = np.r_[True, user[1:] != user[:-1]]
    step = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    shown = features[item_rows]  # (n, k, T + 3)
    click = position >= 0
    logged_item = shown[np.arange(n), np.where(click, position, 0)]
    entry = np.concatenate([logged_item, click[:, None], converted[:, None], np.ones((n, 1))], axis=1)
    history = np.zeros((n, history_length, t + 6), np.float32)
    for lag in range(1, history_length + 1):  # entry of the row `lag` steps back, same user
        rows = np.flatnonzero(step >= lag)
        history[rows, history_length - lag] = entry[rows - lag]
    user_features = np.zeros((n, t + 1), np.float32)
    user_features[:, -1] = np.minimum(step / max_steps, 1.0)
    propensity = np.ones((n, k), np.float32)
    known = "propensity" in table.columns
    if known:
        try:
            slate_p = table["propensity"].astype(float).to_numpy()[order]
        except ValueError as err:
            raise LogFormatError(f"events table {events}: column 'propensity' is not a number "
                                 f"({err})") from err
        if ((slate_p <= 0) | (slate_p > 1)).any():
            raise LogFormatError(f"events table {events}: column 'propensity', row "
                                 f"{int(np.flatnonzero((slate_p <= 0) | (slate_p > 1))[0])}: must be in "
                                 "(0, 1]")
        propensity[:] = (slate_p ** (1.0 / k))[:, None]
    logs = {"user": user.astype(np.int64), "step": step.astype(np.int32),
            "slate": np.tile(np.arange(k, dtype=np.int16), (n, 1)), "slate_items": item_rows.astype(np.int32),
            "slate_features": shown.astype(np.float16), "history": history.astype(np.float16),
            "user_features": user_features.astype(np.float16), "propensity": propensity,
            "click": click, "position": position.astype(np.int8), "conversion": converted,
            "revenue": np.zeros(n, np.float32),
            "reward": (click + 2.0 * converted).astype(np.float32)}
    if ends_known:
        logs["terminated"] = terminated[order]
    validate_logs(logs, str(events), num_candidates=k)
    meta = {"source": str(events), "num_candidates": k, "max_steps": max_steps,
            "propensities": "known" if known else "unknown", "declared_topics": "unknown",
            "session_ends": "known" if ends_known else "unknown",
            "users": int(user.max() + 1) if n else 0}
    return logs, meta
