"""Export and parity on every family x task (tiny configs) and on the packaged real MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from bert_export.exporter import load_bundle, validate
from bert_export.models import FAMILIES, TASKS
from bert_export.runtimes.ort_runner import OrtRunner

from .conftest import MINILM_ID

# BERT and ModernBERT here; their relatives (RoBERTa, XLM-R, DistilBERT, ELECTRA) in tests/test_families.py,
# exported from directories with their own tokenizers (one task each in the quick run, the rest under slow).
BASE = ("bert", "modernbert")
PAIRS = [(f, t) for f in BASE for t in TASKS]


def parity(bundle: Path) -> dict:
    return json.loads((bundle / "parity.json").read_text())


@pytest.mark.parametrize(("family", "task"), PAIRS)
def test_tiny_export_passes_fp32_gate(make_bundle, family: str, task: str) -> None:
    bundle = make_bundle(family, task)
    report = parity(bundle)
    assert report["passed"], report["failures"]
    for name, worst in report["summary"]["max_abs"].items():
        assert worst <= 1e-4, (name, worst)
    shapes = {tuple(c["shape"]) for c in report["cases"]}
    assert len(shapes) >= 3, "dynamic axes must be exercised at three or more shapes"
    assert (1, 1) in shapes
    names = [c["name"] for c in report["cases"]]
    assert {"single-token", "padded-batch", "max-seq"} <= set(names)
    metrics = report["summary"]
    if task == "embed":
        assert metrics["cosine_min"] > 0.99999
    elif task == "qa":
        assert metrics["span_exact_match"] == 1.0
    elif task == "mlm":
        assert metrics["top5_agreement"] >= 0.99
    elif task == "rerank":  # one query's passages per pair case: the top passage and the pairwise order
        assert metrics["top1_agreement"] == 1.0 and metrics["order_agreement"] >= 0.99
        assert "text-pairs-0" in names
    else:
        assert metrics["argmax_agreement"] >= 0.99
    # validate() re-runs the stored cases against the stored PyTorch outputs.
    again = validate(bundle)
    assert again.passed, again.failures
    assert again.summary["max_abs"].keys() == report["summary"]["max_abs"].keys()
    assert again.providers["active"][0] == "CPUExecutionProvider"


@pytest.mark.parametrize("family", BASE)
def test_graph_has_named_dynamic_axes(make_bundle, family: str) -> None:
    bundle = make_bundle(family, "qa")
    model = onnx.load(str(bundle / "onnx/model.onnx"), load_external_data=False)
    manifest = load_bundle(bundle).manifest
    assert model.opset_import[0].version >= 18
    assert [i.name for i in model.graph.input] == [s["name"] for s in manifest["inputs"]]
    for value in (*model.graph.input, *model.graph.output):
        dims = [d.dim_param for d in value.type.tensor_type.shape.dim]
        assert dims[:2] == ["batch", "sequence"], (value.name, dims)
    assert ("token_type_ids" in [i.name for i in model.graph.input]) == FAMILIES[family].uses_token_type_ids


def test_modernbert_past_window_with_padding(make_bundle) -> None:
    bundle = make_bundle("modernbert", "token-cls")
    manifest = load_bundle(bundle).manifest
    window = manifest["local_attention"]
    case = next(c for c in parity(bundle)["cases"] if c["name"] == "past-window")
    batch, seq = case["shape"]
    assert seq > 2 * window and batch >= 2  # well past the window, and padded (rows of different lengths)
    assert case["outputs"]["logits"]["max_abs"] <= 1e-4


def test_modernbert_long_sequence_beyond_export_example(make_bundle) -> None:
    """A length never seen at export time (and past the window) runs and stays within tolerance."""
    bundle = make_bundle("modernbert", "embed")
    b = load_bundle(bundle)
    rng = np.random.default_rng(3)
    feed = {"input_ids": rng.integers(5, 1000, (3, 211)), "attention_mask": np.ones((3, 211), np.int64)}
    feed["attention_mask"][1, 150:] = 0
    feed["attention_mask"][2, 20:] = 0
    with OrtRunner(b.model_path, b.inputs, b.outputs, b.max_seq) as runner:
        out = runner.infer(feed)["last_hidden_state"]
    assert out.shape == (3, 211, 32) and np.isfinite(out).all()


def test_manifest_records_what_consumers_need(make_bundle) -> None:
    manifest = load_bundle(make_bundle("bert", "seq-cls", num_labels=3)).manifest
    assert manifest["family"] == "bert" and manifest["task"] == "seq-cls" and manifest["precision"] == "fp32"
    assert manifest["labels"]["num_labels"] == 3 and len(manifest["labels"]["id2label"]) == 3
    assert manifest["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}]
    assert manifest["max_sequence_length"] == 128
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= manifest["versions"].keys()
    assert {"onnx/model.onnx", "config.json", "parity.json", "reference.safetensors", "vocab.txt"} <= manifest[
        "files"
    ].keys()
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["parity"]["passed"] is True
    assert manifest["export"]["seconds"] > 0


# --- the packaged real BERT (all-MiniLM-L6-v2), on real text through its tokenizer -------------------


@pytest.mark.parametrize("task", ["embed", "qa", "token-cls"])
def test_minilm_real_text_parity(make_bundle, task: str) -> None:
    bundle = make_bundle("bert", task, model=MINILM_ID)
    report = parity(bundle)
    assert report["passed"], report["failures"]
    assert max(report["summary"]["max_abs"].values()) <= 1e-4
    manifest = load_bundle(bundle).manifest
    assert manifest["tokenizer"]["kind"] == "wordpiece" and "tokenizer.json" in manifest["tokenizer"]["files"]
    assert manifest["max_sequence_length"] == 512
    padded = next(c for c in report["cases"] if c["name"] == "padded-batch")
    assert padded["shape"][0] == 6 and padded["shape"][1] > 20  # real sentences of mixed lengths
    if task == "embed":
        assert manifest["pooling"] == {"mode": "mean", "normalize": True, "source": "sentence-transformers"}
        assert report["summary"]["cosine_min"] > 0.999999
    if task == "qa":
        assert manifest["source"]["new_head_params"] == ["qa_outputs.bias", "qa_outputs.weight"]


def test_minilm_embed_matches_sentence_transformers_pooling(make_bundle, minilm_dir: Path) -> None:
    """The bundle's mean-pooled output equals the model card's sentence embedding for real text."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from bert_export.runtimes.parity import pool

    bundle = load_bundle(make_bundle("bert", "embed", model=MINILM_ID))
    tok = AutoTokenizer.from_pretrained(str(bundle.path))
    texts = ["A man is eating food.", "Someone is having a meal, slowly and happily, at the table."]
    enc = tok(texts, padding=True, return_tensors="np")
    feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with OrtRunner(bundle.model_path, bundle.inputs, bundle.outputs, bundle.max_seq) as runner:
        ours = pool(runner.infer(feed)["last_hidden_state"], feed["attention_mask"], "mean")
    ref_model = BertModel.from_pretrained(str(minilm_dir)).eval()
    with torch.no_grad():
        hidden = ref_model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
    ref = pool(hidden, feed["attention_mask"], "mean")
    assert np.abs(ours - ref).max() < 1e-5


def test_new_head_is_seeded(tmp_path) -> None:
    """A head missing from the checkpoint is initialised reproducibly (same seed, same bundle numbers)."""
    from bert_export.exporter.loading import load_source
    from bert_export.models import get_family, get_task

    heads = [
        load_source(get_family("bert"), get_task("qa"), model=MINILM_ID, seed=7).model.qa_outputs.weight
        for _ in range(2)
    ]
    other = load_source(get_family("bert"), get_task("qa"), model=MINILM_ID, seed=8).model.qa_outputs.weight
    assert (heads[0] == heads[1]).all() and not (heads[0] == other).all()
