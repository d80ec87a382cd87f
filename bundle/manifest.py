"""The manifest's schema: what a reader checks before it trusts anything a bundle says.

A bundle is untrusted input (it travels to devices, CI runners and colleagues), so
``manifest.json`` is parsed strictly (standard JSON only: no NaN/Infinity literals, no duplicate
keys, bounded size and nesting) and validated with pydantic before any other code reads it:
types, ranges, known family/task/precision, paths that stay inside the bundle, and the
cross-references between sections (every file the manifest names is listed in ``files``).

pydantic rather than hand-written checks: strict typing (``true`` is not an int, ``"3"`` is
not a number), bounded numbers and precise error locations come with it, and its error
locations name the offending field in the one-line message users see. Keys the schema does not
know are kept and ignored (docs/bundle.md: adding a key does not bump the schema version).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from bert_export.models import FAMILIES, TASKS, BertExportError, get_family, get_task
from bert_export.models.precisions import PRECISIONS_REGISTRY

# Every registered precision: a bundle stores fp32/fp16/int8 graphs, and an OpenVINO bundle built with
# --bf16 records bf16 (its IR runs with the bf16 hint).
MANIFEST_PRECISIONS = tuple(PRECISIONS_REGISTRY)

SCHEMA_VERSIONS = (1, 2)  # 1: one graph at the root (read as it is); 2: graphs under onnx/ per precision
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILES = 10_000
MAX_PATH_CHARS = 255
MAX_NESTING = 64
_COMPONENT = re.compile(r"[A-Za-z0-9._+-]+")


def check_rel_path(value: str) -> str:
    """A bundle-relative path: ``/``-separated plain components, nothing that can leave the bundle.

    No absolute paths, ``..``/``.``/empty components, backslashes, NUL, control characters or
    exotic characters (which also keeps every name printable in one error line); at most
    255 characters. Where the components resolve to on disk is checked when files are opened
    (bundle.open_listed: no symlinks, regular files only).
    """
    if not value or len(value) > MAX_PATH_CHARS:
        raise ValueError("must be a relative path of 1 to 255 characters")
    parts = value.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _COMPONENT.fullmatch(part):  # fullmatch: '$' would let 'a\n' by
            raise ValueError(
                f"{value!r} is not a plain relative path inside the bundle "
                "(letters, digits, '._+-' components separated by '/'; no '..', no absolute path)"
            )
    return value


# check_rel_path as a JSON Schema pattern (ECMA-262), for docs/manifest.schema.json only: validation is check_rel_path.
_PART, _NOT_DOTS = r"[A-Za-z0-9._+-]+", r"(?!\.\.?(?:/|$))"
REL_PATH_PATTERN = rf"^{_NOT_DOTS}{_PART}(?:/{_NOT_DOTS}{_PART})*$"
PLAIN_NAME_PATTERN = rf"^{_NOT_DOTS}{_PART}$"
RelPath = Annotated[
    str,
    AfterValidator(check_rel_path),
    Field(json_schema_extra={"pattern": REL_PATH_PATTERN, "minLength": 1, "maxLength": MAX_PATH_CHARS}),
]
PlainName = Annotated[
    str,
    AfterValidator(check_rel_path),
    Field(
        pattern=r"^[^/]+$",
        json_schema_extra={"pattern": PLAIN_NAME_PATTERN, "minLength": 1, "maxLength": MAX_PATH_CHARS},
    ),
]
Count = Annotated[int, Field(ge=0, le=1 << 40)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]
Axis = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] | Annotated[int, Field(ge=1, le=1 << 24)]


class Strict(BaseModel):
    """Strict types, finite floats, unknown keys kept (and ignored)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)


class TensorEntry(Strict):
    name: Name
    dtype: Literal["int64", "int32", "float32", "float16"]
    shape: list[Axis] = Field(min_length=1, max_length=4)


class FileEntry(Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Count


OpsetKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,127};[0-9]{1,6}$")]


class RequiredOperators(Strict):
    """An ORT-format graph's operator set (``--runtime ort-mobile``; optional, absent elsewhere): ``ops`` maps
    ``"<domain>;<opset>"`` to operator names, and ``file`` is the ``required_operators.config`` a reduced-size
    ONNX Runtime build takes (``--include_ops_by_config``)."""

    file: RelPath
    ops: dict[OpsetKey, Annotated[list[Name], Field(max_length=4096)]] = Field(max_length=64)


