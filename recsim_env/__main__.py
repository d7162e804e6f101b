"""``python -m recsim_gym.env {envs,params,suite}``: list registered env ids, print the config table,
or list worlds of the suite (``suite --split held_out --count 12``)."""

from __future__ import annotations

import argparse

from recsim_gym.env.params import field_table
from recsim_gym.env.presets import PRESETS
from recsim_gym.env.registration import env_ids
from recsim_gym.env.world import WORLD_MODELS


def params_markdown() -> str:
    """Markdown table of every :class:`Params` field (the README's config table)."""
    lines = ["| field | group | default | allowed | meaning |", "|---|---|---|---|---|"]
    for row in field_table():
        doc = row["doc"].replace("|", "\\|")
        lines.append(f"| `{row['name']}` | {row['group']} | `{row['default']}` | "
                     f"{row['allowed']} | {doc} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m recsim_gym.env", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("envs", help="registered Gymnasium ids and presets")
    sub.add_parser("params", help="markdown table of every Params field")
    suite = sub.add_parser("suite", help="worlds of the world suite (recsim_gym.env.suite)")
    suite.add_argument("--split", choices=("tuning", "held_out"), default="tuning")
    suite.add_argument("--count", type=int, default=12, help="the split's first N worlds (default 12)")
    suite.add_argument("--json", action="store_true", help="each world's Params overrides as JSON")
    args = parser.parse_args(argv)
    if args.what == "params":
        print(params_markdown())
        return
    if args.what == "suite":
        import json

        from recsim_gym.env.suite import suite_worlds

        try:
            worlds = suite_worlds(args.split, args.count)
        except ValueError as err:
            parser.error(f"--count: {err}")
        for world in worlds:
            print(json.dumps({"world": world.name, **world.overrides}) if args.json else world.describe())
        return
    for env_id in env_ids():
        print(env_id)
    print()
    for name, (description, _) in {**PRESETS, **WORLD_MODELS}.items():
        print(f"{name:<20} {description}")


if __name__ == "__main__":
    main()
