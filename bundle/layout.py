"""Where each file of a bundle goes, so that the bundle is also a Hugging Face model directory.

A bundle is loaded as it is by runtimes we do not control: transformers.js (``pipeline(task,
dir)``), Optimum's ``ORTModelFor*``, sentence-transformers' ONNX backend, onnxruntime-web. Each
looks for its files by name, so the layout follows theirs (docs/bundle.md has the table):

- graphs in ``onnx/``, named by precision as transformers.js names dtypes
  (``DEFAULT_DTYPE_SUFFIX_MAPPING``: fp32 ``model.onnx``, fp16 ``model_fp16.onnx``, q8
  ``model_quantized.onnx``), external data beside each graph as ``<graph>.onnx_data``
  (``getExternalDataChunkNames``: one chunk, no ``_1`` suffix);
- ``config.json`` with the task head's class in ``architectures``, the labels of a classifier,
  and ``transformers.js_config`` (its default ``dtype``, ``use_external_data_format``);
- ``tokenizer.json`` truncating at the bundle's maximum with no fixed padding (anyone using the
  ``tokenizers`` library directly gets the ids the bundle was validated for), and
  ``tokenizer_config.json``'s ``model_max_length`` equal to it;
- for ``embed``, sentence-transformers' module files generated from ``manifest["pooling"]``,
  so ``SentenceTransformer(dir, backend="onnx")`` pools and normalises as ``run`` does.

Everything here writes into the staged bundle directory; the manifest lists what was written.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

from bert_export.models import BertExportError, Family, Task
from bert_export.models.precisions import BUNDLE_PRECISIONS, PRECISIONS_REGISTRY

ONNX_DIR = "onnx"
PRECISIONS = BUNDLE_PRECISIONS
# transformers.js' dtype names and its file-name suffix per dtype (src/utils/dtypes.js).
TJS_DTYPE = {
    n: p.tjs_dtype for n, p in PRECISIONS_REGISTRY.items()
}  # bf16: an fp32 graph run with OpenVINO's bf16 hint
_SUFFIX = {n: p.suffix for n, p in PRECISIONS_REGISTRY.items()}
EXTERNAL_DATA_SUFFIX = (
    "_data"  # model.onnx -> model.onnx_data (transformers.js, Optimum, ORT all follow the graph's own reference)
)

ST_POOLING_DIR = "1_Pooling"
ST_NORMALIZE_DIR = "2_Normalize"
_ST_MODES = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "mean_sqrt_len": "mean_sqrt_len_tokens"}
_ST_ALL_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")


def graph_file(precision: str) -> str:
    """``onnx/model.onnx``, ``onnx/model_fp16.onnx`` or ``onnx/model_quantized.onnx``."""
    return f"{ONNX_DIR}/model{_SUFFIX[precision]}.onnx"


def data_file(graph_rel: str) -> str:
    """The external-data file transformers.js expects beside ``graph_rel``."""
    return graph_rel + EXTERNAL_DATA_SUFFIX


def parse_precisions(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"fp32,int8"`` -> ("fp32", "int8"): known names, no repeats, at least one; the first is the default."""
    items = [p.strip().lower() for p in (value.split(",") if isinstance(value, str) else value)]
    items = [p for p in items if p]
    unknown = [p for p in items if p not in PRECISIONS]
    if unknown or not items:
        raise BertExportError(
            f"--precisions {','.join(items) or repr(value)}: choose from {', '.join(PRECISIONS)}, "
            "comma-separated, e.g. --precisions fp32,fp16,int8 (the first is the default)"
        )
    if len(set(items)) != len(items):
        raise BertExportError(f"--precisions {','.join(items)} names a precision twice; list each once")
    return tuple(items)


def architecture(family: Family, task: Task) -> str:
    """The transformers class of the exported head (``BertForQuestionAnswering``, ``BertModel`` for embed)."""
    return f"{family.class_prefix}{task.head}"


