"""Banded (blocked) local attention for ModernBERT's sliding-window layers: O(n·w) instead of O(n²).

ModernBERT attends within ``|i - j| <= local_attention / 2`` in two of every three layers. The
exported graph (transformers 5 SDPA, fused by quantize/fusion.py) computes those layers as one
``com.microsoft.MultiHeadAttention`` per layer with the band folded into a dense
``[batch, 1, seq, seq]`` additive bias, so they pay the full quadratic time and memory of a
global layer (8192 tokens: 62 s and 8.1 GB on ModernBERT-base).

What exists already, and why it does not fit (checked against ONNX Runtime 1.32 and ONNX 1.23):

* ``com.microsoft.MultiHeadAttention`` / ``Attention``: no window argument; the band can only be
  given as a dense bias, which is what makes the local layers quadratic. Its CPU flash path runs
  only with no mask and no bias at all.
* ``com.microsoft.GroupQueryAttention`` has ``local_window_size``, but it is a causal decoder op
  (past/present KV cache, ``seqlens_k``, the window looks left only): a bidirectional encoder
  window cannot be expressed with it.
* ``com.microsoft.SparseAttention`` is CUDA only (block-sparse causal layouts for Phi-3).
* ONNX ``Attention`` (opset 23) takes ``attn_mask`` and ``is_causal``: a dense mask again, no
  window; and opset 23 is newer than what TensorRT 10 and onnxruntime-web read.

So the rewrite is our own, in standard ONNX ops that every runtime we ship to has
(Reshape, Transpose, Pad, Slice, Concat, MatMul, Where, Softmax): the sequence is padded to a
multiple of the block size ``b = w/2``; query block ``c`` attends the keys of blocks
``c-1, c, c+1`` (``3b`` keys, which cover ``±w/2`` exactly); inside that ``[b, 3b]`` tile a
constant band and the key-padding mask (from the graph's ``attention_mask``) select the keys.
Time and memory are ``O(n · 3b)`` per layer. Masked scores are *replaced* by a finite fill
(not ``-inf``): rows with no key at all (padding past the last real token) stay finite in
fp32 and fp16, so nothing leaks into real positions. Global layers are left untouched.

The rule matches the fused MultiHeadAttention whose bias is built from a
``LessOrEqual(Abs(Sub(i, j)), h)`` band and a key-padding mask of a graph input; both facts are
read from the graph, nothing from names.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnx_ir._tape import Builder
from onnxscript.rewriter import RewriteRule, RewriteRuleClassBase, RewriteRuleSet

from bert_export.quantize.fusion import const_array

MS = "com.microsoft"
# The fill for scores outside the window: finite in fp32 and fp16 (fp16's lowest), far below any real score.
MASKED_SCORE = -65504.0
# Length switch: a local layer runs dense (one fused attention over [seq, seq] with the band as a bias) up to
# SWITCH_WINDOWS x the window, and blocked past it. Both are exact, so the switch is a speed choice only. One
# full-size layer (hidden 768, 12 heads, window 128, 2 threads, EPYC Zen 4, loaded), dense / blocked time:
# ORT 0.45 at 128, 0.48 at 256, 0.82-0.87 at 512, 2.2 at 640, 1.5-5.7 at 768-1024; OpenVINO 0.50, 0.71, 0.76-0.98,
# 1.02, 1.2-1.8 (benchmarks/cpu_int8_xeon_amx.md, "this round"): the crossover is just past 4 windows on both.
SWITCH_WINDOWS = 4
# The model metadata key that records the switch length (longest dense sequence) in the graph file itself.
SWITCH_META = "bert_export.local_attention_switch"
# Ancestors searched for the band and the padding mask above an attention bias (the mask subgraph is ~20 nodes).
_SEARCH_LIMIT = 200


def _ancestors(value: ir.Value, limit: int = _SEARCH_LIMIT) -> Iterable[ir.Node]:
    """Breadth-first producers of ``value``; a Shape's input carries no data, so it is not followed."""
    seen: set[int] = set()
    queue = deque([value])
    while queue and len(seen) < limit:
        node = queue.popleft().producer()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if node.op_type != "Shape":
            queue.extend(i for i in node.inputs if i is not None)


