"""Compatibility name for ``bert_export.models.metrics`` (task metrics against gold labels).

The metrics moved down to ``models/`` so that each task class (models/tasks) scores itself;
this module keeps ``from bert_export.evaluation import metrics`` working for existing callers.
"""

from bert_export.models.metrics import (
    accuracy,
    entity_f1,
    entity_spans,
    exact_match,
    macro_f1,
    normalize_answer,
    spearman,
    squad,
    token_f1,
    topk_accuracy,
)

__all__ = [
    "accuracy",
    "entity_f1",
    "entity_spans",
    "exact_match",
    "macro_f1",
    "normalize_answer",
    "spearman",
    "squad",
    "token_f1",
    "topk_accuracy",
]
