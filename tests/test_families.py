"""BERT's relatives as registry entries: RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA (issue 22).

Each family is exported from a model directory holding a tiny random-weight checkpoint and a real
tokenizer of its own kind (no hub: RoBERTa's byte-level BPE and XLM-R's Unigram are trained here by
tests/tokenizers_fixture.py; DistilBERT and ELECTRA ship bert-base-uncased's WordPiece, which the packaged
MiniLM carries). Every task goes through the fp32 parity gate on real text, including the 256-token
``max-seq`` case and the padded mixed-length batch; one bundle per family also carries int8 (and one fp16)
through the same gates. Fused-op counts are pinned per family from its registry facts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.exporter import export
from bert_export.models import FAMILIES, TASKS
from bert_export.runtimes.factory import load_tokenizer
from tests.tokenizers_fixture import MULTILINGUAL, train_bpe, train_unigram

NEW = ("roberta", "xlm-roberta", "distilbert", "electra")
# The quick run: one bundle per family with int8 beside fp32, the tasks spread so each appears once
# (qa and token-cls twice); the remaining family x task pairs run under -m slow.
QUICK = {"roberta": "qa", "xlm-roberta": "token-cls", "distilbert": "seq-cls", "electra": "mlm"}
SLOW = [(f, t) for f in NEW for t in TASKS if t != QUICK[f] and t in ("embed", "mlm", "seq-cls", "token-cls", "qa")]


def _tokenizer_into(family: str, directory: Path, minilm_dir: Path) -> None:
    if FAMILIES[family].tokenizer == "bpe":
        train_bpe(directory)
    elif FAMILIES[family].tokenizer == "unigram":
        train_unigram(directory)
    else:  # WordPiece: bert-base-uncased's vocabulary, as distilbert-base-uncased and electra ship
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(minilm_dir / name, directory / name)


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Callable[[str], Path]:
    """``family_dirs("roberta")`` -> a model directory (tiny config, seeded weights, the family's tokenizer)."""
    import torch
    import transformers

    cache: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in cache:
            fam = FAMILIES[family]
            directory = tmp_path_factory.mktemp(f"src-{family}")
            _tokenizer_into(family, directory, minilm_dir)
            config = getattr(transformers, fam.config_class)(**fam.tiny_config)
            torch.manual_seed(0)
            getattr(transformers, f"{fam.class_prefix}Model")(config).save_pretrained(directory)
            cache[family] = directory
        return cache[family]

    return build


@pytest.fixture(scope="session")
def family_bundle(family_dirs: Callable[[str], Path], bundles_root: Path) -> Callable[..., dict[str, Any]]:
    """Export once per (family, task, precisions); returns the manifest (the bundle's path under "_path")."""
    cache: dict[tuple[str, str, str], dict[str, Any]] = {}

    def build(family: str, task: str, precisions: str = "fp32") -> dict[str, Any]:
        key = (family, task, precisions)
        if key not in cache:
            out = bundles_root / f"fam-{family}-{task}-{precisions.replace(',', '-')}"
            result = export(family, task, model=str(family_dirs(family)), out=out, precisions=precisions)
            cache[key] = {**result.manifest, "_path": out}
        return cache[key]

    return build


def _check_gates(manifest: dict[str, Any], precisions: tuple[str, ...]) -> None:
    assert tuple(manifest["graphs"]) == precisions
    for precision, graph in manifest["graphs"].items():
        parity = graph["parity"]
        assert parity["passed"], (precision, parity)
        report = json.loads((manifest["_path"] / parity["report"]).read_text())
        assert report["passed"]
    # the max-seq case really is past 128 tokens of real text (no padding in its first row)
    assert manifest["max_sequence_length"] == 256


def _expected_ops(family: str, task: str, precision: str) -> dict[str, int]:
    """Fused ops of a 2-layer tiny model, from the family's registry facts (and the mlm head's dense + GELU)."""
    fam, layers = FAMILIES[family], 2
    eln = 1 if fam.fusions.embed_layer_norm or fam.fusions.embed_layer_norm_position_ids else 0
    # the residual norms are Sum + LayerNormalization, not SkipLayerNormalization (fusion.skip_layer_norm_as_sum;
    # test_quantize counts them in the graph)
    ops = {"SkipLayerNormalization": 0, "BiasGelu": layers + (task == "mlm")}
    ops["Attention" if precision == "fp32" else "MultiHeadAttention"] = layers
    if eln:
        ops["EmbedLayerNormalization"] = 1
    return ops


@pytest.mark.parametrize("family", NEW)
def test_family_exports_with_int8(family: str, family_bundle: Callable[..., dict[str, Any]]) -> None:
    """fp32 and int8 in one bundle, both through their gates; fused ops as the registry states."""
    manifest = family_bundle(family, QUICK[family], "fp32,int8")
    _check_gates(manifest, ("fp32", "int8"))
    assert manifest["family"] == family and manifest["tokenizer"]["kind"] == FAMILIES[family].tokenizer
    assert [i["name"] for i in manifest["inputs"]] == list(FAMILIES[family].input_names)
    for precision in ("fp32", "int8"):
        fused = manifest["graphs"][precision]["optimization"]["fused_ops"]
        for op, count in _expected_ops(family, QUICK[family], precision).items():
            assert fused.get(op, 0) == count, (family, precision, op, fused)
    assert manifest["graphs"]["int8"]["optimization"]["fused_ops"].get("MatMulIntegerToFloat", 0) >= 8
    # every residual norm (and the embeddings' one where there is no EmbedLayerNormalization) is a standard
    # LayerNormalization after a Sum
    import onnx

    fam = FAMILIES[family]
    eln = 1 if fam.fusions.embed_layer_norm or fam.fusions.embed_layer_norm_position_ids else 0
    graph = onnx.load(str(manifest["_path"] / manifest["graphs"]["fp32"]["file"]), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    head = QUICK[family] == "mlm"  # the mlm head's transform ends in its own (non-residual) LayerNorm
    assert ops.count("LayerNormalization") == 2 * 2 + (1 - eln) + head and ops.count("Sum") >= 2 * 2, family


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "distilbert"])
def test_no_token_types_in_the_graph(family: str, family_bundle: Callable[..., dict[str, Any]]) -> None:
    """Families without segment inputs export graphs without them (the inputs follow the registry)."""
    import onnx

    manifest = family_bundle(family, QUICK[family], "fp32,int8")
    graph = onnx.load(str(manifest["_path"] / manifest["graphs"]["fp32"]["file"]), load_external_data=False)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta"])
