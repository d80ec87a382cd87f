"""Accuracy-aware fallback in bounded time: keep the fewest, most sensitive nodes in higher precision.

1. Sensitivity, computed once: run the fp32 graph and the fully quantized graph side by side on
   the *calibration* text with every candidate's input and output exposed, and score each node by
   how much relative error it *adds* (error of its output minus error of its input). One build
   and two runs, however many candidates. (The previous version rebuilt the graph once per node,
   leave-one-out: 75 re-quantizations of ModernBERT-base took over 12 minutes without finishing.)
2. Search: keep the top-k nodes in fp32, k = 1, 2, 4, ... until the parity gate (on the parity
   cases, a different text set) holds, then bisect between the last failing and the first
   passing k. About 2*log2(k) gate evaluations instead of up to N. Then shrink the kept set
   (drop halves, quarters, ... while the gate holds): the ranking is only a prior.
3. Budget: when ``budget_s`` is spent, the best passing k found so far is kept; if none passed
   yet, every candidate is kept (the graph is then as accurate as the higher precision) and the
   result says the budget ran out.

Why our own search and not NNCF's ``quantize_with_accuracy_control``: that works only on
OpenVINO models and ranks by re-quantizing per group as well; ONNX Runtime's quantizer has no
accuracy control. The ranking here works for any graph pair whose tensors keep their names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

Build = Callable[[frozenset[str]], Path]
Probe = Callable[[Path], Any]  # -> runtimes.parity.Report
Rank = Callable[[Path], dict[str, float]]  # quantized graph -> sensitivity per candidate
Cost = Mapping[str, float]  # candidate -> what keeping it in higher precision costs (multiply-adds per token)

DEFAULT_BUDGET_S = 240.0


@dataclass
class FallbackResult:
    kept: list[str]
    passed: bool
    report: Any
    first_failures: list[str] = field(default_factory=list)
    first_summary: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    budget_s: float = DEFAULT_BUDGET_S
    budget_exhausted: bool = False
    candidates: int = 0
    kept_cost_share: float | None = None  # the kept nodes' share of all candidates' cost (None: costs unknown)

    def to_json(self) -> dict[str, Any]:
        return {
            "kept_fp32": self.kept,
            "kept_cost_share": None if self.kept_cost_share is None else round(self.kept_cost_share, 4),
            "passed": self.passed,
            "gate_evaluations": self.evaluations,
            "candidates": self.candidates,
            "search": "local-error ranking once, doubling + bisection on k, then shrinking the kept set"
            " (ddmin, costliest nodes first where costs are known)",
            "seconds": round(self.seconds, 1),
            "budget_s": self.budget_s,
            "budget_exhausted": self.budget_exhausted,
            "trials": self.trials,
            "before": {"failures": self.first_failures, "summary": self.first_summary},
            "sensitivity": {k: round(v, 6) for k, v in sorted(self.sensitivity.items(), key=lambda kv: -kv[1])[:16]},
        }


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def run_outputs(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    sess = _session(str(path))
    return [[np.asarray(o, dtype=np.float64) for o in sess.run(None, f)] for f in feeds]


def output_error(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """Mean over feeds of the summed relative L2 error of every output."""
    errs = []
    for r_outs, g_outs in zip(ref, got):
        e = 0.0
        for r, g in zip(r_outs, g_outs):
            e += (
                float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-12)) if np.all(np.isfinite(g)) else float("inf")
            )
        errs.append(e)
    return float(np.mean(errs)) if errs else 0.0


def rel_err(r: np.ndarray, g: np.ndarray) -> float:
    r64, g64 = r.astype(np.float64), g.astype(np.float64)
    if not np.all(np.isfinite(g64)):
        return 1e6
    return float(np.linalg.norm(r64 - g64) / max(np.linalg.norm(r64), 1e-12))


def added_error(
    io: dict[str, tuple[str, str]], ref: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Per node ``name -> (input tensor, output tensor)``: mean over feeds of err(out) - err(in)."""
    scores = {}
    for name, (x, y) in io.items():
        vals = [
            rel_err(r[y], g[y]) - rel_err(r[x], g[x])
            for r, g in zip(ref, got)
            if x in r and y in r and x in g and y in g
        ]
        scores[name] = float(np.mean(vals)) if vals else 0.0
    return scores


def _exposed(path: Path, tensors: set[str]) -> onnx.ModelProto:
    """``path`` with ``tensors`` added as graph outputs, each declared with its own element type: a
    candidate's input can be an int64 shape tensor (ModernBERT's fp16 candidates), which ONNX Runtime
    refuses to load when declared float."""
    model = onnx.load(str(path))
    known = {o.name for o in model.graph.output}
    types = _elem_types(model)
    for name in sorted(tensors - known):
        elem = types.get(name, onnx.TensorProto.FLOAT)
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return model


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can type (graphs under 2 GB, as ours are here)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is an aid here: untyped tensors stay float, as before
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return {k: v for k, v in types.items() if v}


