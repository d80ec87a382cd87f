"""Tasks as classes: one module per task, each a ``Task`` with the hooks other layers call.

Adding a task: a module here with a ``Task`` subclass and its instance, and one entry in
``models.registry.TASKS``. Nothing outside this package branches on a task's name
(tests/test_registries.py counts).
"""

from bert_export.models.tasks.base import PostContext, Row, Task
from bert_export.models.tasks.embed import EMBED
from bert_export.models.tasks.mlm import MLM
from bert_export.models.tasks.qa import QA
from bert_export.models.tasks.rerank import RERANK
from bert_export.models.tasks.seq_cls import SEQ_CLS
from bert_export.models.tasks.token_cls import TOKEN_CLS

__all__ = ["EMBED", "MLM", "QA", "RERANK", "SEQ_CLS", "TOKEN_CLS", "PostContext", "Row", "Task"]
