"""Offline metrics of click models on a held-out log split: AUC, log-loss, NDCG@k, HR@k, MRR.

Pointwise metrics (AUC, log-loss) are over every shown item (label: clicked). Ranking metrics
re-rank each logged slate by the model's pCTR and score the position of the clicked item among
the k shown (slates without a click are skipped): HR@k = clicked item in the top k,
NDCG@k = 1/log2(rank + 1) if within k, MRR = 1/rank.

``python scripts/offline_metrics.py --preset static --steps 20000`` logs, splits by user,
fits the three models and prints the table (with a constant predictor for reference).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy."""
    y = np.asarray(labels, dtype=float).ravel()
    p = np.clip(np.asarray(probs, dtype=float).ravel(), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def ranking_metrics(scores: np.ndarray, position: np.ndarray, k: int = 3) -> dict[str, float]:
    """NDCG@k, HR@k and MRR of the clicked item when each slate (rows of ``scores``, (n, s)) is
    re-ranked by score; ``position`` is the clicked column, -1 for none (skipped)."""
    hit = position >= 0
    s = scores[hit]
    clicked = np.take_along_axis(s, position[hit, None].astype(np.int64), axis=1)
    rank = 1 + (s > clicked).sum(1) + 0.5 * ((s == clicked).sum(1) - 1)
    within = rank <= k
    return {f"ndcg@{k}": float(np.where(within, 1 / np.log2(rank + 1), 0).mean()),
            f"hr@{k}": float(within.mean()), "mrr": float((1 / rank).mean())}


def evaluate_offline(agent, logs: dict[str, np.ndarray], k: int = 3) -> dict[str, float]:
    """All offline metrics of a fitted click-model agent on ``logs`` (click and conversion)."""
    n, s, _ = logs["slate_features"].shape
    p_click = np.empty((n, s))
    p_conv = np.empty((n, s))
    p_rank = np.empty((n, s))
    for start in range(0, n, 4096):
        part = slice(start, start + 4096)
        pc, pv = agent.predict_proba(logs["slate_features"][part], logs["history"][part],
                                     logs["user_features"][part], at_logged_positions=True)
        p_click[part], p_conv[part] = pc, pv
        # ranking: the model's position-free relevance (position 0's bias for every item)
        p_rank[part] = agent.predict_proba(logs["slate_features"][part], logs["history"][part],
                                           logs["user_features"][part])[0]
    clicked = logs["position"][:, None] == np.arange(s)
    out = {"auc": auc(clicked, p_click), "logloss": log_loss(clicked, p_click),
           **ranking_metrics(p_rank, logs["position"], k)}
    hit = logs["position"] >= 0
    conv_pred = p_conv[hit, logs["position"][hit]]
    out["cvr_auc"] = auc(logs["conversion"][hit], conv_pred)
    out["cvr_logloss"] = log_loss(logs["conversion"][hit], conv_pred)
    return out


def constant_baseline(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, float]:
    """Log-losses of the best constant predictors (training click and conversion rates)."""
    s = train["slate"].shape[1]
    ctr = float((train["position"] >= 0).mean()) / s
    hit_train, hit_test = train["position"] >= 0, test["position"] >= 0
    cvr = float(train["conversion"][hit_train].mean())
    clicked = test["position"][:, None] == np.arange(s)
    return {"logloss": log_loss(clicked, np.full(clicked.shape, ctr)),
            "cvr_logloss": log_loss(test["conversion"][hit_test], np.full(hit_test.sum(), cvr))}


def main(argv: list[str] | None = None) -> None:
    """Log, split, fit the three click models and print offline metrics."""
    import torch

    from recsim_gym.agents.click_models import ClickModelAgent
    from recsim_gym.env.logs import generate_logs, split_by_user
    from recsim_gym.env.simulator import make_simulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="static")
    parser.add_argument("--steps", type=int, default=20_000, help="logged user-steps")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sim = make_simulator(args.preset)
    logs = generate_logs(n_steps=args.steps, sim=sim, first_user=10_000_000)
    train, test = split_by_user(logs)
    print("constant", constant_baseline(train, test))
    for name in ("logreg", "two_tower", "din"):
        start = time.perf_counter()
        agent = ClickModelAgent(name, params=sim.params, epochs=args.epochs).fit(train)
        metrics = evaluate_offline(agent, test)
        print(name, f"fit {time.perf_counter() - start:.1f}s",
              {key: round(value, 4) for key, value in metrics.items()})


if __name__ == "__main__":
    main()
