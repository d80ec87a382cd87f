"""CPU INT8 benchmark: our ORT and OpenVINO bundles against ORT ``quantize_dynamic``, OpenVINO + NNCF
defaults and PyTorch eager, with the CPU's own ceilings measured in the same run.

    flock /tmp/bert-export-heavy.lock .venv/bin/python benchmarks/bench_cpu_int8.py [--families bert,modernbert]
        [--runs 30] [--rounds 1] [--work /tmp/bench-cpu-int8] [--skip-prepare] [--tiny]

Steps, each in its own process (runtimes' thread pools in one process slowed each other up to 2x):

1. ``prepare`` (per family): full-size random-init ``qa`` models (``BertConfig()``/``ModernBertConfig()``),
   max_seq 512: our bundles (ORT fp32 fused, ORT int8 dynamic and static with the accuracy fallback,
   OpenVINO int8 via NNCF + fallback, OpenVINO fp32/bf16), the plain export, ORT ``quantize_dynamic``
   defaults on it (per-channel off, QInt8 weights: the documented defaults) and ``nncf.quantize`` defaults
   (transformer model type, 300 samples cap, our 32 calibration sentences) on it. Export times recorded.
2. ``time``: one variant per process, 2 threads, batch 1 / 8 / 32 at sequence 128 and batch 1 at 512,
   median of ``--runs`` after 5 warm-up runs. ``--rounds N``: N processes per variant, the variants taking
   turns, and each cell the median of the processes' medians (this project's VMs have slow spells of seconds
   to minutes, and one process per cell let a spell decide a ratio).
3. ``ceilings``: single MatMuls of the FFN shape (128 x 768 x 3072): u8s8 integer (ORT MatMulInteger),
   fp32 (ORT MatMul), bf16 (OpenVINO MatMul with the bf16 hint) and OpenVINO's int8 (NNCF'd MatMul); and
   BERT-base's 48 weight GEMMs chained (``gemm_chain``), with the model's 85 MB of int8 weights and with one
   layer's reused: the floor for the profiles' int8 GEMM time, since the single MatMuls keep their weights in
   cache and the model cannot.
4. ``gates`` (one process): the packaged MiniLM (real text) through the parity gate for our int8 modes
   and the baselines, so speed is compared at equal accuracy.

Writes ``benchmarks/cpu_int8.json`` and ``benchmarks/cpu_int8.md``, or ``cpu_int8_xeon_amx.*`` on a CPU with
AMX (``cpu_suffix``): the two CPU classes this project's machines come in keep their own files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_precision import median_ms  # one timing loop for both precision benchmarks (same folder)

HERE = Path(__file__).resolve().parent
THREADS = 2
SHAPES = ((1, 128), (8, 128), (32, 128), (1, 512))  # b8/b32: the serving case
FFN = (128, 768, 3072)

# label -> (kind, how it is built). kind: ort (an .onnx file), ov (an IR or ONNX for OpenVINO, with a hint), torch
VARIANTS: dict[str, dict[str, Any]] = {
    "PyTorch eager fp32": {"kind": "torch"},
    "plain export fp32 (ORT)": {"kind": "ort", "file": "plain/onnx/model.onnx"},
    "ours fp32 fused (ORT)": {"kind": "ort", "file": "fp32/onnx/model.onnx"},
    "ours int8 dynamic (ORT)": {"kind": "ort", "file": "int8-dynamic/onnx/model_quantized.onnx"},
    "ours int8 dynamic + per-tensor pass (ORT)": {"kind": "ort", "file": "int8-dynamic-pt/onnx/model_quantized.onnx"},
    "ours int8 static (ORT)": {"kind": "ort", "file": "int8-static/onnx/model_quantized.onnx"},
    "ORT quantize_dynamic defaults": {"kind": "ort", "file": "ort-qdq-default.onnx"},
    "OpenVINO default (plain export)": {"kind": "ov", "file": "plain/onnx/model.onnx", "hint": None},
    "OpenVINO + NNCF defaults": {"kind": "ov", "file": "nncf-default/model.xml", "hint": None},
    "ours OpenVINO int8 (NNCF + fallback, the bundle's hint)": {
        "kind": "ov",
        "file": "ov-int8/openvino/model.xml",
        "hint": "bundle",
    },
    "ours OpenVINO int8, f32 hint": {"kind": "ov", "file": "ov-int8/openvino/model.xml", "hint": "f32"},
    "ours OpenVINO int8, bf16 hint": {"kind": "ov", "file": "ov-int8/openvino/model.xml", "hint": "bf16"},
    # The "static shape buckets" lever, measured on exact shapes (its ceiling: no padding to a bucket).
    "OpenVINO + NNCF defaults, static shapes": {
        "kind": "ov",
        "file": "nncf-default/model.xml",
        "hint": None,
        "static": True,
    },
    "ours OpenVINO int8, bf16 hint, static shapes": {
        "kind": "ov",
        "file": "ov-int8/openvino/model.xml",
        "hint": "bf16",
        "static": True,
    },
    "ours OpenVINO fp32 (f32 hint)": {"kind": "ov", "file": "ov-fp32/openvino/model.xml", "hint": "f32", "skip": True},
    "ours OpenVINO bf16": {"kind": "ov", "file": "ov-fp32/openvino/model.xml", "hint": "bf16"},
}


def feeds(names: list[str], vocab: int, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f = {
        "input_ids": rng.integers(5, vocab, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": np.zeros((batch, seq), np.int64),
    }
    return {n: f[n] for n in names}


def resolve_hint(hint: str | None, ir_path: Path) -> str | None:
    """``"bundle"``: the bundle's own hint (manifest ``openvino.precision_hint``), what ``run --runtime openvino`` sets."""
    if hint != "bundle":
        return hint
    manifest = json.loads((ir_path.parent.parent / "manifest.json").read_text())
    return manifest["optimization"]["openvino"]["precision_hint"]