class GraphEntry(Strict):
    file: RelPath
    files: list[RelPath] = Field(min_length=1, max_length=64)
    nodes: Count | None = None
    ops: dict[str, Count] | None = None
    # schema 2, in ``graphs``: this graph's outputs (an fp16 graph exported with --fp16-io returns float16)
    outputs: list[TensorEntry] | None = Field(default=None, min_length=1, max_length=8)
    required_operators: RequiredOperators | None = None  # ORT-format graphs: the operator set, and its config file


class Labels(Strict):
    num_labels: Annotated[int, Field(ge=1, le=100_000)]
    id2label: dict[str, Annotated[str, Field(max_length=256)]]

    @model_validator(mode="after")
    def _ids(self) -> Labels:
        if set(self.id2label) != {str(i) for i in range(self.num_labels)}:
            raise ValueError(f"id2label must have exactly the keys '0'..'{self.num_labels - 1}'")
        return self


class Pooling(Strict):
    mode: Literal["cls", "mean", "max", "mean_sqrt_len"]
    normalize: bool


TokenId = Annotated[int, Field(ge=0, le=10_000_000)]


class SpecialTokens(Strict):
    cls: TokenId | None = None
    sep: TokenId | None = None
    pad: TokenId | None = None
    mask: TokenId | None = None


class TokenizerEntry(Strict):
    files: list[PlainName] = Field(max_length=16)
    kind: Literal["wordpiece", "bpe", "unigram"] | None = None
    do_lower_case: bool | None = None


class ModelSizes(Strict):
    hidden_size: Annotated[int, Field(ge=1, le=1 << 16)] | None = None
    num_hidden_layers: Annotated[int, Field(ge=1, le=1024)] | None = None
    num_attention_heads: Annotated[int, Field(ge=1, le=1024)] | None = None
    intermediate_size: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    vocab_size: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class GoldenEntry(Strict):
    file: RelPath
    version: Annotated[int, Field(ge=0, le=1 << 31)]
    examples: Annotated[int, Field(ge=0, le=10_000)]


class EngineRecord(Strict):
    """``manifest["tensorrt"]``: the engine lives beside the listed files (it is rebuilt per GPU)."""

    file: PlainName


class Untrained(Strict):
    """``manifest["untrained"]`` (optional; bundles without it are read as before): weights that were never
    trained, so the bundle's answers mean nothing. ``random-init``: every weight (``--random-init``);
    ``new-head``: the task head was not in the checkpoint (transformers' missing keys) and was randomly
    initialised. Readers print ``warning`` on every use (run, validate --data, serve, the Triton post model,
    the C++ demo): one export-time note is easy to miss, a wrong answer from a random head is not."""

    reason: Literal["random-init", "new-head"]
    params: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=4096)
    warning: Annotated[str, Field(min_length=1, max_length=1000)]