def test_bundle_tokenizer_is_the_trained_one(family: str, family_bundle: Callable[..., dict[str, Any]]) -> None:
    """The bundle carries the source's tokenizer verbatim: the same ids on multilingual text, and RoBERTa's
    special-token layout (<s> ... </s>, pad 1) in the manifest."""
    manifest = family_bundle(family, QUICK[family], "fp32,int8")
    bundled = load_tokenizer(manifest["_path"])
    source = load_tokenizer(Path(manifest["source"]["ref"]))
    assert bundled is not None and source is not None
    for text in MULTILINGUAL:
        ids = bundled(text)["input_ids"]
        assert ids == source(text)["input_ids"] and ids[0] == 0 and ids[-1] == 2 and len(ids) > 8
    assert manifest["special_tokens"]["cls"] == 0 and manifest["special_tokens"]["pad"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("family,task", SLOW)
def test_family_task_fp32(family: str, task: str, family_bundle: Callable[..., dict[str, Any]]) -> None:
    manifest = family_bundle(family, task)
    _check_gates(manifest, ("fp32",))
    fused = manifest["graphs"]["fp32"]["optimization"]["fused_ops"]
    assert fused.get("Attention") == 2


@pytest.mark.slow
def test_fp16_gate(family_bundle: Callable[..., dict[str, Any]]) -> None:
    manifest = family_bundle("xlm-roberta", "qa", "fp32,fp16")
    _check_gates(manifest, ("fp32", "fp16"))


def test_random_init_takes_published_sizes() -> None:
    """--random-init without --tiny builds the default checkpoint's published config (not transformers'
    defaults: roberta-base has 514 positions and one segment row, xlm-roberta-base 250002 pieces)."""
    import transformers

    expected = {
        "roberta": dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1),
        "xlm-roberta": dict(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1),
        "distilbert": dict(vocab_size=30522, dim=768, n_layers=6, hidden_dim=3072),
        "electra": dict(vocab_size=30522, hidden_size=256, embedding_size=128, num_hidden_layers=12),
    }
    for family, sizes in expected.items():
        fam = FAMILIES[family]
        config = getattr(transformers, fam.config_class)(**fam.default_config)
        assert {k: getattr(config, k) for k in sizes} == sizes, family
        assert fam.position_offset == (config.pad_token_id + 1 if family in ("roberta", "xlm-roberta") else 0)