def _run_named(
    model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], tensors: set[str]
) -> list[dict[str, np.ndarray]]:
    sess = _session(model)
    names = [o.name for o in sess.get_outputs() if o.name in tensors]
    return [dict(zip(names, sess.run(names, f))) for f in feeds]


def onnx_rank(reference_graph: Path, candidates: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]) -> Rank:
    """The sensitivity ranker for ONNX graphs: candidates' input/output tensors keep their names
    through our quantizers (QDQ inserts DequantizeLinear before the MatMul and keeps its output;
    the row-wise form writes the MatMul's original output tensor)."""
    ref_model = onnx.load(str(reference_graph))
    wanted = set(candidates)
    io = {n.name: (n.input[0], n.output[0]) for n in ref_model.graph.node if n.name in wanted}
    tensors = {t for pair in io.values() for t in pair}
    reference = _run_named(_exposed(reference_graph, tensors), feeds, tensors)

    def rank(quantized: Path) -> dict[str, float]:
        return added_error(io, reference, _run_named(_exposed(quantized, tensors), feeds, tensors))

    return rank


def fake_quant_rows(x: np.ndarray) -> np.ndarray:
    """Symmetric int8 with one scale per row (token): the dynamic mode's activations."""
    s = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-8) / 127.0
    return np.clip(np.round(x / s), -127, 127) * s


