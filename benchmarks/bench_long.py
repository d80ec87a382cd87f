"""Long inputs benchmark (#13, #23): ModernBERT-base at 128..8192 tokens, dense vs banded vs length-switched local
attention vs PyTorch.

    flock /tmp/bert-export-heavy.lock .venv/bin/python benchmarks/bench_long.py [--lengths 128,512,2048,8192]

Local-layer variants (#23): ``dense`` (``--dense-local-attention``), ``banded`` (always blocked:
``OptimizeOptions(length_switch=False)``, what bundles were before the switch) and ``switched`` (the default:
an in-graph ``If`` runs dense up to 4 windows, blocked past, quantize/banded_attention.py); each with an
``int8-`` (ONNX Runtime, the family's default int8 mode) and an ``ov-`` (OpenVINO fp32 IR) form.

Full-size ``ModernBertConfig()`` with seeded random weights (``embed``), batch 1, 2 threads.
Variants: PyTorch eager (sdpa, what users run), the bundle with the sliding-window layers dense
(``--dense-local-attention``: today's graph) and banded (the default), fp32 and int8 dynamic.
Every (variant, length) runs in its own process, back to back, so that thread pools and memory
arenas never mix (``--rounds N``: N processes per cell, the variants taking turns, and the median of
their medians): latency is the median of ``reps`` timed runs (20 at 128 tokens, 8 at 512) after one warm-up at the same
length below 4096 (fewer runs at long lengths, no same-length warm-up: a dense 8192 run takes a minute; the
counts are recorded),
peak memory is the highest resident set sampled every 2 ms during the timed runs minus the
resident set after loading and a short warm-up ("above the loaded model"). Parity: each process
saves its output and the fp32 bundles are compared with PyTorch at every length (max |diff| of
``last_hidden_state``; int8: min cosine per token). With ``--validate`` the banded fp32 bundle is
exported with the parity gate, so its report (the batch-1 case at 8192 and how long it took) is
recorded too. ``--variants`` picks variants (int8-dense, the slowest, and the OpenVINO ones, ov-dense/ov-banded:
the ``--runtime openvino`` fp32 IR with the f32 hint, are left out by default; ``--add`` appends them to a run). Writes ``benchmarks/long_inputs.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
THREADS = 2
VALIDATE = False
LENGTHS = (128, 512, 2048, 8192)
VARIANTS = (
    "pytorch",
    "dense",
    "banded",
    "switched",
    "int8-banded",
    "int8-switched",
    "int8-dense",
    "ov-dense",
    "ov-banded",
    "ov-switched",
)


def reps_for(variant: str, seq: int) -> int:
    if seq >= 8192:
        return 1 if variant in ("pytorch", "dense", "int8-dense") else 3
    if seq <= 512:  # a run is 0.05-1 s here, and the variants differ by a few percent: more runs
        return 20 if seq <= 128 else 8
    return 2 if seq >= 4096 else 3


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """Highest resident set seen while running (sampled every 2 ms on a thread)."""

    def __enter__(self) -> PeakSampler:
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def feed(seq: int, vocab: int = 50368) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    ids = rng.integers(5, vocab, (1, seq), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 50281, 50282
    return {"input_ids": ids, "attention_mask": np.ones((1, seq), np.int64)}


def child(variant: str, seq: int, bundle: str | None, out: str) -> None:
    """One (variant, length) in this process: load, warm up, time, sample memory, save the output."""
    f = feed(seq)
    if variant == "pytorch":
        import torch

        from bert_export.exporter.loading import load_source
        from bert_export.models import get_family, get_task

        torch.set_num_threads(THREADS)
        model = load_source(get_family("modernbert"), get_task("embed"), random_init=True, seed=0).model.eval()
        tf = {k: torch.from_numpy(v) for k, v in f.items()}

        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(**tf)[0].numpy()

        def warm() -> None:
            with torch.inference_mode():
                model(**{k: v[:, :128] for k, v in tf.items()})
    elif variant.startswith("ov-"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(Path(bundle) / "openvino" / "model.xml"))
        request = core.compile_model(
            model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32"}
        ).create_infer_request()

        def run() -> np.ndarray:
            return np.array(request.infer(f)["last_hidden_state"])

        def warm() -> None:
            request.infer({k: v[:, :128] for k, v in f.items()})
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        graph = next((Path(bundle) / "onnx").glob("model*.onnx"))  # layout 2: onnx/model.onnx or model_quantized.onnx
        session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])

        def run() -> np.ndarray:
            return session.run(["last_hidden_state"], f)[0]

        def warm() -> None:
            session.run(["last_hidden_state"], {k: v[:, :128] for k, v in f.items()})

    warm()
    loaded = _rss_mb()
    times = []
    with PeakSampler() as peak:
        if seq < 4096:
            result = run()  # a warm-up at this length (allocations, arenas); too costly past 2048
        for _ in range(reps_for(variant, seq)):
            t = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - t)
    np.save(out + ".npy", result.astype(np.float32))
    Path(out + ".json").write_text(
        json.dumps(
            {
                "variant": variant,
                "seq": seq,
                "seconds": round(statistics.median(times), 3),
                "runs": [round(t, 3) for t in times],
                "loaded_mb": round(loaded),
                "peak_above_mb": round(peak.peak - loaded),
            }
        )
    )


def export_bundles(root: Path, max_seq: int, variants: list[str]) -> dict[str, dict[str, Any]]:
    from bert_export.exporter import export
    from bert_export.quantize.pipeline import OptimizeOptions

    made = {}
    plan = {
        "switched": (OptimizeOptions(), VALIDATE),  # validated: the parity harness's 8192 case is part of the record
        "banded": (OptimizeOptions(length_switch=False), False),
        "dense": (OptimizeOptions(banded_attention=False), False),
        "int8-switched": (OptimizeOptions(int8=True), False),
        "int8-banded": (OptimizeOptions(int8=True, length_switch=False), False),
        "int8-dense": (OptimizeOptions(int8=True, banded_attention=False), False),
        "ov-switched": (OptimizeOptions(runtime="openvino"), False),  # fp32 IR, run with the f32 hint
        "ov-banded": (OptimizeOptions(runtime="openvino", length_switch=False), False),
        "ov-dense": (OptimizeOptions(runtime="openvino", banded_attention=False), False),
    }
    for name, (opt, validate) in plan.items():
        if name not in variants:
            continue
        t = time.perf_counter()
        r = export(
            "modernbert",
            "embed",
            random_init=True,
            seed=0,
            out=root / name,
            force=True,
            max_seq=max_seq,
            optimization=opt,
            validate=validate,
        )
        made[name] = {
            "export_seconds": round(time.perf_counter() - t, 1),
            "banded_layers": r.manifest["optimization"]["banded_attention_layers"],
            "parity": r.manifest.get("parity"),
        }
        print(f"exported {name} in {made[name]['export_seconds']} s", flush=True)
    return made


def compare(outs: Path, lengths: list[int]) -> dict[str, dict[int, float]]:
    parity: dict[str, dict[int, float]] = {}
    for seq in lengths:
        ref_path = outs / f"pytorch-{seq}.npy"
        if not ref_path.exists():
            continue
        ref = np.load(ref_path)[0].astype(np.float64)
        for variant in VARIANTS[1:]:
            p = outs / f"{variant}-{seq}.npy"
            if not p.exists():
                continue
            got = np.load(p)[0].astype(np.float64)
            if variant.startswith("int8"):
                cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
                parity.setdefault(variant + " min cosine", {})[seq] = round(float(cos.min()), 5)
            else:
                parity.setdefault(variant + " max abs", {})[seq] = float(f"{np.abs(got - ref).max():.3g}")
    return parity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--variants", default=",".join(VARIANTS[:6]))
    ap.add_argument(
        "--skip",
        default="dense@8192,int8-dense@8192,pytorch@8192",
        help="variant@length cells not to run (a dense 8192 run takes minutes and ~8 GB)",
    )
    ap.add_argument(
        "--validate", action="store_true", help="Export the banded bundle with the parity gate (its 8192 case)."
    )
    ap.add_argument("--work", type=Path, default=None, help="Keep bundles and outputs here (default: a temp dir).")
    ap.add_argument(
        "--note",
        default="shared machine (other jobs running): compare ratios within this run",
        help="How loaded the machine was, for the report.",
    )
    ap.add_argument(
        "--add",
        action="store_true",
        help="Keep the other rows of benchmarks/long_inputs.json (same --work) and add or replace these.",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Processes per cell, the variants taking turns; the cell is the median of their medians.",
    )
    ap.add_argument("--child", nargs=4, metavar=("VARIANT", "SEQ", "BUNDLE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, seq, bundle, out = args.child
        child(variant, int(seq), None if bundle == "-" else bundle, out)
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    variants = args.variants.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-long-"))
    work.mkdir(parents=True, exist_ok=True)
    global VALIDATE
    VALIDATE = args.validate
    bundles = json.loads((work / "bundles.json").read_text()) if (work / "bundles.json").exists() else {}
    missing = [v for v in variants if v != "pytorch" and not (work / "bundles" / v).exists()]
    bundles.update(export_bundles(work / "bundles", max(lengths), missing))
    (work / "bundles.json").write_text(json.dumps(bundles, default=str))
    outs = work / "outputs"
    outs.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []  # cells whose process died (exit -9: killed, out of memory)
    skip = set(filter(None, args.skip.split(",")))
    for seq in lengths:
        rounds: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.rounds):  # the variants take turns, so a slow spell of the machine hits them all
            for variant in variants:
                if f"{variant}@{seq}" in skip:
                    continue
                base = outs / f"{variant}-{seq}"
                bundle = "-" if variant == "pytorch" else str(work / "bundles" / variant)
                Path(str(base) + ".json").unlink(missing_ok=True)
                proc = subprocess.run([sys.executable, __file__, "--child", variant, str(seq), bundle, str(base)])
                if proc.returncode != 0:  # e.g. killed for memory: a row saying so, and the run goes on
                    print(f"{variant} at {seq}: exit {proc.returncode}", flush=True)
                    failed.append({"variant": variant, "seq": seq, "exit": proc.returncode})
                    continue
                rounds.setdefault(variant, []).append(json.loads(Path(str(base) + ".json").read_text()))
                print(json.dumps(rounds[variant][-1]), flush=True)
        rows += [_merge(runs) for runs in rounds.values()]
    if args.add:  # an addendum to the same session's run: earlier rows stay, these replace their (variant, seq)
        earlier = json.loads((HERE / "long_inputs.json").read_text())
        done = {(r["variant"], r["seq"]) for r in rows}
        rows = [r for r in earlier["rows"] if (r["variant"], r["seq"]) not in done] + rows
        failed = [f for f in earlier.get("failed", []) if (f["variant"], f["seq"]) not in done] + failed
        lengths = sorted({r["seq"] for r in rows})
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": THREADS,
            "note": args.note,
        },
        "bundles": bundles,
        "rows": rows,
        "failed": failed,
        "parity": compare(outs, lengths),
    }
    from bert_export.models.support import versions

    result["versions"] = versions()
    (HERE / "long_inputs.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_report(result)
    plot(result)


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its processes: the median of the processes' medians (``rounds`` of them), the rest kept."""
    row = dict(runs[-1])
    if len(runs) > 1:
        row["seconds"] = round(statistics.median(r["seconds"] for r in runs), 4)
        row["process_medians"] = [r["seconds"] for r in runs]
        row["runs"] = [t for r in runs for t in r["runs"]]
        row["peak_above_mb"] = max(r["peak_above_mb"] for r in runs)
    return row


