"""Optimizer benchmark: PyTorch eager fp32 vs our bundles (fp32 fused, fp16, int8) in one run.

    .venv/bin/python benchmarks/bench_precision.py [--families bert,modernbert] [--runs 30]

Full-size ``BertConfig()`` and ``ModernBertConfig()`` with random weights (``embed`` task),
batch 1 and 8, sequence 128, 2 threads, median of ``--runs`` after warm-up. Besides our
bundles it times the plain export (no fusions) and ONNX Runtime's default dynamic INT8
(``quantize_dynamic`` per-channel on the plain export), the baseline the issue measures
against. Writes ``benchmarks/precision.json`` and the "Optimizer" section of
``benchmarks/results.md`` (only that section; other sections belong to other benchmarks).
Accuracy gates are not measured here (random weights): see the MiniLM rows written by
``--gates`` or tests/test_quantize.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.md"
START, END = "<!-- optimizer:start -->", "<!-- optimizer:end -->"
THREADS = 2
SEQ = 128
BATCHES = (1, 8)


def feeds(names: list[str], vocab: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f = {
        "input_ids": rng.integers(5, vocab, (batch, SEQ), dtype=np.int64),
        "attention_mask": np.ones((batch, SEQ), np.int64),
        "token_type_ids": np.zeros((batch, SEQ), np.int64),
    }
    return {n: f[n] for n in names}


def median_ms(fn: Any, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def time_onnx(path: Path, names: list[str], vocab: int, runs: int) -> dict[int, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return {b: median_ms(lambda f=feeds(names, vocab, b): sess.run(None, f), runs) for b in BATCHES}


def time_torch(model: Any, names: list[str], vocab: int, runs: int) -> dict[int, float]:
    import torch

    torch.set_num_threads(THREADS)
    out = {}
    for b in BATCHES:
        f = {k: torch.from_numpy(v) for k, v in feeds(names, vocab, b).items()}
        with torch.inference_mode():
            out[b] = median_ms(lambda: model(**f), runs)
    return out


def export_variants(family: str, work: Path, tiny: bool) -> dict[str, Path]:
    """Our bundles plus the two baselines (the plain export, ORT's default dynamic INT8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bert_export.exporter import export
    from bert_export.models import get_family
    from bert_export.quantize.pipeline import OptimizeOptions

    fam = get_family(family)
    variants = {
        "plain fp32 (no fusion)": OptimizeOptions(optimize=False),
        "fp32 fused": OptimizeOptions(),
        "fp16 fused": OptimizeOptions(fp16=True),
        "int8 dynamic (ours)": OptimizeOptions(int8=True),
        "int8 static QDQ (ours)": OptimizeOptions(int8=True, int8_mode="static"),
    }
    paths: dict[str, Path] = {}
    for label, opt in variants.items():
        t = time.perf_counter()
        out = work / f"{family}-{label.split()[0]}-{len(paths)}"
        result = export(
            family,
            "embed",
            random_init=True,
            out=out,
            max_seq=SEQ,
            validate=False,
            optimization=opt,
            overrides=dict(fam.tiny_config) if tiny else None,
        )
        paths[label] = out / result.manifest["graph"]["file"]
        print(f"  exported {label} in {time.perf_counter() - t:.0f} s", flush=True)
    ort_int8 = work / f"{family}-ort-default-int8.onnx"
    quantize_dynamic(str(paths["plain fp32 (no fusion)"]), str(ort_int8), per_channel=True, weight_type=QuantType.QInt8)
    paths["ORT default dynamic int8 (baseline)"] = ort_int8
    return paths


def torch_model(family: str, tiny: bool) -> tuple[Any, list[str], int]:
    """The same seeded random-init model the exports use."""
    from bert_export.exporter.loading import load_source
    from bert_export.models import get_family, get_task

    fam = get_family(family)
    source = load_source(fam, get_task("embed"), random_init=True, overrides=dict(fam.tiny_config) if tiny else None)
    return source.model.eval(), list(fam.input_names), int(source.config.vocab_size)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        START,
        "## Optimizer (quantize/): precision and fusion",
        "",
        f"Machine: {results['machine']['cpu']}, {THREADS} threads, ONNX Runtime {results['machine']['onnxruntime']}, "
        f"torch {results['machine']['torch']}. Load average before / after: {results['load_before']} / "
        f"{results['load_after']} (other engineers share these 2 cores: ratios are more reliable than "
        f"absolute times). Sequence {SEQ}, full attention mask, `embed` task, random weights; median of "
        f"{results['runs']} runs after 5 warm-up runs. Written by `benchmarks/bench_precision.py`.",
        "",
    ]
    for family, rows in results["families"].items():
        lines += [
            f"### {family}",
            "",
            "| variant | batch 1 ms | x eager | batch 8 ms | x eager |",
            "|---|---:|---:|---:|---:|",
        ]
        eager = rows["PyTorch eager fp32"]
        for label, ms in rows.items():
            lines.append(
                f"| {label} | {ms['1']:.1f} | {eager['1'] / ms['1']:.2f} | {ms['8']:.1f} | {eager['8'] / ms['8']:.2f} |"
            )
        lines.append("")
    lines += [results.get("notes", ""), END]
    return "\n".join(lines)


def write_results(results: dict[str, Any]) -> None:
    section = markdown(results)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="bert,modernbert")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--notes", default="", help="Free text appended under the tables.")
    parser.add_argument("--tiny", action="store_true", help="Smoke test on the tiny configs (writes nothing).")
    args = parser.parse_args()
    import onnxruntime
    import torch

    results: dict[str, Any] = {
        "runs": args.runs,
        "load_before": load_average(),
        "families": {},
        "machine": {"cpu": cpu_name(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "notes": args.notes,
    }
    print(f"load average before: {results['load_before']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        for family in args.families.split(","):
            # eager first, in a process that has not exported yet (timings after a dozen exports
            # in the same process came out 8x slower at batch 1)
            model, names, vocab = torch_model(family, args.tiny)
            rows = {"PyTorch eager fp32": time_torch(model, names, vocab, args.runs)}
            print(f"  eager: {rows['PyTorch eager fp32']}", flush=True)
            del model
            print(f"{family}: exporting", flush=True)
            paths = export_variants(family, Path(tmp), args.tiny)
            for label, path in paths.items():
                rows[label] = time_onnx(path, names, vocab, args.runs)
                print(f"  {label}: {rows[label]}", flush=True)
            results["families"][f"{family}-base"] = {k: {str(b): v for b, v in r.items()} for k, r in rows.items()}
    results["load_after"] = load_average()
    print(f"load average after: {results['load_after']}", flush=True)
    if args.tiny:
        print(markdown(results))
        return
    (HERE / "precision.json").write_text(json.dumps(results, indent=2) + "\n")
    write_results(results)


if __name__ == "__main__":
    main()
