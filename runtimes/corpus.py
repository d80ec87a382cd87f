"""A corpus through a bundle: ``bert-export run BUNDLE --file TEXTS --out OUT`` and ``embed()``.

    from bert_export.runtimes import embed
    vectors = embed(["first text", "second text"], "exports/minilm")      # [2, 384] float32
    embed("corpus.txt", "exports/minilm", out="corpus.npy", progress=True)  # streamed to disk

Texts come from a list or a file (one text per line; ``.jsonl`` / ``.csv`` / ``.tsv`` with a
``column``, default ``text``) and are read ``chunk_size`` at a time, so memory is bounded by
the chunk and the token budget, not by the corpus. Within a chunk they are batched by length
(runtimes/batching.py) and written back in input order: row ``i`` of the output is line ``i``
of the input. Outputs: ``.npy`` (embeddings, float32 [texts, hidden]), ``.jsonl`` (one JSON
object per text, ``run --json``'s shapes; embed: ``{"embedding": [...]}``), ``.parquet``
(pyarrow; embed: an ``embedding`` column, other tasks a ``result`` column of JSON).

The output is written to a temporary sibling and renamed into place at the end: an error or
Ctrl-C leaves the previous file or none, never a half-written one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from bert_export.bundle.publish import atomic_path
from bert_export.models import BertExportError, get_task
from bert_export.models import postprocess as pp
from bert_export.runtimes import batching as batching_
from bert_export.runtimes.base import Runner

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

log = logging.getLogger("bert_export.runtimes")
CHUNK_TEXTS = 4096  # texts read, tokenized and sorted at a time: the memory bound
FORMATS = (".npy", ".jsonl", ".parquet")
TABLE_SUFFIXES = (".jsonl", ".csv", ".tsv")


# --- reading -----------------------------------------------------------------------------------


def read_texts(path: str | Path, column: str | None = None) -> Iterator[str]:
    """The texts of ``path``, streamed: lines of a text file, or ``column`` of a .jsonl / .csv / .tsv."""
    path = Path(path)
    suffix = path.suffix.lower()
    if column is not None and suffix not in TABLE_SUFFIXES:
        raise BertExportError(f"--column applies to .jsonl, .csv and .tsv files; {path} is read one text per line")
    try:
        fh = open(path, encoding="utf-8", newline="" if suffix in (".csv", ".tsv") else None)
    except OSError as exc:
        raise BertExportError(f"cannot read {path} ({exc.strerror}); pass an existing text file") from None
    if suffix == ".json":
        raise BertExportError(
            f"{path} is a .json file; a corpus is one text per line, or .jsonl (one JSON object per line), "
            ".csv or .tsv: convert it to .jsonl"
        )
    with fh:
        lines = _bounded_lines(fh, path)
        rows = _jsonl(lines, path, column) if suffix == ".jsonl" else None
        if suffix in (".csv", ".tsv"):
            rows = _csv(lines, path, column, "\t" if suffix == ".tsv" else ",")
        try:
            if rows is not None:
                yield from rows
            else:
                for line in lines:
                    yield line.rstrip("\r\n")
        except csv.Error as exc:
            raise BertExportError(f"{path} is not a valid table ({exc}); fix the file") from None
        except UnicodeDecodeError as exc:
            raise BertExportError(
                f"{path} is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x}); convert it (iconv -t UTF-8)"
            ) from None


MAX_LINE_CHARS = 1 << 20  # 1 Mi characters: far past any model's window, and a bound on what one read holds


def _bounded_lines(fh: IO[str], path: Path) -> Iterator[str]:
    """The file's lines, each read with a bound: a file without newlines (a binary or sparse file, a JSON
    document on one line) is refused at the bound instead of being read whole into memory; NUL
    characters mean a binary file, refused too."""
    n = 0
    while line := fh.readline(MAX_LINE_CHARS + 1):
        n += 1
        if len(line) > MAX_LINE_CHARS:
            raise BertExportError(f"{path} line {n} is longer than {MAX_LINE_CHARS} characters; put one text per line")
        if "\x00" in line:
            raise BertExportError(
                f"{path} line {n} holds a NUL character: it is not a text file; pass a UTF-8 text file"
            )
        yield line


def _jsonl(fh: Iterator[str], path: Path, column: str | None) -> Iterator[str]:
    key = column or "text"
    for n, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BertExportError(f"{path} line {n} is not JSON ({exc.msg}); write one JSON object per line") from None
        except RecursionError:
            raise BertExportError(f"{path} line {n} nests too deeply; write one flat JSON object per line") from None
        if isinstance(row, str) and column is None:
            yield row
        elif isinstance(row, dict) and isinstance(row.get(key), str):
            yield row[key]
        else:
            have = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise BertExportError(f"{path} line {n} has no text field {key!r} (it has {have}); pass --column NAME")


def _csv(fh: Iterator[str], path: Path, column: str | None, delimiter: str) -> Iterator[str]:
    key = column or "text"
    reader = csv.DictReader(fh, delimiter=delimiter)
    if reader.fieldnames is None or key not in reader.fieldnames:
        raise BertExportError(f"{path} has no column {key!r} (its header: {reader.fieldnames}); pass --column NAME")
    for row in reader:
        value = row.get(key)
        if value is None:
            raise BertExportError(f"{path} row {reader.line_num} has no {key!r} field; fix the row")
        yield value


def count_texts(path: str | Path, column: str | None = None) -> int:
    """How many texts ``read_texts`` yields (one streaming pass: the .npy header and the progress bar need it)."""
    return sum(1 for _ in read_texts(path, column))


def chunks(texts: Iterator[str] | Sequence[str], size: int) -> Iterator[list[str]]:
    """Lists of at most ``size`` texts, in order."""
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- writing -----------------------------------------------------------------------------------


class _Npy:
    """float32 [count, dim] rows appended in order after a .npy header (no memmap: RSS stays flat)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path, self.count, self.written = path, count, 0
        self.fh: IO[bytes] | None = None

    def write(self, task: str, values: Any) -> None:
        rows = np.ascontiguousarray(values, dtype="<f4")
        if self.fh is None:
            self.fh = open(self.path, "wb")
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.count, int(rows.shape[1]))}
            np.lib.format.write_array_header_1_0(self.fh, header)
        self.fh.write(rows.tobytes())
        self.written += len(rows)

    def close(self, complete: bool) -> None:
        if self.fh is None:
            if complete:  # an empty corpus: a [0, 0] array
                np.save(self.path, np.zeros((0, 0), dtype=np.float32))
            return
        with self.fh:
            if complete:
                self.fh.flush()
                os.fsync(self.fh.fileno())
        if complete and self.written != self.count:
            raise BertExportError(f"the input changed while it was read ({self.written} texts, {self.count} counted)")