class Manifest(Strict):
    """A bert-export bundle's manifest.json (docs/bundle.md).

    Beyond the field types and ranges here, readers check: schema_version 1 or 2; precision and every
    graphs key a precision a bundle stores; inputs exactly the family's, outputs among the task's;
    max_sequence_length <= max_position_embeddings; labels for labelled tasks; graph.file among
    graph.files; schema 2: graphs[precision] equals graph and graph files are disjoint, schema 1: no
    graphs; every named file listed in files; tensorrt.file not listed.
    """

    schema_version: int
    family: Literal[tuple(FAMILIES)]  # type: ignore[valid-type]
    task: Literal[tuple(TASKS)]  # type: ignore[valid-type]
    precision: Annotated[str, Field(json_schema_extra={"enum": list(MANIFEST_PRECISIONS)})]
    opset: Annotated[int, Field(ge=7, le=64)] | None = None
    inputs: list[TensorEntry] = Field(min_length=1, max_length=8)
    outputs: list[TensorEntry] = Field(min_length=1, max_length=8)
    max_sequence_length: Annotated[int, Field(ge=1, le=1 << 20)]
    max_position_embeddings: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    local_attention: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    labels: Labels | None = None
    pooling: Pooling | None = None
    special_tokens: SpecialTokens | None = None
    tokenizer: TokenizerEntry | None = None
    config: ModelSizes | None = None
    graph: GraphEntry
    graphs: dict[str, GraphEntry] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        json_schema_extra={"propertyNames": {"enum": list(MANIFEST_PRECISIONS)}},
    )
    golden: GoldenEntry | None = None
    tensorrt: EngineRecord | None = None
    untrained: Untrained | None = None
    files: dict[RelPath, FileEntry] = Field(
        max_length=MAX_FILES,
        json_schema_extra={"propertyNames": {"pattern": REL_PATH_PATTERN, "minLength": 1, "maxLength": MAX_PATH_CHARS}},
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.schema_version not in SCHEMA_VERSIONS:
            raise ValueError(
                f"schema_version {self.schema_version} is not one this bert-export reads ({SCHEMA_VERSIONS})"
            )
        if self.precision not in MANIFEST_PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(MANIFEST_PRECISIONS)}")
        if self.max_position_embeddings is not None and self.max_sequence_length > self.max_position_embeddings:
            raise ValueError("max_sequence_length exceeds max_position_embeddings")
        fam, task = get_family(self.family), get_task(self.task)
        want_in = [s.name for s in fam.inputs]
        got_in = [t.name for t in self.inputs]
        if sorted(got_in) != sorted(want_in):
            raise ValueError(f"inputs {got_in} are not the {fam.name} inputs {want_in}")
        known_out = {o.name for o in task.outputs}
        got_out = [t.name for t in self.outputs]
        if len(set(got_out)) != len(got_out) or not set(got_out) <= known_out:
            raise ValueError(f"outputs {got_out} are not {task.name} outputs ({', '.join(sorted(known_out))})")
        for t in self.inputs:
            if t.dtype not in ("int64", "int32"):
                raise ValueError(f"input {t.name} has dtype {t.dtype}; inputs are int64 or int32")
        for t in self.outputs:
            if t.dtype not in ("float32", "float16"):
                raise ValueError(f"output {t.name} has dtype {t.dtype}; outputs are float32 or float16")
        if task.has_labels and self.labels is None:
            raise ValueError(f"a {task.name} bundle needs labels")
        if self.graph.file not in self.graph.files:
            raise ValueError("graph.file is not among graph.files")
        self._check_graphs(task, got_out)
        named = [("graph.files", f) for f in self.graph.files]
        named += [(f"graphs.{p}.files", f) for p, g in (self.graphs or {}).items() for f in g.files]
        required = [("graph", self.graph), *((f"graphs.{p}", g) for p, g in (self.graphs or {}).items())]
        named += [
            (f"{w}.required_operators.file", g.required_operators.file) for w, g in required if g.required_operators
        ]
        named += [("tokenizer.files", f) for f in (self.tokenizer.files if self.tokenizer else [])]
        named += [("golden.file", self.golden.file)] if self.golden else []
        for where, rel in named:
            if rel not in self.files:
                raise ValueError(f"{where} names {rel!r}, which is not listed in files")
        if self.tensorrt is not None and self.tensorrt.file in self.files:
            raise ValueError("tensorrt.file must not be a listed file")
        return self

    def _check_graphs(self, task: Any, outputs: list[str]) -> None:
        """Schema 2: one graph per known precision, files disjoint, ``graph`` = the default's, same output names."""
        if self.schema_version == 1:
            if self.graphs is not None:
                raise ValueError("graphs is a schema-2 field; a schema-1 manifest has only graph")
            return
        if self.graphs is None:
            raise ValueError("a schema-2 manifest lists its graphs by precision in graphs")
        unknown = [p for p in self.graphs if p not in MANIFEST_PRECISIONS]
        if unknown:
            raise ValueError(f"graphs has precision {unknown[0]!r}, not one of {', '.join(MANIFEST_PRECISIONS)}")
        default = self.graphs.get(self.precision)
        if default is None:
            raise ValueError(f"graphs has no entry for the default precision {self.precision!r}")
        if default.file != self.graph.file or default.files != self.graph.files:
            raise ValueError("graph must name the default precision's graph files (graphs[precision])")
        seen: set[str] = set()
        for p, g in self.graphs.items():
            if g.file not in g.files:
                raise ValueError(f"graphs.{p}.file is not among graphs.{p}.files")
            if seen & set(g.files):
                raise ValueError(f"graphs.{p} shares a file with another precision's graph")
            seen |= set(g.files)
            if g.outputs is not None:
                names = [t.name for t in g.outputs]
                if sorted(names) != sorted(outputs) or any(t.dtype not in ("float32", "float16") for t in g.outputs):
                    raise ValueError(f"graphs.{p}.outputs {names} are not the manifest's outputs {outputs}")


