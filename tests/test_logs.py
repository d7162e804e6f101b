"""Interaction logs: schema round trip, propensities, validation of wrong or truncated files."""

from __future__ import annotations

import numpy as np
import pytest

from recsim_gym.env.logs import (
    LogFormatError,
    affinity_score,
    epsilon_affinity_policy,
    epsilon_popularity_policy,
    generate_logs,
    load_logs,
    save_logs,
    split_by_user,
    uniform_policy,
)


@pytest.fixture(scope="module")
def logs() -> dict[str, np.ndarray]:
    return generate_logs("static", n_steps=3000, batch_size=200, seed=1)


def test_schema_round_trip(logs, tmp_path):
    path = save_logs(logs, tmp_path / "logs.npz", policy="epsilon_popularity")
    loaded, meta = load_logs(path)
    assert meta["rows"] == 3000 and meta["policy"] == "epsilon_popularity"
    assert set(loaded) == set(logs)
    for name, column in logs.items():
        assert loaded[name].dtype == column.dtype
        assert np.array_equal(loaded[name], column), name


def test_columns_are_consistent(logs):
    k = logs["slate"].shape[1]
    assert len(logs["user"]) == 3000
    assert np.all(np.sort(logs["slate"], axis=1)[:, 1:] != np.sort(logs["slate"], axis=1)[:, :-1])
    assert np.array_equal(logs["click"], logs["position"] >= 0)
    assert not np.any(logs["conversion"] & ~logs["click"])
    assert logs["position"].max() < k
    assert np.all((logs["propensity"] > 0) & (logs["propensity"] <= 1))
    # users are replaced when they leave: steps restart at 0 for new ids
    assert len(np.unique(logs["user"])) > 200
    assert np.all(logs["step"][logs["user"] >= 200] >= 0)


def test_propensities_match_the_policies():
    gen = np.random.default_rng(0)
    obs = {"candidates": gen.random((20000, 10, 4)).astype(np.float32)}
    _, prop = uniform_policy(3)(obs, gen)
    assert np.allclose(prop[0], [1 / 10, 1 / 9, 1 / 8])
    slates, prop = epsilon_popularity_policy(3, epsilon=0.5)(obs, gen)
    most_popular = obs["candidates"][..., -1].argmax(1)
    first = slates[:, 0] == most_popular
    # P(top item first) = 0.5 + 0.5/10, and the logged propensity says so
    assert abs(first.mean() - 0.55) < 0.02
    assert np.allclose(prop[first, 0], 0.55) and np.allclose(prop[~first, 0], 0.05)


def test_the_affinity_logger_ranks_declared_topics_and_logs_its_propensities():
    gen = np.random.default_rng(1)
    t, m, n = 4, 10, 20000
    cand = gen.random((n, m, t + 3)).astype(np.float32)
    user = np.zeros((n, t + 1), np.float32)
    user[np.arange(n), gen.integers(0, t, n)] = 1.0  # one declared topic each
    obs = {"candidates": cand, "user": user}
    score = affinity_score(obs)
    declared = user[:, :t].argmax(1)
    assert np.allclose(score, cand[np.arange(n), :, declared] + cand[..., -1], atol=1e-6)
    slates, prop = epsilon_affinity_policy(3, epsilon=0.5)(obs, gen)
    first = slates[:, 0] == score.argmax(1)
    assert abs(first.mean() - 0.55) < 0.02
    assert np.allclose(prop[first, 0], 0.55) and np.allclose(prop[~first, 0], 0.05)
    # a greedy logger (epsilon 0) shows the k best by score, best first
    slates, prop = epsilon_affinity_policy(3, epsilon=0.0)(obs, gen)
    assert np.array_equal(slates, np.argsort(-score, axis=1)[:, :3]) and np.all(prop == 1.0)


def test_the_affinity_logger_shows_users_more_of_what_they_convert_on():
    popular = generate_logs("default", n_steps=20000, seed=3, policy="epsilon_popularity")
    personal = generate_logs("default", n_steps=20000, seed=3, policy="epsilon_affinity")
    assert personal["conversion"].mean() > popular["conversion"].mean() + 0.02


def test_split_by_user_is_disjoint(logs):
    train, test = split_by_user(logs, 0.25)
    assert not set(train["user"]) & set(test["user"])
    assert len(train["user"]) + len(test["user"]) == len(logs["user"])


