"""The off-policy evaluation report: ``report.md`` and one plot per reward, from ``ope.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.experiments.ope import ONE_STEP, SEQUENTIAL

_REWARDS = {"click": "one-step click (per interaction)",
            "conversion": "one-step conversion (per interaction)",
            "return": "lifetime return (per user, whole lifetime)",
            "return_h": "return over a user's first {h} steps (per user)"}
#: Relative RMSE above which an estimator is said to fail at a size.
FAIL = 0.10


def write_report(out: Path) -> Path:
    """Plots and ``report.md`` of the run in ``out`` (its ``ope.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    data = json.loads((out / "ope.json").read_text())
    errors = data["errors"]
    cfg = data["config"]
    for reward in _REWARDS:
        _plot(out, errors, reward, cfg)
    path = out / "report.md"
    path.write_text(_markdown(data))
    return path


def _estimators(reward: str) -> tuple[str, ...]:
    return ONE_STEP if reward in ("click", "conversion") else SEQUENTIAL


def _plot(out: Path, errors: list[dict[str, Any]], reward: str, cfg: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    targets = cfg["targets"]
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.8), squeeze=False,
                             sharey=True)
    colors = dict(zip(ONE_STEP + SEQUENTIAL, plt.get_cmap("tab10").colors, strict=False))
    for ax, target in zip(axes[0], targets, strict=True):
        for estimator in _estimators(reward):
            rows = sorted((e for e in errors if e["target"] == target and e["reward"] == reward
                           and e["estimator"] == estimator), key=lambda e: e["size"])
            points = [(e["size"], e["relative_rmse"]) for e in rows if np.isfinite(e["relative_rmse"])]
            if points:
                x, y = zip(*points, strict=True)
                ax.plot(x, y, marker="o", markersize=3, label=estimator, color=colors[estimator])
        ax.axhline(FAIL, color="0.4", lw=0.8, ls=":")
        ax.axhline(0.05, color="0.6", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"target: {target}", fontsize=10)
        ax.set_xlabel("logged interactions")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("RMSE / |true value|")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    label = _REWARDS[reward].format(h=cfg["horizon"])
    fig.suptitle(f"{label}: relative RMSE over {cfg['reps']} logs ({cfg['logging']} logging); "
                 "dashed 5%, dotted 10%", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"ope_{reward}.png", dpi=110)
    plt.close(fig)


def _cell(e: dict[str, Any] | None) -> str:
    if e is None or not np.isfinite(e["relative_rmse"]):
        return "-"
    return f"{100 * e['relative_rmse']:.1f}% ({100 * e['relative_bias']:+.1f}%)"


def _markdown(data: dict[str, Any]) -> str:
    cfg, errors = data["config"], data["errors"]
    sizes = sorted({e["size"] for e in errors})
    index = {(e["target"], e["reward"], e["size"], e["estimator"]): e for e in errors}
    logging = (f"`{cfg['logging']}`" + (f" (epsilon {cfg['epsilon']})" if cfg["logging"] == "epsilon_slate"
                                        else ""))
    lines = [
        "# Off-policy evaluation against the simulator's ground truth", "",
        f"World `{cfg['preset']}`; logging policy {logging}; targets {', '.join(cfg['targets'])} "
        f"(trained {cfg['target_steps']:,} env steps each, then frozen); {cfg['reps']} independent "
        f"logs per size, nested sizes {', '.join(f'{s:,}' for s in sizes)} interactions; reward "
        f"model of DM and DR: logistic-regression click model fit on a separate log of "
        f"{cfg['model_rows']:,} interactions. Commit `{(data.get('git_commit') or 'unknown')[:10]}`; "
        f"{data['seconds'] / 60:.1f} min with {data['workers']} process(es).", "",
        "The truth is the simulator's: for the one-step rewards, the exact expected click or "
        "conversion of the target's slate in every logged state (the true model on the latent "
        "state; the random target averages 4 sampled slates per state); for the lifetime, the "
        "target run on the same users from their first step. Cells: RMSE over the logs relative "
        "to the true value, with the relative bias in brackets. Estimators and their assumptions: "
        "`recsim_gym/experiments/ope.py`.", ""]
    largest = sizes[-1]
    lines += [f"## Best estimator at {largest:,} interactions", "",
              "| target | reward | true value | best estimator | relative RMSE | relative bias | "
              "95% CI coverage |", "|---|---|---|---|---|---|---|"]
    for target in cfg["targets"]:
        for reward in _REWARDS:
            candidates = [index[(target, reward, largest, est)] for est in _estimators(reward)
                          if (target, reward, largest, est) in index
                          and np.isfinite(index[(target, reward, largest, est)]["relative_rmse"])]
            if not candidates:
                continue
            best = min(candidates, key=lambda e: e["relative_rmse"])
            coverage = f"{100 * best['coverage']:.0f}%" if np.isfinite(best["coverage"]) else "-"
            lines.append(f"| {target} | {reward} | {best['truth']:.4g} | {best['estimator']} | "
                         f"{100 * best['relative_rmse']:.1f}% | {100 * best['relative_bias']:+.1f}% | "
                         f"{coverage} |")
    lines.append("")
    for reward, label in _REWARDS.items():
        lines += [f"## {label.format(h=cfg['horizon'])[0].upper() + label.format(h=cfg['horizon'])[1:]}",
                  "", f"![{reward}](ope_{reward}.png)", ""]
        for target in cfg["targets"]:
            lines += [f"**{target}**", "", "| estimator | " + " | ".join(f"{s:,}" for s in sizes) + " |",
                      "|---|" + "---|" * len(sizes)]
            for estimator in _estimators(reward):
                cells = [_cell(index.get((target, reward, s, estimator))) for s in sizes]
                lines.append(f"| {estimator} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Where each estimator fails", "", _failures(errors, cfg, largest), ""]
    return "\n".join(lines)


def _failures(errors: list[dict[str, Any]], cfg: dict[str, Any], largest: int) -> str:
    """Plain sentences from the errors: where each estimator stays above 10% at the largest log."""
    sentences = []
    for estimator in ONE_STEP + SEQUENTIAL:
        bad = [e for e in errors if e["estimator"] == estimator and e["size"] == largest
               and (not np.isfinite(e["relative_rmse"]) or e["relative_rmse"] > FAIL)]
        good = [e for e in errors if e["estimator"] == estimator and e["size"] == largest
                and np.isfinite(e["relative_rmse"]) and e["relative_rmse"] <= FAIL]
        if not bad and not good:
            continue
        if not bad:
            sentences.append(f"- **{estimator}** is within {100 * FAIL:.0f}% of the truth for every "
                             f"target and reward at {largest:,} interactions.")
            continue
        worst = ", ".join(_miss(e) for e in sorted(
            bad, key=lambda e: -np.nan_to_num(e["relative_rmse"], nan=np.inf)))
        sentences.append(f"- **{estimator}** misses by more than {100 * FAIL:.0f}% at {largest:,} "
                         f"interactions for {worst}.")
    return "\n".join(sentences)


def _miss(e: dict[str, Any]) -> str:
    """``target/reward (RMSE%, bias%)`` of one failing error row."""
    if not np.isfinite(e["relative_rmse"]):
        return f"{e['target']}/{e['reward']} (undefined: no logged slate had weight)"
    return (f"{e['target']}/{e['reward']} ({100 * e['relative_rmse']:.0f}%, bias "
            f"{100 * e['relative_bias']:+.0f}%)")
