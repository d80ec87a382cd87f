"""Declarative registry of model families and tasks (see ``registry``)."""

from bert_export.models.errors import BertExportError, ParityError
from bert_export.models.registry import BATCH, FAMILIES, SEQUENCE, TASKS, Family, Task, TensorSpec, get_family, get_task

__all__ = [
    "BertExportError",
    "ParityError",
    "BATCH",
    "SEQUENCE",
    "FAMILIES",
    "TASKS",
    "Family",
    "Task",
    "TensorSpec",
    "get_family",
    "get_task",
]
