"""Text pairs for seq-cls end to end (issue 22): ``run --text A --pair B``, ``validate``/``compare --data`` with
text/text_pair or query/passage columns, golden.json pair examples, the C++ demo, ``serve``'s TextModel and the
Triton repository's optional ``TEXT_PAIR``. Pairs longer than the bundle are truncated as Hugging Face's
``longest_first``: every consumer is held to the ids ``tokenizer(a, b, truncation="longest_first")`` gives.

All on the tiny random-init seq-cls bundle (tests/conftest.py, shared): results are compared with the PyTorch
reference stored in golden.json and with the bundle's own single-pair runs, never with themselves.
"""

from __future__ import annotations

import csv as csv_module
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bert_export.bundle.golden import load_golden
from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import cli
from bert_export.runtimes.factory import load_tokenizer
from bert_export.runtimes.texts import long_text

from .conftest import needs
from .test_bad_input import assert_one_error_line, run_cli
from .test_consumers import CHROMIUM, NODE_MODULES, node_ready, run_node, web_server  # noqa: F401
from .test_cpp import assert_same, demo  # noqa: F401  (the session's C++ build)

# (text, pair) combinations around the bundle's 128 tokens: neither, the first, the second, both long, and
# lengths where the room left is odd, so each branch of longest_first (and its odd token) is taken.
PAIRS = [
    ("A man is playing a guitar.", "Someone is making music."),
    (long_text(300), "Is this about budgets?"),
    ("Is this about budgets?", long_text(300)),
    (long_text(200), long_text(90)),
    (long_text(61), long_text(64)),
    (long_text(64), long_text(61)),
    ("Naïve café owners in Zürich — “quoted” text!", "北京欢迎你 and 東京, emoji 😀 ok"),
]


@pytest.fixture(scope="module")
def seq_cls(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "seq-cls")