def write_config(
    directory: Path, config: Any, family: Family, task: Task, default: str, graphs: dict[str, list[str]]
) -> None:
    """``config.json``: the source configuration with the head's architecture, labels, transformers.js' settings.

    ``graphs`` maps each precision to its files (graph first). transformers.js picks a file by
    ``dtype``: ``transformers.js_config.dtype`` makes the bundle's default precision its default
    too; where the bundle also has an int8 graph, ``device_config.wasm.dtype`` keeps what
    transformers.js does for browsers (WASM defaults to the quantized graph).
    """
    cfg = copy.deepcopy(config)
    cfg.architectures = [architecture(family, task)]
    if task.has_labels:
        id2label = {int(k): str(v) for k, v in cfg.id2label.items()}
        cfg.id2label = id2label
        cfg.label2id = {v: k for k, v in id2label.items()}
    tjs: dict[str, Any] = {"dtype": TJS_DTYPE[default]}
    if "int8" in graphs and default != "int8":
        tjs["device_config"] = {"wasm": {"dtype": TJS_DTYPE["int8"]}}
    external = {Path(files[0]).name: 1 for files in graphs.values() if len(files) > 1}
    if external:
        tjs["use_external_data_format"] = external
    setattr(cfg, "transformers.js_config", tjs)
    for key, value in task.config_extras(int(getattr(cfg, "num_labels", 0) or 0)).items():
        setattr(cfg, key, value)
    cfg.save_pretrained(str(directory))


def write_tokenizer(directory: Path, tok_files: list[str], max_seq: int) -> None:
    """Truncate at ``max_seq`` and pad nothing in ``tokenizer.json``; ``model_max_length`` = ``max_seq``.

    The source's settings are training-time choices (the packaged MiniLM pads every input to 128
    and truncates there): the ``tokenizers`` library applies them when it loads the file, so a
    consumer tokenizing with it would feed the graph other ids than ``run`` does. transformers
    and transformers.js override them per call; the rewritten file makes every reader agree.
    """
    if "tokenizer.json" in tok_files:
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise BertExportError(
                f"the source's tokenizer.json does not load with the tokenizers library ({exc}); fix or remove it"
            ) from None
        tok = _pipeline_python_runs(directory) or tok
        tok.no_padding()
        tok.enable_truncation(max_length=max_seq)
        tok.save(str(path))
    if "tokenizer_config.json" in tok_files:
        path = directory / "tokenizer_config.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data["model_max_length"] = max_seq
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pipeline_python_runs(directory: Path) -> Any | None:
    """The tokenizer transformers actually runs for this directory, when it differs from the file.

    Some transformers 5 tokenizer classes rebuild their pipeline in code instead of taking the file's:
    XLMRobertaTokenizer keeps only the SentencePiece charsmap as normaliser and splits on whitespace
    before Metaspace, so its offsets (and ids, where the file's other normalisers would act) differ
    from what the ``tokenizers`` library, the C++ demo and transformers.js read in tokenizer.json. The
    parity gate and golden.json run transformers' pipeline, so the bundle's tokenizer.json must
    describe that one for every consumer to agree. None when transformers cannot load it (the file
    is then kept as it is).
    """
    try:
        import transformers

        loaded = transformers.AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        backend = getattr(loaded, "backend_tokenizer", None)
    except Exception:
        return None
    return backend


