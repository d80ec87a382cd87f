"""Length-aware batching, the corpus path (``run --file``, ``embed()``) and the sentence-transformers config.

Batching must change only the speed: the same text gives the same embedding alone and inside
any batch (fp32 within float noise, int8 within its gate), and results come back in the
caller's order. The corpus command must stream (bounded memory), show progress, and never leave
a half-written output.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert_export.cli.main import main
from bert_export.models import BertExportError
from bert_export.models.precisions import GATES
from bert_export.runtimes import batching
from bert_export.runtimes.corpus import run_corpus
from bert_export.runtimes.predict import predict
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES, long_text

from .conftest import MINILM_ID, own_peak_rss

# Real English of mixed lengths: 3 to ~200 tokens.
TEXTS = [*SENTENCES, *(c for _, c in QA_PAIRS), long_text(60), long_text(150)]


@pytest.fixture(scope="module")
def minilm(make_bundle) -> Path:  # type: ignore[no-untyped-def]
    return make_bundle("bert", "embed", model=MINILM_ID, precisions="fp32,int8")


@pytest.fixture(scope="module")
def tiny_embed(make_bundle) -> Path:  # type: ignore[no-untyped-def]
    return make_bundle("bert", "embed")


@pytest.fixture(scope="module")
def tiny_cls(make_bundle) -> Path:  # type: ignore[no-untyped-def]
    return make_bundle("bert", "seq-cls")


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


# --- the plan ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 600), max_size=300),
    st.integers(1, 5000),
    st.integers(1, 200),
)
def test_plan_covers_every_text_once_within_budget(lengths: list[int], budget: int, max_batch: int) -> None:
    plan = batching.plan(lengths, budget, max_batch)
    order = [k for b in plan for k in b]
    assert sorted(order) == list(range(len(lengths)))
    for b in plan:
        assert 1 <= len(b) <= max_batch
        longest = max(lengths[k] for k in b)
        assert len(b) == 1 or len(b) * longest <= budget  # a text over the budget travels alone
    assert [lengths[k] for k in order] == sorted(lengths, reverse=True)  # sorted, longest first
    assert batching.restore([lengths[k] for k in order], order) == lengths


def test_plan_pads_less_than_input_order() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(14, 191) for _ in range(2000)]
    by_length = batching.plan(lengths, 32 * 96)
    fixed = batching.input_order(len(lengths), 32)
    real = sum(lengths)
    assert batching.padded_tokens(lengths, by_length) < 1.05 * real  # almost no padding
    assert batching.padded_tokens(lengths, fixed) > 1.5 * real  # every batch pays for its longest
    assert batching.padded_tokens(lengths, by_length) / len(by_length) <= 32 * 96
    assert max(len(b) for b in by_length) > 32 > min(len(b) for b in by_length)  # wide when short, narrow when long


def test_plan_refuses_bad_sizes() -> None:
    with pytest.raises(BertExportError, match="budget must be >= 1"):
        batching.plan([3, 4], 0)
    with pytest.raises(BertExportError, match="choose from length, input-order"):
        batching.batches_for([3], "random")
    with pytest.raises(ValueError):
        batching.restore([1, 2], [0, 0])


# --- results do not depend on the batch ----------------------------------------------------------


def _compositions() -> dict[str, dict[str, object]]:
    return {
        "by length, default budget": {},
        "by length, narrow budget": {"token_budget": 64},
        "by length, wide budget": {"token_budget": 50_000},
        "input order": {"batching": "input-order"},
    }


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_embedding_does_not_depend_on_the_batch(minilm: Path, precision: str) -> None:
    """The same texts alone, and inside batches of other compositions (shuffled among other texts,
    padded to longer neighbours or not, narrow and wide budgets, input order): the same vectors."""
    from bert_export.bundle.reader import load_bundle

    b = load_bundle(minilm, precision=precision)
    alone = np.concatenate([run_corpus(b, [t]).values for t in TEXTS])
    shuffled = list(range(len(TEXTS)))
    random.Random(1).shuffle(shuffled)
    gate = GATES[precision]
    for name, options in _compositions().items():
        for order in (list(range(len(TEXTS))), shuffled):
            got = run_corpus(b, [TEXTS[k] for k in order], **options).values  # type: ignore[arg-type]
            back = np.empty_like(got)
            back[np.asarray(order)] = got
            cos = (back * alone).sum(1) / (np.linalg.norm(back, axis=1) * np.linalg.norm(alone, axis=1))
            if precision == "fp32":
                assert np.abs(back - alone).max() < 1e-5, name
            assert cos.min() >= gate.cos_min and cos.mean() >= gate.cos_mean, (name, cos.min())
    # and the vectors are the texts' own: different texts, different vectors
    assert (alone @ alone.T - np.eye(len(TEXTS))).max() < 0.99


def test_predict_batches_by_length_and_keeps_the_callers_order(minilm: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """predict() runs fewer padded tokens than input order, and returns the caller's order."""
    from bert_export.runtimes.ort_runner import OrtRunner

    shapes: list[tuple[int, int]] = []
    real_infer = OrtRunner.infer

    def spy(self, feed):  # type: ignore[no-untyped-def]
        shapes.append(feed["input_ids"].shape)
        return real_infer(self, feed)

    monkeypatch.setattr(OrtRunner, "infer", spy)
    texts = TEXTS * 3
    by_length = predict(minilm, texts=texts, token_budget=512).results[0]["embeddings"]
    cost = sum(r * c for r, c in shapes)
    shapes.clear()
    kept = predict(minilm, texts=texts, batching="input-order").results[0]["embeddings"]
    assert sum(r * c for r, c in shapes) > 1.5 * cost
    assert np.abs(np.asarray(by_length) - np.asarray(kept)).max() < 1e-5
    alone = [predict(minilm, texts=[t]).results[0]["embeddings"][0] for t in TEXTS]
    assert np.abs(np.asarray(by_length[: len(TEXTS)]) - np.asarray(alone)).max() < 1e-5


