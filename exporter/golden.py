"""golden.json: a few real-text examples with their inputs and reference outputs, for any consumer.

A bundle is loaded in C++, Rust, Java... with no Python; ``golden.json`` lets such a consumer
prove that its tokenizer and its runtime reproduce the export: each example carries the text
(or question and context), the token ids the bundle's own tokenizer produced, the PyTorch fp32
reference outputs for exactly those ids, the ``bert-export run --json`` result, and tolerances
per precision taken from the parity gates. The file is plain JSON (no safetensors reader needed)
and small: vocabulary-sized outputs keep only the top-k ids and logits at the mask positions,
hidden states only the pooled sentence embedding. docs/bundle.md specifies the format;
``check_golden`` is the reference implementation of the check (examples/cpp has a C++ one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.bundle.golden import GOLDEN, GOLDEN_VERSION, load_golden
from bert_export.models import Family, Task, TensorSpec
from bert_export.models import postprocess as post
from bert_export.models.precisions import GATES
from bert_export.models.tasks import PostContext, Row
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES
from bert_export.runtimes.torch_runner import TaskGraph, TorchRunner

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

# Result fields that are floats (scores, embedding values) are compared within this absolute
# tolerance; everything else in a result (answer text, offsets, labels, ids) must be equal.
RESULT_ABS = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 3e-2, "int8": 5e-2}

# Sentences chosen for the WordPiece paths they exercise: punctuation, accents (café, Naïve),
# numbers and a quote; [MASK] sentences for mlm are built from the same text (models/tasks/mlm.py).
SENTENCE_PICKS = (0, 7, 14, 9)
QA_PICKS = 3


def tolerances() -> dict[str, dict[str, Any]]:
    """Per precision: the parity gate's elementwise bound (None: not gated), the cosine floor per
    output, and whether results must match exactly (fp32/fp16) or are only reported (int8, whose
    gate is an aggregate agreement rate that a handful of examples cannot apply)."""
    return {
        name: {
            "max_abs": gate.max_abs,
            "cosine_min": gate.cos_min,
            "exact_results": name not in ("int8", "bf16"),
            "result_abs": RESULT_ABS[name],
        }
        for name, gate in GATES.items()
    }


def golden_inputs(task: Task, tokenizer: Any) -> list[dict[str, str]]:
    sentences = [SENTENCES[i] for i in SENTENCE_PICKS]
    return task.golden_examples(sentences, QA_PAIRS[:QA_PICKS], getattr(tokenizer, "mask_token", None))


def _encode(example: dict[str, str], tokenizer: Any, max_seq: int) -> Any:
    if "question" in example:
        return tokenizer(
            example["question"],
            example["context"],
            truncation="only_second",
            max_length=max_seq,
            return_token_type_ids=True,
            return_offsets_mapping=True,
        )
    pair = (example["text_pair"],) if "text_pair" in example else ()  # seq-cls / rerank pairs: longest_first
    return tokenizer(
        example["text"],
        *pair,
        truncation="longest_first",
        max_length=max_seq,
        return_token_type_ids=True,
        return_offsets_mapping=True,
    )


def feed_for(enc: Any, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Batch-1 feed of one encoding; token_type_ids derived from sequence ids when the tokenizer has none."""
    ids = list(enc["input_ids"])
    types = enc.get("token_type_ids") or [0] * len(ids)
    if not any(types) and hasattr(enc, "sequence_ids"):
        types = [1 if s == 1 else 0 for s in enc.sequence_ids()]
    arrays = {"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": types}
    return {s.name: np.asarray([arrays[s.name]], dtype=np.int32 if s.dtype == "int32" else np.int64) for s in inputs}


def result_for(
    task: Task, example: dict[str, str], enc: Any, out: dict[str, np.ndarray], manifest: dict[str, Any], tokenizer: Any
) -> dict[str, Any]:
    """The ``bert-export run --json`` object for one example (the task's ``results`` hook)."""
    row = Row.from_encoding(enc, None, example.get(task.offsets_field or "text", ""))
    return task.results(out, [row], PostContext.of(manifest, tokenizer))[0]


def reduce_outputs(
    task: Task,
    outputs: tuple[TensorSpec, ...],
    out: dict[str, np.ndarray],
    ids: list[int],
    manifest: dict[str, Any],
    mask_id: int | None,
) -> dict[str, Any]:
    """Reference outputs of one batch-1 example, batch axis dropped, large ones reduced (the task's hook)."""
    ctx = PostContext(pooling=manifest.get("pooling") or {}, mask_id=mask_id)
    row = Row("", ids, np.ones(len(ids), dtype=np.int64), [], [], np.zeros(len(ids), dtype=bool))
    return {
        spec.name: task.reduce_output(spec.name, np.asarray(out[spec.name], dtype=np.float32)[0], row, ctx)
        for spec in outputs
    }