def _scalar(value: ir.Value | None) -> np.ndarray | None:
    """A one-element constant, flattened, else None."""
    array = const_array(value)
    return None if array is None or np.asarray(array).size != 1 else np.asarray(array).ravel()


def _const_int(value: ir.Value | None) -> int | None:
    array = _scalar(value)
    return None if array is None else int(array[0])


def _const_float(value: ir.Value | None) -> float | None:
    array = _scalar(value)
    return None if array is None else float(array[0])


def find_band(bias: ir.Value) -> tuple[int, ir.Value] | None:
    """(half_window, attention_mask input) when ``bias`` is a sliding-window + key-padding mask, else None.

    The band is ``LessOrEqual(Abs(Sub(...)), h)`` (transformers' bidirectional sliding-window
    mask); the padding mask is a graph input among the bias's ancestors. A bias without a band
    (a global layer) or with anything we cannot read returns None and the node is left alone.
    """
    half, mask = None, None
    for node in _ancestors(bias):
        if node.op_type == "LessOrEqual" and node.inputs[0] is not None:
            absolute = node.inputs[0].producer()
            if absolute is not None and absolute.op_type == "Abs":
                h = _const_int(node.inputs[1])
                if h is None or (half is not None and h != half):
                    return None
                half = h
        for value in node.inputs:
            if value is not None and value.is_graph_input() and value.shape is not None and len(value.shape) == 2:
                mask = value
    if half is None or mask is None or half < 1:
        return None
    return half, mask


class BandedLocalAttention(RewriteRuleClassBase):
    """MultiHeadAttention(q, k, v, bias=band ∧ padding) -> blocked attention over ``3·(w/2)`` keys per query."""

    def __init__(self, switch: bool = True) -> None:
        super().__init__(name="BandedLocalAttention")
        self._found: dict[int, tuple[int, ir.Value]] = {}
        self.switch = switch  # dense up to ``switch_length`` (``length_switch``); False: always blocked
        self.switched: set[int] = set()  # the switch lengths written

    def pattern(self, op, query, key, value, bias):  # type: ignore[no-untyped-def]
        return op.MultiHeadAttention(query, key, value, None, None, bias, _domain=MS, _outputs=["attn"])

    def check(self, context, query, key, value, bias, attn, **_) -> bool:  # type: ignore[no-untyped-def,override]
        node = attn.producer()
        if node is None or len(node.outputs) != 1:
            return False
        attrs = node.attributes
        if attrs.get("unidirectional") is not None and attrs["unidirectional"].as_int():
            return False
        hidden = query.shape[-1] if query.shape is not None and len(query.shape) == 3 else None
        if not isinstance(hidden, int) or key.shape != query.shape or value.shape is None or value.shape[-1] != hidden:
            return False
        band = find_band(bias)
        if band is None or context.graph_or_function is not context.model.graph:  # not a branch of our own switch
            return False
        self._found[id(bias)] = band
        return True

    def rewrite(self, op, query, key, value, bias, attn, **_):  # type: ignore[no-untyped-def]
        node = attn.producer()
        half, mask = self._found[id(bias)]
        heads = node.attributes["num_heads"].as_int()
        hidden = int(query.shape[-1])
        head = hidden // heads
        scale_attr = node.attributes.get("scale")
        scale = (
            scale_attr.as_float() if scale_attr is not None and scale_attr.as_float() != 0 else 1.0 / math.sqrt(head)
        )
        attrs = {k: v for k, v in node.attributes.items() if k in ("num_heads", "scale", "mask_filter_value")}

        def blocked(b):  # type: ignore[no-untyped-def]
            return blocked_attention(b, query, key, value, mask, half=half, heads=heads, head=head, scale=scale)

        def dense(b, bias):  # type: ignore[no-untyped-def]
            return b.MultiHeadAttention(query, key, value, None, None, _as(b, bias, query), _domain=MS, **attrs)

        return _switched(self, op, mask, half, dense, blocked, name=node.name)


