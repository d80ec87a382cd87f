"""One bundle, one graph per precision: optimize each from the same export, gate each against PyTorch.

    export_onnx (fp32, once) -> for each precision: copy -> optimize_export -> parity gate
    -> onnx/model{,_fp16,_quantized}.onnx + manifest["graphs"][precision]
       (+ the target's artefact, e.g. openvino/, when its registry entry has one)

PyTorch runs once per bundle: the parity cases' reference outputs are computed before the loop
and shared by every precision's gate and by the int8/fp16 accuracy fallback's probe. The first
precision is the bundle's default (``manifest["precision"]``, ``manifest["graph"]``, what
``run``/``validate``/``bench`` and transformers.js use unless told otherwise).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.bundle.layout import parse_precisions, place_converted, place_graph
from bert_export.models import BertExportError, Family, ParityError, Task, TensorSpec
from bert_export.models.progress import Steps
from bert_export.quantize.pipeline import OptimizeOptions, OptimizeResult, optimize_export, update_manifest
from bert_export.quantize.pipeline import describe as describe_optimization
from bert_export.quantize.target import ConvertedGraph
from bert_export.quantize.targets import DEFAULT_TARGET
from bert_export.runtimes.base import Runner
from bert_export.runtimes.cases import Case
from bert_export.runtimes.ort_runner import OrtRunner
from bert_export.runtimes.parity import Report, compare
from bert_export.runtimes.torch_runner import TaskGraph, TorchRunner

PARITY_DEFAULT = "parity.json"
# Keys of a graph record that also form manifest["graph"] (the default graph, for simple consumers).
GRAPH_KEYS = ("file", "files", "nodes", "ops", "exported_ops", "required_operators", "ort_format")


def parity_file(precision: str, default: str) -> str:
    """The default graph's report keeps its schema-1 name; the others are ``parity_<precision>.json``."""
    return PARITY_DEFAULT if precision == default else f"parity_{precision}.json"


def plan(options: OptimizeOptions, precisions: str | list[str] | tuple[str, ...] | None) -> list[OptimizeOptions]:
    """The optimizer's options per graph, default first.

    Without ``precisions`` this is the single graph ``--fp16``/``--int8`` asked for. With it, the
    precision flags (``--fp16-io``, ``--int8-mode``, ``--calib-samples``, ``--no-fallback``) apply
    to the graphs of their precision, and ``--fp16``/``--int8`` are refused (the list says it all).
    """
    if precisions is None:
        options.check()
        return [options]
    wanted = parse_precisions(precisions)
    if options.fp16 or options.int8:
        raise BertExportError(
            f"--precisions replaces --fp16/--int8; list every precision, the default first "
            f"(e.g. --precisions {'int8' if options.int8 else 'fp16'},fp32)"
        )
    if options.fp16_io and "fp16" not in wanted:
        raise BertExportError("--fp16-io applies to an fp16 graph; add fp16 to --precisions")
    if options.int8_mode is not None and "int8" not in wanted:
        raise BertExportError("--int8-mode applies to an int8 graph; add int8 to --precisions")
    out = []
    for p in wanted:
        o = dataclasses.replace(
            options,
            fp16=p == "fp16",
            fp16_io=options.fp16_io and p == "fp16",
            int8=p == "int8",
            int8_mode=options.int8_mode if p == "int8" else None,
        )
        o.check()
        out.append(o)
    return out


@dataclass
class BuiltGraph:
    precision: str
    files: list[str]
    record: dict[str, Any]  # manifest["graphs"][precision]
    top: dict[
        str, Any
    ]  # what the default graph puts at the manifest's top level (precision, runtime, optimization, outputs)
    report: Report | None


def infer_cases(
    runner: Any, inputs: tuple[TensorSpec, ...], cases: list[Case], label: str
) -> list[dict[str, np.ndarray]]:
    """Every case through an active runner, its wall time kept in ``case.meta["seconds"][label]``.

    The manifest's parity record carries these times, so the batch-1 case at the maximum length
    says how long PyTorch and each graph took on it (a bounded cost the user can see).
    """
    results = []
    for case in cases:
        start = time.perf_counter()
        results.append(runner.infer({s.name: case.feed[s.name] for s in inputs}))
        case.meta.setdefault("seconds", {})[label] = float(
            f"{time.perf_counter() - start:.3g}"
        )  # 3 significant digits: never 0
    return results


def torch_reference(
    graph: TaskGraph, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], cases: list[Case], max_seq: int
) -> list[dict[str, np.ndarray]]:
    """PyTorch's outputs on every parity case (computed once per bundle)."""
    with TorchRunner(graph, inputs, outputs, max_seq) as runner:
        return infer_cases(runner, inputs, cases, "pytorch")


def gate_runner(
    graph: Path,
    optimized: OptimizeResult | None,
    options: OptimizeOptions,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    max_seq: int,
    converted: ConvertedGraph | None = None,
) -> Runner:
    """What a graph's parity gate runs: the target's artefact (OpenVINO's IR) on the runner its entry names,
    with the precision hint it ships with; the converted graph (an ``.ort``) on its format's runner; else the
    ONNX graph in ONNX Runtime on the CPU."""
    fmt = options.target.graph_format
    if fmt is not None and converted is not None:
        return fmt.gate(converted.path, inputs, outputs, max_seq, options.precision)
    artefact = options.target.artefact
    record = optimized.artefact if optimized is not None else None
    if artefact is not None and record is not None and record.path is not None:
        return artefact.gate(record.path, inputs, outputs, max_seq, record.hint)
    return OrtRunner(graph, inputs, outputs, max_seq)


