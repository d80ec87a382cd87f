"""Target-aware graph fusion.

For ONNX Runtime the dynamo-exported graph is rewritten into ORT's fused contrib ops with
onnxscript's ``ort_fusions`` (its SDPA -> MultiHeadAttention -> Attention rules match the
transformers-5 SDPA graphs; ``onnxruntime.transformers.optimizer`` fuses no attention at all on
them, only SkipLayerNormalization and BiasGelu). Three small passes of our own finish the job
where the library stops, each explained in its docstring and applied where the family's registry
entry says it applies (``Family.fusions``, models/registry.py):

* ``pack_weights``: the fused Attention's packed QKV weight is left as a ``Concat`` of three
  initializers; ORT's quantizer only quantizes initializers, so we fold it.
* ``padding_mask_index``: the fused Attention takes BERT's padding mask as a 4-D float bias
  ([batch, 1, seq, seq], built by a dozen mask ops). ``QAttention`` has no bias input (ORT's
  quantizer silently drops it), so for models whose only mask is key padding we feed the
  int32 ``attention_mask`` as ``mask_index`` instead; cheaper in fp32 too.
* ``embed_layer_norm``: word + position + segment Gathers and the LayerNormalization become
  one ``EmbedLayerNormalization`` (ORT's own fusion does not match the dynamo graph).
* ``skip_layer_norm_as_sum``: the library's ``SkipLayerNormalization`` goes back to a residual
  ``Sum`` and a standard ``LayerNormalization``, whose CPU kernel is 3-4x faster.

For TensorRT the graph stays standard ONNX (only constant folding): TensorRT fuses by itself
and its parser knows no com.microsoft ops.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript import optimizer as os_optimizer

from bert_export.models.registry import Fusions

MS = "com.microsoft"
# Ops we count in the manifest: what the optimizer is for.
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "QAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "QuickGelu",
    "RotaryEmbedding",
    "GemmFastGelu",
    "MatMulNBits",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "QuantizeLinear",
    "DequantizeLinear",
)


def fused_op_counts(model: ir.Model) -> dict[str, int]:
    """How many of each fused (or quantized) op the graph holds; written to the manifest."""
    counts = Counter(n.op_type for n in model.graph.all_nodes())
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def fuse_for_ort(model: ir.Model, fusions: Fusions, *, max_positions: int) -> ir.Model:
    """ONNX Runtime's fused ops for a BERT-like encoder: onnxscript's rules, then the passes ``fusions`` names."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(model)
    if fusions.packed_qkv:
        pack_weights(model)
    if fusions.padding_mask_index:
        padding_mask_index(model)
    if fusions.embed_layer_norm:
        embed_layer_norm(model)
    if fusions.embed_layer_norm_position_ids:
        embed_layer_norm_position_ids(model)
    # not skip_layer_norm(model): see its docstring (measured slower on ModernBERT)
    skip_layer_norm_as_sum(model)  # every family: ONNX Runtime's CPU SkipLayerNormalization is the slow kernel
    if fusions.rotary:
        rotary_embedding(model, max_positions)
    os_optimizer.remove_unused_nodes(model)
    return model


def fold_for_trt(model: ir.Model) -> ir.Model:
    """Standard ONNX only: fold constants and drop dead nodes; TensorRT does its own fusion."""
    os_optimizer.optimize(model, input_size_limit=1 << 24, output_size_limit=1 << 28)
    return model


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value of a constant (initializer or Constant node) as an array, else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is not None and node.op_type == "Constant" and "value" in node.attributes:
        return node.attributes["value"].value.numpy()
    return None


