"""Measure a bundle: latency percentiles, throughput, achieved GFLOP/s and peak memory, against PyTorch.

    from bert_export.runtimes.bench import bench
    result = bench("exports/bert-embed-fp32", runtime="ort", batches=(1, 8), seqs=(128, 512))
    print(result.to_json())

Everything runs through the ``Runner`` interface (``make_runner``), so a runtime added to
``runtimes.factory.RUNTIMES`` is benchmarked without a change here. The PyTorch eager fp32
baseline is rebuilt from the bundle's ``config.json`` with *random* weights: a bundle carries
no PyTorch checkpoint, and the latency of dense fp32 kernels does not depend on weight values.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bert_export.models import TASKS, BertExportError, Family, get_family
from bert_export.models.support import check_threads, first_line, versions
from bert_export.runtimes.base import Runner

DEFAULT_BATCHES = (1, 8)
DEFAULT_SEQS = (128, 512)
# CPU flags that decide which int8 / bf16 kernels ONNX Runtime and PyTorch can use.
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
Tick = Callable[[], None]


@dataclass
class Row:
    """One runtime at one batch x sequence: the ``--json`` row schema (plus peak memory)."""

    runtime: str
    precision: str
    batch: int
    seq: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    seq_per_s: float
    tokens_per_s: float
    gflops: float
    speedup_vs_torch: float | None
    peak_mem_mb: float | None = None
    mem_source: str = "rss-delta"

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


def summarize(
    runtime: str,
    precision: str,
    batch: int,
    seq: int,
    times_ns: Sequence[int],
    flop: float,
    peak_mem_mb: float | None,
    mem_source: str,
) -> Row:
    """Percentiles of the timed runs; throughput and GFLOP/s from the median (robust to a noisy neighbour)."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    sec = p50 / 1e3
    return Row(
        runtime,
        precision,
        batch,
        seq,
        round(p50, 6),
        round(p90, 6),
        round(p99, 6),
        round(batch / sec, 3),
        round(batch * seq / sec, 1),
        round(flop / sec / 1e9, 3),
        None,
        None if peak_mem_mb is None else round(peak_mem_mb, 1),
        mem_source,
    )


# --------------------------------------------------------------------------- model FLOPs


def _layer_keys(config: dict[str, Any], family: Family, seq: int) -> list[float]:
    """Mean attended keys per query for each layer: ``seq`` for global layers, the window for local ones.

    ModernBERT's sliding layers let a query see keys at distance <= local_attention // 2
    (transformers' bidirectional sliding-window mask), so edges see fewer keys than the middle.
    """
    n = int(config["num_hidden_layers"])
    if family.local_window_attr is None or config.get(family.local_window_attr) is None:
        return [float(seq)] * n
    types = config.get("layer_types") or [
        "sliding_attention" if i % int(config.get("global_attn_every_n_layers", 1)) else "full_attention"
        for i in range(n)
    ]
    half = int(config[family.local_window_attr]) // 2
    pos = np.arange(seq)
    local = float(np.mean(np.minimum(pos, half) + np.minimum(seq - 1 - pos, half) + 1))
    return [local if t == "sliding_attention" else float(seq) for t in types[:n]]


def model_flops(config: dict[str, Any], family: Family, task: str, batch: int, seq: int) -> float:
    """Useful floating-point operations (2 per multiply-add) of one forward pass over batch x seq tokens.

    Counts the matrix products that dominate an encoder: Q/K/V/output projections, attention
    scores and context (over the keys each layer really attends), the feed-forward block (a gated
    GLU has three matrices: ``Family.gated_ffn``), and the task head. Embedding
    look-ups, norms and softmax are left out (under 1% at these sizes). Local layers are credited
    only their window even where a kernel computes the masked-out scores anyway, so GFLOP/s
    measures useful work.
    """
    h, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    tokens = batch * seq
    ffn_mats = 3 if family.gated_ffn else 2
    dense = 2 * tokens * (4 * h * h + ffn_mats * h * inter)
    total = sum(dense + 4 * tokens * keys * h for keys in _layer_keys(config, family, seq))
    labels = len(config.get("id2label") or {}) or 2
    # ModernBERT-style heads (their config has classifier_activation) put a dense h x h prediction
    # head before every task classifier; BERT's token-level heads are a single linear layer.
    token_head = 2 * tokens * h * h if "classifier_activation" in config else 0
    head = (
        TASKS[task].head_flops(
            batch=batch,
            tokens=tokens,
            hidden=h,
            labels=labels,
            vocab=int(config["vocab_size"]),
            token_head=token_head,
            pooler=family.has_pooler,
        )
        if task in TASKS
        else 0
    )
    return float(total + head)


