"""The docs stay true: every Python block of README.md and docs/*.md runs, the parameter table
is the generated one, the README's two commands exist, and the shipped configs are valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsim_gym.env.__main__ import params_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_block_runs(page: Path) -> None:
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(python_blocks(page)):
        try:
            exec(compile(block, f"{page.name}[python block {i}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message says which block failed
            raise AssertionError(f"{page.name}: python block {i} fails: {err!r}\n{block}") from err


def test_the_pages_have_code_to_run() -> None:
    assert len(python_blocks(README)) >= 3
    assert python_blocks(ROOT / "docs" / "interest_evolution.md")


def test_docs_parameter_table_matches_params() -> None:
    text = (ROOT / "docs" / "world.md").read_text()
    match = re.search(r"<!-- params-table:start -->\n(.*?)<!-- params-table:end -->", text, re.S)
    assert match, "docs/world.md lacks the params-table markers"
    assert match.group(1).strip() == params_markdown().strip(), (
        "docs/world.md's parameter table is stale: regenerate it with `python -m recsim_gym.env params`")


def test_readme_gives_setup_and_test_commands() -> None:
    text = README.read_text()
    assert "recsim run experiments/configs/quick.yaml" in text
    assert (ROOT / "experiments" / "configs" / "quick.yaml").is_file()
    assert "python -m pytest" in text
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()
    assert len(text.splitlines()) <= 250, "README is a user guide: keep it under 250 lines"


def test_relative_links_resolve() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_shipped_configs_are_valid() -> None:
    from recsim_gym.experiments.config import load_config

    for path in sorted((ROOT / "experiments" / "configs").glob("*.yaml")):
        load_config(path)
