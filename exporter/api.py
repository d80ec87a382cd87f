"""The Python API behind the CLI: ``export()`` a bundle and ``validate()`` one.

from bert_export.exporter import export, validate
result = export("bert", "qa", model="sentence-transformers/all-MiniLM-L6-v2", out="exports/minilm-qa")
print(result.report.summary)
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_export.bundle import layout
from bert_export.bundle import reader as bundle_io
from bert_export.bundle import reference as reference_io
from bert_export.bundle.manifest import untrained_record
from bert_export.bundle.publish import check_target, probe_lock, staged_directory
from bert_export.exporter.golden import write_golden
from bert_export.exporter.graphs import GraphJob, build_graphs, torch_reference
from bert_export.exporter.graphs import plan as graph_plan
from bert_export.exporter.loading import Source, copy_tokenizer, load_source, min_sequence
from bert_export.exporter.onnx_export import example_length, export_onnx
from bert_export.models import BertExportError, Family, Task, TensorSpec, get_family, get_task
from bert_export.models.progress import Steps
from bert_export.models.registry import TOKENIZER_KINDS
from bert_export.models.support import versions
from bert_export.quantize.pipeline import OptimizeOptions
from bert_export.quantize.targets import DEFAULT_TARGET
from bert_export.runtimes.cases import build_cases, specials_for
from bert_export.runtimes.factory import DEFAULT_RUNTIME, load_tokenizer, make_runner
from bert_export.runtimes.parity import Report, compare, reduce_rows
from bert_export.runtimes.torch_runner import TaskGraph

DEFAULT_OPSET = 18
# Default --max-seq: the model's own maximum (BERT 512; ModernBERT 8192, affordable since its local
# layers are banded, quantize/banded_attention.py, and its global ones run a memory-light attention
# kernel where the target's entry says so: ``Target.long_inputs``, quantize/target_*.py). Without those
# (--no-optimize, --dense-local-attention, a target whose gate runs unfused global attention) a
# local-window model is capped at 2048: dense attention at 8192 costs ~8 GB and a minute per sequence.
DEFAULT_MAX_SEQ_CAP = 2048


@dataclass
class ExportResult:
    bundle: Path
    manifest: dict[str, Any]
    report: Report | None  # the default graph's
    timings: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)  # every graph's, by precision


def _resolve(family: str | Family, task: str | Task) -> tuple[Family, Task]:
    try:
        fam = family if isinstance(family, Family) else get_family(family)
        tsk = task if isinstance(task, Task) else get_task(task)
    except KeyError as exc:
        raise BertExportError(str(exc.args[0])) from None
    return fam, tsk


def long_inputs_affordable(fam: Family, plan: OptimizeOptions) -> bool:
    """Whether a local-window family's default --max-seq may be its own maximum (the target's ``long_inputs``)."""
    return fam.fusions.banded_local_attention and plan.optimize and plan.banded_attention and plan.target.long_inputs


def resolve_max_seq(source: Source, max_seq: int | None, *, banded: bool = False) -> int:
    """The bundle's maximum sequence: ``max_seq`` checked, or the default (see ``DEFAULT_MAX_SEQ_CAP``)."""
    limit = source.max_positions
    if max_seq is None:
        return limit if banded else min(limit, DEFAULT_MAX_SEQ_CAP)
    if max_seq < 1:
        raise BertExportError(f"--max-seq must be >= 1, got {max_seq}")
    if max_seq > limit:
        raise BertExportError(
            f"--max-seq {max_seq} exceeds the model's max_position_embeddings ({limit}); use --max-seq {limit} or less"
        )
    return max_seq


