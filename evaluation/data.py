"""Reading the user's evaluation data: ``.txt``, ``.jsonl``, ``.csv`` and ``.parquet``.

The user's file is untrusted input: the standard library reads ``.txt``, ``.jsonl`` and ``.csv``
(the json and csv modules, Excel's quoting) one bounded line at a time, so a 1 GB line, a 10 GB
file, a million columns or JSON nested 100k deep each end in one ``BertExportError`` line (see
the MAX_* bounds), and only ``.parquet`` needs pyarrow. This module maps columns to ``Example``
objects and turns every way a file can be wrong into one error line.

Columns (by task):

- every task but qa: ``text``; qa: ``question`` + ``context``;
- text pairs (seq-cls, rerank): ``text`` + ``text_pair``, or ``query`` + ``passage`` (rerank reads only pairs;
  a pair is ``[CLS] text [SEP] text_pair [SEP]``, truncated longest_first as Hugging Face does);
- gold (optional): seq-cls ``label`` (a label name of the bundle or its id); rerank ``label`` (a relevance
  grade >= 0: 1 relevant, 0 not), scored per query (rows with the same query text) as MRR@10 and NDCG@10; token-cls
  ``labels`` (one tag per word; words are ``tokens`` when given, else ``text.split()``); qa
  ``answers`` (a string, a list of strings, or SQuAD's ``{"text": [...], ...}``);
- embed: a pairs file (``sentence1``, ``sentence2``, ``score``) instead of ``text`` gives the
  Spearman correlation of cosine similarity with ``score``;
- mlm needs no gold column: tokens of each text are masked and the original token is the gold.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_export.models import BertExportError, get_task

EXTENSIONS = (".txt", ".jsonl", ".csv", ".parquet")


@dataclass
class Example:
    """One input (a text, a pair or a question with its context) and its gold, when the file has one."""

    text: str | None = None
    text_pair: str | None = None  # seq-cls, rerank: the pair's second text (rerank: the passage, ``text`` the query)
    words: list[str] | None = None  # token-cls with gold tags: the words the tags belong to
    question: str | None = None
    context: str | None = None
    label: Any = None  # seq-cls gold
    labels: list[str] | None = None  # token-cls gold, one per word
    answers: list[str] | None = None  # qa gold
    pair: tuple[str, str] | None = None  # embed: sentence1, sentence2
    score: float | None = None  # embed: gold similarity


@dataclass
class Dataset:
    """Examples from one file, and which gold the file carries (``gold`` None: parity only)."""

    path: Path
    examples: list[Example]
    gold: str | None = None  # "label" | "labels" | "answers" | "score" | "masked" (mlm)
    columns: list[str] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """Every text the encoder sees (pairs files contribute both sentences)."""
        out: list[str] = []
        for ex in self.examples:
            out.extend(ex.pair if ex.pair is not None else [ex.text or ""])
        return out


def require(*modules: str) -> None:
    """Optional dependencies (the ``eval`` extra), checked before any work starts."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        names = {"sklearn": "scikit-learn"}
        raise BertExportError(
            f"{', '.join(names.get(m, m) for m in missing)} is needed for --data; pip install 'bert-export[eval]'"
        )


# which optional module each gold kind's metric uses
METRIC_MODULES = {"label": ("sklearn",), "score": ("scipy",)}


# Bounds on what a data file may make bert-export hold (one error line when exceeded, never an abort
# inside the tokenizer or a MemoryError): a line (a text of 1 MiB is ~250k tokens, hundreds of qa
# windows), the bytes read in all (pass --limit to read the first rows of a bigger file), the rows
# and the columns (a million-column CSV header took 68 s and 5 GB).
MAX_LINE_BYTES = 1 << 20
MAX_DATA_BYTES = 512 << 20
MAX_ROWS = 1_000_000
MAX_COLUMNS = 256


