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
    if summary.get("suite"):
        return make_suite_report(out, summary, records, agents)
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


# --- suites -------------------------------------------------------------------------------------

_GROUPS = (("all", "all worlds"), ("dynamic", "worlds with long-term effects"),
           ("static_like", "static-like worlds (myopic play is optimal)"))


def make_suite_report(out: Path, summary: dict, records: list[dict], agents: list[str]) -> Path:
    """Plots and ``report.md`` of a suite run (``summary`` from ``summarize_suite``)."""
    colors = agent_colors(agents)
    worlds = list(summary["worlds"])
    _plot_suite_scores(out, summary, agents, colors)
    _plot_suite_iqm(out, summary, agents, colors)
    _plot_suite_curves(out, records, summary, agents, colors)
    path = out / "report.md"
    path.write_text(_suite_markdown(out, summary, records, agents, worlds))
    return path


def _plot_suite_scores(out: Path, summary: dict, agents: list[str], colors: dict) -> None:
    """Normalised final score of every agent in every world (dots: seeds; bars: their mean)."""
    import matplotlib.pyplot as plt

    from recsim_gym.experiments.statistics import normalised_scores

    records = load_records(out)
    scores = normalised_scores([r for r in records if r["world"] in summary["aggregate"]["all"].get(
        "worlds", [])])
    worlds = summary["aggregate"]["all"].get("worlds", [])
    shown = [a for a in agents if a in scores]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(worlds) + 3), 4.8))
    width = 0.8 / max(len(shown), 1)
    for i, agent in enumerate(shown):
        for j, world in enumerate(worlds):
            values = list(scores[agent].get(world, {}).values())
            x = j - 0.4 + width * (i + 0.5)
            if values:
                ax.bar(x, np.mean(values), width, color=colors[agent], alpha=0.75,
                       label=agent if j == 0 else None)
                ax.scatter(np.full(len(values), x), values, s=6, color="black", zorder=3)
    ax.axhline(1.0, color="0.3", lw=0.8, ls=":")
    ax.axhline(0.0, color="0.3", lw=0.8)
    labels = [f"{w}{'*' if summary['worlds'][w]['static_like'] else ''}" for w in worlds]
    ax.set_xticks(range(len(worlds)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("normalised return (0 = random, 1 = oracle-myopic)")
    ax.set_title("Final normalised return per world (bars: mean over seeds; dots: seeds; * static-like)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "suite_scores.png", dpi=120)
    plt.close(fig)


def _plot_suite_iqm(out: Path, summary: dict, agents: list[str], colors: dict) -> None:
    """rliable's interval plot of the normalised IQM, one panel per group of worlds."""
    import matplotlib.pyplot as plt

    groups = [(key, label) for key, label in _GROUPS if summary["aggregate"][key].get("agents")]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 0.45 * len(agents) + 1.8),
                             squeeze=False)
    for ax, (key, label) in zip(axes[0], groups, strict=True):
        entries = summary["aggregate"][key]["agents"]
        names = [a for a in agents if a in entries]
        for row, agent in enumerate(names):
            iqm = entries[agent]["iqm"]
            low, high = (_or(iqm["ci"][0], iqm["value"]), _or(iqm["ci"][1], iqm["value"]))
            ax.barh(row, high - low, left=low, height=0.6, color=colors[agent], alpha=0.75)
            ax.plot([iqm["value"]] * 2, [row - 0.3, row + 0.3], color="black", lw=1.5)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.axvline(1.0, color="0.3", lw=0.8, ls=":")
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel("normalised IQM (0 = random, 1 = oracle-myopic)", fontsize=9)
        ax.set_title(f"{label} ({len(summary['aggregate'][key]['worlds'])})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("IQM of the normalised final return (rliable, 95% bootstrap CI over worlds and seeds)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "suite_iqm.png", dpi=120)
    plt.close(fig)


def _plot_suite_curves(out: Path, records: list[dict], summary: dict, agents: list[str],
                       colors: dict) -> None:
    """Normalised return on held-out users against training steps, mean over worlds (band:
    95% t-interval over worlds of the per-world means over seeds)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    worlds = summary["aggregate"]["all"].get("worlds", [])
    for agent in agents:
        runs = [r for r in records if r["agent"] == agent and r["world"] in worlds and r.get("trained")]
        if not runs:
            continue
        steps = sorted({row["env_steps"] for r in runs for row in r["curve"]})
        means, lows, highs = [], [], []
        for step in steps:
            per_world = []
            for world in worlds:
                low, high = summary["worlds"][world]["normalisers"]
                values = [(row["return"] - low) / (high - low) for r in runs if r["world"] == world
                          for row in r["curve"] if row["env_steps"] == step]
                if values:
                    per_world.append(np.mean(values))
            mean, low_ci, high_ci = t_interval(np.array(per_world))
            means.append(mean)
            lows.append(low_ci if np.isfinite(low_ci) else mean)
            highs.append(high_ci if np.isfinite(high_ci) else mean)
        ax.plot(steps, means, color=colors[agent], marker="o", markersize=3, label=agent)
        ax.fill_between(steps, lows, highs, color=colors[agent], alpha=0.15)
    ax.axhline(1.0, color="0.3", lw=0.8, ls=":", label="oracle-myopic")
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("training env steps (user-steps)")
    ax.set_ylabel("normalised return (0 = random, 1 = oracle-myopic)")
    ax.set_title(f"Learning curves over {len(worlds)} worlds (mean; band: 95% t-interval over worlds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "suite_curves.png", dpi=120)
    plt.close(fig)


def _interval(entry: dict | None, digits: int = 2, signed: bool = True) -> str:
    if not entry:
        return "-"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    low, high = entry.get("ci_low", float("nan")), entry.get("ci_high", float("nan"))
    if not np.isfinite(low):
        return fmt.format(entry["mean"])
    return f"{fmt.format(entry['mean'])} [{fmt.format(low)}, {fmt.format(high)}]"


def _suite_markdown(out: Path, summary: dict, records: list[dict], agents: list[str],
                    worlds: list[str]) -> str:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        cfg = manifest["config"]
        setup = (f"Suite `{cfg['env']['suite']}`: {len(worlds)} worlds; {len(cfg['seeds'])} "
                 f"seed{'s' if len(cfg['seeds']) != 1 else ''} "
                 f"{cfg['seeds']} per (world, agent); training budget {cfg['train_steps']:,} env steps "
                 f"per job on {cfg['num_envs']} parallel users; final evaluation on "
                 f"{cfg['eval']['final_users']:,} held-out users per seed. Commit "
                 f"`{(manifest.get('git_commit') or 'unknown')[:10]}`.")
    except (OSError, KeyError, json.JSONDecodeError):
        manifest, setup = {}, ""
    setup += _commit_note(records, manifest.get("git_commit"))
    wall = sum(r["wall_seconds"] for r in records)
    lines = [f"# Suite report: {out.name}", "", setup,
             f" Job time: {wall / 60:.1f} min in all.", "",
             "Each world's final returns are normalised as (R - random) / (oracle-myopic - random), "
             "with that world's random and oracle-myopic means over seeds. IQM: rliable, 95% "
             "bootstrap CI over worlds and over seeds within them (rliable's task bootstrap: "
             "what another sample of worlds would give). Paired differences of normalised "
             "scores (same world, seed and users): mean over worlds of the per-world mean over "
             "seeds, with a 95% hierarchical bootstrap (worlds, then seeds), and how many worlds "
             "the difference is above / tied with / below the reference in (Student-t over "
             "seeds). Return vs oracle-myopic: R / R_oracle - 1 paired by world and seed, the "
             "same mean and bootstrap (it stays readable where oracle-myopic is close to random, "
             "as in static-like worlds). Coverage (share of the catalog shown) and intra-slate "
             "topic diversity: mean over worlds of the per-world means.", ""]
    lines += [f"> **Note.** {w}" for w in summary.get("warnings", [])]
    lines.append("")
    for key, label in _GROUPS:
        group = summary["aggregate"][key]
        if not group.get("agents"):
            continue
        best = group.get("best_supervised")
        lines += [f"## {label[0].upper() + label[1:]} ({len(group['worlds'])})", "",
                  f"| agent | normalised IQM | mean | vs oracle-myopic | worlds above/tie/below | "
                  f"vs best supervised ({best or '-'}) | worlds above/tie/below | return vs "
                  "oracle-myopic | coverage | diversity |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for agent in agents:
            e = group["agents"].get(agent)
            if e is None:
                continue
            iqm = e["iqm"]
            low, high = iqm["ci"]
            iqm_text = (f"{iqm['value']:.2f} [{low:.2f}, {high:.2f}]" if np.isfinite(low)
                        else f"{iqm['value']:.2f}")
            cells = [iqm_text, f"{e['mean']:.2f}"]
            for ref in ("vs_oracle_myopic", "vs_best_supervised"):
                vs = e.get(ref)
                cells += [_interval(vs), _verdicts(vs)]
            relative = e.get("return_vs_oracle_myopic")
            cells.append(_percent(relative) if relative else "-")
            cells += [_world_mean(summary, group["worlds"], agent, metric)
                      for metric in ("coverage", "diversity")]
            lines.append(f"| {agent} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![normalised IQM](suite_iqm.png)", "", "![normalised score per world](suite_scores.png)",
              "", "![learning curves](suite_curves.png)", ""]
    lines += _where_section(summary, agents)
    lines += ["## Per world", "",
              "Final lifetime return on held-out users, mean [95% Student-t CI over seeds, kept "
              "at or above 0: returns are non-negative]; * static-like.", ""]
    shown = [a for a in agents if any(a in summary["worlds"][w]["summary"]["agents"] for w in worlds)]
    lines += ["| world | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for world in worlds:
        entry = summary["worlds"][world]
        cells = [_fmt(entry["summary"]["agents"].get(a, {}).get("metrics", {}).get("return"))
                 for a in shown]
        lines.append(f"| {world}{'*' if entry['static_like'] else ''} | " + " | ".join(cells) + " |")
    lines += ["", _world_descriptions(out, worlds), ""]
    return "\n".join(lines)


def _verdicts(vs: dict | None) -> str:
    """Worlds above/tied/below a reference, ``n/a`` where no world has an interval (one seed)."""
    if not vs:
        return "-"
    counts = [vs["verdicts"][v] for v in ("above", "tie", "below")]
    return "/".join(map(str, counts)) if sum(counts) else "n/a (1 seed)"


def _percent(value: dict) -> str:
    """A relative difference with its interval, in percent: ``+4.1% [+1.0, +7.3]``."""
    text = f"{100 * value['mean']:+.1f}%"
    if np.isfinite(value["ci_low"]):
        text += f" [{100 * value['ci_low']:+.1f}, {100 * value['ci_high']:+.1f}]"
    return text


def _world_mean(summary: dict, worlds: list[str], agent: str, metric: str) -> str:
    """``metric``'s mean over ``worlds`` of the agent's per-world means ("-" where a world has
    none, e.g. coverage without a catalog), three decimals."""
    values = [summary["worlds"][w]["summary"]["agents"].get(agent, {}).get("metrics", {}).get(metric)
              for w in worlds]
    values = [v["mean"] for v in values if v and np.isfinite(v["mean"])]
    return f"{np.mean(values):.3f}" if values else "-"


def _where_section(summary: dict, agents: list[str]) -> list[str]:
    """Per learning agent, the worlds where it is above, tied with and below oracle-myopic and
    the best supervised model (paired, Student-t over seeds; with one seed, the sign of the
    normalised difference)."""
    group = summary["aggregate"]["all"]
    lines = ["## Where each agent works", ""]
    for agent in agents:
        e = group.get("agents", {}).get(agent)
        if e is None or agent in ("random", "oracle_myopic"):
            continue
        parts = []
        for ref, name in (("vs_oracle_myopic", "oracle-myopic"),
                          ("vs_best_supervised", group.get("best_supervised"))):
            vs = e.get(ref)
            if not vs:
                continue
            rows = vs["worlds"]
            if rows and all(row["verdict"] == "n/a" for row in rows.values()):
                # one seed per world: no per-world interval, so the sign of the difference
                higher = [f"{w} ({row['mean']:+.2f})" for w, row in rows.items() if row["mean"] > 0]
                lower = [f"{w} ({row['mean']:+.2f})" for w, row in rows.items() if row["mean"] <= 0]
                parts.append(f"vs {name}: higher in {', '.join(higher) or 'none'}; lower or equal in "
                             f"{', '.join(lower) or 'none'} (one seed: point estimates)")
                continue
            by = {v: [w for w, row in rows.items() if row["verdict"] == v] for v in ("above", "tie", "below")}
            parts.append(f"vs {name}: above in {', '.join(by['above']) or 'none'}; tied in "
                         f"{', '.join(by['tie']) or 'none'}; below in {', '.join(by['below']) or 'none'}")
        if parts:
            lines.append(f"- **{agent}**: " + "; ".join(parts) + ".")
    return lines + [""]


def _world_descriptions(out: Path, worlds: list[str]) -> str:
    """The suite worlds' parameters, one line each."""
    from recsim_gym.env.suite import sample_world

    lines = ["Worlds:", ""]
    for world in worlds:
        if world.startswith("w") and world[1:].isdigit():
            lines.append(f"- {sample_world(int(world[1:])).describe()}")
        else:
            lines.append(f"- {world}: the `{world}` preset")
    return "\n".join(lines)
