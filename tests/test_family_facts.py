"""Family facts are stated in the registry and read where they are used, not guessed.

The tokenizer kind (no longer guessed from file names), which ONNX Runtime fusions apply (no longer
keyed on proxies such as "has token_type_ids" or "has no local window") and the position-id offset
are fields of ``Family`` (models/registry.py); these tests check that the passes obey them and that
contradictory facts are refused. The fused-op counts of real exports are pinned in test_quantize.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import onnx_ir as ir
import pytest

from bert_export.exporter.api import graph_outputs, tokenizer_kind
from bert_export.exporter.loading import load_random
from bert_export.exporter.onnx_export import export_onnx
from bert_export.models import FAMILIES, TASKS, BertExportError
from bert_export.models.registry import Fusions
from bert_export.quantize.fusion import fuse_for_ort, fused_op_counts
from bert_export.runtimes.factory import load_tokenizer
from bert_export.runtimes.torch_runner import TaskGraph


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(position_offset=2), "positions 0..S-1"),
        (dict(tokenizer="sentencepiece"), "tokenizer 'sentencepiece'"),
    ],
)
def test_contradictory_facts_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(FAMILIES["bert"], **change)


def test_stated_facts() -> None:
    bert, modern = FAMILIES["bert"], FAMILIES["modernbert"]
    assert (bert.tokenizer, modern.tokenizer) == ("wordpiece", "bpe")
    assert bert.fusions == Fusions(embed_layer_norm=True, packed_qkv=True, padding_mask_index=True)
    assert modern.fusions == Fusions(rotary=True, banded_local_attention=True)
    assert bert.position_offset == modern.position_offset == 0 and modern.gated_ffn and not bert.gated_ffn


@pytest.fixture(scope="module")
def raw_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family's tiny qa graph straight from the exporter, before any fusion."""
    out = {}
    for name in ("bert", "modernbert"):
        fam, task = FAMILIES[name], TASKS["qa"]
        source = load_random(fam, task, dict(fam.tiny_config), seed=0, num_labels=None)
        outputs = graph_outputs(fam, task, source)
        work = tmp_path_factory.mktemp(name)
        exported = export_onnx(
            TaskGraph(source.model, [o.name for o in outputs]),
            fam.inputs,
            outputs,
            work,
            opset=18,
            example_seq=24,
            vocab_size=source.config.vocab_size,
        )
        out[name] = exported.path
    return out


@pytest.mark.parametrize("name", ["bert", "modernbert"])
def test_fusions_follow_the_registry(raw_graphs: dict[str, Path], name: str) -> None:
    """The family's own facts give its fused ops; each fact turned off removes exactly its pass's op."""
    stated = fused_op_counts(fuse_for_ort(ir.load(raw_graphs[name]), FAMILIES[name].fusions, max_positions=128))
    if name == "bert":
        assert stated.get("EmbedLayerNormalization") == 1 and stated.get("Attention") == 2
        off = dataclasses.replace(FAMILIES[name].fusions, embed_layer_norm=False)
        without = fused_op_counts(fuse_for_ort(ir.load(raw_graphs[name]), off, max_positions=128))
        assert "EmbedLayerNormalization" not in without and without.get("Attention") == 2
    else:
        assert stated.get("RotaryEmbedding") == 6 and stated.get("MultiHeadAttention") == 3
        off = dataclasses.replace(FAMILIES[name].fusions, rotary=False)
        without = fused_op_counts(fuse_for_ort(ir.load(raw_graphs[name]), off, max_positions=128))
        assert "RotaryEmbedding" not in without and without.get("MultiHeadAttention") == 3


def test_padding_mask_index_follows_the_registry(raw_graphs: dict[str, Path]) -> None:
    """BERT's mask is pure key padding: its Attention nodes take the int32 mask (input 3), not a 4-D bias."""
    for flag, fed in ((True, True), (False, False)):
        fusions = dataclasses.replace(FAMILIES["bert"].fusions, padding_mask_index=flag)
        model = fuse_for_ort(ir.load(raw_graphs["bert"]), fusions, max_positions=128)
        attention = [n for n in model.graph if n.op_type == "Attention"]
        masks = [n.inputs[3].name if len(n.inputs) > 3 and n.inputs[3] is not None else None for n in attention]
        assert attention and all((m == "attention_mask_int32") == fed for m in masks), masks


def _bpe_tokenizer(directory: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world", "a bundle of words"], trainers.BpeTrainer(vocab_size=300))
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    return directory


def test_tokenizer_kind_is_the_familys_and_checked(minilm_dir: Path, tmp_path: Path) -> None:
    """The kind is stated (a WordPiece tokenizer.json without vocab.txt is still wordpiece) and checked."""
    wordpiece = load_tokenizer(minilm_dir)
    assert tokenizer_kind(FAMILIES["bert"], wordpiece) == "wordpiece"
    assert tokenizer_kind(FAMILIES["bert"], None) is None
    only_json = tmp_path / "wp"
    only_json.mkdir()
    (only_json / "tokenizer.json").write_bytes((minilm_dir / "tokenizer.json").read_bytes())
    assert tokenizer_kind(FAMILIES["bert"], load_tokenizer(only_json)) == "wordpiece"  # the file-name guess said bpe
    bpe = load_tokenizer(_bpe_tokenizer(tmp_path))
    assert tokenizer_kind(FAMILIES["modernbert"], bpe) == "bpe"
    with pytest.raises(BertExportError, match="the model's tokenizer is bpe, but bert bundles carry a wordpiece"):
        tokenizer_kind(FAMILIES["bert"], bpe)
    with pytest.raises(BertExportError, match="tokenizer is wordpiece, but modernbert bundles carry a bpe"):
        tokenizer_kind(FAMILIES["modernbert"], wordpiece)


def test_position_offset_shortens_the_usable_sequence() -> None:
    source = load_random(FAMILIES["bert"], TASKS["qa"], dict(FAMILIES["bert"].tiny_config), seed=0, num_labels=None)
    assert source.max_positions == 128 == source.config.max_position_embeddings
    assert dataclasses.replace(source, position_offset=2).max_positions == 126
