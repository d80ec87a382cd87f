"""``bert-export triton``: a Triton model repository from a bundle.

Four models, each its own directory, written all or nothing (``bundle.publish.staged_directories``:
the four are built in staging directories beside their targets and swapped in together; a refusal
or a failure at any point leaves the repository as it was). ``--force`` replaces only models this
command wrote (``is_our_model``), never the bundle it reads:

- ``NAME``: the graph on the ``onnxruntime`` backend (``1/model.onnx`` + external data) or the
  ``tensorrt`` backend (``1/model.plan``, the bundle's engine from ``bert-export engine``), with
  dynamic batching (preferred sizes), instance groups and the optimisation settings that suit the
  bundle's target and precision;
- ``NAME_tokenize`` / ``NAME_post``: Python-backend models (pymodels/) with the bundle's own
  tokenizer files and our ``models/postprocess.py`` (vendored: see pymodels/post_model.py);
- ``NAME_text``: an ensemble chaining them: ``TEXT`` (and, seq-cls and rerank, an optional ``TEXT_PAIR``: a
  pair truncated longest_first; or qa's ``QUESTION`` + ``CONTEXT``) in, ``JSON``
  (``run --json``'s line) and ``NOTE`` (truncation) out.

Every ``config.pbtxt`` is built as Triton's ``ModelConfig`` protobuf (``tritonclient.grpc.
model_config_pb2``) and printed with ``google.protobuf.text_format``, so a misspelt field cannot be
written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from bert_export.bundle.manifest import untrained_warning
from bert_export.models import BertExportError, get_task

TEXT_CHARS = 20_000
DTYPES = {
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bool": "TYPE_BOOL",
}
AUX = ("OFFSETS", "SEQUENCE_IDS", "WORD_IDS", "MASK", "IDS")  # tokenizer -> post, beside the graph's inputs


@dataclass(frozen=True)
class RepoOptions:
    name: str | None = None
    backend: str = "onnxruntime"
    max_batch: int = 32
    instances: int = 1
    kind: str | None = None  # cpu | gpu; default gpu for tensorrt, else cpu
    max_queue_delay_ms: float = 2.0
    max_text_chars: int = TEXT_CHARS


def preferred_sizes(max_batch: int) -> list[int]:
    """Powers of two from 4 up to max_batch, and max_batch itself: sizes the batcher aims for."""
    sizes = [s for s in (4, 8, 16, 32, 64, 128, 256, 512) if s < max_batch]
    return sizes + [max_batch]


def _pb() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def dump(config: Any, header: str = "") -> str:
    """config.pbtxt text for a ModelConfig (a ``#`` comment header is valid protobuf text)."""
    from google.protobuf import text_format

    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + text_format.MessageToString(config)


def parse(text: str) -> Any:
    """config.pbtxt back into Triton's ModelConfig (raises on any unknown field or bad value)."""
    from google.protobuf import text_format

    return text_format.Parse(text, _pb().ModelConfig())


def _dims(axes: tuple[Any, ...]) -> list[int]:
    return [a if isinstance(a, int) else -1 for a in axes[1:]]  # axis 0 is the batch (max_batch_size > 0)


def _tensor(kind: Any, name: str, dtype: str, dims: list[int]) -> Any:
    return kind(name=name, data_type=getattr(_pb().DataType, dtype), dims=dims)


def graph_config(b: Any, name: str, opts: RepoOptions, kind: str) -> tuple[Any, str]:
    pb = _pb()
    cfg = pb.ModelConfig(name=name, max_batch_size=opts.max_batch)
    notes = [
        f"bert-export: {b.manifest['family']} {b.manifest['task']}, {b.precision}, target "
        f"{(b.manifest.get('optimization') or {}).get('target', b.manifest.get('runtime', 'ort'))}, max sequence {b.max_seq}"
    ]
    for spec in b.inputs:
        cfg.input.append(_tensor(pb.ModelInput, spec.name, DTYPES[spec.dtype], _dims(spec.axes)))
    for spec in b.outputs:
        cfg.output.append(_tensor(pb.ModelOutput, spec.name, DTYPES[spec.dtype], _dims(spec.axes)))
    cfg.dynamic_batching.preferred_batch_size.extend(preferred_sizes(opts.max_batch))
    cfg.dynamic_batching.max_queue_delay_microseconds = int(opts.max_queue_delay_ms * 1000)
    group = cfg.instance_group.add()
    group.count = opts.instances
    group.kind = pb.ModelInstanceGroup.KIND_GPU if kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    if opts.backend == "onnxruntime":
        cfg.backend = "onnxruntime"
        cfg.default_model_filename = "model.onnx"
        target = (b.manifest.get("optimization") or {}).get("target", b.manifest.get("runtime", "ort"))
        # Triton's ORT backend: graph level 0 (unset) = ORT_ENABLE_ALL, 1 = EXTENDED, -1 = BASIC.
        if target == "ort" and kind == "cpu":
            notes.append(
                "ORT_ENABLE_ALL: the graph already holds ORT's fused ops (com.microsoft); ALL keeps them and fuses the rest"
            )
        if kind == "gpu":
            acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add()
            if target == "trt" or b.precision in ("fp16",):
                acc.name = "tensorrt"
                acc.parameters["precision_mode"] = "FP16" if b.precision == "fp16" else "FP32"
                acc.parameters["max_workspace_size_bytes"] = str(4 << 30)
                notes.append("TensorRT execution provider inside ORT (standard-ONNX trt-target or fp16 bundle)")
            else:
                acc.name = "cuda"  # not a Triton accelerator name: removed below, CUDA EP is the GPU default
                cfg.optimization.execution_accelerators.ClearField("gpu_execution_accelerator")
                notes.append(
                    "CUDA execution provider (ORT's default on KIND_GPU): this graph has ORT's CPU/CUDA fused ops"
                )
        if kind == "cpu":
            cfg.parameters["enable_mem_arena"].string_value = "1"
    else:
        cfg.backend = "tensorrt"
        cfg.default_model_filename = "model.plan"
        from bert_export.runtimes.trt_build import Profile

        profile = Profile.from_json(b.manifest["tensorrt"]["profile"])
        if profile.max[1] < b.max_seq:
            raise BertExportError(
                f"the engine's profile {profile.describe()} does not reach this bundle's {b.max_seq} tokens; "
                f"rebuild it: bert-export engine {b.path} --force --trt-profile 1x1,8x128,{opts.max_batch}x{b.max_seq}"
            )
        cfg.max_batch_size = min(opts.max_batch, profile.max[0])
        del cfg.dynamic_batching.preferred_batch_size[:]
        cfg.dynamic_batching.preferred_batch_size.extend(preferred_sizes(cfg.max_batch_size))
        notes.append(
            f"engine profile {profile.describe()} (TensorRT {b.manifest['tensorrt'].get('tensorrt_version')}, "
            f"{b.manifest['tensorrt'].get('gpu')}): max_batch_size is capped by it; rebuild the engine on the serving GPU"
        )
    return cfg, "\n".join(notes)


def tokenize_config(
    b: Any, name: str, opts: RepoOptions, text_inputs: list[str], optional: tuple[str, ...] = ()
) -> Any:
    """``optional``: inputs a request may leave out (``TEXT_PAIR``: a seq-cls request is a text or a pair)."""
    pb = _pb()
    cfg = pb.ModelConfig(name=name, backend="python", max_batch_size=opts.max_batch)
    for n in text_inputs:
        cfg.input.append(_tensor(pb.ModelInput, n, "TYPE_STRING", [1]))
        cfg.input[-1].optional = n in optional
    for spec in b.inputs:
        cfg.output.append(_tensor(pb.ModelOutput, spec.name, "TYPE_INT64", [-1]))
    cfg.output.append(_tensor(pb.ModelOutput, "OFFSETS", "TYPE_INT64", [-1, 2]))
    for n in ("SEQUENCE_IDS", "WORD_IDS", "MASK", "IDS"):
        cfg.output.append(_tensor(pb.ModelOutput, n, "TYPE_INT64", [-1]))
    cfg.output.append(_tensor(pb.ModelOutput, "NOTE", "TYPE_STRING", [1]))
    cfg.dynamic_batching.max_queue_delay_microseconds = int(opts.max_queue_delay_ms * 1000)
    cfg.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    return cfg


def post_config(b: Any, name: str, opts: RepoOptions, text_input: str | None) -> Any:
    pb = _pb()
    cfg = pb.ModelConfig(name=name, backend="python", max_batch_size=opts.max_batch)
    for spec in b.outputs:
        cfg.input.append(_tensor(pb.ModelInput, spec.name, DTYPES[spec.dtype], _dims(spec.axes)))
    cfg.input.append(_tensor(pb.ModelInput, "OFFSETS", "TYPE_INT64", [-1, 2]))
    for n in ("SEQUENCE_IDS", "WORD_IDS", "MASK", "IDS"):
        cfg.input.append(_tensor(pb.ModelInput, n, "TYPE_INT64", [-1]))
    if text_input:
        cfg.input.append(_tensor(pb.ModelInput, text_input, "TYPE_STRING", [1]))
    cfg.output.append(_tensor(pb.ModelOutput, "JSON", "TYPE_STRING", [1]))
    cfg.dynamic_batching.max_queue_delay_microseconds = int(opts.max_queue_delay_ms * 1000)
    cfg.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    return cfg


def ensemble_config(
    b: Any,
    name: str,
    opts: RepoOptions,
    text_inputs: list[str],
    post_text: str | None,
    optional: tuple[str, ...] = (),
) -> Any:
    pb = _pb()
    cfg = pb.ModelConfig(name=f"{name}_text", platform="ensemble", max_batch_size=opts.max_batch)
    for n in text_inputs:
        cfg.input.append(_tensor(pb.ModelInput, n, "TYPE_STRING", [1]))
        cfg.input[-1].optional = n in optional
    cfg.output.append(_tensor(pb.ModelOutput, "JSON", "TYPE_STRING", [1]))
    cfg.output.append(_tensor(pb.ModelOutput, "NOTE", "TYPE_STRING", [1]))
    steps = cfg.ensemble_scheduling.step
    tok = steps.add(model_name=f"{name}_tokenize", model_version=-1)
    for n in text_inputs:
        tok.input_map[n] = n
    for spec in b.inputs:
        tok.output_map[spec.name] = f"tok_{spec.name}"
    for n in AUX:
        tok.output_map[n] = f"tok_{n}"
    tok.output_map["NOTE"] = "NOTE"
    graph = steps.add(model_name=name, model_version=-1)
    for spec in b.inputs:
        graph.input_map[spec.name] = f"tok_{spec.name}"
    for spec in b.outputs:
        graph.output_map[spec.name] = f"graph_{spec.name}"
    post = steps.add(model_name=f"{name}_post", model_version=-1)
    for spec in b.outputs:
        post.input_map[spec.name] = f"graph_{spec.name}"
    for n in AUX:
        post.input_map[n] = f"tok_{n}"
    if post_text:
        post.input_map[post_text] = post_text
    post.output_map["JSON"] = "JSON"
    return cfg


MAX_NAME = 128  # Triton keeps no limit, but NAME_tokenize and our staging names must fit a file name


def _check(b: Any, opts: RepoOptions, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise BertExportError(
            f"--name {name!r} is not a valid Triton model name; use letters, digits, '_', '-' and '.'"
        )
    if len(name) > MAX_NAME:
        raise BertExportError(f"--name is {len(name)} characters; use at most {MAX_NAME}")
    if not 1 <= opts.max_batch <= 1024:
        raise BertExportError(f"--max-batch must be 1..1024, got {opts.max_batch}")
    if not 1 <= opts.instances <= 64:
        raise BertExportError(f"--instances must be 1..64, got {opts.instances}")
    if opts.backend not in ("onnxruntime", "tensorrt"):
        raise BertExportError(f"unknown --backend {opts.backend!r}; choose onnxruntime or tensorrt")
    kind = opts.kind or ("gpu" if opts.backend == "tensorrt" else "cpu")
    if opts.backend == "tensorrt":
        if kind != "gpu":
            raise BertExportError(
                "the tensorrt backend runs on GPUs only; drop --kind cpu or use --backend onnxruntime"
            )
        _check_engine_record(b)
    if not b.has_tokenizer:
        raise BertExportError(
            f"{b.path} has no tokenizer files, so its repository cannot take text; export it from a model "
            "directory that has tokenizer.json or vocab.txt"
        )
    return kind


def _check_engine_record(b: Any) -> None:
    """The engine record must name the file, its sha256 and its profile (``bert-export engine`` writes
    all three); anything less is refused in one line before anything is written."""
    from bert_export.runtimes.trt_build import Profile

    record = b.manifest.get("tensorrt")
    if not isinstance(record, dict) or not record.get("file"):
        raise BertExportError(
            f"{b.path} has no TensorRT engine; build one on the serving GPU with: bert-export engine {b.path}"
        )
    sha = record.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha) or "profile" not in record:
        missing = "sha256" if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha) else "profile"
        raise BertExportError(
            f"the TensorRT engine record in {b.path}/manifest.json has no valid {missing}; "
            f"rebuild it: bert-export engine {b.path} --force"
        )
    Profile.from_json(record["profile"])  # one line when malformed


