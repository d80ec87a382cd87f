"""The structure holds: layers import only downward, and ruff and mypy pass (docs/architecture.md).

import-linter sees imports inside functions too, so no lazy import can dodge a layer. These run
in CI (the test extra installs the tools); locally a missing tool is a clear skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from package_tree import build  # noqa: E402


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    needs(found is not None, f"{name} is not installed (pip install -e '.[test]')")
    return str(found)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("pkg"))


def _run(argv: list[str], cwd: Path, tree: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if tree is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_layers_import_only_downward(tree: Path) -> None:
    proc = _run([_tool("lint-imports"), "--no-cache", "--config", str(ROOT / "pyproject.toml")], ROOT, tree)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "Layers import only downward" in proc.stdout


def test_ruff_lint_and_format() -> None:
    ruff = _tool("ruff")
    lint = _run([ruff, "check", "."], ROOT)
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = _run([ruff, "format", "--check", "."], ROOT)
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_mypy(tree: Path) -> None:
    proc = _run([_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), "-p", "bert_export"], tree, tree)
    assert proc.returncode == 0, proc.stdout[-6000:]
