"""Reading the user's evaluation data: ``.txt``, ``.jsonl``, ``.csv`` and ``.parquet``.

pandas (with pyarrow for parquet) does the parsing, so quoting, escapes, encodings and column
types behave as users know them from their own notebooks. This module only maps columns to
``Example`` objects and turns every way a file can be wrong into one ``BertExportError`` line.

Columns (by task):

- every task but qa: ``text``; qa: ``question`` + ``context``;
- gold (optional): seq-cls ``label`` (a label name of the bundle or its id); token-cls
  ``labels`` (one tag per word; words are ``tokens`` when given, else ``text.split()``); qa
  ``answers`` (a string, a list of strings, or SQuAD's ``{"text": [...], ...}``);
- embed: a pairs file (``sentence1``, ``sentence2``, ``score``) instead of ``text`` gives the
  Spearman correlation of cosine similarity with ``score``;
- mlm needs no gold column: tokens of each text are masked and the original token is the gold.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_export.models import BertExportError, get_task

EXTENSIONS = (".txt", ".jsonl", ".csv", ".parquet")


@dataclass
class Example:
    """One input (a text, a pair or a question with its context) and its gold, when the file has one."""

    text: str | None = None
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


def read_data(path: str | Path, task: str, limit: int | None = None) -> Dataset:
    """Read ``path`` for ``task``; ``limit`` keeps the first N rows."""
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
    require("pandas", *(("pyarrow",) if suffix == ".parquet" else ()))
    frame = _frame(p, suffix)
    if limit is not None:
        frame = frame.head(limit)
    if len(frame) == 0:
        raise BertExportError(f"--data {p} has no rows; give it at least one example")
    columns = [str(c) for c in frame.columns]
    records = frame.to_dict(orient="records")
    examples, gold = _examples(p, task, columns, records)
    require(*METRIC_MODULES.get(gold or "", ()))
    return Dataset(p, examples, gold, columns)


def _frame(p: Path, suffix: str) -> Any:
    _check_text_encoding(p, suffix)
    import pandas as pd

    try:
        if suffix == ".txt":
            lines = [ln.rstrip("\r\n") for ln in p.read_text(encoding="utf-8-sig").splitlines()]
            return pd.DataFrame({"text": [ln for ln in lines if ln.strip()]})
        if suffix == ".jsonl":
            return pd.read_json(p, lines=True, dtype=False, encoding="utf-8")
        if suffix == ".csv":
            return pd.read_csv(p, encoding="utf-8-sig", dtype=str, keep_default_na=False)
        return pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise BertExportError(f"--data {p} is empty; give it a header row and at least one example") from None
    except ImportError as exc:  # parquet without pyarrow
        raise BertExportError(
            f"--data {p}: {exc.name or 'pyarrow'} is needed to read it; pip install 'bert-export[eval]'"
        ) from None
    except (ValueError, OSError) as exc:
        kind = {
            ".jsonl": "JSON lines (one object per line)",
            ".csv": "CSV with a header row",
            ".parquet": "Parquet",
        }.get(suffix, suffix)
        raise BertExportError(f"--data {p} is not valid {kind}: {_first(exc)}") from None


def _check_text_encoding(p: Path, suffix: str) -> None:
    """Text formats must be UTF-8: say so instead of letting a decoder fail deep inside pandas."""
    if suffix == ".parquet":
        return
    raw = p.read_bytes()
    if not raw.strip():
        raise BertExportError(f"--data {p} is empty; give it at least one example")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BertExportError(
            f"--data {p} is not UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8"
        ) from None


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
        raise BertExportError(f"--data {p} row {i + 1}: {column} must be non-empty text, got {value!r}")
    return value


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
    if hasattr(value, "item"):  # numpy scalar from parquet / jsonl
        value = value.item()
    return value.strip() if isinstance(value, str) else value


def _list(p: Path, value: Any, column: str, i: int) -> list[Any]:
    """A list cell: a real list (jsonl, parquet) or a JSON / whitespace-separated string (csv, txt)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                raise BertExportError(f"--data {p} row {i + 1}: {column} is not a JSON list: {s[:60]!r}") from None
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
        except json.JSONDecodeError:
            pass
    answers = [value] if isinstance(value, str) else value
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise BertExportError(
            f'--data {p} row {i + 1}: answers must be a string, a list of strings or {{"text": [...]}}, got {value!r}'
        )
    return answers  # an empty list: no answer in the context (SQuAD 2.0), gold is ""
