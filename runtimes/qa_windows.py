"""Long-context question answering: overlapping windows over a context longer than the bundle's maximum.

Hugging Face's ``question-answering`` pipeline (transformers 4.x; 5.x dropped it) reads a long
context in windows of ``max_seq`` tokens, each holding the question and a slice of the context,
consecutive slices overlapping by ``doc_stride`` tokens (the tokenizer's
``return_overflowing_tokens=True, stride=doc_stride, truncation="only_second"``). We do the same
and rank the candidates the way the pipeline does, so that the same answer wins with the same
character offsets:

* per window, start/end probabilities are softmaxes over the window's context tokens *and* its
  ``[CLS]`` (the pipeline keeps [CLS] in the normalisation, then zeroes it);
* per window the best ``PER_WINDOW`` spans (the pipeline's ``top_k * 2 + 10``) with
  ``end - start < max_answer_len`` tokens, both ends in the context;
* candidates with the same text (case-insensitive) add their scores; the best total wins, first
  seen on ties; its offsets are those of its first occurrence (window order).

Offsets are the tokenizer's (the pipeline's ``align_to_words=False``; our single-window answers
use token offsets too). The reported ``score`` keeps our JSON contract (models/postprocess.py):
p(start)·p(end) over the context tokens only, in the window where the answer first appeared; the
pipeline's own score differs by its [CLS] term and the summing. A context that fits in one window
never comes here (``predict`` keeps its single-window path), so short inputs answer as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.models import postprocess as pp

DOC_STRIDE = 128  # the pipeline's default (min(max_seq // 2, 128))
MAX_QUESTION_LEN = 64  # the pipeline's default: longer questions are truncated to this many tokens
PER_WINDOW = 12  # candidates kept per window: the pipeline's top_k * 2 + 10 for top_k = 1


@dataclass(frozen=True)
class Window:
    """One window's logits and what is needed to map its tokens back to the context."""

    start_logits: np.ndarray
    end_logits: np.ndarray
    context: np.ndarray  # bool per token: inside the context
    cls: np.ndarray  # bool per token: a [CLS] token (kept in the pipeline's normalisation)
    offsets: list[tuple[int, int]]


def default_stride(max_seq: int, doc_stride: int | None) -> int:
    return min(max_seq // 2, DOC_STRIDE) if doc_stride is None else doc_stride


def encode_windows(
    tokenizer: Any, question: str, context: str, max_seq: int, doc_stride: int, max_question_len: int = MAX_QUESTION_LEN
) -> tuple[Any, str, list[str]]:
    """The tokenizer's overlapping windows (padded to the longest), the question used, and notes."""
    notes = []
    if doc_stride < 0:
        raise BertExportError(f"--doc-stride must be >= 0, got {doc_stride}")
    q = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(q["input_ids"]) > max_question_len:
        cut = q["offset_mapping"][max_question_len - 1][1]
        notes.append(
            f"note: the question is {len(q['input_ids'])} tokens; truncated to --max-question-len {max_question_len}"
        )
        question = question[:cut]
        q = tokenizer(question, add_special_tokens=False)
    room = max_seq - len(q["input_ids"]) - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 1:
        raise BertExportError(f"the question does not fit in this bundle's {max_seq} tokens; shorten the question")
    if doc_stride >= room:
        raise BertExportError(
            f"--doc-stride {doc_stride} must be smaller than the {room} context tokens a window holds "
            f"next to this question; use --doc-stride {max(room // 2, 0)} or less"
        )
    enc = tokenizer(
        [question],
        [context],
        truncation="only_second",
        max_length=max_seq,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding="longest",
    )
    return enc, question, notes


def windows_from(enc: Any, start_logits: np.ndarray, end_logits: np.ndarray, cls_id: int | None) -> list[Window]:
    out = []
    for w in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(w)
        context = np.array([s == 1 for s in seq_ids], dtype=bool)
        ids = np.asarray(enc["input_ids"][w])
        cls = (
            (ids == cls_id) & np.asarray(enc["attention_mask"][w], dtype=bool)
            if cls_id is not None
            else np.zeros_like(context)
        )
        out.append(
            Window(
                np.asarray(start_logits[w]),
                np.asarray(end_logits[w]),
                context,
                cls,
                [(int(o[0]), int(o[1])) for o in enc["offset_mapping"][w]],
            )
        )
    return out


def _pipeline_probs(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Softmax with everything outside ``keep`` at -10000, as the pipeline's select_starts_ends does."""
    x = np.where(keep, np.asarray(logits, dtype=np.float64), -10000.0)
    e = np.exp(x - x.max())
    return e / e.sum()


def _candidates(win: Window, max_answer_len: int) -> list[tuple[int, int, float]]:
    """The window's best spans (start, end, pipeline score), best first."""
    keep = win.context | win.cls
    ps, pe = _pipeline_probs(win.start_logits, keep), _pipeline_probs(win.end_logits, keep)
    ps[win.cls], pe[win.cls] = 0.0, 0.0
    idx = np.flatnonzero(win.context)
    if idx.size == 0:
        return []
    scores = np.outer(ps[idx], pe[idx])
    length = idx[None, :] - idx[:, None]
    scores = np.where((length >= 0) & (length < max_answer_len), scores, -1.0)
    flat = scores.ravel()
    k = min(PER_WINDOW, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top], kind="stable")]
    out = []
    for f in top:
        i, j = divmod(int(f), scores.shape[1])
        if flat[f] >= 0:
            out.append((int(idx[i]), int(idx[j]), float(flat[f])))
    return out


def best_answer(windows: list[Window], context: str, max_answer_len: int = pp.MAX_ANSWER_TOKENS) -> dict[str, Any]:
    """``{"answer", "score", "start", "end"}`` across windows, ranked as the pipeline ranks them (module docstring)."""
    merged: dict[str, dict[str, Any]] = {}
    for w, win in enumerate(windows):
        for i, j, score in _candidates(win, max_answer_len):
            start, end = win.offsets[i][0], win.offsets[j][1]
            key = context[start:end].lower()
            if key in merged:
                merged[key]["total"] += score
            else:
                merged[key] = {"total": score, "window": w, "i": i, "j": j, "start": start, "end": end}
    if not merged:
        return {"answer": "", "score": 0.0, "start": 0, "end": 0}
    best = sorted(merged.values(), key=lambda m: m["total"], reverse=True)[0]
    win = windows[best["window"]]
    idx = np.flatnonzero(win.context)
    ps, pe = pp.softmax(win.start_logits[idx]), pp.softmax(win.end_logits[idx])
    where = {int(t): n for n, t in enumerate(idx)}
    score = ps[where[best["i"]]] * pe[where[best["j"]]]
    return {
        "answer": context[best["start"] : best["end"]],
        "score": round(float(score), pp.DECIMALS),
        "start": best["start"],
        "end": best["end"],
    }
