"""The import contract (pyproject's [tool.importlinter], also run by `make lint`) holds,
and catches what it is for: an upward import, and a runtime library in a pure module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_package_keeps_its_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.fixture
def copy_of_the_package(tmp_path):
    shutil.copytree(
        ROOT / "selfalign", tmp_path / "selfalign", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_an_upward_import_breaks_the_layers(copy_of_the_package):
    # The engine reaching up into a stage: exactly what the layers forbid.
    _append(
        copy_of_the_package / "selfalign/engine/runner.py",
        "import selfalign.stages.curate.stage  # noqa",
    )
    result = lint(copy_of_the_package)
    assert result.returncode != 0
    assert "Layers: imports only point down BROKEN" in result.stdout
    assert "selfalign.engine.runner -> selfalign.stages.curate.stage" in result.stdout
    assert "Pure modules import no runtime library KEPT" in result.stdout


def test_a_runtime_import_in_a_pure_module_breaks_purity_even_indirectly(copy_of_the_package):
    # A pure module importing a runtime module that imports ray, two steps away.
    _append(
        copy_of_the_package / "selfalign/stages/curate/rows.py",
        "import selfalign.core.cluster  # noqa",
    )
    _append(copy_of_the_package / "selfalign/core/cluster.py", "import ray  # noqa")
    result = lint(copy_of_the_package)
    assert result.returncode != 0
    assert "Pure modules import no runtime library BROKEN" in result.stdout
    assert "selfalign.stages.curate.rows" in result.stdout