class _Jsonl:
    def __init__(self, path: Path, count: int) -> None:
        self.fh = open(path, "w", encoding="utf-8")

    def write(self, task: str, values: Any) -> None:
        from bert_export.runtimes.predict import Prediction

        results = (
            [{"embedding": [round(float(v), pp.DECIMALS) for v in row]} for row in values] if _vectors(task) else values
        )
        for line in Prediction(task, results, "").json_lines():
            self.fh.write(line + "\n")

    def close(self, complete: bool) -> None:
        with self.fh:
            if complete:
                self.fh.flush()
                os.fsync(self.fh.fileno())


class _Parquet:
    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.writer: Any = None

    def write(self, task: str, values: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if _vectors(task):
            rows = np.ascontiguousarray(values, dtype=np.float32)
            column = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), int(rows.shape[1]))
            table = pa.table({"embedding": column})
        else:
            table = pa.table({"result": [json.dumps(r, ensure_ascii=False) for r in values]})
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema)
        self.writer.write_table(table)

    def close(self, complete: bool) -> None:
        if self.writer is not None:
            self.writer.close()


WRITERS: dict[str, Callable[[Path, int], Any]] = {".npy": _Npy, ".jsonl": _Jsonl, ".parquet": _Parquet}


def check_out(out: str | Path, task: str) -> Path:
    """``out``'s format fits the task and can be written (``bundle.publish.check_output_file``), before any work."""
    from bert_export.bundle.publish import check_output_file

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise BertExportError(f"--out {path}: name a .npy (embeddings), .jsonl or .parquet file")
    if suffix == ".npy" and not _vectors(task):
        raise BertExportError(
            f"--out {path}: .npy holds embeddings; this bundle's task is {task}: write .jsonl or .parquet"
        )
    if suffix == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise BertExportError(
                "--out .parquet needs pyarrow: pip install 'bert-export[eval]', or write .jsonl / .npy"
            ) from None
    return check_output_file(path, "--out")