def test_other_tasks_come_back_in_order(tiny_cls: Path) -> None:
    texts = [t + " " + "word " * (i % 7) * 10 for i, t in enumerate(TEXTS)]
    got = predict(tiny_cls, texts=texts, token_budget=100).results
    want = [predict(tiny_cls, texts=[t]).results[0] for t in texts]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)


# --- the corpus command --------------------------------------------------------------------------


def test_run_file_writes_npy_in_input_order(minilm: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    texts = TEXTS[::-1] + TEXTS
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "deep" / "emb.npy"
    code, _, err = cli(capsys, "run", minilm, "--file", corpus, "--out", out)
    assert code == 0, err
    got = np.load(out)
    want = np.asarray(predict(minilm, texts=texts).results[0]["embeddings"])
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5  # row i is line i
    # progress: the bar's final state (texts done/total, rate, ETA) and the summary
    assert f"{len(texts)}/{len(texts)}" in err and "texts/s" in err and "ETA" in err
    assert f"wrote {len(texts)} result(s)" in err
    # the same from Python, through the top-level entry and its file path
    from bert_export.runtimes import embed

    assert np.abs(embed(corpus, minilm) - got).max() < 1e-6
    assert np.abs(embed(texts, minilm, batching="input-order") - got).max() < 1e-5


def test_run_file_reads_jsonl_and_csv_columns(tiny_embed: Path, tiny_cls: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    texts = list(TEXTS[:6])
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "body": t}) for i, t in enumerate(texts)) + "\n", encoding="utf-8")
    csv_path = tmp_path / "t.csv"
    import csv

    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows(enumerate(texts))
    want = np.asarray(predict(tiny_embed, texts=texts).results[0]["embeddings"])
    for src, extra in ((jsonl, ["--column", "body"]), (csv_path, [])):
        out = tmp_path / f"{src.stem}{src.suffix[1:]}.npy"
        code, _, err = cli(capsys, "run", tiny_embed, "--file", src, *extra, "--out", out, "-q")
        assert code == 0, err
        assert np.abs(np.load(out) - want).max() < 1e-5
    # another task: one JSON object per text, in order, as `run --json` prints them
    out = tmp_path / "labels.jsonl"
    code, _, err = cli(capsys, "run", tiny_cls, "--file", jsonl, "--column", "body", "--out", out, "-q")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == predict(tiny_cls, texts=texts).results
    # mistakes: one error line naming the fix
    for args, words in (
        (["--file", jsonl, "--out", tmp_path / "x.npy"], "no text field 'text'"),
        (["--file", csv_path, "--column", "body", "--out", tmp_path / "x.npy"], "no column 'body'"),
        (["--file", tmp_path / "missing.txt", "--out", tmp_path / "x.npy"], "is not a file"),
        (["--file", csv_path], "--file TEXTS and --out OUT go together"),
        (["--file", csv_path, "--out", tmp_path / "x.txt"], ".npy (embeddings), .jsonl or .parquet"),
    ):
        code, _, err = cli(capsys, "run", tiny_embed, *args)
        assert code == 2 and err.startswith("error: ") and words in err, err
        assert not (tmp_path / "x.npy").exists()
    code, _, err = cli(capsys, "run", tiny_cls, "--file", csv_path, "--out", tmp_path / "x.npy")
    assert code == 2 and "write .jsonl or .parquet" in err


