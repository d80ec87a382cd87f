"""Compatibility name for ``bert_export.models.postprocess`` (the JSON contract of ``run --json``).

The rules moved down to ``models/`` so that the task classes (models/tasks) can apply them;
this module keeps ``from bert_export.runtimes import postprocess`` working for existing callers.
"""

from bert_export.models.postprocess import (
    DECIMALS,
    MAX_ANSWER_TOKENS,
    TOP_K,
    Offsets,
    best_span,
    embed_result,
    mlm_result,
    pool,
    qa_result,
    seq_cls_result,
    softmax,
    token_cls_result,
)

__all__ = [
    "DECIMALS",
    "MAX_ANSWER_TOKENS",
    "TOP_K",
    "Offsets",
    "best_span",
    "embed_result",
    "mlm_result",
    "pool",
    "qa_result",
    "seq_cls_result",
    "softmax",
    "token_cls_result",
]