def gflop(seq: int, banded: bool) -> float:
    """Encoder GFLOP of ModernBERT-base at ``seq`` (batch 1): the projections and MLP (linear in seq), the
    global layers' QK^T and PV (quadratic), and the local layers' (``3 * w/2`` keys per query when banded,
    all ``seq`` keys when dense). Softmax, norms and activations are left out (a few %)."""
    from transformers import ModernBertConfig

    c = ModernBertConfig()
    h, inter, layers, w = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.local_attention
    n_global = sum(kind == "full_attention" for kind in c.layer_types)
    linear = 2 * seq * (h * 3 * h + h * h + h * 2 * inter + inter * h) * layers
    attn = lambda keys: 2 * 2 * seq * keys * h  # noqa: E731  QK^T and PV, multiply-add = 2
    local_keys = min(seq, 3 * (w // 2)) if banded else seq
    return (linear + n_global * attn(seq) + (layers - n_global) * attn(local_keys)) / 1e9


def _table(result: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    t: dict[str, dict[int, dict[str, Any]]] = {}
    for r in result["rows"]:
        t.setdefault(r["variant"], {})[r["seq"]] = r
    return t


def write_report(result: dict[str, Any]) -> None:
    t = _table(result)
    lengths = sorted({r["seq"] for r in result["rows"]})
    ratios = [
        (a, b)
        for a, b in (
            ("dense", "banded"),
            ("dense", "switched"),
            ("banded", "switched"),
            ("pytorch", "switched"),
            ("int8-dense", "int8-banded"),
            ("int8-dense", "int8-switched"),
            ("int8-banded", "int8-switched"),
            ("ov-dense", "ov-banded"),
            ("ov-dense", "ov-switched"),
            ("ov-banded", "ov-switched"),
        )
        if a in t and b in t
    ]
    lines = [
        "# Long inputs: ModernBERT-base, banded local attention",
        "",
        "Generated by `benchmarks/bench_long.py` (see its docstring for the method). ModernBERT-base "
        "(`ModernBertConfig()`, seeded random weights, `embed`), batch 1, 2 threads, ONNX Runtime "
        f"{result['versions'].get('onnxruntime')}, torch {result['versions'].get('torch')}. "
        "Each cell ran in its own process (a cell with `process_medians` in long_inputs.json: several processes, "
        "the variants taking turns, and the median of their medians); seconds are medians of the runs listed in "
        "long_inputs.json (20 at 128, 8 at 512, 3 up to 2048, 2 at 4096, 1 for the dense and PyTorch variants at "
        "8192; warm-up at the same length below 4096); memory is the peak resident set "
        f"above the loaded model. Machine: {result['machine'].get('cpu')}, {result['machine'].get('note')}.",
        "",
        "| seq | "
        + " | ".join(f"{v} s" for v in t)
        + " | "
        + " | ".join(f"{v} MB" for v in t)
        + " | "
        + " | ".join(f"{a}/{b}" for a, b in ratios)
        + " |",
        "|---:|" + "---:|" * (2 * len(t) + len(ratios)),
    ]
    for seq in lengths:
        cells = [f"{t[v][seq]['seconds']:.2f}" if seq in t[v] else "-" for v in t]
        mems = [f"{t[v][seq]['peak_above_mb']}" if seq in t[v] else "-" for v in t]
        ratio = lambda a, b: (  # noqa: E731
            f"{t[a][seq]['seconds'] / t[b][seq]['seconds']:.2f}x"
            if seq in t.get(a, {}) and seq in t.get(b, {})
            else "-"
        )  # noqa: E731
        lines.append(
            f"| {seq} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(mems)
            + " | "
            + " | ".join(ratio(a, b) for a, b in ratios)
            + " |"
        )
    if "banded" in t and 2048 in t["banded"] and 8192 in t["banded"]:
        grow = {v: t[v][8192]["seconds"] / t[v][2048]["seconds"] for v in t if 2048 in t[v] and 8192 in t[v]}
        lines += ["", "Growth 2048 -> 8192 (time): " + ", ".join(f"{v} {g:.1f}x" for v, g in grow.items()) + "."]
        lines += [
            "",
            f"The work itself grows {gflop(8192, True) / gflop(2048, True):.1f}x from 2048 to 8192 with banded local "
            f"layers ({gflop(2048, True):.0f} -> {gflop(8192, True):.0f} GFLOP: the global layers' attention is exact, so "
            f"quadratic) and {gflop(8192, False) / gflop(2048, False):.1f}x with dense ones; a time growth below the work's "
            "growth needs the long runs to be more efficient than the short ones.",
            "",
            "Throughput (GFLOP/s of the model's own work, `gflop()` in the script; fp32 rows only):",
            "",
            "| seq | GFLOP banded | GFLOP dense | " + " | ".join(f"{v}" for v in t if not v.startswith("int8")) + " |",
            "|---:|---:|---:|" + "---:|" * len([v for v in t if not v.startswith("int8")]),
        ]
        for seq in lengths:
            cells = []
            for v in (v for v in t if not v.startswith("int8")):
                work = gflop(seq, v.endswith("banded") or (v.endswith("switched") and seq > 512))
                cells.append(f"{work / t[v][seq]['seconds']:.0f}" if seq in t[v] else "-")
            lines.append(f"| {seq} | {gflop(seq, True):.0f} | {gflop(seq, False):.0f} | " + " | ".join(cells) + " |")
    if result.get("failed"):
        lines += [
            "",
            "Cells whose process died (no number; exit -9 is the kernel killing it for memory on this 24 GB machine): "
            + ", ".join(f"{f['variant']} at {f['seq']} (exit {f['exit']})" for f in result["failed"])
            + ".",
        ]
    lines += [
        "",
        "Parity against PyTorch at every length (fp32: max |diff| of last_hidden_state; int8: min cosine per token):",
        "",
        "| check | " + " | ".join(map(str, lengths)) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for name, by_len in result["parity"].items():
        lines.append(f"| {name} | " + " | ".join(str(by_len.get(s, by_len.get(str(s), "-"))) for s in lengths) + " |")
    p = (result["bundles"].get("switched") or {}).get("parity") or {}
    if p.get("cases"):
        lines += [
            "",
            "The banded bundle's own parity gate at export (cases, shapes, seconds in PyTorch and ONNX Runtime):",
            "",
        ]
        lines += [
            f"- {name}: {c['shape']}, " + ", ".join(f"{k} {v} s" for k, v in c.get("seconds", {}).items())
            for name, c in p["cases"].items()
        ]
    (HERE / "long_inputs.md").write_text("\n".join(lines) + "\n")


def plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = _table(result)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for v, by in t.items():
        xs = sorted(by)
        a.plot(xs, [by[x]["seconds"] for x in xs], marker="o", label=v)
        b.plot(xs, [by[x]["peak_above_mb"] / 1024 for x in xs], marker="o", label=v)
    for ax, title in ((a, "latency (s)"), (b, "peak memory above the loaded model (GB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (batch 1)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    a.set_yscale("log")
    a.legend()
    fig.suptitle("ModernBERT-base, 2 threads: dense vs banded local attention vs PyTorch eager")
    fig.tight_layout()
    fig.savefig(HERE / "long_inputs.png", dpi=110)


if __name__ == "__main__":
    main()
