"""Long-document embeddings (``run --chunk``): a text longer than the bundle's maximum, embedded in windows.

Without ``--chunk`` a long text is truncated to the bundle's maximum (with a note), which is what
sentence-transformers does. With it, each text is cut into consecutive windows of at most
``max_seq`` tokens (the tokenizer's ``return_overflowing_tokens``, special tokens in every
window, no overlap), every window is embedded with the bundle's pooling *before* normalisation,
and the document's vector is the mean of its windows' vectors weighted by their real token
counts (so a short last window does not count as much as a full one; for ``mean`` pooling this is
the mean over all tokens but the extra special tokens), then L2-normalised when the pooling
normalises. A text that fits in one window gets exactly the unchunked embedding. Windows of all
texts are batched together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bert_export.runtimes import postprocess as pp
from bert_export.runtimes.base import Runner

CHUNK = 32  # windows per inference call


def embed_chunked(
    b: Any, tokenizer: Any, runner: Runner, texts: list[str], feed: Callable[[Any, Any], dict[str, np.ndarray]]
) -> dict[str, Any]:
    """``{"embeddings": [...]}``: one vector per text, long texts mean-pooled over their windows."""
    pooling = b.manifest.get("pooling") or {}
    mode, normalize = str(pooling.get("mode", "cls")), bool(pooling.get("normalize", False))
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=b.max_seq,
        return_overflowing_tokens=True,
        return_token_type_ids=True,
        padding="longest",
    )
    owner = np.asarray(enc["overflow_to_sample_mapping"])
    inputs = feed(b, enc)
    limit = min(CHUNK, getattr(getattr(runner, "profile", None), "max", (CHUNK,))[0])
    vectors, weights = [], []
    for lo in range(0, len(owner), limit):
        part = {k: v[lo : lo + limit] for k, v in inputs.items()}
        hidden = runner.infer(part)["last_hidden_state"]
        mask = part["attention_mask"]
        vectors.append(pp.pool(hidden, mask, mode, normalize=False))
        weights.append(mask.sum(1))
    v, w = np.concatenate(vectors), np.concatenate(weights).astype(np.float64)
    out = np.zeros((len(texts), v.shape[1]))
    for t in range(len(texts)):
        rows = owner == t
        out[t] = (v[rows] * w[rows, None]).sum(0) / w[rows].sum()
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return {"embeddings": [[round(float(x), pp.DECIMALS) for x in row] for row in out]}
