"""mlm: fill-mask. Inputs carry mask tokens; the original tokens are the gold (no gold column)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bert_export.models import metrics as m
from bert_export.models import postprocess as pp
from bert_export.models.errors import BertExportError
from bert_export.models.tasks.base import Measure, PostContext, Row, Task, seq_out

GOLDEN_TOP_K = 5  # golden.json keeps the top-k ids and logits at each mask position
RANKED = 5  # candidates the metric ranks (top-1 / top-5 accuracy)
# golden.json's mlm inputs: sentences of the built-in text with a mask token in them.
MLM_TEMPLATES = (
    "Paris is the {mask} and most populous city of France.",
    "Water boils at 100 degrees {mask} at sea level.",
    "Can you recommend a good {mask} near the Brandenburg Gate in Berlin?",
)


class MlmTask(Task):
    offsets_field: ClassVar[str | None] = "text"
    gold: ClassVar[str | None] = "masked"
    masks_inputs: ClassVar[bool] = True
    parity_gathered: ClassVar[bool] = True

    def text_problem(self, tokenizer: Any, text: str) -> str | None:
        token = getattr(tokenizer, "mask_token", None)
        if token is None or token not in text:
            return f'has no {token} to fill; write e.g. "Paris is the {token} of France."'
        return None

    def check_texts(self, tokenizer: Any, texts: Sequence[str]) -> None:
        if getattr(tokenizer, "mask_token_id", None) is None or getattr(tokenizer, "mask_token", None) is None:
            raise BertExportError("this mlm bundle's tokenizer has no mask token, so there is nothing to fill")
        super().check_texts(tokenizer, texts)

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        """Top-k candidates at each mask token of the row (real tokens only)."""
        ids = np.asarray(row.ids)
        positions = np.flatnonzero((ids == ctx.mask_id) & (np.asarray(row.mask) > 0)).tolist()
        return pp.mlm_result(out["logits"], positions, row.offsets, ctx.decode, ctx.top_k)

    def _human_result(self, result: dict[str, Any]) -> list[str]:
        lines = []
        for f in result["fills"]:
            cands = ", ".join(f"{c['token']} ({c['score']:.3f})" for c in f["candidates"])
            lines.append(f"  chars {f['start']}..{f['end']}: {cands}")
        return lines

    def golden_examples(
        self, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], mask_token: str | None
    ) -> list[dict[str, str]]:
        return [{"text": t.format(mask=mask_token)} for t in MLM_TEMPLATES]

    def reduce_output(self, name: str, arr: np.ndarray, row: Row, ctx: PostContext) -> Any:
        """Vocabulary-sized logits are kept as the top-k ids and logits at the mask positions only."""
        if name != "logits":
            return arr.tolist()
        positions = [i for i, t in enumerate(row.ids) if t == ctx.mask_id]
        top = [np.argsort(-arr[p], kind="stable")[:GOLDEN_TOP_K] for p in positions]
        return {
            "reduce": "topk",
            "positions": positions,
            "ids": [[int(i) for i in t] for t in top],
            "values": [[float(arr[p, i]) for i in t] for p, t in zip(positions, top)],
        }

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        """The ranked candidate ids at the item's masked positions: [masked, RANKED]."""
        if not len(item.masked):
            return np.zeros((0, RANKED), np.int64)
        logits = np.asarray(out["logits"][item.masked], dtype=np.float32)
        return np.argsort(-logits, axis=-1, kind="stable")[:, :RANKED]

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        gold = np.array([g for it in items for g in it.gold_ids], dtype=np.int64)
        ranked = np.concatenate([values[k] for k in range(len(items))]) if items else np.zeros((0, RANKED), np.int64)
        return m.topk_accuracy(gold, ranked)

    def same_prediction(self, a: Any, b: Any) -> bool:
        return bool(np.array_equal(a[:, 0], b[:, 0]))

    def shown_prediction(self, value: Any, id2label: Mapping[str, str]) -> Any:
        return value[:, 0].tolist()

    def parity_measures(
        self,
        case: Any,
        ref: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        rows: Mapping[str, Any],
        pooling: str,
    ) -> list[Measure]:
        """Top-1 and top-5 agreement at the masked rows (logits already gathered to the stored rows)."""
        r, g = ref["logits"], got["logits"]  # [n, vocab]
        sel = case.mlm_positions[rows["logits"]] if case.mlm_positions is not None else np.ones(len(r), bool)
        r, g = r[sel], g[sel]
        top_r, top_g = np.argsort(-r, -1)[:, :5], np.argsort(-g, -1)[:, :5]
        overlap = np.array([len(set(a) & set(b)) / 5 for a, b in zip(top_r, top_g)])
        return [
            Measure.rate("top1_agreement", top_r[:, 0] == top_g[:, 0]),
            Measure(
                "top5_agreement",
                int(round(overlap.sum() * 5)),
                overlap.size * 5,
                float(overlap.mean()) if overlap.size else 1.0,
            ),
        ]

    def head_flops(
        self, *, batch: int, tokens: int, hidden: int, labels: int, vocab: int, token_head: int, pooler: bool
    ) -> int:
        return 2 * tokens * hidden * (hidden + vocab)


MLM = MlmTask("mlm", "ForMaskedLM", (seq_out("logits", "vocab"),), metric="top5", description="fill-mask")
