"""golden.json as stored in a bundle: its schema, and reading it back as untrusted input.

Building golden.json (running PyTorch) and checking a runner against it live in
``exporter/golden.py``; this module is the format, so every reader shares one schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bert_export.models import BertExportError

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

GOLDEN = "golden.json"
GOLDEN_VERSION = 1


class _Golden(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


Finite = Annotated[float, Field(allow_inf_nan=False)] | int


class Tolerance(_Golden):
    max_abs: Finite | None
    cosine_min: Finite
    exact_results: bool
    result_abs: Finite | None = None


class PoolRef(_Golden):
    reduce: Literal["pool"]
    mode: Literal["cls", "mean", "max", "mean_sqrt_len"]
    normalize: bool
    values: list[Finite] = Field(min_length=1)


class TopkRef(_Golden):
    reduce: Literal["topk"]
    positions: list[Annotated[int, Field(ge=0)]]
    ids: list[list[Annotated[int, Field(ge=0)]]]
    values: list[list[Finite]]


class Example(_Golden):
    name: Annotated[str, Field(max_length=200)]
    input_ids: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    outputs: dict[str, PoolRef | TopkRef | list[Finite] | list[list[Finite]]] = Field(min_length=1)


class GoldenFile(_Golden):
    version: int
    tolerances: dict[str, Tolerance]
    examples: list[Example] = Field(min_length=1, max_length=1000)


def load_golden(bundle: str | Path | Bundle) -> dict[str, Any]:
    """golden.json of a bundle, schema-checked (finite numbers, ids and positions in range)."""
    from bert_export.bundle.manifest import describe
    from bert_export.bundle.reader import Bundle, load_bundle

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if not b.has_file(GOLDEN):
        raise BertExportError(
            f"{b.path} has no {GOLDEN} (exported with --no-validate, or without a tokenizer); re-export it"
        )
    golden = b.read_json(GOLDEN)
    where = f"{GOLDEN} in bundle {b.path}"
    if not isinstance(golden, dict) or golden.get("version") != GOLDEN_VERSION:
        version = golden.get("version") if isinstance(golden, dict) else None
        raise BertExportError(
            f"{where} has version {version!r}; this bert-export reads {GOLDEN_VERSION}: re-export the bundle"
        )
    try:
        GoldenFile.model_validate(golden)
    except ValidationError as exc:
        raise BertExportError(f"{where} is malformed: {describe(exc)}; re-export the bundle") from None
    _check_ranges(b, golden, where)
    return golden


def _check_ranges(b: Bundle, golden: dict[str, Any], where: str) -> None:
    """Every index golden.json gives must fit the bundle: ids in the vocabulary, positions in the sequence."""
    vocab = (b.manifest.get("config") or {}).get("vocab_size")
    inputs = [s.name for s in b.inputs]
    outputs = {s.name for s in b.outputs}
    if b.precision not in golden["tolerances"]:
        raise BertExportError(f"{where} has no tolerances for {b.precision}; re-export the bundle")
    for ex in golden["examples"]:
        arrays = [ex.get(name) for name in inputs]
        n = len(ex["input_ids"])
        if (
            any(not isinstance(a, list) or len(a) != n or not all(type(v) is int for v in a) for a in arrays)
            or n > b.max_seq
        ):
            raise BertExportError(
                f"{where}: example {ex['name']!r} lacks inputs of one length <= {b.max_seq}; re-export the bundle"
            )
        for key in ("attention_mask", "token_type_ids"):
            if key in inputs and not set(ex[key]) <= {0, 1}:
                raise BertExportError(
                    f"{where}: example {ex['name']!r} has {key} values other than 0 and 1; re-export the bundle"
                )
        if isinstance(vocab, int) and max(ex["input_ids"]) >= vocab:
            raise BertExportError(
                f"{where}: example {ex['name']!r} has token ids outside the vocabulary; re-export the bundle"
            )
        for name, ref in ex["outputs"].items():
            if name not in outputs:
                raise BertExportError(
                    f"{where}: example {ex['name']!r} has an output {name!r} the graph does not have; re-export the bundle"
                )
            if isinstance(ref, dict) and ref.get("reduce") == "topk":
                ok = len(ref["positions"]) == len(ref["ids"]) == len(ref["values"]) and all(
                    p < n for p in ref["positions"]
                )
                ok = ok and all(len(i) == len(v) >= 1 for i, v in zip(ref["ids"], ref["values"]))
                ok = ok and not (isinstance(vocab, int) and any(t >= vocab for row in ref["ids"] for t in row))
                if not ok:
                    raise BertExportError(
                        f"{where}: example {ex['name']!r} has top-k positions or ids out of range; re-export the bundle"
                    )
