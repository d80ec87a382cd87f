"""Where the INT8 time goes: per-op profiles of our int8 graphs and OpenVINO + NNCF's, by category.

    flock /tmp/bert-export-heavy.lock .venv/bin/python benchmarks/profile_int8.py [--work /tmp/bench-cpu-int8]

Uses the full-size models ``bench_cpu_int8.py`` prepared in ``--work`` (run that first, or its
``--step prepare``). Each variant is profiled in its own process at batch 1 (or ``--batch``), sequence
128, 2 threads: ONNX Runtime with ``SessionOptions.enable_profiling`` (kernel times per node), OpenVINO
with ``PERF_COUNT`` (``get_profiling_info`` per executed node). Times are summed per category and
averaged over ``--runs`` inferences after warm-up; "overhead" is the wall time per inference
minus the kernels' sum (framework scheduling, allocation, thread hand-offs). Writes
``benchmarks/int8_profile.md`` (+ ``.json``; ``int8_profile_b<N>`` with ``--batch N``), with ``_xeon_amx``
on a CPU with AMX.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_cpu_int8 import THREADS, chain_gop, cpu_suffix, family_info, feeds, gop, resolve_hint  # noqa: E402

PROFILED = {
    "ours int8 dynamic (ORT)": ("ort", "int8-dynamic/onnx/model_quantized.onnx", None),
    "ours int8 dynamic + per-tensor pass (ORT)": ("ort", "int8-dynamic-pt/onnx/model_quantized.onnx", None),
    "ours int8 static (ORT)": ("ort", "int8-static/onnx/model_quantized.onnx", None),
    "ORT quantize_dynamic defaults": ("ort", "ort-qdq-default.onnx", None),
    "OpenVINO + NNCF defaults": ("ov", "nncf-default/model.xml", None),
    "ours OpenVINO int8 (the bundle's hint)": ("ov", "ov-int8/openvino/model.xml", "bundle"),
}

ROW_QUANT_SUFFIXES = ("_abs", "_amax", "_amax_c", "_inv", "_xs", "_xq", "_s", "_y", "_smooth")
ORT_CATEGORY = {
    "MatMulInteger": "int8 GEMM",
    "MatMulIntegerToFloat": "int8 GEMM",
    "QLinearMatMul": "int8 GEMM",
    "DynamicQuantizeMatMul": "int8 GEMM",
    "QAttention": "int8 GEMM",
    "QGemm": "int8 GEMM",
    "MatMulNBits": "int8 GEMM",
    "MatMul": "fp32 GEMM",
    "Gemm": "fp32 GEMM",
    "FusedMatMul": "fp32 GEMM",
    "FusedGemm": "fp32 GEMM",
    "Attention": "attention (fp32: QK^T, softmax, PV)",
    "MultiHeadAttention": "attention (fp32: QK^T, softmax, PV)",
    "Softmax": "attention (fp32: QK^T, softmax, PV)",
    "QuantizeLinear": "quantize / dequantize",
    "DequantizeLinear": "quantize / dequantize",
    "DynamicQuantizeLinear": "quantize / dequantize",
    "LayerNormalization": "LayerNorm",
    "SkipLayerNormalization": "LayerNorm",
    "EmbedLayerNormalization": "LayerNorm",
    "SimplifiedLayerNormalization": "LayerNorm",
    "SkipSimplifiedLayerNormalization": "LayerNorm",
    "Gelu": "GELU",
    "BiasGelu": "GELU",
    "FastGelu": "GELU",
    "Erf": "GELU",
    "Cast": "casts / reshapes",
    "Reshape": "casts / reshapes",
    "Transpose": "casts / reshapes",
    "Split": "casts / reshapes",
}


def ort_category(op: str, node: str) -> str:
    if node.endswith(ROW_QUANT_SUFFIXES):
        return "quantize / dequantize"
    return ORT_CATEGORY.get(op, "other elementwise")


def ov_category(node_type: str, exec_type: str) -> str:
    e = exec_type.lower()
    # FullyConnectedQuantizedLegacy / FullyConnectedCompressed are OpenVINO's int8 FCs too
    if node_type.startswith("FullyConnected") or node_type in ("MatMul", "Convolution", "GemmIE"):
        if any(t in e for t in ("i8", "u8")):
            return "int8 GEMM"
        return "fp32 GEMM" if node_type.startswith("FullyConnected") else "attention (fp32: QK^T, softmax, PV)"
    if node_type in ("ScaledDotProductAttention", "Softmax", "SoftMax"):
        return "attention (fp32: QK^T, softmax, PV)"
    if node_type in ("FakeQuantize", "Quantize", "Dequantize"):
        return "quantize / dequantize"
    if node_type in ("MVN", "RMS", "LayerNorm"):
        return "LayerNorm"
    if node_type in ("Gelu",):
        return "GELU"
    if node_type in ("Reorder", "Convert", "Reshape", "Transpose", "Concat", "Split"):
        return "casts / reshapes"
    if node_type in ("Subgraph",):
        return "fused elementwise (Subgraph)"
    return "other elementwise"


def _ov_categories(ops: dict[str, float]) -> dict[str, float]:
    """Category sums from OpenVINO's per-op times, keyed ``"NodeType [exec_type]"``."""
    cats: dict[str, float] = defaultdict(float)
    for key, ms in ops.items():
        node_type, _, exec_type = key.partition(" [")
        cats[ov_category(node_type, exec_type.rstrip("]"))] += ms
    return dict(cats)


