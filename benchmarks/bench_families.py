"""BERT's relatives at their published sizes: fp32 and int8 bundles against PyTorch eager, b1 s128 (issue 22).

    flock /tmp/bert-export-heavy.lock .venv/bin/python benchmarks/bench_families.py
        [--families roberta,xlm-roberta,distilbert,electra,bert] [--task seq-cls] [--runs 50] [--threads 2]
        [--work /tmp/bench-families] [--skip-prepare] [--tiny]

Per family, each step in its own process (runtimes' thread pools in one process slow each other):

1. ``bert-export FAMILY --task TASK --random-init --max-seq 128 --precisions fp32,int8``: the family's
   default checkpoint's published configuration (Family.default_config: roberta-base, xlm-roberta-base with
   its 250k vocabulary, distilbert-base-uncased, electra-small-discriminator) with seeded random weights,
   both graphs through their parity gates; the export time is recorded.
2. ``bert-export bench BUNDLE --precision P --batch 1 --seq 128``: the bundle's graph and PyTorch eager fp32
   (built from the bundle's config.json; dense latency does not depend on weight values) in the same
   process and run, so each ratio is from one run. Median (p50) of ``--runs`` after 3 warm-up runs.

Writes ``benchmarks/families.json`` and ``benchmarks/families.md`` (``--tiny``: the families' test configs,
to prove the script works; it writes into --work instead, never over the committed results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "bert_export.cli.main"]
FAMILIES = ("roberta", "xlm-roberta", "distilbert", "electra", "bert")
PRECISIONS = ("fp32", "int8")


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr[-2000:]}")


def prepare(family: str, task: str, work: Path, tiny: bool) -> float:
    start = time.perf_counter()
    argv = [*CLI, family, "--task", task, "--random-init", "--max-seq", "128", "--precisions", ",".join(PRECISIONS)]
    run([*argv, *(["--tiny"] if tiny else []), "--out", str(work / family), "--force", "-q"])
    return round(time.perf_counter() - start, 1)


def measure(family: str, precision: str, work: Path, runs: int, threads: int) -> dict[str, Any]:
    out = work / f"{family}-{precision}.json"
    run(
        [
            *CLI,
            "bench",
            str(work / family),
            "--precision",
            precision,
            "--batch",
            "1",
            "--seq",
            "128",
            "--runs",
            str(runs),
            "--threads",
            str(threads),
            "--json",
            str(out),
            "-q",
        ]
    )
    data = json.loads(out.read_text())
    ours, torch = data["results"][0], data["torch"][0]
    return {
        "p50_ms": ours["p50_ms"],
        "torch_p50_ms": torch["p50_ms"],
        "speedup_vs_torch": ours["speedup_vs_torch"],
        "machine": data["machine"],
    }


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [
        "# BERT's relatives: fp32 and int8 bundles vs PyTorch eager (b1 s128)",
        "",
        f"CPU: {meta['cpu']}; {meta['threads']} threads; load average at start {meta['load_start']}, "
        f"at end {meta['load_end']}; task {meta['task']}; median of {meta['runs']} runs after 3 warm-up runs; "
        f"{'tiny test configs' if meta['tiny'] else 'published sizes, random weights'}.",
        "Each ratio compares our graph with PyTorch eager fp32 measured in the same `bert-export bench` run.",
        "Written by benchmarks/bench_families.py.",
        "",
        "| family | config | export s | fp32 ms | int8 ms | PyTorch ms | fp32 vs PyTorch | int8 vs PyTorch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family, r in results.items():
        fp32, int8 = r["fp32"], r["int8"]
        rows.append(
            f"| {family} | {r['config']} | {r['export_s']} | {fp32['p50_ms']:.2f} | {int8['p50_ms']:.2f} | "
            f"{fp32['torch_p50_ms']:.2f} | {fp32['speedup_vs_torch']:.2f}x | {int8['speedup_vs_torch']:.2f}x |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--task", default="seq-cls")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-families"))
    parser.add_argument("--skip-prepare", action="store_true", help="Reuse the bundles already in --work.")
    parser.add_argument("--tiny", action="store_true", help="Test configs: proves the script, measures nothing.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpu": cpu_model(),
        "threads": args.threads,
        "runs": args.runs,
        "task": args.task,
        "tiny": args.tiny,
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    results: dict[str, Any] = {}
    for family in args.families.split(","):
        export_s = None if args.skip_prepare else prepare(family, args.task, args.work, args.tiny)
        manifest = json.loads((args.work / family / "manifest.json").read_text())
        sizes = manifest["config"]
        config = (
            f"L{sizes['num_hidden_layers']} H{sizes['hidden_size']} A{sizes['num_attention_heads']} "
            f"I{sizes['intermediate_size']} V{sizes['vocab_size']}"
        )
        results[family] = {"config": config, "export_s": export_s}
        for precision in PRECISIONS:
            results[family][precision] = measure(family, precision, args.work, args.runs, args.threads)
            print(family, precision, {k: v for k, v in results[family][precision].items() if k != "machine"})
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]
    dest = args.work if args.tiny else HERE
    (dest / "families.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (dest / "families.md").write_text(markdown(results, meta))
    print(f"wrote {dest / 'families.md'}")


if __name__ == "__main__":
    main()
