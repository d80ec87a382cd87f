"""Bad input: one clear line naming the fix, a non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from bert_export.bundle.reader import MANIFEST, sha256
from bert_export.cli.main import main
from bert_export.models import FAMILIES

from .conftest import MINILM_ID


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in-process; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    return int(exc.value.code or 0), capsys.readouterr().err


def assert_one_error_line(code: int, err: str, *needles: str, exit_code: int = 2) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == exit_code, err
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else []


@pytest.fixture(scope="module")
def modernbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("modernbert-model")
    ModernBertModel(ModernBertConfig(**FAMILIES["modernbert"].tiny_config)).save_pretrained(str(path))
    return path


@pytest.fixture
def minilm_copy(tmp_path: Path, minilm_dir: Path) -> Path:
    dst = tmp_path / "minilm"
    shutil.copytree(minilm_dir, dst)
    return dst


def test_unknown_family(capsys, tmp_path) -> None:
    code, err = run_cli(capsys, "gpt2", "--task", "qa", "--random-init")
    assert_one_error_line(code, err, "unknown family or command 'gpt2'", "bert, modernbert")


def test_unknown_task(capsys) -> None:
    code, err = run_cli(capsys, "bert", "--task", "ner", "--random-init")
    assert_one_error_line(code, err, "'ner' is not one of", "token-cls")


def test_missing_model_path(capsys, tmp_path) -> None:
    code, err = run_cli(capsys, "bert", "--task", "qa", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert_one_error_line(code, err, "does not exist", "--random-init")
    assert not (tmp_path / "o").exists()


def test_hub_id_not_in_cache(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(
        capsys, "bert", "--task", "qa", "--model", "google-bert/bert-base-cased", "--out", str(tmp_path / "o")
    )
    assert_one_error_line(code, err, "not in the local Hugging Face cache", "--model PATH", "--random-init")


def test_other_architecture_directory(capsys, tmp_path, modernbert_dir) -> None:
    code, err = run_cli(capsys, "bert", "--task", "embed", "--model", str(modernbert_dir), "--out", str(tmp_path / "o"))
    assert_one_error_line(code, err, "holds a 'modernbert' model, not bert", "bert-export modernbert")


def test_corrupt_weights(capsys, tmp_path, minilm_copy) -> None:
    weights = minilm_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    code, err = run_cli(capsys, "bert", "--task", "qa", "--model", str(minilm_copy), "--out", str(tmp_path / "o"))
    assert_one_error_line(code, err, "is corrupt", "model.safetensors")
    assert not (tmp_path / "o").exists()


def test_garbage_weights_header(capsys, tmp_path, minilm_copy) -> None:
    (minilm_copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    code, err = run_cli(capsys, "bert", "--task", "embed", "--model", str(minilm_copy), "--out", str(tmp_path / "o"))
    assert_one_error_line(code, err, "is corrupt")


def test_pickle_only_weights_refused(capsys, tmp_path, minilm_copy) -> None:
    (minilm_copy / "model.safetensors").rename(minilm_copy / "pytorch_model.bin")
    code, err = run_cli(capsys, "bert", "--task", "embed", "--model", str(minilm_copy), "--out", str(tmp_path / "o"))
    assert_one_error_line(code, err, "pickle", "--allow-pickle")


def test_max_seq_beyond_model(capsys, tmp_path) -> None:
    code, err = run_cli(
        capsys, "bert", "--task", "qa", "--model", MINILM_ID, "--max-seq", "1024", "--out", str(tmp_path / "o")
    )
    assert_one_error_line(code, err, "exceeds the model's max_position_embeddings (512)", "--max-seq 512")
    assert not (tmp_path / "o").exists()


def test_existing_out_needs_force(capsys, tmp_path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "bert", "--task", "qa", "--random-init", "--tiny", "--out", str(out))
    assert_one_error_line(code, err, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_export_leaves_nothing_behind(capsys, tmp_path) -> None:
    out = tmp_path / "o"
    code, err = run_cli(capsys, "bert", "--task", "qa", "--random-init", "--tiny", "--opset", "17", "--out", str(out))
    assert_one_error_line(code, err, "opset 18 or newer")
    assert not out.exists() and leftovers(tmp_path) == []


def test_bad_config_override(capsys, tmp_path) -> None:
    code, err = run_cli(
        capsys, "bert", "--task", "qa", "--random-init", "--config", "hidden_size", "--out", str(tmp_path / "o")
    )
    assert_one_error_line(code, err, "KEY=VALUE")


def test_force_replaces_atomically(capsys, tmp_path) -> None:
    out = tmp_path / "o"
    out.mkdir()  # a bundle of ours (--force refuses other directories: tests/test_publish.py)
    (out / "manifest.json").write_text('{"schema_version": 1, "files": {"stale.txt": {}}}')
    (out / "stale.txt").write_text("old")
    code, _ = run_cli(
        capsys, "bert", "--task", "seq-cls", "--random-init", "--tiny", "-q", "--out", str(out), "--force"
    )
    assert code == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").exists()
    assert leftovers(tmp_path) == []


# --- validate on damaged bundles ---------------------------------------------------------------------


def test_validate_missing_bundle(capsys, tmp_path) -> None:
    code, err = run_cli(capsys, "validate", str(tmp_path / "none"))
    assert_one_error_line(code, err, "does not exist")


def test_validate_truncated_bundle(capsys, make_bundle, copy_bundle) -> None:
    bundle = copy_bundle(make_bundle("bert", "qa"))
    model = bundle / "onnx/model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    code, err = run_cli(capsys, "validate", str(bundle))
    assert_one_error_line(code, err, "model.onnx does not match its sha256", "re-export")


def test_validate_bundle_with_missing_file(capsys, make_bundle, copy_bundle) -> None:
    bundle = copy_bundle(make_bundle("bert", "qa"))
    (bundle / "reference.safetensors").unlink()
    code, err = run_cli(capsys, "validate", str(bundle))
    assert_one_error_line(code, err, "reference.safetensors is missing")


def test_validate_corrupt_manifest(capsys, make_bundle, copy_bundle) -> None:
    bundle = copy_bundle(make_bundle("bert", "qa"))
    (bundle / MANIFEST).write_text('{"schema_version": 1, "family": ')
    code, err = run_cli(capsys, "validate", str(bundle))
    assert_one_error_line(code, err, "not valid JSON")


def _alter_weights(bundle: Path, rehash: bool) -> None:
    """Scale the largest initializer by 1.05 (what a bad re-quantization or a rogue edit does)."""
    model = onnx.load(str(bundle / "onnx/model.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(biggest) * 1.05
    biggest.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), biggest.name))
    onnx.save(model, str(bundle / "onnx/model.onnx"))
    if rehash:  # also forge the checksum: only the numeric comparison can catch this
        manifest = json.loads((bundle / MANIFEST).read_text())
        entry = manifest["files"]["onnx/model.onnx"]
        entry["sha256"], entry["bytes"] = (
            sha256(bundle / "onnx/model.onnx"),
            (bundle / "onnx/model.onnx").stat().st_size,
        )
        (bundle / MANIFEST).write_text(json.dumps(manifest))


def test_validate_detects_altered_weights_by_checksum(capsys, make_bundle, copy_bundle) -> None:
    bundle = copy_bundle(make_bundle("bert", "token-cls", model=MINILM_ID))
    _alter_weights(bundle, rehash=False)
    code, err = run_cli(capsys, "validate", str(bundle))
    assert_one_error_line(code, err, "was modified after export")


def test_validate_detects_altered_weights_numerically(capsys, make_bundle, copy_bundle) -> None:
    bundle = copy_bundle(make_bundle("bert", "token-cls", model=MINILM_ID))
    _alter_weights(bundle, rehash=True)
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert_one_error_line(code, err, "fails its fp32 gate", "max abs diff", exit_code=1)


def test_cli_error_is_one_line_without_traceback(tmp_path) -> None:
    """The installed entry point, as users run it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_export.cli.main",
            "modernbert",
            "--task",
            "qa",
            "--model",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: "), proc.stderr
    assert proc.stdout == ""


