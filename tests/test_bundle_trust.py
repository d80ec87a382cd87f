"""A bundle is untrusted input: every reader refuses what it cannot trust in one line (exit 2).

Each class of defect from issue #10's reading side has a test here: paths that leave the bundle,
symbolic links, FIFOs and devices, unlisted files that would change behaviour, malformed
manifests, forged reference and golden files, references that could make a gate pass over
nothing. Property-based tests (hypothesis) then mutate a valid manifest, golden.json and
reference.safetensors field by field. Every test also checks, with an audit hook on ``open``,
that no file outside the bundle was read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_export.bundle.reader import MANIFEST, REFERENCE, load_bundle, sha256
from bert_export.cli.main import main
from bert_export.exporter.golden import GOLDEN, check_golden, load_golden
from bert_export.models import BertExportError
from bert_export.quantize.pipeline import OptimizeOptions
from bert_export.runtimes.factory import bundle_tokenizer, make_runner

from .conftest import resign
from .test_bad_input import assert_one_error_line

# --- watching what is opened -----------------------------------------------------------------------

_WATCH: dict[str, Any] = {"prefix": None, "hits": [], "armed": False}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if (
        event == "open"
        and _WATCH["armed"]
        and _WATCH["prefix"]
        and args
        and isinstance(args[0], (str, bytes, os.PathLike))
    ):
        path = os.fsdecode(args[0]) if not isinstance(args[0], os.PathLike) else os.fspath(args[0])
        if str(path).startswith(_WATCH["prefix"]):
            _WATCH["hits"].append(str(path))


sys.addaudithook(_audit)


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[Path]:
    """A file outside every bundle that no reader may open (its opens are recorded)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret"
    path.write_text("top secret\n")
    _WATCH["prefix"], _WATCH["hits"] = str(outside), []
    yield path
    hits = list(_WATCH["hits"])
    _WATCH["prefix"], _WATCH["hits"] = None, []
    assert not hits, f"a reader opened files outside the bundle: {hits}"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in-process, with reads outside the bundle recorded (when a test watches a place)."""
    _WATCH["armed"] = True
    try:
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
    finally:
        _WATCH["armed"] = False
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def refused(capsys: pytest.CaptureFixture[str], bundle: Path, *needles: str, command: str = "validate") -> None:
    args = (
        [command, str(bundle), "-q"]
        if command == "validate"
        else ["run", str(bundle), "--text", "Paris is lovely.", "--json"]
    )
    code, _, err = cli(capsys, *args)
    assert_one_error_line(code, err, *needles)


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    edit(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def tiny(make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]) -> Path:
    return copy_bundle(make_bundle("bert", "seq-cls"))


# --- paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_listed_path_outside_the_bundle_is_refused(capsys, tiny: Path, secret: Path, kind: str, command: str) -> None:
    rel = "../outside/secret" if kind == "dotdot" else str(secret)
    bundle = tiny  # a sibling of outside/, so ../outside/secret exists
    info = {"sha256": sha256(secret), "bytes": secret.stat().st_size}

    def edit(m: dict[str, Any]) -> None:
        m["files"][rel] = info
        m["tokenizer"]["files"].append(rel)

    edit_manifest(bundle, edit)
    refused(capsys, bundle, "plain relative path", command=command)


def test_symlink_inside_the_bundle_is_refused(capsys, tiny: Path, secret: Path) -> None:
    (tiny / "vocab.txt").rename(secret)
    (tiny / "vocab.txt").symlink_to(secret)
    refused(capsys, tiny, "vocab.txt", "symbolic link")


def test_symlinked_directory_on_the_way_is_refused(capsys, tiny: Path, secret: Path) -> None:
    shutil.copy(tiny / "vocab.txt", secret.parent / "vocab.txt")
    (tiny / "sub").symlink_to(secret.parent)
    info = {"sha256": sha256(tiny / "vocab.txt"), "bytes": (tiny / "vocab.txt").stat().st_size}
    edit_manifest(tiny, lambda m: m["files"].__setitem__("sub/vocab.txt", info))
    refused(capsys, tiny, "sub/vocab.txt", "symbolic link")


def test_graph_file_not_listed_is_refused(capsys, tiny: Path) -> None:
    shutil.copy(tiny / "onnx/model.onnx", tiny / "other.onnx")

    def point_at_other(m: dict) -> None:
        for record in (m["graph"], m["graphs"][m["precision"]]):
            record.update(file="other.onnx", files=["other.onnx"])

    edit_manifest(tiny, point_at_other)
    refused(capsys, tiny, "graph.files names 'other.onnx', which is not listed in files")


def test_fifo_listed_in_the_manifest_is_refused_without_hanging(tiny: Path) -> None:
    os.mkfifo(tiny / "pipe")
    edit_manifest(tiny, lambda m: m["files"].__setitem__("pipe", {"sha256": "0" * 64, "bytes": 1}))
    proc = subprocess.run(
        [sys.executable, "-c", "from bert_export.cli.main import main; main()", "validate", str(tiny), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error_line(proc.returncode, proc.stderr, "pipe is not a regular file")


def test_device_behind_a_link_is_refused(capsys, tiny: Path) -> None:
    (tiny / "zero").symlink_to("/dev/zero")
    edit_manifest(tiny, lambda m: m["files"].__setitem__("zero", {"sha256": "0" * 64, "bytes": 1 << 30}))
    refused(capsys, tiny, "zero")


def test_external_data_outside_the_listed_files_is_refused(capsys, tiny: Path, secret: Path) -> None:
    import onnx

    model = onnx.load(str(tiny / "onnx/model.onnx"))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../outside/secret"), ("offset", "0"), ("length", "4")):
        init.external_data.add(key=key, value=value)
    onnx.save(model, str(tiny / "onnx/model.onnx"))
    resign(tiny)
    refused(capsys, tiny, "refers to external data '../outside/secret'")


# --- a forged graph file: the ONNX graph and the ORT-format one (--runtime ort-mobile) alike ---------------

GRAPH_KINDS = {"onnx": {}, "ort": {"optimization": OptimizeOptions(runtime="ort-mobile")}}


def _forge(bundle: Path, rel: str, case: str, secret: Path) -> None:
    path = bundle / rel
    data = path.read_bytes()
    if case == "wrong-hash":  # one byte changed, the manifest left alone
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case in ("truncated-resigned", "garbage-resigned", "other-format-resigned"):  # checksums recomputed
        forged = {
            "truncated-resigned": data[: len(data) // 2],
            "garbage-resigned": data[:8] + np.random.default_rng(0).bytes(4096),  # the right magic, then noise
            "other-format-resigned": (bundle / "config.json").read_bytes(),
        }[case]
        path.write_bytes(forged)
        resign(bundle)
    elif case == "symlink":  # the same bytes, behind a link
        secret.write_bytes(data)
        path.unlink()
        path.symlink_to(secret)


FORGERIES = {
    "wrong-hash": "does not match its sha256",
    "truncated": "does not match its sha256",
    "truncated-resigned": "is not a readable",
    "garbage-resigned": "is not a readable",
    "other-format-resigned": "is not a readable",
    "symlink": "symbolic link",
}


# every forgery of either kind through validate; run (which reads the same way) on the .ort ones
FORGED = [(kind, case, "validate") for kind in GRAPH_KINDS for case in FORGERIES]
FORGED += [("ort", case, "run") for case in FORGERIES]


@pytest.mark.parametrize(("kind", "case", "command"), FORGED)
def test_forged_graph_file_is_one_line(
    capsys,
    make_bundle: Callable[..., Path],
    copy_bundle: Callable[[Path], Path],
    secret: Path,
    kind: str,
    case: str,
    command: str,
) -> None:
    bundle = copy_bundle(make_bundle("bert", "seq-cls", **GRAPH_KINDS[kind]))
    rel = json.loads((bundle / MANIFEST).read_text())["graph"]["file"]
    assert rel.endswith(f".{kind}")
    _forge(bundle, rel, case, secret)
    refused(capsys, bundle, rel, FORGERIES[case], command=command)


# --- unlisted files change nothing ------------------------------------------------------------------------


def test_unlisted_added_tokens_change_nothing(
    capsys, make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]
) -> None:
    bundle = copy_bundle(make_bundle("bert", "token-cls"))
    text = "Zorblax met Quuxifer in Paris."
    before = bundle_tokenizer(load_bundle(bundle))(text)["input_ids"]
    code, out_before, _ = cli(capsys, "run", str(bundle), "--text", text, "--json")
    (bundle / "added_tokens.json").write_text(json.dumps({"zorblax": 5, "quuxifer": 6}))
    assert bundle_tokenizer(load_bundle(bundle))(text)["input_ids"] == before
    code2, out_after, _ = cli(capsys, "run", str(bundle), "--text", text, "--json")
    assert code == code2 == 0 and out_after == out_before
    assert cli(capsys, "validate", str(bundle), "-q")[0] == 0


# --- malformed manifests -------------------------------------------------------------------------------------

MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "task unknown": lambda m: m.update(task="summarize"),
    "precision unknown": lambda m: m.update(precision="int4"),
    "family unknown": lambda m: m.update(family="gpt2"),
    "max seq as string": lambda m: m.update(max_sequence_length="512"),
    "max seq null": lambda m: m.update(max_sequence_length=None),
    "max seq bool": lambda m: m.update(max_sequence_length=True),
    "max seq zero": lambda m: m.update(max_sequence_length=0),
    "bytes negative": lambda m: next(iter(m["files"].values())).update(bytes=-1),
    "sha not hex": lambda m: next(iter(m["files"].values())).update(sha256="z" * 64),
    "inputs not a list": lambda m: m.update(inputs={"name": "input_ids"}),
    "input renamed": lambda m: m["inputs"][0].update(name="ids"),
    "output of another task": lambda m: m["outputs"][0].update(name="start_logits"),
    "labels wrong keys": lambda m: m["labels"]["id2label"].update({"7": "X"}),
    "labels huge": lambda m: m["labels"].update(num_labels=10**12),
    "pooling mode unknown": lambda m: m.update(pooling={"mode": "sum", "normalize": False}),
    "tokenizer file path": lambda m: m["tokenizer"]["files"].append("sub/../vocab.txt"),
    "files not an object": lambda m: m.update(files=["model.onnx"]),
    "graph missing": lambda m: m.pop("graph"),
    "schema version 99": lambda m: m.update(schema_version=99),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_is_one_line(capsys, tiny: Path, case: str) -> None:
    edit_manifest(tiny, MALFORMED[case])
    refused(capsys, tiny, "manifest.json")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"schema_version": NaN}',
        b'{"schema_version": 1, "schema_version": 1}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a": ' * 100 + b"1" + b"}" * 100,
        b"\xff\xfe{}",
        b"[]",
    ],
)
def test_unparsable_manifest_is_one_line(capsys, tiny: Path, raw: bytes) -> None:
    (tiny / MANIFEST).write_bytes(raw)
    refused(capsys, tiny, "manifest.json")


def test_run_refuses_an_unknown_task(capsys, tiny: Path) -> None:
    edit_manifest(tiny, lambda m: m.update(task="summarize"))
    refused(capsys, tiny, "task", command="run")


def test_manifest_inputs_must_match_the_graph(capsys, tiny: Path) -> None:
    edit_manifest(tiny, lambda m: m["inputs"][0].update(dtype="int32"))
    refused(capsys, tiny, "does not match its manifest")


# --- reference and golden files ---------------------------------------------------------------------------


def _rewrite_reference(bundle: Path, edit: Callable[[dict[str, np.ndarray], dict[str, str]], None]) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(bundle / REFERENCE), framework="np") as fh:
        meta = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    edit(tensors, meta)
    save_file(tensors, str(bundle / REFERENCE), metadata=meta)
    resign(bundle)


REFERENCE_EDITS: dict[str, tuple[Callable[[dict[str, np.ndarray], dict[str, str]], None], str]] = {
    "all NaN": (
        lambda t, m: [t.__setitem__(k, np.full_like(v, np.nan)) for k, v in list(t.items()) if "/ref/" in k],
        "not finite",
    ),
    "empty case list": (lambda t, m: m.update(cases="[]"), "holds 0 cases"),
    "cases not a list": (lambda t, m: m.update(cases='{"a": 1}'), "case names"),
    "ids beyond the vocabulary": (lambda t, m: t["0/feed/input_ids"].__iadd__(10**6), "outside the vocabulary"),
    "mask of 2": (lambda t, m: t["1/feed/attention_mask"].__imul__(2), "attention_mask"),
    "feed missing": (lambda t, m: t.pop("0/feed/token_type_ids"), "token_type_ids"),
    "feed 3-D": (lambda t, m: t.__setitem__("0/feed/input_ids", t["0/feed/input_ids"][None]), "input_ids"),
    "reference missing": (lambda t, m: t.pop("0/ref/logits"), "no reference"),
}


@pytest.mark.parametrize("case", list(REFERENCE_EDITS))
def test_forged_reference_is_one_line(capsys, tiny: Path, case: str) -> None:
    edit, needle = REFERENCE_EDITS[case]
    _rewrite_reference(tiny, edit)
    refused(capsys, tiny, needle)


@pytest.mark.parametrize(
    "header",
    [
        b"\xff" * 8 + b"{}",
        (10).to_bytes(8, "little") + b'{"a": NaN}',
        (2).to_bytes(8, "little") + b"[]",
        (40).to_bytes(8, "little")
        + b'{"x": {"dtype": "F32", "shape": [999999999], "data_offsets": [0, 8]}}'
        + b" " * 8,
    ],
)
def test_forged_safetensors_header_is_one_line(capsys, tiny: Path, header: bytes) -> None:
    (tiny / REFERENCE).write_bytes(header)
    resign(tiny)
    refused(capsys, tiny, REFERENCE)


GOLDEN_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "ids beyond the vocabulary": lambda g: g["examples"][0]["input_ids"].__setitem__(1, 10**9),
    "negative id": lambda g: g["examples"][0]["input_ids"].__setitem__(1, -5),
    "lengths differ": lambda g: g["examples"][0]["attention_mask"].pop(),
    "no examples": lambda g: g.update(examples=[]),
    "output unknown": lambda g: g["examples"][0]["outputs"].update(hidden=[1.0]),
    "tolerance as string": lambda g: g["tolerances"]["fp32"].update(cosine_min="0.9"),
    "examples not a list": lambda g: g.update(examples={"a": 1}),
    "outputs null": lambda g: g["examples"][0].update(outputs=None),
}


@pytest.mark.parametrize("case", list(GOLDEN_EDITS))
def test_broken_golden_is_one_error(tiny: Path, case: str) -> None:
    golden = json.loads((tiny / GOLDEN).read_text())
    GOLDEN_EDITS[case](golden)
    (tiny / GOLDEN).write_text(json.dumps(golden))
    resign(tiny)
    with pytest.raises(BertExportError, match="golden.json"):
        load_golden(tiny)


# --- property-based: mutate valid files field by field ---------------------------------------------------


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))


def set_at(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


# The fields the schema types exactly ("*" = any key or index); extras such as "versions",
# "export" or "graph.exported_ops" are kept and ignored by design, and an axis of a shape may be
# a name or a size, so neither is in this list.
CHECKED = [
    "schema_version",
    "family",
    "task",
    "precision",
    "opset",
    "max_sequence_length",
    "max_position_embeddings",
    "inputs",
    "inputs.*",
    "inputs.*.name",
    "inputs.*.dtype",
    "inputs.*.shape",
    "outputs",
    "outputs.*",
    "outputs.*.name",
    "outputs.*.dtype",
    "outputs.*.shape",
    "labels",
    "labels.num_labels",
    "labels.id2label",
    "labels.id2label.*",
    "pooling",
    "pooling.mode",
    "pooling.normalize",
    "special_tokens",
    "special_tokens.*",
    "tokenizer",
    "tokenizer.files",
    "tokenizer.files.*",
    "tokenizer.kind",
    "tokenizer.do_lower_case",
    "config.hidden_size",
    "config.num_hidden_layers",
    "config.num_attention_heads",
    "config.intermediate_size",
    "config.vocab_size",
    "graph",
    "graph.file",
    "graph.files",
    "graph.files.*",
    "graph.nodes",
    "golden",
    "golden.file",
    "golden.version",
    "golden.examples",
    "files",
    "files.*",
    "files.*.sha256",
    "files.*.bytes",
]


def checked(path: tuple[Any, ...]) -> bool:
    return any(
        len(p := pattern.split(".")) == len(path) and all(a == "*" or a == str(b) for a, b in zip(p, path))
        for pattern in CHECKED
    )


def wrong_types(value: Any) -> list[Any]:
    """Values of a JSON type other than ``value``'s (so never valid where ``value`` was)."""
    candidates = {
        bool: [1, "true", []],
        int: ["3", 3.5, True, [], {}],
        str: [3, True, [], {}],
        list: [{}, "x", 3],
        dict: [[], "x", 3],
    }
    return next((c for t, c in candidates.items() if type(value) is t), [])


