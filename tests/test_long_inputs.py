"""Long inputs (#13): banded local attention for ModernBERT, long-context QA windows, long-document embeddings.

The rewrite is checked against PyTorch itself on a tiny ModernBERT (window 16, so block 8) at
lengths below, at and past the window, not multiples of the block, in right-padded batches,
comparing only real positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bert_export.exporter.bundle import load_bundle
from bert_export.exporter.loading import load_source
from bert_export.models import FAMILIES, get_family, get_task
from bert_export.runtimes.factory import make_runner

WINDOW = 16  # tiny ModernBERT's local_attention: band |i - j| <= 8, blocks of 8
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
        out = source.model(input_ids=torch.from_numpy(feed["input_ids"]), attention_mask=torch.from_numpy(feed["attention_mask"]))
    return out[0].numpy()


@pytest.fixture(scope="module")
def banded_embed(make_bundle) -> Path:
    return make_bundle("modernbert", "embed", overrides=dict(TINY))


@pytest.mark.parametrize("lengths, width", [
    ([5, 3, 1], 5),                 # below the window, below one block
    ([16, 8, 12], 16),              # exactly the window, exactly two blocks
    ([17, 9, 2], 17),               # one past the window, not a block multiple
    ([45, 29, 16, 7], 45),          # well past the window, odd
    ([130, 64, 33, 100], 130),      # many blocks, mixed padding
])
def test_banded_matches_pytorch(banded_embed: Path, lengths: list[int], width: int) -> None:
    feed = _batch(lengths, width, seed=width)
    with make_runner(load_bundle(banded_embed), "ort", 1) as runner:
        got = runner.infer(feed)["last_hidden_state"]
    want = _torch_hidden("embed", feed)
    keep = feed["attention_mask"].astype(bool)
    assert np.isfinite(got).all()
    err = np.abs(got - want)[keep].max()
    assert err <= 1e-4, f"max |onnx - torch| at real positions = {err}"


def test_pass_applied_and_global_layers_full(banded_embed: Path) -> None:
    b = load_bundle(banded_embed)
    assert b.manifest["optimization"]["banded_attention_layers"] == 2  # layers 1 and 2 of 3 are local
    model = onnx.load(str(b.model_path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Softmax") == 2 and ops.count("Pad") >= 2  # two blocked local layers
    mha = [n for n in model.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 1  # the global layer stays one full MultiHeadAttention, now with no dense bias
    assert len([i for i in mha[0].input if i]) == 3
    assert any(a.name == "scale" for a in mha[0].attribute)
    # no [batch, 1, seq, seq] band is left anywhere: the Abs/LessOrEqual window mask was consumed
    assert "Abs" not in ops and "LessOrEqual" not in ops


def test_dense_flag_keeps_masked_attention_and_agrees(make_bundle, banded_embed: Path) -> None:
    from bert_export.quantize.pipeline import OptimizeOptions

    dense = make_bundle("modernbert", "embed", overrides=dict(TINY), optimization=OptimizeOptions(banded_attention=False))
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


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_banded_with_low_precision(make_bundle, precision: str) -> None:
    from bert_export.quantize.pipeline import OptimizeOptions

    opt = OptimizeOptions(int8=precision == "int8", fp16=precision == "fp16")
    path = make_bundle("modernbert", "embed", overrides=dict(TINY), optimization=opt)
    b = load_bundle(path)
    assert b.manifest["optimization"]["banded_attention_layers"] == 2
    assert b.manifest["parity"]["passed"]
    feed = _batch([90, 50, 21], 90, seed=3)
    with make_runner(b, "ort", 1) as runner:
        got = runner.infer(feed)["last_hidden_state"]
    want = _torch_hidden("embed", feed)
    keep = feed["attention_mask"].astype(bool)
    assert np.isfinite(got).all()
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cos[keep].min() > 0.99