def working_bytes(config: dict[str, Any], task: str, batch: int, seq: int) -> int:
    """A lower bound on the memory one forward pass over batch x seq needs beyond the weights (fp32).

    The largest live tensors of one layer (the attention scores and their softmax, batch x heads
    x seq x seq each; the feed-forward activation and the hidden states around it), plus the task
    output (mlm: batch x seq x vocab logits). The runtime's arena holds at least this; bench checks
    it before allocating anything (``bench --batch 4096 --seq 256`` used to fail deep inside ONNX
    Runtime with "Failed to allocate memory").
    """
    h, inter, heads = int(config["hidden_size"]), int(config["intermediate_size"]), int(config["num_attention_heads"])
    layer = batch * (2 * heads * seq * seq + seq * (inter + 4 * h))
    vocab = any("vocab" in spec.axes for spec in TASKS[task].outputs)  # mlm: batch x seq x vocab logits
    out = batch * seq * (int(config["vocab_size"]) if vocab else h)
    return 4 * (layer + out)


def check_working_memory(config: dict[str, Any], task: str, cells: Sequence[tuple[int, int]], runtime: str) -> None:
    """Refuse cells whose activations cannot fit the memory available now (host memory; GPU runtimes'
    device memory is left to them)."""
    from bert_export.runtimes.factory import RUNTIMES

    entry = RUNTIMES.get(runtime)
    if entry is None or entry.gpu:  # an unknown name is refused by make_runner, with the choices
        return
    available = psutil.virtual_memory().available
    for batch, seq in cells:
        need = working_bytes(config, task, batch, seq)
        if need > available:
            raise BertExportError(
                f"--batch {batch} --seq {seq} needs at least {need / 2**30:.1f} GiB for one forward pass, more than "
                f"the {available / 2**30:.1f} GiB available; pass a smaller --batch or --seq"
            )


# --------------------------------------------------------------------------- feeds


def _token_stream(tokenizer: Any, vocab_size: int, length: int) -> np.ndarray:
    """Real WordPiece / BPE ids of the built-in English text (random ids when there is no tokenizer)."""
    if tokenizer is None:
        return np.random.default_rng(0).integers(5, max(vocab_size, 6), size=length)
    import transformers

    from bert_export.runtimes.texts import SENTENCES

    transformers.logging.set_verbosity_error()  # "sequence longer than max length" is intended here
    ids = tokenizer(" ".join(SENTENCES), add_special_tokens=False)["input_ids"]
    return np.resize(np.asarray(ids, dtype=np.int64), length)


def specials_of(tokenizer: Any, manifest: dict[str, Any]) -> dict[str, int | None]:
    """[CLS]/[SEP] ids: the tokenizer's own when the bundle has one, else the manifest's.

    The tokenizer wins because it is what users feed; bundles without one (random-init
    ModernBERT) have only the manifest's ids, taken from the model config.
    """
    ids = dict(manifest.get("special_tokens") or {})
    if tokenizer is not None:
        for key, attr in (("cls", "cls_token_id"), ("sep", "sep_token_id")):
            value = getattr(tokenizer, attr, None)
            if isinstance(value, int):
                ids[key] = value
    return ids


def make_feed(
    inputs: Sequence[Any], specials: dict[str, int | None], stream: np.ndarray, batch: int, seq: int
) -> dict[str, np.ndarray]:
    """A full (unpadded) batch x seq feed: [CLS] text... [SEP] per row, each row from another offset.

    Row ``r`` is ``stream[37 r : 37 r + seq]`` (wrapping), gathered by index: O(batch x seq)
    memory. (Rolling the whole stream per row, as before, copied batch x len(stream) values, and
    the stream grows with the batch, so memory grew with batch**2: 0.3 GiB at --batch 1024,
    1.2 GiB at 2048, 4.7 GiB at 4096.)
    """
    offsets = (37 * np.arange(batch, dtype=np.int64))[:, None] + np.arange(seq, dtype=np.int64)[None, :]
    rows = np.asarray(stream)[offsets % len(stream)]
    cls, sep = specials.get("cls"), specials.get("sep")
    if cls is not None and seq >= 2:
        rows[:, 0] = cls
    if sep is not None and seq >= 2:
        rows[:, -1] = sep
    values = {"input_ids": rows, "attention_mask": np.ones_like(rows), "token_type_ids": np.zeros_like(rows)}
    feed = {}
    for spec in inputs:
        if spec.name not in values:
            raise BertExportError(
                f"bench does not know how to fill the input {spec.name!r}; it feeds input_ids, attention_mask, token_type_ids"
            )
        feed[spec.name] = values[spec.name].astype(np.int32 if spec.dtype == "int32" else np.int64)
    return feed


