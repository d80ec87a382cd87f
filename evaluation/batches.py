"""User data -> padded batches, bucketed by length as real traffic is batched.

Every encoder input (a text, one sentence of a pair, a question with its context) becomes an
``Item`` through the bundle's own tokenizer; items are sorted by token length and cut by a
budget of padded tokens (``runtimes.batching.plan``: ``batch_size`` texts of the data's mean
length per batch, so long texts travel in narrower batches and short ones in wider), each
padded to its own longest item; ``batching="input-order"`` cuts ``batch_size`` items at a time
in the data's order instead (reproducibility studies). Each batch is a
``runtimes.cases.Case``, so the parity harness compares only real-token positions, as for the
built-in cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bert_export.evaluation.data import Dataset
from bert_export.models import BertExportError, TensorSpec, get_task
from bert_export.runtimes.batching import batches_for
from bert_export.runtimes.cases import MLM_FRACTION, Case

WIDEST = 4  # a batch of short items holds at most WIDEST x batch_size of them


@dataclass
class Item:
    """One row of the encoder's input and what post-processing needs to read its output back."""

    example: int  # index into Dataset.examples
    part: int  # 0, or 1 for a pair's second sentence
    ids: list[int]
    types: list[int]
    offsets: list[tuple[int, int]] = field(default_factory=list)
    word_ids: list[int | None] = field(default_factory=list)
    context: list[bool] = field(default_factory=list)  # qa: token lies in the context
    masked: list[int] = field(default_factory=list)  # mlm: masked positions
    gold_ids: list[int] = field(default_factory=list)  # mlm: original ids at ``masked``
    truncated: bool = False


def encode(dataset: Dataset, task: str, tokenizer: Any, max_seq: int, seed: int = 0) -> list[Item]:
    """Tokenize every input of ``dataset`` (truncated to ``max_seq``; ``Item.truncated`` says so)."""
    if tokenizer is None:
        raise BertExportError(
            "this bundle has no tokenizer files, so it cannot read text data; export it from a "
            "model directory that has tokenizer.json or vocab.txt"
        )
    rng = np.random.default_rng(seed)
    tsk = get_task(task)
    items: list[Item] = []
    for i, ex in enumerate(dataset.examples):
        if tsk.pair_input:
            items.append(_pair(tokenizer, i, ex.question or "", ex.context or "", max_seq))
        elif ex.text_pair is not None:
            items.append(_text_pair(tokenizer, i, ex.text or "", ex.text_pair, max_seq))
        elif ex.pair is not None:
            items.extend(_single(tokenizer, i, part, text, max_seq) for part, text in enumerate(ex.pair))
        elif ex.words is not None:
            items.append(_single(tokenizer, i, 0, ex.words, max_seq))
        else:
            items.append(_single(tokenizer, i, 0, ex.text or "", max_seq))
    if tsk.masks_inputs:
        mask_id = getattr(tokenizer, "mask_token_id", None)
        if mask_id is None:
            raise BertExportError("this mlm bundle's tokenizer has no mask token, so no token can be masked")
        for item in items:
            _mask(item, tokenizer, int(mask_id), rng)
    return items


def _encoding(tokenizer: Any, *args: Any, **kw: Any) -> Any:
    return tokenizer(*args, return_token_type_ids=True, return_offsets_mapping=True, **kw)


def _single(tokenizer: Any, i: int, part: int, text: str | list[str], max_seq: int) -> Item:
    words = isinstance(text, list)
    enc = _encoding(tokenizer, text, truncation=True, max_length=max_seq, is_split_into_words=words)
    full = len(tokenizer(text, truncation=False, is_split_into_words=words)["input_ids"])
    ids = list(enc["input_ids"])
    return Item(
        i,
        part,
        ids,
        list(enc.get("token_type_ids") or [0] * len(ids)),
        [tuple(o) for o in enc["offset_mapping"]],
        enc.word_ids(),
        truncated=full > max_seq,
    )


def _pair(tokenizer: Any, i: int, question: str, context: str, max_seq: int) -> Item:
    try:
        enc = _encoding(tokenizer, question, context, truncation="only_second", max_length=max_seq)
    except Exception:  # the question alone exceeds max_seq
        raise BertExportError(
            f"--data row {i + 1}: the question alone does not fit in this bundle's {max_seq} tokens; shorten it"
        ) from None
    full = len(tokenizer(question, context, truncation=False)["input_ids"])
    ids = list(enc["input_ids"])
    seq = enc.sequence_ids()
    return Item(
        i,
        0,
        ids,
        list(enc.get("token_type_ids") or [0] * len(ids)),
        [tuple(o) for o in enc["offset_mapping"]],
        context=[s == 1 for s in seq],
        truncated=full > max_seq,
    )


def _text_pair(tokenizer: Any, i: int, text: str, pair: str, max_seq: int) -> Item:
    """A seq-cls / rerank pair, truncated as Hugging Face's ``longest_first`` (the longer text loses tokens first)."""
    enc = _encoding(tokenizer, text, pair, truncation="longest_first", max_length=max_seq)
    full = len(tokenizer(text, pair, truncation=False)["input_ids"])
    ids = list(enc["input_ids"])
    seq = enc.sequence_ids()
    types = enc.get("token_type_ids")
    return Item(
        i,
        0,
        ids,
        list(types) if types and any(types) else [1 if s == 1 else 0 for s in seq],
        [tuple(o) for o in enc["offset_mapping"]],
        truncated=full > max_seq,
    )


def _mask(item: Item, tokenizer: Any, mask_id: int, rng: np.random.Generator) -> None:
    """Mask ~15% of the item's non-special tokens (at least one), seeded: the originals are the gold."""
    special = set(tokenizer.all_special_ids)
    real = [t for t, tok in enumerate(item.ids) if tok not in special]
    if not real:
        return
    n = max(1, int(round(len(real) * MLM_FRACTION)))
    chosen = sorted(int(t) for t in rng.choice(real, size=min(n, len(real)), replace=False))
    item.masked, item.gold_ids = chosen, [item.ids[t] for t in chosen]
    for t in chosen:
        item.ids[t] = mask_id


def bucket(
    items: list[Item], inputs: tuple[TensorSpec, ...], batch_size: int, pad_id: int, batching: str = "length"
) -> list[tuple[Case, list[int]]]:
    """Padded batches, by length under a token budget (or in input order): (case, indices into ``items``) each."""
    if batch_size < 1:
        raise BertExportError(f"--batch must be >= 1, got {batch_size}")
    lengths = [len(item.ids) for item in items]
    budget = batch_size * max(1, -(-sum(lengths) // max(len(lengths), 1)))  # batch_size texts of mean length
    plan = batches_for(lengths, batching, budget=budget, max_batch=WIDEST * batch_size, batch=batch_size)
    out = []
    for n, members in enumerate(plan):
        rows = [items[k] for k in members]
        length = max(len(r.ids) for r in rows)
        ids = np.full((len(rows), length), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        context = np.zeros(ids.shape, dtype=bool)
        mlm = np.zeros(ids.shape, dtype=bool)
        for r, item in enumerate(rows):
            k = len(item.ids)
            ids[r, :k], mask[r, :k], types[r, :k] = item.ids, 1, item.types
            if item.context:
                context[r, :k] = item.context
            mlm[r, item.masked] = True
        full = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {s.name: full[s.name] for s in inputs}
        case = Case(
            f"batch-{n}",
            feed,
            mlm_positions=mlm if mlm.any() else None,
            context_mask=context if context.any() else None,
        )
        out.append((case, members))
    return out