def is_our_model(directory: Path) -> bool:
    """A Triton model directory this command wrote: its ``config.pbtxt`` (a small regular file)
    starts with our ``# bert-export:`` header and parses as a ModelConfig named after the directory.
    Only these does ``--force`` replace."""
    config = directory / "config.pbtxt"
    try:
        if config.is_symlink() or not config.is_file() or config.stat().st_size > 1 << 20:
            return False
        text = config.read_text(encoding="utf-8")
        return text.startswith("# bert-export:") and parse(text).name == directory.name
    except (OSError, ValueError, Exception):  # text_format.ParseError is an Exception
        return False


def check_repo(repo: Path, bundle: Path) -> Path:
    """``--repo``: a directory (or a path that can become one), never inside the bundle it reads."""
    from bert_export.bundle.publish import refuse_inside, writable_ancestor

    repo = Path(repo)
    if repo.is_symlink():
        raise BertExportError(f"--repo {repo} is a symbolic link; pass the directory it points to")
    if repo.exists() and not repo.is_dir():
        raise BertExportError(f"--repo {repo} exists and is not a directory; choose another --repo")
    refuse_inside(repo.absolute(), "--repo", [bundle])
    if repo.is_dir():
        if not os.access(repo, os.W_OK | os.X_OK):
            raise BertExportError(f"--repo {repo} is not writable (read-only?); choose another --repo")
    else:
        writable_ancestor(repo, "--repo")
    return repo


