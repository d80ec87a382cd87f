"""The C++ consumer on hostile bundles, under AddressSanitizer + UndefinedBehaviorSanitizer.

A corpus of malformed bundles is generated here from valid tiny ones (path escapes, symlinks,
a FIFO, /dev/zero, wrong JSON types / null / NaN / huge numbers / deep nesting in the manifest,
out-of-range ids and positions in golden.json and tokenizer.json, hand-built graphs whose outputs
are shorter than the sequence or of the wrong rank or type, absurd --threads) and run against
``examples/cpp/build-asan/bert_export_demo`` (``BERT_EXPORT_SANITIZE=1 examples/cpp/build.sh``,
built with ``-fsanitize=address,undefined -fno-sanitize-recover=all``). Every case must exit 2 with
exactly one ``error:`` line naming the problem, within a timeout (a FIFO must not hang), and with
no sanitizer report. Then: byte-level BPE equals Hugging Face on long single words and random text
(a 36 KB word was 18 s with the quadratic merge loop), build.sh works with only the user's own
python3 on PATH, and the libFuzzer target runs clean for a bounded time.

Cost: the ASan build (~1-2 min the first time on 2 cores, reused after), ~70 demo runs (~0.3 s
each), the fuzz build (~1 min) and BERT_EXPORT_FUZZ_SECONDS (default 30) of fuzzing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs, own_peak_rss

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "examples" / "cpp"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "UndefinedBehaviorSanitizer")
# ORT's own allocations are not ours to check (its library is not instrumented); our code is.
ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def build(mode: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    needs(not missing, f"no {' or '.join(missing)}: the C++ example cannot be built (apt-get install cmake g++)")
    env = {**os.environ, "PYTHON": sys.executable, **mode}
    return subprocess.run(["bash", str(CPP / "build.sh"), *args], capture_output=True, text=True, env=env, timeout=1200)


@pytest.fixture(scope="session")
def asan_demo() -> Path:
    proc = build({"BERT_EXPORT_SANITIZE": "1"})
    assert proc.returncode == 0, f"sanitizer build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    binary = CPP / "build-asan" / "bert_export_demo"
    assert binary.is_file()
    return binary


def demo_run(demo: Path, bundle: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(demo), str(bundle), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **ASAN_ENV},
        errors="replace",
    )


def assert_refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    for mark in SANITIZER_MARKS:
        assert mark not in proc.stderr, f"sanitizer finding:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert message in lines[0], lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relist(bundle: Path, manifest: dict[str, Any] | None = None, raw: str | None = None) -> None:
    """Write ``manifest`` (default: the current one) with every listed regular file's size and
    sha256 recomputed, so that only the deliberate defect remains; ``raw`` writes text as is."""
    if raw is not None:
        (bundle / "manifest.json").write_text(raw, encoding="utf-8")
        return
    manifest = manifest if manifest is not None else read_manifest(bundle)
    files = manifest.get("files")
    if isinstance(files, dict):
        for rel, info in files.items():
            path = Path(rel) if rel.startswith("/") else bundle / rel
            if isinstance(info, dict) and path.is_file():
                info.update(bytes=path.stat().st_size, sha256=sha256(path))
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def edit_json(bundle: Path, rel: str, change: Callable[[Any], Any]) -> None:
    path = bundle / rel
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    relist(bundle)


def list_extra(bundle: Path, rel: str, size: int = 0, digest: str | None = None) -> None:
    manifest = read_manifest(bundle)
    manifest["files"][rel] = {"bytes": size, "sha256": digest or hashlib.sha256(b"").hexdigest()}
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def set_manifest(**changes: Any) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        manifest = read_manifest(bundle)
        for dotted, value in changes.items():
            target, keys = manifest, dotted.split("__")
            for k in keys[:-1]:
                target = target[int(k)] if isinstance(target, list) else target[k]
            last = keys[-1]
            if value is DELETE:
                del target[last]
            elif isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
        relist(bundle, manifest)

    return apply


DELETE = object()


def tiny_graph(outputs: dict[str, tuple[str, list[int] | None]], task_inputs: tuple[str, ...]) -> bytes:
    """A hand-built ONNX graph with the bundle's inputs whose outputs are deliberately wrong:
    name -> (kind, arg): "slice" [1, n] prefix of the ids as float (shorter than the sequence),
    "rank1" a [1] sum, "int64" the ids themselves, "empty" [1, 0], "slice3" [1, n, 8]."""
    from onnx import TensorProto, helper

    nodes: list[Any] = [helper.make_node("Cast", ["input_ids"], ["idsf"], to=TensorProto.FLOAT)]
    inits = []
    outs = []
    for name, (kind, arg) in outputs.items():
        if kind in ("slice", "empty", "slice3"):
            end = 0 if kind == "empty" else (arg or [1])[0]
            for tag, vals in (("s", [0]), ("e", [end]), ("a", [1])):
                inits.append(helper.make_tensor(f"{name}_{tag}", TensorProto.INT64, [1], vals))
            sliced = name if kind != "slice3" else f"{name}_2d"
            nodes.append(helper.make_node("Slice", ["idsf", f"{name}_s", f"{name}_e", f"{name}_a"], [sliced]))
            if kind == "slice3":
                inits.append(helper.make_tensor(f"{name}_ax", TensorProto.INT64, [1], [2]))
                inits.append(helper.make_tensor(f"{name}_rep", TensorProto.INT64, [3], [1, 1, 8]))
                nodes.append(helper.make_node("Unsqueeze", [sliced, f"{name}_ax"], [f"{name}_3d"]))
                nodes.append(helper.make_node("Tile", [f"{name}_3d", f"{name}_rep"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        elif kind == "rank1":
            nodes.append(helper.make_node("ReduceSum", ["idsf"], [name], keepdims=0))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        elif kind == "int64":
            nodes.append(helper.make_node("Identity", ["input_ids"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.INT64, None))
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, "sequence"]) for n in task_inputs]
    # unused inputs still have to exist: the demo feeds every input the manifest names
    for n in task_inputs[1:]:
        nodes.append(helper.make_node("Identity", [n], [f"{n}_unused"]))
    graph = helper.make_graph(nodes, "broken", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def replace_graph(outputs: dict[str, tuple[str, list[int] | None]]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        manifest = read_manifest(bundle)
        names = tuple(i["name"] for i in manifest["inputs"])
        (bundle / manifest["graph"]["file"]).write_bytes(tiny_graph(outputs, names))
        relist(bundle, manifest)

    return apply


# --- the corpus: (base bundle, mutation, demo arguments, expected words of the error line) -------


def _outside(bundle: Path, name: str, content: bytes) -> Path:
    path = bundle.parent / f"{bundle.name}-outside" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def dotdot(bundle: Path) -> None:
    secret = _outside(bundle, "secret.txt", b"secret\n")
    list_extra(bundle, f"../{secret.parent.name}/secret.txt", secret.stat().st_size, sha256(secret))


def absolute(bundle: Path) -> None:
    secret = _outside(bundle, "secret.txt", b"secret\n")
    list_extra(bundle, str(secret), secret.stat().st_size, sha256(secret))


def symlink_out(bundle: Path) -> None:
    target = _outside(bundle, "vocab.txt", (bundle / "vocab.txt").read_bytes())
    (bundle / "vocab.txt").unlink()
    (bundle / "vocab.txt").symlink_to(target)


def symlinked_dir(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    outside = _outside(bundle, "model.onnx", (bundle / "onnx/model.onnx").read_bytes()).parent
    shutil.rmtree(bundle / "onnx")
    (bundle / "onnx").symlink_to(outside, target_is_directory=True)
    relist(bundle, manifest)


def fifo(bundle: Path) -> None:
    os.mkfifo(bundle / "pipe")
    list_extra(bundle, "pipe", 10)


def dev_zero(bundle: Path) -> None:
    (bundle / "zero").symlink_to("/dev/zero")
    list_extra(bundle, "zero", 10)


def fifo_as_golden(bundle: Path) -> None:
    (bundle / "golden.json").unlink()
    os.mkfifo(bundle / "golden.json")


def directory_listed(bundle: Path) -> None:
    (bundle / "adir").mkdir()
    list_extra(bundle, "adir", 0)


def graph_unlisted(bundle: Path) -> None:
    shutil.copy(bundle / "onnx/model.onnx", bundle / "other.onnx")
    graph = {"file": "other.onnx", "files": ["other.onnx"]}
    set_manifest(graph=graph, graphs={read_manifest(bundle)["precision"]: graph})(bundle)


def graph_outside(bundle: Path) -> None:
    outside = _outside(bundle, "model.onnx", (bundle / "onnx/model.onnx").read_bytes())
    set_manifest(graph__file=f"../{outside.parent.name}/model.onnx")(bundle)


def missing_listed(bundle: Path) -> None:
    (bundle / "config.json").unlink()


def raw_manifest(text: str) -> Callable[[Path], None]:
    return lambda bundle: relist(bundle, raw=text)


def raw_edit(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Edit the manifest without recomputing sizes and digests."""
    manifest = read_manifest(bundle)
    change(manifest)
    relist(bundle, raw=json.dumps(manifest))