def family_info(family: str, tiny: bool) -> tuple[list[str], int, dict[str, Any]]:
    from bert_export.models import get_family

    fam = get_family(family)
    import transformers

    cfg = getattr(transformers, fam.config_class)(**(dict(fam.tiny_config) if tiny else {}))
    return list(fam.input_names), int(cfg.vocab_size), cfg.to_dict()


def gop(cfg: dict[str, Any], seq: int) -> float:
    """Multiply-adds x2 per sequence in the encoder's MatMuls (projections, FFN, QK^T and PV)."""
    h, layers, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    if cfg.get("model_type") == "modernbert":
        per_token = h * 3 * h + h * h + h * 2 * inter + inter * h
    else:
        per_token = 4 * h * h + 2 * h * inter
    return 2 * layers * (per_token * seq + 2 * seq * seq * h) / 1e9


# ---- step 1: prepare ------------------------------------------------------------------------------------


def prepare(family: str, work: Path, tiny: bool) -> dict[str, Any]:
    """Export every variant into ``work/family`` (skipping those that exist); returns export seconds."""
    from bert_export.exporter import export
    from bert_export.models import get_family
    from bert_export.quantize.pipeline import OptimizeOptions

    fam = get_family(family)
    root = work / family
    root.mkdir(parents=True, exist_ok=True)
    overrides = dict(fam.tiny_config) if tiny else None
    bundles = {
        "plain": (OptimizeOptions(optimize=False), False),
        "fp32": (OptimizeOptions(), False),
        "int8-dynamic": (OptimizeOptions(int8=True, int8_mode="dynamic"), True),
        "int8-dynamic-pt": (OptimizeOptions(int8=True, int8_mode="dynamic", per_tensor=True), True),
        "int8-static": (OptimizeOptions(int8=True, int8_mode="static"), True),
        "ov-int8": (OptimizeOptions(runtime="openvino", int8=True, fallback_budget=150), True),
        "ov-fp32": (OptimizeOptions(runtime="openvino"), False),
    }
    seconds: dict[str, Any] = {}
    for name, (opt, validate) in bundles.items():
        if (root / name / "manifest.json").exists():
            continue
        t = time.perf_counter()
        try:
            res = export(
                family,
                "qa",
                random_init=True,
                overrides=overrides,
                out=root / name,
                max_seq=128 if tiny else 512,
                validate=validate,
                optimization=opt,
                force=True,
            )
            fb = res.manifest.get("optimization", {}).get("fallback", {})
            seconds[name] = {
                "seconds": round(time.perf_counter() - t, 1),
                "kept_fp32": len(fb.get("kept_fp32", [])),
                "kept_cost_share": fb.get("kept_cost_share"),
                "gate_evaluations": fb.get("gate_evaluations"),
                "fallback_seconds": fb.get("seconds"),
                "passed": (res.manifest.get("parity") or {}).get("passed"),
            }
        except Exception as exc:  # a failed gate is a result too
            seconds[name] = {"seconds": round(time.perf_counter() - t, 1), "error": str(exc)[:300]}
        print(f"  {family} {name}: {seconds[name]}", flush=True)
    plain = root / "plain" / "onnx" / "model.onnx"
    if not (root / "ort-qdq-default.onnx").exists():
        from onnxruntime.quantization import quantize_dynamic

        t = time.perf_counter()
        quantize_dynamic(str(plain), str(root / "ort-qdq-default.onnx"))
        seconds["ort-qdq-default"] = {"seconds": round(time.perf_counter() - t, 1)}
    if not (root / "nncf-default" / "model.xml").exists():
        t = time.perf_counter()
        nncf_default(plain, root / "nncf-default", family, tiny)
        seconds["nncf-default"] = {"seconds": round(time.perf_counter() - t, 1)}
    old = json.loads((root / "prepare.json").read_text()) if (root / "prepare.json").exists() else {}
    old.update(seconds)
    (root / "prepare.json").write_text(json.dumps(old, indent=2))
    return old


