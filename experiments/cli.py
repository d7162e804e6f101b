"""The ``recsim`` command line: run experiments, plot them, benchmark, list agents and envs.

    recsim run experiments/configs/quick.yaml          # train + evaluate every (agent, seed)
    recsim run CONFIG --resume                          # continue an interrupted run
    recsim plot runs/quick                              # plots + report.md for a run directory
    recsim evaluate --agents random linucb              # held-out users, no run directory
    recsim ope --targets random logreg                  # off-policy estimators vs the true value
    recsim fit logs.npz --out fit/                      # fit a world to logs (fit/world.json)
    recsim logs convert events.csv --items items.csv --out log.npz   # bring your own data
    recsim bench env                                    # env throughput (user-steps/s)
    recsim agents                                       # registered agents, incl. plug-ins
    recsim envs                                         # Gymnasium ids and presets
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from recsim_gym.experiments.config import ConfigError, load_config
    from recsim_gym.experiments.report import make_report
    from recsim_gym.experiments.runner import JobFileError, ResumeError, run_experiment

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"recsim run: invalid config {args.config}: {err}", file=sys.stderr)
        return 2
    try:
        out = run_experiment(config, out_dir=args.out, resume=args.resume, backend=args.backend,
                             workers=args.workers, ray_address=args.ray_address,
                             progress=not args.quiet)
    except (FileExistsError, ResumeError, JobFileError) as err:
        print(f"recsim run: {err}", file=sys.stderr)
        return 2
    report = make_report(out)
    _print_summary(out)
    plots = ", ".join(sorted(p.name for p in Path(out).glob("*.png")))
    print(f"\nresults: {out}/evaluations.csv, {out}/summary.json\nreport:  {report} "
          f"(plots in {out}: {plots})")
    return 0


def _print_summary(out: Path) -> None:
    import json

    from recsim_gym.experiments.report import agent_order
    from recsim_gym.experiments.runner import load_records

    summary = json.loads((out / "summary.json").read_text())
    order = agent_order(out, load_records(out))
    if summary.get("suite"):
        _print_suite_summary(summary, order)
        return
    reference = summary.get("reference")
    print(f"\nFinal lifetime return on held-out users (mean [95% CI over seeds]); reference: {reference}")
    print(f"{'agent':<22} {'return':>28} {'diff. vs reference':>28} {'coverage':>9}")
    for agent in order:
        entry = summary["agents"][agent]
        m = entry["metrics"]["return"]
        vs = entry.get("vs_reference", {}).get("return_difference")
        diff = f"{vs['mean']:+.1f} [{vs['ci_low']:+.1f}, {vs['ci_high']:+.1f}]" if vs else "-"
        coverage = entry["metrics"].get("coverage", {}).get("mean", float("nan"))
        shown = "n/a" if math.isnan(coverage) else f"{coverage:.3f}"  # no fixed catalog: no coverage
        print(f"{agent:<22} {m['mean']:>10.1f} [{m['ci_low']:>7.1f}, {m['ci_high']:>7.1f}] "
              f"{diff:>28} {shown:>9}")


def _print_suite_summary(summary: dict, order: list[str]) -> None:
    """The normalised IQM and the paired difference to oracle-myopic, per group of worlds."""
    for group, label in (("all", "all worlds"), ("dynamic", "worlds with long-term effects"),
                         ("static_like", "static-like worlds")):
        entries = summary["aggregate"][group].get("agents", {})
        if not entries:
            continue
        print(f"\nNormalised final return, {label} ({len(summary['aggregate'][group]['worlds'])}): "
              "IQM [95% CI]; paired difference to oracle-myopic [95% CI]")
        for agent in order:
            if agent not in entries:
                continue
            iqm = entries[agent]["iqm"]
            vs = entries[agent].get("vs_oracle_myopic")
            diff = f"{vs['mean']:+.2f} [{vs['ci_low']:+.2f}, {vs['ci_high']:+.2f}]" if vs else "-"
            print(f"{agent:<22} {iqm['value']:>6.2f} [{iqm['ci'][0]:>5.2f}, {iqm['ci'][1]:>5.2f}] "
                  f"{diff:>24}")


def _cmd_logs(args: argparse.Namespace) -> int:
    from recsim_gym.env.log_tables import from_tables
    from recsim_gym.env.logs import LogFormatError, save_logs

    try:
        logs, meta = from_tables(args.events, args.items, history_length=args.history,
                                 max_steps=args.max_steps)
    except (FileNotFoundError, LogFormatError) as err:
        print(f"recsim logs convert: {err}", file=sys.stderr)
        return 2
    path = save_logs(logs, args.out, **meta)
    print(f"wrote {path}: {len(logs['user']):,} slates of {meta['users']:,} users; propensities "
          f"{meta['propensities']}, session ends {meta['session_ends']}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from recsim_gym.experiments.report import make_report
    from recsim_gym.experiments.runner import JobFileError

    try:
        report = make_report(args.run_dir)
    except (FileNotFoundError, JobFileError) as err:
        print(f"recsim plot: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report} and its plots")
    return 0


def _cmd_agents(args: argparse.Namespace) -> int:
    from recsim_gym.agents import registry

    for name, description in registry.list_agents().items():
        print(f"{name:<22} {description}")
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from recsim_gym.env.__main__ import main as env_main

    env_main(["envs"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``recsim`` argument parser."""
    from recsim_gym.env import __version__

    parser = argparse.ArgumentParser(prog="recsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"recsim-gym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment config (train and evaluate every agent x seed)")
    run.add_argument("config", type=Path, help="YAML experiment config (see experiments/configs/)")
    run.add_argument("--out", type=Path, default=None, help="run directory (default: config output_dir)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run: keep finished (agent, seed) jobs, run the rest")
    run.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local processes (default) or a Ray cluster")
    run.add_argument("--workers", type=int, default=1,
                     help="parallel local worker processes (default: 1)")
    run.add_argument("--ray-address", default=None,
                     help="Ray cluster address for --backend ray (default: start a local Ray)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)
    plot = sub.add_parser("plot", help="write plots and report.md for a run directory")
    plot.add_argument("run_dir", type=Path, help="a run directory written by `recsim run`")
    plot.set_defaults(func=_cmd_plot)
    bench = sub.add_parser("bench", help="throughput benchmarks (see `recsim bench env --help`)",
                           add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    evaluate = sub.add_parser("evaluate", help="evaluate agents on held-out users, no run directory "
                              "(see `recsim evaluate --help`)", add_help=False)
    evaluate.add_argument("rest", nargs=argparse.REMAINDER)
    ope = sub.add_parser("ope", help="off-policy estimators checked against the simulator's truth "
                         "(see `recsim ope --help`)", add_help=False)
    ope.add_argument("rest", nargs=argparse.REMAINDER)
    fit = sub.add_parser("fit", help="fit the default world family to interaction logs (see "
                         "`recsim fit --help`)", add_help=False)
    fit.add_argument("rest", nargs=argparse.REMAINDER)
    logs = sub.add_parser("logs", help="interaction logs: convert plain tables (docs/logs.md)")
    logs_sub = logs.add_subparsers(dest="logs_command", required=True)
    convert = logs_sub.add_parser("convert", help="events and items CSV tables -> a recsim log (.npz)")
    convert.add_argument("events", type=Path, help="events CSV: user, time, slate, clicked_item, converted "
                         "(optional: propensity, terminated)")
    convert.add_argument("--items", type=Path, required=True,
                         help="items CSV: item, topic_0.. (or topic), appeal, price, popularity")
    convert.add_argument("--out", type=Path, default=Path("log.npz"), help="output log (default log.npz)")
    convert.add_argument("--history", type=int, default=8, help="history entries per row (default 8)")
    convert.add_argument("--max-steps", type=int, default=200, help="session length scale (default 200)")
    convert.set_defaults(func=_cmd_logs)
    sub.add_parser("agents", help="list registered agents (built-ins and plug-ins)").set_defaults(
        func=_cmd_agents)
    sub.add_parser("envs", help="list Gymnasium ids and presets").set_defaults(func=_cmd_envs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recsim`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from recsim_gym.experiments.bench import main as bench_main

        bench_main(argv[1:] or ["--help"])
        return 0
    if argv[:1] == ["fit"]:
        from recsim_gym.experiments.fit_report import main as fit_main

        return fit_main(argv[1:] or ["--help"])
    if argv[:1] == ["ope"]:
        from recsim_gym.experiments.ope_run import main as ope_main

        return ope_main(argv[1:])
    if argv[:1] == ["evaluate"]:
        from recsim_gym.experiments.evaluate import main as evaluate_main

        evaluate_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        print(f"recsim run: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
