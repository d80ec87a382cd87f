"""rerank: a cross-encoder scoring (query, passage) pairs, ``run --query Q --passage P ...`` ranks the passages.

The model is a ``ForSequenceClassification`` head over ``[CLS] query [SEP] passage [SEP]`` (token types 0/1),
as the ms-marco MiniLM cross-encoders are: one logit (the score is its sigmoid, sentence-transformers'
CrossEncoder default) or two (the score is the softmax probability of label 1, "relevant"). Pairs longer than
the bundle are truncated as Hugging Face's ``longest_first`` does, which is what CrossEncoder does too.

What users of a reranker act on is the order, so besides score cosine the parity gate and ``validate --data``
measure ranking agreement over each query's passages: top-1 agreement and pairwise order agreement (Kendall's
tau-a rescaled to 0..1); ``validate --data`` with (query, passage, label) rows scores MRR@10 and NDCG@10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bert_export.models import metrics as m
from bert_export.models import postprocess as pp
from bert_export.models.errors import BertExportError
from bert_export.models.tasks.base import Measure, PostContext, Row, Task, cosine
from bert_export.models.tensors import BATCH, TensorSpec

CUTOFF = 10  # MRR@10 and NDCG@10: MS MARCO's and BEIR's cut


def relevance(logits: Any) -> np.ndarray:
    """Scores of [..., num_labels] logits: sigmoid of one logit, softmax probability of label 1 of two."""
    x = np.asarray(logits, dtype=np.float64)
    if x.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-x[..., 0]))
    return pp.softmax(x)[..., 1]


class RerankTask(Task):
    gold: ClassVar[str | None] = "relevance"
    pair_field: ClassVar[str | None] = "text_pair"
    ranks_passages: ClassVar[bool] = True
    max_labels: ClassVar[int | None] = 2
    compares_predictions: ClassVar[bool] = False  # scores: ranking agreement measures them (prediction_agreement)

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        return pp.rerank_result(out["logits"])

    def config_extras(self, num_labels: int) -> dict[str, Any]:
        """sentence-transformers' CrossEncoder reads its activation from ``config.json`` (v4+): the sigmoid that
        gives a single-logit head the score ``run`` prints; two logits stay logits there (its default)."""
        activation = "Sigmoid" if num_labels == 1 else "Identity"
        module = "activation" if num_labels == 1 else "linear"
        return {"sentence_transformers": {"activation_fn": f"torch.nn.modules.{module}.{activation}"}}

    def human_lines(self, texts: Sequence[str], results: Sequence[dict[str, Any]]) -> list[str]:
        return [f"{r['score']:.4f}  {text[:70]!r}" for text, r in zip(texts, results)]

    def golden_examples(
        self, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], mask_token: str | None
    ) -> list[dict[str, str]]:
        """One query against every built-in passage (the relevant one first)."""
        return [{"text": pairs[0][0], "text_pair": c} for _, c in pairs]

    def parity_pair_groups(self, pairs: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        """Each built-in question against every built-in passage: one case per query, as a reranker is called."""
        return [[(q, c) for _, c in pairs] for q, _ in pairs]

    def check_gold(self, dataset: Any, id2label: Mapping[str, str]) -> None:
        if dataset.gold == self.gold:
            grades(dataset)

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        return float(relevance(np.asarray(out["logits"], dtype=np.float32)))

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        """MRR@10 and NDCG@10 over each query's passages; accuracy of score >= 0.5 against label > 0."""
        gold = grades(dataset)
        scores = [values[k] for k in range(len(items))]
        groups = [([scores[i] for i in g], [gold[i] for i in g]) for g in query_groups(dataset)]
        hits = [(s >= 0.5) == (g > 0) for s, g in zip(scores, gold)]
        return {
            f"mrr@{CUTOFF}": m.mrr_at_k(groups, CUTOFF),
            f"ndcg@{CUTOFF}": m.ndcg_at_k(groups, CUTOFF),
            "accuracy": float(np.mean(hits)),
        }

    def prediction_agreement(
        self, dataset: Any, items: Sequence[Any], ref: Mapping[int, Any], got: Mapping[int, Any]
    ) -> dict[str, float]:
        """Top-1 and pairwise order agreement over each query's passages (queries with one passage rank nothing)."""
        top1, concordant, compared = [], 0, 0
        for g in query_groups(dataset):
            if len(g) < 2:
                continue
            r, c = [ref[i] for i in g], [got[i] for i in g]
            top1.append(int(np.argmax(r)) == int(np.argmax(c)))
            a, n = m.order_agreement(r, c)
            concordant, compared = concordant + a, compared + n
        out = {}
        if top1:
            out["top1_agreement"] = float(np.mean(top1))
        if compared:
            out["order_agreement"] = concordant / compared
            out["kendall_tau"] = 2 * concordant / compared - 1
        return out

    def parity_measures(
        self,
        case: Any,
        ref: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        rows: Mapping[str, Any],
        pooling: str,
    ) -> list[Measure]:
        """A case is one query's passages: the score vectors' cosine, the top passage, the pairwise order."""
        r, g = relevance(ref["logits"]), relevance(got["logits"])
        concordant, compared = m.order_agreement(r.tolist(), g.tolist())
        return [
            Measure("cosine", cosines=cosine(r[None], g[None])),
            Measure.rate("top1_agreement", np.array([int(np.argmax(r)) == int(np.argmax(g))])),
            Measure("order_agreement", concordant, compared, concordant / compared if compared else 1.0),
        ]

    def head_flops(
        self, *, batch: int, tokens: int, hidden: int, labels: int, vocab: int, token_head: int, pooler: bool
    ) -> int:
        return 2 * batch * hidden * (hidden + labels)


def grades(dataset: Any) -> list[float]:
    """Relevance gold as numbers >= 0 (0/1, or graded as TREC's qrels)."""
    out = []
    for i, ex in enumerate(dataset.examples):
        try:
            value = float(ex.label)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value) or value < 0:
            raise BertExportError(
                f"--data {dataset.path} row {i + 1}: label {ex.label!r} is not a relevance grade; "
                "give a number >= 0 (1 relevant, 0 not; or graded 0..3)"
            )
        out.append(value)
    return out


def query_groups(dataset: Any) -> list[list[int]]:
    """Example indices grouped by query text, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(dataset.examples):
        groups.setdefault(ex.text or "", []).append(i)
    return list(groups.values())


RERANK = RerankTask(
    "rerank",
    "ForSequenceClassification",
    (TensorSpec("logits", "float32", (BATCH, "num_labels")),),
    metric="ranking",
    has_labels=True,
    description="cross-encoder reranking of (query, passage) pairs",
)
