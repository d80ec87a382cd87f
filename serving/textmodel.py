"""Text in, the task's JSON out, for a batch of independent requests (what ``serve`` runs per Triton batch).

The same tokenizer, runner and task hooks (models/tasks, models/postprocess.py) as ``bert-export run``, so each
item's JSON equals ``run --json`` for that one input (floats to the rounding of postprocess.DECIMALS;
a padded batch may move the last digit). Items are validated one by one: a bad item gets its own
error and never fails its neighbours in the batch.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.markup import escape

from bert_export.bundle.manifest import untrained_warning
from bert_export.models import BertExportError, get_task
from bert_export.models import postprocess as pp
from bert_export.models.progress import console
from bert_export.models.tasks import PostContext, Row
from bert_export.runtimes.base import Feed, Outputs, Runner
from bert_export.runtimes.predict import _feed, _qa_windows, _texts
from bert_export.runtimes.qa_windows import MAX_QUESTION_LEN

# One more inference call costs about as much as this many padded tokens (ORT on CPU, MiniLM: ~1.5 ms a call vs
# ~0.2 ms a token, measured for issue 25); length_buckets trades padding against calls with it.
CALL_COST_TOKENS = 16
MAX_TEXT_CHARS = 20_000  # per input; longer ones are refused (run truncates tokens, but a server bounds its work)


@dataclass
class Reply:
    """One item's answer: ``json`` (run --json's line) or ``error`` (one line), and a truncation ``note``."""

    json: str = ""
    note: str = ""
    error: str = ""


def _concurrent(runner: Runner) -> bool:
    from bert_export.runtimes.factory import RUNTIMES

    entry = RUNTIMES.get(runner.name)
    return entry is not None and entry.concurrent_infer


class TakingTurns(Runner):
    """The runner, with ``infer`` called by one thread at a time (the others wait): for runtimes whose ``infer``
    is not thread-safe (an OpenVINO infer request, a TensorRT execution context)."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner.inputs, runner.outputs, runner.max_seq)
        self.runner, self.name, self.active = runner, runner.name, True
        self._lock = threading.Lock()

    def _activate(self) -> None:
        self.runner.activate()

    def infer(self, feed: Feed) -> Outputs:
        with self._lock:
            return self.runner.infer(feed)

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:  # pragma: no cover - infer() delegates whole
        return self.runner.infer(feed)


