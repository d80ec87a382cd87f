"""Prediction from a bundle: text in, the task's JSON objects out (what ``bert-export run`` prints).

    from bert_export.runtimes.predict import predict
    p = predict("exports/minilm-qa", question="Who wrote it?", context="It was written by Jane Austen.")
    p.results[0]   # {"answer": "Jane Austen", "score": ..., "start": 18, "end": 29}

Tokenization uses the bundle's own tokenizer (offsets included, for character spans), the runner
comes from ``make_runner`` (any runtime), and post-processing is the task's (models/tasks: its
``results`` hook applies models/postprocess.py's rules).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.models import BertExportError, Task, get_task
from bert_export.models import postprocess as pp
from bert_export.models.tasks import PostContext, Row
from bert_export.runtimes import batching as batching_
from bert_export.runtimes import qa_windows
from bert_export.runtimes.base import Runner
from bert_export.runtimes.factory import bundle_tokenizer, make_runner

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

log = logging.getLogger("bert_export.runtimes")
CHUNK = 32  # rows per inference call for qa windows and input-order batches: fits the default TensorRT profile


@dataclass
class Prediction:
    """The task's JSON objects (one per text; one in all for qa and embed) and where they ran."""

    task: str
    results: list[dict[str, Any]]
    runtime: str
    providers: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def json_lines(self) -> list[str]:
        """What ``run --json`` prints: one compact JSON object per line, always strict JSON.

        A NaN or infinite model output (a broken or overflowing graph) becomes ``null`` with a
        warning on stderr naming how many values were affected: ``NaN`` is not JSON, and most
        parsers (JavaScript's, Go's, jq) reject the whole line. ``null`` keeps every other field
        usable and makes the bad value impossible to mistake for a number.
        """
        lines, bad = [], 0
        for r in self.results:
            clean, n = _finite(r)
            bad += n
            lines.append(json.dumps(clean, ensure_ascii=False, allow_nan=False))
        if bad:
            log.warning(
                "warning: %d model output value(s) were NaN or infinite and are printed as null; "
                "the bundle's graph is broken for this input: run `bert-export validate` on it",
                bad,
            )
        return lines


