"""The README stays true: its config table is the generated one, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from recsim_gym.env.__main__ import params_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_table_matches_params() -> None:
    text = README.read_text()
    match = re.search(r"<!-- params-table:start -->\n(.*?)<!-- params-table:end -->", text, re.S)
    assert match, "README lacks the params-table markers"
    assert match.group(1).strip() == params_markdown().strip(), (
        "README config table is stale: regenerate it with `python -m recsim_gym.env params`")


def test_readme_gives_setup_and_test_commands() -> None:
    text = README.read_text()
    assert "recsim run experiments/configs/quick.yaml" in text
    assert (README.parent / "experiments" / "configs" / "quick.yaml").is_file()
    assert "python -m pytest" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest" in ci


def test_shipped_configs_are_valid() -> None:
    from recsim_gym.experiments.config import load_config

    for path in sorted((README.parent / "experiments" / "configs").glob("*.yaml")):
        load_config(path)