class TextModel:
    """Batched prediction from text for one bundle (tokenizer, runner and post-processing)."""

    def __init__(
        self,
        bundle: Any,
        runner: Runner,
        tokenizer: Any,
        *,
        max_text_chars: int = MAX_TEXT_CHARS,
        top_k: int = pp.TOP_K,
    ) -> None:
        self.bundle, self.runner, self.tokenizer = bundle, runner, tokenizer
        self.task = get_task(bundle.manifest["task"])
        self.max_text_chars, self.top_k = max_text_chars, top_k
        # An untrained head (or a --random-init bundle) answers nonsense: every reply's NOTE says so.
        self.warning = untrained_warning(bundle.manifest) or ""

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.task.triton_inputs

    def replicas(self, count: int) -> list[TextModel]:
        """``count`` models for ``count`` PyTriton instances (threads of this process): this one and copies.

        Why instances: with one, tritonserver holds the next batch until this one's replies are back, so
        the tokenizer, the post-processing and the IPC hops leave the runtime idle; on 2 cores one instance
        used about one core at 32 clients (benchmarks/serving_infinity.md). Each copy gets its own tokenizer:
        a Rust ``tokenizers`` object sets its padding and truncation per call and refuses a second thread
        ("Already borrowed"). They share the runner; a runtime whose ``infer`` is not thread-safe
        (``Runtime.concurrent_infer``) is called by one replica at a time."""
        shared = count == 1 or _concurrent(self.runner) or isinstance(self.runner, TakingTurns)  # (a relaunch)
        runner = self.runner if shared else TakingTurns(self.runner)
        models = [self]
        for _ in range(count - 1):
            twin = copy.copy(self)
            twin.tokenizer = copy.deepcopy(self.tokenizer)
            models.append(twin)
        for m in models:
            m.runner = runner
        return models

    def decode(self, name: str, value: Any) -> str:
        """A request field as text: UTF-8 bytes (strict) or str, within the length limit."""
        if isinstance(value, (bytes, np.bytes_)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BertExportError(f"{name} is not valid UTF-8 (byte {exc.start}); send UTF-8 text") from None
        if not isinstance(value, str):
            raise BertExportError(f"{name} must be a string, got {type(value).__name__}")
        if len(value) > self.max_text_chars:
            raise BertExportError(
                f"{name} has {len(value)} characters; this server accepts at most {self.max_text_chars} "
                "(split the text, or start serve with a larger --max-text-chars)"
            )
        return value

    def predict(self, items: Sequence[dict[str, Any]]) -> list[Reply]:
        """One Reply per item (each a dict of the input names to bytes or str)."""
        replies = [Reply() for _ in items]
        valid: list[tuple[int, dict[str, str]]] = []
        for i, item in enumerate(items):
            try:
                optional = self.task.triton_optional_inputs
                valid.append(
                    (i, {n: self.decode(n, item[n]) for n in self.input_names if n not in optional or n in item})
                )
            except BertExportError as exc:
                replies[i].error = str(exc)
            except KeyError as exc:
                replies[i].error = f"missing input {exc.args[0]}"
        if valid:
            run = self._qa if self.task.pair_input else self._texts
            for (i, _), reply in zip(valid, run([fields for _, fields in valid])):
                replies[i] = reply
        if self.warning:
            for reply in replies:
                if not reply.error:
                    reply.note = "\n".join(n for n in (self.warning, reply.note) if n)
        return replies

    def _texts(self, items: list[dict[str, str]]) -> list[Reply]:
        """Single texts and text pairs (an optional ``TEXT_PAIR``) are run as two groups, replies in item order."""
        pair = self.task.pair_field.upper() if self.task.pair_field else None
        paired = [k for k, it in enumerate(items) if pair and pair in it]
        single = [k for k in range(len(items)) if k not in paired]
        replies = [Reply() for _ in items]
        if self.task.ranks_passages:  # a reranker scores pairs only
            for k in single:
                replies[k].error = f"missing input {pair} (a rerank request is a query TEXT and a passage {pair})"
            single = []
        for members, second in ((single, None), (paired, pair)):
            if members:
                for k, reply in zip(members, self._group([items[k] for k in members], second)):
                    replies[k] = reply
        return replies

    def _group(self, items: list[dict[str, str]], pair: str | None) -> list[Reply]:
        b, tok = self.bundle, self.tokenizer
        replies = [Reply() for _ in items]
        texts = [it["TEXT"] for it in items]
        pairs = [it[pair] for it in items] if pair else None
        lengths = [len(ids) for ids in tok(texts, *([pairs] if pairs else []), truncation=False)["input_ids"]]
        ok = []
        for k, (text, n) in enumerate(zip(texts, lengths)):
            problem = self.task.text_problem(tok, text)
            if problem:
                replies[k].error = f"TEXT {problem}"
                continue
            if n > b.max_seq:
                what = "text pair" if pairs else "text"
                how = " (longest_first: the longer text lost tokens first)" if pairs else ""
                replies[k].note = f"note: the {what} is {n} tokens and was truncated to this bundle's {b.max_seq}{how}"
            ok.append(k)
        fed = [min(lengths[k], b.max_seq) for k in ok]
        for bucket in length_buckets(fed):  # the per-item note above replaces run's batch-level warning
            members = [ok[j] for j in bucket]
            results = _texts(
                b,
                tok,
                self.runner,
                self.task,
                [texts[k] for k in members],
                self.top_k,
                pairs=[pairs[k] for k in members] if pairs else None,
                lengths=[fed[j] for j in bucket],
            )
            for k, result in zip(members, results):
                replies[k].json = _dumps(result)
        return replies

    def _qa(self, items: list[dict[str, str]]) -> list[Reply]:
        b, tok = self.bundle, self.tokenizer
        replies = [Reply() for _ in items]
        ok = []
        for k, it in enumerate(items):
            try:
                full = len(tok([it["QUESTION"]], [it["CONTEXT"]], truncation=False)["input_ids"][0])
                tok([it["QUESTION"]], [it["CONTEXT"]], truncation="only_second", max_length=b.max_seq)
            except Exception as exc:  # the question alone does not fit: tokenizers raise a generic exception
                replies[k].error = (
                    f"the question does not fit in this bundle's {b.max_seq} tokens "
                    f"({str(exc).splitlines()[0][:120]}); shorten the question"
                )
                continue
            if full > b.max_seq and it["CONTEXT"]:  # as run does: overlapping windows, best span across them
                replies[k].json = _dumps(
                    _qa_windows(
                        b,
                        tok,
                        self.runner,
                        it["QUESTION"],
                        it["CONTEXT"],
                        pp.MAX_ANSWER_TOKENS,
                        None,
                        MAX_QUESTION_LEN,
                        full,
                    )
                )
                replies[
                    k
                ].note = f"note: question + context are {full} tokens; read in overlapping windows of {b.max_seq}"
                continue
            ok.append(k)
        if not ok:
            return replies
        questions, contexts = [items[k]["QUESTION"] for k in ok], [items[k]["CONTEXT"] for k in ok]
        enc = tok(
            questions,
            contexts,
            truncation="only_second",
            max_length=b.max_seq,
            padding=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        out = self.runner.infer(_feed(b, enc))
        rows = [Row.from_encoding(enc, j, contexts[j]) for j in range(len(ok))]
        for k, result in zip(ok, self.task.results(out, rows, PostContext.of(b.manifest, tok))):
            replies[k].json = _dumps(result)
        return replies


def length_buckets(lengths: Sequence[int], call_cost: int = CALL_COST_TOKENS) -> list[list[int]]:
    """Indices of ``lengths`` cut into runs of similar length, each run one padded inference call.

    A Triton batch mixes whatever requests arrived together: padded to its longest as one call, a
    5-token request pays for the 43-token one beside it (on a CPU the cost is close to linear in padded
    tokens). Sorted by length, the cut minimising ``sum(rows x longest) + call_cost x calls`` is found
    exactly by dynamic programming over the sorted order (n <= max batch, so O(n^2) is nothing).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0] + [0] * n  # best[j]: cheapest cost of the first j sorted items
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        best[j], cut[j] = min((best[i] + (j - i) * longest + call_cost, i) for i in range(j))
    runs: list[list[int]] = []
    j = n
    while j > 0:
        runs.append(order[cut[j] : j])
        j = cut[j]
    return runs[::-1]


def warn_at_start(model: TextModel) -> None:
    """``serve``'s start-up line for an untrained bundle (each reply's NOTE repeats it)."""
    if model.warning:
        console.print(f"[bold yellow]{escape(model.warning)}[/bold yellow]", soft_wrap=True)


def _dumps(result: dict[str, Any]) -> str:
    import json

    return json.dumps(result, ensure_ascii=False)