def graph_outputs(family: Family, task: Task, source: Source) -> tuple[TensorSpec, ...]:
    """The task's outputs with the model's real feature sizes (hidden, vocab, labels) filled in."""
    sizes = {
        "hidden": source.config.hidden_size,
        "vocab": source.config.vocab_size,
        "num_labels": source.config.num_labels,
    }
    has_pooler = getattr(source.model, "pooler", None) is not None
    return tuple(
        TensorSpec(o.name, o.dtype, tuple(sizes.get(a, a) if isinstance(a, str) else a for a in o.axes))
        for o in family.outputs_for(task, has_pooler=has_pooler)
    )


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def default_out(family: Family, task: Task, precision: str = "fp32") -> Path:
    return Path("exports") / f"{family.name}-{task.name}-{precision}"


def export(
    family: str | Family,
    task: str | Task,
    *,
    model: str | None = None,
    random_init: bool = False,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    num_labels: int | None = None,
    out: str | Path | None = None,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    max_seq: int | None = None,
    validate: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    steps: Steps | None = None,
    optimization: OptimizeOptions | None = None,
    precisions: str | list[str] | tuple[str, ...] | None = None,
) -> ExportResult:
    """Load, trace to ONNX, check, compare against PyTorch and write a bundle atomically.

    ``precisions`` (``"fp32,fp16,int8"``) writes one graph per precision into the one bundle,
    each optimized and gated; the first is the default. Without it, ``optimization`` picks the
    single precision (``--fp16``/``--int8``). Raises ``BertExportError`` for bad input and
    ``ParityError`` when a graph fails its gate (in which case nothing is written).
    """
    fam, tsk = _resolve(family, task)
    steps = steps or Steps(quiet=True)
    plans = graph_plan(optimization or OptimizeOptions(), precisions)
    out_dir = Path(out) if out is not None else default_out(fam, tsk, "-".join(o.precision for o in plans))
    # Before any work: an --out that --force may not replace, an unwritable place, a running export.
    probe_lock(check_target(out_dir, force))
    if max_seq is not None and max_seq < min_sequence(tsk):
        raise BertExportError(
            f"--max-seq {max_seq} is too short for {'an' if tsk.name[0] in 'aeiou' else 'a'} {tsk.name} bundle; "
            f"use --max-seq {min_sequence(tsk)} or more"
        )
    start = time.perf_counter()
    with steps.step(f"Loading {fam.name} {tsk.name} ({'random init' if random_init else model or fam.default_id})"):
        source = load_source(
            fam,
            tsk,
            model=model,
            random_init=random_init,
            overrides=overrides,
            seed=seed,
            num_labels=num_labels,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
        )
    if source.new_head_params:
        steps.note(
            f"note: {len(source.new_head_params)} {tsk.name} head parameters are not in the checkpoint and were "
            f"randomly initialised ({', '.join(source.new_head_params[:3])}); fine-tune before serving"
        )
    seq_limit = resolve_max_seq(source, max_seq, banded=long_inputs_affordable(fam, plans[0]))
    outputs = graph_outputs(fam, tsk, source)
    graph = TaskGraph(source.model, [o.name for o in outputs])
    window = getattr(source.config, fam.local_window_attr) if fam.local_window_attr else None
    report = None
    with (
        staged_directory(out_dir, force) as tmp,
        tempfile.TemporaryDirectory(prefix=".export-", dir=tmp.parent) as work,
    ):
        with steps.step(f"Exporting to ONNX (opset {opset}, dynamic batch and sequence)"):
            exported = export_onnx(
                graph,
                fam.inputs,
                outputs,
                Path(work),
                opset=opset,
                example_seq=example_length(seq_limit, window),
                vocab_size=source.config.vocab_size,
            )
        source.config.save_pretrained(str(tmp))  # rewritten by layout.write_config once the graphs exist
        tok_files = copy_tokenizer(source, tmp)
        layout.write_tokenizer(tmp, tok_files, seq_limit)
        tokenizer = load_tokenizer(tmp) if tok_files else None  # loaded once: manifest, optimizer, parity, golden
        export_seconds = round(time.perf_counter() - start, 2)
        manifest = _manifest(fam, tsk, source, outputs, exported, seq_limit, window, tok_files, tokenizer, opset)
        pooling = manifest["pooling"]["mode"]
        cases = reference = None
        if validate:  # PyTorch runs once; every precision's gate (and fallback probe) compares against it
            # A tokenizer borrowed for --random-init (ModernBERT: exporter/loading.py) lets the bundle take text,
            # but its gate keeps random-id cases: a random head's logits are near-ties on real text, and fp16
            # flips their argmax at 8192 tokens (measured: start agreement 0.91 < 0.995 on ModernBERT-base qa).
            borrowed = source.kind == "random-init" and not fam.fallback_tokenizer
            cases = build_cases(fam, tsk, source.config, None if borrowed else tokenizer, seq_limit, seed)
            with steps.step(f"Running PyTorch on {len(cases)} parity cases"):
                reference = torch_reference(graph, fam.inputs, outputs, cases, seq_limit)
        job = GraphJob(
            fam, tsk, outputs, graph, source.config, tokenizer, seq_limit, seed, pooling, validate, cases, reference
        )
        base = {k: manifest[k] for k in ("graph", "outputs", "precision", "runtime")}
        built = build_graphs(tmp, exported.path, base, plans, job, steps)
        manifest.update(built[0].top)
        manifest["graphs"] = {g.precision: g.record for g in built}
        report = built[0].report
        layout.write_config(tmp, source.config, fam, tsk, built[0].precision, {g.precision: g.files for g in built})
        if tsk.sentence_transformers:
            layout.write_sentence_transformers(
                tmp, source.pooling, int(source.config.hidden_size), seq_limit, source.directory
            )
        if validate:
            assert cases is not None and reference is not None and report is not None
            rows = [{o.name: reduce_rows(c) for o in outputs if "vocab" in symbolic_axes(tsk, o.name)} for c in cases]
            reference_io.save_reference(tmp / reference_io.REFERENCE, cases, reference, outputs, rows)
            if tokenizer is not None:  # golden.json: real-text examples for consumers (docs/bundle.md)
                manifest["golden"] = write_golden(tmp, fam, tsk, graph, outputs, manifest, tokenizer)
            manifest["parity"] = {
                **built[0].record["parity"],
                "cases": {c.name: {"shape": list(c.shape), "seconds": c.meta.get("seconds", {})} for c in cases},
            }
        manifest["export"] = {"seconds": export_seconds, "peak_rss_mb": peak_rss_mb()}
        manifest = bundle_io.write_manifest(tmp, manifest)
    steps.note(f"bundle written to {out_dir}")
    return ExportResult(
        out_dir, manifest, report, dict(steps.timings), {g.precision: g.report for g in built if g.report}
    )