def write_sentence_transformers(
    directory: Path, pooling: dict[str, Any], hidden: int, max_seq: int, source_dir: Path | None
) -> list[str]:
    """sentence-transformers' module files for an ``embed`` bundle; returns the paths written.

    ``modules.json`` chains Transformer (the bundle root: config, tokenizer, ``onnx/model.onnx``
    for ``backend="onnx"``), Pooling (``1_Pooling/config.json``, our ``pooling.mode``) and, when
    ``pooling.normalize``, Normalize. Normalize has no files, so ``2_Normalize/`` is not created
    (sentence-transformers loads it without reading the directory, as on the Hub). Without these
    files sentence-transformers would fall back to mean pooling and never normalise.

    What the source declares wins where the bundle can honour it: its ``max_seq_length`` (the
    packaged MiniLM embeds at most 256 tokens although its positions and the graph go to 512;
    sentence-transformers users must get the source's embeddings for long texts), capped at the
    bundle's ``max_seq``; its ``do_lower_case``; its Pooling config verbatim when it pools as
    ``pooling.mode`` says (``exporter/loading._pooling`` read the mode from the same files).
    """
    source_sbert, source_pool = _source_st_config(source_dir)
    mode = str(pooling.get("mode", "cls"))
    normalize = bool(pooling.get("normalize", False))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": ST_POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": ST_NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"}
        )
    pool_cfg: dict[str, Any] = {"word_embedding_dimension": int(hidden)}
    pool_cfg.update({f"pooling_mode_{m}": m == _ST_MODES[mode] for m in _ST_ALL_MODES})
    pool_cfg["include_prompt"] = True
    if source_pool is not None and _declared_modes(source_pool) == [_ST_MODES[mode]]:
        pool_cfg = {**source_pool, "word_embedding_dimension": int(hidden)}
    declared = source_sbert.get("max_seq_length")
    seq = min(int(declared), int(max_seq)) if isinstance(declared, int) and declared >= 1 else int(max_seq)
    sbert = {"max_seq_length": seq, "do_lower_case": bool(source_sbert.get("do_lower_case", False))}
    st_config: dict[str, Any] = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    written = {
        "modules.json": modules,
        "sentence_bert_config.json": sbert,
        "config_sentence_transformers.json": st_config,
        f"{ST_POOLING_DIR}/config.json": pool_cfg,
    }
    for rel, data in written.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return sorted(written)


def _source_st_config(source_dir: Path | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The source's ``sentence_bert_config.json`` ({} without one) and its Pooling module's config (None)."""
    sbert = _read_json(source_dir / "sentence_bert_config.json") if source_dir is not None else None
    modules = _read_json(source_dir / "modules.json") if source_dir is not None else None
    pool = None
    if source_dir is not None and isinstance(modules, list):
        rel = next(
            (m.get("path") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")), None
        )
        pool = _read_json(source_dir / rel / "config.json") if isinstance(rel, str) else None
    return (sbert if isinstance(sbert, dict) else {}), (pool if isinstance(pool, dict) else None)


def _declared_modes(pool_cfg: dict[str, Any]) -> list[str]:
    return [m for m in _ST_ALL_MODES if pool_cfg.get(f"pooling_mode_{m}")]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def place_converted(
    path: Path, extras: dict[str, Path], directory: Path, precision: str, suffix: str
) -> tuple[list[str], dict[str, str]]:
    """A converted graph (``.ort``) to ``onnx/model<precision suffix><suffix>`` (``onnx/model_fp16.ort``) in the
    staged bundle ``directory``, and the files it ships with (``extras``: name suffix -> file) beside it under
    the same stem; returns its graph files and the extras' bundle-relative names."""
    stem = graph_file(precision).removesuffix(".onnx")
    names = {extra: stem + extra for extra in extras}
    (directory / stem).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, directory / (stem + suffix))
    for extra, src in extras.items():
        shutil.move(src, directory / names[extra])
    return [stem + suffix], names


def place_graph(src: Path, directory: Path, precision: str) -> list[str]:
    """Move an optimized graph (and its external data) to ``directory/onnx/`` under its precision's name.

    A graph without external data is renamed; one with external data is re-saved so its data file
    is named after the graph (``onnx/model_fp16.onnx_data``) and the graph refers to it by that
    name. Returns the bundle-relative files, graph first.
    """
    import onnx

    rel = graph_file(precision)
    dest = directory / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(src), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(proto))
    if not external:
        os.replace(src, dest)
        return [rel]
    import onnx_ir as ir

    model = ir.load(str(src))
    ir.save(model, str(dest), external_data=Path(data_file(rel)).name)
    return [rel, data_file(rel)]


def _tensors(proto: Any) -> list[Any]:
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(proto))
