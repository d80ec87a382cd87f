"""The task base class: registry data (head, outputs, metric) plus the hooks every layer calls.

What used to be switches on the task's name across the package is a method or a class
attribute here, overridden in one module per task (embed, mlm, seq_cls, token_cls, qa). Upper
layers own the machinery (tokenizers, runners, Triton, files); a task says what its inputs are,
how one row of raw outputs becomes the ``run --json`` object, what golden.json keeps, how the
task metric scores predictions. Hooks take duck-typed tokenizer encodings and data rows, so this
package imports only numpy and ``bert_export.models`` (the bottom layer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from bert_export.models import postprocess as pp
from bert_export.models.errors import BertExportError
from bert_export.models.tensors import BATCH, SEQUENCE, TensorSpec


def seq_out(name: str, last: str | int | None = None) -> TensorSpec:
    """A float output over (batch, sequence[, last])."""
    axes: tuple[str | int, ...] = (BATCH, SEQUENCE) if last is None else (BATCH, SEQUENCE, last)
    return TensorSpec(name, "float32", axes)


@dataclass(frozen=True)
class Row:
    """One encoded input row, as post-processing reads it back (batch axis dropped).

    ``text`` is the string the offsets point into (qa: the context); ``context`` marks the
    tokens of a pair's second sequence (qa's context tokens).
    """

    text: str
    ids: Sequence[int]
    mask: np.ndarray
    offsets: Sequence[tuple[int, int]]
    word_ids: Sequence[int | None]
    context: np.ndarray

    @classmethod
    def from_encoding(cls, enc: Any, i: int | None, text: str) -> Row:
        """Row ``i`` of a batched tokenizer encoding, or the whole of an unbatched one (``i`` None)."""
        if i is None:
            ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
            mask = np.asarray(enc.get("attention_mask") or [1] * len(ids))
            words, seq = enc.word_ids(), enc.sequence_ids()
        else:
            ids, offsets = list(enc["input_ids"][i]), enc["offset_mapping"][i]
            mask = np.asarray(enc["attention_mask"][i])
            words, seq = enc.word_ids(i), enc.sequence_ids(i)
        context = np.array([s == 1 for s in seq], dtype=bool)
        return cls(text, ids, mask, [tuple(o) for o in offsets], words, context)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity over the last axis (float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1), 1e-12)


@dataclass(frozen=True)
class Measure:
    """One parity measure of one case: ``agree`` of ``total`` (rate ``value``), or ``cosines`` per row.

    The comparator (runtimes/parity.py) adds the counts (or cosines) across cases and gates them.
    """

    key: str
    agree: int = 0
    total: int = 0
    value: float = 1.0
    cosines: np.ndarray | None = None

    @classmethod
    def rate(cls, key: str, agree: np.ndarray) -> Measure:
        """From a boolean agreement array (an empty one agrees: 1.0)."""
        return cls(key, int(agree.sum()), int(agree.size), float(agree.mean()) if agree.size else 1.0)


@dataclass(frozen=True)
class PostContext:
    """What post-processing needs besides the outputs: the bundle's labels and pooling, user options."""

    id2label: Mapping[str, str] = field(default_factory=dict)
    pooling: Mapping[str, Any] = field(default_factory=dict)
    top_k: int = pp.TOP_K
    max_answer_tokens: int = pp.MAX_ANSWER_TOKENS
    mask_id: int | None = None
    decode: Callable[[int], str] = str

    @classmethod
    def of(cls, manifest: Mapping[str, Any], tokenizer: Any = None, **options: Any) -> PostContext:
        """From a bundle's manifest and its tokenizer (mask id and single-token decoding for mlm)."""
        return cls(
            id2label=(manifest.get("labels") or {}).get("id2label") or {},
            pooling=manifest.get("pooling") or {},
            mask_id=getattr(tokenizer, "mask_token_id", None),
            decode=(lambda t: tokenizer.decode([t])) if tokenizer is not None else str,
            **options,
        )


