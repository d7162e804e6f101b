"""Plots and a markdown report for a finished (or partly finished) run directory.

``recsim plot RUN_DIR`` writes into the run directory:

* ``reward_curves.png`` - mean lifetime return on held-out users vs training env steps, with a
  95% CI band over seeds, one line per agent (agents that do not train: dashed, flat);
* ``final_return.png`` - final mean lifetime return per agent with 95% CIs over seeds;
* ``improvement.png`` - IQM of the final return (rliable, stratified-bootstrap CI);
* ``probability_of_improvement.png`` - P(agent > reference) for every agent, where the
  reference is the best supervised baseline, else oracle-myopic (rliable; not written, and the
  report says why, when the run has no reference);
* ``metrics.png`` - CTR, conversion rate, session length, catalog coverage, diversity, novelty;
* ``report.md`` - the table and the plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recsim_gym.experiments.runner import collect, load_records
from recsim_gym.experiments.statistics import BOUNDS, MIN_BOOTSTRAP_SEEDS, t_interval

_PANEL = (("ctr", "CTR (clicks per step)"), ("conversion_rate", "conversion rate (per click)"),
          ("session_length", "session length (steps)"), ("coverage", "catalog coverage (share)"),
          ("diversity", "intra-slate topic diversity"), ("novelty", "novelty (-log popularity)"))


def agent_colors(agents: list[str]) -> dict[str, Any]:
    """A fixed colour per agent (config order), shared by every plot of a run."""
    import matplotlib

    if len(agents) <= 10:
        palette = matplotlib.colormaps["tab10"]
        return {agent: palette(i) for i, agent in enumerate(agents)}
    # tab20: the ten dark hues first, then their light partners, so neighbours differ in hue
    palette = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {agent: palette(order[i % 20]) for i, agent in enumerate(agents)}


def agent_order(out: Path, records: list[dict]) -> list[str]:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        order = [a["label"] or a["name"] for a in manifest["config"]["agents"]]
    except (OSError, KeyError, json.JSONDecodeError):
        order = []
    present = list(dict.fromkeys(r["agent"] for r in records))
    return [a for a in order if a in present] + [a for a in present if a not in order]


def make_report(out: str | Path) -> Path:
    """Write the plots and ``report.md`` for run directory ``out``; returns the report path."""
    import matplotlib
    matplotlib.use("Agg")

    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"run directory {out} does not exist (give a directory written by "
                                "`recsim run`)")
    records = load_records(out)
    if not records:
        raise FileNotFoundError(f"{out} has no finished jobs (expected {out}/jobs/*.json)")
    summary = collect(out)
    agents = agent_order(out, records)
    colors = agent_colors(agents)
    _plot_curves(out, records, agents, colors)
    _plot_final(out, summary, agents, colors)
    missing = _plot_improvement(out, summary, agents, colors)
    _plot_panel(out, summary, agents, colors)
    path = out / "report.md"
    path.write_text(_markdown(out, summary, records, agents, missing))
    return path


def _plot_curves(out: Path, records: list[dict], agents: list[str], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    max_steps = max((row["env_steps"] for r in records for row in r["curve"]), default=0)
    seen: list[float] = []  # every per-seed value drawn: the axes fit these, not the CI bands
    band_edges: list[float] = []
    for agent in agents:
        runs = [r for r in records if r["agent"] == agent]
        steps = sorted({row["env_steps"] for r in runs for row in r["curve"]})
        trained = any(r.get("trained") for r in runs)
        if not trained or len(steps) < 2:
            finals = [r["final"]["return"] for r in runs]
            mean, low, high = t_interval(np.array(finals), bounds=BOUNDS["return"])
            seen += finals
            ax.hlines(mean, 0, max(max_steps, 1), colors=[colors[agent]], linestyles="--",
                      label=f"{agent} (no training)")
            if np.isfinite(low):
                ax.fill_between([0, max(max_steps, 1)], low, high, color=colors[agent], alpha=0.08)
                band_edges += [low, high]
            continue
        stats_at = []
        for step in steps:
            values = [row["return"] for r in runs for row in r["curve"] if row["env_steps"] == step]
            stats_at.append(t_interval(np.array(values), bounds=BOUNDS["return"]))
            seen += values
        mean, low, high = (np.array(x) for x in zip(*stats_at, strict=True))
        band_edges += [*low[np.isfinite(low)], *high[np.isfinite(high)]]
        ax.plot(steps, mean, color=colors[agent], label=agent, marker="o", markersize=3)
        ax.fill_between(steps, np.where(np.isfinite(low), low, mean),
                        np.where(np.isfinite(high), high, mean), color=colors[agent], alpha=0.2)
    ax.set_xlabel("training env steps (user-steps)")
    ax.set_ylabel("mean lifetime return per held-out user")
    title = "Learning curves (mean and 95% CI over seeds)"
    if seen:
        low, high = min(seen), max(seen)
        pad = 0.15 * max(high - low, abs(high), 1e-9)
        limits = (max(0.0, low - pad), high + pad)
        ax.set_ylim(*limits)
        if band_edges and (min(band_edges) < limits[0] or max(band_edges) > limits[1]):
            title += "\nsome CI bands run past the axes, which fit the per-seed values (few seeds)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no curve hidden
    fig.tight_layout()
    fig.savefig(out / "reward_curves.png", dpi=120)
    plt.close(fig)


def _bars(ax, agents: list[str], stats_by_agent: dict[str, tuple], colors: dict, ylabel: str) -> None:
    names = [a for a in agents if a in stats_by_agent]
    means = np.array([stats_by_agent[a][0] for a in names])
    lows = np.array([stats_by_agent[a][1] for a in names])
    highs = np.array([stats_by_agent[a][2] for a in names])
    err = np.nan_to_num(np.vstack([means - lows, highs - means]), nan=0.0)
    ax.bar(range(len(names)), means, yerr=np.maximum(err, 0), capsize=4,
           color=[colors[a] for a in names])
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def _metric_stats(summary: dict, metric: str) -> dict[str, tuple]:
    result = {}
    for agent, entry in summary["agents"].items():
        m = entry["metrics"].get(metric)
        if m:
            result[agent] = (m["mean"], m["ci_low"], m["ci_high"])
    return result


def _plot_final(out: Path, summary: dict, agents: list[str], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    stats_by_agent = _metric_stats(summary, "return")
    _bars(ax, agents, stats_by_agent, colors, "final lifetime return per user")
    names = [a for a in agents if a in stats_by_agent]
    for i, agent in enumerate(names):  # the runs behind each bar: few seeds explain a wide CI
        values = summary["agents"][agent]["metrics"]["return"]["per_seed"]
        ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, s=10,
                   color="black", zorder=3, label="one seed" if i == 0 else None)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"Final lifetime return on held-out users (mean, 95% CI over "
                 f"{_seed_counts(summary, names)[1]} seeds; dots: seeds)")
    fig.tight_layout()
    fig.savefig(out / "final_return.png", dpi=120)
    plt.close(fig)


def _plot_improvement(out: Path, summary: dict, agents: list[str], colors: dict) -> str | None:
    """rliable's plots: the IQM of the final return with its stratified-bootstrap interval
    (``improvement.png``) and P(agent > reference) (``probability_of_improvement.png``).
    Returns why the second plot is missing, or None when it was written."""
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    names = [a for a in agents if a in summary["agents"]]
    iqm = {a: summary["agents"][a]["iqm_return"] for a in names}
    points = {a: np.array([iqm[a]["value"]]) for a in names}
    intervals = {a: np.array([[_or(iqm[a]["ci"][0], iqm[a]["value"])],
                              [_or(iqm[a]["ci"][1], iqm[a]["value"])]]) for a in names}
    fewest, counts = _seed_counts(summary, names)
    few = fewest < MIN_BOOTSTRAP_SEEDS
    fig, ax = plot_utils.plot_interval_estimates(
        points, intervals, metric_names=["IQM"], algorithms=names,
        colors={a: colors[a] for a in names}, xlabel="", subfigure_width=8.0,
        row_height=0.5 + 0.1 * (len(names) < 6))
    ax.set_title(f"IQM of the final lifetime return over {counts} seeds (rliable, 95% "
                 "stratified-bootstrap CI)" + (f"\nfew seeds: below {MIN_BOOTSTRAP_SEEDS} the "
                                               "interval is too narrow" if few else ""), fontsize=10)
    ax.tick_params(labelsize=9)
    ax.set_xlabel("lifetime return per held-out user", fontsize=10)
    for text in list(fig.texts):
        text.remove()
    fig.savefig(out / "improvement.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    target = out / "probability_of_improvement.png"
    reference = summary.get("reference")
    pairs = {a: summary["agents"][a]["vs_reference"]["probability_of_improvement"] for a in names
             if "vs_reference" in summary["agents"][a]}
    if not pairs:
        target.unlink(missing_ok=True)
        if reference is None:
            return ("No probability-of-improvement plot: the run has no reference agent (a "
                    "supervised click model or oracle-myopic) to compare with.")
        return (f"No probability-of-improvement plot: no other agent shares a seed with the "
                f"reference `{reference}`.")
    estimates = {f"{a},{reference}": np.array([p["value"]]) for a, p in pairs.items()}
    bounds = {f"{a},{reference}": np.array([[_or(p["ci"][0], p["value"])], [_or(p["ci"][1], p["value"])]])
              for a, p in pairs.items()}
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(pairs) + 1.6))
    plot_utils.plot_probability_of_improvement(
        estimates, bounds, ax=ax, colors=[colors[a] for a in pairs], xticks=[0, 0.25, 0.5, 0.75, 1],
        xlabel=f"P(agent > {reference})", left_ylabel="agent", right_ylabel="reference",
        ticklabelsize="small", labelsize="medium")
    ax.axvline(0.5, color="0.3", lw=0.8, ls=":")
    for idx, p in enumerate(pairs.values()):  # the value, readable even where the CI is a point
        ax.text(p["value"], idx + 0.36, f"{p['value']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.03, 1.03)
    ax.set_title("Probability of improvement over the reference (rliable, 95% stratified-"
                 "bootstrap CI)" + (f"\nfew seeds ({counts}): the CI is too narrow, and P is a "
                                    f"multiple of 1/{fewest ** 2}" if few else ""), fontsize=10, pad=20)
    fig.savefig(target, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return None


def _seed_counts(summary: dict, names: list[str]) -> tuple[int, str]:
    """The fewest seeds of agents ``names`` and their seed counts as a label ("3" or "2-5")."""
    counts = sorted({len(summary["agents"][a]["seeds"]) for a in names})
    label = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return counts[0], label


def _or(value: float, fallback: float) -> float:
    return value if np.isfinite(value) else fallback


def _plot_panel(out: Path, summary: dict, agents: list[str], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, (metric, label) in zip(axes.ravel(), _PANEL, strict=True):
        stats_by_agent = _metric_stats(summary, metric)
        if stats_by_agent:
            _bars(ax, agents, stats_by_agent, colors, label)
        else:
            ax.text(0.5, 0.5, f"not measured:\nno job recorded {metric}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="0.4")
            ax.set_axis_off()
        ax.set_title(label, fontsize=10)
    fig.suptitle(f"Engagement, coverage and diversity (mean, 95% CI over "
                 f"{_seed_counts(summary, list(summary['agents']))[1]} seeds)")
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=120)
    plt.close(fig)


def _fmt(m: dict | None, digits: int = 1) -> str:
    if not m:
        return "-"
    if not np.isfinite(m["ci_low"]):
        return f"{m['mean']:.{digits}f}"
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def _commit_note(records: list[dict], run_commit: str | None) -> str:
    """A sentence naming the commits behind the jobs when they are not all the run's commit (a
    resumed run can mix code versions; jobs from before per-job commits show as not recorded)."""
    if not records or {r.get("git_commit") for r in records} == {run_commit}:
        return ""
    by_commit: dict[str, list[str]] = {}
    for r in records:
        commit = r.get("git_commit")
        label = f"`{commit[:10]}`" if commit else "not recorded"
        by_commit.setdefault(label, [])
        if r["agent"] not in by_commit[label]:
            by_commit[label].append(r["agent"])
    parts = [f"{label} ({', '.join(agents)})" for label, agents in sorted(by_commit.items())]
    return f" Jobs by commit: {'; '.join(parts)}."


def _markdown(out: Path, summary: dict, records: list[dict], agents: list[str],
              missing_plot: str | None = None) -> str:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        cfg = manifest["config"]
        setup = (f"Preset `{cfg['env']['preset']}` (overrides: {cfg['env']['overrides'] or 'none'}); "
                 f"{len(cfg['seeds'])} seeds {cfg['seeds']}; training budget {cfg['train_steps']:,} "
                 f"env steps per (agent, seed) on {cfg['num_envs']} parallel users; final evaluation "
                 f"on {cfg['eval']['final_users']:,} held-out users per seed. Commit "
                 f"`{(manifest.get('git_commit') or 'unknown')[:10]}`.")
    except (OSError, KeyError, json.JSONDecodeError):
        manifest, setup = {}, ""
    setup += _commit_note(records, manifest.get("git_commit"))
    reference = summary.get("reference")
    wall = {a: sum(r["wall_seconds"] for r in records if r["agent"] == a) for a in agents}
    notes = [f"> **Note.** {w}" for w in summary.get("warnings", [])]
    lines = [f"# Report: {out.name}", "", setup, "",
             "Mean over seeds with 95% Student-t CIs, kept inside each metric's range (returns "
             "are non-negative, shares lie in [0, 1]). "
             + (f"The difference to the reference (`{reference}`) is paired by seed (same held-out "
                "users); P(improvement) and IQM are rliable's, with 95% stratified-bootstrap "
                "intervals." if reference else "No reference agent: no paired differences."),
             "", *([*notes, ""] if notes else []),
             "| agent | lifetime return | diff. vs reference | P(improvement) | CTR | conv. rate | "
             "session length | coverage | diversity | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for agent in agents:
        e = summary["agents"][agent]
        m = e["metrics"]
        vs = e.get("vs_reference")
        diff = _fmt(vs["return_difference"]) if vs else "-"
        poi = f"{vs['probability_of_improvement']['value']:.2f}" if vs else "-"
        lines.append(f"| {agent} | {_fmt(m.get('return'))} | {diff} | {poi} | "
                     f"{_fmt(m.get('ctr'), 3)} | {_fmt(m.get('conversion_rate'), 3)} | "
                     f"{_fmt(m.get('session_length'))} | {_fmt(m.get('coverage'), 3)} | "
                     f"{_fmt(m.get('diversity'), 3)} | {wall[agent]:.0f} |")
    lines += ["", "![learning curves](reward_curves.png)", "", "![final return](final_return.png)",
              "", "![IQM of the final return](improvement.png)", "",
              (missing_plot or "![probability of improvement](probability_of_improvement.png)"), "",
              "![engagement, coverage and diversity](metrics.png)", ""]
    return "\n".join(lines)