# --------------------------------------------------------------------------- memory


def release_freed_memory() -> None:
    """Hand memory freed by a previous runner back to the OS before a baseline is taken.

    glibc keeps freed heap pages resident; the next model then reuses them without raising RSS,
    and its delta would read hundreds of MiB low. ``malloc_trim(0)`` returns them (glibc only).
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak resident memory of this process within a window, above a baseline taken before a model loads.

    Linux keeps the peak (VmHWM) and lets a process reset it (``5 > /proc/self/clear_refs``), which
    catches transient activations exactly and costs nothing. Elsewhere a psutil sampling thread
    (1 ms) approximates it.
    """

    def __init__(self) -> None:
        self.proc = psutil.Process()
        release_freed_memory()
        self.baseline = self.rss()
        self._hwm = self._can_reset_hwm()

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    @staticmethod
    def _can_reset_hwm() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return PeakMemory._read_hwm() is not None
        except OSError:
            return False

    @staticmethod
    def _read_hwm() -> int | None:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    @contextlib.contextmanager
    def window(self) -> Iterator[dict[str, float]]:
        """``with mem.window() as w: ...`` then ``w["peak_mb"]`` (MiB above the baseline)."""
        out: dict[str, float] = {}
        if self._hwm:
            Path("/proc/self/clear_refs").write_text("5")
            yield out
            peak = self._read_hwm() or self.rss()
        else:
            peak_box = [self.rss()]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.001):
                    peak_box[0] = max(peak_box[0], self.rss())

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            try:
                yield out
            finally:
                stop.set()
                thread.join()
            peak = max(peak_box[0], self.rss())
        out["peak_mb"] = max(peak - self.baseline, 0) / 2**20


# --------------------------------------------------------------------------- machine


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What the numbers depend on: CPU model and ISA flags, cores, load, GPU, library versions."""
    cpuinfo = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    flags_line = next((ln.split(":", 1)[1] for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    flags = set(flags_line.split())
    info: dict[str, Any] = {
        "cpu": model or platform.machine(),
        "arch": platform.machine(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS} if flags else {},
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": load_avg(),
        "os": platform.platform(),
        "threads": threads,
        "gpu": None,
        "versions": versions(),
    }
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info["torch_threads"] = torch.get_num_threads()
    with contextlib.suppress(Exception):
        import onnxruntime as ort

        info["ort_providers"] = ort.get_available_providers()
    return info


def load_avg() -> list[float] | None:
    """1/5/15-minute load: on a shared machine, the first thing to check when numbers look off."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


# --------------------------------------------------------------------------- the run