def nncf_default(onnx_path: Path, out: Path, family: str, tiny: bool) -> None:
    """What an OpenVINO user does: convert, ``nncf.quantize(model_type=TRANSFORMER)`` on 32 sentences."""
    import nncf
    import openvino as ov

    from bert_export.models import get_family
    from bert_export.quantize.calibration import calibration_feeds
    from bert_export.runtimes.factory import load_tokenizer

    fam = get_family(family)
    tok = load_tokenizer(onnx_path.parent.parent)  # the bundle: graphs live in onnx/
    _, vocab, _ = family_info(family, tiny)
    data = calibration_feeds(fam.inputs, tok, samples=32, max_seq=128, vocab_size=vocab)
    model = ov.convert_model(str(onnx_path))
    q = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data))
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out / "model.xml"))


# ---- step 2: time one variant ----------------------------------------------------------------------------


def time_variant(label: str, family: str, work: Path, runs: int, tiny: bool) -> dict[str, float]:
    spec = VARIANTS[label]
    if spec.get("skip"):
        raise SystemExit("skipped in this run (time)")
    names, vocab, _ = family_info(family, tiny)
    path = work / family / spec.get("file", "")
    if spec["kind"] == "torch":
        import torch

        from bert_export.exporter.loading import load_source
        from bert_export.models import get_family, get_task

        torch.set_num_threads(THREADS)
        fam = get_family(family)
        model = load_source(
            fam, get_task("qa"), random_init=True, overrides=dict(fam.tiny_config) if tiny else None
        ).model.eval()

        def runner(f: dict[str, np.ndarray]) -> Any:
            t = {k: torch.from_numpy(v) for k, v in f.items()}

            def run() -> Any:
                with torch.inference_mode():
                    return model(**t)

            return run
    elif spec["kind"] == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def runner(f: dict[str, np.ndarray]) -> Any:
            return lambda: sess.run(None, f)
    else:
        import openvino as ov

        cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(THREADS)}
        hint = resolve_hint(spec["hint"], path)
        if hint:
            cfg["INFERENCE_PRECISION_HINT"] = hint
        core = ov.Core()
        # static rows compile per shape below; the dynamic model is compiled only for the rows that run it
        dynamic = None if spec.get("static") else core.compile_model(str(path), "CPU", cfg).create_infer_request()

        def runner(f: dict[str, np.ndarray]) -> Any:
            request = dynamic
            if spec.get("static"):  # compiled for this exact shape (OpenVINO's reshape), outside the timing
                model = core.read_model(str(path))
                model.reshape({name: ov.PartialShape(list(a.shape)) for name, a in f.items()})
                request = core.compile_model(model, "CPU", cfg).create_infer_request()
            return lambda: request.infer(f, share_inputs=True)

    out = {}
    for batch, seq in SHAPES:
        fed = feeds(names, vocab, batch, min(seq, 128) if tiny else seq)
        out[f"b{batch}s{seq}"] = median_ms(
            runner(fed), runs if batch * seq <= 128 else max(5, runs // 6), warmup=5 if batch * seq <= 128 else 2
        )
    return out


# ---- step 3: ceilings ------------------------------------------------------------------------------------


def ceilings(runs: int) -> dict[str, float]:
    """GOP/s of single FFN-shaped MatMuls: what the cores can do at best in each number format."""
    import onnxruntime as ort
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = FFN
    ops = 2 * m * k * n / 1e9
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}

    def ort_time(node: Any, inits: list, x: np.ndarray, xtype: int) -> float:
        g = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", xtype, [m, k])],
            [
                helper.make_tensor_value_info(
                    "y", TensorProto.FLOAT if xtype == TensorProto.FLOAT else TensorProto.INT32, None
                )
            ],
            inits,
        )
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return median_ms(lambda: sess.run(None, {"x": x}), runs * 3)

    wq = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "w")
    ms = ort_time(
        helper.make_node("MatMulInteger", ["x", "w"], ["y"]),
        [wq],
        rng.integers(0, 255, (m, k), dtype=np.uint8),
        TensorProto.UINT8,
    )
    out["u8s8 MatMulInteger (ORT) GOP/s"] = round(ops / ms * 1e3, 1)
    # ORT's own dynamic int8 kernel (DynamicQuantizeMatMul, weights prepacked): what quantize_dynamic emits
    wq_f = rng.standard_normal((k, n), dtype=np.float32)
    ws = numpy_helper.from_array((np.abs(wq_f).max(0) / 127).astype(np.float32), "ws")
    node = helper.make_node("DynamicQuantizeMatMul", ["x", "w", "ws"], ["y"], domain="com.microsoft")
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [wq, ws],
    )
    dq = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sess = ort.InferenceSession(dq.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    xf = rng.standard_normal((m, k), dtype=np.float32)
    ms = median_ms(lambda: sess.run(None, {"x": xf}), runs * 3)
    out["int8 DynamicQuantizeMatMul, per-tensor (ORT) GOP/s"] = round(ops / ms * 1e3, 1)
    wf = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
    ms = ort_time(
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        [wf],
        rng.standard_normal((m, k), dtype=np.float32),
        TensorProto.FLOAT,
    )
    out["fp32 MatMul (ORT) GFLOP/s"] = round(ops / ms * 1e3, 1)
    # OpenVINO: one MatMul, f32 and bf16 hints; and the same MatMul through NNCF (int8)
    from openvino import opset13 as ops_

    x = ops_.parameter([m, k], np.float32, name="x")
    w = ops_.constant(rng.standard_normal((k, n), dtype=np.float32))
    model = ov.Model([ops_.matmul(x, w, False, False)], [x])
    feed = {"x": rng.standard_normal((m, k), dtype=np.float32)}
    for hint in ("f32", "bf16"):
        req = (
            ov.Core()
            .compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": str(THREADS)})
            .create_infer_request()
        )
        ms = median_ms(lambda: req.infer(feed), runs * 3)
        out[f"{hint} MatMul (OpenVINO) GFLOP/s"] = round(ops / ms * 1e3, 1)
    import nncf

    q = nncf.quantize(model, nncf.Dataset([feed] * 4), subset_size=4)
    req = (
        ov.Core()
        .compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(THREADS)})
        .create_infer_request()
    )
    ms = median_ms(lambda: req.infer(feed), runs * 3)
    out["int8 MatMul (OpenVINO, NNCF) GOP/s"] = round(ops / ms * 1e3, 1)
    return out | gemm_chain(runs)


