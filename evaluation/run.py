"""Validation on the user's checkpoint and data, and bundle-vs-bundle comparison.

    from bert_export.evaluation import validate_data, compare_bundles
    report = validate_data("exports/sst2-int8", model="ckpt/", data="dev.csv", max_metric_drop=0.5)
    report.passed, report.metrics

Both run the same inputs (length-bucketed padded batches of the user's data, through the
bundle's tokenizer) through a reference runner (PyTorch from the checkpoint, as export loads
it; or bundle A) and a candidate runner (the bundle), compare them with the parity harness
(``runtimes.parity.compare``: real-token positions only, the precision's gate) and, when the
data has gold labels, score both sides with the task metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.bundle.reader import Bundle, load_bundle
from bert_export.evaluation import DEFAULT_MAX_METRIC_DROP
from bert_export.evaluation.batches import bucket, encode
from bert_export.evaluation.data import Dataset, Example, read_data
from bert_export.evaluation.ops import check_ops, load_expected
from bert_export.evaluation.predictions import Collector
from bert_export.evaluation.report import EvalReport
from bert_export.evaluation.scoring import score
from bert_export.models import BertExportError, get_family, get_task
from bert_export.models.progress import Steps
from bert_export.runtimes.base import Runner
from bert_export.runtimes.cases import Case
from bert_export.runtimes.factory import bundle_tokenizer, make_runner
from bert_export.runtimes.parity import compare, reduce_rows
from bert_export.runtimes.texts import QA_PAIRS, SENTENCES

DEFAULT_BATCH = 16


@dataclass
class Inputs:
    """The data, encoded and bucketed for one bundle."""

    dataset: Dataset
    items: list[Any]
    batches: list[tuple[Case, list[int]]]
    disagreements: dict[str, Any] = field(default_factory=dict)


def builtin_dataset(task: str) -> Dataset:
    """Without ``--data``: the built-in English texts (no gold but mlm's own masked tokens: parity only)."""
    tsk = get_task(task)
    if tsk.pair_input:
        return Dataset(Path("built-in"), [Example(question=q, context=c) for q, c in QA_PAIRS])
    groups = tsk.parity_pair_groups(QA_PAIRS) if tsk.ranks_passages else []
    if groups:  # a reranker reads pairs only: each built-in question against every passage
        return Dataset(Path("built-in"), [Example(text=a, text_pair=b) for g in groups for a, b in g])
    return Dataset(Path("built-in"), [Example(text=t) for t in SENTENCES], tsk.gold if tsk.masks_inputs else None)


def prepare(
    b: Bundle,
    tokenizer: Any,
    data: str | Path | None,
    limit: int | None,
    batch: int,
    seed: int = 0,
    batching: str = "length",
) -> Inputs:
    """Read, check gold against the bundle's labels, tokenize and bucket (``batching``: batches.bucket)."""
    task = b.manifest["task"]
    dataset = read_data(data, task, limit) if data is not None else builtin_dataset(task)
    id2label = (b.manifest.get("labels") or {}).get("id2label") or {}
    get_task(task).check_gold(dataset, id2label)  # bad labels fail before any inference
    items = encode(dataset, task, tokenizer, b.max_seq, seed)
    pad = int((b.manifest.get("special_tokens") or {}).get("pad") or 0)
    return Inputs(dataset, items, bucket(items, b.inputs, batch, pad, batching))


def _compact(case: Case, outputs: dict[str, np.ndarray], vocab_outputs: set[str]) -> tuple[Case, dict[str, np.ndarray]]:
    """Vocab-sized outputs (mlm) are kept only at masked rows (+ a few real ones): [1, n, vocab].

    A batch of 16 x 128 x 30k logits is 250 MB; keeping every batch for the comparison would
    not fit a CI runner. The compacted case has those rows as its only "real" positions, so the
    parity harness compares exactly them.
    """
    if not vocab_outputs:
        return case, outputs
    rows = reduce_rows(case)
    feed = {k: v[rows][None] for k, v in case.feed.items()}
    feed["attention_mask"] = np.ones_like(feed["input_ids"])
    small = Case(
        case.name, feed, mlm_positions=case.mlm_positions[rows][None] if case.mlm_positions is not None else None
    )
    return small, {k: (v[rows][None] if k in vocab_outputs else v) for k, v in outputs.items()}


def run_both(
    b: Bundle,
    inputs: Inputs,
    reference: Runner,
    candidate: Runner,
    *,
    runtime: str,
    precision: str,
    progress: Callable[[], None] | None = None,
) -> tuple[Any, list[Any]]:
    """Both runners on every batch; parity report and metric rows."""
    task = b.manifest["task"]
    id2label = (b.manifest.get("labels") or {}).get("id2label") or {}
    pooling = b.manifest.get("pooling") or {}
    ref_c, got_c = (Collector(task, inputs.dataset, inputs.items, id2label, pooling) for _ in range(2))
    vocab = get_task(task).vocab_outputs(b.outputs)
    cases, refs, gots, shapes = [], [], [], []
    with reference, candidate:
        for case, members in inputs.batches:
            r = reference.infer(case.feed)
            g = candidate.infer(case.feed)
            ref_c.add(case, members, r)
            got_c.add(case, members, g)
            small, r = _compact(case, r, vocab)
            _, g = _compact(case, g, vocab)
            cases.append(small)
            refs.append(r)
            gots.append(g)
            shapes.append(list(case.shape))
            if progress:
                progress()
        ran_on = candidate.provider_report() if hasattr(candidate, "provider_report") else {"runtime": runtime}
    report = compare(
        get_task(task),
        b.outputs,
        cases,
        refs,
        gots,
        runtime=runtime,
        precision=precision,
        pooling=str(pooling.get("mode", "cls")),
    )
    report.providers = ran_on
    _agreement(report, get_task(task).prediction_agreement(inputs.dataset, inputs.items, ref_c.values, got_c.values))
    for entry, shape in zip(report.cases, shapes):
        entry["shape"] = shape  # the batch as it ran, not its compacted rows
    inputs.disagreements = disagreements(task, inputs, ref_c, got_c, id2label)
    return report, score(task, inputs.dataset, inputs.items, id2label, ref_c, got_c)


def _agreement(report: Any, rates: dict[str, float]) -> None:
    """Whole-data agreement rates (a reranker's order over each query's passages) join the parity summary, and
    those named ``...agreement`` are held to the precision's agreement gate like the per-case ones."""
    for key, value in rates.items():
        report.summary[f"data_{key}"] = value
        if key.endswith("agreement") and value < report.gate.agreement:
            report.failures.append(f"data {key} {value:.4f} < {report.gate.agreement}")


SHOWN_DISAGREEMENTS = 20


def disagreements(
    task: str, inputs: Inputs, ref: Collector, got: Collector, id2label: dict[str, str]
) -> dict[str, Any]:
    """Which examples the two sides predict differently (the first few shown): what a user inspects first."""
    tsk = get_task(task)
    if not tsk.compares_predictions:
        return {}
    rows = []
    for k, item in enumerate(inputs.items):
        a, b = ref.values[k], got.values[k]
        if not tsk.same_prediction(a, b):
            ex = inputs.dataset.examples[item.example]
            rows.append(
                {
                    "example": item.example,
                    "text": ex.text if ex.text is not None else ex.question,
                    "reference": tsk.shown_prediction(a, id2label),
                    "candidate": tsk.shown_prediction(b, id2label),
                }
            )
    return {"count": len(rows), "of": len(inputs.items), "first": rows[:SHOWN_DISAGREEMENTS]}


def _data_info(inputs: Inputs) -> dict[str, Any]:
    lengths = [len(it.ids) for it in inputs.items]
    return {
        "path": str(inputs.dataset.path),
        "examples": len(inputs.dataset.examples),
        "inputs": len(inputs.items),
        "batches": len(inputs.batches),
        "gold": inputs.dataset.gold,
        "columns": inputs.dataset.columns,
        "tokens_max": max(lengths, default=0),
        "tokens_mean": round(float(np.mean(lengths)), 1) if lengths else 0,
        "truncated": sum(it.truncated for it in inputs.items),
        "disagreements": inputs.disagreements,
    }


def _notes(inputs: Inputs, max_seq: int) -> list[str]:
    n = sum(it.truncated for it in inputs.items)
    return (
        [f"note: {n} input(s) exceed the bundle's {max_seq} tokens and were truncated (both sides saw the same tokens)"]
        if n
        else []
    )


def load_reference_model(b: Bundle, model: str | Path, allow_pickle: bool = False, seed: int | None = None) -> Any:
    """The user's checkpoint as a TorchRunner, by export's rules (safetensors; pickle only if allowed; no remote code)."""
    from bert_export.exporter.api import graph_outputs
    from bert_export.exporter.loading import load_source
    from bert_export.runtimes.torch_runner import TaskGraph, TorchRunner

    fam, tsk = get_family(b.manifest["family"]), get_task(b.manifest["task"])
    if seed is None:
        seed = int((b.manifest.get("source") or {}).get("seed") or 0)
    source = load_source(
        fam,
        tsk,
        model=str(model),
        seed=seed,
        allow_pickle=allow_pickle,
        trust_remote_code=False,
        offer_random_init=False,
    )
    _check_matches(b, source.config, model)
    outputs = graph_outputs(fam, tsk, source)
    names = [o.name for o in b.outputs]
    if sorted(o.name for o in outputs) != sorted(names):
        raise BertExportError(
            f"--model {model} gives outputs {[o.name for o in outputs]}, the bundle has {names}; "
            "pass the checkpoint the bundle was exported from"
        )
    outputs = tuple(sorted(outputs, key=lambda o: names.index(o.name)))
    runner = TorchRunner(TaskGraph(source.model, names), b.inputs, outputs, b.max_seq)
    return runner, source.new_head_params


def _check_matches(b: Bundle, config: Any, model: str | Path) -> None:
    want = b.manifest.get("config") or {}
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if want.get(key) is not None and getattr(config, key, None) != want[key]:
            raise BertExportError(
                f"--model {model} has {key}={getattr(config, key, None)}, the bundle {want[key]}; "
                "pass the checkpoint the bundle was exported from"
            )
    labels = b.manifest.get("labels") or {}
    if labels.get("num_labels") is not None and int(config.num_labels) != int(labels["num_labels"]):
        raise BertExportError(
            f"--model {model} has {config.num_labels} labels, the bundle {labels['num_labels']}; "
            "pass the checkpoint the bundle was exported from"
        )


def _expect(b: Bundle, expect_ops: str | Path | None) -> Any:
    if expect_ops is None:
        return None
    expected, where = load_expected(expect_ops)
    return check_ops(b.manifest, expected, where)


def validate_data(
    bundle: str | Path,
    *,
    model: str | Path,
    data: str | Path | None = None,
    limit: int | None = None,
    batch: int = DEFAULT_BATCH,
    runtime: str = "ort",
    threads: int | None = None,
    max_metric_drop: float | None = DEFAULT_MAX_METRIC_DROP,
    expect_ops: str | Path | None = None,
    allow_pickle: bool = False,
    seed: int = 0,
    steps: Steps | None = None,
    precision: str | None = None,
    batching: str = "length",
) -> EvalReport:
    """The bundle against PyTorch from the user's checkpoint, on the user's data (``precision``: which graph;
    ``batching``: "length" or "input-order", evaluation/batches.py)."""
    steps = steps or Steps(quiet=True)
    with steps.step("Verifying bundle checksums"):
        b = load_bundle(bundle, precision=precision)
    ops = _expect(b, expect_ops)
    inputs = prepare(b, bundle_tokenizer(b), data, limit, batch, seed, batching)
    with steps.step(f"Loading the PyTorch reference from {model}"):
        torch_runner, new_head = load_reference_model(b, model, allow_pickle)
    notes = _notes(inputs, b.max_seq)
    if new_head:
        notes.append(
            f"note: {model} has no trained {b.manifest['task']} head ({len(new_head)} parameters seeded at random); "
            "metrics describe an untrained head"
        )
    with steps.step(f"Running {len(inputs.items)} inputs in {len(inputs.batches)} batches on PyTorch and {runtime}"):
        parity, metrics = run_both(
            b, inputs, torch_runner, make_runner(b, runtime, threads), runtime=runtime, precision=b.precision
        )
    return EvalReport(
        parity,
        f"PyTorch fp32 ({model})",
        f"{b.path} ({b.precision}, {runtime})",
        metrics,
        max_metric_drop if metrics else None,
        ops,
        _data_info(inputs),
        notes,
    )


def compare_bundles(
    a: str | Path,
    b: str | Path,
    *,
    data: str | Path | None = None,
    limit: int | None = None,
    batch: int = DEFAULT_BATCH,
    runtime: str = "ort",
    threads: int | None = None,
    max_metric_drop: float | None = DEFAULT_MAX_METRIC_DROP,
    expect_ops: str | Path | None = None,
    seed: int = 0,
    steps: Steps | None = None,
    batching: str = "length",
) -> EvalReport:
    """Bundle ``b`` against bundle ``a`` (the reference) on the same inputs, without PyTorch.

    The gate is ``b``'s precision's (int8 against an fp32 ``a`` gets the int8 tolerances).
    """
    steps = steps or Steps(quiet=True)
    with steps.step("Verifying bundle checksums"):
        ba, bb = load_bundle(a), load_bundle(b)
    _check_comparable(ba, bb)
    ops = _expect(bb, expect_ops)
    inputs = prepare(bb, bundle_tokenizer(bb), data, limit, batch, seed, batching)
    with steps.step(f"Running {len(inputs.items)} inputs in {len(inputs.batches)} batches on both bundles ({runtime})"):
        parity, metrics = run_both(
            bb,
            inputs,
            make_runner(ba, runtime, threads),
            make_runner(bb, runtime, threads),
            runtime=runtime,
            precision=bb.precision,
        )
    return EvalReport(
        parity,
        f"{ba.path} ({ba.precision}, {runtime})",
        f"{bb.path} ({bb.precision}, {runtime})",
        metrics,
        max_metric_drop if metrics else None,
        ops,
        _data_info(inputs),
        _notes(inputs, bb.max_seq),
    )


def _check_comparable(a: Bundle, b: Bundle) -> None:
    for key in ("family", "task"):
        if a.manifest[key] != b.manifest[key]:
            raise BertExportError(
                f"cannot compare a {a.manifest[key]} bundle with a {b.manifest[key]} one ({key} differs)"
            )
    if [s.name for s in a.inputs] != [s.name for s in b.inputs] or sorted(o.name for o in a.outputs) != sorted(
        o.name for o in b.outputs
    ):
        raise BertExportError(
            f"{a.path} and {b.path} have different inputs or outputs; compare bundles of the same model and task"
        )
    tok_a = {
        f: a.manifest["files"].get(f, {}).get("sha256") for f in (a.manifest.get("tokenizer") or {}).get("files") or []
    }
    tok_b = {
        f: b.manifest["files"].get(f, {}).get("sha256") for f in (b.manifest.get("tokenizer") or {}).get("files") or []
    }
    if tok_a != tok_b:
        raise BertExportError(
            f"{a.path} and {b.path} have different tokenizer files, so the same text gives different ids; "
            "compare bundles exported from the same model"
        )
    if a.max_seq < b.max_seq:
        raise BertExportError(f"{a.path} accepts {a.max_seq} tokens, {b.path} {b.max_seq}; pass the longer bundle as A")


def validate_stored(
    bundle: str | Path,
    *,
    runtime: str = "ort",
    threads: int | None = None,
    expect_ops: str | Path | None = None,
    steps: Steps | None = None,
    precision: str | None = None,
) -> EvalReport:
    """The bundle's stored parity cases (``api.validate``), wrapped for the report formats and the ops gate."""
    from bert_export.exporter.api import validate

    steps = steps or Steps(quiet=True)
    ops = (
        _expect(load_bundle(bundle, verify=False, precision=precision), expect_ops) if expect_ops is not None else None
    )
    parity = validate(bundle, runtime=runtime, threads=threads, steps=steps, precision=precision)
    return EvalReport(
        parity,
        "stored PyTorch reference (reference.safetensors)",
        f"{bundle} ({parity.precision}, {runtime})",
        ops=ops,
        data={"path": "stored cases", "examples": len(parity.cases), "batches": len(parity.cases)},
    )
