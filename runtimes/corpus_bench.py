"""``bert-export bench BUNDLE --file TEXTS``: the corpus path's texts/s, batched by length vs in input order.

The synthetic grid (runtimes/bench.py) times fixed ``batch x seq`` shapes; a real corpus mixes
lengths, and what it costs depends on how texts are batched. This times ``runtimes.corpus``
(what ``run --file`` and ``embed()`` run: tokenization, inference, pooling or post-processing)
over the user's texts, once per batching, with one runner kept across the runs:

- ``length``: sorted by token length, batches cut at a token budget, each padded to its longest;
- ``input-order`` (``--keep-order``): fixed batches in the file's order, each padded to its longest.

Each batching gets a warm-up pass over the first texts, then ``runs`` timed passes; the median is
reported, with the padded tokens the plan makes the graph run (rows x longest, summed) against the
real tokens, and how far the two batchings' results are apart (fp32: float noise; int8: within the
gate, since activations are quantized per batch).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.runtimes import batching as batching_
from bert_export.runtimes.corpus import read_texts

WARMUP_TEXTS = 64


@dataclass
class CorpusRow:
    """One batching's timing over the whole corpus."""

    batching: str
    texts: int
    batches: int
    real_tokens: int
    padded_tokens: int
    seconds_median: float
    seconds_all: list[float]

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds_median if self.seconds_median > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "texts_per_s": round(self.texts_per_s, 2)}


@dataclass
class CorpusBench:
    """The ``corpus`` section of ``bench --json``: a row per batching, and how the results compare."""

    source: str
    rows: list[CorpusRow]
    settings: dict[str, Any] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": [r.to_json() for r in self.rows],
            "settings": self.settings,
            "agreement": self.agreement,
        }

    def speedup(self) -> float | None:
        """length's texts/s over input-order's (None unless both ran)."""
        by = {r.batching: r.texts_per_s for r in self.rows}
        if "length" in by and by.get("input-order"):
            return by["length"] / by["input-order"]
        return None

    def table(self) -> Any:
        from rich import box
        from rich.table import Table

        s = self.settings
        table = Table(
            title=f"corpus {Path(self.source).name}: {self.rows[0].texts if self.rows else 0} texts through "
            f"run --file's path, median of {s.get('runs')} runs, token budget {s.get('token_budget')}",
            box=box.SIMPLE_HEAD,
            caption=_caption(self),
        )
        for col in ("batching", "texts/s", "median s", "batches", "padded tokens", "padding"):
            table.add_column(col, justify="left" if col == "batching" else "right", no_wrap=True)
        for r in self.rows:
            table.add_row(
                r.batching if r.batching == "length" else f"{r.batching} (--keep-order)",
                f"{r.texts_per_s:.1f}",
                f"{r.seconds_median:.2f}",
                str(r.batches),
                str(r.padded_tokens),
                f"{r.padded_tokens / max(r.real_tokens, 1) - 1:+.0%}",
            )
        return table


def _caption(result: CorpusBench) -> str:
    parts = []
    speedup = result.speedup()
    if speedup is not None:
        parts.append(f"by length: {speedup:.2f}x input order")
    if "max_abs_diff" in result.agreement:
        parts.append(f"results max |diff| between batchings {result.agreement['max_abs_diff']:.2e}")
    elif "same" in result.agreement:
        parts.append(f"results identical between batchings: {result.agreement['same']}")
    return "; ".join(parts)


def load_corpus(source: str | Path, column: str | None, limit: int | None) -> list[str]:
    """The texts of ``source`` (``runtimes.corpus.read_texts``), the first ``limit`` of them."""
    path = Path(source)
    if not path.is_file():
        raise BertExportError(f"--file {path} is not a file; pass a text file (one text per line) or .jsonl/.csv")
    if limit is not None and limit < 1:
        raise BertExportError(f"--limit must be >= 1, got {limit}")
    texts: list[str] = []
    for text in read_texts(path, column):
        if limit is not None and len(texts) >= limit:
            break
        texts.append(text)
    if not texts:
        raise BertExportError(f"--file {path} holds no texts; pass a file with one text per line")
    return texts


def bench_corpus(
    bundle: Any,
    texts: Sequence[str],
    *,
    source: str = "texts",
    runtime: str = "ort",
    threads: int | None = None,
    batchings: Sequence[str] = batching_.BATCHING,
    token_budget: int = batching_.DEFAULT_TOKEN_BUDGET,
    runs: int = 3,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> CorpusBench:
    """Time ``runtimes.corpus.run_corpus`` over ``texts`` for each of ``batchings`` (see the module docstring)."""
    from bert_export.runtimes.corpus import run_corpus
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner

    if runs < 1:
        raise BertExportError(f"--runs must be >= 1, got {runs}")
    for name in batchings:
        if name not in batching_.BATCHING:
            raise BertExportError(f"batching {name!r}: choose from {', '.join(batching_.BATCHING)}")
    tokenizer = bundle_tokenizer(bundle)
    if tokenizer is None:
        raise BertExportError(f"{bundle.path} has no tokenizer files, so it cannot take text; re-export it with one")
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=bundle.max_seq)["input_ids"]]
    tick = progress(len(batchings) * (runs + 1)) if progress else (lambda: None)
    rows, values = [], {}
    with make_runner(bundle, runtime, threads) as runner:
        for name in batchings:
            options: dict[str, Any] = {"runner": runner, "batching": name, "token_budget": token_budget}
            run_corpus(bundle, list(texts[:WARMUP_TEXTS]), **options)
            tick()
            seconds = []
            for _ in range(runs):
                start = time.perf_counter()
                values[name] = run_corpus(bundle, list(texts), **options).values
                seconds.append(time.perf_counter() - start)
                tick()
            plan = _plan(lengths, name, token_budget)
            rows.append(
                CorpusRow(
                    name,
                    len(texts),
                    len(plan),
                    sum(lengths),
                    batching_.padded_tokens(lengths, plan),
                    round(statistics.median(seconds), 4),
                    [round(s, 4) for s in seconds],
                )
            )
    settings = {"runtime": runtime, "threads": threads, "runs": runs, "token_budget": token_budget}
    return CorpusBench(source, rows, settings, _agreement(list(values.values())))


def _plan(lengths: list[int], name: str, budget: int) -> list[list[int]]:
    """The batches run_corpus forms: planned a chunk (CHUNK_TEXTS) at a time, as it reads."""
    from bert_export.runtimes.corpus import CHUNK_TEXTS

    plan = []
    for lo in range(0, len(lengths), CHUNK_TEXTS):
        part = lengths[lo : lo + CHUNK_TEXTS]
        plan += [[lo + k for k in b] for b in batching_.batches_for(part, name, budget=budget)]
    return plan


def _agreement(results: list[Any]) -> dict[str, Any]:
    """How far the batchings' results are apart: vectors by max |diff|, other tasks by equality."""
    if len(results) < 2:
        return {}
    first, second = results[0], results[1]
    if isinstance(first, np.ndarray):
        return {"max_abs_diff": float(np.abs(first - second).max()) if first.size else 0.0}
    return {"same": first == second}