def symbolic_axes(tsk: Task, name: str) -> tuple[Any, ...]:
    """The registry's symbolic axes for an output (before sizes are filled in)."""
    return next(o.axes for o in tsk.outputs if o.name == name)


def tokenizer_kind(fam: Family, tokenizer: Any | None, *, borrowed: bool = False) -> str | None:
    """The manifest's ``tokenizer.kind``: the family's stated kind (``Family.tokenizer``), None without a tokenizer.

    Stated, not guessed from file names (a WordPiece tokenizer.json without vocab.txt is still WordPiece), and
    checked against the loaded tokenizer's own model so that a bundle never claims a kind its files are not.
    A ``--random-init`` bundle may carry a ``borrowed`` tokenizer (exporter/loading.py BORROWED_TOKENIZER: the
    weights are random, so any tokenizer whose ids fit will do): its kind is the borrowed one's.
    """
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    actual = type(backend.model).__name__.lower() if backend is not None else fam.tokenizer
    if borrowed and actual in TOKENIZER_KINDS:
        return actual
    if actual != fam.tokenizer:
        raise BertExportError(
            f"the model's tokenizer is {actual}, but {fam.name} bundles carry a {fam.tokenizer} tokenizer "
            f"(models/registry.py); export it with the family its tokenizer belongs to"
        )
    return fam.tokenizer


