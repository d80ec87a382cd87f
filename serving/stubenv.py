"""The environment PyTriton's Python-backend stub runs in, fixed so that it starts from a venv.

Two snags, both handled here rather than documented away:

1. The stub (``triton_python_backend_stub``, a C++ program embedding Python) links ``libpython3.X.so``
   and the dynamic loader finds the *system* one first. When the running interpreter is not the
   system one (a venv over pyenv, conda, a container's own build) the stub then runs a different
   patch release's libpython against this interpreter's standard library and dies at model load
   (``'_thread.RLock' object has no attribute '_recursion_count'``). The server process gets this
   interpreter's library directory (``sysconfig LIBDIR``) first on ``LD_LIBRARY_PATH``.
2. The stub's pybind11 bindings predate NumPy 2 (nvidia-pytriton pins ``numpy<2`` for that reason):
   under NumPy 2 every BYTES tensor is misread (``unpack_from requires a buffer of at least ...``).
   When this process has NumPy 2, the stub runs in a small companion venv beside this one: its own
   site-packages holds only ``numpy<2`` and a ``.pth`` adds this environment's site-packages after
   it, so the stub sees everything else (pytriton's proxy, pyzmq) unchanged. Our process keeps
   NumPy 2; the two exchange raw buffers only. ``python -m bert_export.serving.stubenv`` creates it
   (CI does so in .ci/install.d/40-serve.sh).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bert_export.models import BertExportError

PTH = "zz_bert_export_stub.pth"
ENV_VAR = "BERT_EXPORT_STUB_ENV"


def libpython_dir() -> Path | None:
    """This interpreter's shared-library directory, when it has a ``libpython*.so`` there (else None: static build)."""
    libdir, soname = (
        sysconfig.get_config_var("LIBDIR"),
        sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY"),
    )
    if libdir and soname and (Path(libdir) / soname).exists():
        return Path(libdir)
    return None


def needs_companion() -> bool:
    """True when this process has NumPy 2, which the stub cannot use."""
    return int(np.__version__.split(".")[0]) >= 2


def companion_path() -> Path:
    """Where the companion venv lives: $BERT_EXPORT_STUB_ENV, else inside this environment's prefix."""
    tag = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return Path(os.environ.get(ENV_VAR) or Path(sys.prefix) / "var" / "bert-export" / f"triton-stub-{tag}")


def _site(root: Path) -> Path:
    return root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _our_site_dirs() -> list[str]:
    return [p for p in sys.path if p and os.path.isdir(p) and os.path.basename(p) in ("site-packages", "dist-packages")]


def _numpy_version(site: Path) -> str | None:
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if (dist.metadata["Name"] or "").lower() == "numpy":
            return dist.version
    return None


def prepare_companion(root: Path | None = None) -> Path:
    """Create (or refresh) the companion venv: ``numpy<2`` from the package index, then the ``.pth``."""
    root = root or companion_path()
    if not (root / "pyvenv.cfg").exists():
        venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    site = _site(root)
    version = _numpy_version(site)
    if version is None or int(version.split(".")[0]) >= 2:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--upgrade",
            "--target",
            str(site),
            "numpy>=1.21,<2",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise BertExportError(f"could not install numpy<2 for the Triton stub into {site}: {tail}")
    _write_pth(site)
    return root


def _write_pth(site: Path) -> None:
    text = "\n".join(_our_site_dirs()) + "\n"
    pth = site / PTH
    if not pth.exists() or pth.read_text() != text:
        pth.write_text(text)


def stub_python_env() -> Path:
    """The Python environment the stub should run in; a one-line error naming the fix when it is not ready."""
    if not needs_companion():
        return Path(sys.exec_prefix)
    root = companion_path()
    site = _site(root)
    version = _numpy_version(site) if site.is_dir() else None
    if not (root / "pyvenv.cfg").exists() or version is None or int(version.split(".")[0]) >= 2:
        raise BertExportError(
            f"this environment has numpy {np.__version__}, which Triton's Python-backend stub cannot use; "
            f"create its numpy<2 companion environment once with: {sys.executable} -m bert_export.serving.stubenv"
        )
    _write_pth(site)
    return root


@contextlib.contextmanager
def server_environment() -> Iterator[Path]:
    """Around PyTriton's ``Triton.run()``: the stub's library path and Python environment (restored afterwards).

    PyTriton builds the server's environment from ``os.environ`` and its own
    ``get_triton_python_backend_python_env()`` when it starts the process, so both are set only for
    that moment.
    """
    import pytriton.server.triton_server as triton_server

    env_root = stub_python_env()
    saved_ld = os.environ.get("LD_LIBRARY_PATH")
    saved_fn = getattr(triton_server, "get_triton_python_backend_python_env", None)
    if saved_fn is None:
        raise BertExportError(
            "this nvidia-pytriton has no get_triton_python_backend_python_env; install nvidia-pytriton>=0.5,<0.8"
        )
    libdir = libpython_dir()
    if libdir is not None:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir)] + ([saved_ld] if saved_ld else []))
    triton_server.get_triton_python_backend_python_env = lambda: env_root
    try:
        yield env_root
    finally:
        triton_server.get_triton_python_backend_python_env = saved_fn
        if saved_ld is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved_ld


def stub_process_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running PyTriton's ``tritonserver`` binary directly (model repositories with
    Python-backend models): the same two fixes, plus the binary's bundled libraries."""
    from pytriton.utils.distribution import get_libs_path

    env = dict(os.environ if base is None else base)
    libdir = libpython_dir()
    parts = (
        ([str(libdir)] if libdir else [])
        + [str(get_libs_path())]
        + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else [])
    )
    env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    env["PATH"] = os.pathsep.join([str(stub_python_env() / "bin"), env.get("PATH", "")])
    return env


def main() -> None:
    root = prepare_companion() if needs_companion() else Path(sys.exec_prefix)
    print(f"Triton stub environment: {root}")


if __name__ == "__main__":
    main()
