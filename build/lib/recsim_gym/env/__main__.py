"""``python -m recsim_gym.env {envs,params}``: list registered env ids, or print the config table."""

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
    args = parser.parse_args(argv)
    if args.what == "params":
        print(params_markdown())
        return
    for env_id in env_ids():
        print(env_id)
    print()
    for name, (description, _) in {**PRESETS, **WORLD_MODELS}.items():
        print(f"{name:<20} {description}")


if __name__ == "__main__":
    main()
