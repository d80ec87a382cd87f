"""The bundle layout (schema 2): a Hugging Face model directory, one graph per precision.

What other runtimes look for, checked with the libraries that look: transformers' AutoConfig and
AutoTokenizer, the ``tokenizers`` library on tokenizer.json, sentence-transformers' Pooling and
Normalize modules built from the bundle's module files. Consumers that need their own
environments (transformers.js, Optimum, sentence-transformers' ONNX backend, the browser) are
tested by the consumer tests.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from bert_export.bundle.layout import graph_file, place_graph, write_config
from bert_export.bundle.reader import MANIFEST, load_bundle, write_manifest
from bert_export.models import FAMILIES, BertExportError, get_family, get_task
from bert_export.runtimes.predict import predict

from .conftest import MINILM_ID
from .test_bad_input import assert_one_error_line, run_cli

ARCHITECTURES = {
    "embed": "BertModel",
    "mlm": "BertForMaskedLM",
    "seq-cls": "BertForSequenceClassification",
    "token-cls": "BertForTokenClassification",
    "qa": "BertForQuestionAnswering",
}
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the riverbank in Paris."] * 40)


def read(bundle: Path, rel: str) -> dict:
    return json.loads((bundle / rel).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def minilm_multi(make_bundle: Callable[..., Path]) -> Path:
    """The packaged MiniLM as an embed bundle with three graphs (fp32 default, fp16, int8), max_seq 128."""
    return make_bundle("bert", "embed", model=MINILM_ID, max_seq=128, precisions="fp32,fp16,int8")


# --- files where Hugging Face and transformers.js look for them --------------------------------------


@pytest.mark.parametrize("task", list(ARCHITECTURES))
def test_tiny_bundle_is_a_hugging_face_model_directory(make_bundle: Callable[..., Path], task: str) -> None:
    import transformers

    bundle = make_bundle("bert", task)
    m = load_bundle(bundle).manifest
    assert m["schema_version"] == 2 and m["graph"]["file"] == "onnx/model.onnx" and not (bundle / "model.onnx").exists()
    assert list(m["graphs"]) == ["fp32"] and m["graphs"]["fp32"]["file"] == "onnx/model.onnx"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "onnx/model.onnx"} <= m[
        "files"
    ].keys()
    cfg = read(bundle, "config.json")
    assert cfg["architectures"] == [ARCHITECTURES[task]]
    assert cfg["transformers.js_config"] == {"dtype": "fp32"}
    hf = transformers.AutoConfig.from_pretrained(str(bundle), local_files_only=True)
    assert hf.architectures == [ARCHITECTURES[task]] and hf.model_type == "bert"
    tok = transformers.AutoTokenizer.from_pretrained(str(bundle), local_files_only=True)
    assert tok.model_max_length == m["max_sequence_length"] == 128
    st_files = {"modules.json", "sentence_bert_config.json", "1_Pooling/config.json"}
    assert (st_files <= m["files"].keys()) == (task == "embed")


@pytest.fixture(scope="module")
def ner_source(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny token classifier with real label names, and the MiniLM tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    cfg = transformers.BertConfig(
        **FAMILIES["bert"].tiny_config, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    path = tmp_path_factory.mktemp("ner-source")
    transformers.BertForTokenClassification(cfg).save_pretrained(str(path))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, path / name)
    return path


def test_labels_reach_config_json(make_bundle: Callable[..., Path], ner_source: Path) -> None:
    import transformers

    bundle = make_bundle("bert", "token-cls", model=str(ner_source))
    manifest = load_bundle(bundle).manifest
    hf = transformers.AutoConfig.from_pretrained(str(bundle), local_files_only=True)
    assert hf.architectures == ["BertForTokenClassification"]
    assert {str(k): v for k, v in hf.id2label.items()} == manifest["labels"]["id2label"]
    assert hf.id2label[1] == "B-PER" and hf.label2id["I-LOC"] == 4
    assert read(bundle, "config.json")["label2id"] == {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}


def test_modernbert_architecture(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("modernbert", "qa")
    assert read(bundle, "config.json")["architectures"] == ["ModernBertForQuestionAnswering"]
    assert load_bundle(bundle).model_path == bundle / "onnx/model.onnx"


# --- tokenizer.json: the bundle's truncation, no fixed padding ------------------------------------------


def test_tokenizer_json_truncates_at_max_seq_without_padding(minilm_multi: Path, minilm_dir: Path) -> None:
    from tokenizers import Tokenizer

    source = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    assert len(source.encode("Hello world").ids) == 128  # the packaged file pads everything to 128
    tok = Tokenizer.from_file(str(minilm_multi / "tokenizer.json"))
    assert tok.padding is None and tok.truncation["max_length"] == 128
    assert len(tok.encode(LONG_TEXT).ids) == 128
    short = tok.encode("Paris is the capital of France.")
    assert short.ids[0] == 101 and short.ids[-1] == 102 and len(short.ids) == 9 and 0 not in short.ids
    # the same ids transformers (what `run` uses) and golden.json give
    golden = read(minilm_multi, "golden.json")["examples"][0]
    assert tok.encode(golden["text"]).ids == golden["input_ids"]
    assert read(minilm_multi, "tokenizer_config.json")["model_max_length"] == 128


# --- sentence-transformers' module files, from manifest["pooling"] ------------------------------------


def test_sentence_transformers_files_pool_and_normalise_like_run(minilm_multi: Path) -> None:
    import onnxruntime as ort
    import torch
    from sentence_transformers.models import Normalize, Pooling

    m = load_bundle(minilm_multi).manifest
    assert m["pooling"] == {"mode": "mean", "normalize": True, "source": "sentence-transformers"}
    modules = read(minilm_multi, "modules.json")
    assert [(x["path"], x["type"].rsplit(".", 1)[1]) for x in modules] == [
        ("", "Transformer"),
        ("1_Pooling", "Pooling"),
        ("2_Normalize", "Normalize"),
    ]
    assert read(minilm_multi, "sentence_bert_config.json") == {"max_seq_length": 128, "do_lower_case": False}
    pooling = Pooling.load(str(minilm_multi / "1_Pooling"))
    assert pooling.get_sentence_embedding_dimension() == 384
    # sentence-transformers' own modules on the graph's hidden states = `run`'s embeddings
    texts = ["Paris is the capital of France.", "A much longer sentence, with punctuation; and more words in it."]
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_multi), local_files_only=True)
    enc = tok(texts, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(minilm_multi / "onnx/model.onnx"))
    hidden = sess.run(
        ["last_hidden_state"], {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    )[0]
    features = {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(enc["attention_mask"])}
    st = Normalize()(pooling(features))["sentence_embedding"].numpy()
    ours = np.asarray(predict(minilm_multi, texts=texts).results[0]["embeddings"])
    assert np.abs(st - ours).max() < 1e-5
    assert np.allclose(np.linalg.norm(st, axis=1), 1.0, atol=1e-5)


# --- several precisions in one directory -----------------------------------------------------------------


def test_multi_precision_bundle_records_and_gates_each_graph(minilm_multi: Path) -> None:
    b = load_bundle(minilm_multi)
    m = b.manifest
    assert m["precision"] == "fp32" and b.precisions == ("fp32", "fp16", "int8")
    assert {p: g["file"] for p, g in m["graphs"].items()} == {p: graph_file(p) for p in ("fp32", "fp16", "int8")}
    assert graph_file("fp16") == "onnx/model_fp16.onnx" and graph_file("int8") == "onnx/model_quantized.onnx"
    assert m["graph"]["file"] == "onnx/model.onnx" and m["graph"]["files"] == m["graphs"]["fp32"]["files"]
    for p, g in m["graphs"].items():
        assert (
            g["parity"]["passed"]
            and g["parity"]["gate"]["cos_min"] == {"fp32": 0.9999, "fp16": 0.999, "int8": 0.995}[p]
        )
        assert read(minilm_multi, g["parity"]["report"])["precision"] == p and g["parity"]["report"] in m["files"]
        assert g["optimization"]["precision"] == p
    types = {
        p: {i.data_type for i in onnx.load(str(minilm_multi / g["file"])).graph.initializer}
        for p, g in m["graphs"].items()
    }
    assert onnx.TensorProto.FLOAT16 in types["fp16"] and onnx.TensorProto.FLOAT16 not in types["fp32"]
    assert onnx.TensorProto.INT8 in types["int8"] and onnx.TensorProto.INT8 not in types["fp32"]
    tjs = read(minilm_multi, "config.json")["transformers.js_config"]
    assert tjs == {"dtype": "fp32", "device_config": {"wasm": {"dtype": "q8"}}}
    assert m["files"].keys() >= {"reference.safetensors", "golden.json"}  # shared by every precision


def test_precision_picks_the_graph_in_validate_run_and_the_api(
    capsys: pytest.CaptureFixture[str], minilm_multi: Path, tmp_path: Path
) -> None:
    from bert_export.cli.main import main

    for p in ("int8", "fp16"):
        code, err = run_cli(
            capsys, "validate", str(minilm_multi), "--precision", p, "-q", "--report", str(tmp_path / f"{p}.json")
        )
        assert code == 0, err
        assert json.loads((tmp_path / f"{p}.json").read_text())["precision"] == p
    assert load_bundle(minilm_multi, precision="int8").model_path == minilm_multi / "onnx/model_quantized.onnx"
    texts = ["Paris is the capital of France.", "Water boils at 100 degrees."]
    vectors = {}
    for p in ("fp32", "int8"):
        with pytest.raises(SystemExit) as exc:
            main(["run", str(minilm_multi), "--precision", p, "--json", *[a for t in texts for a in ("--text", t)]])
        assert exc.value.code in (0, None)
        vectors[p] = np.asarray(json.loads(capsys.readouterr().out)["embeddings"])
    default = np.asarray(predict(minilm_multi, texts=texts).results[0]["embeddings"])
    assert np.abs(vectors["fp32"] - default).max() <= 1e-6  # the default is fp32
    cosine = (vectors["fp32"] * vectors["int8"]).sum(1)  # normalised vectors
    assert cosine.min() > 0.99 and np.abs(vectors["fp32"] - vectors["int8"]).max() > 1e-4  # another graph really ran
    from bert_export.runtimes.bench import bench

    timed = bench(minilm_multi, precision="int8", batches=[1], seqs=[16], warmup=0, runs=1, with_torch=False)
    assert timed.settings["precision"] == "int8" and [r.precision for r in timed.results] == ["int8"]


def test_precision_the_bundle_lacks_is_one_error_line(
    capsys: pytest.CaptureFixture[str], make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle("bert", "qa")
    code, err = run_cli(capsys, "validate", str(bundle), "--precision", "int8", "-q")
    assert_one_error_line(code, err, "has no int8 graph (it has fp32)", "--precisions fp32,int8")
    code, err = run_cli(capsys, "run", str(bundle), "--precision", "fp16", "--question", "Who?", "--context", "Paris.")
    assert_one_error_line(code, err, "has no fp16 graph")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--precisions", "fp32,bf16"], "choose from fp32, fp16, int8"),
        (["--precisions", "int8,int8"], "names a precision twice"),
        (["--precisions", "fp32,int8", "--int8"], "--precisions replaces --fp16/--int8"),
        (["--precisions", "fp32,int8", "--fp16-io"], "--fp16-io applies to an fp16 graph"),
    ],
)
def test_bad_precisions_are_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], needle: str
) -> None:
    code, err = run_cli(
        capsys, "bert", "--task", "qa", "--random-init", "--tiny", "--out", str(tmp_path / "b"), "-q", *args
    )
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "b").exists()


def test_one_failing_graph_fails_the_export_and_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bert_export.exporter import export
    from bert_export.models import ParityError
    from bert_export.quantize.pipeline import OptimizeOptions
    from bert_export.runtimes.parity import GATES, Gate

    monkeypatch.setitem(GATES, "int8", Gate(max_abs=None, agreement=1.01, cos_mean=1.01, cos_min=1.01))  # unreachable
    with pytest.raises(ParityError, match="parity gate failed for the int8 graph"):
        export(
            "bert",
            "qa",
            random_init=True,
            overrides=dict(FAMILIES["bert"].tiny_config),
            out=tmp_path / "b",
            precisions="fp32,int8",
            optimization=OptimizeOptions(fallback=False),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bundle, no staging or work directories


def test_single_low_precision_bundle_uses_its_transformers_js_name(make_bundle: Callable[..., Path]) -> None:
    from bert_export.quantize.pipeline import OptimizeOptions

    bundle = make_bundle("bert", "token-cls", optimization=OptimizeOptions(fp16=True, fp16_io=True))
    m = load_bundle(bundle).manifest
    assert m["graph"]["file"] == "onnx/model_fp16.onnx" and list(m["graphs"]) == ["fp16"]
    assert read(bundle, "config.json")["transformers.js_config"] == {"dtype": "fp16"}
    assert {o["dtype"] for o in m["graphs"]["fp16"]["outputs"]} == {"float16"}


# --- external data named as transformers.js expects -------------------------------------------------------


def test_external_data_is_named_after_its_graph(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    import onnx_ir as ir
    import onnxruntime as ort

    src_dir = tmp_path / "work"
    src_dir.mkdir()
    model = ir.load(str(make_bundle("bert", "qa") / "onnx/model.onnx"))
    ir.save(model, str(src_dir / "model.onnx"), external_data="model.onnx.data", size_threshold_bytes=0)
    files = place_graph(src_dir / "model.onnx", tmp_path / "bundle", "fp16")
    assert files == ["onnx/model_fp16.onnx", "onnx/model_fp16.onnx_data"]
    proto = onnx.load(str(tmp_path / "bundle" / files[0]), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model_fp16.onnx_data"}
    ort.InferenceSession(str(tmp_path / "bundle" / files[0]))  # resolves its data beside it
    import transformers

    write_config(
        tmp_path / "bundle",
        transformers.BertConfig(**FAMILIES["bert"].tiny_config),
        get_family("bert"),
        get_task("qa"),
        "fp32",
        {"fp32": ["onnx/model.onnx"], "fp16": files},
    )
    tjs = read(tmp_path / "bundle", "config.json")["transformers.js_config"]
    assert tjs == {"dtype": "fp32", "use_external_data_format": {"model_fp16.onnx": 1}}


# --- schema 1 bundles are still read ------------------------------------------------------------------------


def as_schema_1(bundle: Path) -> None:
    """Rewrite a fresh bundle as bert-export wrote it before the layout change (graph at the root)."""
    (bundle / "onnx/model.onnx").rename(bundle / "model.onnx")
    (bundle / "onnx").rmdir()
    manifest = json.loads((bundle / MANIFEST).read_text())
    for key in ("graphs", "files"):
        manifest.pop(key)
    manifest["graph"].update(file="model.onnx", files=["model.onnx"])
    manifest["schema_version"] = 1
    write_manifest(bundle, manifest)


def test_schema_1_bundle_is_read(
    capsys: pytest.CaptureFixture[str], make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]
) -> None:
    bundle = copy_bundle(make_bundle("bert", "qa"))
    expected = predict(
        bundle, question="What is the capital of France?", context="Paris is the capital of France."
    ).results
    as_schema_1(bundle)
    b = load_bundle(bundle)
    assert b.manifest["schema_version"] == 1 and b.precisions == ("fp32",) and b.model_path == bundle / "model.onnx"
    assert b.graph["parity"]["passed"] and b.outputs == load_bundle(make_bundle("bert", "qa")).outputs
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert code == 0, err
    assert (
        predict(bundle, question="What is the capital of France?", context="Paris is the capital of France.").results
        == expected
    )
    with pytest.raises(BertExportError, match="has no int8 graph"):
        load_bundle(bundle, precision="int8")


def test_schema_1_manifest_with_graphs_is_refused(
    capsys: pytest.CaptureFixture[str], make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]
) -> None:
    bundle = copy_bundle(make_bundle("bert", "qa"))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["schema_version"] = 1
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert_one_error_line(code, err, "graphs is a schema-2 field")


def test_schema_2_graph_must_be_the_default_graph(
    capsys: pytest.CaptureFixture[str], minilm_multi: Path, copy_bundle: Callable[[Path], Path]
) -> None:
    bundle = copy_bundle(minilm_multi)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["graph"] = {k: manifest["graphs"]["int8"][k] for k in ("file", "files")}  # says fp32, points at int8
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert_one_error_line(code, err, "graph must name the default precision's graph files")
