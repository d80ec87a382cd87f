"""Long inputs (#13): banded local attention for ModernBERT, long-context QA windows, long-document embeddings.

The rewrite is checked against PyTorch itself on a tiny ModernBERT (window 16, so block 8) at
lengths below, at and past the window, not multiples of the block, in right-padded batches,
comparing only real positions. Each local layer is a length switch (dense up to 4 windows = 64
tokens, blocked past it): the lengths cover both sides and the boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bert_export.bundle.reader import load_bundle
from bert_export.exporter.loading import load_source
from bert_export.models import FAMILIES, get_family, get_task
from bert_export.runtimes.factory import make_runner

WINDOW = 16  # tiny ModernBERT's local_attention: band |i - j| <= 8, blocks of 8
SWITCH = 64  # the longest sequence the local layers run dense (4 windows); blocked past it
TINY = dict(FAMILIES["modernbert"].tiny_config, local_attention=WINDOW)


def _batch(lengths: list[int], width: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, TINY["vocab_size"], n)
        ids[i, 0], ids[i, n - 1] = 1, 2
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _torch_hidden(task: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    source = load_source(get_family("modernbert"), get_task(task), random_init=True, overrides=dict(TINY), seed=0)
    source.model.eval()
    with torch.no_grad():
        out = source.model(
            input_ids=torch.from_numpy(feed["input_ids"]), attention_mask=torch.from_numpy(feed["attention_mask"])
        )
    return out[0].numpy()


@pytest.fixture(scope="module")
def banded_embed(make_bundle) -> Path:
    return make_bundle("modernbert", "embed", overrides=dict(TINY))


@pytest.mark.parametrize(
    "lengths, width",
    [
        ([5, 3, 1], 5),  # below the window, below one block
        ([16, 8, 12], 16),  # exactly the window, exactly two blocks
        ([17, 9, 2], 17),  # one past the window, not a block multiple
        ([45, 29, 16, 7], 45),  # well past the window, odd (still the dense side of the switch)
        ([64, 30, 5], 64),  # exactly the switch: the last dense length
        ([65, 64, 12], 65),  # one past the switch: blocked, rows padded from the dense side's lengths
        ([130, 64, 33, 100], 130),  # many blocks, mixed padding
    ],
)
def test_banded_matches_pytorch(banded_embed: Path, lengths: list[int], width: int) -> None:
    feed = _batch(lengths, width, seed=width)
    with make_runner(load_bundle(banded_embed), "ort", 1) as runner:
        got = runner.infer(feed)["last_hidden_state"]
    want = _torch_hidden("embed", feed)
    keep = feed["attention_mask"].astype(bool)
    assert np.isfinite(got).all()
    err = np.abs(got - want)[keep].max()
    assert err <= 1e-4, f"max |onnx - torch| at real positions = {err}"


def _branches(model: onnx.ModelProto) -> list[tuple[list[str], list[str]]]:
    """(then ops, else ops) of every top-level If: the local layers' length switches."""
    out = []
    for node in model.graph.node:
        if node.op_type == "If":
            g = {a.name: [n.op_type for n in a.g.node] for a in node.attribute}
            out.append((g["then_branch"], g["else_branch"]))
    return out


