"""Prediction from a bundle: text in, the task's JSON objects out (what ``bert-export run`` prints).

    from bert_export.runtimes.predict import predict
    p = predict("exports/minilm-qa", question="Who wrote it?", context="It was written by Jane Austen.")
    p.results[0]   # {"answer": "Jane Austen", "score": ..., "start": 18, "end": 29}

Tokenization uses the bundle's own tokenizer (offsets included, for character spans), the runner
comes from ``make_runner`` (any runtime), and post-processing is runtimes/postprocess.py.
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

from bert_export.models import BertExportError
from bert_export.runtimes import postprocess as pp
from bert_export.runtimes import qa_windows
from bert_export.runtimes.base import Runner
from bert_export.runtimes.factory import bundle_tokenizer, make_runner

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

log = logging.getLogger("bert_export.runtimes")
CHUNK = 32  # texts per inference call: bounds memory, and fits the default TensorRT profile


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
        items = [(k, *_finite(v)) for k, v in value.items()]
        return {k: v for k, v, _ in items}, sum(n for _, _, n in items)
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
    **runner_options: Any,
) -> Prediction:
    """Run ``texts`` (or a ``question`` and ``context`` for qa) through ``bundle`` on ``runtime``.

    Longer than the bundle's maximum: a qa context is read in overlapping windows (``doc_stride``
    tokens of overlap, default min(max_seq // 2, 128); runtimes/qa_windows.py); embed texts are
    truncated with a note, or with ``chunk`` embedded in windows and mean-pooled (runtimes/long_embed.py).
    """
    from bert_export.bundle.reader import Bundle, load_bundle

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    task = b.manifest["task"]
    _check_request(task, texts, question, context)
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
        if task == "qa":
            results = [
                _qa(
                    b, tokenizer, runner, question or "", context or "", max_answer_tokens, doc_stride, max_question_len
                )
            ]
        elif task == "embed" and chunk:
            from bert_export.runtimes.long_embed import embed_chunked

            results = [embed_chunked(b, tokenizer, runner, list(texts or ()), _feed)]
        else:
            results = _texts(b, tokenizer, runner, task, list(texts or ()), top_k)
        report = runner.provider_report() if hasattr(runner, "provider_report") else {"runtime": runner.name}
    finally:
        if own:
            runner.deactivate()
    return Prediction(task, results, runner.name, report, list(report.get("notes", [])))


def _check_request(task: str, texts: Sequence[str] | None, question: str | None, context: str | None) -> None:
    if task == "qa":
        if texts:
            raise BertExportError("this is a qa bundle: pass --question Q --context C, not --text")
        if question is None or context is None:
            raise BertExportError("this is a qa bundle: pass both --question and --context")
    else:
        if question is not None or context is not None:
            raise BertExportError(
                f"this bundle's task is {task}: pass --text TEXT (one or more), not --question/--context"
            )
        if not texts:
            raise BertExportError(f"this bundle's task is {task}: pass at least one --text TEXT")


def _feed(b: Bundle, enc: Any) -> dict[str, np.ndarray]:
    """The graph's inputs from a tokenizer encoding (segment ids zero where the tokenizer has none)."""
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    feed = {}
    for spec in b.inputs:
        value = enc.get(spec.name)
        feed[spec.name] = np.asarray(value, dtype=np.int64) if value is not None else np.zeros_like(ids)
    return feed


def _warn_truncated(tokenizer: Any, texts: Sequence[str], max_seq: int, chunk_hint: bool = False) -> None:
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > max_seq]
    if long:
        log.warning(
            "note: %d text(s) exceed this bundle's %d tokens and were truncated (first: --text #%d)%s",
            len(long),
            max_seq,
            long[0] + 1,
            "; embed with --chunk to cover them whole" if chunk_hint else "",
        )


def _texts(b: Bundle, tokenizer: Any, runner: Runner, task: str, texts: list[str], top_k: int) -> list[dict[str, Any]]:
    _warn_truncated(tokenizer, texts, b.max_seq, chunk_hint=task == "embed")
    id2label = (b.manifest.get("labels") or {}).get("id2label") or {}
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if task == "mlm":
        _check_masks(tokenizer, texts, mask_id)
    chunk = min(CHUNK, getattr(getattr(runner, "profile", None), "max", (CHUNK,))[0])
    results: list[dict[str, Any]] = []
    embeddings: list[list[float]] = []
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        enc = tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=b.max_seq,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        out = runner.infer(_feed(b, enc))
        mask = np.asarray(enc["attention_mask"])
        if task == "embed":
            embeddings.extend(
                pp.embed_result(out["last_hidden_state"], mask, b.manifest.get("pooling") or {})["embeddings"]
            )
            continue
        for i, text in enumerate(batch):
            offsets = enc["offset_mapping"][i]
            if task == "seq-cls":
                results.append(pp.seq_cls_result(out["logits"][i], id2label))
            elif task == "token-cls":
                results.append(pp.token_cls_result(out["logits"][i], enc.word_ids(i), offsets, text, id2label))
            elif task == "mlm":
                ids = np.asarray(enc["input_ids"][i])
                positions = np.flatnonzero((ids == mask_id) & (mask[i] > 0)).tolist()
                results.append(
                    pp.mlm_result(out["logits"][i], positions, offsets, lambda t: tokenizer.decode([t]), top_k)
                )
    return [{"embeddings": embeddings}] if task == "embed" else results


def _check_masks(tokenizer: Any, texts: Sequence[str], mask_id: int | None) -> None:
    token = getattr(tokenizer, "mask_token", None)
    if mask_id is None or token is None:
        raise BertExportError("this mlm bundle's tokenizer has no mask token, so there is nothing to fill")
    missing = [i + 1 for i, t in enumerate(texts) if token not in t]
    if missing:
        raise BertExportError(
            f'--text #{missing[0]} has no {token} to fill; write e.g. "Paris is the {token} of France."'
        )


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
    sequence_ids = enc.sequence_ids(0)
    context_tokens = np.array([s == 1 for s in sequence_ids], dtype=bool)
    return pp.qa_result(
        out["start_logits"][0],
        out["end_logits"][0],
        context_tokens,
        enc["offset_mapping"][0],
        context,
        max_answer_tokens,
    )


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
