"""Parity cases on real text: shapes, padding and masking are what the harness promises."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer, ModernBertConfig

from bert_export.models import FAMILIES, TASKS
from bert_export.runtimes.cases import build_cases


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.mark.parametrize("task", ["qa", "mlm", "embed"])
def test_local_window_cases_with_a_real_tokenizer(tokenizer, task: str) -> None:
    """ModernBERT-style window with real text: every case builds, the past-window one exceeds the window."""
    config = ModernBertConfig(**{**FAMILIES["modernbert"].tiny_config, "vocab_size": tokenizer.vocab_size})
    cases = build_cases(FAMILIES["modernbert"], TASKS[task], config, tokenizer, max_seq=128)
    by_name = {c.name: c for c in cases}
    assert by_name["single-token"].shape == (1, 1)
    assert (
        by_name["max-seq"].shape == (2, 128)
        and by_name["max-seq"].keep[0].all()
        and not by_name["max-seq"].keep[1].all()
    )
    past = by_name["past-window"]
    lengths = past.keep.sum(1)
    assert lengths.max() > 2 * config.local_attention and len(set(lengths.tolist())) == 3  # padded, mixed
    padded = by_name["padded-batch"]
    assert len(set(padded.keep.sum(1).tolist())) > 3
    if task == "qa":
        assert all((c.context_mask.sum(1) > 0).all() for c in cases if c.name != "single-token")
    if task == "mlm":
        for c in cases:
            assert c.mlm_positions.any(1).all() and not (c.mlm_positions & ~c.keep).any()
            assert (c.feed["input_ids"][c.mlm_positions] == tokenizer.mask_token_id).all()
    for c in cases:  # right padding: real tokens first, then only padding
        k = c.keep.astype(np.int8)
        assert (np.diff(k, axis=1) <= 0).all()
