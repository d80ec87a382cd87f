"""Issue #12: validation on the user's own checkpoint and data (validate --model/--data, compare,
report formats, --expect-ops, bert_export.testing.assert_parity, examples/ci).

The real-data case fine-tunes the packaged MiniLM's seq-cls head for a few steps on sentences this
module writes, so its labels mean something, then exports it fp32 and int8 (static, calibrated, every
MatMul quantized: the precision that measurably moves the metric here).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bert_export.evaluation import metrics as m
from bert_export.evaluation.data import read_data
from bert_export.evaluation.report import EvalReport
from bert_export.evaluation.scoring import MetricRow
from bert_export.exporter import export
from bert_export.quantize.pipeline import OptimizeOptions
from bert_export.runtimes.parity import GATES, Report

ROOT = Path(__file__).resolve().parents[1]

POSITIVE = [
    "I loved this film, it was wonderful.",
    "A delightful and moving story.",
    "Great acting and a superb soundtrack.",
    "The best meal I have had in years.",
    "Fantastic service, friendly staff.",
    "An excellent, beautiful book.",
    "I really enjoyed every minute.",
    "Brilliant work, highly recommended.",
]
NEGATIVE = [
    "I hated this film, it was awful.",
    "A dull and tedious story.",
    "Terrible acting and a boring soundtrack.",
    "The worst meal I have had in years.",
    "Rude service, unfriendly staff.",
    "A poor, ugly book.",
    "I regretted every minute.",
    "Dreadful work, avoid it.",
]
SUBJECTS = ["The film", "The meal", "The hotel", "The book", "The concert", "The service", "The trip", "The show"]
GOOD, BAD = ["wonderful", "lovely", "decent", "fun"], ["awful", "dull", "slow", "messy"]


def eval_rows() -> list[tuple[str, str]]:
    """Held-out reviews: plain ones, and contrastive ones whose gold follows the clause after "but"."""
    rows = [(f"{s} was {g}.", "positive") for s, g in zip(SUBJECTS, GOOD * 2)]
    rows += [(f"{s} was {b}.", "negative") for s, b in zip(SUBJECTS, BAD * 2)]
    rows += [(f"{s} was {g} but {b}.", "negative") for s, g, b in itertools.product(SUBJECTS, GOOD, BAD)]
    rows += [(f"{s} was {b} but {g}.", "positive") for s, b, g in itertools.product(SUBJECTS[:4], BAD, GOOD)]
    return rows


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """The CLI in-process (as tests/test_bad_input.py): exit code, stdout, stderr."""
    from bert_export.cli.main import main

    def run(*args: object) -> SimpleNamespace:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=int(exc.value.code or 0), stdout=out.out, stderr=out.err)

    return run


def error_lines(proc: SimpleNamespace) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("✓", "note:"))]


def fine_tune(out: Path, minilm_dir: Path, steps: int = 8) -> Path:
    """MiniLM + a 2-label head trained for a few steps on the sentences above, saved as safetensors."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(minilm_dir), num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    texts = POSITIVE + NEGATIVE + ["The film was dull but wonderful.", "The book was lovely but awful."]
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE) + [1, 0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    enc = tok(texts, padding=True, return_tensors="pt")
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    return out


@pytest.fixture(scope="module")
def sst(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("user-validation")
    ckpt = fine_tune(root / "ckpt", minilm_dir)
    data = root / "dev.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(eval_rows())
    fp32 = export("bert", "seq-cls", model=str(ckpt), max_seq=128, out=root / "fp32").bundle
    # Static int8 with every MatMul quantized (no fallback, so no export-time gate to hold): the
    # accuracy fallback's choice depends on its time budget, and a bundle that kept most nodes in fp32
    # moves no prediction; this one measurably does, which is what the gates below must see.
    int8 = export(
        "bert",
        "seq-cls",
        model=str(ckpt),
        max_seq=128,
        out=root / "int8",
        validate=False,
        optimization=OptimizeOptions(int8=True, int8_mode="static", fallback=False),
    ).bundle
    # The same texts labelled with the checkpoint's own predictions: PyTorch scores 100% on them, so
    # every prediction int8 changes is a drop (on the gold labels, flips can cancel out).
    self_data = root / "self-labelled.csv"
    with self_data.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip([t for t, _ in eval_rows()], checkpoint_predictions(ckpt, [t for t, _ in eval_rows()])))
    return SimpleNamespace(root=root, ckpt=ckpt, data=data, self_data=self_data, fp32=fp32, int8=int8)


def checkpoint_predictions(ckpt: Path, texts: list[str]) -> list[str]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    model = transformers.BertForSequenceClassification.from_pretrained(str(ckpt)).eval()
    with torch.inference_mode():
        logits = model(**tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")).logits
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]


# --- the real-data case ------------------------------------------------------------------------


def test_int8_metric_drop_reported_and_gated(sst: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """The metric table shows PyTorch and int8 side by side; a zero-drop gate fails with exit 1; reports written.

    On the gold labels: the metrics mean something (above the majority class) and int8 moves
    predictions. The gate itself is then checked on the same texts labelled with the checkpoint's own
    predictions, where every moved prediction is a drop, so this test cannot pass by cancellation."""
    from junitparser import Failure, JUnitXml

    gold = tmp_path / "gold.json"
    run_cli("validate", sst.int8, "--model", sst.ckpt, "--data", sst.data, "--max-metric-drop", "100", "--report", gold)
    g = json.loads(gold.read_text())
    gold_acc = next(row for row in g["metrics"] if row["name"] == "accuracy")
    n = len(eval_rows())
    majority = (
        max(sum(lab == "positive" for _, lab in eval_rows()), sum(lab == "negative" for _, lab in eval_rows())) / n
    )
    assert gold_acc["reference"] > majority + 0.03, (gold_acc, majority)  # the head learned the task
    flipped = g["data"]["disagreements"]["count"]
    assert flipped > 0, "static int8 changed no prediction on this data; the gate test below needs a drop"

    report, junit, md = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "r.md"
    proc = run_cli(
        "validate",
        sst.int8,
        "--model",
        sst.ckpt,
        "--data",
        sst.self_data,
        "--max-metric-drop",
        "0",
        "--report",
        report,
        "--junit",
        junit,
        "--markdown",
        md,
    )
    r = json.loads(report.read_text())
    rows = {row["name"]: row for row in r["metrics"]}
    assert set(rows) == {"accuracy", "macro_f1"}
    acc = rows["accuracy"]
    batch_rows = [c["shape"][0] for c in r["cases"]]  # batched by length: 16 texts of mean length per batch
    assert r["data"]["examples"] == n and r["data"]["batches"] == len(batch_rows) and sum(batch_rows) == n
    assert r["data"]["disagreements"]["count"] == flipped  # same texts, same predictions
    assert acc["reference"] == 1.0  # the labels are PyTorch's own answers
    assert acc["candidate"] * n == pytest.approx(n - flipped, abs=1e-6)  # each moved prediction costs one
    assert acc["drop_points"] == pytest.approx(100 * flipped / n, abs=1e-6)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert error_lines(proc)[-1].startswith("error: ") and "drop" in error_lines(proc)[-1]
    assert "Traceback" not in proc.stderr
    # the table: both columns and the drop
    assert "task metrics vs gold" in proc.stdout and f"{100 * acc['reference']:.2f}" in proc.stdout
    assert f"{100 * acc['candidate']:.2f}" in proc.stdout
    # JUnit read back by a reader library: one testcase per batch and per gate, failures carry numbers
    xml = JUnitXml.fromfile(str(junit))
    cases = [c for suite in xml for c in suite]
    gates = [c for c in cases if c.classname == "gates"]
    assert len([c for c in cases if c.classname.startswith("parity.")]) == r["data"]["batches"]
    assert {c.name for c in gates} >= {
        "precision gate (int8)",
        "accuracy drop <= 0 points",
        "macro_f1 drop <= 0 points",
    }
    failed = {c.name: c.result[0] for c in gates if c.result and isinstance(c.result[0], Failure)}
    drop_gate = next(name for name, row in rows.items() if row["drop_points"] > 0)
    assert f"{drop_gate} drop <= 0 points" in failed
    assert f"{rows[drop_gate]['drop_points']:.2f} points" in failed[f"{drop_gate} drop <= 0 points"].message
    md_text = md.read_text()
    assert "| accuracy |" in md_text and "❌ fail" in md_text
    print(proc.stdout)  # the table for the closing note (pytest -s)

    # a gate just above the measured drop passes the metric gates (same data, same numbers)
    from bert_export.evaluation import validate_data

    limit = max(row["drop_points"] for row in rows.values()) + 0.01
    again = validate_data(sst.int8, model=sst.ckpt, data=sst.self_data, max_metric_drop=limit)
    assert [g.passed for g in again.gates if "drop" in g.name] == [True, True]
    assert [row.to_json() for row in again.metrics] == r["metrics"]


def test_fp32_bundle_keeps_the_metric(sst: SimpleNamespace) -> None:
    """fp32 against its own PyTorch: identical predictions, zero drop, every gate passes (default 0.5 points)."""
    from bert_export.testing import assert_parity

    report = assert_parity(sst.fp32, model=sst.ckpt, data=sst.data)
    assert report.data["disagreements"]["count"] == 0
    assert all(row.drop == 0 for row in report.metrics)
    assert report.parity.summary["max_abs"]["logits"] < 1e-4


def test_assert_parity_message_is_the_table(sst: SimpleNamespace) -> None:
    from bert_export.testing import assert_parity

    with pytest.raises(AssertionError) as info:
        assert_parity(sst.int8, model=sst.ckpt, data=sst.self_data, max_metric_drop=0.0)
    text = str(info.value)
    assert "task metrics vs gold" in text and "accuracy" in text and "FAIL" in text


def test_compare_fp32_vs_int8(sst: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """compare needs no PyTorch: int8 against the fp32 bundle, same metric table and int8 gate."""
    report = tmp_path / "c.json"
    proc = run_cli(
        "compare", sst.fp32, sst.int8, "--data", sst.data, "--max-metric-drop", "100", "--report", report, "-q"
    )
    r = json.loads(report.read_text())
    assert r["precision"] == "int8" and r["gate"] == json.loads(json.dumps(GATES["int8"].__dict__))
    assert str(sst.fp32) in r["reference"] and str(sst.int8) in r["candidate"]
    assert {row["name"] for row in r["metrics"]} == {"accuracy", "macro_f1"}
    assert r["data"]["disagreements"]["count"] > 0  # static int8 moves some predictions of the fp32 bundle
    assert proc.returncode == (0 if r["parity_passed"] else 1), proc.stderr
    # bundle vs itself: nothing differs
    same = tmp_path / "s.json"
    proc = run_cli("compare", sst.fp32, sst.fp32, "--data", sst.data, "--limit", "20", "--report", same, "-q")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(same.read_text())
    assert s["summary"]["max_abs"]["logits"] == 0.0 and all(row["drop_points"] == 0 for row in s["metrics"])
    assert s["data"]["examples"] == 20


def test_checkpoint_rules_as_export(sst: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """The checkpoint loads by export's rules: a pickle-only checkpoint is refused (exit 2) unless allowed."""
    pickled = tmp_path / "pickled"
    shutil.copytree(sst.ckpt, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    proc = run_cli("validate", sst.int8, "--model", pickled, "--data", sst.data, "-q")
    assert proc.returncode == 2 and error_lines(proc) == [ln for ln in error_lines(proc) if ln.startswith("error:")]
    assert "pickle" in proc.stdout + proc.stderr


# --- --expect-ops ------------------------------------------------------------------------------


def test_expect_ops_fails_on_unoptimized_bundle(make_bundle, tmp_path: Path, run_cli) -> None:
    optimized = make_bundle("bert", "seq-cls")
    plain = make_bundle("bert", "seq-cls", optimization=OptimizeOptions(optimize=False))
    fused = json.loads((optimized / "manifest.json").read_text())["optimization"]["fused_ops"]
    assert fused.get("Attention", 0) + fused.get("MultiHeadAttention", 0) > 0
    expected = tmp_path / "ops.json"
    expected.write_text(json.dumps(fused))
    junit = tmp_path / "ops.xml"
    proc = run_cli("validate", plain, "--expect-ops", expected, "--junit", junit, "-q")
    assert proc.returncode == 1, proc.stderr
    assert "fused ops" in error_lines(proc)[-1] and "< " in error_lines(proc)[-1]
    from junitparser import JUnitXml

    gate = next(c for s in JUnitXml.fromfile(str(junit)) for c in s if c.name.startswith("fused ops"))
    assert "Attention 0 < " in gate.result[0].message
    # the counts of another bundle work the same way, and the optimized bundle keeps its own counts
    assert run_cli("validate", plain, "--expect-ops", optimized, "-q").returncode == 1
    assert run_cli("validate", optimized, "--expect-ops", expected, "-q").returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"Attention": "six"}')
    proc = run_cli("validate", optimized, "--expect-ops", bad, "-q")
    assert proc.returncode == 2 and len(error_lines(proc)) == 1


# --- other tasks end to end (tiny checkpoints: fast) -------------------------------------------


def tiny_checkpoint(out: Path, task_class: str, minilm_dir: Path, **config) -> Path:
    import torch
    import transformers

    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **config,
    )
    torch.manual_seed(0)
    getattr(transformers, task_class)(cfg).save_pretrained(str(out), safe_serialization=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, out / name)
    return out


def test_qa_end_to_end(tmp_path: Path, minilm_dir: Path, run_cli) -> None:
    ckpt = tiny_checkpoint(tmp_path / "qa-ckpt", "BertForQuestionAnswering", minilm_dir)
    bundle = export("bert", "qa", model=str(ckpt), out=tmp_path / "qa").bundle
    data = tmp_path / "qa.jsonl"
    rows = [
        {
            "question": "Who wrote Emma?",
            "context": "Emma was written by Jane Austen in 1815.",
            "answers": {"text": ["Jane Austen"], "answer_start": [20]},
        },
        {
            "question": "What boils at 100 degrees?",
            "context": "Water boils at 100 degrees Celsius at sea level.",
            "answers": ["Water"],
        },
        {
            "question": "Where is the Brandenburg Gate?",
            "context": "The Brandenburg Gate stands in Berlin, the capital of Germany.",
            "answers": "Berlin",
        },
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = tmp_path / "qa.json"
    proc = run_cli("validate", bundle, "--model", ckpt, "--data", data, "--batch", "2", "--report", report, "-q")
    r = json.loads(report.read_text())
    assert proc.returncode == 0, proc.stderr
    assert {row["name"] for row in r["metrics"]} == {"exact_match", "f1"}
    assert all(row["drop_points"] == 0 for row in r["metrics"])  # fp32: the same answers as PyTorch
    budget = 2 * -(-r["data"]["tokens_mean"] // 1)  # --batch 2: two texts of mean length per batch
    shapes = [c["shape"] for c in r["cases"]]
    assert sum(rows for rows, _ in shapes) == 3 and all(rows == 1 or rows * seq <= budget for rows, seq in shapes)


def test_token_cls_end_to_end(tmp_path: Path, minilm_dir: Path, run_cli) -> None:
    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    ckpt = tiny_checkpoint(
        tmp_path / "ner-ckpt",
        "BertForTokenClassification",
        minilm_dir,
        num_labels=4,
        id2label=dict(enumerate(labels)),
        label2id={v: k for k, v in enumerate(labels)},
    )
    bundle = export("bert", "token-cls", model=str(ckpt), out=tmp_path / "ner").bundle
    data = tmp_path / "ner.jsonl"
    rows = [
        {"tokens": ["Marie", "Curie", "lived", "in", "Paris"], "labels": ["B-PER", "I-PER", "O", "O", "B-LOC"]},
        {"text": "Ada Lovelace was born in London", "labels": ["B-PER", "I-PER", "O", "O", "O", "B-LOC"]},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = tmp_path / "ner.json"
    proc = run_cli("validate", bundle, "--model", ckpt, "--data", data, "--report", report, "-q")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    assert [row["name"] for row in r["metrics"]] == ["entity_f1", "entity_precision", "entity_recall"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "Ada Lovelace", "labels": ["B-PERSON", "O"]}) + "\n")
    proc = run_cli("validate", bundle, "--model", ckpt, "--data", bad, "-q")
    assert proc.returncode == 2 and "B-PERSON" in error_lines(proc)[-1]


def test_embed_pairs_and_mlm_compare(make_bundle, tmp_path: Path, run_cli) -> None:
    """embed: a pairs file gives Spearman; mlm: masked tokens of the text are the gold (top-1/top-5)."""
    embed = make_bundle("bert", "embed")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "sentence1,sentence2,score\n"
        "A man is playing a guitar.,A person plays the guitar.,4.8\n"
        "A dog runs in the park.,The stock market fell today.,0.2\n"
        "Children are playing football.,Kids play soccer outside.,4.1\n"
        "The cat sleeps on the sofa.,A plane takes off.,0.5\n",
        encoding="utf-8",
    )
    report = tmp_path / "e.json"
    assert run_cli("compare", embed, embed, "--data", pairs, "--report", report, "-q").returncode == 0
    r = json.loads(report.read_text())
    assert [row["name"] for row in r["metrics"]] == ["spearman"] and r["data"]["inputs"] == 8
    mlm = make_bundle("bert", "mlm")
    texts = tmp_path / "t.txt"
    texts.write_text(
        "\n".join(
            [
                "Paris is the capital of France.",
                "Water boils at one hundred degrees.",
                "",
                "The quick brown fox jumps over the lazy dog.",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    assert run_cli("compare", mlm, mlm, "--data", texts, "--report", report, "-q").returncode == 0
    r = json.loads(report.read_text())
    assert [row["name"] for row in r["metrics"]] == ["top1_accuracy", "top5_accuracy"] and r["data"]["examples"] == 3
    assert r["summary"]["top1_agreement"] == 1.0


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("missing.csv", "sentence,label\nhello,positive\n", "lacks column(s) text"),
        ("empty.csv", "", "is empty"),
        ("header-only.csv", "text,label\n", "no rows"),
        ("latin1.csv", "text,label\ncaf\xe9 au lait,positive\n".encode("latin-1"), "not UTF-8"),
        ("broken.jsonl", '{"text": "ok"}\n{"text": \n', "not valid JSON lines"),
        ("data.xlsx", "text\nhello\n", "unknown extension"),
        ("bad-label.csv", "text,label\nhello,maybe\n", "not one of this bundle's labels"),
        ("broken.parquet", b"PAR1 not really", "not valid Parquet"),
    ],
)
def test_bad_data_files(make_bundle, tmp_path: Path, name: str, content: str | bytes, needle: str, run_cli) -> None:
    bundle = make_bundle("bert", "seq-cls")
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    junit = tmp_path / "out.xml"
    proc = run_cli("compare", bundle, bundle, "--data", path, "--junit", junit, "-q")
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not junit.exists()  # nothing half-written


def test_output_paths_checked_before_work(make_bundle, tmp_path: Path, run_cli) -> None:
    bundle = make_bundle("bert", "seq-cls")
    (tmp_path / "a-file").write_text("x")  # a missing folder is created at write time (every output alike);
    proc = run_cli("validate", bundle, "--junit", tmp_path / "a-file" / "r.xml", "-q")  # one that cannot be is refused
    assert proc.returncode == 2 and "is not a directory" in error_lines(proc)[0]
    proc = run_cli("validate", bundle, "--data", tmp_path / "x.csv", "-q")
    assert proc.returncode == 2 and "--model" in error_lines(proc)[0]


def test_parquet_and_stored_validate_formats(make_bundle, tmp_path: Path, run_cli) -> None:
    """Parquet reads through pyarrow; plain validate (stored cases) also writes JUnit and Markdown."""
    import pandas as pd
    from junitparser import JUnitXml

    bundle = make_bundle("bert", "seq-cls")
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["good", "bad", "fine"], "label": [1, 0, 1]}).to_parquet(path)
    ds = read_data(path, "seq-cls")
    assert [e.text for e in ds.examples] == ["good", "bad", "fine"] and ds.gold == "label"
    junit, md = tmp_path / "v.xml", tmp_path / "v.md"
    proc = run_cli("validate", bundle, "--junit", junit, "--markdown", md, "-q")
    assert proc.returncode == 0, proc.stderr
    cases = [c for s in JUnitXml.fromfile(str(junit)) for c in s]
    assert len(cases) == len(json.loads((bundle / "parity.json").read_text())["cases"]) + 1
    assert "✅ pass" in md.read_text()


# --- metrics against hand-computed values ----------------------------------------------------


def test_squad_metrics_hand_computed() -> None:
    # "the Eiffel Tower" vs "Eiffel Tower": articles drop out -> EM 1
    assert m.exact_match("the Eiffel Tower", "Eiffel Tower") == 1.0
    # "in Paris, France" vs "Paris": tokens {in, paris, france} vs {paris}: P 1/3, R 1 -> F1 0.5
    assert m.token_f1("in Paris, France", "Paris") == pytest.approx(0.5)
    # "Jane" vs "Jane Austen": P 1, R 1/2 -> F1 2/3
    assert m.token_f1("Jane", "Jane Austen") == pytest.approx(2 / 3)
    # best over gold answers; no overlap -> 0
    result = m.squad(
        ["the Eiffel Tower", "in Paris, France", "Jane", "1815"],
        [["Eiffel Tower"], ["Paris", "Paris, France"], ["Jane Austen"], ["1816"]],
    )
    # EM: 1, 0, 0, 0 -> 0.25. F1: 1, max(0.5, 2*(2/3*1)/(2/3+1)=0.8) = 0.8, 2/3, 0 -> (1+0.8+2/3)/4
    assert result["exact_match"] == pytest.approx(0.25)
    assert result["f1"] == pytest.approx((1 + 0.8 + 2 / 3) / 4)
    assert m.normalize_answer("  The  Cat's  hat! ") == "cats hat"


def test_entity_f1_matches_seqeval() -> None:
    import importlib.util

    from .conftest import needs

    needs(importlib.util.find_spec("seqeval") is not None, "seqeval is not installed (pip install -e '.[test]')")
    import seqeval.metrics as seqeval

    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold = [[str(t) for t in rng.choice(tags, size=rng.integers(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in g] for g in gold]
    ours = m.entity_f1(gold, pred)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred))
    # by hand: gold PER(0-1), LOC(3); pred PER(0-1) and LOC(2-3) -> P 1/2, R 1/2
    assert m.entity_f1([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "B-LOC", "I-LOC"]])[
        "f1"
    ] == pytest.approx(0.5)


def test_seq_cls_and_ranking_metrics() -> None:
    assert m.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    # class 0: P 2/3 R 1 F 0.8; class 1: P 1 R 1/2 F 2/3 -> macro (0.8 + 2/3) / 2
    assert m.macro_f1([0, 1, 1, 0], [0, 1, 0, 0], [0, 1]) == pytest.approx((0.8 + 2 / 3) / 2)
    assert m.spearman([0.1, 0.5, 0.3], [1, 3, 2]) == pytest.approx(1.0)
    top = m.topk_accuracy(np.array([5, 7]), np.array([[5, 1, 2, 3, 4], [1, 2, 7, 3, 4]]))
    assert top == {"top1_accuracy": 0.5, "top5_accuracy": 1.0}


def test_metric_gate_semantics() -> None:
    parity = Report(
        "ort", "int8", "seq-cls", GATES["int8"], summary={"max_abs": {"logits": 0.01}, "argmax_agreement": 1.0}
    )
    rows = [MetricRow("accuracy", 0.90, 0.89), MetricRow("macro_f1", 0.80, 0.81)]
    report = EvalReport(parity, "ref", "cand", rows, max_metric_drop=0.5)
    assert [g.passed for g in report.gates] == [True, False, True]
    assert rows[0].drop == pytest.approx(1.0) and rows[1].drop == pytest.approx(-1.0)
    assert not report.passed and "drop 1.00 points" in report.failures[0]
    assert EvalReport(parity, "ref", "cand", rows, max_metric_drop=1.0).passed


# --- examples/ci ---------------------------------------------------------------------------------


def ci_commands() -> dict[str, list[str]]:
    """The shell lines of both CI examples that run bert-export (installs and publishing aside)."""
    import yaml

    gh = yaml.safe_load((ROOT / "examples/ci/github-actions.yml").read_text())
    gl = yaml.safe_load((ROOT / "examples/ci/gitlab-ci.yml").read_text())
    gh_lines = [ln for step in gh["jobs"]["validate"]["steps"] for ln in str(step.get("run", "")).splitlines()]
    gl_lines = list(gl["bert-export-parity"]["script"])
    pick = lambda lines: [ln for ln in lines if "validate.sh" in ln]  # noqa: E731
    return {"github": pick(gh_lines), "gitlab": pick(gl_lines)}


def test_ci_examples_run(tmp_path: Path, minilm_dir: Path) -> None:
    """The very lines of both CI files, run against a checkpoint and data in a temp dir; JUnit read back."""
    from junitparser import JUnitXml

    commands = ci_commands()
    assert commands["github"] and commands["github"] == commands["gitlab"]
    labels = {0: "negative", 1: "positive"}
    tiny_checkpoint(
        tmp_path / "ckpt",
        "BertForSequenceClassification",
        minilm_dir,
        num_labels=2,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    (tmp_path / "dev.csv").write_text(
        "text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in eval_rows()[:12]), encoding="utf-8"
    )
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {
        **os.environ,
        "MODEL_DIR": "ckpt",
        "EVAL_DATA": "dev.csv",
        "REPORT_DIR": "reports",
        "BERT_EXPORT_TASK": "seq-cls",
        "BERT_EXPORT_MAX_DROP": "100",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for line in commands["github"]:
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for precision in ("fp32", "int8"):
        xml = JUnitXml.fromfile(str(tmp_path / "reports" / f"{precision}.xml"))
        cases = [c for s in xml for c in s]
        assert any(c.classname == "gates" and c.name == f"precision gate ({precision})" for c in cases)
        assert (tmp_path / "reports" / f"{precision}.md").read_text().startswith("## bert-export")
    # a failing gate: exit 1 from the script, reports still written
    env["BERT_EXPORT_PRECISIONS"], env["BERT_EXPORT_EXPECT_OPS"] = "fp32", str(tmp_path / "ops.json")
    (tmp_path / "ops.json").write_text('{"Attention": 99}')
    proc = subprocess.run(
        ["bash", "-c", commands["gitlab"][0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"Attention \d+ < 99 expected", (tmp_path / "reports" / "fp32.md").read_text())