@dataclass
class GraphJob:
    """What every precision's build shares (the export, the model, the parity cases and reference)."""

    family: Family
    task: Task
    outputs: tuple[TensorSpec, ...]
    graph: TaskGraph
    config: Any
    tokenizer: Any | None
    max_seq: int
    seed: int
    pooling: str
    validate: bool
    cases: list[Case] | None
    reference: list[dict[str, np.ndarray]] | None


def build_graphs(
    bundle_dir: Path, exported: Path, base: dict[str, Any], plans: list[OptimizeOptions], job: GraphJob, steps: Steps
) -> list[BuiltGraph]:
    """Optimize, gate and place one graph per plan into ``bundle_dir/onnx/``; raises ParityError on a failed gate.

    ``base`` holds the exported graph's manifest entries (``graph``, ``outputs``, ``precision``,
    ``runtime``) that ``update_manifest`` rewrites per precision.
    """
    default = plans[0].precision
    built = []
    for options in plans:
        p = options.precision
        with tempfile.TemporaryDirectory(prefix=f".work-{p}-", dir=bundle_dir.parent) as work_dir:
            work = _copy_graph(exported, Path(work_dir))
            scratch = copy.deepcopy(base)
            optimized = None
            if options.optimize or p != "fp32":  # quantize/: fusions for the target, fp16/int8, fallback
                with steps.step(describe_optimization(options) + (f" ({p} graph)" if len(plans) > 1 else "")):
                    artefact = options.target.artefact
                    artefact_dir = (
                        bundle_dir / (artefact.directory if len(plans) == 1 else f"{artefact.directory}-{p}")
                        if artefact is not None
                        else None
                    )
                    optimized = optimize_export(
                        work,
                        job.family,
                        job.task,
                        job.outputs,
                        job.graph,
                        job.config,
                        job.tokenizer,
                        job.max_seq,
                        job.seed,
                        job.pooling,
                        options,
                        job.validate,
                        artefact_dir=artefact_dir,
                        cases=job.cases,
                        reference=job.reference,
                    )
                update_manifest(scratch, optimized)
            converted = None
            fmt = options.target.graph_format
            if fmt is not None:  # the gated graph becomes another file format (ONNX Runtime's .ort)
                with steps.step(f"Converting the {p} graph to {fmt.title}"):
                    converted = fmt.convert(work, _mkdir(Path(work_dir) / "converted"))
            report = None
            if job.validate:
                assert job.cases is not None and job.reference is not None
                with steps.step(f"Checking parity of the {p} graph against PyTorch on {len(job.cases)} cases"):
                    graph_outputs = tuple(
                        TensorSpec(o["name"], o["dtype"], tuple(o["shape"])) for o in scratch["outputs"]
                    )
                    runner = gate_runner(
                        work, optimized, options, job.family.inputs, graph_outputs, job.max_seq, converted
                    )
                    with runner:
                        results = infer_cases(runner, job.family.inputs, job.cases, f"{runner.name} {p}")
                    report = compare(
                        job.task,
                        job.outputs,
                        job.cases,
                        job.reference,
                        results,
                        runtime=runner.name,
                        precision=p,
                        pooling=job.pooling,
                    )
                if not steps.quiet:
                    steps.console.print(report.table())
                if not report.passed:
                    error = ParityError(
                        f"parity gate failed for the {p} graph ({'; '.join(report.failures[:3])}); nothing was written"
                    )
                    error.report = report
                    raise error
            if converted is not None and fmt is not None:
                files, names = place_converted(converted.path, converted.extras, bundle_dir, p, fmt.suffix)
                scratch["graph"].update(converted.to_manifest(names))
            else:
                files = place_graph(work, bundle_dir, p)
        built.append(_record(p, files, scratch, report, parity_file(p, default), bundle_dir))
    return built


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _copy_graph(exported: Path, work: Path) -> Path:
    """The exported graph and its external data (same names, so its references still resolve)."""
    for src in exported.parent.iterdir():
        if src == exported or src.name.startswith(exported.name):
            shutil.copyfile(src, work / src.name)
    return work / exported.name


def _record(
    precision: str, files: list[str], scratch: dict[str, Any], report: Report | None, report_file: str, bundle_dir: Path
) -> BuiltGraph:
    graph = {**scratch["graph"], "file": files[0], "files": files}
    record: dict[str, Any] = {**{k: graph[k] for k in GRAPH_KEYS if k in graph}, "outputs": scratch["outputs"]}
    extra = {k: v for k, v in scratch.items() if k not in ("graph", "outputs", "precision", "runtime")}
    record.update(extra)  # optimization (and whatever update_manifest adds)
    if report is not None:
        (bundle_dir / report_file).write_text(report.dumps() + "\n", encoding="utf-8")
        record["parity"] = {
            "passed": True,
            "runtime": report.runtime,
            "summary": report.summary,
            "gate": report.to_json()["gate"],
            "report": report_file,
        }
    top = {
        "precision": precision,
        "runtime": scratch.get("runtime", DEFAULT_TARGET),
        "outputs": scratch["outputs"],
        **extra,
        "graph": {k: graph[k] for k in GRAPH_KEYS if k in graph},
    }
    return BuiltGraph(precision, files, record, top, report)