@dataclass
class BenchResult:
    """The ``--json`` document: runtime rows, PyTorch rows, the machine, and the settings used."""

    results: list[Row]
    torch: list[Row]
    machine: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [asdict(r) for r in self.results],
            "torch": [asdict(r) for r in self.torch],
            "machine": self.machine,
            "settings": self.settings,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def table(self) -> Any:
        from rich import box
        from rich.table import Table

        s = self.settings
        table = Table(
            title=f"{Path(str(s.get('bundle'))).name} ({s.get('family')} {s.get('task')}): latency in ms, "
            f"{s.get('runs')} runs after {s.get('warmup')} warm-up, threads {s.get('threads') or 'default'}",
            box=box.SIMPLE_HEAD,
            caption="peak MiB: resident memory above the process before the model loaded",
        )
        for col in (
            "runtime",
            "batch",
            "seq",
            "p50",
            "p90",
            "p99",
            "seq/s",
            "tokens/s",
            "GFLOP/s",
            "peak MiB",
            "vs torch",
        ):
            table.add_column(col, justify="left" if col == "runtime" else "right", no_wrap=True)
        for r in self.results + self.torch:
            speed = "" if r.speedup_vs_torch is None else f"{r.speedup_vs_torch:.2f}x"
            mem = "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.0f}"
            table.add_row(
                r.label,
                str(r.batch),
                str(r.seq),
                _ms(r.p50_ms),
                _ms(r.p90_ms),
                _ms(r.p99_ms),
                f"{r.seq_per_s:.1f}",
                f"{r.tokens_per_s:.0f}",
                f"{r.gflops:.1f}",
                mem,
                speed,
            )
        return table


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def parse_sizes(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """``"1,8"`` -> (1, 8); every value must be an integer >= 1."""
    if isinstance(text, str):
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise BertExportError(
                f"--{what} {text!r} is not a comma-separated list of integers; write e.g. --{what} 1,8"
            ) from None
    else:
        values = tuple(int(v) for v in text)
    if not values:
        raise BertExportError(f"--{what} is empty; write e.g. --{what} 1,8")
    bad = [v for v in values if v < 1]
    if bad:
        raise BertExportError(f"--{what} {bad[0]} is invalid; {what} sizes must be >= 1")
    return tuple(dict.fromkeys(values))


def resolve_seqs(seqs: Sequence[int] | None, max_seq: int) -> tuple[int, ...]:
    """Explicit lengths must fit the bundle; the defaults are trimmed to it (or become its maximum)."""
    if seqs is None:
        fit = tuple(s for s in DEFAULT_SEQS if s <= max_seq)
        return fit or (max_seq,)
    over = [s for s in seqs if s > max_seq]
    if over:
        raise BertExportError(
            f"--seq {over[0]} exceeds this bundle's maximum sequence length of {max_seq}; pass --seq values <= {max_seq}"
        )
    return tuple(seqs)


def bundle_config(bundle: Any) -> dict[str, Any]:
    """The model configuration: config.json, else the manifest's summary of it (sizes and window).

    The manifest's sizes go over config.json's under BERT's names (DistilBERT's config.json says ``dim`` and
    ``hidden_dim``; the manifest records ``hidden_size`` and ``intermediate_size``: Family.config_names)."""
    if bundle.has_file("config.json"):
        cfg = bundle.read_json("config.json")
        if isinstance(cfg, dict):
            return {**cfg, **{k: v for k, v in (bundle.manifest.get("config") or {}).items() if v is not None}}
    return {**bundle.manifest["config"], "local_attention": bundle.manifest.get("local_attention")}


def torch_runner(bundle: Any, device: str) -> Runner:
    """PyTorch eager fp32 of the bundle's architecture, from its config.json, with seeded random weights."""
    import torch
    import transformers

    from bert_export.models import get_task
    from bert_export.runtimes.torch_runner import TaskGraph, TorchRunner

    family, task = get_family(bundle.manifest["family"]), get_task(bundle.manifest["task"])
    if not bundle.has_file("config.json"):
        raise BertExportError(
            f"{bundle.path} has no config.json, which the PyTorch baseline is built from; re-export the bundle or pass --no-torch"
        )
    transformers.logging.set_verbosity_error()
    try:
        config = getattr(transformers, family.config_class).from_dict(bundle.read_json("config.json"))
    except (TypeError, ValueError, AttributeError) as exc:
        raise BertExportError(
            f"config.json in {bundle.path} is not a {family.config_class} ({first_line(exc, 120)}); re-export the bundle or pass --no-torch"
        ) from None
    config._attn_implementation = "sdpa"  # what the bundle was exported from (registry export_config)
    torch.manual_seed(0)
    model = family.task_class(task)(config).eval()
    graph = TaskGraph(model, [o.name for o in bundle.outputs])
    return TorchRunner(graph, bundle.inputs, bundle.outputs, bundle.max_seq, device=device)


def _torch_device(runtime: str) -> str:
    """Compare like with like: PyTorch on CUDA for the GPU runtimes when it can, on the CPU for the CPU ones."""
    import torch

    from bert_export.runtimes.factory import RUNTIMES

    return "cuda" if RUNTIMES[runtime].gpu and torch.cuda.is_available() else "cpu"


def probe_runtime(bundle: Any, runtime: str, threads: int | None) -> dict[str, Any] | None:
    """Activate the runtime once before any work; refuse one that fell back to another provider.

    A GPU runtime that fell back to the CPU would publish CPU numbers under its name. Runners
    that can fall back say so in ``provider_report()`` (the ONNX Runtime adapter); the others
    either run what was asked or fail on activation.
    """
    from bert_export.runtimes.factory import make_runner

    with make_runner(bundle, runtime, threads) as probe:
        provider_report = getattr(probe, "provider_report", None)
        report = provider_report() if callable(provider_report) else None
    if report and report.get("fallback"):
        active = (report.get("active") or ["another provider"])[0]
        why = "; ".join(str(n) for n in report.get("notes") or [])
        raise BertExportError(
            f"{runtime} would run on {active} here ({why}); bench measures only the runtime asked for, "
            f"not a fallback: choose one that runs on this machine (e.g. --runtime ort)"
        )
    return report


def measure(runner: Runner, feed: dict[str, np.ndarray], warmup: int, runs: int, tick: Tick) -> list[int]:
    """Warm up (allocators, kernel selection, caches), then time each run with perf_counter_ns."""
    for _ in range(warmup):
        runner.infer(feed)
        tick()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        runner.infer(feed)
        times.append(time.perf_counter_ns() - start)
        tick()
    return times


def _run_cells(
    make: Callable[[], Runner],
    label: tuple[str, str],
    cells: list[tuple[int, int]],
    feeds: dict[tuple[int, int], dict[str, np.ndarray]],
    flops: dict[tuple[int, int], float],
    warmup: int,
    runs: int,
    tick: Tick,
    cuda: bool,
) -> list[Row]:
    """All cells on one runner, loaded once; memory is measured above the process before it loaded."""
    mem = PeakMemory()
    rows = []
    with make() as runner:
        for cell in cells:
            if cuda:
                import torch

                torch.cuda.reset_peak_memory_stats()
            with mem.window() as w:
                times = measure(runner, feeds[cell], warmup, runs, tick)
            peak, source = w["peak_mb"], "rss-delta"
            if cuda:
                peak, source = torch.cuda.max_memory_allocated() / 2**20, "cuda-max-allocated"
            rows.append(summarize(label[0], label[1], cell[0], cell[1], times, flops[cell], peak, source))
    return rows


def _prepare_torch(family: Family, task: str, threads: int | None) -> None:
    """Import torch and the model code before any memory baseline (library code is not the model's
    memory), and give PyTorch the same thread count as the runtime."""
    import torch

    from bert_export.models import get_task

    family.task_class(get_task(task))
    if threads is not None:
        torch.set_num_threads(threads)


def bench(
    bundle_path: str | Path,
    *,
    runtime: str = "ort",
    batches: Sequence[int] = DEFAULT_BATCHES,
    seqs: Sequence[int] | None = None,
    warmup: int = 3,
    runs: int = 20,
    threads: int | None = None,
    with_torch: bool = True,
    progress: Callable[[int], Tick] | None = None,
    precision: str | None = None,
) -> BenchResult:
    """Benchmark ``runtime`` (and PyTorch eager fp32 unless ``with_torch=False``) on every batch x seq.

    ``progress(total)`` is called once with the number of inferences to come and returns a
    callback ticked after each one (the CLI's progress bar). With ``threads`` this sets
    ``torch.set_num_threads`` for the process. The runtime runs all its cells first, then
    PyTorch, so that each one's memory is measured without the other loaded. ``precision`` picks
    one graph of a multi-precision bundle (default: its default).
    """
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import RUNTIMES, bundle_tokenizer, make_runner

    if runtime not in RUNTIMES:
        raise BertExportError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if warmup < 0 or runs < 1:
        raise BertExportError(f"--warmup must be >= 0 and --runs >= 1 (got {warmup} and {runs})")
    check_threads(threads)  # before torch.set_num_threads, which takes any number
    batches = parse_sizes(batches, "batch")
    b = load_bundle(bundle_path, precision=precision)
    seqs = resolve_seqs(parse_sizes(seqs, "seq") if seqs is not None else None, b.max_seq)
    family = get_family(b.manifest["family"])
    config = bundle_config(b)
    cells = sorted(((bt, s) for bt in batches for s in seqs), key=lambda c: (c[0] * c[1], c))
    check_working_memory(config, b.manifest["task"], cells, runtime)
    tokenizer = bundle_tokenizer(b)
    stream = _token_stream(tokenizer, int(config["vocab_size"]), max(seqs) + 37 * max(batches))
    specials = specials_of(tokenizer, b.manifest)
    feeds = {c: make_feed(b.inputs, specials, stream, *c) for c in cells}
    flops = {c: model_flops(config, family, b.manifest["task"], *c) for c in cells}

    if with_torch:
        _prepare_torch(family, b.manifest["task"], threads)
    load_start = load_avg()
    per_runner = len(cells) * (warmup + runs)
    tick = progress(per_runner * (2 if with_torch else 1)) if progress else (lambda: None)
    providers = probe_runtime(b, runtime, threads)
    results = _run_cells(
        lambda: make_runner(b, runtime, threads),
        (runtime, b.precision),
        cells,
        feeds,
        flops,
        warmup,
        runs,
        tick,
        cuda=False,
    )
    torch_rows: list[Row] = []
    if with_torch:
        device = _torch_device(runtime)
        torch_rows = _run_cells(
            lambda: torch_runner(b, device),
            ("torch", "fp32"),
            cells,
            feeds,
            flops,
            warmup,
            runs,
            tick,
            cuda=device == "cuda",
        )
        by_cell = {(r.batch, r.seq): r for r in torch_rows}
        for r in results:
            r.speedup_vs_torch = round(by_cell[(r.batch, r.seq)].p50_ms / r.p50_ms, 3)
    settings = {
        "bundle": str(b.path),
        "family": b.manifest["family"],
        "task": b.manifest["task"],
        "precision": b.precision,
        "runtime": runtime,
        "batches": list(batches),
        "seqs": list(seqs),
        "warmup": warmup,
        "runs": runs,
        "threads": threads,
        "torch_weights": "random (config.json); latency of dense fp32 does not depend on values",
        "providers": providers,
        "feed": "tokenizer on built-in text" if b.has_tokenizer else "random ids",
        "attention": "full (no padding)",
    }
    machine = machine_info(threads)
    machine["load_avg_start"] = load_start
    return BenchResult(results, torch_rows, machine, settings)


# --------------------------------------------------------------------------- plot


def plot(result: BenchResult, path: str | Path) -> Path:
    """Median latency against sequence length, one panel per batch size, one line per runtime/precision.

    The band spans p50..p90 (p99 is in the JSON: with few runs it is noisy) and the legend
    carries each line's speedup over PyTorch, so the picture reads on its own.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(result, plt)
    import io

    from bert_export.bundle.publish import write_atomic

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    out = Path(path)
    write_atomic(out, png.getvalue(), "--plot")  # a failed write never leaves half a PNG
    return out


TITLE_FONT_PT = 9


def figure(result: BenchResult, plt: Any) -> Any:
    """The plot's matplotlib figure. Constrained layout reserves room for the suptitle, which is wrapped
    to the figure's width: one 5.2-inch panel is narrower than the bundle/CPU line (it was cut at both edges)."""
    rows = result.results + result.torch
    batches = sorted({r.batch for r in rows})
    width = 5.2 * len(batches)
    fig, axes = plt.subplots(1, len(batches), figsize=(width, 4.2), squeeze=False, layout="constrained")
    for ax, batch in zip(axes[0], batches):
        for label in dict.fromkeys(r.label for r in rows):
            line = sorted((r for r in rows if r.label == label and r.batch == batch), key=lambda r: r.seq)
            xs = [r.seq for r in line]
            speed = [r.speedup_vs_torch for r in line if r.speedup_vs_torch is not None]
            span = (
                ""
                if not speed
                else f"{speed[0]:.2f}x"
                if len(set(speed)) == 1
                else f"{min(speed):.2f}-{max(speed):.2f}x"
            )
            name = f"{label} ({span} vs torch)" if span else label
            (drawn,) = ax.plot(xs, [r.p50_ms for r in line], marker="o", label=name)
            ax.fill_between(xs, [r.p50_ms for r in line], [r.p90_ms for r in line], color=drawn.get_color(), alpha=0.2)
        p50s = [r.p50_ms for r in rows if r.batch == batch]
        if max(p50s) / max(min(p50s), 1e-9) > 20:
            ax.set_yscale("log")
        ax.set_title(f"batch {batch}")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("latency, ms (line p50, band to p90)")
        ax.set_xticks(sorted({r.seq for r in rows}))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    s, m = result.settings, result.machine
    import textwrap

    # ~0.6 em per character of the default sans-serif: the most characters a line of the figure holds
    chars = max(20, int(width * 72 / (0.6 * TITLE_FONT_PT)) - 4)
    parts = (
        f"{Path(str(s.get('bundle'))).name}: {s.get('family')} {s.get('task')}",
        f"{m.get('cpu')}, threads {s.get('threads') or 'default'}, load {m.get('load_avg')}",
    )
    title = "\n".join(textwrap.fill(p, chars) for p in parts)
    fig.suptitle(title, fontsize=TITLE_FONT_PT)
    return fig