# --- running -----------------------------------------------------------------------------------


@dataclass
class CorpusResult:
    """What ran: how many texts, how long, where they went (or the values, without ``out``)."""

    count: int
    seconds: float
    out: Path | None = None
    values: Any = None  # embed: float32 [count, dim]; other tasks: the result objects
    truncated: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def run_corpus(
    bundle: str | Path | Bundle,
    texts: Sequence[str] | str | Path,
    *,
    out: str | Path | None = None,
    column: str | None = None,
    runtime: str = "ort",
    threads: int | None = None,
    precision: str | None = None,
    batching: str = "length",
    token_budget: int = batching_.DEFAULT_TOKEN_BUDGET,
    chunk_size: int = CHUNK_TEXTS,
    top_k: int = pp.TOP_K,
    progress: bool = False,
    runner: Runner | None = None,
    **runner_options: Any,
) -> CorpusResult:
    """Every text of ``texts`` (a list, or a file path) through ``bundle``; see the module docstring."""
    from bert_export.bundle.reader import Bundle, load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, precision=precision)
    task = b.manifest["task"]
    if get_task(task).input_fields != ("text",):
        raise BertExportError(
            f"this bundle's task is {task}: it takes --question and --context; --file is for the other tasks"
        )
    if batching not in batching_.BATCHING:
        raise BertExportError(f"batching {batching!r}: choose from {', '.join(batching_.BATCHING)}")
    if chunk_size < 1:
        raise BertExportError(f"chunk_size must be >= 1, got {chunk_size}")
    source, count = _source(texts, column)
    path = check_out(out, task) if out is not None else None
    tokenizer = bundle_tokenizer(b)
    if tokenizer is None:
        raise BertExportError(f"{b.path} has no tokenizer files, so it cannot take text; re-export it with one")
    own = runner is None
    runner = runner or make_runner(b, runtime, threads, **runner_options)
    start = time.perf_counter()
    state = _State(task, b, tokenizer, runner, batching, token_budget, top_k)
    try:
        runner.activate()
        with _progress(count, progress) as advance:
            if path is None:
                parts = []
                for chunk in chunks(source, chunk_size):
                    parts.append(state.run(chunk))
                    advance(len(chunk))
                values: Any = _join(task, parts)
            else:
                with atomic_path(path, "--out") as tmp:
                    writer = WRITERS[path.suffix.lower()](tmp, count)
                    complete = False
                    try:
                        for chunk in chunks(source, chunk_size):
                            writer.write(task, state.run(chunk))
                            advance(len(chunk))
                        complete = True
                    finally:
                        writer.close(complete)  # incomplete: just closed; atomic_path removes it
                values = None
    finally:
        if own:
            runner.deactivate()
    if state.truncated:
        log.warning(
            "note: %d text(s) exceed this bundle's %d tokens and were truncated (first: text #%d)",
            state.truncated,
            b.max_seq,
            state.first_truncated + 1,
        )
    return CorpusResult(count, time.perf_counter() - start, path, values, state.truncated)


def embed(
    texts_or_path: Sequence[str] | str | Path,
    bundle: str | Path | Bundle,
    *,
    out: str | Path | None = None,
    **options: Any,
) -> Any:
    """Embed texts (a list, or a file of them) with an embed bundle: float32 [texts, dim], or ``out``'s Path.

    ``options`` are ``run_corpus``'s: column, runtime, threads, precision, batching
    ("length" | "input-order"), token_budget, chunk_size, progress.
    """
    from bert_export.bundle.reader import Bundle, load_bundle

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, precision=options.pop("precision", None))
    if not _vectors(b.manifest["task"]):
        raise BertExportError(f"{b.path} is a {b.manifest['task']} bundle; embed() needs an embed bundle")
    result = run_corpus(b, texts_or_path, out=out, **options)
    return result.out if out is not None else result.values


