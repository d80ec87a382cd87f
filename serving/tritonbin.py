"""PyTriton's ``tritonserver`` binary run directly on a model repository (``--model-repository``).

PyTriton ships a real Triton server with the Python backend only (no onnxruntime or tensorrt
backend). This lays it out the way PyTriton does (the stub for this Python version in
``backends/python``) so that the Python-backend models of a ``bert-export triton`` repository can be
loaded and exercised on a CPU-only machine; see docs/serving.md for what that does and does not prove.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bert_export.serving.stubenv import stub_process_env


def prepare_tritonserver(dest: Path) -> Path:
    """Copy PyTriton's server into ``dest`` with this interpreter's backend stub; return ``dest``."""
    from pytriton.utils.distribution import get_root_module_path, get_stub_path

    src = get_root_module_path() / "tritonserver"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"), dirs_exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(get_stub_path(version), dest / "backends" / "python" / "triton_python_backend_stub")
    return dest


def command(
    server_dir: Path, repo: Path, http: int, grpc: int, metrics: int, models: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that serve ``models`` of ``repo`` on 127.0.0.1 (explicit model control)."""
    argv = [
        str(server_dir / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={server_dir / 'backends'}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in models),
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--exit-on-error=true",
        "--exit-timeout-secs=5",
    ]
    return argv, stub_process_env()