def build_golden(
    family: Family,
    task: Task,
    graph: TaskGraph,
    outputs: tuple[TensorSpec, ...],
    manifest: dict[str, Any],
    tokenizer: Any,
) -> dict[str, Any]:
    """Golden examples: inputs through the bundle's tokenizer, references from PyTorch fp32."""
    max_seq = int(manifest["max_sequence_length"])
    examples = []
    with TorchRunner(graph, family.inputs, outputs, max_seq) as runner:
        for i, example in enumerate(golden_inputs(task, tokenizer)):
            enc = _encode(example, tokenizer, max_seq)
            feed = feed_for(enc, family.inputs)
            out = runner.infer(feed)
            ids = [int(t) for t in enc["input_ids"]]
            entry: dict[str, Any] = {
                "name": f"{task.name}-{i}",
                **example,
                **{name: arr[0].tolist() for name, arr in feed.items()},
                "outputs": reduce_outputs(task, outputs, out, ids, manifest, tokenizer.mask_token_id),
                "result": result_for(task, example, enc, out, manifest, tokenizer),
            }
            examples.append(entry)
    return {
        "version": GOLDEN_VERSION,
        "task": task.name,
        "family": family.name,
        "reference": "pytorch-fp32",
        "max_sequence_length": max_seq,
        "tolerances": tolerances(),
        "examples": examples,
    }


def write_golden(
    directory: Path,
    family: Family,
    task: Task,
    graph: TaskGraph,
    outputs: tuple[TensorSpec, ...],
    manifest: dict[str, Any],
    tokenizer: Any,
) -> dict[str, Any]:
    """Write ``golden.json`` into a staged bundle; returns the manifest's ``golden`` entry."""
    golden = build_golden(family, task, graph, outputs, manifest, tokenizer)
    (directory / GOLDEN).write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"file": GOLDEN, "version": GOLDEN_VERSION, "examples": len(golden["examples"])}


def compare_output(ref: Any, got: np.ndarray, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """max_abs, cosine and (mlm) top-1 agreement of one runtime output against a golden entry."""
    got = np.asarray(got, dtype=np.float64)[0]
    top1_ok = True
    if isinstance(ref, dict) and ref.get("reduce") == "pool":
        mask = feed["attention_mask"]
        r = np.asarray(ref["values"], dtype=np.float64)
        g = post.pool(got[None], mask, str(ref["mode"]), bool(ref["normalize"]))[0]
    elif isinstance(ref, dict) and ref.get("reduce") == "topk":
        r = np.asarray(ref["values"], dtype=np.float64).reshape(-1)
        g = (
            np.concatenate([got[p, ids] for p, ids in zip(ref["positions"], ref["ids"])])
            if ref["positions"]
            else np.zeros(0)
        )
        top1_ok = all(int(np.argmax(got[p])) == ids[0] for p, ids in zip(ref["positions"], ref["ids"]))
    else:
        r, g = np.asarray(ref, dtype=np.float64).reshape(-1), got.reshape(-1)
    if r.shape != g.shape:
        return {"max_abs": float("inf"), "cosine": 0.0, "top1": False}
    cos = float((r * g).sum() / max(np.linalg.norm(r) * np.linalg.norm(g), 1e-12)) if r.size else 1.0
    return {"max_abs": float(np.abs(r - g).max()) if r.size else 0.0, "cosine": cos, "top1": top1_ok}


def check_golden(bundle: str | Path | Bundle, runner: Any, precision: str) -> list[str]:
    """Run every golden example through ``runner`` (a Runner); the problems found (empty: pass)."""
    golden = load_golden(bundle)
    tol = golden["tolerances"][precision]
    problems = []
    for ex in golden["examples"]:
        feed = {
            s.name: np.asarray([ex[s.name]], dtype=np.int32 if s.dtype == "int32" else np.int64) for s in runner.inputs
        }
        out = runner.infer(feed)
        for name, ref in ex["outputs"].items():
            d = compare_output(ref, out[name], feed)
            if tol["max_abs"] is not None and not d["max_abs"] <= tol["max_abs"]:
                problems.append(f"{ex['name']}: {name} max abs diff {d['max_abs']:.3g} > {tol['max_abs']}")
            if not d["cosine"] >= tol["cosine_min"]:
                problems.append(f"{ex['name']}: {name} cosine {d['cosine']:.6f} < {tol['cosine_min']}")
            if tol["exact_results"] and not d["top1"]:
                problems.append(f"{ex['name']}: {name} top-1 differs")
    return problems