def _manifest(
    fam: Family,
    tsk: Task,
    source: Source,
    outputs: tuple[TensorSpec, ...],
    exported: Any,
    max_seq: int,
    window: int | None,
    tok_files: list[str],
    tokenizer: Any | None,
    opset: int,
) -> dict[str, Any]:
    cfg = source.config
    labels = None
    if tsk.has_labels:
        labels = {"num_labels": int(cfg.num_labels), "id2label": {str(k): v for k, v in cfg.id2label.items()}}
    # The tokenizer's ids first: a BERT config has no cls/sep/mask ids, so the config alone gives wrong ones.
    sp = specials_for(cfg, tokenizer)
    tokenizer_cfg = {}
    if "tokenizer_config.json" in tok_files and source.tokenizer_dir is not None:
        tokenizer_cfg = json.loads((source.tokenizer_dir / "tokenizer_config.json").read_text())
    return {
        "family": fam.name,
        "task": tsk.name,
        "precision": "fp32",
        "runtime": DEFAULT_TARGET,  # until the optimizer records the target (quantize.pipeline.update_manifest)
        "opset": opset,
        "inputs": [s.to_json() for s in fam.inputs],
        "outputs": [o.to_json() for o in outputs],
        "max_sequence_length": max_seq,
        "max_position_embeddings": source.max_positions,
        "local_attention": window,
        "labels": labels,
        "pooling": source.pooling,
        "special_tokens": {"cls": sp.cls, "sep": sp.sep, "pad": sp.pad, "mask": sp.mask},
        "tokenizer": {
            "files": tok_files,
            "kind": tokenizer_kind(fam, tokenizer, borrowed=source.kind == "random-init"),
            "do_lower_case": tokenizer_cfg.get("do_lower_case"),
            "model_max_length": tokenizer_cfg.get("model_max_length"),
        },
        "config": {
            k: fam.config_size(cfg, k)
            for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
        },
        "source": {
            "kind": source.kind,
            "ref": source.ref,
            "seed": source.seed,
            "new_head_params": source.new_head_params,
        },
        "graph": {
            "file": exported.files[0],
            "files": list(exported.files),
            "nodes": exported.num_nodes,
            "ops": exported.op_counts,
        },
        "versions": versions(),
    } | _untrained(tsk, source)


def _untrained(tsk: Task, source: Source) -> dict[str, Any]:
    """``manifest["untrained"]`` when some weights never saw training (readers warn on every use)."""
    record = untrained_record(tsk.name, random_init=source.kind == "random-init", params=source.new_head_params)
    return {"untrained": record} if record else {}


def validate(
    bundle: str | Path,
    *,
    runtime: str = DEFAULT_RUNTIME,
    threads: int | None = None,
    steps: Steps | None = None,
    precision: str | None = None,
) -> Report:
    """Verify a bundle's files, run its stored parity cases on ``runtime`` and apply its gate.

    ``precision`` picks one of a multi-precision bundle's graphs (default: the bundle's default),
    gated by that precision's tolerances against the shared PyTorch reference."""
    steps = steps or Steps(quiet=True)
    with steps.step("Verifying bundle checksums"):
        b = bundle_io.load_bundle(bundle, precision=precision)
    tsk = get_task(b.manifest["task"])
    cases, reference, rows = reference_io.load_reference(b)
    with steps.step(f"Running {len(cases)} stored cases on {runtime}"):
        with make_runner(b, runtime, threads) as runner:
            results = [runner.infer(c.feed) for c in cases]
            ran_on = runner.provider_report() if hasattr(runner, "provider_report") else {"runtime": runtime}
    report = compare(
        tsk,
        b.outputs,
        cases,
        reference,
        results,
        runtime=runtime,
        precision=b.precision,
        pooling=(b.manifest.get("pooling") or {}).get("mode", "cls"),
        stored_rows=rows,
    )
    report.providers = ran_on  # a fallback (ort-cuda that ran on CPU) shows here, not hidden behind the name
    return report