def _finite(value: Any) -> tuple[Any, int]:
    """``value`` with every non-finite float replaced by None, and how many were replaced."""
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        keyed = [(k, *_finite(v)) for k, v in value.items()]
        return {k: v for k, v, _ in keyed}, sum(n for _, _, n in keyed)
    if isinstance(value, (list, tuple)):
        items = [_finite(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value, 0


def predict(
    bundle: str | Path | Bundle,
    *,
    texts: Sequence[str] | None = None,
    pairs: Sequence[str] | None = None,
    question: str | None = None,
    context: str | None = None,
    runtime: str = "ort",
    threads: int | None = None,
    top_k: int = pp.TOP_K,
    max_answer_tokens: int = pp.MAX_ANSWER_TOKENS,
    doc_stride: int | None = None,
    max_question_len: int = qa_windows.MAX_QUESTION_LEN,
    chunk: bool = False,
    runner: Runner | None = None,
    batching: str = "length",
    token_budget: int = batching_.DEFAULT_TOKEN_BUDGET,
    **runner_options: Any,
) -> Prediction:
    """Run ``texts`` (or a ``question`` and ``context`` for qa) through ``bundle`` on ``runtime``.

    ``pairs`` (seq-cls, rerank): a second text for each of ``texts``, read as ``[CLS] text [SEP] pair [SEP]``
    (token types 0/1) and truncated as Hugging Face's ``longest_first`` (the longer side loses tokens first).

    ``texts`` are batched by length (runtimes/batching.py: sorted, cut at ``token_budget`` padded
    tokens, each batch padded to its longest) and the results come back in the order given;
    ``batching="input-order"`` keeps the old fixed batches of 32 in input order.

    Longer than the bundle's maximum: a qa context is read in overlapping windows (``doc_stride``
    tokens of overlap, default min(max_seq // 2, 128); runtimes/qa_windows.py); embed texts are
    truncated with a note, or with ``chunk`` embedded in windows and mean-pooled (runtimes/long_embed.py).
    """
    from bert_export.bundle.reader import Bundle, load_bundle

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    task = get_task(b.manifest["task"])
    task.check_request(texts, question, context)
    task.check_pairs(texts, pairs)
    tokenizer = bundle_tokenizer(b)
    if tokenizer is None:
        raise BertExportError(
            f"{b.path} has no tokenizer files, so it cannot take text; export it from a model directory "
            "that has tokenizer.json or vocab.txt"
        )
    if top_k < 1:
        raise BertExportError(f"--top-k must be >= 1, got {top_k}")
    own = runner is None
    runner = runner or make_runner(b, runtime, threads, **runner_options)
    try:
        runner.activate()
        if task.pair_input:
            results = [
                _qa(
                    b, tokenizer, runner, question or "", context or "", max_answer_tokens, doc_stride, max_question_len
                )
            ]
        elif chunk and task.chunkable:
            from bert_export.runtimes.long_embed import embed_chunked

            results = [embed_chunked(b, tokenizer, runner, list(texts or ()), _feed)]
        else:
            plan = _Plan(batching, token_budget)
            results = task.merge_results(
                _texts(b, tokenizer, runner, task, list(texts or ()), top_k, plan, list(pairs) if pairs else None)
            )
        report = runner.provider_report() if hasattr(runner, "provider_report") else {"runtime": runner.name}
    finally:
        if own:
            runner.deactivate()
    return Prediction(task.name, results, runner.name, report, list(report.get("notes", [])))


def _feed(b: Bundle, enc: Any) -> dict[str, np.ndarray]:
    """The graph's inputs from a tokenizer encoding (segment ids zero where the tokenizer has none)."""
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    feed = {}
    for spec in b.inputs:
        value = enc.get(spec.name)
        feed[spec.name] = np.asarray(value, dtype=np.int64) if value is not None else np.zeros_like(ids)
    return feed


def _warn_truncated(
    tokenizer: Any, texts: Sequence[str], max_seq: int, hint: str = "", pairs: Sequence[str] | None = None
) -> list[int]:
    """Warn about texts (or text pairs) past ``max_seq``; returns each input's token length as fed (truncated)."""
    args = (list(texts), list(pairs)) if pairs else (list(texts),)
    lengths = [len(ids) for ids in tokenizer(*args, truncation=False)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > max_seq]
    if long and pairs:
        log.warning(
            "note: %d text pair(s) exceed this bundle's %d tokens and were truncated longest_first, the longer "
            "text losing tokens first, as Hugging Face does (first: --text/--pair #%d)",
            len(long),
            max_seq,
            long[0] + 1,
        )
    elif long:
        log.warning(
            "note: %d text(s) exceed this bundle's %d tokens and were truncated (first: --text #%d)%s",
            len(long),
            max_seq,
            long[0] + 1,
            hint,
        )
    return [min(n, max_seq) for n in lengths]


@dataclass(frozen=True)
class _Plan:
    """How ``_texts`` batches (runtimes/batching.py)."""

    batching: str = "length"
    token_budget: int = batching_.DEFAULT_TOKEN_BUDGET

    def batches(self, lengths: Sequence[int], runner: Runner) -> list[list[int]]:
        limit = getattr(getattr(runner, "profile", None), "max", None)  # a TensorRT profile caps the batch
        most = min(batching_.DEFAULT_MAX_BATCH, limit[0]) if limit else batching_.DEFAULT_MAX_BATCH
        return batching_.batches_for(
            lengths, self.batching, budget=self.token_budget, max_batch=most, batch=min(CHUNK, most)
        )


def _texts(
    b: Bundle,
    tokenizer: Any,
    runner: Runner,
    task: Task,
    texts: list[str],
    top_k: int,
    plan: _Plan = _Plan(),
    pairs: list[str] | None = None,
    lengths: list[int] | None = None,
) -> list[dict[str, Any]]:
    """One ``run --json`` object per text (or text pair), in the caller's order (``task.merge_results`` makes what
    ``run`` prints); batched by length (``plan``), each batch padded to its longest.

    ``lengths``: each input's token length as fed, when the caller has measured it and reported truncation
    itself (``serve`` notes it per request); then the texts are tokenized once, not twice."""
    if lengths is None:
        lengths = _warn_truncated(tokenizer, texts, b.max_seq, task.truncation_hint(), pairs)
    ctx = PostContext.of(b.manifest, tokenizer, top_k=top_k)
    task.check_texts(tokenizer, texts)
    results: list[dict[str, Any]] = []
    order: list[int] = []  # input index of each result, in the order computed
    for members in plan.batches(lengths, runner):
        order.extend(members)
        batch = [texts[k] for k in members]
        second = ([pairs[k] for k in members],) if pairs else ()
        enc = tokenizer(
            batch,
            *second,
            padding=True,
            truncation="longest_first",
            max_length=b.max_seq,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        out = runner.infer(_feed(b, enc))
        rows = [Row.from_encoding(enc, i, text) for i, text in enumerate(batch)]
        results.extend(task.results(out, rows, ctx))
    return batching_.restore(results, order)


def _qa(
    b: Bundle,
    tokenizer: Any,
    runner: Runner,
    question: str,
    context: str,
    max_answer_tokens: int,
    doc_stride: int | None = None,
    max_question_len: int = qa_windows.MAX_QUESTION_LEN,
) -> dict[str, Any]:
    full = len(tokenizer([question], [context], truncation=False)["input_ids"][0])
    if full > b.max_seq and context:
        return _qa_windows(
            b, tokenizer, runner, question, context, max_answer_tokens, doc_stride, max_question_len, full
        )
    try:
        enc = tokenizer(
            [question],
            [context],
            truncation="only_second",
            max_length=b.max_seq,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
    except Exception as exc:  # the question alone does not fit: tokenizers raise a generic exception
        raise BertExportError(
            f"the question does not fit in this bundle's {b.max_seq} tokens ({str(exc).splitlines()[0][:120]}); "
            "shorten the question"
        ) from None
    out = runner.infer(_feed(b, enc))
    ctx = PostContext.of(b.manifest, tokenizer, max_answer_tokens=max_answer_tokens)
    return get_task(b.manifest["task"]).results(out, [Row.from_encoding(enc, 0, context)], ctx)[0]


def _qa_windows(
    b: Bundle,
    tokenizer: Any,
    runner: Runner,
    question: str,
    context: str,
    max_answer_tokens: int,
    doc_stride: int | None,
    max_question_len: int,
    full: int,
) -> dict[str, Any]:
    """A context past the bundle's maximum: overlapping windows, batched, best span across them."""
    stride = qa_windows.default_stride(b.max_seq, doc_stride)
    enc, question, notes = qa_windows.encode_windows(tokenizer, question, context, b.max_seq, stride, max_question_len)
    for note in notes:
        log.warning("%s", note)
    n = len(enc["input_ids"])
    log.info(
        "note: question + context are %d tokens; read in %d overlapping windows of %d (stride %d)",
        full,
        n,
        b.max_seq,
        stride,
    )
    chunk = min(CHUNK, getattr(getattr(runner, "profile", None), "max", (CHUNK,))[0])
    feed = _feed(b, enc)
    starts, ends = [], []
    for lo in range(0, n, chunk):
        out = runner.infer({k: v[lo : lo + chunk] for k, v in feed.items()})
        starts.append(out["start_logits"])
        ends.append(out["end_logits"])
    windows = qa_windows.windows_from(
        enc, np.concatenate(starts), np.concatenate(ends), getattr(tokenizer, "cls_token_id", None)
    )
    return qa_windows.best_answer(windows, context, max_answer_tokens)
