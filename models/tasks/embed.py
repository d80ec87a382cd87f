"""embed: sentence / token embeddings from the base model, pooled as the bundle's manifest says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bert_export.models import metrics as m
from bert_export.models import postprocess as pp
from bert_export.models.tasks.base import Measure, PostContext, Row, Task, cosine, seq_out
from bert_export.models.tensors import BATCH, TensorSpec


class EmbedTask(Task):
    vector_output: ClassVar[bool] = True
    gold: ClassVar[str | None] = "score"  # a pairs file: sentence1, sentence2, score
    chunkable: ClassVar[bool] = True
    sentence_transformers: ClassVar[bool] = True
    compares_predictions: ClassVar[bool] = False  # vectors: parity measures them, not a disagreement list

    def truncation_hint(self) -> str:
        return "; embed with --chunk to cover them whole"

    def results(self, out: Mapping[str, np.ndarray], rows: Sequence[Row], ctx: PostContext) -> list[dict[str, Any]]:
        """Pooled over the batch at once (real tokens only), one ``{"embeddings": [vector]}`` per row."""
        mask = np.stack([np.asarray(r.mask) for r in rows])
        vectors = pp.embed_result(out["last_hidden_state"], mask, ctx.pooling)["embeddings"]
        return [{"embeddings": [v]} for v in vectors]

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        return self.results({k: v[None] for k, v in out.items()}, [row], ctx)[0]

    def merge_results(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One object in all: ``{"embeddings": [...]}``, a vector per text in order."""
        return [{"embeddings": [v for r in results for v in r["embeddings"]]}]

    def human_lines(self, texts: Sequence[str], results: Sequence[dict[str, Any]]) -> list[str]:
        lines = []
        for text, vec in zip(texts, results[0]["embeddings"]):
            head = ", ".join(f"{v:+.4f}" for v in vec[:4])
            lines.append(f"{len(vec)}-d [{head}, ...]  {text[:60]!r}")
        return lines

    def reduce_output(self, name: str, arr: np.ndarray, row: Row, ctx: PostContext) -> Any:
        """Hidden states are kept as the pooled sentence embedding only."""
        if name != "last_hidden_state":
            return arr.tolist()
        mode, normalize = str(ctx.pooling.get("mode", "cls")), bool(ctx.pooling.get("normalize", False))
        vec = pp.pool(arr[None], np.ones((1, arr.shape[0])), mode, normalize)[0]
        return {
            "reduce": "pool",
            "mode": ctx.pooling.get("mode", "cls"),
            "normalize": normalize,
            "values": [float(np.float32(v)) for v in vec],
        }

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        hidden = np.asarray(out["last_hidden_state"], dtype=np.float32)[None]
        mode, normalize = str(ctx.pooling.get("mode", "cls")), bool(ctx.pooling.get("normalize", False))
        return pp.pool(hidden, np.asarray(keep)[None], mode, normalize)[0]

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        """Spearman of cosine similarity with the gold score; items come in (sentence1, sentence2) order."""
        ex = dataset.examples
        vec = {(it.example, it.part): values[k] for k, it in enumerate(items)}
        sims = [_cos(vec[(i, 0)], vec[(i, 1)]) for i in range(len(ex))]
        return {"spearman": m.spearman(sims, [e.score for e in ex])}

    def parity_measures(
        self,
        case: Any,
        ref: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        rows: Mapping[str, Any],
        pooling: str,
    ) -> list[Measure]:
        """Cosine of the pooled sentence embeddings (the pooling users get from ``run``)."""
        r = pp.pool(ref["last_hidden_state"], case.keep, pooling)
        g = pp.pool(got["last_hidden_state"], case.keep, pooling)
        return [Measure("cosine", cosines=cosine(r, g))]

    def head_flops(
        self, *, batch: int, tokens: int, hidden: int, labels: int, vocab: int, token_head: int, pooler: bool
    ) -> int:
        return 2 * batch * hidden * hidden if pooler else 0


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-12))


EMBED = EmbedTask(
    "embed",
    "Model",
    (seq_out("last_hidden_state", "hidden"), TensorSpec("pooler_output", "float32", (BATCH, "hidden"))),
    metric="cosine",
    description="sentence / token embeddings (base model)",
)