def _ints(op, values: list[int]):  # type: ignore[no-untyped-def]
    return op.Constant(value=ir.tensor(np.asarray(values, dtype=np.int64)))


def _float(op, value: float):  # type: ignore[no-untyped-def]
    """A float32 scalar as a ``value`` tensor (ONNX Runtime's symbolic shape inference reads no ``value_float``)."""
    return op.Constant(value=ir.tensor(np.asarray(value, dtype=np.float32)))


def blocked_attention(op, query, key, value, mask, *, half: int, heads: int, head: int, scale: float):  # type: ignore[no-untyped-def]
    """MultiHeadAttention's layout ([batch, seq, heads·head] in and out) around ``banded_heads_first``."""

    def heads_first(x):  # [B, S, H*D] -> [B, H, S, D]
        return op.Transpose(op.Reshape(x, _ints(op, [0, 0, heads, head])), perm=[0, 2, 1, 3])

    q = op.Mul(heads_first(query), op.CastLike(_float(op, scale), query))
    out = banded_heads_first(op, q, heads_first(key), heads_first(value), mask, half=half, head=head)
    return op.Reshape(op.Transpose(out, perm=[0, 2, 1, 3]), _ints(op, [0, 0, heads * head]))


def band_bias(b, seq, mask, *, half: int, like):  # type: ignore[no-untyped-def]
    """The additive [batch, 1, seq, seq] bias: 0 where ``|i - j| <= half`` and key j is real, else ``MASKED_SCORE``."""
    n = b.Squeeze(seq)
    pos = b.Range(
        b.Constant(value=ir.tensor(np.asarray(0, dtype=np.int64))),
        n,
        b.Constant(value=ir.tensor(np.asarray(1, dtype=np.int64))),
    )
    dist = b.Abs(b.Sub(b.Unsqueeze(pos, _ints(b, [1])), b.Unsqueeze(pos, _ints(b, [0]))))  # [S, S]
    band = b.LessOrEqual(dist, _ints(b, [half]))
    keys = b.Cast(b.Unsqueeze(mask, _ints(b, [1, 2])), to=ir.DataType.BOOL)  # [B, 1, 1, S]
    allowed = b.And(band, keys)  # [B, 1, S, S]
    return b.Where(allowed, b.CastLike(_float(b, 0.0), like), b.CastLike(_float(b, MASKED_SCORE), like))


def shared_band_bias(op, mask, *, half: int, switch: int):  # type: ignore[no-untyped-def]
    """The dense branches' bias (float32), built once in the outer graph for every local layer.

    Every local layer's rewrite emits the same nodes on the same inputs (the ``attention_mask`` graph
    input and constants), so common-subexpression elimination keeps one copy: one bias per call
    instead of one inside each layer's branch (14 on ModernBERT-base: 325 fewer nodes in its int8
    graph; the time at 128 tokens did not change measurably, benchmarks/long_inputs.md). It spans ``min(seq, switch)`` positions: the dense branches run only up to
    the switch, and past it the bias stays ``switch²`` per item instead of growing with the input."""
    n = op.Min(op.Shape(mask, start=1, end=2), _ints(op, [switch]))
    keys = op.Slice(mask, _ints(op, [0]), n, _ints(op, [1]))
    return band_bias(op, n, keys, half=half, like=_float(op, 0.0))


def _as(b, bias, like):  # type: ignore[no-untyped-def]
    """``bias`` (float32) in ``like``'s type: a Cast only where the graph is not float32 (fp16)."""
    return bias if like.dtype == ir.DataType.FLOAT else b.CastLike(bias, like)