@dataclass(frozen=True)
class Task:
    """A task: which transformers head to load, what the graph returns, and the task's hooks.

    ``head`` is looked up as ``<Family.class_prefix><head>`` in transformers, so a new family
    gets every task for free when transformers names its heads the usual way. The class
    attributes below are the facts other layers used to branch on; the methods are the hooks.
    """

    name: str
    head: str
    outputs: tuple[TensorSpec, ...]
    metric: str
    has_labels: bool = False
    description: str = ""

    # The request's text fields: one text, or (qa) a question and a context read as a pair.
    input_fields: ClassVar[tuple[str, ...]] = ("text",)
    # An optional second text per input (NLI, cross-encoders): ``[CLS] text [SEP] text_pair [SEP]``, token types
    # 0 then 1, truncated as Hugging Face's ``longest_first`` (the longer side loses tokens first). None: no pairs.
    pair_field: ClassVar[str | None] = None
    # ``run --query Q --passage P ...``: the pairs (Q, P) are scored and printed as a ranking of the passages.
    ranks_passages: ClassVar[bool] = False
    # The field whose characters the result's offsets index (None: the result has no offsets).
    offsets_field: ClassVar[str | None] = None
    # Which gold a data file can carry for this task (evaluation.data's Dataset.gold vocabulary).
    gold: ClassVar[str | None] = None
    # Inputs get mask tokens and the original tokens are the gold (mlm): no gold column needed.
    masks_inputs: ClassVar[bool] = False
    # Long texts can be embedded in windows (``run --chunk``).
    chunkable: ClassVar[bool] = False
    # Its result per text is one pooled vector: the corpus path (runtimes/corpus.py) streams those as an
    # array (.npy, a parquet list column) instead of one JSON object per text.
    vector_output: ClassVar[bool] = False
    # The bundle also gets a sentence-transformers layout (modules.json, pooling config).
    sentence_transformers: ClassVar[bool] = False
    # Two sides' predictions can be compared one by one (validate's disagreement list).
    compares_predictions: ClassVar[bool] = True
    # The shortest --max-seq a bundle may have: the parity cases need [CLS] text [SEP].
    min_seq: ClassVar[int] = 16
    # The most labels the task's head may have (None: any); the export refuses more.
    max_labels: ClassVar[int | None] = None
    # Parity measures read vocabulary-sized outputs gathered to the compared rows, not whole.
    parity_gathered: ClassVar[bool] = False

    # ---------------------------------------------------------------- inputs

    @property
    def pair_input(self) -> bool:
        """Reads a question and a context (two sequences) instead of texts."""
        return len(self.input_fields) == 2

    @property
    def triton_inputs(self) -> tuple[str, ...]:
        """The Triton text model's input names (the request fields, upper-case; an optional pair field last)."""
        return tuple(f.upper() for f in self.input_fields) + self.triton_optional_inputs

    @property
    def triton_optional_inputs(self) -> tuple[str, ...]:
        """Of ``triton_inputs``, those a request may leave out (``TEXT_PAIR``)."""
        return (self.pair_field.upper(),) if self.pair_field else ()

    def check_pairs(self, texts: Sequence[str] | None, pairs: Sequence[str] | None) -> None:
        """``run --pair`` fits this task: one second text per --text, and only where the task reads pairs."""
        if not pairs:
            return
        if self.pair_field is None:
            raise BertExportError(
                f"this bundle's task is {self.name}, which reads single texts: drop --pair "
                "(text pairs are for seq-cls and rerank bundles)"
            )
        if len(pairs) != len(texts or ()):
            raise BertExportError(
                f"{len(texts or ())} --text and {len(pairs)} --pair: give one --pair after each --text it goes with"
            )

    def config_extras(self, num_labels: int) -> dict[str, Any]:
        """Attributes the bundle's ``config.json`` gets besides the source's (a consumer's settings)."""
        return {}

    def parity_pair_groups(self, pairs: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        """Text pairs the parity cases add, one case per group, from built-in (question, passage) ``pairs``:
        as they are, in one case, where the task reads pairs; none otherwise."""
        return [list(pairs)] if self.pair_field else []

    @property
    def triton_offsets_input(self) -> str | None:
        """Which text input NAME_post reads to map token offsets back to characters."""
        return self.offsets_field.upper() if self.offsets_field else None

    @property
    def post_needs_tokenizer(self) -> bool:
        """Post-processing decodes token ids (mlm's candidates), so NAME_post ships the tokenizer."""
        return self.masks_inputs

    def vocab_outputs(self, outputs: Sequence[TensorSpec]) -> set[str]:
        """Of ``outputs``, those this task declares vocabulary-sized per token (kept only at a few rows)."""
        declared = {o.name for o in self.outputs if "vocab" in o.axes}
        return {o.name for o in outputs if o.name in declared and o.has_sequence_axis}

    def check_request(self, texts: Sequence[str] | None, question: str | None, context: str | None) -> None:
        """``run``'s arguments fit this task (texts, not a question and a context)."""
        if question is not None or context is not None:
            raise BertExportError(
                f"this bundle's task is {self.name}: pass --text TEXT (one or more), not --question/--context"
            )
        if not texts:
            raise BertExportError(f"this bundle's task is {self.name}: pass at least one --text TEXT")

    def text_problem(self, tokenizer: Any, text: str) -> str | None:
        """Why ``text`` cannot be answered (the sentence after its name), or None."""
        return None

    def check_texts(self, tokenizer: Any, texts: Sequence[str]) -> None:
        """Refuse ``run --text`` inputs the task cannot answer, naming the first."""
        for i, text in enumerate(texts):
            problem = self.text_problem(tokenizer, text)
            if problem:
                raise BertExportError(f"--text #{i + 1} {problem}")

    def truncation_hint(self) -> str:
        """Appended to the note about texts longer than the bundle."""
        return ""

    # ---------------------------------------------------------------- run --json

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        """The ``run --json`` object of one row (``out``: that row's outputs, batch axis dropped)."""
        raise NotImplementedError(self.name)

    def results(self, out: Mapping[str, np.ndarray], rows: Sequence[Row], ctx: PostContext) -> list[dict[str, Any]]:
        """One ``run --json`` object per row of a batch."""
        return [self.result({k: v[i] for k, v in out.items()}, row, ctx) for i, row in enumerate(rows)]

    def merge_results(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-text objects -> what ``run`` prints (one per text, or one in all)."""
        return results

    def human_lines(self, texts: Sequence[str], results: Sequence[dict[str, Any]]) -> list[str]:
        """``run``'s human-readable output (without --json)."""
        lines = []
        for text, r in zip(texts, results):
            lines.append(f"{text[:70]!r}")
            lines.extend(self._human_result(r))
        return lines

    def _human_result(self, result: dict[str, Any]) -> list[str]:
        return []

    # ---------------------------------------------------------------- golden.json

    def golden_examples(
        self, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], mask_token: str | None
    ) -> list[dict[str, str]]:
        """golden.json's inputs, from the built-in sentences or question/context pairs."""
        return [{"text": s} for s in sentences]

    def reduce_output(self, name: str, arr: np.ndarray, row: Row, ctx: PostContext) -> Any:
        """One batch-1 reference output in golden.json (batch axis dropped): kept whole unless reduced."""
        return arr.tolist()

    # ---------------------------------------------------------------- evaluation

    def check_gold(self, dataset: Any, id2label: Mapping[str, str]) -> None:
        """Refuse gold that can never match the bundle's labels, before any inference."""

    def prediction_agreement(
        self, dataset: Any, items: Sequence[Any], ref: Mapping[int, Any], got: Mapping[int, Any]
    ) -> dict[str, float]:
        """Agreement rates between two sides' predictions over the whole data (validate's gate adds them to the
        parity summary: keys ending in ``agreement`` are gated); empty where the parity cases say it all."""
        return {}

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        """One input's prediction as the task metric reads it (``out``: its row, batch axis dropped)."""
        raise NotImplementedError(self.name)

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        """The task metric of one side's predictions against the dataset's gold."""
        raise NotImplementedError(self.name)

    def same_prediction(self, a: Any, b: Any) -> bool:
        return bool(a == b)

    def shown_prediction(self, value: Any, id2label: Mapping[str, str]) -> Any:
        """A prediction as the validate report shows it."""
        return value.tolist() if hasattr(value, "tolist") else value

    # ---------------------------------------------------------------- parity

    def parity_measures(
        self,
        case: Any,
        ref: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        rows: Mapping[str, Any],
        pooling: str,
    ) -> list[Measure]:
        """The task's own measure of agreement between reference and candidate outputs on one parity case.

        ``case`` is a parity case (``keep``, ``mlm_positions``, ``context_mask``); ``rows`` the
        compared positions per output (``parity_gathered`` tasks get outputs gathered to them).
        """
        return []

    # ---------------------------------------------------------------- bench

    def head_flops(
        self, *, batch: int, tokens: int, hidden: int, labels: int, vocab: int, token_head: int, pooler: bool
    ) -> int:
        """Multiply-add FLOPs of the task head (runtimes/bench.py's model FLOPs)."""
        return 0