def _manifest_mutations(manifest: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any]]:
    return [(path, bad) for path, value in leaves(manifest) if path and checked(path) for bad in wrong_types(value)]


@contextmanager
def example_copy(factory: pytest.TempPathFactory, name: str, src: Path) -> Iterator[Path]:
    """A private copy of ``src`` (as ``<fresh dir>/b``) for one Hypothesis example, removed when the example ends.

    ``tmp_path_factory.mktemp`` dirs live until the session ends: 550 examples x a 5 MB bundle copy
    were 2.75 GB of the 9.3 GB peak when CI ran out of disk. A failing example is reproducible
    (``derandomize=True``), so nothing is lost."""
    root = factory.mktemp(name)
    try:
        shutil.copytree(src, root / "b")
        yield root / "b"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pristine(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "seq-cls")


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_wrong_typed_manifest_fields_are_refused(
    capsys, pristine: Path, tmp_path_factory, data: st.DataObject
) -> None:
    manifest = json.loads((pristine / MANIFEST).read_text())
    path, bad = data.draw(st.sampled_from(_manifest_mutations(manifest)), label="mutation")
    with example_copy(tmp_path_factory, "mut", pristine) as bundle:
        (bundle / MANIFEST).write_text(json.dumps(set_at(manifest, path, bad)))
        code, _, err = cli(capsys, "validate", str(bundle), "-q")
    assert_one_error_line(code, err)