def _source(texts: Sequence[str] | str | Path, column: str | None) -> tuple[Iterator[str] | Sequence[str], int]:
    if isinstance(texts, (str, os.PathLike)):
        path = Path(texts)
        if not path.is_file():
            raise BertExportError(
                f"{str(texts)[:80]!r} is not a file; pass an existing text file (from Python, texts go in a list)"
            )
        return read_texts(path, column), count_texts(path, column)
    if column is not None:
        raise BertExportError("column applies to a .jsonl / .csv file, not to a list of texts")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise BertExportError(f"text #{bad + 1} is a {type(texts[bad]).__name__}, not a str")
    return texts, len(texts)


def _vectors(task: str) -> bool:
    """The task's result per text is one vector (embed): streamed as an array, not JSON objects."""
    return get_task(task).vector_output


def _join(task: str, parts: list[Any]) -> Any:
    if _vectors(task):
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    return [r for part in parts for r in part]


class _State:
    """One chunk at a time: tokenize, plan, infer, pool (embed) or post-process (predict), in input order."""

    def __init__(
        self, task: str, b: Bundle, tokenizer: Any, runner: Runner, batching: str, budget: int, top_k: int
    ) -> None:
        self.task, self.b, self.tokenizer, self.runner = task, b, tokenizer, runner
        self.batching, self.budget, self.top_k = batching, budget, top_k
        self.seen = self.truncated = self.first_truncated = 0
        pooling = b.manifest.get("pooling") or {}
        self.mode, self.normalize = str(pooling.get("mode", "cls")), bool(pooling.get("normalize", False))
        self.pad = int(
            (b.manifest.get("special_tokens") or {}).get("pad") or getattr(tokenizer, "pad_token_id", 0) or 0
        )

    def run(self, texts: list[str]) -> Any:
        enc = self.tokenizer(texts, truncation=True, max_length=self.b.max_seq, return_token_type_ids=True)
        self._count_truncated(enc)
        self.seen += len(texts)
        if not _vectors(self.task):
            return self._predict(texts)
        lengths = [len(ids) for ids in enc["input_ids"]]
        order: list[int] = []
        vectors: list[np.ndarray] = []
        for members in self._plan(lengths):
            feed = {
                spec.name: batching_.pad_rows(
                    [enc[spec.name][k] for k in members] if spec.name in enc else [[0] * lengths[k] for k in members],
                    self.pad if spec.name == "input_ids" else 0,
                )
                for spec in self.b.inputs
            }
            mask = batching_.pad_rows([[1] * lengths[k] for k in members], 0)
            hidden = self.runner.infer(feed)["last_hidden_state"]
            vectors.append(pp.pool(hidden, mask, self.mode, self.normalize).astype(np.float32))
            order.extend(members)
        rows = np.concatenate(vectors)
        restored = np.empty_like(rows)
        restored[np.asarray(order)] = rows
        return restored

    def _plan(self, lengths: list[int]) -> list[list[int]]:
        limit = getattr(getattr(self.runner, "profile", None), "max", None)
        most = min(batching_.DEFAULT_MAX_BATCH, limit[0]) if limit else batching_.DEFAULT_MAX_BATCH
        return batching_.batches_for(
            lengths, self.batching, budget=self.budget, max_batch=most, batch=min(batching_.DEFAULT_BATCH, most)
        )

    def _predict(self, texts: list[str]) -> list[dict[str, Any]]:
        from bert_export.runtimes.predict import predict

        quiet = logging.getLogger("bert_export.runtimes")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # truncation is counted (and noted once) here, with corpus-wide numbers
        try:
            return predict(
                self.b,
                texts=texts,
                runner=self.runner,
                top_k=self.top_k,
                batching=self.batching,
                token_budget=self.budget,
            ).results
        finally:
            quiet.setLevel(level)

    def _count_truncated(self, enc: Any) -> None:
        for i, e in enumerate(enc.encodings):
            if e.overflowing:
                if not self.truncated:
                    self.first_truncated = self.seen + i
                self.truncated += 1


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr (texts done/total, texts/s, ETA), or a no-op."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from bert_export.models.progress import console

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else None)
            return Text(f"{speed:,.1f} texts/s" if speed else "- texts/s")

    bar = Progress(
        TextColumn("Running texts"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task("texts", total=total)
        yield lambda n: bar.advance(task, n)