def run_json(bundle: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    res = CliRunner().invoke(cli, ["run", str(bundle), "--json", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()], res.stderr


def hf_pair(bundle: Path, a: str, b: str) -> Any:
    return load_tokenizer(bundle)(a, b, truncation="longest_first", max_length=load_bundle(bundle).max_seq)


def test_golden_has_pair_examples_and_run_pair_reproduces_pytorch(seq_cls: Path) -> None:
    golden = load_golden(seq_cls)
    pairs = [ex for ex in golden["examples"] if "text_pair" in ex]
    assert len(pairs) >= 2
    tol = golden["tolerances"]["fp32"]["result_abs"]
    for ex in pairs:
        enc = hf_pair(seq_cls, ex["text"], ex["text_pair"])
        assert ex["input_ids"] == enc["input_ids"] and ex["token_type_ids"] == enc["token_type_ids"]
        assert 0 in ex["token_type_ids"] and 1 in ex["token_type_ids"]
        (got,), _ = run_json(seq_cls, "--text", ex["text"], "--pair", ex["text_pair"])
        assert got["label"] == ex["result"]["label"] and abs(got["score"] - ex["result"]["score"]) <= tol
    # a pair is not its first text alone: the second text reaches the model
    alone = [ex for ex in golden["examples"] if "text_pair" not in ex]
    assert alone and all(ex["input_ids"] != p["input_ids"][: len(ex["input_ids"])] for ex in alone for p in pairs)


def test_run_several_pairs_in_one_padded_batch_equals_each_alone(
    seq_cls: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = [a for t, p in PAIRS for a in ("--text", t, "--pair", p)]
    batch, _ = run_json(seq_cls, *args)
    note = caplog.text
    assert len(batch) == len(PAIRS)
    for (t, p), got in zip(PAIRS, batch):
        (alone,), _ = run_json(seq_cls, "--text", t, "--pair", p)
        assert_same(alone, got, tol=2e-6)
    assert "truncated longest_first" in note  # the note says how the long pairs were cut
    # the second text changes the answer's score (the model sees it)
    (single,), _ = run_json(seq_cls, "--text", PAIRS[0][0])
    assert single["score"] != batch[0]["score"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--text", "a", "--text", "b", "--pair", "x"], "2 --text and 1 --pair"),
        (["--pair", "x"], "pass at least one --text"),
        (["--text", "a", "--passage", "x"], "--passage is for rerank bundles"),
    ],
)
def test_run_pair_mistakes_are_one_line(
    seq_cls: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_error_line(*run_cli(capsys, "run", str(seq_cls), *args), needle)


def test_pair_refused_where_the_task_reads_single_texts(
    make_bundle: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle("bert", "token-cls")
    assert_one_error_line(*run_cli(capsys, "run", str(bundle), "--text", "a", "--pair", "b"), "drop --pair")


def test_data_files_with_pair_columns_read_and_compare(seq_cls: Path, tmp_path: Path) -> None:
    """text/text_pair (csv) and query/passage (jsonl) rows: read as pairs with token types, and compare --data
    runs them through both sides (the same bundle: every prediction agrees)."""
    from bert_export.evaluation.batches import encode
    from bert_export.evaluation.data import read_data

    csv = tmp_path / "pairs.csv"
    rows = [("A man plays.", "Music is made.", "LABEL_0"), (long_text(200), long_text(90), "LABEL_1")]
    with csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv_module.writer(fh)
        writer.writerow(["text", "text_pair", "label"])
        writer.writerows(rows)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"query": a, "passage": b}) + "\n" for a, b, _ in rows), encoding="utf-8")
    tok = load_tokenizer(seq_cls)
    for path, gold in ((csv, "label"), (jsonl, None)):
        data = read_data(path, "seq-cls")
        assert data.gold == gold and [(e.text, e.text_pair) for e in data.examples] == [(a, b) for a, b, _ in rows]
        items = encode(data, "seq-cls", tok, 128)
        for item, (a, b, _) in zip(items, rows):
            want = tok(a, b, truncation="longest_first", max_length=128)
            assert item.ids == want["input_ids"] and item.types == want["token_type_ids"]
        assert [it.truncated for it in items] == [False, True]
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["compare", str(seq_cls), str(seq_cls), "--data", str(csv), "--report", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["data"]["inputs"] == 2 and report["data"]["truncated"] == 1
    assert {m["name"] for m in report["metrics"]} >= {"accuracy"}


def test_cpp_pairs_tokenize_and_run_like_python(demo: Path, seq_cls: Path) -> None:  # noqa: F811
    """The demo's longest_first (built on the tokenizer's encode) gives HF's ids and types, its self-test passes
    golden.json's pair examples, and --text/--pair prints what run --json prints."""
    for a, b in PAIRS:
        out = subprocess.run(
            [str(demo), str(seq_cls), "--tokenize", a, "--pair", b], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        enc = hf_pair(seq_cls, a, b)
        assert [int(t) for t in out[0].split()] == enc["input_ids"], (a[:30], b[:30])
        assert [int(t) for t in out[1].split()] == enc["token_type_ids"]
    st = subprocess.run([str(demo), str(seq_cls), "--self-test"], capture_output=True, text=True)
    assert st.returncode == 0 and st.stdout.count("PASS") == len(load_golden(seq_cls)["examples"]), st.stdout
    args = [a for t, p in PAIRS for a in ("--text", t, "--pair", p)]
    cc = subprocess.run([str(demo), str(seq_cls), *args], capture_output=True, text=True, check=True).stdout
    py, _ = run_json(seq_cls, *args)
    assert_same(py, [json.loads(line) for line in cc.splitlines()], tol=2e-6)
    bad = subprocess.run([str(demo), str(seq_cls), "--text", "a", "--text", "b", "--pair", "x"], capture_output=True)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("error: 2 --text and 1 --pair")


def test_serve_text_model_takes_an_optional_text_pair(seq_cls: Path) -> None:
    """What ``serve`` runs per Triton batch: items with and without TEXT_PAIR in one batch, each equal to run."""
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner
    from bert_export.serving.server import infer_callable
    from bert_export.serving.textmodel import TextModel

    b = load_bundle(seq_cls)
    items = [{"TEXT": a, "TEXT_PAIR": p} for a, p in PAIRS[:4]] + [{"TEXT": "Just one text."}]
    with make_runner(b, "ort") as runner:
        model = TextModel(b, runner, bundle_tokenizer(b))
        assert model.input_names == ("TEXT", "TEXT_PAIR")
        replies = model.predict(items)
        requests = [{k: np.array([[v.encode()]], dtype=object) for k, v in it.items()} for it in items[:2]]
        triton = infer_callable(model)(requests)
    for it, reply in zip(items, replies):
        args = ["--text", it["TEXT"]] + (["--pair", it["TEXT_PAIR"]] if "TEXT_PAIR" in it else [])
        (want,), _ = run_json(seq_cls, *args)
        assert not reply.error, reply.error
        assert_same(want, json.loads(reply.json), tol=2e-6)
    assert "longest_first" in replies[1].note and "truncated" not in replies[0].note
    assert [json.loads(t["JSON"][0][0]) for t in triton] == [json.loads(r.json) for r in replies[:2]]


def test_triton_repository_declares_text_pair_optional(seq_cls: Path, tmp_path: Path) -> None:
    from bert_export.serving.repository import parse, write_repository

    names = write_repository(seq_cls, tmp_path / "repo")
    for model in (names[1], names[3]):  # NAME_tokenize and the NAME_text ensemble
        cfg = parse((tmp_path / "repo" / model / "config.pbtxt").read_text())
        inputs = {i.name: i.optional for i in cfg.input}
        assert inputs == {"TEXT": False, "TEXT_PAIR": True}, model
    ensemble = parse((tmp_path / "repo" / names[3] / "config.pbtxt").read_text())
    assert dict(ensemble.ensemble_scheduling.step[0].input_map) == {"TEXT": "TEXT", "TEXT_PAIR": "TEXT_PAIR"}


def test_browser_example_checks_pair_examples(
    seq_cls: Path,
    web_server: tuple[str, dict[str, Path]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """examples/web in headless chromium: golden.json's pair examples give the same ids, token types (its
    longest_first) and results as PyTorch did."""
    needs(
        node_ready() and (NODE_MODULES / "puppeteer-core").is_dir(),
        "puppeteer-core missing (run .ci/install.d/30-node.sh)",
    )
    needs(CHROMIUM.exists(), f"{CHROMIUM} missing (run .ci/install.d/31-chromium.sh)")
    base, served = web_server
    served["seq-cls"] = seq_cls
    (state,) = run_node(
        "browser.mjs", "--screenshots", str(tmp_path), f"{base}/index.html?model=bundles/seq-cls&check=golden"
    )
    assert state["status"] == "done", (state.get("error"), state.get("console"))
    rows = state["golden"]["rows"]
    golden = load_golden(seq_cls)["examples"]
    assert [r["name"] for r in rows] == [e["name"] for e in golden]
    assert [r["pair"] for r in rows] == ["text_pair" in e for e in golden] and any(r["pair"] for r in rows)
    assert all(r["ids_match"] for r in rows) and state["golden"]["passed"], rows
