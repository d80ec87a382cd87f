"""TensorRT paths that need no GPU: profiles, build records, refusals, clean failures.

TensorRT cannot be installed on CI machines; ``FakeTrt`` stands in for the ``tensorrt`` module
where a test checks how we drive its API (flags per version, profile shapes, timing cache, what
gets saved). The real build/execute test at the bottom runs only on a GPU with TensorRT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.models import BertExportError
from bert_export.runtimes import trt_build, trt_runner
from bert_export.runtimes.providers import GpuInfo, detect_gpu
from bert_export.runtimes.trt_build import Profile, default_profile, parse_profile

H100 = GpuInfo(True, "NVIDIA H100 80GB HBM3", (9, 0), 1)
A100 = GpuInfo(True, "NVIDIA A100-SXM4-40GB", (8, 0), 1)


@pytest.fixture(scope="module")
def bert_qa(make_bundle: Any) -> Path:
    return make_bundle("bert", "qa")


# --- profiles --------------------------------------------------------------------------------


def test_default_profile_from_manifest(bert_qa: Path) -> None:
    b = load_bundle(bert_qa)
    p = default_profile(b.max_seq)
    assert p == Profile((1, 1), (8, min(128, b.max_seq)), (32, b.max_seq))
    assert trt_build.resolve_profile(b) == p
    assert default_profile(64).opt == (8, 64)


def test_parse_profile() -> None:
    assert parse_profile("1x1,8x128,32x512", 512) == Profile((1, 1), (8, 128), (32, 512))
    assert parse_profile(" 2X16 , 4x32,4x64", 64).opt == (4, 32)
    for bad, why in [
        ("1x1,8x128", "MIN,OPT,MAX"),
        ("1,8,32", "MIN,OPT,MAX"),
        ("0x1,1x1,1x1", ">= 1"),
        ("1x1,8x128,4x512", "MIN <= OPT <= MAX"),
        ("1x1,8x128,32x1024", "exceeds"),
        ("axb,1x1,1x1", "MIN,OPT,MAX"),
    ]:
        with pytest.raises(BertExportError, match=why):
            parse_profile(bad, 512)


def test_out_of_profile_shapes() -> None:
    p = Profile((1, 1), (8, 128), (32, 512))
    p.check(1, 1)
    p.check(32, 512)
    for b, s in [(33, 10), (1, 513), (64, 600)]:
        with pytest.raises(BertExportError, match="outside the engine's profile") as err:
            p.check(b, s)
        assert "--trt-profile" in str(err.value) and "\n" not in str(err.value)


# --- build records -----------------------------------------------------------------------------


def _record(b: Any, **changes: Any) -> dict[str, Any]:
    rec = trt_build.make_record(
        b, b"engine-bytes", trt_version="10.9.0", gpu=H100, profile=default_profile(b.max_seq), strongly_typed=False
    )
    rec.update(changes)
    return rec


def test_record_checks(bert_qa: Path) -> None:
    b = load_bundle(bert_qa)
    rec = _record(b)
    assert rec["onnx_sha256"] == b.manifest["files"][b.graph["file"]]["sha256"] and rec["compute_capability"] == "9.0"
    trt_build.check_record(rec, b, trt_version="10.9.0", gpu=H100)
    cases = [
        ({}, dict(trt_version="10.10.0", gpu=H100), "built with TensorRT 10.9.0"),
        ({}, dict(trt_version="10.9.0", gpu=A100), "A100"),
        ({"onnx_sha256": "0" * 64}, dict(trt_version="10.9.0", gpu=H100), "another model.onnx"),
        ({"gpu": None, "file": None}, dict(trt_version="10.9.0", gpu=H100), "built with"),
    ]
    for change, here, why in cases:
        with pytest.raises(BertExportError, match=why) as err:
            trt_build.check_record(_record(b, **change), b, **here)
        assert "rebuild it with `bert-export engine" in str(err.value)
    with pytest.raises(BertExportError, match="incomplete"):
        trt_build.check_record({"file": "model.engine"}, b, trt_version="10.9.0", gpu=H100)


def test_engine_checksum(bert_qa: Path, copy_bundle: Any) -> None:
    b = load_bundle(copy_bundle(bert_qa))
    rec = _record(b)
    with pytest.raises(BertExportError, match="missing"):
        trt_build.read_engine(b, rec)
    trt_build.save_engine(b, b"engine-bytes", rec)
    assert trt_build.read_engine(b, rec) == b"engine-bytes"
    (b.path / "model.engine").write_bytes(b"engine-bytez")
    with pytest.raises(BertExportError, match="does not match its sha256"):
        trt_build.read_engine(b, rec)


# --- a fake tensorrt module --------------------------------------------------------------------


class FakeTrt(types.ModuleType):
    """Just enough of TensorRT's Python API for the build path, recording what it was asked."""

    def __init__(self, version: str) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: dict[str, Any] = {"flags": set(), "cleared": set(), "shapes": {}}
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, severity: int) -> None: ...

        class Flag:
            STRONGLY_TYPED = 1

        class BuilderFlag:
            FP16, INT8, TF32 = "FP16", "INT8", "TF32"

        class MemoryPoolType:
            WORKSPACE = "WORKSPACE"

        class Network:
            def __init__(self, flags: int) -> None:
                fake.calls["network_flags"] = flags
                self.inputs: list[Any] = []

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, i: int) -> Any:
                return self.inputs[i]

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: Network, logger: Logger) -> None:
                self.network = network

            def parse_from_file(self, path: str) -> bool:
                graph = onnx.load(path, load_external_data=False).graph
                self.network.inputs = [types.SimpleNamespace(name=i.name) for i in graph.input]
                return True

        class Cache:
            def serialize(self) -> bytes:
                return b"timing-cache"

        class Config:
            def set_memory_pool_limit(self, pool: str, size: int) -> None: ...

            def add_optimization_profile(self, p: Any) -> None: ...

            def set_flag(self, f: str) -> None:
                fake.calls["flags"].add(f)

            def clear_flag(self, f: str) -> None:
                fake.calls["cleared"].add(f)

            def create_timing_cache(self, data: bytes) -> Cache:
                fake.calls["timing_in"] = data
                return Cache()

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> None: ...

            def get_timing_cache(self) -> Cache:
                return Cache()

        class OptProfile:
            def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
                fake.calls["shapes"][name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger: Logger) -> None: ...

            def create_network(self, flags: int = 0) -> Network:
                return Network(flags)

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> OptProfile:
                return OptProfile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes:
                return b"serialized-engine"

        self.Logger, self.NetworkDefinitionCreationFlag, self.BuilderFlag = Logger, Flag, BuilderFlag
        self.MemoryPoolType, self.OnnxParser, self.Builder = MemoryPoolType, OnnxParser, Builder


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(trt_build, "detect_gpu", lambda: H100)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("version,typed", [("10.9.0", False), ("11.1.0", True)])
def test_build_engine_with_fake_tensorrt(
    version: str, typed: bool, bert_qa: Path, copy_bundle: Any, fake_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    b = load_bundle(copy_bundle(bert_qa))
    profile = parse_profile("1x1,4x16,8x32", b.max_seq)
    data, record = trt_build.build_engine(b, profile)
    assert data == b"serialized-engine"
    assert fake.calls["network_flags"] == (1 << 1 if typed else 0)
    assert fake.calls["shapes"] == {s.name: ((1, 1), (4, 16), (8, 32)) for s in b.inputs}
    assert fake.calls["cleared"] == {"TF32"} and fake.calls["flags"] == set()  # fp32 bundle: no reduced precision
    assert record["strongly_typed"] is typed and record["tensorrt_version"] == version and record["gpu"] == H100.name
    # The engine sits beside the verified set: the bundle still verifies, and the record is in the manifest.
    again = load_bundle(b.path)
    assert again.manifest["tensorrt"] == record and (b.path / "model.engine").read_bytes() == data
    assert "model.engine" not in again.manifest["files"]
    assert trt_build.timing_cache_path(version, H100).read_bytes() == b"timing-cache"
    assert trt_build.precision_flags(fake, "fp16", typed) == ([] if typed else ["FP16"])
    assert trt_build.precision_flags(fake, "int8", typed) == ([] if typed else ["INT8", "FP16"])


def test_runner_refuses_foreign_engine(
    bert_qa: Path, copy_bundle: Any, fake_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt("10.9.0"))
    b = load_bundle(copy_bundle(bert_qa))
    rec = trt_build.make_record(
        b, b"x", trt_version="10.9.0", gpu=A100, profile=default_profile(b.max_seq), strongly_typed=False
    )
    trt_build.save_engine(b, b"x", rec)
    runner = trt_runner.TrtRunner(load_bundle(b.path))
    feed = {s.name: np.ones((1, 4), np.int64) for s in b.inputs}
    with pytest.raises(BertExportError, match="A100.*this machine has TensorRT 10.9.0 on NVIDIA H100"):
        runner.infer(feed)
    # The same engine on its own GPU gets past the record check, then needs CUDA torch (CPU torch here).
    import torch

    monkeypatch.setattr(trt_build, "detect_gpu", lambda: A100)
    monkeypatch.setattr(trt_runner, "require_gpu", lambda: A100)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # same answer on a GPU machine
    with pytest.raises(BertExportError, match="has no CUDA"):
        trt_runner.TrtRunner(load_bundle(b.path)).infer(feed)


def test_runner_checks_before_gpu(bert_qa: Path) -> None:
    """Bad feeds and out-of-profile shapes fail the same way on a machine without a GPU."""
    b = load_bundle(bert_qa)
    runner = trt_runner.TrtRunner(b, "1x1,2x8,4x16")
    assert runner.rebuild  # an explicit profile other than the stored engine's
    with pytest.raises(BertExportError, match="outside the engine's profile"):
        runner.infer({s.name: np.ones((5, 8), np.int64) for s in b.inputs})
    with pytest.raises(BertExportError, match="dtype"):
        runner.infer({s.name: np.ones((1, 8), np.float32) for s in b.inputs})
    assert not runner.active


@pytest.mark.skipif(detect_gpu().available, reason="this machine has a GPU")
def test_no_gpu_is_one_clean_line(bert_qa: Path) -> None:
    with pytest.raises(BertExportError, match="TensorRT needs an NVIDIA GPU"):
        trt_build.build_engine(load_bundle(bert_qa))


@pytest.mark.parametrize(
    "args",
    [
        ["run", "{b}", "--question", "Who?", "--context", "Jane wrote it.", "--runtime", "trt"],
        ["engine", "{b}"],
        ["validate", "{b}", "--runtime", "trt", "-q"],
        ["run", "{b}", "--question", "Who?", "--context", "Jane wrote it.", "--runtime", "ort-trt", "--strict-runtime"],
    ],
)
def test_cli_trt_without_gpu_fails_cleanly(args: list[str], bert_qa: Path) -> None:
    env = {**os.environ, "BERT_EXPORT_NO_GPU": "1"}
    cmd = [sys.executable, "-c", "from bert_export.cli.main import main; main()", *[a.format(b=bert_qa) for a in args]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "GPU" in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not (bert_qa / "model.engine").exists()


# --- on a real GPU with TensorRT only ------------------------------------------------------------


def _have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(
    not (detect_gpu().available and _have_tensorrt()), reason="needs an NVIDIA GPU with TensorRT (and CUDA torch)"
)
def test_real_engine_build_and_validate(bert_qa: Path, copy_bundle: Any, tmp_path: Path) -> None:
    from bert_export.exporter.api import validate

    path = copy_bundle(bert_qa)
    report = validate(path, runtime="trt")
    assert report.passed, report.failures
    assert json.loads((path / "manifest.json").read_text())["tensorrt"]["file"] == "model.engine"
    assert load_bundle(path).manifest["tensorrt"]["profile"]["max"][1] == load_bundle(path).max_seq


@pytest.mark.gpu
@pytest.mark.skipif(
    not (detect_gpu().available and _have_tensorrt()), reason="needs an NVIDIA GPU with TensorRT (and CUDA torch)"
)
def test_real_engine_runs_the_length_switch(make_bundle: Any, copy_bundle: Any) -> None:
    """ModernBERT's local layers are ONNX ``If`` length switches (dense up to 4 windows, blocked past): TensorRT
    builds both branches (IIfConditional) and the parity cases, short and at max_seq (256, the tiny window
    being 16), take each side. Not run on the CPU-only machines this was written on (#23)."""
    import onnx

    from bert_export.exporter.api import validate
    from bert_export.quantize.pipeline import OptimizeOptions

    path = copy_bundle(make_bundle("modernbert", "embed", optimization=OptimizeOptions(runtime="trt")))
    assert [n.op_type for n in onnx.load(str(load_bundle(path).model_path)).graph.node].count("If") == 2
    assert load_bundle(path).max_seq > 64
    report = validate(path, runtime="trt")
    assert report.passed, report.failures