def test_family_commands_exist() -> None:
    """Each family is a `bert-export <family>` command offering every task (generated from the registry)."""
    from click.testing import CliRunner

    from bert_export.cli.main import cli

    for family in NEW:
        result = CliRunner().invoke(cli, [family, "--help"])
        assert result.exit_code == 0, result.output
        for task in TASKS:
            assert task in result.output


def test_position_offset_cases_use_padding(family_bundle: Callable[..., dict[str, Any]]) -> None:
    """RoBERTa's positions depend on where the padding is: the padded-batch reference case holds pad-id
    padding (id 1) and the bundle still passes (the graph computes positions from input_ids as PyTorch does)."""
    from bert_export.bundle.reader import load_bundle
    from bert_export.bundle.reference import load_reference

    manifest = family_bundle("roberta", QUICK["roberta"], "fp32,int8")
    cases = {c.name: c for c in load_reference(load_bundle(manifest["_path"]))[0]}
    feed = cases["padded-batch"].feed
    pads = feed["attention_mask"] == 0
    assert pads.any() and np.all(feed["input_ids"][pads] == 1)


def test_roberta_embed_fusion_uses_the_offset_positions(family_bundle: Callable[..., dict[str, Any]]) -> None:
    """The fused EmbedLayerNormalization is fed RoBERTa's computed position ids (padding_idx + 1 + i): with
    them the graph reproduces PyTorch on the padded batch; the op's default positions (0..S-1) would not."""
    import onnx
    import onnxruntime as ort

    from bert_export.bundle.reader import load_bundle
    from bert_export.bundle.reference import load_reference

    manifest = family_bundle("roberta", QUICK["roberta"], "fp32,int8")
    model = onnx.load(str(manifest["_path"] / manifest["graphs"]["fp32"]["file"]))
    (eln,) = [n for n in model.graph.node if n.op_type == "EmbedLayerNormalization"]
    assert len(eln.input) == 9 and eln.input[8]  # position_ids wired
    cases, refs, rows = load_reference(load_bundle(manifest["_path"]))
    i = next(k for k, c in enumerate(cases) if c.name == "padded-batch")
    feed = {k: v for k, v in cases[i].feed.items() if k in ("input_ids", "attention_mask")}

    def worst(m: onnx.ModelProto) -> float:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        picked = {k: got[k][rows[i][k]] if k in rows[i] else got[k] for k in refs[i]}
        return max(float(np.abs(picked[k] - ref).max()) for k, ref in refs[i].items())

    scale = max(float(np.abs(ref).max()) for ref in refs[i].values())
    assert worst(model) <= 1e-4 * max(1.0, scale)
    del eln.input[7:]  # default positions 0..S-1
    assert worst(model) > 1e-2 * scale


@pytest.mark.parametrize("family", NEW)
def test_cpp_demo_runs_the_family_bundle(family: str, family_bundle: Callable[..., dict[str, Any]]) -> None:
    """The C++ demo on each new family's bundle: golden self-test at both precisions (inputs without token
    types where the family has none) and its tokenizer (BPE, Unigram, WordPiece) giving the bundle's Python
    ids on the multilingual sentences, characters the tokenizer never saw included."""
    import subprocess

    from tests.test_cpp import cpp, demo  # noqa: F401  (the session fixture builds the demo once)

    binary = Path(__file__).resolve().parents[1] / "examples" / "cpp" / "build" / "bert_export_demo"
    if not binary.is_file():
        subprocess.run(["bash", str(binary.parents[1] / "build.sh")], check=True, capture_output=True, timeout=900)
    manifest = family_bundle(family, QUICK[family], "fp32,int8")
    bundle = manifest["_path"]
    proc = cpp(binary, bundle, "--self-test")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tokenizer = load_tokenizer(bundle)
    assert tokenizer is not None
    for text in MULTILINGUAL:
        proc = cpp(binary, bundle, "--tokenize", text)
        assert proc.returncode == 0, (text, proc.stderr)
        assert [int(t) for t in proc.stdout.split()] == tokenizer(text)["input_ids"], text
