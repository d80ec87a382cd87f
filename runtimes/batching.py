"""Length-aware batching: which texts go through the graph together.

A batch is padded to its longest text, so a batch cut in input order pays for its longest
member on every row (a corpus of 14..191-token sentences batched 32 at a time in input order
runs about half its tokens as padding). ``plan`` sorts by token length and cuts batches by a
budget of *padded* tokens (rows x longest), not a fixed count: short texts travel in wide
batches, long ones in narrow batches, and every call does about the same work, so memory is
bounded by the budget whatever the lengths. Callers pad each batch to its own longest and put
the results back in the caller's order (``restore``).

``input_order`` keeps the old behaviour (fixed-size batches in the order given) for
reproducibility studies: int8 graphs quantize activations per batch, so their results depend
(within the precision's gate) on which texts share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np

from bert_export.models import BertExportError

T = TypeVar("T")

Batching = Literal["length", "input-order"]
BATCHING: tuple[str, ...] = ("length", "input-order")
# 32 texts of 128 tokens: the batch the old fixed-count loop used, at a typical sentence length.
DEFAULT_TOKEN_BUDGET = 4096
# Rows per call at most, however short the texts: wider batches gain nothing on a CPU and
# only grow per-call buffers; a runner's own limit (a TensorRT profile) lowers it further.
DEFAULT_MAX_BATCH = 128
DEFAULT_BATCH = 32  # input-order batches (the old loop's CHUNK)


def plan(
    lengths: Sequence[int], budget: int = DEFAULT_TOKEN_BUDGET, max_batch: int = DEFAULT_MAX_BATCH
) -> list[list[int]]:
    """Indices of each batch: sorted by length (longest first), rows x longest <= ``budget``.

    Longest first, so a batch that does not fit in memory fails on the first call rather than
    after the short texts. Ties keep input order (the plan is deterministic). A text longer than
    the budget travels alone. Every index appears exactly once.
    """
    _check(budget, "token budget")
    _check(max_batch, "max batch")
    order = sorted(range(len(lengths)), key=lambda k: (-int(lengths[k]), k))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for k in order:
        n = max(int(lengths[k]), 1)
        if current and ((len(current) + 1) * max(longest, n) > budget or len(current) >= max_batch):
            batches.append(current)
            current, longest = [], 0
        current.append(k)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def input_order(count: int, batch: int = DEFAULT_BATCH) -> list[list[int]]:
    """The old batching: ``batch`` texts at a time, in the order given."""
    _check(batch, "batch size")
    return [list(range(lo, min(lo + batch, count))) for lo in range(0, count, batch)]


def batches_for(
    lengths: Sequence[int],
    batching: str = "length",
    *,
    budget: int = DEFAULT_TOKEN_BUDGET,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch: int = DEFAULT_BATCH,
) -> list[list[int]]:
    """``plan`` (``batching="length"``) or ``input_order`` (``"input-order"``, ``batch`` rows, capped by ``max_batch``)."""
    if batching == "length":
        return plan(lengths, budget, max_batch)
    if batching == "input-order":
        return input_order(len(lengths), min(batch, max_batch))
    raise BertExportError(f"batching {batching!r}: choose from {', '.join(BATCHING)}")


def restore(values: Sequence[T], order: Sequence[int]) -> list[T]:
    """``values[j]`` belongs to input ``order[j]``: the values in input order.

    ``order`` is the concatenation of a plan's batches (each input exactly once).
    """
    if len(values) != len(order) or sorted(order) != list(range(len(order))):
        raise ValueError(f"restore: {len(values)} values for an order of {len(order)} that is not a permutation")
    out: list[T | None] = [None] * len(order)
    for value, k in zip(values, order):
        out[k] = value
    return out  # type: ignore[return-value]  # every slot was filled: order is a permutation


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> np.ndarray:
    """int64 [len(rows), longest]: each row left-aligned, the rest ``value`` (a batch padded to its own longest)."""
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Tokens the graph runs for ``batches`` (rows x longest, summed): the cost a plan minimises."""
    return sum(len(b) * max(int(lengths[k]) for k in b) for b in batches if b)


def _check(value: int, what: str) -> None:
    if int(value) < 1:
        raise BertExportError(f"the {what} must be >= 1, got {value}")
