"""The layers hold: simulator <- agents <- experiments (import-linter's contract in pyproject.toml),
and the check does fail when a lower layer imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
CONTRACT = """
[importlinter]
root_packages =
    recsim_gym

[importlinter:contract:layers]
name = simulator <- agents <- experiments
type = layers
layers =
    recsim_gym.experiments
    recsim_gym.agents
    recsim_gym.env
"""


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    config = tree / "importlinter.ini"
    config.write_text(CONTRACT)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def _copy_package(tmp_path: Path) -> Path:
    """The three source directories as one regular package ``recsim_gym`` under ``tmp_path``."""
    package = tmp_path / "recsim_gym"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for source, name in (("recsim_env", "env"), ("agents", "agents"), ("experiments", "experiments")):
        shutil.copytree(ROOT / source, package / name, ignore=shutil.ignore_patterns(
            "__pycache__", "results", "configs"))
    return package


def test_the_repository_keeps_its_layers(tmp_path) -> None:
    _copy_package(tmp_path)
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path) -> None:
    package = _copy_package(tmp_path)
    (package / "env" / "upward.py").write_text("from recsim_gym.experiments import runner  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "recsim_gym.env.upward -> recsim_gym.experiments.runner" in result.stdout


def test_the_wheel_installs_one_namespace(tmp_path) -> None:
    """``pip install <checkout>`` puts only ``recsim_gym`` on sys.path: no generic top-level
    ``agents`` or ``experiments``, and no committed results or configs as packages."""
    import zipfile

    import pytest

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip("needs setuptools >= 68 to build without isolation")
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    for name in ("recsim_env", "agents", "experiments"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"recsim_gym", wheel.name.split("-py")[0] + ".dist-info"}
    packages = {name.rsplit("/", 1)[0] for name in names if name.endswith("__init__.py")}
    assert packages == {"recsim_gym/env", "recsim_gym/agents", "recsim_gym/agents/zoo",
                        "recsim_gym/experiments"}
    assert {"recsim_gym/agents/zoo/ppo.yml", "recsim_gym/agents/zoo/a2c.yml"} <= set(names)
    assert "recsim_gym" in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("top_level.txt"))).decode()