def write_repository(
    bundle: str | Path, repo: str | Path, opts: RepoOptions = RepoOptions(), force: bool = False
) -> list[str]:
    """Write NAME, NAME_tokenize, NAME_post and NAME_text into ``repo``; return the model names written.

    All or nothing: everything is checked first, the four models are built in staging directories
    and swapped in together (``bundle.publish.staged_directories``)."""
    from bert_export.bundle.publish import staged_directories
    from bert_export.bundle.reader import load_bundle

    b = load_bundle(bundle)
    name = opts.name or re.sub(r"[^A-Za-z0-9_.-]", "_", Path(bundle).resolve().name).strip(".") or "model"
    kind = _check(b, opts, name)
    repo = check_repo(Path(repo), Path(bundle))
    names = [name, f"{name}_tokenize", f"{name}_post", f"{name}_text"]
    taken = [n for n in names if (repo / n).exists() or (repo / n).is_symlink()]
    if taken and not force:
        raise BertExportError(
            f"{repo} already has {', '.join(taken)}; pass --force to replace them, or choose another --name"
        )
    task = b.manifest["task"]
    text_inputs = list(get_task(task).triton_inputs)
    optional = get_task(task).triton_optional_inputs
    post_text = get_task(task).triton_offsets_input
    graph, graph_notes = graph_config(b, name, opts, kind)
    configs = {
        name: dump(graph, graph_notes),
        f"{name}_tokenize": dump(
            tokenize_config(b, f"{name}_tokenize", opts, text_inputs, optional), "bert-export: the bundle's tokenizer"
        ),
        f"{name}_post": dump(
            post_config(b, f"{name}_post", opts, post_text), "bert-export: models/postprocess.py (vendored)"
        ),
        f"{name}_text": dump(
            ensemble_config(b, name, opts, text_inputs, post_text, optional),
            "bert-export: text in, run --json's JSON out",
        ),
    }
    for text in configs.values():
        parse(text)  # never write a config Triton's own schema rejects
    model_json = {
        "task": task,
        "max_seq": b.max_seq,
        "graph_inputs": [s.name for s in b.inputs],
        "pooling": b.manifest.get("pooling") or {},
        "id2label": (b.manifest.get("labels") or {}).get("id2label") or {},
        "top_k": 5,
        "pairs_only": get_task(task).ranks_passages,  # a reranker's request is a query and a passage, never one text
        "max_text_chars": opts.max_text_chars,
        "untrained_warning": untrained_warning(b.manifest),  # the post model logs it on every batch
    }
    with staged_directories(
        [repo / n for n in names],
        force,
        inputs=[bundle],
        option="--repo",
        noun="Triton model written by bert-export",
        nouns="models this command wrote",
        ours=is_our_model,
    ) as staged:
        for model, tmp in zip(names, staged):
            (tmp / "config.pbtxt").write_text(configs[model], encoding="utf-8")
            version = tmp / "1"
            version.mkdir()
            if model == name:
                _graph_files(b, opts, version)
            elif model != f"{name}_text":
                _python_files(b, model.endswith("_tokenize"), model_json, version)
            else:
                (version / ".keep").write_text("")  # an ensemble has no files, but Triton wants its version directory
    return names


