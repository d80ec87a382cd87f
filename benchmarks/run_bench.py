"""Published `bert-export bench` results: full-size BERT-base and ModernBERT-base (embed), ORT CPU vs PyTorch.

    .venv/bin/python benchmarks/run_bench.py [--batch 1,8] [--seq 128,512] [--runs 10] [--threads 2]

Exports random-init bundles of the families' default configurations (``BertConfig()`` and
``ModernBertConfig()``: the real architectures and sizes; latency of dense fp32 does not depend on
weight values) through the CLI, benchmarks each with ``bert-export bench``, and writes
``benchmarks/bench-<model>.json``, ``benchmarks/bench-<model>.png`` and ``benchmarks/bench-summary.md``
(the table that the "bert-export bench" section of results.md quotes). Bundles go to ``--work``
(400-600 MB each), not into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"bert-base": "bert", "modernbert-base": "modernbert"}


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("bert-export")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bert_export.cli.main"]


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def summary(names: list[str], loads: dict[str, list[float]], seconds: dict[str, float], tag: str = "") -> str:
    lines = []
    for name in names:
        doc = json.loads((HERE / f"bench-{name}{tag}.json").read_text())
        m, s = doc["machine"], doc["settings"]
        lines += [
            f"### {name} ({s['family']} {s['task']}, {s['precision']}): {s['runs']} runs after {s['warmup']} warm-up, "
            f"threads {s['threads']}",
            "",
            f"Machine: {m['cpu']}, {m['cores_usable']} usable cores, flags "
            f"{', '.join(k for k, v in m['cpu_flags'].items() if v) or 'n/a'}; onnxruntime {m['versions'].get('onnxruntime')}, "
            f"torch {m['versions'].get('torch')}. Load average at start {m.get('load_avg_start')}, at end {m['load_avg']}. "
            f"Bench wall time {seconds[name]:.0f} s.",
            "",
            "| runtime | batch | seq | p50 ms | p90 ms | p99 ms | seq/s | tokens/s | GFLOP/s | peak MiB | vs torch |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in doc["results"] + doc["torch"]:
            speed = "" if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}x"
            lines.append(
                f"| {r['runtime']} {r['precision']} | {r['batch']} | {r['seq']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['seq_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['gflops']:.1f} | "
                f"{r['peak_mem_mb']:.0f} | {speed} |"
            )
        lines.append("")
    lines.append(f"`uptime` load averages around the whole run: {json.dumps(loads)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--seq", default="128,512")
    ap.add_argument("--warmup", default="2")
    ap.add_argument("--runs", default="10")
    ap.add_argument("--threads", default=str(len(os.sched_getaffinity(0))))
    ap.add_argument("--work", type=Path, default=Path("/tmp/bert-export-bench"))
    ap.add_argument("--models", default=",".join(MODELS), help="Comma-separated subset of: " + ", ".join(MODELS))
    ap.add_argument("--keep", action="store_true", help="Keep the exported bundles in --work.")
    ap.add_argument("--tag", default="", help="Suffix for the output names (bench-<model><tag>.json ...).")
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    max_seq = str(max(int(s) for s in args.seq.split(",")))
    loads = {"start": list(os.getloadavg())}
    seconds: dict[str, float] = {}
    for name in names:
        bundle = args.work / name
        if not (bundle / "manifest.json").exists():
            run(
                [
                    *cli(),
                    MODELS[name],
                    "--task",
                    "embed",
                    "--random-init",
                    "--max-seq",
                    max_seq,
                    "--out",
                    str(bundle),
                    "--force",
                ]
            )
        loads[f"before {name}"] = list(os.getloadavg())
        seconds[name] = run(
            [
                *cli(),
                "bench",
                str(bundle),
                "--batch",
                args.batch,
                "--seq",
                args.seq,
                "--warmup",
                args.warmup,
                "--runs",
                args.runs,
                "--threads",
                args.threads,
                "--json",
                str(HERE / f"bench-{name}{args.tag}.json"),
                "--plot",
                str(HERE / f"bench-{name}{args.tag}.png"),
            ]
        )
        loads[f"after {name}"] = list(os.getloadavg())
        if not args.keep:
            shutil.rmtree(bundle, ignore_errors=True)
    out = HERE / f"bench-summary{args.tag}.md"
    out.write_text(summary(names, loads, seconds, args.tag), encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
