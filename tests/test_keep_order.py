"""``--keep-order``, shared by every command that batches texts (run, validate --data, compare, bench --file).

Batching by length must change only the speed; ``--keep-order`` brings back the old batches
(fixed size, in the order given) for reproducibility studies. Each command is checked for both:
the same results either way (fp32: identical to float noise), and with --keep-order the batches
really are the input's, in order (the shapes the runner saw, or the report's batch shapes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import main
from bert_export.evaluation.batches import WIDEST
from bert_export.runtimes.factory import bundle_tokenizer
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES, long_text

from .test_user_validation import tiny_checkpoint

# Real English, lengths deliberately unsorted: 3 to ~150 tokens.
TEXTS = [long_text(40), *SENTENCES[:6], long_text(150), *(c for _, c in QA_PAIRS[:5]), SENTENCES[-1], long_text(90)]


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def lengths_of(bundle: Path, texts: list[str]) -> list[int]:
    b = load_bundle(bundle)
    return [len(ids) for ids in bundle_tokenizer(b)(texts, truncation=True, max_length=b.max_seq)["input_ids"]]


def input_order_shapes(lengths: list[int], batch: int) -> list[list[int]]:
    """[rows, longest] of fixed ``batch``-size batches in the order given: what --keep-order must run."""
    return [[len(lengths[i : i + batch]), max(lengths[i : i + batch])] for i in range(0, len(lengths), batch)]


@pytest.fixture(scope="module")
def tiny_embed(make_bundle) -> Path:  # type: ignore[no-untyped-def]
    return make_bundle("bert", "embed")


@pytest.fixture(scope="module")
def tiny_cls(make_bundle) -> Path:  # type: ignore[no-untyped-def]
    return make_bundle("bert", "seq-cls")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keep-order") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_run_keep_order(tiny_embed: Path, corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bert_export.runtimes.ort_runner import OrtRunner

    shapes: list[list[int]] = []
    real_infer = OrtRunner.infer

    def spy(self, feed):  # type: ignore[no-untyped-def]
        shapes.append(list(feed["input_ids"].shape))
        return real_infer(self, feed)

    monkeypatch.setattr(OrtRunner, "infer", spy)
    lengths = lengths_of(tiny_embed, TEXTS)
    got = {}
    for flag in ([], ["--keep-order"]):
        shapes.clear()
        out = tmp_path / f"e{len(flag)}.npy"
        code, _, err = cli(capsys, "run", tiny_embed, "--file", corpus, "--out", out, "--token-budget", "300", *flag)
        assert code == 0, err
        got[bool(flag)] = (np.load(out), list(shapes))
    (by_length, length_shapes), (kept, kept_shapes) = got[False], got[True]
    assert np.abs(by_length - kept).max() < 1e-5  # the same vectors, row i = text i, either way
    assert kept_shapes == input_order_shapes(lengths, 32)  # one batch of all 14, in order
    assert [s[1] for s in length_shapes] == sorted((s[1] for s in length_shapes), reverse=True)
    assert len(length_shapes) > 1 and all(r * s <= 300 or r == 1 for r, s in length_shapes)
    # and inline texts (predict) take it too
    code, out, err = cli(capsys, "run", tiny_embed, "--text", TEXTS[0], "--text", TEXTS[1], "--keep-order", "--json")
    assert code == 0, err and json.loads(out.splitlines()[0])["embeddings"]


def _report(capsys, *args: object) -> dict:  # type: ignore[no-untyped-def,type-arg]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    return json.loads(Path(str(args[args.index("--report") + 1])).read_text(encoding="utf-8"))


def test_compare_keep_order(tiny_cls: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    lengths = lengths_of(tiny_cls, TEXTS)
    common = ("compare", tiny_cls, tiny_cls, "--data", data, "--batch", "4", "-q", "--report")
    by_length = _report(capsys, *common, tmp_path / "len.json")
    kept = _report(capsys, *common, tmp_path / "kept.json", "--keep-order")
    assert [c["shape"] for c in kept["cases"]] == input_order_shapes(lengths, 4)
    shapes = [c["shape"] for c in by_length["cases"]]
    assert (
        [s[1] for s in shapes] == sorted((s[1] for s in shapes), reverse=True) != [c["shape"][1] for c in kept["cases"]]
    )
    assert all(rows <= WIDEST * 4 for rows, _ in shapes)
    assert by_length["passed"] and kept["passed"]
    assert by_length["data"]["disagreements"] == kept["data"]["disagreements"]


def test_validate_data_keep_order(tmp_path: Path, minilm_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """validate --model --data: the same metric and predictions either way; --keep-order batches in order."""
    from bert_export.exporter import export

    ckpt = tiny_checkpoint(tmp_path / "ckpt", "BertForSequenceClassification", minilm_dir, num_labels=2)
    bundle = export("bert", "seq-cls", model=str(ckpt), out=tmp_path / "bundle").bundle
    data = tmp_path / "data.jsonl"
    data.write_text(
        "\n".join(json.dumps({"text": t, "label": f"LABEL_{i % 2}"}) for i, t in enumerate(TEXTS)) + "\n",
        encoding="utf-8",
    )
    common = ("validate", bundle, "--model", ckpt, "--data", data, "--batch", "3", "-q", "--report")
    by_length = _report(capsys, *common, tmp_path / "len.json")
    kept = _report(capsys, *common, tmp_path / "kept.json", "--keep-order")
    assert [c["shape"] for c in kept["cases"]] == input_order_shapes(lengths_of(bundle, TEXTS), 3)
    assert [c["shape"] for c in by_length["cases"]] != [c["shape"] for c in kept["cases"]]
    metric = lambda r: [(m["name"], m["reference"], m["candidate"]) for m in r["metrics"]]  # noqa: E731
    assert metric(by_length) and metric(by_length) == metric(kept)
    assert by_length["passed"] and kept["passed"]
    # stored cases are fixed batches: --keep-order without --model is refused in one line
    code, _, err = cli(capsys, "validate", bundle, "--keep-order")
    assert code == 2 and err.startswith("error: ") and "--model" in err


def test_bench_file_times_both_batchings(tiny_embed: Path, corpus: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench.json"
    grid = ("--batch", "1", "--seq", "16", "--warmup", "0", "--runs", "1", "--no-torch", "-q")
    code, table, err = cli(capsys, "bench", tiny_embed, *grid, "--file", corpus, "--token-budget", "300", "--json", out)
    assert code == 0, err
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["results"] and [r["seq"] for r in doc["results"]] == [16]  # the synthetic grid still runs
    rows = {r["batching"]: r for r in doc["corpus"]["rows"]}
    assert set(rows) == {"length", "input-order"}
    lengths = lengths_of(tiny_embed, TEXTS)
    for row in rows.values():
        assert row["texts"] == len(TEXTS) and row["real_tokens"] == sum(lengths)
        assert row["texts_per_s"] > 0 and len(row["seconds_all"]) == 3
    assert rows["input-order"]["padded_tokens"] == len(TEXTS) * max(lengths)  # one batch of 14, padded to the longest
    assert rows["length"]["padded_tokens"] < rows["input-order"]["padded_tokens"]
    assert doc["corpus"]["agreement"]["max_abs_diff"] < 1e-5
    assert "texts/s" in table and "input-order (--keep-order)" in table
    # --keep-order: the old order only
    code, _, err = cli(capsys, "bench", tiny_embed, *grid, "--data", corpus, "--keep-order", "--json", out)
    assert code == 0, err
    assert [r["batching"] for r in json.loads(out.read_text(encoding="utf-8"))["corpus"]["rows"]] == ["input-order"]


def test_bench_file_mistakes(tiny_embed: Path, make_bundle, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    for args, words in (
        (["--keep-order"], "apply to --file TEXTS"),
        (["--file", tmp_path / "missing.txt"], "is not a file"),
        (["--file", empty], "holds no texts"),
    ):
        code, _, err = cli(capsys, "bench", tiny_embed, "--no-torch", *args)
        assert code == 2 and err.startswith("error: ") and words in err, err
    code, _, err = cli(capsys, "bench", make_bundle("bert", "qa"), "--no-torch", "--file", empty)
    assert code == 2 and "question and context" in err
