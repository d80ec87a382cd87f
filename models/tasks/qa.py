"""qa: extractive question answering over a question and a context read as a pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bert_export.models import metrics as m
from bert_export.models import postprocess as pp
from bert_export.models.errors import BertExportError
from bert_export.models.tasks.base import Measure, PostContext, Row, Task, seq_out


class QaTask(Task):
    input_fields: ClassVar[tuple[str, ...]] = ("question", "context")
    offsets_field: ClassVar[str | None] = "context"
    gold: ClassVar[str | None] = "answers"
    min_seq: ClassVar[int] = 48  # room for a question and some context

    def check_request(self, texts: Sequence[str] | None, question: str | None, context: str | None) -> None:
        if texts:
            raise BertExportError("this is a qa bundle: pass --question Q --context C, not --text")
        if question is None or context is None:
            raise BertExportError("this is a qa bundle: pass both --question and --context")

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        """The best span over the row's context tokens (models/postprocess.py's ``qa_result``)."""
        return pp.qa_result(
            out["start_logits"], out["end_logits"], row.context, row.offsets, row.text, ctx.max_answer_tokens
        )

    def human_lines(self, texts: Sequence[str], results: Sequence[dict[str, Any]]) -> list[str]:
        r = results[0]
        return [f"answer: {r['answer']!r}  (score {r['score']:.4f}, chars {r['start']}..{r['end']})"]

    def golden_examples(
        self, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], mask_token: str | None
    ) -> list[dict[str, str]]:
        return [{"question": q, "context": c} for q, c in pairs]

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        """The answer string (SQuAD's metrics compare text)."""
        n = len(item.ids)
        res = pp.qa_result(
            np.asarray(out["start_logits"][:n], np.float32),
            np.asarray(out["end_logits"][:n], np.float32),
            np.asarray(item.context, bool),
            item.offsets,
            example.context or "",
        )
        return res["answer"]

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        return m.squad([values[k] for k in range(len(items))], [e.answers or [] for e in dataset.examples])

    def parity_measures(
        self,
        case: Any,
        ref: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        rows: Mapping[str, Any],
        pooling: str,
    ) -> list[Measure]:
        """Argmax start / end over the context tokens (all real tokens where a row has no context)."""
        valid = case.context_mask if case.context_mask is not None and case.context_mask.any(1).all() else case.keep
        spans = {}
        for name, logits in (("ref", ref), ("got", got)):
            s = np.where(valid, logits["start_logits"], -np.inf).argmax(1)
            e = np.where(valid, logits["end_logits"], -np.inf).argmax(1)
            spans[name] = (s, e)
        starts, ends = spans["ref"][0] == spans["got"][0], spans["ref"][1] == spans["got"][1]
        return [
            Measure.rate("start_agreement", starts),
            Measure.rate("end_agreement", ends),
            Measure.rate("span_exact_match", starts & ends),
        ]

    def head_flops(
        self, *, batch: int, tokens: int, hidden: int, labels: int, vocab: int, token_head: int, pooler: bool
    ) -> int:
        return token_head + 2 * tokens * hidden * 2


QA = QaTask(
    "qa",
    "ForQuestionAnswering",
    (seq_out("start_logits"), seq_out("end_logits")),
    metric="span",
    description="extractive question answering",
)