def _switched(rule, op, mask, half: int, dense, blocked, *, name: str):  # type: ignore[no-untyped-def]
    """Both rewrites' ending: always ``blocked`` without the switch; else ``length_switch`` on the mask's length
    (one condition shared by every layer) with ``dense(builder, shared band)``; the switch length is noted."""
    if not rule.switch:
        return blocked(op)
    switch = switch_length(half)
    bias = shared_band_bias(op, mask, half=half, switch=switch)
    rule.switched.add(switch)
    seq = op.Shape(mask, start=1, end=2)
    return length_switch(op, seq, lambda b: dense(b, bias), blocked, switch=switch, name=name)


def length_switch(op, seq, dense, blocked, *, switch: int, name: str):  # type: ignore[no-untyped-def]
    """``If(seq <= switch)``: ``dense(builder)`` in the then-branch, ``blocked(builder)`` in the else-branch.

    Each branch is built on its own tape and reads the layer's q/k/v and the padding mask from
    the outer graph; only the taken branch runs (ONNX Runtime and OpenVINO both execute ``If``
    lazily), so short inputs never pay the blocks and long ones never build a [seq, seq] bias.
    Branch values get names derived from the layer's, unique in the model (ONNX forbids
    shadowing an outer name)."""
    cond = op.Squeeze(op.Less(seq, _ints(op, [switch + 1])))
    branches = {}
    for label, build in (("dense", dense), ("blocked", blocked)):
        b = Builder()
        out = build(b)
        for i, node in enumerate(b.nodes):
            for j, value in enumerate(node.outputs):
                value.name = f"{name}_{label}_{i}_{j}"
            node.name = f"{name}_{label}_{i}"
        branches[label] = ir.Graph([], [out], nodes=b.nodes, name=f"{name}_{label}")
    return op.If(cond, then_branch=branches["dense"], else_branch=branches["blocked"])


def banded_heads_first(op, q, k, v, mask, *, half: int, head: int):  # type: ignore[no-untyped-def]
    """Softmax(q kᵀ + band/padding) v over blocks of ``b = half`` queries and their ``3b`` neighbour keys.

    q/k/v are [batch, heads, seq, head] with the softmax scale already in q (or split between q
    and k); so is the result.
    """
    b = half
    seq = op.Shape(q, start=2, end=3)  # [1]
    blocks = op.Div(op.Add(seq, _ints(op, [b - 1])), _ints(op, [b]))  # ceil(seq / b)
    tail = op.Sub(op.Mul(blocks, _ints(op, [b])), seq)  # padding up to the block multiple
    zero, one = _ints(op, [0]), _ints(op, [b])
    q_pads = op.Concat(_ints(op, [0, 0, 0, 0, 0, 0]), tail, _ints(op, [0]), axis=0)
    kv_pads = op.Concat(_ints(op, [0, 0]), one, _ints(op, [0, 0, 0]), op.Add(tail, one), _ints(op, [0]), axis=0)

    def windows(x, axis: int):  # blocks 0..n+1 on `axis` -> concat of (c-1, c, c+1) for c in 0..n-1, on axis+1
        parts = []
        for k in range(3):
            start = _ints(op, [k])
            end = op.Add(blocks, _ints(op, [k]))
            parts.append(op.Slice(x, start, end, _ints(op, [axis])))
        return op.Concat(*parts, axis=axis + 1)

    blocked = _ints(op, [0, 0, -1, b, head])
    q = op.Reshape(op.Pad(q, q_pads), blocked)  # [B, H, n, b, D]
    k = op.Reshape(op.Pad(k, kv_pads), blocked)  # [B, H, n+2, b, D]
    v = op.Reshape(op.Pad(v, kv_pads), blocked)
    k_win, v_win = windows(k, 2), windows(v, 2)  # [B, H, n, 3b, D]
    scores = op.MatMul(q, op.Transpose(k_win, perm=[0, 1, 2, 4, 3]))  # [B, H, n, b, 3b]

    # which keys each query may see: the constant band inside the tile, and real (unpadded) keys
    rows, cols = np.arange(b)[:, None], np.arange(3 * b)[None, :]
    band = op.Constant(value=ir.tensor(np.abs(cols - b - rows) <= half))  # [b, 3b] bool
    m_pads = op.Concat(_ints(op, [0]), one, _ints(op, [0]), op.Add(tail, one), axis=0)
    # no Cast when the mask is int64 already: OpenVINO folds a no-op Cast into the graph input and gives
    # that input the Cast's output name as an alias, which the runner's input check rightly refuses
    mask64 = mask if mask.dtype == ir.DataType.INT64 else op.Cast(mask, to=ir.DataType.INT64)
    keys = op.Reshape(op.Pad(mask64, m_pads), _ints(op, [0, -1, b]))  # [B, n+2, b]
    keys = op.Cast(op.Unsqueeze(windows(keys, 1), _ints(op, [1, 3])), to=ir.DataType.BOOL)  # [B, 1, n, 1, 3b]
    allowed = op.And(band, keys)  # [B, 1, n, b, 3b]
    fill = op.CastLike(_float(op, MASKED_SCORE), scores)
    probs = op.Softmax(op.Where(allowed, scores, fill), axis=-1)
    out = op.MatMul(probs, v_win)  # [B, H, n, b, D]
    out = op.Reshape(out, _ints(op, [0, 0, -1, head]))  # [B, H, n*b, D]
    return op.Slice(out, zero, seq, _ints(op, [2]))


