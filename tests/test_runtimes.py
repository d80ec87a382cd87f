"""Runtimes end to end on real text: every task through ONNX Runtime (CPU) with post-processing,
the provider plan and its honest report, and malformed feeds thrown at every runner.

Uses the packaged real MiniLM for qa / embed / token-cls (its heads for qa and token-cls are new,
randomly initialised, so answers are checked for validity, not for being right) and tiny
random-init BERT bundles (MiniLM's WordPiece tokenizer) for seq-cls and mlm. About 60 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_export.bundle.reader import load_bundle
from bert_export.models import FAMILIES, BertExportError
from bert_export.runtimes import providers
from bert_export.runtimes.base import Runner
from bert_export.runtimes.factory import make_runner
from bert_export.runtimes.ort_runner import OrtRunner
from bert_export.runtimes.predict import predict
from bert_export.runtimes.providers import CPU, CUDA, TRT, GpuInfo, plan_providers, settle
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES
from bert_export.runtimes.trt_runner import TrtRunner

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
NO_GPU = GpuInfo(False, reason="no NVIDIA driver (test)")
H100 = GpuInfo(True, "NVIDIA H100", (9, 0), 1)


@pytest.fixture(scope="module")
def minilm(make_bundle: Any) -> Any:
    return lambda task: make_bundle("bert", task, model=MINILM, max_seq=128)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from bert_export.cli.main import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


# --- every task on real text ---------------------------------------------------------------------


def test_qa_answers_are_spans_of_the_context(minilm: Any) -> None:
    bundle = load_bundle(minilm("qa"))
    with make_runner(bundle, "ort") as runner:
        for question, context in QA_PAIRS:
            (r,) = predict(bundle, question=question, context=context, runner=runner).results
            assert set(r) == {"answer", "score", "start", "end"}
            assert r["answer"] and r["answer"] == context[r["start"] : r["end"]]
            assert 0 < r["score"] <= 1


def test_run_json_qa_via_cli(minilm: Any) -> None:
    question, context = QA_PAIRS[2]
    proc = _cli("run", str(minilm("qa")), "--question", question, "--context", context, "--json")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    r = json.loads(line)
    assert list(r) == ["answer", "score", "start", "end"] and context[r["start"] : r["end"]] == r["answer"]


def test_embeddings_paraphrases_closer_than_unrelated(minilm: Any) -> None:
    texts = [
        "A man is eating a piece of bread.",
        "A man eats some bread.",
        "The stock market fell sharply on Monday.",
        "Paris is the capital and most populous city of France.",
        "France's capital city is Paris.",
    ]
    pred = predict(minilm("embed"), texts=texts)
    (obj,) = pred.results
    e = np.array(obj["embeddings"])
    assert e.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)  # MiniLM: mean pooling + normalize
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[3, 4] > sim[3, 2] + 0.3
    assert sim[0, 1] > sim[0, 3] and sim[3, 4] > sim[1, 4]
    # Padding in a mixed-length batch does not move a text's embedding.
    alone = np.array(predict(minilm("embed"), texts=[texts[2]]).results[0]["embeddings"][0])
    np.testing.assert_allclose(alone, e[2], atol=1e-5)
    assert pred.providers["active"] == [CPU]


def test_token_cls_entities_are_word_spans(minilm: Any) -> None:
    texts = [SENTENCES[4], SENTENCES[7], "Yes."]
    proc = _cli("run", str(minilm("token-cls")), *[a for t in texts for a in ("--text", t)], "--json")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(texts)
    labels = set(load_bundle(minilm("token-cls")).manifest["labels"]["id2label"].values())
    for text, r in zip(texts, results):
        assert list(r) == ["entities"]
        for ent in r["entities"]:
            assert text[ent["start"] : ent["end"]] == ent["text"] and ent["text"].strip() == ent["text"]
            assert ent["label"] in {lb.split("-", 1)[-1] for lb in labels}
            assert 0 < ent["score"] <= 1
        starts = [ent["start"] for ent in r["entities"]]
        assert starts == sorted(starts)


def test_seq_cls_label_and_probability(make_bundle: Any) -> None:
    path = make_bundle("bert", "seq-cls", num_labels=3)
    id2label = load_bundle(path).manifest["labels"]["id2label"]
    pred = predict(path, texts=SENTENCES[:3])
    assert len(pred.results) == 3
    for r in pred.results:
        assert list(r) == ["label", "score"] and r["label"] in id2label.values() and 1 / 3 <= r["score"] <= 1


def test_mlm_fills_each_mask(make_bundle: Any) -> None:
    path = make_bundle("bert", "mlm")
    texts = ["Paris is the [MASK] of France.", "The [MASK] brown fox [MASK] over the lazy dog."]
    results = predict(path, texts=texts, top_k=4).results
    for text, r in zip(texts, results):
        assert len(r["fills"]) == text.count("[MASK]")
        for fill in r["fills"]:
            assert text[fill["start"] : fill["end"]] == "[MASK]"
            scores = [c["score"] for c in fill["candidates"]]
            assert len(scores) == 4 and scores == sorted(scores, reverse=True)
            assert all(isinstance(c["token"], str) and isinstance(c["id"], int) for c in fill["candidates"])
    with pytest.raises(BertExportError, match=r"--text #1 has no \[MASK\]"):
        predict(path, texts=["no mask here"])


def test_request_errors(make_bundle: Any, minilm: Any) -> None:
    with pytest.raises(BertExportError, match="pass both --question and --context"):
        predict(minilm("qa"), question="Who?")
    with pytest.raises(BertExportError, match="not --text"):
        predict(minilm("qa"), texts=["x"])
    with pytest.raises(BertExportError, match="at least one --text"):
        predict(minilm("embed"))
    with pytest.raises(BertExportError, match="no tokenizer files"):
        predict(make_bundle("modernbert", "seq-cls"), texts=["hello"])
    proc = _cli("run", str(minilm("embed")), "--text", "hi", "--runtime", "nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# --- providers: plan, fallback, and what really ran -----------------------------------------


def test_plan_drops_gpu_providers_without_gpu() -> None:
    plan = plan_providers("ort-trt", available=[TRT, CUDA, CPU], gpu=NO_GPU)  # what onnxruntime-gpu claims
    assert plan.planned == [CPU] and "no NVIDIA driver (test)" in plan.notes[0]
    with pytest.raises(BertExportError, match="TensorrtExecutionProvider cannot run here"):
        plan_providers("ort-trt", available=[TRT, CUDA, CPU], gpu=NO_GPU, strict=True)
    plan = plan_providers("ort-cuda", available=[CPU], gpu=H100)  # a GPU, but the CPU wheel
    assert plan.planned == [CPU] and "onnxruntime-gpu" in plan.notes[0]
    assert plan_providers("ort-trt", available=[TRT, CUDA, CPU], gpu=H100).planned == [TRT, CUDA, CPU]
    assert plan_providers("ort", available=[CPU]).planned == [CPU]


def test_settle_reports_silent_fallback() -> None:
    plan = plan_providers("ort-cuda", available=[CUDA, CPU], gpu=H100)
    settle(plan, [CPU])  # ONNX Runtime could not start CUDA (missing cuDNN, say) and went on
    report = plan.report()
    assert (
        report["active"] == [CPU]
        and report["fallback"]
        and "could not start CUDAExecutionProvider" in report["notes"][-1]
    )
    with pytest.raises(BertExportError, match="could not start"):
        settle(plan_providers("ort-cuda", available=[CUDA, CPU], gpu=H100), [CPU], strict=True)


def test_runner_reports_what_really_ran(minilm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime claims CUDA; the session gets the CPU; the report and the outputs say so."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TRT, CUDA, CPU])
    bundle = load_bundle(minilm("embed"))
    feed = {
        s.name: np.array([[101, 7592, 2088, 102]], np.int64) if s.name == "input_ids" else np.ones((1, 4), np.int64)
        for s in bundle.inputs
    }
    feed["token_type_ids"] = np.zeros((1, 4), np.int64)
    with make_runner(bundle, "ort") as cpu:
        want = cpu.infer(feed)["last_hidden_state"]
    for gpu, note in [(NO_GPU, "no NVIDIA driver"), (H100, "could not start CUDAExecutionProvider")]:
        monkeypatch.setattr(providers, "detect_gpu", lambda gpu=gpu: gpu)
        with warnings.catch_warnings():  # ONNX Runtime warns that CUDA is not in its (real) provider list
            warnings.simplefilter("ignore")
            runner = make_runner(bundle, "ort-cuda")
            runner.activate()
        report = runner.provider_report()
        assert report["requested"] == [CUDA, CPU] and report["active"] == [CPU] and report["fallback"]
        assert note in " ".join(report["notes"])
        np.testing.assert_allclose(runner.infer(feed)["last_hidden_state"], want, atol=1e-6)
        runner.deactivate()


def test_detect_gpu_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    providers.detect_gpu.cache_clear()
    monkeypatch.setenv(providers.NO_GPU_ENV, "1")
    try:
        assert not providers.detect_gpu().available and "BERT_EXPORT_NO_GPU" in providers.detect_gpu().reason
    finally:
        providers.detect_gpu.cache_clear()


# --- malformed feeds at every runner ----------------------------------------------------------


@pytest.fixture(scope="module")
def runners(make_bundle: Any) -> list[Runner]:
    import transformers

    from bert_export.runtimes.torch_runner import TaskGraph, TorchRunner

    path = make_bundle("bert", "qa")
    b = load_bundle(path)
    cfg = transformers.BertConfig(**FAMILIES["bert"].tiny_config)
    graph = TaskGraph(transformers.BertForQuestionAnswering(cfg), [o.name for o in b.outputs])
    built = [
        OrtRunner(b.model_path, b.inputs, b.outputs, b.max_seq),
        make_runner(b, "ort-cuda"),
        TorchRunner(graph, b.inputs, b.outputs, b.max_seq),
        TrtRunner(b),
    ]
    yield built
    for r in built:
        r.deactivate()


CORRUPTIONS = [
    "float",
    "bool",
    "rank1",
    "rank3",
    "empty_seq",
    "empty_batch",
    "too_long",
    "batch_mismatch",
    "missing",
    "extra",
]


def _corrupt(kind: str, names: list[str], b: int, s: int, max_seq: int) -> dict[str, np.ndarray]:
    shape = (
        (b, max_seq + s)
        if kind == "too_long"
        else (0, s)
        if kind == "empty_batch"
        else (b, 0)
        if kind == "empty_seq"
        else (b, s)
    )
    feed = {n: np.ones(shape, np.int64) for n in names}
    victim = names[-1]
    if kind == "float":
        feed[victim] = feed[victim].astype(np.float32)
    elif kind == "bool":
        feed[victim] = feed[victim].astype(bool)
    elif kind == "rank1":
        feed[victim] = feed[victim][0]
    elif kind == "rank3":
        feed[victim] = feed[victim][..., None]
    elif kind == "batch_mismatch":
        feed[victim] = np.ones((b + 1, s), np.int64)
    elif kind == "missing":
        del feed[victim]
    elif kind == "extra":
        feed["position_ids"] = np.ones(shape, np.int64)
    return feed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(CORRUPTIONS), b=st.integers(1, 3), s=st.integers(1, 6), which=st.integers(0, 3))
def test_malformed_feeds_fail_cleanly(runners: list[Runner], kind: str, b: int, s: int, which: int) -> None:
    runner = runners[which]
    names = [spec.name for spec in runner.inputs]
    with pytest.raises(BertExportError) as err:
        runner.infer(_corrupt(kind, names, b, s, runner.max_seq))
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_valid_feed_runs_on_every_cpu_runner(runners: list[Runner]) -> None:
    feed = {spec.name: np.ones((2, 5), np.int64) for spec in runners[0].inputs}
    for runner in runners[:3]:
        out = runner.infer(feed)
        assert out["start_logits"].shape == (2, 5) and np.isfinite(out["end_logits"]).all()


def test_int32_inputs_from_the_manifest(tmp_path: Path) -> None:
    """A graph declaring int32 ids gets int32, whatever integer type the caller feeds."""
    import onnx
    from onnx import TensorProto, helper

    from bert_export.models import TensorSpec

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "sequence"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence"])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "g", [ids], [out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "m.onnx")
    runner = OrtRunner(
        tmp_path / "m.onnx",
        [TensorSpec("input_ids", "int32", ("batch", "sequence"))],
        [TensorSpec("logits", "float32", ("batch", "sequence"))],
        8,
        runtime="ort",
        graph_optimization="basic",
    )
    with runner:
        got = runner.infer({"input_ids": np.array([[1, 2, 3]], np.int64)})["logits"]
        assert runner.provider_report() == {
            "runtime": "ort",
            "requested": [CPU],
            "active": [CPU],
            "fallback": False,
            "notes": [],
        }
    np.testing.assert_array_equal(got, [[1.0, 2.0, 3.0]])


@pytest.mark.gpu
@pytest.mark.skipif(
    not (providers.detect_gpu().available and CUDA in onnxruntime.get_available_providers()),
    reason="needs an NVIDIA GPU and onnxruntime-gpu",
)
@pytest.mark.parametrize("runtime", ["ort-cuda", "ort-trt"])
def test_gpu_providers_really_run(runtime: str, minilm: Any) -> None:
    bundle = load_bundle(minilm("embed"))
    texts = list(SENTENCES[:6])
    with make_runner(bundle, runtime, strict=True) as runner:
        gpu = predict(bundle, texts=texts, runner=runner)
        assert runner.provider_report()["active"][0] == providers.ORT_RUNTIMES[runtime][0]
    cpu = predict(bundle, texts=texts)
    np.testing.assert_allclose(gpu.results[0]["embeddings"], cpu.results[0]["embeddings"], atol=1e-3)