def fake_quant_tensor(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Asymmetric uint8 over a calibrated [lo, hi] (0 included): static QDQ's and NNCF's activations."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = max(hi - lo, 1e-8) / 255.0
    zp = np.round(-lo / s)
    return (np.clip(np.round(x / s) + zp, 0, 255) - zp) * s


def fake_quant_weight(w: np.ndarray) -> np.ndarray:
    """Symmetric int8 per output channel (columns of a [K, N] weight)."""
    s = np.maximum(np.abs(w).max(0, keepdims=True), 1e-12) / 127.0
    return np.clip(np.round(w / s), -127, 127) * s


def smooth_scale(x_amax: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel factor ``s_k = max|x_k|^a / max|W_k|^(1-a)`` for a [K, N] weight.

    BERT-like activations carry a few outlier channels (|x| ~6 where most are < 1), and an int8
    scale is set by them. ``x / s`` and ``s * W`` (exact in fp32) move that range into the weights,
    where per-channel weight scales absorb it; ``alpha`` is how much moves."""
    w_max = np.abs(w).max(1)
    return np.clip(x_amax**alpha / np.maximum(w_max, 1e-5) ** (1 - alpha), 1e-2, 1e2).astype(np.float32)


def local_errors(
    xs: dict[str, list[np.ndarray]],
    weights: dict[str, np.ndarray],
    scheme: str,
    smooth: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Per node: relative error of its own int8 product on the *reference* inputs (upstream error excluded).

    ``scheme``: ``rows`` (dynamic: per-token scales, after SmoothQuant's ``smooth`` factors), ``tensor-dynamic``
    (one scale per input tensor at run time, after ``smooth``) or ``tensor`` (static/NNCF: one calibrated range). Simulated in numpy from one fp32 run: no graph is rebuilt.
    """
    out = {}
    for name, w in weights.items():
        x_all = [x.reshape(-1, x.shape[-1]).astype(np.float64) for x in xs.get(name, [])]
        if not x_all:
            continue
        w = w.astype(np.float64)
        if smooth is not None and name in smooth:
            f = smooth[name].astype(np.float64)
            x_all, w = [x / f for x in x_all], w * f[:, None]
        lo, hi = min(float(x.min()) for x in x_all), max(float(x.max()) for x in x_all)  # the smoothed range
        wq, num, den = fake_quant_weight(w), 0.0, 0.0
        for x in x_all:
            if scheme == "rows":
                xq = fake_quant_rows(x)
            elif scheme == "tensor-dynamic":  # DynamicQuantizeMatMul: this input's own range, at run time
                xq = fake_quant_tensor(x, float(x.min()), float(x.max()))
            else:
                xq = fake_quant_tensor(x, lo, hi)
            y = x @ w
            num += float(np.square(xq @ wq - y).sum())
            den += float(np.square(y).sum())
        out[name] = float(np.sqrt(num / max(den, 1e-24)))
    return out


def onnx_local_rank(
    reference_graph: Path,
    candidates: Sequence[str],
    feeds: Sequence[dict[str, np.ndarray]],
    scheme: str,
    smooth: dict[str, np.ndarray] | None = None,
) -> Rank:
    """Sensitivity from one fp32 run of the ONNX graph (``local_errors``); the quantized graph is not needed."""
    from onnx import numpy_helper

    model = onnx.load(str(reference_graph))
    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(candidates)
    nodes = {n.name: n for n in model.graph.node if n.name in wanted and n.input[1] in inits}
    tensors = {n.input[0] for n in nodes.values()}
    runs = _run_named(_exposed(reference_graph, tensors), feeds, tensors)
    xs = {name: [r[n.input[0]] for r in runs] for name, n in nodes.items()}
    weights = {name: numpy_helper.to_array(inits[n.input[1]]) for name, n in nodes.items()}
    scores = local_errors(xs, weights, scheme, smooth)
    return lambda quantized: scores


def matmul_costs(model: onnx.ModelProto, candidates: Sequence[str]) -> dict[str, float]:
    """Multiply-adds per token of each candidate MatMul with a 2-D weight initializer (K x N); nodes
    without one (attention's activation x activation products) are left out (they count as cost 0).
    Takes the graph its caller already loaded: the builders read it for their candidates."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    wanted = set(candidates)
    return {
        n.name: float(np.prod(dims[n.input[1]]))
        for n in model.graph.node
        if n.name in wanted and len(n.input) > 1 and len(dims.get(n.input[1], [])) == 2
    }


def sensitivity(
    candidates: Sequence[str], build: Build, reference_graph: Path, feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Per node: the relative error it adds in the fully quantized graph (one build, two runs)."""
    return onnx_rank(reference_graph, candidates, feeds)(build(frozenset()))


def gate_line(report: Any) -> str:
    """The gate numbers a person watches: cosine mean/min or the agreements."""
    s = report.summary
    parts = [f"cos {s['cosine_mean']:.5f}/{s['cosine_min']:.5f}"] if "cosine_mean" in s else []
    parts += [
        f"{k.replace('_agreement', '')} {v:.3f}"
        for k, v in s.items()
        if k.endswith("agreement") or k == "span_exact_match"
    ]
    return ", ".join(parts) + (" PASS" if report.passed else " FAIL")


def cost_share(kept: Sequence[str], candidates: Sequence[str], cost: Cost | None) -> float | None:
    """What the kept nodes cost as a share of all candidates (None when costs are unknown)."""
    if not cost:
        return None
    total = sum(cost.get(n, 0.0) for n in candidates)
    return sum(cost.get(n, 0.0) for n in kept) / total if total else None


def accuracy_fallback(
    candidates: Sequence[str],
    build: Build,
    probe: Probe,
    reference_graph: Path | None,
    feeds: Sequence[dict[str, np.ndarray]],
    max_kept: int | None = None,
    *,
    rank: Rank | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    progress: bool = True,
    kept_label: str = "fp32",
    recalibrate: Callable[[], bool] | None = None,
    cost: Cost | None = None,
) -> FallbackResult:
    """Keep the most sensitive nodes in fp32, as few as the parity gate (``probe``) allows.

    ``recalibrate``: called once if the first graph fails the gate, before any node is kept; when it
    returns True the builder has changed how it quantizes (a setting chosen on calibration text), and
    the all-quantized graph is built and gated again. Costly searches run only where they are needed.
    Its time is its own (bounded by what it tries), not ``budget_s``'s: the budget bounds the open
    search over kept sets, and a recalibration that ate it would leave every node in fp32.

    ``cost``: per candidate, what keeping it costs (``matmul_costs``). The shrinking pass tries to drop
    the costliest nodes first, and the result reports the kept set's share of the cost. The search
    order stays sensitivity alone: ordering by sensitivity per unit of cost (the knapsack heuristic)
    was measured and rejected. On BERT-base's random-init qa bundle (OpenVINO int8) it kept 52
    MatMuls, 42% of the MatMul work, where sensitivity order keeps 3 FFN matrices (8%). A local error
    does not say how far a node's error reaches the outputs, and the cheap projections near the top
    of that order did not move the borderline span the gate turned on."""
    start = time.perf_counter()
    first = build(frozenset())
    report = probe(first)
    result = FallbackResult(
        [],
        report.passed,
        report,
        list(report.failures),
        dict(report.summary),
        evaluations=1,
        budget_s=budget_s,
        candidates=len(candidates),
    )
    result.trials.append({"kept": 0, "passed": report.passed, "summary": _short(report.summary)})
    if not report.passed and recalibrate is not None and recalibrate():
        start = time.perf_counter()
        first = build(frozenset())
        report = probe(first)
        result.passed, result.report, result.evaluations = report.passed, report, 2
        result.trials.append(
            {"kept": 0, "recalibrated": True, "passed": report.passed, "summary": _short(report.summary)}
        )
    if report.passed or not candidates:
        result.kept_cost_share = cost_share([], candidates, cost)
        result.seconds = time.perf_counter() - start
        return result
    if rank is None:
        assert reference_graph is not None, "an ONNX reference graph or a rank function is needed"
        rank = onnx_rank(reference_graph, candidates, feeds)
    result.sensitivity = rank(first)
    order = sorted(candidates, key=lambda n: -result.sensitivity.get(n, 0.0))
    limit = len(order) if max_kept is None else min(max_kept, len(order))
    reports: dict[int, Any] = {}
    built = [0]  # the k whose graph is on disk now (-1: a set from the shrinking pass)
    _last_built[0] = frozenset()

    with _Progress(progress, limit, kept_label) as bar:

        def trial(k: int) -> bool:
            rep = probe(build(frozenset(order[:k])))
            reports[k], built[0], _last_built[0] = rep, k, frozenset(order[:k])
            result.evaluations += 1
            result.trials.append({"kept": k, "passed": rep.passed, "summary": _short(rep.summary)})
            bar.show(k, limit, rep, time.perf_counter() - start)
            return rep.passed

        def out_of_time() -> bool:
            return time.perf_counter() - start > budget_s

        lo, hi, k = 0, None, 1  # lo: largest k known to fail; hi: smallest k known to pass
        while k < limit and not out_of_time():
            if trial(k):
                hi = k
                break
            lo, k = k, min(2 * k, limit)
        if hi is None and not out_of_time():
            hi = limit if trial(limit) else None
        while hi is not None and hi - lo > 1 and not out_of_time():
            mid = (lo + hi) // 2
            if trial(mid):
                hi = mid
            else:
                lo = mid
        if hi is None and out_of_time() and limit not in reports:
            result.budget_exhausted = True
            trial(limit)  # keep everything: as accurate as the higher precision gets
            hi = limit if reports[limit].passed else None
        elif hi is not None and hi - lo > 1:
            result.budget_exhausted = True
        kept = order[:hi] if hi is not None else order[:limit]
        final = reports.get(hi if hi is not None else limit)
        if hi is not None and len(kept) > 1:
            if cost:  # drop the costliest first: ddmin tries the first half (then quarter, ...) first
                kept = sorted(kept, key=lambda n: -(cost.get(n) or 0.0))
            kept, final = _shrink(kept, probe, build, final, out_of_time, result, bar, limit, start)
    if frozenset(kept) != _last_built[0]:
        build(frozenset(kept))  # the last build was another set: rewrite the chosen one
    result.kept, result.report, result.passed = list(kept), final, final is not None and final.passed
    result.kept_cost_share = cost_share(result.kept, candidates, cost)
    result.seconds = time.perf_counter() - start
    return result


_last_built: list[frozenset[str]] = [frozenset()]


def _shrink(
    kept: list[str],
    probe: Probe,
    build: Build,
    report: Any,
    out_of_time: Callable[[], bool],
    result: FallbackResult,
    bar: Any,
    limit: int,
    start: float,
) -> tuple[list[str], Any]:
    """Drop nodes from a passing kept set while the gate still holds (ddmin's complement step: halves,
    then quarters, ... down to single nodes), until the budget is spent.

    The ranking is a prior from local errors; a node whose own error is small but whose error reaches the
    outputs unattenuated (the last layer's FFN-down, say) can rank low and force a long prefix. This pass
    finds the few nodes that really matter inside that prefix.
    """
    chunk = max(1, len(kept) // 2)
    while chunk >= 1 and not out_of_time():
        i = 0
        while i < len(kept) and not out_of_time():
            trial_set = kept[:i] + kept[i + chunk :]
            rep = probe(build(frozenset(trial_set)))
            _last_built[0] = frozenset(trial_set)
            result.evaluations += 1
            result.trials.append(
                {"kept": len(trial_set), "passed": rep.passed, "summary": _short(rep.summary), "shrink": True}
            )
            bar.show(len(trial_set), limit, rep, time.perf_counter() - start)
            if rep.passed:
                kept, report = trial_set, rep
            else:
                i += chunk
        if chunk == 1:
            break
        chunk = max(1, chunk // 2)
    if out_of_time():
        result.budget_exhausted = True
    return kept, report


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) for k, v in summary.items() if isinstance(v, float)}


class _Progress:
    """A transient rich progress bar: trials run, k kept, and the gate numbers of the last trial."""

    def __init__(self, enabled: bool, total: int, kept_label: str = "fp32") -> None:
        self.enabled, self.total, self.kept_label = enabled, total, kept_label
        self.progress: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            from bert_export.models.progress import console

            self.progress = Progress(
                TextColumn("  fallback"),
                BarColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("ranking nodes", total=max(1, self.total))
        return self

    def show(self, k: int, total: int, report: Any, elapsed: float) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task, completed=k, description=f"{k}/{total} kept {self.kept_label}: {gate_line(report)}"
            )

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
