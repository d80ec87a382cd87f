"""The C++ demo's batch mode (examples/cpp/src/batch.cpp): a file of texts, sorted by token length,
batched by a token budget, each batch padded to its longest, results written in input order.

Checked against the Python API on the same texts (fp32 within 1e-5): row i is text i, by length
and with --keep-order alike, .npy and .jsonl alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.runtimes import embed
from bert_export.runtimes.factory import bundle_tokenizer
from bert_export.runtimes.predict import predict
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES, long_text

from .test_cpp import MINILM_ID, assert_same, cpp, demo  # noqa: F401  (demo: the session fixture that builds it)

# Real English of mixed lengths in no order (3 to ~200 tokens), accents and CJK, an empty line.
TEXTS = list(
    dict.fromkeys(  # distinct texts, so that a permuted output cannot pass
        [
            long_text(80),
            *SENTENCES[:5],
            "",
            "Ein Café in Zürich, naïve & schön! 猫が好きです",
            long_text(190),
            *(c for _, c in QA_PAIRS[:6]),
            "Yes.",
            long_text(30),
            *SENTENCES[-4:],
        ]
    )
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cpp-batch") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def batches_line(stderr: str) -> int:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("wrote "))
    return int(line.split(" in ")[1].split()[0])


def test_embed_batches_equal_python_in_input_order(
    demo: Path,  # noqa: F811
    make_bundle: Callable[..., Path],
    corpus: Path,
    tmp_path: Path,
) -> None:
    bundle = make_bundle("bert", "embed", model=MINILM_ID)
    want = embed(corpus, bundle)
    assert want.shape == (len(TEXTS), 384)
    b = load_bundle(bundle)
    lengths = [len(x) for x in bundle_tokenizer(b)(TEXTS, truncation=True, max_length=b.max_seq)["input_ids"]]
    for flags, batches in (
        (["--token-budget", "600"], None),
        (["--keep-order"], math.ceil(len(TEXTS) / 32)),
    ):
        out = tmp_path / f"e{len(flags)}.npy"
        proc = cpp(demo, bundle, "--batch-file", str(corpus), "--out", str(out), *flags)
        assert proc.returncode == 0, proc.stderr
        got = np.load(out)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5, flags  # row i is text i
        if batches is None:  # by length: several batches under the budget, the longest text alone
            assert batches_line(proc.stderr) >= math.ceil(sum(lengths) / 600)
        else:
            assert batches_line(proc.stderr) == batches
    # different texts, different vectors: a permuted output could not pass the comparison above
    apart = np.abs(want[:, None, :] - want[None, :, :]).max(-1) + np.eye(len(TEXTS))
    assert apart.min() > 1e-3
    # .jsonl: {"embedding": [...]} per line, in order
    out = tmp_path / "e.jsonl"
    proc = cpp(demo, bundle, "--batch-file", str(corpus), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line)["embedding"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert np.abs(np.asarray(rows) - want).max() <= 2e-6


def test_other_tasks_batch_to_jsonl(demo: Path, make_bundle: Callable[..., Path], corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    for task in ("seq-cls", "token-cls"):
        bundle = make_bundle("bert", task)
        out = tmp_path / f"{task}.jsonl"
        proc = cpp(demo, bundle, "--batch-file", str(corpus), "--out", str(out), "--token-budget", "256")
        assert proc.returncode == 0, proc.stderr
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert_same(predict(bundle, texts=TEXTS).results, got, tol=2e-5, at=task)


def test_batch_mode_mistakes(demo: Path, make_bundle: Callable[..., Path], corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    embed_bundle, cls = make_bundle("bert", "embed"), make_bundle("bert", "seq-cls")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nnot \xff utf-8\n")
    for bundle, args, words in (
        (embed_bundle, ["--out", str(tmp_path / "x.txt")], "name a .npy (embeddings) or .jsonl"),
        (cls, ["--out", str(tmp_path / "x.npy")], "write .jsonl"),
        (embed_bundle, [], "needs --out"),
        (embed_bundle, ["--out", str(tmp_path / "x.npy"), "--token-budget", "0"], "--token-budget 0 is not a number"),
        (make_bundle("bert", "qa"), ["--out", str(tmp_path / "x.jsonl")], "batch mode runs embed, seq-cls"),
    ):
        proc = cpp(demo, bundle, "--batch-file", str(corpus), *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and words in proc.stderr, proc.stderr
    proc = cpp(demo, embed_bundle, "--batch-file", str(bad), "--out", str(tmp_path / "x.npy"))
    assert proc.returncode == 2 and "line 2 is not valid UTF-8" in proc.stderr
    proc = cpp(demo, embed_bundle, "--batch-file", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.npy"))
    assert proc.returncode == 2 and "cannot read --batch-file" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # nothing written, no temporary left
