"""A real ``bert_export`` directory for tools that walk the file system (import-linter, mypy).

The package is installed through ``[tool.setuptools.package-dir]`` (each top-level folder is a
``bert_export.*`` subpackage), which an editable install serves through an import hook: there is
no ``bert_export/`` folder to walk. This builds one of symbolic links in a temporary folder.

    python tools/package_tree.py DIR   # then: PYTHONPATH=DIR lint-imports / mypy -p bert_export
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def build(dest: Path) -> Path:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = dest / "bert_export"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").touch()
    for name, folder in mapping.items():
        link = pkg / name.split(".", 1)[1]
        if link.is_symlink():
            link.unlink()
        link.symlink_to(ROOT / folder, target_is_directory=True)
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
