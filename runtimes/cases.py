"""Parity cases: the inputs every graph is checked on.

Real text through the bundle's tokenizer (random ids only when there is none), at the shapes
that break exporters: batch 1 x sequence 1, right-padded batches of mixed lengths, a sequence
at the bundle's maximum, and for local-attention models sequences past the window with padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bert_export.bundle.reference import Case
from bert_export.models import Family, Task
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES, long_text

MLM_FRACTION = 0.15
LONG_CASE_SEQ = 2048  # above this the max-seq case is batch 1


@dataclass(frozen=True)
class Specials:
    cls: int
    sep: int
    pad: int
    mask: int
    vocab: int


def specials_for(config: Any, tokenizer: Any | None) -> Specials:
    """Special token ids from the tokenizer, else from the model config."""

    def pick(*names: str, default: int) -> int:
        for source in (tokenizer, config):
            for n in names:
                v = getattr(source, n, None) if source is not None else None
                if isinstance(v, int) and v >= 0:
                    return v
        return default

    vocab = int(config.vocab_size)
    return Specials(
        cls=pick("cls_token_id", "bos_token_id", default=1),
        sep=pick("sep_token_id", "eos_token_id", default=2),
        pad=pick("pad_token_id", default=0),
        mask=pick("mask_token_id", default=vocab - 1),
        vocab=vocab,
    )


def _pad(rows: list[list[int]], types: list[list[int]], length: int, sp: Specials) -> dict[str, np.ndarray]:
    b = len(rows)
    ids = np.full((b, length), sp.pad, dtype=np.int64)
    mask = np.zeros((b, length), dtype=np.int64)
    tt = np.zeros((b, length), dtype=np.int64)
    for i, (r, t) in enumerate(zip(rows, types)):
        ids[i, : len(r)], mask[i, : len(r)], tt[i, : len(t)] = r, 1, t
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


class _Encoder:
    """Text -> ids through the tokenizer, or deterministic random ids of the same lengths."""

    def __init__(self, tokenizer: Any | None, sp: Specials, seed: int = 0) -> None:
        self.tok, self.sp = tokenizer, sp
        self.rng = np.random.default_rng(seed)

    def single(self, text: str, max_len: int) -> tuple[list[int], list[int]]:
        if self.tok is None:
            n = max(2, min(max_len, len(text.split()) + 2))
            return self._random(n), [0] * n
        enc = self.tok(text, truncation=True, max_length=max_len, return_token_type_ids=True)
        return list(enc["input_ids"]), list(enc.get("token_type_ids") or [0] * len(enc["input_ids"]))

    def text_pair(self, text: str, pair: str, max_len: int) -> tuple[list[int], list[int]]:
        """A seq-cls / rerank pair, truncated longest_first as Hugging Face does (and ``run --pair``)."""
        if self.tok is None:
            return self.pair(text, pair, max_len)
        enc = self.tok(text, pair, truncation="longest_first", max_length=max_len, return_token_type_ids=True)
        ids, types = list(enc["input_ids"]), enc.get("token_type_ids")
        if not types or not any(types):  # tokenizers without segment ids (ModernBERT): derive them
            types = [1 if s == 1 else 0 for s in enc.sequence_ids()]
        return ids, list(types)

    def pair(self, question: str, context: str, max_len: int) -> tuple[list[int], list[int]]:
        if self.tok is None:
            nq, nc = len(question.split()) + 2, len(context.split()) + 1
            n = max(3, min(max_len, nq + nc))
            return self._random(n), [0] * min(nq, n) + [1] * (n - min(nq, n))
        try:
            enc = self.tok(question, context, truncation="only_second", max_length=max_len, return_token_type_ids=True)
        except Exception:  # the question alone is longer than max_len: trim both (tokenizers refuses only_second)
            enc = self.tok(
                question, context, truncation="longest_first", max_length=max_len, return_token_type_ids=True
            )
        ids = list(enc["input_ids"])
        types = enc.get("token_type_ids")
        if not types or not any(types):  # tokenizers without segment ids (ModernBERT): derive them
            seq_ids = enc.sequence_ids() if hasattr(enc, "sequence_ids") else [None] * len(ids)
            types = [1 if s == 1 else 0 for s in seq_ids]
        return ids, list(types)

    def _random(self, n: int) -> list[int]:
        low = min(5, self.sp.vocab - 1)
        body = self.rng.integers(low, self.sp.vocab, n - 2).tolist() if n > 2 else []
        return ([self.sp.cls] + body + [self.sp.sep])[:n]


def _batch(name: str, encoded: list[tuple[list[int], list[int]]], sp: Specials, length: int | None = None) -> Case:
    rows = [e[0] for e in encoded]
    types = [e[1] for e in encoded]
    feed = _pad(rows, types, length or max(map(len, rows)), sp)
    return Case(name, feed, context_mask=(feed["token_type_ids"] == 1) & feed["attention_mask"].astype(bool))


def build_cases(
    family: Family, task: Task, config: Any, tokenizer: Any | None, max_seq: int, seed: int = 0
) -> list[Case]:
    """The parity cases for one bundle, deterministic for a given tokenizer and config."""
    sp = specials_for(config, tokenizer)
    enc = _Encoder(tokenizer, sp, seed)
    qa = task.pair_input  # question + context pairs instead of single texts
    window = int(getattr(config, family.local_window_attr)) if family.local_window_attr else None

    def encode(i: int, limit: int) -> tuple[list[int], list[int]]:
        if qa:
            q, c = QA_PAIRS[i % len(QA_PAIRS)]
            return enc.pair(q, c, limit)
        return enc.single(SENTENCES[i % len(SENTENCES)], limit)

    cases = [_batch("single-token", [([sp.cls], [0])], sp)]
    cases.append(_batch("padded-batch", [encode(i, max_seq) for i in (0, 12, 13, 2, 4, 15)], sp))
    long_words = max_seq  # one word is >= 1 token, so this always reaches max_seq after truncation
    if qa:
        first = enc.pair(QA_PAIRS[0][0], long_text(long_words), max_seq)
    else:
        first = enc.single(long_text(long_words), max_seq)
    # One row only when long: PyTorch eager at 8192 takes about a minute per row (the report records the time).
    rows = [first] if max_seq > LONG_CASE_SEQ else [first, encode(1, max_seq)]
    cases.append(_batch("max-seq", rows, sp, length=max_seq))
    if window and 2 * window + 5 <= max_seq:
        lengths = (2 * window + 5, window + 3, 5)
        rows = []
        for n in lengths:
            ids, types = enc.pair(QA_PAIRS[3][0], long_text(n), n) if qa else enc.single(long_text(n), n)
            rows.append((ids[:n], types[:n]))
        cases.append(_batch("past-window", rows, sp))
        cases[-1].meta["window"] = window
    for k, group in enumerate(task.parity_pair_groups(QA_PAIRS)):
        rows = [enc.text_pair(a, b, max_seq) for a, b in group]
        if k == 0 and max_seq <= LONG_CASE_SEQ:  # both sides past the bundle: longest_first trims each
            rows.append(enc.text_pair(long_text(max_seq), long_text(max_seq // 2), max_seq))
        cases.append(_batch(f"text-pairs-{k}", rows, sp))
    if task.masks_inputs:
        rng = np.random.default_rng(seed + 1)
        for case in cases:
            _mask_tokens(case, sp, rng)
    return cases


def _mask_tokens(case: Case, sp: Specials, rng: np.random.Generator) -> None:
    """Replace ~15% of each row's non-special real tokens with the mask token (at least one)."""
    ids = case.feed["input_ids"]
    positions = np.zeros(ids.shape, dtype=bool)
    for i in range(ids.shape[0]):
        real = np.flatnonzero(case.keep[i] & ~np.isin(ids[i], [sp.cls, sp.sep, sp.pad]))
        if real.size == 0:
            real = np.flatnonzero(case.keep[i])
        n = max(1, int(round(real.size * MLM_FRACTION)))
        chosen = rng.choice(real, size=min(n, real.size), replace=False)
        positions[i, chosen] = True
    ids[positions] = sp.mask
    case.mlm_positions = positions