# BERT-base's encoder weights as (K, N) MatMuls per layer: fused QKV, attention output, FFN in and out
BERT_BASE_LAYER = ((768, 2304), (768, 768), (768, 3072), (3072, 768))
BERT_BASE_LAYERS = 12


def chain_gop(batch: int, seq: int) -> float:
    """GOP of BERT-base's weight GEMMs alone (``gop`` without QK^T and PV)."""
    return 2 * batch * seq * sum(k * n for k, n in BERT_BASE_LAYER) * BERT_BASE_LAYERS / 1e9


def _chain_onnx(batch: int, seq: int, distinct: bool, rng: np.random.Generator) -> tuple[Any, float]:
    """BERT-base's weight GEMMs alone as one ONNX graph of per-tensor ``DynamicQuantizeMatMul``s (our
    ``--int8-per-tensor`` kernel), each layer feeding the next; returns the model and its GOP.

    ``distinct``: 12 layers of their own weights (85 MB of int8, streamed from memory as in the model);
    otherwise one layer's 7 MB reused by all 12, so the gap between the two is the cost of fetching weights.
    A ``Slice`` hands the QKV output's first 768 columns on (0.4 MB copied, negligible) so that every
    GEMM's output is used and nothing but the GEMMs and their activation quantization is timed."""
    from onnx import TensorProto, helper, numpy_helper

    m = batch * seq
    nodes, inits, x = [], [], "x"
    shared: dict[int, tuple[str, str]] = {}
    for layer in range(BERT_BASE_LAYERS):
        for j, (k, n) in enumerate(BERT_BASE_LAYER):
            if distinct or j not in shared:
                w, s = f"w{layer}_{j}", f"s{layer}_{j}"
                inits.append(numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), w))
                # keep activations O(1): int8 weights ~ U(-127,127) have std ~73, summed over k terms
                inits.append(numpy_helper.from_array(np.float32(1 / (73 * np.sqrt(k))), s))
                shared[j] = (w, s)
            w, s = shared[j]
            y = f"y{layer}_{j}"
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [x, w, s], [y], domain="com.microsoft"))
            x = y
            if j == 0:  # QKV [m, 2304] -> its first 768 columns feed the attention output projection
                nodes.append(helper.make_node("Slice", [y, "s0", "s768", "ax1"], [f"{y}_q"]))
                x = f"{y}_q"
    inits += [
        numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (("s0", 0), ("s768", 768), ("ax1", 1))
    ]
    g = helper.make_graph(
        nodes,
        "bert_base_gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, 768])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model, chain_gop(batch, seq)


def _chain_openvino(batch: int, seq: int, distinct: bool, rng: np.random.Generator) -> Any:
    """The same chain for OpenVINO: f32 MatMuls on constant weights, quantized by ``nncf.quantize``'s
    defaults as the "OpenVINO + NNCF defaults" row is, so they compile to OpenVINO's int8 FullyConnected."""
    import nncf
    import openvino as ov
    from openvino import opset13 as o

    m = batch * seq
    x = o.parameter([m, 768], np.float32, name="x")
    y: Any = x
    shared: dict[int, Any] = {}
    for _ in range(BERT_BASE_LAYERS):
        for j, (k, n) in enumerate(BERT_BASE_LAYER):
            if distinct or j not in shared:
                shared[j] = o.constant((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
            y = o.matmul(y, shared[j], False, False)
            if j == 0:
                y = o.slice(y, np.array([0, 0]), np.array([m, 768]), np.array([1, 1]))
    model = ov.Model([y], [x])
    feed = {"x": rng.standard_normal((m, 768)).astype(np.float32)}
    return nncf.quantize(model, nncf.Dataset([feed] * 4), subset_size=4), feed


def gemm_chain(runs: int) -> dict[str, float]:
    """GOP/s of BERT-base's weight GEMMs alone, at b1 and b8 s128, in ORT and OpenVINO + NNCF, with the
    model's own 85 MB of weights and with one layer's reused. The single-MatMul ceilings above keep 2 MB of
    weights in cache; the model cannot, so this is the floor the profiles' int8 GEMM time is judged against:
    if a runtime's GEMMs in the model run at this chain's speed, no graph rewrite makes them faster."""
    import onnxruntime as ort
    import openvino as ov

    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    for batch in (1, 8):
        reps = runs * 3 if batch == 1 else max(5, runs // 3)
        for distinct, what in ((True, "85 MB"), (False, "one layer's 7 MB")):
            model, ops = _chain_onnx(batch, 128, distinct, rng)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            xf = rng.standard_normal((batch * 128, 768)).astype(np.float32)
            ms = median_ms(lambda: sess.run(None, {"x": xf}), reps)
            out[f"chain b{batch} s128, weights {what}: int8 DynamicQuantizeMatMul (ORT) GOP/s"] = round(
                ops / ms * 1e3, 1
            )
            q, feed = _chain_openvino(batch, 128, distinct, rng)
            req = ov.Core().compile_model(q, "CPU", {"INFERENCE_NUM_THREADS": str(THREADS)}).create_infer_request()
            ms = median_ms(lambda: req.infer(feed), reps)
            out[f"chain b{batch} s128, weights {what}: int8 FullyConnected (OpenVINO, NNCF) GOP/s"] = round(
                ops / ms * 1e3, 1
            )
    return out


# ---- step 4: accuracy gates on MiniLM --------------------------------------------------------------------


def gates(work: Path) -> dict[str, Any]:
    """Pooled cosine and agreement of each int8 variant on the packaged MiniLM (real text, the int8 gate)."""
    import nncf
    import openvino as ov
    from onnxruntime.quantization import quantize_dynamic

    from bert_export.exporter import export
    from bert_export.exporter.loading import load_source
    from bert_export.models import get_family, get_task
    from bert_export.quantize.calibration import calibration_feeds
    from bert_export.quantize.pipeline import OptimizeOptions
    from bert_export.quantize.probe import ParityProbe
    from bert_export.runtimes.cases import build_cases
    from bert_export.runtimes.factory import load_tokenizer
    from bert_export.runtimes.openvino_runner import OpenVinoRunner
    from bert_export.runtimes.torch_runner import TaskGraph

    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    root = work / "minilm"
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for name, opt in {
        "ours int8 dynamic (ORT)": OptimizeOptions(int8=True, int8_mode="dynamic"),
        "ours int8 dynamic + per-tensor pass (ORT)": OptimizeOptions(int8=True, int8_mode="dynamic", per_tensor=True),
        "ours int8 static (ORT)": OptimizeOptions(int8=True, int8_mode="static"),
        "ours OpenVINO int8 (NNCF + fallback, the bundle's hint)": OptimizeOptions(runtime="openvino", int8=True),
        "ours OpenVINO bf16": OptimizeOptions(runtime="openvino", bf16=True),
        "plain": OptimizeOptions(optimize=False),
    }.items():
        t = time.perf_counter()
        res = export(
            "bert",
            "embed",
            model=minilm,
            out=root / name.split(" (")[0].replace(" ", "-"),
            max_seq=128,
            optimization=opt,
            force=True,
        )
        if name != "plain":
            fb = res.manifest["optimization"].get("fallback", {})
            out[name] = {
                **_gate(res.manifest["parity"]["summary"]),
                "kept_fp32": len(fb.get("kept_fp32", [])),
                "kept_cost_share": fb.get("kept_cost_share"),
                "export_s": round(time.perf_counter() - t, 1),
            }
            ov_section = res.manifest["optimization"].get("openvino")
            if ov_section:
                out[name]["hint"] = ov_section["precision_hint"]
            gran = res.manifest["optimization"].get("int8", {}).get("granularity")
            if gran:
                out[name]["per_row"] = len(gran["kept_per_row"])
    plain = root / "plain" / "onnx" / "model.onnx"
    fam, task = get_family("bert"), get_task("embed")
    source = load_source(fam, task, model=minilm)
    tok = load_tokenizer(root / "plain")
    outputs = tuple(o for o in task.outputs)
    from bert_export.exporter.api import graph_outputs

    outputs = graph_outputs(fam, task, source)
    graph = TaskGraph(source.model, [o.name for o in outputs])
    cases = build_cases(fam, task, source.config, tok, 128, 0)
    ort_probe = ParityProbe(graph, fam.inputs, outputs, task, cases, source.pooling["mode"], 128, "int8")
    qd = root / "ort-qdq-default.onnx"
    quantize_dynamic(str(plain), str(qd))
    out["ORT quantize_dynamic defaults"] = _gate(ort_probe(qd).summary)
    data = calibration_feeds(fam.inputs, tok, samples=32, max_seq=128, vocab_size=source.config.vocab_size)
    q = nncf.quantize(
        ov.convert_model(str(plain)), nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=32
    )
    ov.save_model(q, str(root / "nncf-default.xml"))
    for hint in ("bf16", "f32"):
        probe = ParityProbe(
            graph,
            fam.inputs,
            outputs,
            task,
            cases,
            source.pooling["mode"],
            128,
            "int8",
            runner=lambda p, h=hint: OpenVinoRunner(p, fam.inputs, outputs, 128, precision_hint=h),
        )
        probe._reference = ort_probe.reference
        out[f"OpenVINO + NNCF defaults ({hint} hint)"] = _gate(probe(root / "nncf-default.xml").summary)
    return out


def _gate(summary: dict[str, Any]) -> dict[str, Any]:
    from bert_export.models.precisions import GATES

    g = GATES["int8"]
    cm, cmin = summary.get("cosine_mean"), summary.get("cosine_min")
    return {
        "cosine_mean": round(cm, 5),
        "cosine_min": round(cmin, 5),
        "int8_gate": bool(cm >= g.cos_mean and cmin >= g.cos_min),
    }


# ---- driver ----------------------------------------------------------------------------------------------


def sub(args: list[str]) -> Any:
    """Run one step in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(THREADS)},
    )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    print(proc.stdout.rsplit("\n", 2)[0][-1500:], flush=True) if proc.stdout.count("\n") > 1 else None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_flags() -> list[str]:
    """The ISA features that decide which int8/bf16 kernels run (AMX changes the picture entirely)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return []
    return sorted(
        flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}
    )


def cpu_suffix() -> str:
    """``_xeon_amx`` on a CPU with AMX, else empty: the results files' suffix. The two CPU classes give
    different pictures (AMX's int8 ceiling is ~5x AVX512-VNNI's), and a run on one must not overwrite
    the other's figures."""
    return "_xeon_amx" if "amx_int8" in cpu_flags() else ""


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _merge_turns(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's cells from its ``--rounds`` processes: per shape, the median of the processes' medians
    (their values kept under ``processes``); a variant that failed in any process keeps that error."""
    if len(runs) == 1 or any("error" in run for run in runs):
        return next((run for run in runs if "error" in run), runs[0])
    merged: dict[str, Any] = {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}
    merged["processes"] = {key: [run[key] for run in runs] for key in runs[0]}
    return merged


def _cells(ms: dict[str, float], nncf: dict[str, float], batch: int, seq: int) -> str:
    """One shape's time and its ratio to OpenVINO + NNCF's (``-`` where a run lacks the shape)."""
    key = f"b{batch}s{seq}"
    if not isinstance(ms.get(key), (int, float)):
        return "- | -"
    ratio = f"{nncf[key] / ms[key]:.2f}x" if isinstance(nncf.get(key), (int, float)) else "-"
    return f"{ms[key]:.1f} | {ratio}"


def markdown(r: dict[str, Any]) -> str:
    c = r["ceilings"]
    lines = [
        "# CPU INT8: ours vs ORT quantize_dynamic vs OpenVINO + NNCF",
        "",
        f"Written by `benchmarks/bench_cpu_int8.py` on {r['machine']['cpu']} ({THREADS} threads), "
        f"ONNX Runtime {r['machine']['onnxruntime']}, OpenVINO {r['machine']['openvino']}, NNCF {r['machine']['nncf']}, "
        f"torch {r['machine']['torch']}; CPU features: {', '.join(r['machine'].get('cpu_flags', [])) or 'unknown'}. Load average before / after: {r['load_before']} / {r['load_after']} "
        "(compare ratios within one run: absolute times vary between machines and hours). Full-size random-init "
        f"`qa` models, each variant timed in its own process, medians of {r['runs']} at b1 s128 after 5 warm-up runs "
        f"({max(5, r['runs'] // 6)} after 2 at the larger shapes)"
        + (
            f"; each cell the median of {r['rounds']} such processes, the variants taking turns."
            if r.get("rounds", 1) > 1
            else "."
        ),
        "",
        "## CPU ceilings (same run: single MatMuls 128x768x3072; `chain`: BERT-base's 48 weight GEMMs in one graph)",
        "",
        "| kernel | GOP/s |",
        "|---|---:|",
    ]
    lines += [f"| {k.rsplit(' ', 1)[0]} | {v} |" for k, v in c.items()]
    int_ceiling = max(
        [v for k, v in c.items() if k.startswith(("u8s8", "int8")) and isinstance(v, (int, float))] or [1]
    )
    for family, rows in r["families"].items():
        g = r["gop"][family]
        lines += [
            "",
            f"## {family}-base ({g:.1f} GOP per sequence at 128; int8 floor at the best int8 ceiling "
            f"{g / int_ceiling * 1e3:.1f} ms)",
            "",
            "| variant | % of int8 ceiling at b1 s128 | "
            + " | ".join(f"b{b} s{q} ms | vs OV+NNCF" for b, q in SHAPES)
            + " |",
            "|---|---:|" + "---:|---:|" * len(SHAPES),
        ]
        nncf = rows.get("OpenVINO + NNCF defaults", {})
        for label, ms in rows.items():
            if "error" in ms:
                lines.append(f"| {label} | error: {ms['error'][:80]} |" + " |" * (2 * len(SHAPES)))
                continue
            eff = g / ms["b1s128"] * 1e3 / int_ceiling * 100
            lines.append(f"| {label} | {eff:.0f}% | " + " | ".join(_cells(ms, nncf, b, q) for b, q in SHAPES) + " |")
        prep = r.get("prepare", {}).get(family, {})
        if prep:
            lines += [
                "",
                "Export (with the accuracy fallback where the gate was checked): "
                + "; ".join(
                    f"{k} {v.get('seconds')} s"
                    + (
                        f" (kept {v['kept_fp32']} fp32, {v['gate_evaluations']} gate runs)"
                        if v.get("gate_evaluations")
                        else ""
                    )
                    + (" FAILED: " + v["error"][:120] if "error" in v else "")
                    for k, v in prep.items()
                    if isinstance(v, dict)
                ),
            ]
    if r.get("gates"):
        lines += [
            "",
            "## Accuracy at the int8 gate (packaged MiniLM, real text: pooled cosine mean >= 0.997, min >= 0.995)",
            "",
            "| variant | cosine mean | cosine min | passes | kept fp32 | per-row MatMuls | OpenVINO hint |",
            "|---|---:|---:|---|---:|---:|---|",
        ]
        for label, s in r["gates"].items():
            if "error" in s:
                lines.append(f"| {label} | error: {s['error'][:80]} | | | | | |")
                continue
            lines.append(
                f"| {label} | {s['cosine_mean']:.5f} | {s['cosine_min']:.5f} | {'yes' if s['int8_gate'] else 'no'} "
                f"| {s.get('kept_fp32', '-')} | {s.get('per_row', '-')} | {s.get('hint', '-')} |"
            )
    lines += ["", r.get("notes", "")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="bert,modernbert")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-cpu-int8"))
    parser.add_argument("--skip-prepare", action="store_true")
    parser.add_argument("--skip-gates", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated variant labels to time (default: all)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="processes per cell, the variants taking turns (a slow spell of the machine then hits them all)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="Smoke test on tiny configs (writes nothing under benchmarks/)."
    )
    parser.add_argument("--notes", default="")
    parser.add_argument("--step", choices=["prepare", "time", "ceilings", "gates"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tiny = ["--tiny"] if args.tiny else []
    if args.step == "prepare":
        print(json.dumps(prepare(args.family, args.work, args.tiny)))
        return
    if args.step == "time":
        print(json.dumps(time_variant(args.variant, args.family, args.work, args.runs, args.tiny)))
        return
    if args.step == "ceilings":
        print(json.dumps(ceilings(args.runs)))
        return
    if args.step == "gates":
        print(json.dumps(gates(args.work)))
        return
    import nncf
    import onnxruntime
    import openvino
    import torch

    sys.path.insert(0, str(HERE))
    from bench_precision import cpu_name

    common = ["--work", str(args.work), "--runs", str(args.runs), *tiny]
    families = args.families.split(",")
    r: dict[str, Any] = {
        "runs": args.runs,
        "rounds": args.rounds,
        "notes": args.notes,
        "families": {},
        "prepare": {},
        "gop": {},
        "machine": {
            "cpu": cpu_name(),
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.get_version().split("-")[0],
            "nncf": nncf.__version__,
            "torch": torch.__version__,
            "cpu_flags": cpu_flags(),
        },
    }
    if not args.skip_prepare:
        for family in families:
            print(f"preparing {family}", flush=True)
            r["prepare"][family] = sub(["--step", "prepare", "--family", family, *common])
    else:
        for family in families:
            p = args.work / family / "prepare.json"
            r["prepare"][family] = json.loads(p.read_text()) if p.exists() else {}
    r["load_before"] = load_average()
    r["ceilings"] = sub(["--step", "ceilings", *common])
    print("ceilings", r["ceilings"], flush=True)
    wanted = set(re.split(r",(?! )", args.only))  # labels hold ", " (comma, space); the separator is a bare comma
    only = [label for label in VARIANTS if label in wanted]
    for family in families:
        r["gop"][family] = gop(family_info(family, args.tiny)[2], 128)
        turns: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for label in VARIANTS:
                if only and label not in only:
                    continue
                turns.setdefault(label, []).append(
                    sub(["--step", "time", "--family", family, "--variant", label, *common])
                )
                print(f"  {family} {label}: {turns[label][-1]}", flush=True)
        r["families"][family] = {label: _merge_turns(runs) for label, runs in turns.items()}
    r["load_after"] = load_average()
    if not args.skip_gates:
        r["gates"] = sub(["--step", "gates", *common])
    text = markdown(r)
    print(text)
    if not args.tiny:
        stem = HERE / f"cpu_int8{cpu_suffix()}"
        stem.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"wrote {stem}.md and .json", flush=True)


if __name__ == "__main__":
    main()