def nested_manifest(bundle: Path) -> None:
    text = (bundle / "manifest.json").read_text(encoding="utf-8")
    relist(bundle, raw=text[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}")


def nan_manifest(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    manifest["max_sequence_length"] = float("nan")
    relist(bundle, raw=json.dumps(manifest))  # Python writes NaN, which is not JSON


def golden(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda bundle: edit_json(bundle, "golden.json", change)


def tokenizer(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda bundle: edit_json(bundle, "tokenizer.json", change)


def _set(obj: Any, path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    if isinstance(obj, list):
        obj[int(keys[-1])] = value
    else:
        obj[keys[-1]] = value


def g(path: str, value: Any) -> Callable[[Path], None]:
    return golden(lambda d: _set(d, path, value))


def t(path: str, value: Any) -> Callable[[Path], None]:
    return tokenizer(lambda d: _set(d, path, value))


def bpe_tokenizer(change: Callable[[dict[str, Any]], Any] | None = None) -> Callable[[Path], None]:
    """The fuzz seed's byte-level BPE tokenizer.json in place of the WordPiece one, then ``change``."""

    def apply(bundle: Path) -> None:
        spec = json.loads(seed_tokenizer("kSeedBpe"))
        if change:
            change(spec)
        (bundle / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
        relist(bundle)

    return apply


def seed_tokenizer(name: str) -> str:
    header = (CPP / "fuzz" / "seed_tokenizers.h").read_text(encoding="utf-8")
    start = header.index(f'{name}[] = R"SEED(') + len(f'{name}[] = R"SEED(')
    return header[start : header.index(')SEED"', start)]


END_ONLY = [{"name": "end_logits", "dtype": "float32", "shape": ["batch", "sequence"]}]
SELF = ["--self-test"]
TOK = ["--tokenize", "Paris is the capital."]
QA = ["--question", "Where?", "--context", "Paris is the capital of France."]

CASES: dict[str, tuple[str, Callable[[Path], None] | None, list[str], str]] = {
    # paths
    "dotdot-entry": ("qa", dotdot, SELF, "is not a plain relative path inside the bundle"),
    "absolute-entry": ("qa", absolute, SELF, "is not a plain relative path inside the bundle"),
    "symlink-outside": ("qa", symlink_out, SELF, "vocab.txt is a symbolic link"),
    "symlinked-directory": ("qa", symlinked_dir, SELF, "its directory onnx is a symbolic link"),
    "fifo-listed": ("qa", fifo, SELF, "pipe is not a regular file"),
    "fifo-as-golden": ("qa", fifo_as_golden, SELF, "golden.json is not a regular file"),
    "dev-zero-symlink": ("qa", dev_zero, SELF, "zero is a symbolic link"),
    "directory-listed": ("qa", directory_listed, SELF, "adir is not a regular file"),
    "graph-not-listed": ("qa", graph_unlisted, SELF, 'graph.files names "other.onnx", which is not listed'),
    "graph-outside": ("qa", graph_outside, SELF, "is not a plain relative path inside the bundle"),
    "listed-file-missing": ("qa", missing_listed, TOK, "config.json is missing"),
    "tokenizer-file-unlisted": (
        "qa",
        lambda b: raw_edit(b, lambda m: m["files"].pop("vocab.txt")),
        TOK,
        'tokenizer.files names "vocab.txt", which is not listed',
    ),
    "golden-file-unlisted": (
        "qa",
        set_manifest(golden__file="gold.json"),
        SELF,
        'golden.file names "gold.json", which is not listed',
    ),
    "graph-file-not-in-graph-files": (
        "qa",
        set_manifest(graph__files=["config.json"]),
        SELF,
        "graph.file is not among graph.files",
    ),
    # manifest types and ranges
    "manifest-not-json": ("qa", raw_manifest('{"schema_version": 1,'), SELF, "manifest.json is not valid JSON"),
    "manifest-array": ("qa", raw_manifest("[]"), SELF, "manifest.json must be an object"),
    "manifest-nan": ("qa", nan_manifest, SELF, "manifest.json is not valid JSON"),
    "manifest-deep": ("qa", nested_manifest, SELF, "nests deeper than 64"),
    "schema-version-string": ("qa", set_manifest(schema_version="1"), SELF, 'schema_version "1"'),
    "task-int": ("qa", set_manifest(task=5), SELF, "task must be a string"),
    "task-null": ("qa", set_manifest(task=None), SELF, 'lacks "task"'),
    "task-unknown": ("qa", set_manifest(task="summarize"), SELF, 'task is "summarize"'),
    "precision-unknown": ("qa", set_manifest(precision="fp64"), SELF, 'precision is "fp64"'),
    "max-seq-string": ("qa", set_manifest(max_sequence_length="128"), SELF, "max_sequence_length must be an integer"),
    "max-seq-huge": ("qa", set_manifest(max_sequence_length=10**30), SELF, "max_sequence_length must be an integer"),
    "max-seq-float": ("qa", set_manifest(max_sequence_length=1e300), SELF, "max_sequence_length must be an integer"),
    "max-seq-negative": ("qa", set_manifest(max_sequence_length=-1), SELF, "out of range"),
    "files-list": ("qa", set_manifest(files=[]), SELF, "files must be an object"),
    "files-entry-null": (
        "qa",
        lambda b: raw_edit(b, lambda m: m["files"].__setitem__("config.json", None)),
        SELF,
        'files["config.json"] must be an object',
    ),
    "files-bytes-string": (
        "qa",
        lambda b: raw_edit(b, lambda m: m["files"]["config.json"].__setitem__("bytes", "12")),
        SELF,
        'files["config.json"].bytes must be an integer',
    ),
    "files-sha-upper": (
        "qa",
        lambda b: raw_edit(b, lambda m: m["files"]["config.json"].__setitem__("sha256", "A" * 64)),
        SELF,
        "64 lower-case hex",
    ),
    "inputs-object": ("qa", set_manifest(inputs={}), SELF, "inputs must be an array"),
    "input-name-unknown": ("qa", set_manifest(inputs__0__name="evil"), SELF, "inputs are not the bert inputs"),
    "input-name-not-a-name": (
        "qa",
        set_manifest(inputs__0__name="a b"),
        SELF,
        'inputs[].name "a b" is not a tensor name',
    ),
    "outputs-lack-start": (  # a valid manifest (the schema allows a subset of the task's outputs); the demo needs both
        "qa",
        set_manifest(outputs=END_ONLY, graphs__fp32__outputs=END_ONLY),
        SELF,
        "outputs lack start_logits",
    ),
    "graph-string": ("qa", set_manifest(graph="model.onnx"), SELF, "graph must be an object"),
    "graph-file-object": (
        "qa",
        set_manifest(graph__file={"fp32": "onnx/model.onnx"}),
        SELF,
        "graph.file must be a string",
    ),
    "schema-1-with-graphs": ("qa", set_manifest(schema_version=1), SELF, "graphs is a schema-2 field"),
    "special-mask-negative": ("mlm", set_manifest(special_tokens__mask=-1), SELF, "special_tokens.mask is -1"),
    "pooling-mode-int": ("qa", set_manifest(pooling__mode=3), SELF, "pooling.mode must be a string"),
    "id2label-int": (
        "qa",
        set_manifest(labels={"num_labels": 1, "id2label": {"0": 5}}),
        SELF,
        "id2label.0 must be a string",
    ),
    "tokenizer-kind-int": ("qa", set_manifest(tokenizer__kind=7), SELF, "tokenizer.kind must be a string"),
    # golden.json
    "golden-id-huge": ("qa", g("examples.0.input_ids.1", 10**9), SELF, "input_ids[] is 1000000000, out of range"),
    "golden-id-negative": ("qa", g("examples.0.input_ids.1", -1), SELF, "out of range"),
    "golden-id-vocab": (
        "qa",
        g("examples.0.input_ids.1", 30522),
        SELF,
        "input_ids[] is 30522, out of range [0, 30521]",
    ),
    "golden-type-id": ("qa", g("examples.0.token_type_ids.1", 7), SELF, "token_type_ids[] is 7"),
    "golden-mask-length": ("qa", golden(lambda d: d["examples"][0]["attention_mask"].pop()), SELF, "different lengths"),
    "golden-no-examples": ("qa", g("examples", []), SELF, "has no examples"),
    "golden-example-number": ("qa", g("examples.0", 3), SELF, "examples[0] must be an object"),
    "golden-output-string": ("qa", g("examples.0.outputs.start_logits", ["a"]), SELF, "must be a number"),
    "golden-output-unknown": ("qa", g("examples.0.outputs.bogus", [1.0]), SELF, "outputs.bogus is not an output"),
    "golden-no-tolerance": (
        "qa",
        golden(lambda d: d["tolerances"].pop("fp32")),
        SELF,
        "no tolerances for precision fp32",
    ),
    "golden-tolerance-string": ("qa", g("tolerances.fp32.max_abs", "big"), SELF, "max_abs must be a number"),
    "golden-text-int": ("qa", g("examples.0.question", 5), SELF, "question must be a string"),
    "golden-topk-position": (
        "mlm",
        golden(lambda d: d["examples"][0]["outputs"]["logits"]["positions"].__setitem__(0, 10**6)),
        SELF,
        "positions[] is 1000000, out of range",
    ),
    "golden-topk-id": (
        "mlm",
        golden(lambda d: d["examples"][0]["outputs"]["logits"]["ids"][0].__setitem__(1, 10**7)),
        SELF,
        "ids[][] is 10000000, out of range",
    ),
    "golden-topk-ragged": (
        "mlm",
        golden(lambda d: d["examples"][0]["outputs"]["logits"]["values"][0].pop()),
        SELF,
        "of one length",
    ),
    "golden-reduce-int": (
        "mlm",
        golden(lambda d: d["examples"][0]["outputs"]["logits"].__setitem__("reduce", 4)),
        SELF,
        "reduce must be a string",
    ),
    # tokenizer.json
    "vocab-id-huge": ("qa", t("model.vocab.hello", 10**12), TOK, "out of range"),
    "vocab-id-negative": ("qa", t("model.vocab.hello", -3), TOK, "out of range"),
    "vocab-not-object": ("qa", t("model.vocab", [1, 2]), TOK, "model.vocab must be an object"),
    "added-id-huge": ("qa", t("added_tokens.0.id", 10**10), TOK, "added_tokens[].id is 10000000000"),
    "added-content-int": ("qa", t("added_tokens.0.content", 5), TOK, "content must be a string"),
    "template-id-unknown": (
        "qa",
        t("post_processor.special_tokens.[CLS].ids", [999999]),
        TOK,
        "template adds the token id 999999",
    ),
    "template-id-huge": ("qa", t("post_processor.special_tokens.[CLS].ids", [10**15]), TOK, "out of range"),
    "template-undefined": (
        "qa",
        t("post_processor.single.0", {"SpecialToken": {"id": "[NOPE]", "type_id": 0}}),
        TOK,
        "without defining it",
    ),
    "tokenizer-not-json": ("qa", None, TOK, "tokenizer.json is not valid JSON"),
    "bpe-merge-unknown": (
        "qa",
        bpe_tokenizer(lambda s: s["model"]["merges"].insert(0, ["zzq", "qzz"])),
        TOK,
        "a token missing from the vocabulary",
    ),
    "bpe-merge-malformed": (
        "qa",
        bpe_tokenizer(lambda s: s["model"]["merges"].insert(0, "abc")),
        TOK,
        "not two tokens",
    ),
    "bpe-merge-triple": (
        "qa",
        bpe_tokenizer(lambda s: s["model"]["merges"].insert(0, ["a", "b", "c"])),
        TOK,
        "not a pair",
    ),
    # model outputs (hand-built graphs)
    "qa-output-truncated": (
        "qa",
        replace_graph({"start_logits": ("slice", [1]), "end_logits": ("slice", [1])}),
        SELF,
        "has shape [1, 1] where [1, ",
    ),
    "qa-output-truncated-run": (
        "qa",
        replace_graph({"start_logits": ("slice", [2]), "end_logits": ("slice", [2])}),
        QA,
        "has shape [1, 2] where [1, ",
    ),
    "qa-output-rank1": (
        "qa",
        replace_graph({"start_logits": ("rank1", None), "end_logits": ("rank1", None)}),
        QA,
        "has shape [] where",
    ),
    "qa-output-empty": (
        "qa",
        replace_graph({"start_logits": ("empty", None), "end_logits": ("empty", None)}),
        QA,
        "has shape [1, 0] where",
    ),
    "qa-output-int64": (
        "qa",
        replace_graph({"start_logits": ("int64", None), "end_logits": ("int64", None)}),
        QA,
        "where float32 or float16 was expected",
    ),
    "mlm-output-truncated": ("mlm", replace_graph({"logits": ("slice3", [2])}), SELF, "has shape [1, 2, 8] where [1, "),
    "mlm-output-truncated-run": (
        "mlm",
        replace_graph({"logits": ("slice3", [1])}),
        ["--text", "Paris is the [MASK] of France."],
        "has shape [1, 1, 8] where [1, ",
    ),
    # arguments
    "threads-huge": ("qa", None, SELF + ["--threads", "100000"], "--threads 100000 is not a number from 1 to"),
    "threads-zero": ("qa", None, SELF + ["--threads", "0"], "--threads 0 is not a number from 1 to"),
    "threads-negative": ("qa", None, SELF + ["--threads", "-1"], "--threads -1 is not a number"),
    "threads-overflow": ("qa", None, SELF + ["--threads", "99999999999999999999"], "is not a number from 1 to"),
}


@pytest.fixture(scope="module")
def bases(make_bundle: Callable[..., Path]) -> dict[str, Path]:
    return {"qa": make_bundle("bert", "qa"), "mlm": make_bundle("bert", "mlm")}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_bundle_is_refused_cleanly(
    asan_demo: Path, bases: dict[str, Path], tmp_path: Path, case: str
) -> None:
    base, mutate, args, message = CASES[case]
    bundle = tmp_path / "b"
    shutil.copytree(bases[base], bundle)
    if case == "tokenizer-not-json":
        (bundle / "tokenizer.json").write_text('{"model": ', encoding="utf-8")
        relist(bundle)
    elif mutate is not None:
        mutate(bundle)
    proc = demo_run(asan_demo, bundle, *args, timeout=60)
    assert_refused(proc, message)
    assert proc.stdout == "" or args == SELF, proc.stdout  # nothing half-printed


def test_valid_bundles_pass_under_sanitizers(asan_demo: Path, bases: dict[str, Path], tmp_path: Path) -> None:
    """The corpus' bases themselves: self-test, a request and the graph moved two directories deep
    (graph.file naming nested subdirectories) all succeed with no sanitizer report."""
    for bundle in bases.values():
        proc = demo_run(asan_demo, bundle, "--self-test", "--threads", "1")
        assert proc.returncode == 0 and "self-test: 3/3" in proc.stdout, proc.stdout + proc.stderr
        assert not any(mark in proc.stderr for mark in SANITIZER_MARKS), proc.stderr
    proc = demo_run(asan_demo, bases["qa"], *QA)
    assert proc.returncode == 0 and json.loads(proc.stdout)["answer"], proc.stderr
    moved = tmp_path / "moved"
    shutil.copytree(bases["qa"], moved)
    manifest = read_manifest(moved)
    (moved / "onnx" / "deep").mkdir()
    (moved / "onnx" / "model.onnx").rename(moved / "onnx" / "deep" / "model.onnx")
    files = manifest["files"]
    files["onnx/deep/model.onnx"] = files.pop("onnx/model.onnx")
    for graph in (manifest["graph"], manifest["graphs"][manifest["precision"]]):
        graph.update(file="onnx/deep/model.onnx", files=["onnx/deep/model.onnx"])
    relist(moved, manifest)
    proc = demo_run(asan_demo, moved, "--self-test")
    assert proc.returncode == 0 and "self-test: 3/3" in proc.stdout, proc.stdout + proc.stderr


def test_unlisted_files_change_nothing(asan_demo: Path, bases: dict[str, Path], tmp_path: Path) -> None:
    """A tokenizer.json dropped into the bundle but not listed is never read: with only vocab.txt
    listed the ids are vocab.txt's, whatever the unlisted file says."""
    bundle = tmp_path / "b"
    shutil.copytree(bases["qa"], bundle)
    want = demo_run(asan_demo, bundle, *TOK).stdout
    manifest = read_manifest(bundle)
    del manifest["files"]["tokenizer.json"]
    manifest["tokenizer"]["files"] = [f for f in manifest["tokenizer"]["files"] if f != "tokenizer.json"]
    spec = json.loads((bundle / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["vocab"] = {k: (v + 7) % 30522 for k, v in spec["model"]["vocab"].items()}
    (bundle / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (bundle / "added_tokens.json").write_text(json.dumps({"paris": 5}), encoding="utf-8")
    relist(bundle, manifest)
    proc = demo_run(asan_demo, bundle, *TOK)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want and want.startswith("101 ")


# --- byte-level BPE: O(n log n) merges, identical to Hugging Face ---------------------------------


@pytest.fixture(scope="module")
def bpe_bundle(bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("bpe") / "b"
    shutil.copytree(bases["qa"], bundle)
    bpe_tokenizer()(bundle)
    return bundle


def hf_ids(bundle: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(text).ids


def test_bpe_long_word_equals_hugging_face(asan_demo: Path, bpe_bundle: Path) -> None:
    """One 36 KB word (no pre-tokenizer split) and a 36 KB run of merge-heavy text: the same ids as
    Hugging Face. The quadratic loop took 18 s on the first in a release build; the timeout here
    (under ASan, several times slower than release) would catch a return to it."""
    for text in ("a" * 36000, "Paris" * 7200, "".join(random.Random(0).choice("aeiouprst") for _ in range(36000))):
        proc = demo_run(asan_demo, bpe_bundle, "--tokenize", text, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert [int(x) for x in proc.stdout.split()] == hf_ids(bpe_bundle, text)


def test_bpe_random_text_equals_hugging_face(asan_demo: Path, bpe_bundle: Path) -> None:
    rng = random.Random(1)
    alphabet = "aeiouprst PARIS'  é北\u0301\n0123"
    for _ in range(12):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        proc = demo_run(asan_demo, bpe_bundle, "--tokenize", text)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert [int(x) for x in proc.stdout.split()] == hf_ids(bpe_bundle, text), text


# --- build.sh from the user's own environment ------------------------------------------------------


def test_build_sh_with_only_python3_on_path(tmp_path: Path) -> None:
    """No ./.venv beside the sources and no PYTHON: build.sh finds `python3` on a clean PATH (this
    environment's bin/ first) and hands cmake its absolute path (a bare name used to become
    <repo>/python3).
    Builds the generated Unicode tables, the step that runs Python."""
    needs(shutil.which("cmake") is not None, "no cmake")
    repo = tmp_path / "repo"
    shutil.copytree(
        CPP, repo / "examples" / "cpp", ignore=shutil.ignore_patterns("build", "build-*", "third_party", "corpus")
    )
    bindir = Path(sys.executable).parent  # the environment's own bin/ (a venv: python3 is there)
    needs((bindir / "python3").exists(), f"no python3 beside {sys.executable}")
    tp = CPP / "third_party" / "include"
    env = {"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    if (tp / "onnxruntime").is_dir() and (tp / "nlohmann").is_dir():  # reuse headers (no network)
        env.update(ORT_INCLUDE_DIR=str(tp / "onnxruntime"), JSON_INCLUDE_DIR=str(tp))
    proc = subprocess.run(
        ["bash", str(repo / "examples" / "cpp" / "build.sh"), "--target", "unicode_tables"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cache = (repo / "examples" / "cpp" / "build" / "CMakeCache.txt").read_text(encoding="utf-8")
    assert f"PYTHON_EXECUTABLE:FILEPATH={bindir / 'python3'}" in cache
    assert (repo / "examples" / "cpp" / "build" / "generated" / "unicode_tables.h").stat().st_size > 10000


# --- the fuzz target -------------------------------------------------------------------------------


def test_fuzz_target_runs_clean(tmp_path: Path) -> None:
    """libFuzzer over the manifest reader, tokenizer.json parsing and text encoding, ASan + UBSan,
    for BERT_EXPORT_FUZZ_SECONDS (default 30) from the committed seed corpus: no crash, no
    sanitizer report, no uncaught exception, no input slower than 10 s, no leak."""
    needs(
        shutil.which("clang++") is not None,
        "no clang++ with libFuzzer (apt-get install clang; .ci/install.d/20-clang.sh)",
    )
    proc = build({"BERT_EXPORT_FUZZ": "1"})
    assert proc.returncode == 0, f"fuzz build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    corpus = tmp_path / "corpus"
    shutil.copytree(CPP / "fuzz" / "corpus", corpus)
    seconds = int(os.environ.get("BERT_EXPORT_FUZZ_SECONDS", "30"))
    run = subprocess.run(  # own_peak_rss: libFuzzer's RSS limit would otherwise count pytest's own size
        own_peak_rss(
            [
                str(CPP / "build-fuzz" / "bx_fuzz"),
                f"-max_total_time={seconds}",
                "-seed=1",
                "-max_len=16384",
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
                f"-artifact_prefix={tmp_path}/",
                str(corpus),
            ]
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        errors="replace",
        env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
    )
    assert run.returncode == 0, run.stderr[-5000:]
    assert "stat::number_of_executed_units" in run.stderr
    for mark in SANITIZER_MARKS + ("fuzz finding", "deadly signal"):
        assert mark not in run.stderr, run.stderr[-5000:]


# --- external data of every tensor kind, and input text that is not UTF-8 (issue 24) ----------------------


def _external_tensor(name: str, location: str, dtype: int, nbytes: int) -> Any:
    import onnx

    tensor = onnx.TensorProto(name=name, data_type=dtype, dims=[nbytes // 4 if dtype == 1 else nbytes // 8])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _plant_external(bundle: Path, placement: str, location: str) -> None:
    """Make one tensor of the graph read ``location`` (beside the graph, unlisted) and re-list the files."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = bundle / "onnx" / "model.onnx"
    model = onnx.load(str(path))
    dense = _external_tensor("bx_stolen", location, onnx.TensorProto.FLOAT, 16)
    sparse = helper.make_sparse_tensor(dense, numpy_helper.from_array(np.arange(4, dtype=np.int64), "bx_idx"), [4])
    out = helper.make_tensor_value_info("bx_out", onnx.TensorProto.FLOAT, [4])
    branch = helper.make_graph([helper.make_node("Identity", ["bx_stolen"], ["bx_out"])], "b", [], [out])
    if placement == "dense-initializer":
        model.graph.initializer.append(dense)
    elif placement == "sparse-initializer":
        model.graph.sparse_initializer.append(sparse)
    elif placement == "sparse-in-subgraph":
        branch.sparse_initializer.append(sparse)
        model.graph.node.append(helper.make_node("If", ["bx_c"], ["bx_o"], then_branch=branch, else_branch=branch))
    elif placement == "sparse-attribute":
        model.graph.node.append(helper.make_node("Constant", [], ["bx_k"], sparse_value=sparse))
    onnx.save(model, str(path))
    (path.parent / "stolen.bin").write_bytes(b"\x00" * 64)
    relist(bundle)


@pytest.mark.parametrize(
    "placement, location",
    [
        ("dense-initializer", "stolen.bin"),
        ("dense-initializer", "../manifest.json"),
        ("sparse-initializer", "stolen.bin"),
        ("sparse-in-subgraph", "stolen.bin"),
        ("sparse-attribute", "../manifest.json"),
    ],
)
def test_demo_refuses_unlisted_external_data(
    asan_demo: Path, bases: dict[str, Path], tmp_path: Path, placement: str, location: str
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(bases["qa"], bundle)
    _plant_external(bundle, placement, location)
    for args in (SELF, QA):
        proc = demo_run(asan_demo, bundle, *args, timeout=60)
        assert_refused(proc, f'onnx/model.onnx in bundle {bundle} refers to external data "{location}"')


def test_demo_runs_listed_external_data(asan_demo: Path, bases: dict[str, Path], tmp_path: Path) -> None:
    """Refusing only what is unlisted: a graph whose weights are listed external data self-tests."""
    import onnx

    bundle = tmp_path / "b"
    shutil.copytree(bases["qa"], bundle)
    model = onnx.load(str(bundle / "onnx/model.onnx"))
    onnx.save(model, str(bundle / "onnx/model.onnx"), save_as_external_data=True, location="model.onnx_data")
    manifest = read_manifest(bundle)
    manifest["graph"]["files"] = ["onnx/model.onnx", "onnx/model.onnx_data"]
    if "graphs" in manifest:  # schema 2: the default graph's entry is the same record
        manifest["graphs"][manifest["precision"]]["files"] = list(manifest["graph"]["files"])
    manifest["files"]["onnx/model.onnx_data"] = {"bytes": 0, "sha256": "0" * 64}
    relist(bundle, manifest)
    proc = demo_run(asan_demo, bundle, *SELF)
    assert proc.returncode == 0 and "self-test: 3/3" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args, what",
    [
        (["--text", b"caf\xe9 au lait"], "--text #1"),
        (["--text", "fine", "--text", b"\xc0\x80 overlong NUL"], "--text #2"),
        (["--tokenize", b"\xed\xa0\x80 a surrogate"], "--tokenize"),
        (["--question", "Where?", "--context", b"Paris \xff"], "--context"),
    ],
)
def test_demo_refuses_input_text_that_is_not_utf8(
    asan_demo: Path, bases: dict[str, Path], args: list[Any], what: str
) -> None:
    """Python refuses such text; the demo used to drop the bytes and answer for another text."""
    base = bases["qa"] if "--context" in args else bases["mlm"]
    argv = [os.fsdecode(a) if isinstance(a, bytes) else a for a in args]
    proc = demo_run(asan_demo, base, *argv, timeout=60)
    assert_refused(proc, f"{what} is not valid UTF-8 (bad byte at offset")