def read_data(path: str | Path, task: str, limit: int | None = None) -> Dataset:
    """Read ``path`` for ``task``; ``limit`` keeps the first N rows (and reads no further)."""
    p = Path(path)
    if limit is not None and limit < 1:
        raise BertExportError(f"--limit must be >= 1, got {limit}")
    suffix = p.suffix.lower()
    if suffix not in EXTENSIONS:
        raise BertExportError(
            f"--data {p}: unknown extension {p.suffix or '(none)'!r}; use one of {', '.join(EXTENSIONS)}"
        )
    if not p.is_file():
        raise BertExportError(f"--data {p} does not exist or is not a file")
    rows = min(limit or MAX_ROWS, MAX_ROWS)
    columns, records = READERS[suffix](p, rows)
    if limit is None and len(records) > MAX_ROWS - 1:
        raise BertExportError(f"--data {p} has more than {MAX_ROWS - 1} rows; pass --limit N to use its first N")
    if not records:
        raise BertExportError(f"--data {p} has no rows; give it at least one example")
    examples, gold = _examples(p, task, columns, records)
    require(*METRIC_MODULES.get(gold or "", ()))
    return Dataset(p, examples, gold, columns)


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """The file's lines (numbered from 1, line endings kept), decoded as UTF-8 and bounded.

    Read in binary one bounded line at a time: a line over MAX_LINE_BYTES, more than
    MAX_DATA_BYTES in all, or a byte that is not UTF-8 is one error line, found as it is reached.
    """
    seen = 0
    with open(p, "rb", opener=_open_regular) as fh:
        for number in itertools.count(1):
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise BertExportError(
                    f"--data {p} line {number} is longer than {MAX_LINE_BYTES >> 20} MiB; split or shorten it"
                )
            seen += len(raw)
            if seen > MAX_DATA_BYTES:
                raise BertExportError(
                    f"--data {p} is larger than {MAX_DATA_BYTES >> 20} MiB; pass --limit N to read its first N rows"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BertExportError(
                    f"--data {p} is not UTF-8 (bad byte at offset {seen - len(raw) + exc.start}); re-save it as UTF-8"
                ) from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _open_regular(path: str, flags: int) -> int:
    """open() for data files: O_NONBLOCK so that a FIFO cannot hang the reader (it is refused after fstat)."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BertExportError(f"--data {path} is not a regular file (a FIFO or device); pass a data file")
    return fd


def _read_txt(p: Path, rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    for _, line in _lines(p):
        if line.strip():
            records.append({"text": line.rstrip("\r\n")})
            if len(records) >= rows:
                break
    if not records and p.stat().st_size == 0:
        raise BertExportError(f"--data {p} is empty; give it at least one example")
    return ["text"], records


def _read_jsonl(p: Path, rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    columns: dict[str, None] = {}
    records: list[dict[str, Any]] = []
    for number, line in _lines(p):
        if not line.strip():
            continue
        row = _json(line, f"--data {p} is not valid JSON lines (one object per line): line {number}")
        if not isinstance(row, dict):
            raise BertExportError(
                f"--data {p} is not valid JSON lines (one object per line): line {number} holds a {type(row).__name__}"
            )
        columns.update(dict.fromkeys(str(k) for k in row))
        if len(columns) > MAX_COLUMNS:
            raise BertExportError(f"--data {p} has more than {MAX_COLUMNS} different keys; keep the columns it needs")
        records.append(row)
        if len(records) >= rows:
            break
    if not records and p.stat().st_size == 0:
        raise BertExportError(f"--data {p} is empty; give it at least one example")
    return list(columns), [{c: r.get(c) for c in columns} for r in records]


def _read_csv(p: Path, rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    """csv from the standard library (quoting and escapes as Excel writes them), every cell a string."""
    previous = csv.field_size_limit(MAX_LINE_BYTES)
    try:
        reader = csv.reader(line for _, line in _lines(p))
        header = next(reader, None)
        if header is None:
            raise BertExportError(f"--data {p} is empty; give it a header row and at least one example")
        if len(header) > MAX_COLUMNS:
            raise BertExportError(
                f"--data {p} has {len(header)} columns, more than {MAX_COLUMNS}; keep the ones it needs"
            )
        columns = [c.strip() for c in header]
        records: list[dict[str, Any]] = []
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) > len(columns):
                raise BertExportError(
                    f"--data {p} is not valid CSV with a header row: row {len(records) + 1} has {len(cells)} "
                    f"cells for {len(columns)} columns"
                )
            records.append(dict(zip(columns, cells + [""] * (len(columns) - len(cells)))))
            if len(records) >= rows:
                break
    except csv.Error as exc:
        raise BertExportError(f"--data {p} is not valid CSV with a header row: {_first(exc)}") from None
    finally:
        csv.field_size_limit(previous)
    return columns, records


def _read_parquet(p: Path, rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Parquet through pyarrow (the only format that needs it), bounded before it is read."""
    require("pyarrow")
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(p)
        if meta.num_columns > MAX_COLUMNS:
            raise BertExportError(f"--data {p} has {meta.num_columns} columns, more than {MAX_COLUMNS}")
        if p.stat().st_size > MAX_DATA_BYTES:
            raise BertExportError(
                f"--data {p} is larger than {MAX_DATA_BYTES >> 20} MiB; pass a smaller file (or --limit with JSON lines)"
            )
        table = pq.read_table(p).slice(0, rows)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise BertExportError(f"--data {p} is not valid Parquet: {_first(exc)}") from None
    return [str(c) for c in table.column_names], table.to_pylist()


READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def _json(text: str, error: str) -> Any:
    """``json.loads`` whose every failure, deep nesting's RecursionError included, is one line starting ``error``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise BertExportError(f"{error}: it is nested too deeply; flatten it") from None
    except ValueError as exc:
        raise BertExportError(f"{error}: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split())[:200] if text else type(exc).__name__


def _need(p: Path, columns: list[str], *names: str, what: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise BertExportError(
            f"--data {p} lacks column(s) {', '.join(missing)} ({what}); it has: {', '.join(columns) or 'none'}"
        )


def _examples(
    p: Path, task: str, columns: list[str], records: list[dict[str, Any]]
) -> tuple[list[Example], str | None]:
    tsk = get_task(task)  # which columns a task reads and which gold it can carry: models/tasks
    if tsk.pair_input:
        _need(p, columns, "question", "context", what="a qa bundle reads question + context")
        gold = "answers" if "answers" in columns else None
        return [
            Example(
                question=_str(p, r, "question", i),
                context=_str(p, r, "context", i),
                answers=_answers(p, r["answers"], i) if gold else None,
            )
            for i, r in enumerate(records)
        ], gold
    if tsk.gold == "score" and "sentence1" in columns:
        _need(p, columns, "sentence1", "sentence2", "score", what="an embed pairs file")
        return [
            Example(pair=(_str(p, r, "sentence1", i), _str(p, r, "sentence2", i)), score=_float(p, r["score"], i))
            for i, r in enumerate(records)
        ], "score"
    if tsk.gold == "labels" and ("tokens" in columns or "labels" in columns):
        return _token_rows(p, columns, records), "labels"
    if tsk.pair_field is not None:
        pair_columns = ("query", "passage") if "query" in columns else ("text", tsk.pair_field)
        if pair_columns[1] in columns or tsk.ranks_passages:
            _need(
                p, columns, *pair_columns, what=f"a {task} bundle reads text pairs: text + text_pair or query + passage"
            )
            gold = tsk.gold if "label" in columns else None
            return [
                Example(
                    text=_str(p, r, pair_columns[0], i),
                    text_pair=_str(p, r, pair_columns[1], i),
                    label=_label(p, r["label"], i) if gold else None,
                )
                for i, r in enumerate(records)
            ], gold
    _need(
        p,
        columns,
        "text",
        what=f"a {task} bundle reads text" + (" (or sentence1, sentence2, score)" if tsk.gold == "score" else ""),
    )
    if tsk.gold == "label" and "label" in columns:
        return [
            Example(text=_str(p, r, "text", i), label=_label(p, r["label"], i)) for i, r in enumerate(records)
        ], "label"
    examples = [Example(text=_str(p, r, "text", i)) for i, r in enumerate(records)]
    return examples, (tsk.gold if tsk.masks_inputs else None)


def _token_rows(p: Path, columns: list[str], records: list[dict[str, Any]]) -> list[Example]:
    """token-cls gold: ``labels`` per word; the words are ``tokens`` when the row has them, else ``text.split()``."""
    _need(p, columns, "labels", what="token-cls gold is one tag per word")
    if "tokens" not in columns:
        _need(p, columns, "text", what="token-cls reads tokens (a list of words) or text")
    out = []
    for i, r in enumerate(records):
        if "tokens" in columns and not _missing(r["tokens"]):
            words = [str(w) for w in _list(p, r["tokens"], "tokens", i)]
        else:
            words = _str(p, r, "text", i).split()
        out.append(
            Example(text=" ".join(words), words=words, labels=_tags(p, words, _list(p, r["labels"], "labels", i), i))
        )
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _str(p: Path, record: dict[str, Any], column: str, i: int) -> str:
    value = record[column]
    if _missing(value) or not isinstance(value, str) or not value.strip():
        raise BertExportError(f"--data {p} row {i + 1}: {column} must be non-empty text, got {_short(value)}")
    if len(value) > MAX_LINE_BYTES:  # parquet cells: the bound lines have in the text formats
        raise BertExportError(f"--data {p} row {i + 1}: {column} is longer than {MAX_LINE_BYTES} characters")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float(p: Path, value: Any, i: int) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise BertExportError(f"--data {p} row {i + 1}: score must be a number, got {value!r}")
    return out


def _label(p: Path, value: Any, i: int) -> Any:
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        raise BertExportError(f"--data {p} row {i + 1}: label is empty; give every row a label (a name or an id)")
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # a numpy scalar
        value = value.item()
    if not isinstance(value, (str, int, float)):
        raise BertExportError(
            f"--data {p} row {i + 1}: label must be one label name or id, got {type(value).__name__} {_short(value)}"
        )
    return value.strip() if isinstance(value, str) else value


def _list(p: Path, value: Any, column: str, i: int) -> list[Any]:
    """A list cell: a real list (jsonl, parquet) or a JSON / whitespace-separated string (csv, txt)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            value = _json(s, f"--data {p} row {i + 1}: {column} is not a JSON list")
        else:
            value = s.split()
    if not isinstance(value, list):
        raise BertExportError(f"--data {p} row {i + 1}: {column} must be a list, got {type(value).__name__}")
    return value


def _tags(p: Path, words: list[str], tags: list[Any], i: int) -> list[str]:
    if len(words) != len(tags):
        raise BertExportError(
            f"--data {p} row {i + 1}: {len(tags)} labels for {len(words)} words; give one tag per word"
        )
    return [str(t) for t in tags]


def _answers(p: Path, value: Any, i: int) -> list[str]:
    if isinstance(value, dict):  # SQuAD / datasets: {"text": [...], "answer_start": [...]}
        value = value.get("text")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except RecursionError:
            raise BertExportError(
                f"--data {p} row {i + 1}: its answers JSON is nested too deeply; flatten it"
            ) from None
        except json.JSONDecodeError:
            pass
    answers = [value] if isinstance(value, str) else value
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise BertExportError(
            f'--data {p} row {i + 1}: answers must be a string, a list of strings or {{"text": [...]}}, got {value!r}'
        )
    return answers  # an empty list: no answer in the context (SQuAD 2.0), gold is ""
