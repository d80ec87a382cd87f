"""golden.json: written into every validated bundle, checksummed, self-consistent, and checkable
by the reference implementation (check_golden) on the bundle's own graph. Tiny bundles only
(shared through make_bundle); ~2 s beyond the exports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.exporter.golden import GOLDEN, check_golden, load_golden
from bert_export.models import BertExportError
from bert_export.runtimes.factory import load_tokenizer, make_runner
from bert_export.runtimes.parity import GATES

from .conftest import resign

TASKS = ["qa", "embed", "mlm", "seq-cls", "token-cls", "rerank"]


@pytest.mark.parametrize("task", TASKS)
def test_golden_is_written_checksummed_and_passes(make_bundle: Callable[..., Path], task: str) -> None:
    path = make_bundle("bert", task)
    bundle = load_bundle(path)
    assert GOLDEN in bundle.manifest["files"]  # verified by load_bundle like every other file
    golden = load_golden(path)
    assert bundle.manifest["golden"] == {"file": GOLDEN, "version": 1, "examples": len(golden["examples"])}
    assert golden["task"] == task and golden["reference"] == "pytorch-fp32"
    assert set(golden["tolerances"]) == set(GATES)
    assert golden["tolerances"]["fp32"]["max_abs"] == GATES["fp32"].max_abs
    assert len(golden["examples"]) >= 3
    with make_runner(bundle) as runner:
        assert check_golden(path, runner, bundle.precision) == []


@pytest.mark.parametrize("task", TASKS)
def test_golden_inputs_are_the_tokenizers(make_bundle: Callable[..., Path], task: str) -> None:
    path = make_bundle("bert", task)
    tokenizer = load_tokenizer(path)
    for ex in load_golden(path)["examples"]:
        if "question" in ex:
            enc = tokenizer(
                ex["question"], ex["context"], truncation="only_second", max_length=load_bundle(path).max_seq
            )
        elif "text_pair" in ex:  # seq-cls / rerank pairs: token types 0 then 1
            enc = tokenizer(ex["text"], ex["text_pair"], truncation="longest_first")
            assert set(enc["token_type_ids"]) == {0, 1}
        else:
            enc = tokenizer(ex["text"])
        assert ex["input_ids"] == enc["input_ids"]
        assert ex["token_type_ids"] == enc["token_type_ids"]
        assert ex["attention_mask"] == [1] * len(ex["input_ids"])


def test_golden_results_and_reductions(make_bundle: Callable[..., Path]) -> None:
    qa = load_golden(make_bundle("bert", "qa"))
    for ex in qa["examples"]:
        r = ex["result"]
        assert ex["context"][r["start"] : r["end"]] == r["answer"]
        assert len(ex["outputs"]["start_logits"]) == len(ex["input_ids"])
    mlm = load_golden(make_bundle("bert", "mlm"))
    for ex in mlm["examples"]:
        logits = ex["outputs"]["logits"]
        assert logits["reduce"] == "topk"
        assert [ex["input_ids"][p] for p in logits["positions"]] == [103] * len(logits["positions"]) and logits[
            "positions"
        ]
        assert all(len(ids) == 5 for ids in logits["ids"])
        assert all(v == sorted(v, reverse=True) for v in logits["values"])
        assert [f["candidates"][0]["id"] for f in ex["result"]["fills"]] == [ids[0] for ids in logits["ids"]]
    embed = load_golden(make_bundle("bert", "embed"))
    for ex in embed["examples"]:
        pooled = ex["outputs"]["last_hidden_state"]
        assert pooled["reduce"] == "pool" and len(pooled["values"]) == 32  # tiny hidden size
        assert np.allclose(pooled["values"], ex["result"]["embeddings"][0], atol=1e-6)


def test_check_golden_reports_a_wrong_reference(
    make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]
) -> None:
    path = copy_bundle(make_bundle("bert", "seq-cls"))
    golden = json.loads((path / GOLDEN).read_text(encoding="utf-8"))
    golden["examples"][1]["outputs"]["logits"][0] += 0.5
    (path / GOLDEN).write_text(json.dumps(golden), encoding="utf-8")
    with pytest.raises(BertExportError, match="golden.json does not match its sha256"):
        load_bundle(path)
    resign(path)
    with make_runner(load_bundle(path)) as runner:
        problems = check_golden(path, runner, "fp32")
    assert problems and problems[0].startswith("seq-cls-1: logits max abs diff")


def test_golden_version_is_checked(make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]) -> None:
    path = copy_bundle(make_bundle("bert", "qa"))
    golden = json.loads((path / GOLDEN).read_text(encoding="utf-8"))
    golden["version"] = 7
    (path / GOLDEN).write_text(json.dumps(golden), encoding="utf-8")
    resign(path)
    with pytest.raises(BertExportError, match="version 7"):
        load_golden(path)
    (path / GOLDEN).unlink()
    resign(path, lambda m: m.pop("golden"))
    with pytest.raises(BertExportError, match="has no golden.json"):
        load_golden(path)


def test_no_golden_without_validation(make_bundle: Callable[..., Path]) -> None:
    path = make_bundle("bert", "qa", validate=False)
    assert not (path / GOLDEN).exists()
    assert "golden" not in load_bundle(path).manifest