def test_truncated_file_fails_clearly(logs, tmp_path):
    path = save_logs(logs, tmp_path / "logs.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogFormatError, match="corrupted or truncated"):
        load_logs(path)


def test_wrong_files_fail_clearly(logs, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(LogFormatError, match="corrupted or truncated"):
        load_logs(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(LogFormatError, match="__meta__"):
        load_logs(tmp_path / "other.npz")
    short = dict(logs, click=logs["click"][:-5])
    with pytest.raises(LogFormatError, match="'click' has 2995 rows"):
        save_logs(short, tmp_path / "short.npz")
    wrong = dict(logs, propensity=logs["propensity"].astype(np.float64))
    with pytest.raises(LogFormatError, match="propensity"):
        save_logs(wrong, tmp_path / "wrong.npz")
    missing = {k: v for k, v in logs.items() if k != "revenue"}
    with pytest.raises(LogFormatError, match="revenue"):
        save_logs(missing, tmp_path / "missing.npz")


# --- value validation (issue 22, item 2): each was saved and loaded without a word ------------

def _damaged(logs: dict[str, np.ndarray], how: str) -> dict[str, np.ndarray]:
    bad = {name: column.copy() for name, column in logs.items()}
    clicked = int(np.flatnonzero(bad["click"])[0])
    unclicked = int(np.flatnonzero(~bad["click"])[0])
    if how == "nan_propensity":
        bad["propensity"][5, 0] = np.nan
    elif how == "zero_propensity":
        bad["propensity"][5, 1] = 0.0
    elif how == "negative_propensity":
        bad["propensity"][5, 1] = -0.2
    elif how == "propensity_above_one":
        bad["propensity"][5, 1] = 1.5
    elif how == "inf_propensity":
        bad["propensity"][5, 1] = np.inf
    elif how == "nan_feature":
        bad["slate_features"][5, 0, 0] = np.nan
    elif how == "nan_reward":
        bad["reward"][5] = np.nan
    elif how == "negative_slate_position":
        bad["slate"][5, 0] = -1
    elif how == "repeated_slate_position":
        bad["slate"][5, 1] = bad["slate"][5, 0]
    elif how == "click_position_99":
        bad["position"][clicked] = 99
    elif how == "no_click_with_position":
        bad["click"][clicked] = False
    elif how == "conversion_without_click":
        bad["conversion"][unclicked] = True
    elif how == "unknown_column":
        bad["extra"] = np.zeros(len(bad["user"]))
    elif how == "user_features_width":
        bad["user_features"] = np.zeros((len(bad["user"]), 3), np.float16)
    elif how == "terminated_before_last_row":
        bad["terminated"][5] = True  # row 5 is step 0 of its user, who has later rows
    return bad


DAMAGE = {
    "nan_propensity": ("propensity", "finite"), "zero_propensity": ("propensity", r"\(0, 1\]"),
    "negative_propensity": ("propensity", r"\(0, 1\]"), "propensity_above_one": ("propensity", r"\(0, 1\]"),
    "inf_propensity": ("propensity", "finite"), "nan_feature": ("slate_features", "finite"),
    "nan_reward": ("reward", "finite"), "negative_slate_position": ("slate", ">= 0"),
    "repeated_slate_position": ("slate", "once"), "click_position_99": ("position", "-1"),
    "no_click_with_position": ("click", "position >= 0"),
    "conversion_without_click": ("conversion", "needs a click"),
    "unknown_column": ("unknown columns", "extra"), "user_features_width": ("user_features", "width 3"),
    "terminated_before_last_row": ("terminated", "last row"),
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_bad_values_are_refused_at_save_and_load_naming_column_and_row(logs, tmp_path, how):
    import json

    column, rule = DAMAGE[how]
    bad = _damaged(logs, how)
    with pytest.raises(LogFormatError, match=rf"{column}.*{rule}"):
        save_logs(bad, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    meta = json.dumps({"schema_version": 2, "rows": len(bad["user"])})
    np.savez_compressed(tmp_path / "raw.npz", __meta__=np.array(meta), **bad)
    with pytest.raises(LogFormatError, match=rf"{column}.*{rule}") as error:
        load_logs(tmp_path / "raw.npz")
    if how not in ("unknown_column", "user_features_width", "click_position_99",
                   "no_click_with_position", "conversion_without_click"):
        assert "row 5 " in str(error.value)  # the first bad row, by number


def test_a_bad_meta_entry_is_a_log_format_error(logs, tmp_path):
    np.savez_compressed(tmp_path / "meta.npz", __meta__=np.array("{not json"), **logs)
    with pytest.raises(LogFormatError, match="__meta__ entry is not JSON"):
        load_logs(tmp_path / "meta.npz")


def test_terminated_marks_the_users_who_left_and_no_one_else(logs):
    """Every user who left the logged batch before logging stopped either churned (marked on
    their last row) or reached max_steps (unmarked); the users of the last logged step are
    still there, so only a churn at that very step marks them."""
    from recsim_gym.env.presets import make_params

    max_steps = make_params("static").max_steps
    order = np.lexsort((logs["step"], logs["user"]))
    user, step, ended = logs["user"][order], logs["step"][order], logs["terminated"][order]
    last = np.r_[user[1:] != user[:-1], True]
    assert not (ended & ~last).any()
    still_there = np.isin(user, logs["user"][-200:])  # the last step's 200 users
    gone = last & ~still_there
    assert gone.sum() >= 10 and ended[gone].sum() >= 10  # churn happens in this log
    assert (ended[gone] | (step[gone] == max_steps - 1)).all()
    assert ended[last & still_there].sum() < 0.2 * 200  # a churn at the last step only