def _graph_files(b: Any, opts: RepoOptions, version: Path) -> None:
    if opts.backend == "tensorrt":
        from bert_export.runtimes.trt_build import read_engine

        (version / "model.plan").write_bytes(
            read_engine(b, b.manifest["tensorrt"])
        )  # sha256-checked against the record
        return
    graph = b.graph  # the selected precision's record (schema 1: ``graph``; 2: ``graphs[precision]``)
    main = graph.get("file", "model.onnx")
    for rel in graph.get("files") or [main]:
        # The graph becomes 1/model.onnx; its external data keeps its path relative to the graph
        # (the name the graph references): onnx/model.onnx_data -> 1/model.onnx_data.
        target = version / ("model.onnx" if rel == main else _beside_graph(rel, main))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.file(rel), target)


def _beside_graph(rel: str, main: str) -> str:
    try:
        return PurePosixPath(rel).relative_to(PurePosixPath(main).parent).as_posix()
    except ValueError:
        return rel


def _python_files(b: Any, tokenize: bool, model_json: dict[str, Any], version: Path) -> None:
    source = (
        resources.files("bert_export.serving") / "pymodels" / ("tokenize_model.py" if tokenize else "post_model.py")
    )
    (version / "model.py").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    (version / "bert_export_model.json").write_text(json.dumps(model_json, indent=2) + "\n", encoding="utf-8")
    if not tokenize:
        (version / "postprocess.py").write_text(
            (resources.files("bert_export.models") / "postprocess.py").read_text(encoding="utf-8"), encoding="utf-8"
        )
    if tokenize or get_task(model_json["task"]).post_needs_tokenizer:
        tok = version / "tokenizer"
        tok.mkdir()
        for rel in list(b.manifest["tokenizer"]["files"]) + (["config.json"] if b.has_file("config.json") else []):
            (tok / Path(rel).name).write_bytes(b.read_bytes(rel))
