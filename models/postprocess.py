"""Task post-processing shared by every runtime, and the JSON that ``bert-export run --json`` prints.

The task classes (models/tasks) apply these rules; ``runtimes.postprocess`` is the same module under
its former name, and ``bert-export triton`` vendors this file into NAME_post (pure numpy on purpose).

Runners return raw named outputs (logits, hidden states); this module turns one input's slice
of them into what a user asked for. It is pure numpy over plain lists (token offsets, word ids)
so that any consumer (the C++ demo in examples/cpp included) can reproduce it exactly.

JSON shapes (the contract; ``run --json`` prints these, the C++ demo prints the same):

- ``qa``:        ``{"answer": str, "score": float, "start": int, "end": int}``
  ``start``/``end`` are character offsets into the context, end exclusive, so
  ``context[start:end] == answer``. ``score`` = p(start) * p(end), each a softmax over the
  context tokens only; spans of at most 30 tokens. No valid span (an empty or fully truncated
  context): answer "" and score 0.0 at 0, 0. *Unlike* Hugging Face's pipeline (Python and
  transformers.js), whose softmaxes also include the [CLS] token (then zero its score): the
  winning span is the same (the denominators are constants; HF Python caps spans at 15 tokens,
  transformers.js does not cap), but our score is higher by the [CLS] mass, i.e.
  ``score_hf = score * (1 - q_start) * (1 - q_end)`` with ``q`` the [CLS] probability in the
  softmax over context + [CLS]. We leave [CLS] out because these bundles answer extractively
  (no "no answer" head convention is assumed).
- ``seq-cls``:   ``{"label": str, "score": float}``: the argmax label (the model's id2label)
  and its softmax probability (sigmoid for a single-logit head).
- ``rerank``:    ``{"score": float}`` per (query, passage) pair: the sigmoid of a single logit, or the
  softmax probability of label 1 of two. ``run --query Q --passage P ...`` prints
  ``{"query": str, "results": [{"index": int, "text": str, "score": float}, ...]}``, best first.
- ``token-cls``: ``{"entities": [{"label": str, "text": str, "score": float, "start": int,
  "end": int}, ...]}``: Hugging Face's ``aggregation_strategy="first"``: one label per word
  (its first sub-token's argmax and probability), then consecutive words with the same entity
  type merge (``B-X`` starts a new entity, ``I-X`` continues one; labels without a B-/I- prefix
  merge when equal); words labelled ``O`` are dropped. ``score`` is the mean of the words'
  probabilities; ``start``/``end`` are character offsets into the text, ``text ==
  input[start:end]`` (HF's ``word`` is the decoded tokens instead, lower-cased for uncased
  models). Words are the tokenizer's own (``word_ids``): for WordPiece that is exactly HF's
  word split; for byte-level BPE, HF's pipeline falls back to a whitespace heuristic (so
  ``Paris,`` is one word there, two here). Not HF's "simple", which labels each sub-token by its
  own argmax before grouping, so a word can split between entities.
- ``mlm``:       ``{"fills": [{"start": int, "end": int, "candidates": [{"token": str,
  "id": int, "score": float}, ...]}, ...]}``: one entry per mask token, in text order;
  ``start``/``end`` locate the mask token in the text; ``top_k`` (default 5) candidates by
  softmax probability, ``token`` is the tokenizer's decoding of that single id, stripped.
- ``embed``:     ``{"embeddings": [[float, ...], ...]}``: one vector per input text, pooled as
  the bundle's ``manifest["pooling"]`` says (``mode``: cls | mean | max | mean_sqrt_len, over
  real tokens only; ``normalize``: L2-normalised). The packaged MiniLM is mean + normalize.

All floats are rounded to ``DECIMALS`` decimal places; compare them with a tolerance, not
textually. Offsets count Unicode code points (Python ``str`` indices), not bytes. ``qa`` and
``embed`` print one object per run; ``seq-cls``, ``token-cls`` and ``mlm`` print one object per
``--text``, one per line (JSON lines), in the order given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

DECIMALS = 6
MAX_ANSWER_TOKENS = 30  # the SQuAD reference scripts' max_answer_length
TOP_K = 5

Offsets = Sequence[tuple[int, int]]


def _r(x: float) -> float:
    return round(float(x), DECIMALS)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, valid: np.ndarray, max_answer_tokens: int = MAX_ANSWER_TOKENS
) -> tuple[int, int, float] | None:
    """The (start, end, score) token span maximising p(start) * p(end) over valid positions.

    Valid means: both ends inside the context, start <= end, at most ``max_answer_tokens``
    tokens. Probabilities are softmaxes over the context tokens only, so a question token or
    padding can never win, whatever the graph wrote there. None when no position is valid.
    """
    idx = np.flatnonzero(np.asarray(valid, dtype=bool))
    if idx.size == 0:
        return None
    ps, pe = softmax(np.asarray(start_logits)[idx]), softmax(np.asarray(end_logits)[idx])
    scores = np.outer(ps, pe)
    # idx is increasing, so start <= end is the upper triangle; the token-length limit uses the
    # real token positions (a context is contiguous, so this equals the index distance).
    length = idx[None, :] - idx[:, None]
    scores = np.where((length >= 0) & (length < max_answer_tokens), scores, -1.0)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(idx[i]), int(idx[j]), float(scores[i, j])


def qa_result(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context_tokens: np.ndarray,
    offsets: Offsets,
    context: str,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> dict[str, Any]:
    """``{"answer", "score", "start", "end"}`` for one question/context row.

    ``context_tokens`` marks the row's context tokens; ``offsets`` are each token's character
    span in the context (the tokenizer's offset mapping for the second sequence).
    """
    span = best_span(start_logits, end_logits, context_tokens, max_answer_tokens)
    if span is None:
        return {"answer": "", "score": 0.0, "start": 0, "end": 0}
    i, j, score = span
    start, end = int(offsets[i][0]), int(offsets[j][1])
    return {"answer": context[start:end], "score": _r(score), "start": start, "end": end}


def seq_cls_result(logits: np.ndarray, id2label: Mapping[str, str]) -> dict[str, Any]:
    """``{"label", "score"}`` for one row of [num_labels] logits."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if logits.size == 1:
        p = 1.0 / (1.0 + np.exp(-logits[0]))
        return {"label": _label(id2label, 0), "score": _r(p)}
    probs = softmax(logits)
    k = int(np.argmax(probs))
    return {"label": _label(id2label, k), "score": _r(probs[k])}


def rerank_result(logits: np.ndarray) -> dict[str, Any]:
    """``{"score"}`` for one (query, passage) row of a cross-encoder's [1] or [2] logits: the sigmoid of one
    logit (sentence-transformers' CrossEncoder default), or the softmax probability of label 1 of two."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = 1.0 / (1.0 + np.exp(-x[0])) if x.size == 1 else softmax(x)[1]
    return {"score": _r(p)}


def _label(id2label: Mapping[str, str], k: int) -> str:
    return str(id2label.get(str(k), f"LABEL_{k}"))


def _entity_type(label: str) -> tuple[str, bool]:
    """(type, begins): ``B-PER`` -> (PER, True), ``I-PER`` -> (PER, False), ``POS`` -> (POS, False)."""
    if len(label) > 2 and label[1] == "-" and label[0] in "BIES":
        return label[2:], label[0] in "BS"
    return label, False


def token_cls_result(
    logits: np.ndarray, word_ids: Sequence[int | None], offsets: Offsets, text: str, id2label: Mapping[str, str]
) -> dict[str, Any]:
    """``{"entities": [...]}`` for one row of [sequence, num_labels] logits.

    ``word_ids[t]`` is the word of token ``t`` (None for special tokens and padding). A word's
    label is its first sub-token's argmax: the convention BERT NER heads are trained with.
    """
    probs = softmax(np.asarray(logits))
    words: list[tuple[str, float, int, int]] = []  # label, score, start, end
    seen: set[int] = set()
    for t, w in enumerate(word_ids):
        if w is None or w in seen:
            if w is not None:  # later sub-token of the current word: extend its end
                label, score, start, _ = words[-1]
                words[-1] = (label, score, start, int(offsets[t][1]))
            continue
        seen.add(w)
        k = int(np.argmax(probs[t]))
        words.append((_label(id2label, k), float(probs[t, k]), int(offsets[t][0]), int(offsets[t][1])))
    entities: list[dict[str, Any]] = []
    scores: list[list[float]] = []
    prev_type: str | None = None
    for label, score, start, end in words:
        etype, begins = _entity_type(label)
        if etype == "O":
            prev_type = None
            continue
        if prev_type == etype and not begins:
            entities[-1]["end"] = end
            scores[-1].append(score)
        else:
            entities.append({"label": etype, "text": "", "score": 0.0, "start": start, "end": end})
            scores.append([score])
        prev_type = etype
    for ent, s in zip(entities, scores):
        ent["text"] = text[ent["start"] : ent["end"]]
        ent["score"] = _r(float(np.mean(s)))
    return {"entities": entities}


def mlm_result(
    logits: np.ndarray,
    mask_positions: Sequence[int],
    offsets: Offsets,
    decode: Callable[[int], str],
    top_k: int = TOP_K,
) -> dict[str, Any]:
    """``{"fills": [...]}``: top-k candidates for each mask token of one row of [sequence, vocab] logits."""
    fills = []
    for t in mask_positions:
        probs = softmax(np.asarray(logits)[t])
        k = min(top_k, probs.size)
        # argsort is stable on ties, so equal probabilities keep vocabulary order everywhere.
        top = np.argsort(-probs, kind="stable")[:k]
        fills.append(
            {
                "start": int(offsets[t][0]),
                "end": int(offsets[t][1]),
                "candidates": [{"token": decode(int(i)).strip(), "id": int(i), "score": _r(probs[i])} for i in top],
            }
        )
    return {"fills": fills}


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str, normalize: bool = False) -> np.ndarray:
    """[batch, hidden] sentence embeddings from [batch, sequence, hidden] over real tokens only.

    The modes are sentence-transformers' Pooling module's (cls, mean, max, mean_sqrt_len), so a
    bundle reproduces the embeddings its model card promises.
    """
    h = np.asarray(hidden, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)[..., None]
    n = np.maximum(m.sum(1), 1e-9)
    if mode == "mean":
        out = (h * m).sum(1) / n
    elif mode == "mean_sqrt_len":
        out = (h * m).sum(1) / np.sqrt(n)
    elif mode == "max":
        out = np.where(m > 0, h, -np.inf).max(1)
    else:
        out = h[:, 0]
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def embed_result(hidden: np.ndarray, mask: np.ndarray, pooling: Mapping[str, Any]) -> dict[str, Any]:
    """``{"embeddings": [[...], ...]}`` for a batch, pooled per the manifest's ``pooling``."""
    vectors = pool(hidden, mask, str(pooling.get("mode", "cls")), bool(pooling.get("normalize", False)))
    # numpy's round then tolist: the same floats as _r per value (round-half-even on the same float64), ~8x faster,
    # which matters to serve (issue 25: 384 Python round() calls per request were ~0.5 ms of CPU each)
    return {"embeddings": np.round(vectors, DECIMALS).tolist()}