class BandedStandardAttention(RewriteRuleClassBase):
    """Standard-ONNX SDPA (the TensorRT and OpenVINO targets) with a sliding-window bias -> the same blocks.

    torch's exporter writes ``scaled_dot_product_attention`` with a boolean mask as
    ``MatMul(q·s, kᵀ·s) + Where(mask, 0, -inf) -> Softmax -> Where(IsNaN, 0, ·) -> MatMul(·, v)``
    on [batch, heads, seq, head] tensors (the scale split between q and kᵀ). TensorRT and
    OpenVINO fuse that into their own attention kernels but keep the window as a dense mask,
    so the local layers stay quadratic there too. The replacement is ``banded_heads_first`` on
    the already-scaled q and k: standard ops only, as those targets require.
    """

    def __init__(self, switch: bool = True) -> None:
        super().__init__(name="BandedStandardAttention")
        self._found: dict[int, tuple[int, ir.Value]] = {}
        self.switch = switch
        self.switched: set[int] = set()

    def pattern(self, op, q_scaled, k_t_scaled, bias, zero, value):  # type: ignore[no-untyped-def]
        probs = op.Softmax(op.Add(op.MatMul(q_scaled, k_t_scaled), bias), _outputs=["probs"])
        return op.MatMul(op.Where(op.IsNaN(probs), zero, probs), value)

    def check(self, context, q_scaled, k_t_scaled, bias, zero, value, probs, **_) -> bool:  # type: ignore[no-untyped-def,override]
        axis = probs.producer().attributes.get("axis")
        if axis is not None and axis.as_int() not in (-1, 3):
            return False
        head = q_scaled.shape[-1] if q_scaled.shape is not None and len(q_scaled.shape) == 4 else None
        if not isinstance(head, int) or k_t_scaled.shape is None or len(k_t_scaled.shape) != 4:
            return False
        if value.shape is None or len(value.shape) != 4 or value.shape[-1] != head:
            return False
        fill = _const_float(zero)
        band = find_band(bias)
        if fill != 0.0 or band is None or context.graph_or_function is not context.model.graph:
            return False
        self._found[id(bias)] = band
        return True

    def rewrite(self, op, q_scaled, k_t_scaled, bias, zero, value, probs, **_):  # type: ignore[no-untyped-def]
        half, mask = self._found[id(bias)]
        axis = probs.producer().attributes.get("axis")

        def blocked(b):  # type: ignore[no-untyped-def]
            key = b.Transpose(k_t_scaled, perm=[0, 1, 3, 2])
            return banded_heads_first(b, q_scaled, key, value, mask, half=half, head=int(q_scaled.shape[-1]))

        def dense(b, bias):  # type: ignore[no-untyped-def]
            # the plain chain with no NaN guard (the bias is finite): what OpenVINO and TensorRT fuse
            scores = b.MatMul(q_scaled, k_t_scaled)
            probs = b.Softmax(b.Add(scores, _as(b, bias, q_scaled)), axis=-1 if axis is None else axis.as_int())
            return b.MatMul(probs, value)

        return _switched(self, op, mask, half, dense, blocked, name=probs.producer().name)