def test_run_file_parquet(tiny_embed: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "e.parquet"
    run_corpus(tiny_embed, list(TEXTS), out=out, chunk_size=5)
    table = pq.read_table(out)
    got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.abs(got - run_corpus(tiny_embed, list(TEXTS)).values).max() < 1e-6


def test_output_is_atomic(tiny_embed: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An error or Ctrl-C after some chunks were written: the previous OUT intact, no temporary left."""
    from bert_export.runtimes.ort_runner import OrtRunner

    out = tmp_path / "emb.npy"
    out.write_bytes(b"previous")
    calls = {"n": 0}
    real_infer = OrtRunner.infer

    def flaky(self, feed):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_infer(self, feed)

    monkeypatch.setattr(OrtRunner, "infer", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_corpus(tiny_embed, list(TEXTS) * 4, out=out, chunk_size=8, batching="input-order")
    assert calls["n"] == 3  # chunks 1 and 2 had been written
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]
    monkeypatch.setattr(OrtRunner, "infer", real_infer)
    run_corpus(tiny_embed, list(TEXTS) * 4, out=out, chunk_size=8)
    assert np.load(out).shape[0] == 4 * len(TEXTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]


def test_corpus_streams_in_bounded_memory(tiny_embed: Path, tmp_path: Path) -> None:
    """40,960 texts (12 MB) take no more memory than 8,192 (both several 4,096-text chunks): the file
    is read, tokenized and written a chunk at a time (peak RSS of a child process running the command)."""
    probe = (
        "import atexit, resource, sys; atexit.register(lambda: print(resource.getrusage(resource.RUSAGE_SELF)"
        ".ru_maxrss // 1024)); from bert_export.cli.main import main; main(sys.argv[1:])"
    )
    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    peaks = {}
    for n in (8_192, 40_960):
        corpus = tmp_path / f"c{n}.txt"
        with open(corpus, "w", encoding="utf-8") as fh:
            for _ in range(n):
                fh.write(" ".join(rng.choices(words, k=50)) + "\n")
        out = tmp_path / f"c{n}.npy"
        proc = subprocess.run(
            own_peak_rss(
                [sys.executable, "-c", probe, "run", str(tiny_embed), "--file", str(corpus), "--out", str(out), "-q"]
            ),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        assert np.load(out, mmap_mode="r").shape == (n, 32)
        peaks[n] = int(proc.stdout.split()[-1])
    assert peaks[40_960] - peaks[8_192] < 25, peaks  # MB; holding the corpus would add hundreds


# --- fidelity to the source's sentence-transformers configuration --------------------------------


def test_sentence_transformers_config_is_the_sources(minilm: Path, minilm_dir: Path) -> None:
    """max_seq_length, pooling and normalisation as the packaged source declares them (256, mean,
    Normalize), although the bundle's graph and tokenizer go to 512."""
    from bert_export.bundle.reader import load_bundle

    def read(root: Path, rel: str) -> object:
        return json.loads((root / rel).read_text(encoding="utf-8"))

    assert load_bundle(minilm).max_seq == 512
    assert read(minilm, "sentence_bert_config.json") == read(minilm_dir, "sentence_bert_config.json")
    assert read(minilm_dir, "sentence_bert_config.json")["max_seq_length"] == 256  # type: ignore[index]
    assert read(minilm, "1_Pooling/config.json") == read(minilm_dir, "1_Pooling/config.json")
    types = lambda root: [m["type"] for m in read(root, "modules.json")]  # type: ignore[union-attr,index]  # noqa: E731
    assert types(minilm) == types(minilm_dir)


def test_pooling_the_bundle_cannot_reproduce_is_refused(tmp_path: Path, minilm_dir: Path) -> None:
    import shutil

    from bert_export.exporter.loading import _pooling

    src = tmp_path / "src"
    shutil.copytree(minilm_dir, src)
    assert _pooling(src) == {"mode": "mean", "normalize": True, "source": "sentence-transformers"}
    cfg = json.loads((src / "1_Pooling/config.json").read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_weightedmean_tokens=True)
    (src / "1_Pooling/config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertExportError, match="weightedmean_tokens"):
        _pooling(src)