def test_hub_id_from_local_cache(capsys, tmp_path, monkeypatch, minilm_dir) -> None:
    """A hub id that is in the local Hugging Face cache loads from it, without network."""
    cache = tmp_path / "hub"
    snap = cache / "models--acme--minilm" / "snapshots" / ("0" * 40)
    shutil.copytree(minilm_dir, snap)
    (cache / "models--acme--minilm" / "refs").mkdir()
    (cache / "models--acme--minilm" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(
        capsys,
        "bert",
        "--task",
        "seq-cls",
        "--model",
        "acme/minilm",
        "--num-labels",
        "2",
        "-q",
        "--out",
        str(tmp_path / "o"),
        "--no-validate",
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert manifest["source"] == {
        "kind": "hub",
        "ref": "acme/minilm",
        "seed": None,
        "new_head_params": ["classifier.bias", "classifier.weight"],
    }


def test_failed_parity_gate_exits_1_writes_report_not_bundle(capsys, tmp_path, monkeypatch) -> None:
    from bert_export.runtimes import parity

    monkeypatch.setitem(parity.GATES, "fp32", parity.Gate(max_abs=0.0, agreement=1.0, cos_mean=1.0, cos_min=1.0))
    out, report = tmp_path / "o", tmp_path / "report.json"
    code, err = run_cli(
        capsys,
        "bert",
        "--task",
        "token-cls",
        "--random-init",
        "--tiny",
        "-q",
        "--out",
        str(out),
        "--report",
        str(report),
    )
    assert_one_error_line(code, err, "parity gate failed", "max abs diff", "nothing was written", exit_code=1)
    assert not out.exists() and leftovers(tmp_path) == []
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["failures"]