def test_pass_applied_and_global_layers_full(banded_embed: Path) -> None:
    b = load_bundle(banded_embed)
    assert b.manifest["optimization"]["banded_attention_layers"] == 2  # layers 1 and 2 of 3 are local
    model = onnx.load(str(b.model_path))
    ops = [n.op_type for n in model.graph.node]
    assert {p.key: p.value for p in model.metadata_props}["bert_export.local_attention_switch"] == str(SWITCH)
    assert b.manifest["optimization"]["local_attention_switch"] == SWITCH
    switches = _branches(model)
    assert len(switches) == 2  # one length switch per local layer
    for dense, blocked in switches:
        # dense: one fused attention on the shared band; blocked: 3b-key tiles, one Softmax
        assert dense == ["MultiHeadAttention"]
        assert blocked.count("Softmax") == 1 and blocked.count("Pad") >= 2 and "MultiHeadAttention" not in blocked
    mha = [n for n in model.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 1  # the global layer stays one full MultiHeadAttention, now with no dense bias
    assert len([i for i in mha[0].input if i]) == 3
    assert any(a.name == "scale" for a in mha[0].attribute)
    # the band is built once for both local layers, over min(seq, SWITCH) positions: past the switch it stays
    # SWITCH x SWITCH instead of growing with the input, and no outer Softmax exists
    assert ops.count("LessOrEqual") == 1 and ops.count("Abs") == 1 and "Softmax" not in ops
    (cap,) = [n for n in model.graph.node if n.op_type == "Min"]
    consts = {
        o: onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
        for o in n.output
    }
    assert [int(consts[i][0]) for i in cap.input if i in consts] == [SWITCH]
    assert len({n.input[0] for n in model.graph.node if n.op_type == "If"}) == 1  # one shared length condition


def test_parity_gate_times_its_max_seq_case(banded_embed: Path) -> None:
    """The gate keeps a case at the bundle's maximum (batch 1 past LONG_CASE_SEQ) and the manifest says how long
    every case took, in PyTorch and in the graph."""
    from bert_export.runtimes.cases import LONG_CASE_SEQ

    m = load_bundle(banded_embed).manifest
    case = m["parity"]["cases"]["max-seq"]
    assert case["shape"] == [1 if m["max_sequence_length"] > LONG_CASE_SEQ else 2, m["max_sequence_length"]]
    for name, c in m["parity"]["cases"].items():  # every case timed, in both (3 significant digits: never 0)
        assert set(c["seconds"]) == {"pytorch", "ort fp32"} and all(t > 0 for t in c["seconds"].values()), name


def test_default_max_seq_is_the_models_where_long_inputs_are_affordable() -> None:
    """ModernBERT defaults to its own maximum where local layers are banded and global ones run a memory-light
    kernel (ORT, OpenVINO); --runtime trt's gate runs unfused global attention in ORT, so it keeps 2048."""
    from bert_export.exporter.api import long_inputs_affordable
    from bert_export.quantize.pipeline import OptimizeOptions

    fam = get_family("modernbert")
    assert long_inputs_affordable(fam, OptimizeOptions()) and long_inputs_affordable(
        fam, OptimizeOptions(runtime="openvino")
    )
    assert not long_inputs_affordable(fam, OptimizeOptions(runtime="trt"))
    assert not long_inputs_affordable(fam, OptimizeOptions(banded_attention=False))
    assert not long_inputs_affordable(fam, OptimizeOptions(optimize=False))
    assert not long_inputs_affordable(get_family("bert"), OptimizeOptions())  # no window: its maximum is 512 anyway


def test_dense_flag_keeps_masked_attention_and_agrees(make_bundle, banded_embed: Path) -> None:
    from bert_export.quantize.pipeline import OptimizeOptions

    dense = make_bundle(
        "modernbert", "embed", overrides=dict(TINY), optimization=OptimizeOptions(banded_attention=False)
    )
    assert load_bundle(dense).manifest["optimization"]["banded_attention_layers"] == 0
    ops = [n.op_type for n in onnx.load(str(load_bundle(dense).model_path)).graph.node]
    assert ops.count("MultiHeadAttention") == 3 and "Softmax" not in ops
    feed = _batch([77, 40, 3], 77, seed=7)
    outs = []
    for path in (dense, banded_embed):
        with make_runner(load_bundle(path), "ort", 1) as runner:
            outs.append(runner.infer(feed)["last_hidden_state"])
    keep = feed["attention_mask"].astype(bool)
    assert np.abs(outs[0] - outs[1])[keep].max() <= 1e-5


def test_always_blocked_agrees_with_the_switch(make_bundle, banded_embed: Path, tmp_path: Path) -> None:
    """``length_switch=False`` (what bundles were before #23, kept for comparison) writes no If, and its blocks
    agree with the switched graph on both sides: where the switch runs dense and where it runs blocked."""
    import onnx_ir as ir
    import onnxruntime as ort

    from bert_export.quantize.banded_attention import banded_local_attention
    from bert_export.quantize.pipeline import OptimizeOptions

    dense = make_bundle(  # test_dense_flag_keeps_masked_attention_and_agrees' bundle (exported once)
        "modernbert", "embed", overrides=dict(TINY), optimization=OptimizeOptions(banded_attention=False)
    )
    model = ir.load(load_bundle(dense).model_path)
    assert banded_local_attention(model, switch=False) == 2
    ir.save(model, tmp_path / "blocked.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "blocked.onnx")).graph.node]
    assert "If" not in ops and ops.count("Softmax") == 2
    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (tmp_path / "blocked.onnx", load_bundle(banded_embed).model_path)
    ]
    for lengths, width in ([40, 23, 9], 40), ([90, 50, 21], 90):
        feed = _batch(lengths, width, seed=width)
        blocked, switched = (s.run(["last_hidden_state"], feed)[0] for s in sessions)
        keep = feed["attention_mask"].astype(bool)
        assert np.abs(blocked - switched)[keep].max() <= 1e-5, lengths


@pytest.mark.parametrize("runtime", ["trt", "openvino"])
def test_banded_on_standard_onnx_targets(make_bundle, runtime: str) -> None:
    """--runtime trt|openvino: the standard-ONNX SDPA of the local layers is blocked too, exact on every reader.

    TensorRT is not installable here: its graph is the standard-ONNX one checked below in ONNX
    Runtime (the same graph TensorRT parses); OpenVINO runs its own IR of it.
    """
    from bert_export.quantize.pipeline import OptimizeOptions

    path = make_bundle("modernbert", "embed", overrides=dict(TINY), optimization=OptimizeOptions(runtime=runtime))
    b = load_bundle(path)
    assert b.manifest["optimization"]["banded_attention_layers"] == 2 and b.manifest["parity"]["passed"]
    model = onnx.load(str(b.model_path))
    ops = [n.op_type for n in model.graph.node]
    switches = _branches(model)
    assert not any(n.startswith("MultiHeadAttention") for n in ops + sum((d + k for d, k in switches), []))
    assert ops.count("Abs") == 1 and ops.count("LessOrEqual") == 1  # one window mask, shared by the dense branches
    assert ops.count("Softmax") == 1 and len(switches) == 2  # one global layer, two switched local layers
    for dense, blocked in switches:  # a plain MatMul-Add-Softmax-MatMul chain (no NaN guard) / the blocks
        assert dense.count("Softmax") == 1 and "IsNaN" not in dense and "Pad" not in dense and "Pad" in blocked
    assert "IsNaN" not in ops  # the dead NaN guard is gone (quantize/sdpa_guard.py): a plain softmax chain
    if runtime == "openvino":  # ...which OpenVINO fuses into its memory-light attention, inside the If bodies too
        import openvino as ov

        ir_model = ov.Core().read_model(str(path / "openvino" / "model.xml"))
        ir_ops = [o.get_type_name() for o in ir_model.get_ordered_ops()]
        assert ir_ops.count("ScaledDotProductAttention") == 1 and ir_ops.count("If") == 2
        for op in ir_model.get_ordered_ops():
            if op.get_type_name() == "If":
                dense_ops = [o.get_type_name() for o in op.get_function(0).get_ordered_ops()]
                assert dense_ops.count("ScaledDotProductAttention") == 1
    runners = ["ort"] + (["openvino"] if runtime == "openvino" else [])
    for lengths, width in ([5, 3, 1], 5), ([17, 9, 2], 17), ([130, 64, 33, 100], 130):
        feed = _batch(lengths, width, seed=width)
        want = _torch_hidden("embed", feed)
        keep = feed["attention_mask"].astype(bool)
        for name in runners:
            with make_runner(b, name, 1) as runner:
                got = runner.infer(feed)["last_hidden_state"]
            err = np.abs(got - want)[keep].max()
            assert err <= 1e-4, f"{name} at {lengths}: max |diff| at real positions = {err}"


def test_banded_in_javascript_runtimes(banded_embed: Path, tmp_path: Path) -> None:
    """The banded graph in onnxruntime-web's WASM build (what a browser runs) and onnxruntime-node
    (transformers.js in Node) equals PyTorch on a padded batch far past the window."""
    from .test_consumers import RAW_TOL, needs, node_ready, run_node

    needs(node_ready(), "node + examples/web/node_modules missing (run .ci/install.d/30-node.sh)")
    feed = _batch([130, 64, 33, 100], 130, seed=11)
    job = {
        "graph": str(load_bundle(banded_embed).model_path),
        "outputs": ["last_hidden_state"],
        "feeds": {k: {"dims": list(v.shape), "data": v.ravel().tolist()} for k, v in feed.items()},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    res = run_node("node/raw_graph.mjs", str(tmp_path / "job.json"))
    want = _torch_hidden("embed", feed)
    keep = feed["attention_mask"].astype(bool)
    for runtime in ("web", "node"):
        out = res[runtime]["last_hidden_state"]
        got = np.asarray(out["data"], dtype=np.float32).reshape(out["dims"])
        err = np.abs(got - want)[keep].max()
        assert err <= RAW_TOL, f"onnxruntime-{runtime} {res['versions']}: max |diff| at real positions = {err}"


@pytest.mark.parametrize(
    "precision, runtime", [("int8", "ort"), ("fp16", "ort"), ("int8", "openvino")], ids=["int8", "fp16", "ov-int8"]
)
def test_banded_with_low_precision(make_bundle, precision: str, runtime: str) -> None:
    """Both sides of the length switch in low precision: dense at 40 tokens, blocked at 90 (int8: the gate's
    calibration is short text, so the blocked branch is only ever checked by the gate's max-seq case and here)."""
    from bert_export.quantize.pipeline import OptimizeOptions

    opt = OptimizeOptions(runtime=runtime, int8=precision == "int8", fp16=precision == "fp16")
    # the OpenVINO int8 bundle is test_openvino's (TINY is the family's tiny config): exported once per run
    kwargs = {} if runtime == "openvino" else {"overrides": dict(TINY)}
    path = make_bundle("modernbert", "embed", optimization=opt, **kwargs)
    b = load_bundle(path)
    assert b.manifest["optimization"]["banded_attention_layers"] == 2
    assert b.manifest["parity"]["passed"]
    for lengths, width in ([40, 23, 9], 40), ([90, 50, 21], 90):
        feed = _batch(lengths, width, seed=width)
        with make_runner(b, runtime, 1) as runner:
            got = runner.infer(feed)["last_hidden_state"]
        want = _torch_hidden("embed", feed)
        keep = feed["attention_mask"].astype(bool)
        assert np.isfinite(got).all()
        cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
        assert cos[keep].min() > 0.99, f"{runtime} {precision} at {lengths}: cosine min {cos[keep].min():.4f}"


# ---------------------------------------------------------------------------------------------
# Long-context QA: overlapping windows, agreeing with Hugging Face's question-answering pipeline.

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hiro", "Ines", "Jonas"]
CODES = [
    "falcon",
    "harbor",
    "maple",
    "quartz",
    "saffron",
    "tundra",
    "velvet",
    "walnut",
    "zephyr",
    "cobalt",
    "ember",
    "lagoon",
]
FILLER = [
    "The weather was mild that week.",
    "Trains ran late on the northern line.",
    "A committee reviewed the budget twice.",
    "Gardens along the river were in bloom.",
    "Several shops closed early for the holiday.",
    "The museum added a wing for modern sculpture.",
    "Fishermen reported a quiet season.",
    "Students gathered in the library after class.",
]


def _story(rng: np.random.Generator, name: str, code: str, before: int, after: int) -> tuple[str, int]:
    """Filler sentences around one fact; returns the context and the answer's character start."""
    pre = " ".join(rng.choice(FILLER, before)) if before else ""
    fact = f"The secret code of {name} is {code}."
    post = " ".join(rng.choice(FILLER, after)) if after else ""
    context = " ".join(p for p in (pre, fact, post) if p)
    return context, context.index(fact) + len(f"The secret code of {name} is ")


def _hf_python() -> Path | None:
    import os

    env = os.environ.get("BERT_EXPORT_HF_PYTHON")
    path = Path(env) if env else ROOT / ".ci" / "cache" / "hf-venv" / "bin" / "python"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def qa_model_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """MiniLM with a qa head fine-tuned for a few steps on short synthetic stories (so spans mean something)."""
    import shutil

    from transformers import AutoTokenizer, BertForQuestionAnswering

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    model = BertForQuestionAnswering.from_pretrained(str(minilm_dir))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    model.train()
    for _ in range(70):
        questions, contexts, spans = [], [], []
        for _ in range(8):
            name, code = rng.choice(NAMES), rng.choice(CODES)
            context, start = _story(rng, name, code, int(rng.integers(0, 4)), int(rng.integers(0, 4)))
            questions.append(f"What is the secret code of {name}?")
            contexts.append(context)
            spans.append((start, start + len(code)))
        enc = tok(
            questions,
            contexts,
            truncation="only_second",
            max_length=128,
            padding=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        starts, ends = [], []
        for i, (s, e) in enumerate(spans):
            seq = enc.sequence_ids(i)
            offs = enc["offset_mapping"][i].tolist()
            starts.append(next(t for t, (o, q) in enumerate(zip(offs, seq)) if q == 1 and o[0] == s))
            ends.append(next(t for t, (o, q) in enumerate(zip(offs, seq)) if q == 1 and o[1] == e))
        enc.pop("offset_mapping")
        loss = model(**enc, start_positions=torch.tensor(starts), end_positions=torch.tensor(ends)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = tmp_path_factory.mktemp("minilm-qa")
    model.save_pretrained(str(out))
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / f, out / f)
    return out


@pytest.fixture(scope="module")
def qa_bundle(qa_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bert_export.exporter import export

    out = tmp_path_factory.mktemp("qa-bundle") / "minilm-qa"
    export("bert", "qa", model=str(qa_model_dir), out=out, max_seq=128)
    return out


LONG_QA = [  # (name, code, filler sentences before, after): answers early, in the middle, late, past many windows
    ("Chen", "quartz", 2, 60),
    ("Ines", "saffron", 35, 30),
    ("Goran", "walnut", 70, 3),
]


def _long_requests() -> list[tuple[str, str, int]]:
    rng = np.random.default_rng(1)
    out = []
    for name, code, before, after in LONG_QA:
        context, start = _story(rng, name, code, before, after)
        out.append((f"What is the secret code of {name}?", context, start))
    return out


def test_long_context_qa_finds_the_answer_in_any_window(qa_bundle: Path) -> None:
    from bert_export.runtimes.factory import bundle_tokenizer
    from bert_export.runtimes.predict import predict

    b = load_bundle(qa_bundle)
    tok = bundle_tokenizer(b)
    for question, context, start in _long_requests():
        assert len(tok(question, context)["input_ids"]) > 3 * b.max_seq  # several windows
        r = predict(b, question=question, context=context).results[0]
        assert context[r["start"] : r["end"]] == r["answer"]
        assert r["start"] == start, (r, context[start : start + 10])
        assert 0 < r["score"] <= 1


def test_long_context_qa_matches_hf_pipeline(qa_bundle: Path, qa_model_dir: Path) -> None:
    import json
    import subprocess

    from bert_export.runtimes.predict import predict
    from tests.conftest import needs

    python = _hf_python()
    needs(
        python is not None,
        "transformers 4.x venv for the question-answering pipeline (.ci/install.d/32-hf-venv.sh, "
        "or BERT_EXPORT_HF_PYTHON)",
    )
    requests = _long_requests()
    # windows of 128 with HF's default stride (min(128 // 2, 128)); a shorter answer limit than ours, and one stride
    # that makes the answer sit in two windows
    settings = [dict(doc_stride=None, max_answer_len=15), dict(doc_stride=100, max_answer_len=30)]
    script = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        "req = json.load(sys.stdin)\n"
        "qa = pipeline('question-answering', model=req['model'], tokenizer=req['model'], device=-1)\n"
        "out = []\n"
        "for s in req['settings']:\n"
        "    for q, c in req['pairs']:\n"
        "        kw = dict(max_seq_len=128, max_answer_len=s['max_answer_len'], align_to_words=False)\n"
        "        if s['doc_stride'] is not None: kw['doc_stride'] = s['doc_stride']\n"
        "        r = qa(question=q, context=c, **kw)\n"
        "        out.append({k: r[k] for k in ('answer', 'start', 'end')})\n"
        "print(json.dumps(out))\n"
    )
    payload = json.dumps({"model": str(qa_model_dir), "settings": settings, "pairs": [(q, c) for q, c, _ in requests]})
    done = subprocess.run([str(python), "-c", script], input=payload, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    hf = json.loads(done.stdout.strip().splitlines()[-1])
    ours = []
    for s in settings:
        for q, c, _ in requests:
            r = predict(
                qa_bundle, question=q, context=c, doc_stride=s["doc_stride"], max_answer_tokens=s["max_answer_len"]
            ).results[0]
            ours.append({k: r[k] for k in ("answer", "start", "end")})
    assert ours == hf


def test_doc_stride_too_large_is_one_clear_error(qa_bundle: Path) -> None:
    from bert_export.models import BertExportError
    from bert_export.runtimes.predict import predict

    question, context, _ = _long_requests()[0]
    with pytest.raises(BertExportError, match="--doc-stride 500"):
        predict(qa_bundle, question=question, context=context, doc_stride=500)


# ---------------------------------------------------------------------------------------------
# Long-document embeddings: truncated with a note, or --chunk: windows mean-pooled.


def test_chunked_embeddings_cover_the_whole_text(
    make_bundle, minilm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from transformers import AutoTokenizer, BertModel

    from bert_export.runtimes.predict import predict
    from bert_export.runtimes.texts import long_text

    bundle = make_bundle("bert", "embed", model="sentence-transformers/all-MiniLM-L6-v2", max_seq=64)
    texts = [long_text(150), "A short sentence fits in one window.", long_text(90)]
    with caplog.at_level(logging.WARNING, logger="bert_export.runtimes"):
        plain = np.array(predict(bundle, texts=texts).results[0]["embeddings"])
    assert "were truncated" in caplog.text and "--chunk" in caplog.text
    chunked = np.array(predict(bundle, texts=texts, chunk=True).results[0]["embeddings"])
    # PyTorch reference: the real tokens of every 64-token window, one mean over all of them, L2-normalised
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    model = BertModel.from_pretrained(str(minilm_dir)).eval()
    want = []
    for text in texts:
        enc = tok(
            text, truncation=True, max_length=64, return_overflowing_tokens=True, padding=True, return_tensors="pt"
        )
        assert (len(enc["input_ids"]) > 1) == (text != texts[1])
        with torch.no_grad():
            hidden = (
                model(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    token_type_ids=enc["token_type_ids"],
                )
                .last_hidden_state.numpy()
                .astype(np.float64)
            )
        m = enc["attention_mask"].numpy()[..., None]
        v = (hidden * m).sum((0, 1)) / m.sum()
        want.append(v / np.linalg.norm(v))
    assert np.abs(chunked - np.array(want)).max() < 1e-4
    assert np.abs(chunked[1] - plain[1]).max() < 1e-6  # one window: exactly the unchunked embedding
    assert np.abs(chunked[0] - plain[0]).max() > 1e-3  # the long text's tail now counts


# ---------------------------------------------------------------------------------------------
# The C++ consumer reads long contexts in the same windows and ranks them the same way.


def test_cpp_long_context_qa_matches_python(qa_bundle: Path) -> None:
    import json
    import subprocess

    from bert_export.runtimes.predict import predict
    from tests.conftest import needs

    demo = ROOT / "examples" / "cpp" / "build" / "bert_export_demo"
    needs(demo.is_file(), "the C++ consumer is not built (tests/test_cpp.py builds it: examples/cpp/build.sh)")
    for stride in (None, 100):
        for question, context, _ in _long_requests():
            args = [str(demo), str(qa_bundle), "--question", question, "--context", context, "--threads", "1"]
            if stride is not None:
                args += ["--doc-stride", str(stride)]
            done = subprocess.run(args, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            got = json.loads(done.stdout)
            want = predict(qa_bundle, question=question, context=context, doc_stride=stride).results[0]
            assert {k: got[k] for k in ("answer", "start", "end")} == {k: want[k] for k in ("answer", "start", "end")}
            assert abs(got["score"] - want["score"]) < 1e-4
    done = subprocess.run(
        [str(demo), str(qa_bundle), "--question", "q?", "--context", _long_requests()[0][1], "--doc-stride", "500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: --doc-stride 500")