# Ops a pure key-padding bias is built from (transformers' bidirectional mask): no position comparison
# other than ``position >= 0``, so nothing causal or windowed.
_PADDING_MASK_OPS = frozenset(
    {
        "Shape",
        "Squeeze",
        "Unsqueeze",
        "Range",
        "GreaterOrEqual",
        "And",
        "Max",
        "Expand",
        "Concat",
        "GatherND",
        "Gather",
        "Cast",
        "Where",
        "Reshape",
        "Constant",
        "Slice",
    }
)


def find_key_padding(bias: ir.Value) -> ir.Value | None:
    """The [batch, seq] attention_mask input when ``bias`` only masks padded keys, else None."""
    mask = None
    for node in _ancestors(bias):
        if node.op_type not in _PADDING_MASK_OPS or node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "GreaterOrEqual" and _const_int(node.inputs[1]) != 0:
            return None
        for value in node.inputs:
            if value is not None and value.is_graph_input() and value.shape is not None and len(value.shape) == 2:
                mask = value
    return mask


class FlashGlobalAttention(RewriteRuleClassBase):
    """Global layers: key padding as one extra q/k feature, so ONNX Runtime's CPU flash attention runs.

    ONNX Runtime's CPU MultiHeadAttention takes its memory-light flash path (MLAS, O(n) memory)
    only with no bias and no mask; with the padding bias it materialises [batch, heads, n, n]
    probabilities (3.2 GB at 8192 on ModernBERT-base). Appending one feature per head,
    ``q' = [q, 1]`` and ``k' = [k, (mask - 1) · PAD_PENALTY]``, adds exactly 0 to every real key's
    score and ``-PAD_PENALTY · scale`` to every padded key's (exp underflows to 0), with the
    scale pinned to ``1/sqrt(head)``: the same attention, with no bias. The penalty is finite
    in fp16 so that ``0 · penalty`` stays 0.
    """

    def __init__(self) -> None:
        super().__init__(name="FlashGlobalAttention")
        self._found: dict[int, ir.Value] = {}

    def pattern(self, op, query, key, value, bias):  # type: ignore[no-untyped-def]
        return op.MultiHeadAttention(query, key, value, None, None, bias, _domain=MS, _outputs=["attn"])

    def check(self, context, query, key, value, bias, attn, **_) -> bool:  # type: ignore[no-untyped-def,override]
        node = attn.producer()
        if node is None or len(node.outputs) != 1 or "unidirectional" in node.attributes:
            return False
        hidden = query.shape[-1] if query.shape is not None and len(query.shape) == 3 else None
        if not isinstance(hidden, int) or key.shape != query.shape:
            return False
        mask = find_key_padding(bias)
        if mask is None:
            return False
        self._found[id(bias)] = mask
        return True

    def rewrite(self, op, query, key, value, bias, attn, **_):  # type: ignore[no-untyped-def]
        node = attn.producer()
        mask = self._found[id(bias)]
        heads = node.attributes["num_heads"].as_int()
        hidden = int(query.shape[-1])
        head = hidden // heads
        scale_attr = node.attributes.get("scale")
        scale = (
            scale_attr.as_float() if scale_attr is not None and scale_attr.as_float() != 0 else 1.0 / math.sqrt(head)
        )
        per_head = _ints(op, [0, 0, heads, head])
        flat = _ints(op, [0, 0, heads * (head + 1)])
        q4, k4 = op.Reshape(query, per_head), op.Reshape(key, per_head)  # [B, S, H, D]
        ones = op.Expand(
            op.CastLike(_float(op, 1.0), query), op.Concat(op.Shape(q4, start=0, end=3), _ints(op, [1]), axis=0)
        )  # [B, S, H, 1]
        penalty = op.Mul(
            op.Sub(op.CastLike(mask, key), op.CastLike(_float(op, 1.0), key)), op.CastLike(_float(op, PAD_PENALTY), key)
        )  # [B, S]: 0 real, -P padded
        extra = op.Expand(op.Unsqueeze(penalty, _ints(op, [2, 3])), op.Shape(ones))  # [B, S, H, 1]
        q2 = op.Reshape(op.Concat(q4, ones, axis=-1), flat)
        k2 = op.Reshape(op.Concat(k4, extra, axis=-1), flat)
        return op.MultiHeadAttention(q2, k2, value, num_heads=heads, scale=scale, _domain=MS)