DEEP: Any = []
for _ in range(80):
    DEEP = [DEEP]

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["../outside/secret", "/etc/passwd", "model.onnx", "a/../../b", "vocab.txt\x00", "fp16", "qa"]),
    st.just(DEEP),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_any_manifest_mutation_is_safe(capsys, pristine: Path, tmp_path_factory, data: st.DataObject) -> None:
    """Any value anywhere: exit 0, 1 or 2, one error line when non-zero, never a traceback or a read outside."""
    manifest = json.loads((pristine / MANIFEST).read_text())
    paths = [p for p, _ in leaves(manifest) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    value = data.draw(ANY_VALUE, label="value")
    with example_copy(tmp_path_factory, "any", pristine) as bundle:
        outside = bundle.parent / "outside"
        outside.mkdir()
        (outside / "secret").write_text("secret")
        (bundle / MANIFEST).write_text(json.dumps(set_at(manifest, path, value)))
        _WATCH["prefix"], _WATCH["hits"] = str(outside), []
        try:
            code, _, err = cli(capsys, "validate", str(bundle), "-q")
        finally:
            hits, _WATCH["prefix"] = list(_WATCH["hits"]), None
    assert not hits
    assert "Traceback" not in err
    if code:
        assert_one_error_line(code, err, exit_code=code)
        assert code in (1, 2)


@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_golden_mutations_end_in_one_error(pristine: Path, tmp_path_factory, data: st.DataObject) -> None:
    golden = json.loads((pristine / GOLDEN).read_text())
    paths = [p for p, _ in leaves(golden) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    value = data.draw(ANY_VALUE, label="value")
    with example_copy(tmp_path_factory, "golden", pristine) as bundle:
        (bundle / GOLDEN).write_text(json.dumps(set_at(golden, path, value)))
        resign(bundle)
        try:
            b = load_bundle(bundle)
            with make_runner(b) as runner:
                problems = check_golden(b, runner, b.precision)
        except BertExportError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(problems, list)


@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_reference_mutations_end_in_one_line(
    capsys, pristine: Path, tmp_path_factory, data: st.DataObject
) -> None:
    """Mutate reference.safetensors: its header JSON field by field, or its tensors' values."""
    raw = (pristine / REFERENCE).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    if data.draw(st.booleans(), label="header"):
        paths = [p for p, _ in leaves(header) if p]
        header = set_at(header, data.draw(st.sampled_from(paths), label="path"), data.draw(ANY_VALUE, label="value"))
        blob = json.dumps(header).encode()
        raw = len(blob).to_bytes(8, "little") + blob + raw[8 + size :]
    else:
        body = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(8 + size, len(body) - 1), label="offset")
            body[at] = data.draw(st.integers(0, 255), label="byte")
        raw = bytes(body)
    with example_copy(tmp_path_factory, "ref", pristine) as bundle:
        (bundle / REFERENCE).write_bytes(raw)
        resign(bundle)
        code, _, err = cli(capsys, "validate", str(bundle), "-q")
    assert "Traceback" not in err
    if code:
        assert_one_error_line(code, err, exit_code=code)