def _initializer(model: ir.Model, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.DataType.from_numpy(array.dtype)
    model.graph.register_initializer(value)
    return value


def pack_weights(model: ir.Model) -> int:
    """Fold Concat(initializers) feeding a fused op into one initializer (quantizable weights)."""
    done = 0
    for node in list(model.graph):
        if node.op_type != "Concat" or node.outputs[0].is_graph_output():
            continue
        parts = [const_array(v) for v in node.inputs]
        if not parts or any(p is None for p in parts):
            continue
        axis = node.attributes["axis"].as_int()
        out = node.outputs[0]
        packed = _initializer(
            model, f"{out.name}_packed", np.concatenate([p for p in parts if p is not None], axis=axis)
        )
        out.replace_all_uses_with(packed)
        done += 1
    return done


def _graph_input(model: ir.Model, name: str) -> ir.Value | None:
    return next((v for v in model.graph.inputs if v.name == name), None)


def padding_mask_index(model: ir.Model) -> int:
    """Give every fused Attention the raw int32 padding mask instead of the 4-D additive bias.

    Only for families whose attention mask is pure key padding (BERT): the bias built by
    transformers' SDPA mask code is then exactly ``-inf`` where ``attention_mask == 0``, which
    ``mask_index`` (2-D raw mask) expresses. The parity gate checks the result.
    """
    mask = _graph_input(model, "attention_mask")
    attentions = [n for n in model.graph if n.op_type == "Attention" and n.domain == MS]
    if mask is None or not attentions:
        return 0
    cast = ir.node("Cast", [mask], {"to": ir.DataType.INT32}, name="attention_mask_int32")
    cast.outputs[0].name = "attention_mask_int32"
    cast.outputs[0].dtype = ir.DataType.INT32
    cast.outputs[0].shape = mask.shape
    model.graph.insert_before(attentions[0], cast)
    for node in attentions:
        inputs = list(node.inputs) + [None] * (6 - len(node.inputs))
        inputs[3], inputs[5] = cast.outputs[0], None
        while inputs and inputs[-1] is None:
            inputs.pop()
        sizes = node.attributes.get("qkv_hidden_sizes")
        attrs = dict(node.attributes)
        if sizes is not None and len(set(sizes.as_ints())) == 1:
            attrs.pop("qkv_hidden_sizes")  # equal sizes are the default; ORT's quantizer skips nodes that carry it
        new = ir.node(
            "Attention",
            inputs,
            {k: v for k, v in attrs.items()},
            domain=MS,
            name=node.name,
            num_outputs=len(node.outputs),
        )
        _replace(model, node, new)
    return len(attentions)


def _replace(model: ir.Model, old: ir.Node, new: ir.Node) -> None:
    for o_old, o_new in zip(old.outputs, new.outputs):
        o_new.name, o_new.dtype, o_new.shape = o_old.name, o_old.dtype, o_old.shape  # type: ignore[assignment]  # onnx_ir's setter takes DataType | None
    model.graph.insert_before(old, new)
    for o_old, o_new in zip(old.outputs, new.outputs):
        o_old.replace_all_uses_with(o_new, replace_graph_outputs=True)
    model.graph.remove(old, safe=True)


def _producer(value: ir.Value | None, op: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op else None


def embed_layer_norm(model: ir.Model) -> int:
    """LayerNorm(Gather(word, ids) [+ Gather(segment, type ids)] + Gather(position, arange)) -> EmbedLayerNormalization.

    The dynamo graph slices the registered ``position_ids`` buffer ([1, max_pos] = 0..max_pos-1)
    to the sequence length; EmbedLayerNormalization's default positions are the same 0..S-1.
    Families without segment embeddings (DistilBERT: word + position only) get the op without its
    optional segment inputs, as ONNX Runtime's own fusion_embedlayer.py writes it for DistilBERT.
    """
    ids, segments = _graph_input(model, "input_ids"), _graph_input(model, "token_type_ids")
    if ids is None:
        return 0
    for ln in list(model.graph):
        if ln.op_type != "LayerNormalization":
            continue
        gathers = _embedding_gathers(ln)
        if gathers is None:
            continue
        by_index = {g.inputs[1].name if g.inputs[1] is not None else "": g for g in gathers}
        word, seg = by_index.get("input_ids"), by_index.get("token_type_ids")
        pos = next((g for g in gathers if g not in (word, seg)), None)
        if word is None or pos is None or not _is_arange_positions(pos.inputs[1]):
            continue
        if (segments is None) != (seg is None) or len(gathers) != (3 if seg is not None else 2):
            continue
        if any(const_array(g.inputs[0]) is None for g in (word, seg, pos) if g is not None):
            continue
        casts = []
        for src in (ids, segments) if segments is not None else (ids,):
            c = ir.node("Cast", [src], {"to": ir.DataType.INT32}, name=f"{src.name}_int32")
            c.outputs[0].name = f"{src.name}_int32"
            casts.append(c)
        inputs = [
            casts[0].outputs[0],
            casts[1].outputs[0] if seg is not None else None,
            word.inputs[0],
            pos.inputs[0],
            seg.inputs[0] if seg is not None else None,
            ln.inputs[1],
            ln.inputs[2],
        ]
        _emit_embed_layer_norm(model, ln, inputs, casts)
        return 1
    return 0


def _emit_embed_layer_norm(model: ir.Model, ln: ir.Node, inputs: list[ir.Value | None], casts: list[ir.Node]) -> None:
    """Put EmbedLayerNormalization(``inputs``) in place of ``ln``, its int32 ``casts`` before it; both
    embedding fusions end here, so the op's attributes and its mask-index output are named once."""
    eps = ln.attributes.get("epsilon")
    fused = ir.node(
        "EmbedLayerNormalization",
        inputs,
        {"epsilon": eps.as_float() if eps is not None else 1e-12},
        domain=MS,
        name="EmbedLayerNormalization",
        num_outputs=2,
    )
    fused.outputs[1].name = "embed_mask_index"
    for c in casts:
        model.graph.insert_before(ln, c)
    _replace_first(model, ln, fused)


def embed_layer_norm_position_ids(model: ir.Model) -> int:
    """RoBERTa's embeddings -> EmbedLayerNormalization fed the graph's own position ids.

    RoBERTa and XLM-R number positions ``padding_idx + 1 + i`` over non-pad tokens (a CumSum over
    ``input_ids != pad``; pads get ``padding_idx``), so the op's default 0..S-1 positions are wrong; ONNX
    Runtime's own fusion_embedlayer.py leaves this pattern unfused ("TODO: Support roberta"). The op
    takes explicit ``position_ids`` (its optional input 8, (batch, sequence)), so the computed ids are
    passed through unchanged. Their segment embedding is a lookup of an all-zero buffer (no token_type_ids
    input): that constant row is folded into the position table, so the op needs no segment input.
    """
    ids = _graph_input(model, "input_ids")
    if ids is None or _graph_input(model, "token_type_ids") is not None:
        return 0
    for ln in list(model.graph):
        if ln.op_type not in ("LayerNormalization", "SkipLayerNormalization"):
            continue
        terms = _sum_terms(ln)
        gathers = [_producer(v, "Gather") for v in terms]
        if len(terms) != 3 or any(g is None for g in gathers):
            continue
        word = next((g for g in gathers if g is not None and g.inputs[1] is ids), None)
        segment = next((g for g in gathers if g is not None and _is_zero_index(g.inputs[1])), None)
        pos = next((g for g in gathers if g is not None and g not in (word, segment)), None)
        if word is None or segment is None or pos is None or pos.inputs[1] is None:
            continue
        tables = [const_array(g.inputs[0]) for g in (word, segment, pos)]
        if any(t is None or t.ndim != 2 for t in tables):
            continue
        positions = tables[2] + tables[1][0]  # type: ignore[index]  # checked above
        table = _initializer(model, f"{pos.inputs[0].name}_plus_segment0", positions.astype(tables[2].dtype))  # type: ignore[union-attr]
        casts = [ir.node("Cast", [v], {"to": ir.DataType.INT32}) for v in (ids, pos.inputs[1])]
        for c, name in zip(casts, ("input_ids_int32", "position_ids_int32")):
            c.outputs[0].name = name
        gamma, beta = (
            (ln.inputs[1], ln.inputs[2]) if ln.op_type == "LayerNormalization" else (ln.inputs[2], ln.inputs[3])
        )
        inputs = [casts[0].outputs[0], None, word.inputs[0], table, None, gamma, beta, None, casts[1].outputs[0]]
        _emit_embed_layer_norm(model, ln, inputs, casts)
        return 1
    return 0


def _sum_terms(ln: ir.Node) -> list[ir.Value | None]:
    """The values a (Skip)LayerNormalization sums before normalising, one level of Add unfolded."""
    direct = [ln.inputs[0]] if ln.op_type == "LayerNormalization" else list(ln.inputs[:2])
    terms: list[ir.Value | None] = []
    for v in direct:
        add = _producer(v, "Add")
        terms.extend(add.inputs if add is not None else [v])
    if len(terms) == 2 and ln.op_type == "LayerNormalization":  # Add(Add(a, b), c)
        inner = _producer(terms[0], "Add")
        if inner is not None:
            terms = [*inner.inputs, terms[1]]
    return terms


def _is_zero_index(value: ir.Value | None) -> bool:
    """An index that is all zeros: a constant, or a Gather(Elements) of an Expand of an all-zero buffer."""
    data = const_array(value)
    if data is not None:
        return not data.any()
    node = value.producer() if value is not None else None
    if node is None or node.op_type not in ("Gather", "GatherElements"):
        return False
    expand = _producer(node.inputs[0], "Expand")
    source = const_array(expand.inputs[0] if expand is not None else node.inputs[0])
    return source is not None and not source.any()


def _embedding_gathers(ln: ir.Node) -> list[ir.Node] | None:
    """The Gathers summed into ``ln``: Add(Add(a, b), c) (BERT) or Add(a, b) (DistilBERT), else None."""
    outer = _producer(ln.inputs[0], "Add")
    if outer is None:
        return None
    inner = _producer(outer.inputs[0], "Add")
    found = [_producer(v, "Gather") for v in ((*inner.inputs, outer.inputs[1]) if inner else outer.inputs)]
    gathers = [g for g in found if g is not None]
    return gathers if len(gathers) == len(found) else None


def _replace_first(model: ir.Model, old: ir.Node, new: ir.Node) -> None:
    out_old, out_new = old.outputs[0], new.outputs[0]
    out_new.name, out_new.dtype, out_new.shape = out_old.name, out_old.dtype, out_old.shape  # type: ignore[assignment]  # onnx_ir's setter takes DataType | None
    model.graph.insert_before(old, new)
    out_old.replace_all_uses_with(out_new, replace_graph_outputs=True)
    model.graph.remove(old, safe=True)


def _is_arange_positions(value: ir.Value | None) -> bool:
    """``position_ids[:, :S]`` of the 0..N-1 buffer (the only positions BERT uses without an offset)."""
    sl = _producer(value, "Slice")
    if sl is None:
        return False
    data = const_array(sl.inputs[0])
    starts = const_array(sl.inputs[1]) if len(sl.inputs) > 1 else None
    if data is None or starts is None or data.ndim != 2 or data.shape[0] != 1:
        return False
    return bool(np.array_equal(data[0], np.arange(data.shape[1]))) and int(np.asarray(starts).ravel()[0]) == 0


def summary(model: ir.Model) -> dict[str, Any]:
    return {"fused_ops": fused_op_counts(model), "nodes": sum(1 for _ in model.graph.all_nodes())}


def skip_layer_norm(model: ir.Model) -> int:
    """Add(a, b) -> LayerNormalization becomes SkipLayerNormalization, bias-free LayerNorms included.

    ModernBERT is pre-LN with ``bias=False`` LayerNorms: the residual sum feeds the next
    residual Add as well, which SkipLayerNormalization returns as its 4th output. Neither
    onnxscript's rule nor ONNX Runtime's (it indexes a bias input that is not there) match it.

    Not in the default pipeline: on ModernBERT-base (batch 1, seq 128, 2 threads, interleaved
    medians) ONNX Runtime 1.32's CPU SkipLayerNormalization with the sum output made the graph
    slower (88.6 ms vs 80.8 ms without it; the plain export 83.1 ms), and the rule is that a
    fusion never makes a bundle slower. Kept, tested, for runtimes where it pays.
    """
    done = 0
    for ln in list(model.graph):
        if ln.op_type != "LayerNormalization" or ln.domain not in ("", "ai.onnx") or len(ln.outputs) > 1:
            continue
        add = _producer(ln.inputs[0], "Add")
        if add is None or const_array(ln.inputs[1]) is None:
            continue
        a, b = add.inputs
        if a is None or b is None or a.shape is None or b.shape is None or len(a.shape) != 3 or len(b.shape) != 3:
            continue
        if (
            any(not isinstance(d, int) and str(d) != str(e) for d, e in zip(a.shape, b.shape))
            or a.shape[-1] != b.shape[-1]
        ):
            continue
        axis = ln.attributes.get("axis")
        if axis is not None and axis.as_int() not in (-1, 2):
            continue
        eps = ln.attributes.get("epsilon")
        gamma = ln.inputs[1]
        beta = ln.inputs[2] if len(ln.inputs) > 2 else None
        fused = ir.node(
            "SkipLayerNormalization",
            [a, b, gamma, beta],
            {"epsilon": eps.as_float() if eps is not None else 1e-5},
            domain=MS,
            name=f"{ln.name}_skip",
            num_outputs=4,
        )
        out, summed = fused.outputs[0], fused.outputs[3]
        out.name, out.dtype, out.shape = ln.outputs[0].name, ln.outputs[0].dtype, ln.outputs[0].shape  # type: ignore[assignment]  # onnx_ir's setter takes DataType | None
        summed.name, summed.shape = f"{add.outputs[0].name}_sum", add.outputs[0].shape
        summed.dtype = add.outputs[0].dtype  # type: ignore[assignment]  # as above
        model.graph.insert_before(ln, fused)
        ln.outputs[0].replace_all_uses_with(out, replace_graph_outputs=True)
        add.outputs[0].replace_all_uses_with(summed, replace_graph_outputs=True)
        model.graph.remove(ln, safe=True)
        model.graph.remove(add, safe=True)
        done += 1
    return done


def skip_layer_norm_as_sum(model: ir.Model) -> int:
    """``SkipLayerNormalization`` becomes ``Sum`` (input, skip, bias) and a standard ``LayerNormalization``.

    Why undo the library's fusion: ONNX Runtime's CPU kernel for the fused op
    (``contrib_ops/cpu/skip_layer_norm.cc``) is a scalar loop per row, with a serial sum and a division
    per element; the standard ``LayerNormalization`` kernel is vectorized. Measured on an AMD EPYC Zen 4,
    ONNX Runtime 1.32, 2 threads: one [1, 128, 768] norm 0.257 ms fused vs 0.086 ms as Sum + LayerNorm,
    [8, 128, 768] 1.99 vs 0.49 ms; in BERT-base int8 at batch 8 the 24 norms took 50.5 ms of the
    profile's 388 ms, 11.6 ms after this pass (benchmarks/int8_profile.md). The math is the same, in
    fp32 in both kernels. On CUDA it is one more small kernel per norm (not measured: no GPU here).

    ``Sum``, not ``Add``: ONNX Runtime's own ``SkipLayerNormFusion``, which every consumer runs at session
    creation (the C++ demo, Triton's ONNX Runtime backend, onnxruntime-web), matches Add + LayerNorm
    and would fuse it back; it never matches ``Sum``. Norms whose mean / inverse-variance outputs are
    used (training graphs) and graphs below opset 17 (no standard LayerNormalization) are left alone.
    """
    if model.opset_imports.get("", 0) < 17:
        return 0
    done = 0
    for node in list(model.graph):
        if node.op_type != "SkipLayerNormalization" or node.domain != MS:
            continue
        if any(o.uses() for o in node.outputs[1:3]):
            continue
        x, skip, gamma, beta, bias = (list(node.inputs) + [None] * 5)[:5]
        if x is None or skip is None or gamma is None:
            continue
        eps = node.attributes.get("epsilon")
        total = ir.node("Sum", [v for v in (x, skip, bias) if v is not None], name=f"{node.name}_sum")
        norm = ir.node(
            "LayerNormalization",
            [total.outputs[0], gamma] + ([beta] if beta is not None else []),
            {"axis": -1, "epsilon": eps.as_float() if eps is not None else 1e-12},
            name=f"{node.name}_norm",
        )
        out, summed = node.outputs[0], node.outputs[3] if len(node.outputs) > 3 else None
        norm.outputs[0].name, norm.outputs[0].dtype, norm.outputs[0].shape = out.name, out.dtype, out.shape  # type: ignore[assignment]  # onnx_ir's setter takes DataType | None
        total.outputs[0].name = summed.name if summed is not None and summed.name else f"{node.name}_residual"
        total.outputs[0].dtype, total.outputs[0].shape = out.dtype, out.shape  # type: ignore[assignment]  # as above
        model.graph.insert_before(node, [total, norm])
        out.replace_all_uses_with(norm.outputs[0], replace_graph_outputs=True)
        if summed is not None:
            summed.replace_all_uses_with(total.outputs[0], replace_graph_outputs=True)
        model.graph.remove(node, safe=True)
        done += 1
    return done


def rotary_embedding(model: ir.Model, max_positions: int) -> int:
    """x*cos + rotate_half(x)*sin on [batch, heads, seq, head] -> com.microsoft RotaryEmbedding.

    Matches the rotate_half form transformers uses (ModernBERT, Llama-style, non-interleaved)
    with cos/sin computed in the graph from an ``inv_freq`` initializer and positions 0..S-1;
    the caches are precomputed the way PyTorch does it (float32 product, then cos/sin).
    """
    done = 0
    caches: dict[str, tuple[ir.Value, ir.Value]] = {}
    zero = None
    for add in list(model.graph):
        if add.op_type != "Add":
            continue
        m1, m2 = (_producer(v, "Mul") for v in add.inputs)
        if m1 is None or m2 is None:
            continue
        for first, second in ((m1, m2), (m2, m1)):
            match = _match_rotary(first, second)
            if match is not None:
                break
        else:
            continue
        x, inv_freq = match
        if x.shape is None or len(x.shape) != 4 or not isinstance(x.shape[-1], int):
            continue
        key = inv_freq.name or ""
        if key not in caches:
            inv = inv_freq.const_value.numpy().astype(np.float32)  # type: ignore[union-attr]  # caller found a const
            freqs = np.arange(max_positions, dtype=np.float32)[:, None] * inv[None, :]
            caches[key] = (
                _initializer(model, f"{key}_cos_cache", np.cos(freqs).astype(np.float32)),
                _initializer(model, f"{key}_sin_cache", np.sin(freqs).astype(np.float32)),
            )
        if zero is None:
            zero = _initializer(model, "rotary_position_offset", np.zeros((1,), dtype=np.int64))
        cos_cache, sin_cache = caches[key]
        fused = ir.node(
            "RotaryEmbedding", [x, zero, cos_cache, sin_cache], {"interleaved": 0}, domain=MS, name=f"{add.name}_rotary"
        )
        _replace_first(model, add, fused)
        done += 1
    return done


def _match_rotary(direct: ir.Node, rotated: ir.Node) -> tuple[ir.Value, ir.Value] | None:
    """direct = x * Unsqueeze(Cos(c)), rotated = Concat(-x[h/2:], x[:h/2]) * Unsqueeze(Sin(c)); c from inv_freq."""
    x = direct.inputs[0]
    cos = _producer(_producer_input(direct.inputs[1], "Unsqueeze"), "Cos")
    cat = _producer(rotated.inputs[0], "Concat")
    sin = _producer(_producer_input(rotated.inputs[1], "Unsqueeze"), "Sin")
    if cos is None or sin is None or cat is None or cos.inputs[0] is not sin.inputs[0] or len(cat.inputs) != 2:
        return None
    neg = _producer(cat.inputs[0], "Neg")
    s_hi, s_lo = (_producer(neg.inputs[0], "Slice") if neg else None), _producer(cat.inputs[1], "Slice")
    if s_hi is None or s_lo is None or s_hi.inputs[0] is not x or s_lo.inputs[0] is not x:
        return None
    angles = _producer(cos.inputs[0], "Concat")  # cat(freqs, freqs)
    freqs = _producer(angles.inputs[0], "Mul") if angles is not None and angles.inputs[0] is angles.inputs[1] else None
    if freqs is None:
        return None
    inv = next((v for v in freqs.inputs if v is not None and v.const_value is not None), None)
    pos = next((v for v in freqs.inputs if v is not None and v.const_value is None), None)
    if inv is None or pos is None or not _is_range_from_zero(pos):
        return None
    return (x, inv) if x is not None else None


def _producer_input(value: ir.Value | None, op: str) -> ir.Value | None:
    node = _producer(value, op)
    return node.inputs[0] if node is not None else None


def _is_range_from_zero(value: ir.Value | None) -> bool:
    """Cast(Unsqueeze(Range(0, S, 1))): the 0..S-1 positions of an unpadded-offset encoder."""
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in ("Cast", "Unsqueeze", "Reshape"):
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    if node is None or node.op_type != "Range":
        return False
    start, step = const_array(node.inputs[0]), const_array(node.inputs[2])
    return start is not None and step is not None and float(start) == 0 and float(step) == 1


def unpack_attention(model: ir.Model) -> int:
    """Attention(X, Wqkv, b, mask_index) -> MatMul(X, Wqkv), Split, MultiHeadAttention(q, k, v, b, mask).

    For INT8 only: the fused Attention's QKV projection is internal to the op, so our row-wise
    int8 MatMul (quantize/int8.py) cannot reach it; as a plain MatMul it can, and
    MultiHeadAttention keeps the fused softmax(QK^T)V. (QAttention would keep it fused but only
    with one activation scale per tensor, which fails the gate.)
    """
    done = 0
    for node in list(model.graph):
        if node.op_type != "Attention" or node.domain != MS or len(node.inputs) < 3:
            continue
        weight = node.inputs[1]
        w = const_array(weight)
        if w is None or w.shape[1] % 3 or "qkv_hidden_sizes" in node.attributes:
            continue
        x, bias = node.inputs[0], node.inputs[2]
        mask = node.inputs[3] if len(node.inputs) > 3 else None
        if len(node.inputs) > 4 and any(v is not None for v in node.inputs[4:]):
            continue  # past state or attention bias: not an encoder layer we know how to unpack
        matmul = ir.node("MatMul", [x, weight], name=f"{node.name}_qkv")
        split = ir.node(
            "Split", [matmul.outputs[0]], {"axis": -1, "num_outputs": 3}, name=f"{node.name}_split", num_outputs=3
        )
        mha_inputs = [*split.outputs, bias, mask]
        attrs = {k: v for k, v in node.attributes.items() if k in ("num_heads", "mask_filter_value", "scale")}
        mha = ir.node("MultiHeadAttention", mha_inputs, attrs, domain=MS, name=f"{node.name}_mha")
        matmul.outputs[0].name = f"{node.name}_qkv_out"
        for i, o in enumerate(split.outputs):
            o.name = f"{node.name}_{'qkv'[i]}"
        model.graph.insert_before(node, [matmul, split])
        _replace_first(model, node, mha)
        done += 1
    return done
