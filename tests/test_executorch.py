"""The ExecuTorch target (``--runtime executorch``, issue 21): ``torch.export`` -> XNNPACK ``.pte`` beside the
ONNX graph, listed and checksummed; its gate run in ExecuTorch's Python runtime; validate/run via the CLI
against ONNX Runtime on real padded text; a forged ``.pte`` refused in one line. One tiny BERT embed bundle
(shared, session-scoped) for the fast tests; the packaged MiniLM int8 and a tiny ModernBERT are ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import main
from bert_export.exporter import export
from bert_export.models.registry import FAMILIES
from bert_export.quantize.pipeline import OptimizeOptions
from bert_export.runtimes.factory import bundle_tokenizer, make_runner

from .conftest import needs, resign

HAVE_ET = importlib.util.find_spec("executorch") is not None and importlib.util.find_spec("torchao") is not None
ET = OptimizeOptions(runtime="executorch")
TEXTS = [
    "Short one.",
    "A longer sentence about the museum that reopened after the renovation of its east wing, with more words.",
    "Third text, of a middle length, padded in the batch.",
]


@pytest.fixture(autouse=True)
def _executorch() -> None:
    needs(HAVE_ET, "executorch and torchao are not installed (pip install 'bert-export[executorch]')")


@pytest.fixture(scope="session")
def et_bundle(make_bundle: Any) -> Path:
    return make_bundle("bert", "embed", optimization=ET)


def manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def cli(argv: list[str]) -> int:
    """``bert-export ARGV`` in-process: its exit status (main always exits)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def one_error_line(capsys: Any, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_export_writes_a_listed_program_and_its_gate_ran_in_executorch(et_bundle: Path) -> None:
    m = manifest(et_bundle)
    section = m["optimization"]["executorch"]
    assert m["runtime"] == "executorch" and section["program"] == "executorch/model.pte"
    assert section["backend"] == "XNNPACK" and section["delegated_subgraphs"] > 0
    assert "executorch/model.pte" in m["files"] and m["files"]["executorch/model.pte"]["bytes"] > 1000
    assert m["parity"]["passed"] and m["parity"]["runtime"] == "executorch"
    assert m["graph"]["file"] == "onnx/model.onnx"  # the ONNX graph stays beside it, fp32


def test_program_matches_onnx_runtime_on_padded_text(et_bundle: Path) -> None:
    """Real tokenized text, right-padded to mixed lengths: ExecuTorch and ONNX Runtime agree on real tokens."""
    b = load_bundle(et_bundle)
    enc = bundle_tokenizer(b)(TEXTS, padding=True, return_tensors="np")
    feed = {s.name: np.asarray(enc[s.name], np.int64) for s in b.inputs}
    keep = feed["attention_mask"].astype(bool)
    assert (~keep).sum() > 10  # the batch really is padded
    with make_runner(b, "executorch") as et, make_runner(b, "ort") as ort:
        got, ref = et.infer(feed), ort.infer(feed)
    assert np.abs(got["last_hidden_state"] - ref["last_hidden_state"])[keep].max() < 1e-4


def test_runner_splits_batches_above_the_programs_bound(et_bundle: Path) -> None:
    b = load_bundle(et_bundle)
    runner = make_runner(b, "executorch")
    runner.max_batch = 2  # type: ignore[attr-defined]
    ids = np.random.default_rng(0).integers(1000, 2000, (5, 9))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    with runner, make_runner(b, "ort") as ort:
        got, ref = runner.infer(feed), ort.infer(feed)
    assert got["last_hidden_state"].shape == (5, 9, 32)
    assert np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max() < 1e-4


def test_validate_and_run_via_the_cli(et_bundle: Path, capsys: Any) -> None:
    assert cli(["validate", str(et_bundle), "--runtime", "executorch", "-q"]) == 0
    capsys.readouterr()
    args = ["run", str(et_bundle), "--json", *[a for t in TEXTS for a in ("--text", t)]]
    assert cli([*args, "--runtime", "executorch"]) == 0
    et = json.loads(capsys.readouterr().out)
    assert cli(args) == 0
    ort = json.loads(capsys.readouterr().out)
    got, ref = np.asarray(et["embeddings"]), np.asarray(ort["embeddings"])
    assert got.shape == (3, 32) and np.abs(got - ref).max() < 1e-4


def test_forged_program_bytes_are_refused(et_bundle: Path, copy_bundle: Any, capsys: Any) -> None:
    bundle = copy_bundle(et_bundle)
    pte = bundle / "executorch" / "model.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    code = cli(["validate", str(bundle), "--runtime", "executorch", "-q"])
    one_error_line(capsys, code, "executorch/model.pte", "sha256")


def test_forged_program_with_a_resigned_manifest_is_one_line(et_bundle: Path, copy_bundle: Any, capsys: Any) -> None:
    """An attacker who rewrites the checksums too: ExecuTorch's own check refuses the file, in one line."""
    bundle = copy_bundle(et_bundle)
    pte = bundle / "executorch" / "model.pte"
    data = bytearray(pte.read_bytes())
    data[4:8] = b"XXXX"  # the flatbuffer identifier ("ET12")
    pte.write_bytes(bytes(data))
    resign(bundle)
    code = cli(["run", str(bundle), "--runtime", "executorch", "--text", "hello"])
    one_error_line(capsys, code, "ExecuTorch could not load model.pte", "re-export")


def test_program_path_must_be_listed(et_bundle: Path, copy_bundle: Any, capsys: Any) -> None:
    bundle = copy_bundle(et_bundle)

    def edit(m: dict[str, Any]) -> None:  # the top-level record and the graph's own (the runner reads the latter)
        for record in (m, *m.get("graphs", {}).values()):
            if "optimization" in record:
                record["optimization"]["executorch"]["program"] = "../model.pte"

    resign(bundle, edit)
    code = cli(["run", str(bundle), "--runtime", "executorch", "--text", "hello"])
    one_error_line(capsys, code, "re-export")


def test_a_bundle_without_a_program_is_refused(make_bundle: Any, capsys: Any) -> None:
    code = cli(["run", str(make_bundle("bert", "embed")), "--runtime", "executorch", "--text", "hello"])
    one_error_line(capsys, code, "no ExecuTorch program", "--runtime executorch")


def test_fp16_is_refused_before_any_work(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "b"
    code = cli(
        ["bert", "--task", "embed", "--random-init", "--tiny", "--runtime", "executorch", "--fp16", "--out", str(out)]
    )
    one_error_line(capsys, code, "--runtime executorch has no --fp16")
    assert not out.exists()


def test_int8_modes_dynamic_by_default_static_opt_in() -> None:
    """``--int8`` is dynamic (XNNPACK's per-token activations: the mode that holds the gate on real BERT weights);
    ``--int8-mode static`` selects calibrated per-tensor activations."""
    from bert_export.quantize.target_executorch import ProgramResult

    assert OptimizeOptions(runtime="executorch", int8=True).mode == "dynamic"
    static = OptimizeOptions(runtime="executorch", int8=True, int8_mode="static")
    static.check()  # a mode the target takes (ONNX-only targets refuse --int8-mode with one line)
    assert static.mode == "static"
    record = ProgramResult("int8", "1.5", 64, mode="dynamic").to_manifest()["int8"]
    assert record["mode"] == "dynamic" and "dynamic per-token" in record["quantizer"]


def test_rank_puts_the_layer_whose_error_reaches_the_outputs_first() -> None:
    """The fallback's ranking measures each Linear's int8 effect on the outputs: the last layer, fed one outlier
    channel (a per-tensor int8 scale then crushes the rest), ranks above an early layer with the same local
    error whose output a wide, saturating layer after it attenuates."""
    import torch

    from bert_export.models.tensors import TensorSpec
    from bert_export.quantize.target_executorch import linear_rank

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Embedding(50, 16)
            self.early, self.squash, self.last = (torch.nn.Linear(16, 16) for _ in range(3))

        def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
            x = self.emb(input_ids)
            x = torch.tanh(8 * self.squash(self.early(x)))  # saturates: early's small errors barely move it
            x = x.clone()
            x[..., 0] = x[..., 0] * 200.0  # one outlier channel into the last layer
            return {"out": self.last(x)}

    feeds = [{"input_ids": np.random.default_rng(k).integers(0, 50, (2, 9))} for k in range(3)]
    scores = linear_rank(Toy().eval(), [TensorSpec("input_ids", "int64", ("batch", "sequence"))], feeds, "static")
    assert set(scores) == {"early", "squash", "last"} and all(v >= 0 for v in scores.values())
    assert max(scores, key=lambda n: scores[n]) == "last", scores


@pytest.mark.slow
def test_int8_holds_the_gate(tmp_path: Path) -> None:
    """Tiny BERT, int8 through XNNPACK's pt2e quantizer (static per-tensor activations calibrated on our text,
    the default mode), under the int8 gate, run by ExecuTorch."""
    out = tmp_path / "tiny-int8"
    tiny = dict(FAMILIES["bert"].tiny_config)
    export(
        "bert",
        "embed",
        random_init=True,
        overrides=tiny,
        out=out,
        optimization=OptimizeOptions(runtime="executorch", int8=True, int8_mode="static"),
    )
    m = manifest(out)
    assert m["precision"] == "int8" and m["parity"]["passed"] and m["parity"]["runtime"] == "executorch"
    section = m["optimization"]["executorch"]["int8"]
    assert section["mode"] == "static" and section["calib_samples"] > 0
    assert cli(["validate", str(out), "--runtime", "executorch", "-q"]) == 0


def test_modernbert_past_its_window(make_bundle: Any) -> None:
    """Tiny ModernBERT (local window 16, global every 3rd layer) in a padded mixed-length batch of 3 whose
    rows are shorter and longer than the window: the program agrees with PyTorch (the model the bundle
    was exported from) on every real token. Batches of 1 and 3 at up to the bundle's 64 tokens also
    check that the batch stays dynamic (ExecuTorch's edge verifier specialised it to the export
    example's 2 through the GLU's ``chunk``: quantize/target_executorch.py ``splits_as_slices``)."""
    import torch

    from bert_export.exporter.loading import load_random
    from bert_export.models.registry import TASKS
    from bert_export.runtimes.torch_runner import TaskGraph

    fam = FAMILIES["modernbert"]
    window = fam.tiny_config["local_attention"]
    b = load_bundle(make_bundle("modernbert", "embed", optimization=ET, max_seq=64, validate=False))
    reference = TaskGraph(load_random(fam, TASKS["embed"], dict(fam.tiny_config), 0, None).model, ["last_hidden_state"])
    lengths = [7, 60, 3 * window]  # one inside the window, two past it; padded to 60 (3 x 60 > 2 x 64)
    ids = np.random.default_rng(0).integers(5, 1000, (len(lengths), 60))
    mask = (np.arange(60)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    with make_runner(b, "executorch") as et:
        for rows in (slice(0, 3), slice(1, 2)):
            feed = {"input_ids": ids[rows], "attention_mask": mask[rows]}
            got = et.infer(feed)["last_hidden_state"]
            with torch.no_grad():
                (ref,) = reference(**{k: torch.from_numpy(v) for k, v in feed.items()})
            keep = mask[rows].astype(bool)
            assert np.abs(got - ref.numpy())[keep].max() < 1e-4