def untrained_warning(manifest: dict[str, Any]) -> str | None:
    """The warning a reader prints on every use of a bundle whose weights were never trained, else None.

    ``manifest["untrained"]`` when the bundle has it; older bundles are judged from ``source``
    (``kind`` ``random-init``, or ``new_head_params``), which they always recorded."""
    entry = manifest.get("untrained")
    if isinstance(entry, dict) and isinstance(entry.get("warning"), str):
        return entry["warning"]
    source = manifest.get("source")
    if not isinstance(source, dict):
        return None
    params = source.get("new_head_params")
    return untrained_record(
        manifest.get("task", "task"),
        random_init=source.get("kind") == "random-init",
        params=[p for p in params if isinstance(p, str)] if isinstance(params, list) else [],
    ).get("warning")


def untrained_record(task: str, *, random_init: bool, params: list[str]) -> dict[str, Any]:
    """``manifest["untrained"]`` for an export (empty when every weight came from the checkpoint)."""
    if random_init:
        return {
            "reason": "random-init",
            "params": [],
            "warning": "warning: this bundle was exported with --random-init: all of its weights are random, so its "
            "outputs mean nothing (it is for testing a pipeline, not for answers)",
        }
    if not params:
        return {}
    shown = ", ".join(params[:3]) + (f" and {len(params) - 3} more" if len(params) > 3 else "")
    return {
        "reason": "new-head",
        "params": list(params),
        "warning": f"warning: this bundle's {task} head was not in the checkpoint and was randomly initialised "
        f"({shown}), so its answers mean nothing: export a checkpoint fine-tuned for {task}",
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _depth(value: Any, limit: int = MAX_NESTING) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def strict_json(data: bytes, what: str, fix: str = "re-export the bundle") -> Any:
    """Standard JSON only: UTF-8, no NaN/Infinity, no duplicate keys, bounded nesting.

    Python's json module accepts NaN and duplicate keys and fails with RecursionError on deep
    nesting; each of those would either change meaning silently or end in a traceback. ``fix``
    ends each error (a model directory's files are restored, not re-exported).
    """
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise BertExportError(f"{what} is nested too deeply; {fix}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BertExportError(f"{what} is not valid JSON ({' '.join(str(exc).split())[:120]}); {fix}") from None
    if _depth(value) > MAX_NESTING:
        raise BertExportError(f"{what} is nested more than {MAX_NESTING} levels deep; {fix}")
    return value


def describe(error: ValidationError) -> str:
    """The first validation error as ``field.path: message`` (one line)."""
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(top level)"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{loc}: {' '.join(msg.split())[:200]}{more}"


def validate_manifest(raw: Any, where: str) -> Manifest:
    """The checked manifest, or one BertExportError naming the first field that is wrong."""
    if not isinstance(raw, dict):
        raise BertExportError(f"{where} is not a JSON object; re-export the bundle")
    version = raw.get("schema_version")
    if type(version) is int and version not in SCHEMA_VERSIONS:
        raise BertExportError(
            f"{where} has schema_version {version}; this bert-export reads version "
            f"{', '.join(map(str, SCHEMA_VERSIONS))}: re-export the bundle with this bert-export"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BertExportError(
            f"{where} is not a valid bert-export manifest: {describe(exc)}; re-export the bundle"
        ) from None


def finite(values: Any) -> bool:
    """True when every number in a nested JSON value is finite."""
    if isinstance(values, float):
        return math.isfinite(values)
    if isinstance(values, dict):
        return all(finite(v) for v in values.values())
    if isinstance(values, list):
        return all(finite(v) for v in values)
    return True


def json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), exported from the pydantic model above.

    Committed as docs/manifest.schema.json (tests/test_manifest_schema.py keeps it in sync) for
    readers in other languages: it states every field's type and range; the cross-field rules are
    in Manifest's description (a JSON Schema cannot say "listed in files").
    """
    schema = Manifest.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """docs/manifest.schema.json's exact text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m bert_export.bundle.manifest --schema > docs/manifest.schema.json``."""
    parser = argparse.ArgumentParser(prog="python -m bert_export.bundle.manifest", description=main.__doc__)
    parser.add_argument("--schema", action="store_true", required=True, help="print the manifest's JSON Schema")
    parser.parse_args(argv)
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