def profile_ort(path: Path, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(5):
            sess.run(None, feed)
        walls = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            walls.append(time.perf_counter() - t)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs_ev = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    n = len(runs_ev)
    cats: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            cats[ort_category(op, e["name"][: -len("_kernel_time")])] += e["dur"] / 1000 / n
            ops[op] += e["dur"] / 1000 / n
    run_ms = statistics.median(e["dur"] for e in runs_ev) / 1000
    return {
        "wall_ms": round(statistics.median(walls) * 1000, 2),
        "run_ms": round(run_ms, 2),
        "categories": dict(cats),
        "ops": dict(ops),
    }


def profile_ov(path: Path, feed: dict[str, np.ndarray], runs: int, hint: str | None) -> dict[str, Any]:
    import openvino as ov

    cfg = {"PERF_COUNT": "YES", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(THREADS)}
    hint = resolve_hint(hint, path)
    if hint:
        cfg["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(str(path), "CPU", cfg)
    req = compiled.create_infer_request()
    for _ in range(5):
        req.infer(feed)
    ops: dict[str, float] = defaultdict(float)
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        req.infer(feed)
        walls.append(time.perf_counter() - t)
        for p in req.get_profiling_info():
            ms = p.real_time.total_seconds() * 1000 / runs
            ops[f"{p.node_type} [{p.exec_type}]"] += ms
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    actual = value.to_string() if hasattr(value, "to_string") else str(value)
    wall = statistics.median(walls) * 1000
    return {
        "wall_ms": round(wall, 2),
        "run_ms": round(wall, 2),
        "categories": _ov_categories(ops),
        "ops": dict(ops),
        "precision": actual,
    }


def one(label: str, family: str, work: Path, runs: int, tiny: bool = False, batch: int = 1) -> dict[str, Any]:
    kind, rel, hint = PROFILED[label]
    names, vocab, _ = family_info(family, tiny)
    feed = feeds(names, vocab, batch, 128)
    path = work / family / rel
    return profile_ort(path, feed, runs) if kind == "ort" else profile_ov(path, feed, runs, hint)


def _chain_lines(chain: dict[str, float], batch: int) -> list[str]:
    """BERT-base's weight GEMMs timed alone with the model's weights (bench_cpu_int8's ``chain`` ceilings), in ms:
    the int8 GEMM rows above are judged against these, not against the single MatMul's cached weights."""
    ops = chain_gop(batch, 128)
    return [
        f"\nThe {ops:.1f} GOP of weight GEMMs alone ({k.split(': ', 1)[1].rsplit(' ', 1)[0]}, "
        f"{k.split(',', 1)[1].split(':')[0].strip()}): {ops / v * 1e3:.1f} ms."
        for k, v in chain.items()
        if isinstance(v, (int, float)) and k.startswith(f"chain b{batch} ")
    ]


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Where the INT8 time goes (b{r.get('batch', 1)} s128, 2 threads)",
        "",
        f"Written by `benchmarks/profile_int8.py`; load average before / after {r['load_before']} / {r['load_after']} "
        ". ONNX Runtime: `enable_profiling` kernel times; OpenVINO: `PERF_COUNT`. Mean per inference over "
        f"{r['runs']} runs; profiling itself adds some time, so the sums are compared with the profiled wall time. "
        "`overhead` = wall time minus the kernels' sum. `int8 GEMM at ceiling` is the family's weight and attention "
        "GOP divided by the best int8 ceiling of `benchmarks/cpu_int8.md` (if found).",
        "",
    ]
    ceiling = r.get("ceiling")
    for family, variants in r["families"].items():
        cats = sorted({c for v in variants.values() if "categories" in v for c in v["categories"]})
        lines += [
            f"## {family}-base",
            "",
            "| ms per inference | " + " | ".join(variants) + " |",
            "|---" + "|---:" * len(variants) + "|",
        ]
        for c in cats:
            lines.append(
                f"| {c} | "
                + " | ".join(
                    f"{v['categories'].get(c, 0):.1f}" if "categories" in v else "-" for v in variants.values()
                )
                + " |"
            )
        lines.append(
            "| overhead | "
            + " | ".join(
                f"{v['wall_ms'] - sum(v['categories'].values()):.1f}" if "categories" in v else "-"
                for v in variants.values()
            )
            + " |"
        )
        lines.append(
            "| **wall (profiled)** | "
            + " | ".join(
                f"**{v['wall_ms']:.1f}**" if "wall_ms" in v else v.get("error", "-")[:60] for v in variants.values()
            )
            + " |"
        )
        lines += [
            "",
            "Share of the kernels' sum (%; meaningful under load, where absolute times are not):",
            "",
            "| % of kernel time | " + " | ".join(variants) + " |",
            "|---" + "|---:" * len(variants) + "|",
        ]
        for c in cats:
            lines.append(
                f"| {c} | "
                + " | ".join(
                    f"{100 * v['categories'].get(c, 0) / max(sum(v['categories'].values()), 1e-9):.0f}"
                    if "categories" in v
                    else "-"
                    for v in variants.values()
                )
                + " |"
            )
        if ceiling:
            g = gop(family_info(family, r.get("tiny", False))[2], 128)
            g *= r.get("batch", 1)
            lines.append(f"\nAll {g:.1f} GOP at the best int8 ceiling ({ceiling} GOP/s): {g / ceiling * 1e3:.1f} ms.")
        if family == "bert" and not r.get("tiny"):  # the chain is full-size BERT-base
            lines += _chain_lines(r.get("chain", {}), r.get("batch", 1))
        for label, v in variants.items():
            if "ops" in v:
                top = sorted(v["ops"].items(), key=lambda kv: -kv[1])[:8]
                lines.append(
                    f"\n{label}: top ops "
                    + ", ".join(f"{k} {ms:.1f}" for k, ms in top)
                    + (f"; compiled precision {v['precision']}" if "precision" in v else "")
                )
        lines.append("")
    lines.append(r.get("notes", ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-cpu-int8"))
    parser.add_argument("--families", default="bert,modernbert")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="batch size at sequence 128 (writes int8_profile_b<N>)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Write <out>.md and <out>.json (default: benchmarks/int8_profile, with _xeon_amx on an AMX CPU;"
        " a loaded run: elsewhere)",
    )
    parser.add_argument("--only", default="", help="comma-separated variant labels to profile (default: all)")
    parser.add_argument("--notes", default="")
    parser.add_argument(
        "--tiny", action="store_true", help="Smoke test on bench_cpu_int8.py --tiny's models (writes nothing)."
    )
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="Rewrite <out>.md from <out>.json (with --notes, OpenVINO categories recomputed).",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch_part = f"_b{args.batch}" if args.batch != 1 else ""
    args.out = args.out or HERE / f"int8_profile{batch_part}{cpu_suffix()}"
    if args.rewrite:
        r = json.loads(Path(f"{args.out}.json").read_text())
        r["notes"] = args.notes or r.get("notes", "")
        for rows in r["families"].values():  # OpenVINO's categories again, from the per-op times (a fixed mapping)
            for row in rows.values():
                if "precision" in row and "ops" in row:
                    row["categories"] = _ov_categories(row["ops"])
        Path(f"{args.out}.json").write_text(json.dumps(r, indent=2) + "\n")
        Path(f"{args.out}.md").write_text(markdown(r))
        return
    if args.one:
        print(json.dumps(one(args.one, args.family, args.work, args.runs, args.tiny, args.batch)))
        return
    r: dict[str, Any] = {
        "runs": args.runs,
        "batch": args.batch,
        "tiny": args.tiny,
        "notes": args.notes,
        "families": {},
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    bench = HERE / f"cpu_int8{cpu_suffix()}.json"  # this CPU class's ceilings
    if bench.exists():
        c = json.loads(bench.read_text()).get("ceilings", {})
        r["ceiling"] = max(
            [v for k, v in c.items() if k.startswith(("u8s8", "int8")) and isinstance(v, (int, float))], default=None
        )
        r["chain"] = {k: v for k, v in c.items() if k.startswith("chain ")}  # BERT-base's GEMMs alone
    for family in args.families.split(","):
        r["families"][family] = {}
        for label in PROFILED:
            if args.only and label not in args.only.split(","):
                continue
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    label,
                    "--family",
                    family,
                    "--work",
                    str(args.work),
                    "--runs",
                    str(args.runs),
                    "--batch",
                    str(args.batch),
                    *(["--tiny"] if args.tiny else []),
                ],
                capture_output=True,
                text=True,
            )
            try:
                r["families"][family][label] = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                r["families"][family][label] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
            print(family, label, {k: v for k, v in r["families"][family][label].items() if k != "ops"}, flush=True)
    r["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.tiny:
        print(markdown(r))
        return
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