PAD_PENALTY = 30000.0


def switch_length(half: int) -> int:
    """The longest sequence a local layer runs dense: ``SWITCH_WINDOWS`` windows (``2 * half``); longer is blocked."""
    return SWITCH_WINDOWS * 2 * half


def _apply(rewrite: BandedLocalAttention | BandedStandardAttention, model: ir.Model) -> int:
    """Apply one rewrite; the switch length it used goes into the model's metadata (``SWITCH_META``)."""
    rule = RewriteRule(rewrite.pattern, rewrite.rewrite, rewrite.check, name=rewrite.name)
    count = RewriteRuleSet([rule]).apply_to_model(model)
    if rewrite.switched:
        model.metadata_props[SWITCH_META] = str(max(rewrite.switched))
    return count


def read_switch(metadata: dict[str, str]) -> int | None:
    """The switch length recorded in a graph's metadata (``{p.key: p.value for p in proto.metadata_props}``)."""
    value = metadata.get(SWITCH_META)
    return int(value) if value else None


def banded_local_attention(model: ir.Model, *, flash_global: bool = True, switch: bool = True) -> int:
    """Rewrite every sliding-window MultiHeadAttention in ``model``; returns how many were rewritten.

    With ``switch`` each local layer becomes ``If(seq <= switch_length)``: dense up to it, blocked
    past it (``length_switch``); without, always blocked. With ``flash_global`` the global layers'
    padding bias also becomes a key feature (``FlashGlobalAttention``) so that they run ONNX Runtime's
    O(n)-memory flash kernel.
    """
    count = _apply(BandedLocalAttention(switch), model)
    if flash_global:
        RewriteRuleSet([FlashGlobalAttention.rule()]).apply_to_model(model)
    if count:
        common_passes.CommonSubexpressionEliminationPass()(model)  # one copy of the shared mask/shape ops
        common_passes.RemoveUnusedNodesPass()(model)
    return count


def banded_standard_attention(model: ir.Model, *, switch: bool = True) -> int:
    """The same rewrite on a standard-ONNX graph (``--runtime trt|openvino``); returns how many layers."""
    count = _apply(BandedStandardAttention(switch), model)
    if count:
        common_passes.CommonSubexpressionEliminationPass()(model)
        common_passes.RemoveUnusedNodesPass()(model)
    return count


def local_attention_count(model: ir.Model) -> int:
    """How many MultiHeadAttention nodes still carry a sliding-window bias (0 after the rewrite)."""
    return sum(
        1
        for n in model.graph.all_nodes()
        if n.op_type == "MultiHeadAttention"
        and len(n.inputs) > 5
        and n.inputs[5] is not None
        and find_band(n.inputs[5]) is not None
    )
