"""``bert-export run`` (text through a bundle) and ``bert-export engine`` (build its TensorRT engine).

Thin click wrappers over ``bert_export.runtimes.predict`` and ``runtimes.trt_build``; the JSON
shapes ``run --json`` prints are defined (and documented) in runtimes/postprocess.py. ``run
--file TEXTS --out OUT`` streams a corpus through ``runtimes.corpus`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.markup import escape

from bert_export.bundle.layout import PRECISIONS
from bert_export.cli.options import batching_of, keep_order_option, threads_option
from bert_export.cli.paths import OutputFile
from bert_export.cli.runtime_option import runtime_option
from bert_export.models import BertExportError, get_task
from bert_export.models.progress import console


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--text",
    "texts",
    multiple=True,
    metavar="TEXT",
    help="Input text (repeat for a batch); mlm texts hold the mask token.",
)
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    metavar="TEXT",
    help="seq-cls, rerank: the second text of each --text (one --pair per --text, in order); "
    "pairs longer than the bundle are truncated longest_first, as Hugging Face does.",
)
@click.option(
    "--query",
    default=None,
    metavar="TEXT",
    help="embed: rank the --text entries by cosine similarity to this text (semantic search); "
    "rerank: the query the --passage entries are scored against.",
)
@click.option(
    "--passage",
    "passages",
    multiple=True,
    metavar="TEXT",
    help="rerank: a passage to score against --query (repeat; printed best first).",
)
@click.option("--question", default=None, help="qa: the question.")
@click.option("--context", default=None, help="qa: the passage the answer is taken from.")
@runtime_option("Runtime")
@click.option(
    "--json", "as_json", is_flag=True, help="Print only JSON (one object per line; see runtimes/postprocess.py)."
)
@click.option("--top-k", default=5, show_default=True, help="mlm: candidates per mask token.")
@threads_option()
@click.option(
    "--trt-profile", default=None, metavar="MIN,OPT,MAX", help="trt/ort-trt: BATCHxSEQ shapes, e.g. 1x1,8x128,32x512."
)
@click.option("--rebuild-engine", is_flag=True, help="trt: rebuild the bundle's engine for this machine first.")
@click.option("--strict-runtime", is_flag=True, help="Fail instead of falling back to another provider.")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None, help="Which graph of the bundle [its default]."
)
@click.option(
    "--doc-stride",
    type=int,
    default=None,
    help="qa: overlap in tokens between the windows of a context longer than the bundle [min(max_seq/2, 128)].",
)
@click.option("--max-answer-len", type=int, default=30, show_default=True, help="qa: longest answer in tokens.")
@click.option(
    "--max-question-len",
    type=int,
    default=64,
    show_default=True,
    help="qa, long contexts: the question is truncated to this many tokens.",
)
@click.option(
    "--chunk",
    is_flag=True,
    help="embed: texts longer than the bundle are embedded in windows and mean-pooled "
    "(default: truncated, with a note).",
)
@click.option(
    "--file",
    "text_file",
    type=click.Path(path_type=Path),
    default=None,
    help="A corpus: one text per line, or a .jsonl / .csv / .tsv with --column; needs --out.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="--file's results: .npy (embeddings, float32), .jsonl (one JSON object per text), .parquet (pyarrow).",
)
@click.option("--column", default=None, help="--file .jsonl/.csv/.tsv: the field holding the text [text].")
@keep_order_option()
@click.option(
    "--token-budget",
    type=int,
    default=None,
    help="Padded tokens per inference call (texts x the batch's longest) [4096].",
)
@click.option("-q", "--quiet", is_flag=True, help="--file: no progress bar.")
def run(
    bundle: Path,
    texts: tuple[str, ...],
    pairs: tuple[str, ...],
    query: str | None,
    passages: tuple[str, ...],
    question: str | None,
    context: str | None,
    runtime: str,
    as_json: bool,
    top_k: int,
    threads: int | None,
    trt_profile: str | None,
    rebuild_engine: bool,
    strict_runtime: bool,
    doc_stride: int | None,
    max_answer_len: int,
    max_question_len: int,
    chunk: bool,
    precision: str | None,
    text_file: Path | None,
    out: Path | None,
    column: str | None,
    keep_order: bool,
    token_budget: int | None,
    quiet: bool,
) -> None:
    """Run text through a bundle and print the task's answer (or JSON with --json).

    embed bundles print the cosine similarity of every pair of --text, or with --query the texts
    ranked by similarity to it.

    With --file TEXTS --out OUT: every text of the file, streamed in bounded memory, batched by
    length, written in input order (row i = text i) to OUT atomically.
    """
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.batching import DEFAULT_TOKEN_BUDGET
    from bert_export.runtimes.predict import predict

    if max_answer_len < 1 or max_question_len < 1:
        raise BertExportError("--max-answer-len and --max-question-len must be >= 1")
    batching = batching_of(keep_order)
    budget = DEFAULT_TOKEN_BUDGET if token_budget is None else token_budget
    b = load_bundle(bundle, precision=precision)
    if text_file is not None or out is not None or column is not None:
        _run_file(
            b,
            text_file,
            out,
            column,
            texts or question or context or query or pairs or passages,
            precision=precision,
            runtime=runtime,
            threads=threads,
            batching=batching,
            token_budget=budget,
            top_k=top_k,
            quiet=quiet or as_json,
            runner_options={"trt_profile": trt_profile, "rebuild_engine": rebuild_engine, "strict": strict_runtime},
        )
        _warn_untrained(b.manifest)
        return
    _check_utf8(
        [(f"--text #{i + 1}", t) for i, t in enumerate(texts)]
        + [(f"--pair #{i + 1}", t) for i, t in enumerate(pairs)]
        + [(f"--passage #{i + 1}", t) for i, t in enumerate(passages)]
        + [("--query", query), ("--question", question), ("--context", context)]
    )
    task = get_task(b.manifest["task"])
    reranking = task.ranks_passages and query is not None
    if task.ranks_passages and (query is None) != (not passages):
        raise BertExportError("this is a rerank bundle: pass --query Q with --passage P (one or more)")
    if reranking and (texts or pairs):
        raise BertExportError("pass either --query/--passage or --text/--pair pairs, not both")
    if passages and not task.ranks_passages:
        raise BertExportError(f"--passage is for rerank bundles; this one is {task.name}")
    if query is not None and not reranking and (not task.vector_output or not texts):
        raise BertExportError(
            "--query is for embed bundles (with the texts to search in as --text TEXT) "
            "and rerank bundles (with --passage P)"
        )
    if reranking:
        assert query is not None
        texts, pairs = (query,) * len(passages), passages
    pred = predict(
        b,
        texts=((query,) + texts if query is not None and not reranking else texts) or None,
        pairs=pairs or None,
        question=question,
        context=context,
        runtime=runtime,
        threads=threads,
        top_k=top_k,
        trt_profile=trt_profile,
        rebuild_engine=rebuild_engine,
        strict=strict_runtime,
        doc_stride=doc_stride,
        max_answer_tokens=max_answer_len,
        max_question_len=max_question_len,
        chunk=chunk,
        batching=batching,
        token_budget=budget,
    )
    if reranking:
        ranking = _rerank(pred.results, passages)
        if as_json:
            click.echo(json.dumps({"query": query, "results": ranking}, ensure_ascii=False))
            _warn_untrained(b.manifest)
            return
        _print_search(query or "", ranking, digits=4)
    elif query is not None:
        ranking = _search(pred.results[0]["embeddings"], texts)
        if as_json:
            click.echo(json.dumps({"query": query, "results": ranking}, ensure_ascii=False))
            _warn_untrained(b.manifest)
            return
        _print_search(query, ranking)
    elif as_json:
        for line in pred.json_lines():
            click.echo(line)
        _warn_untrained(b.manifest)
        return
    else:
        _print_human(pred, tuple(f"{a} | {b}" for a, b in zip(texts, pairs)) if pairs else texts)
    _warn_untrained(b.manifest)
    active = (pred.providers or {}).get("active")
    console.print(f"[dim]ran on {pred.runtime}{' (' + ', '.join(active) + ')' if active else ''}[/dim]")


def _warn_untrained(manifest: dict[str, Any]) -> None:
    """Every use, after each answer (on stderr, so --json stays clean, and never before an error line): one
    export-time note is easy to miss."""
    from bert_export.bundle.manifest import untrained_warning

    warning = untrained_warning(manifest)
    if warning:
        console.print(f"[bold yellow]{escape(warning)}[/bold yellow]", soft_wrap=True)


def _run_file(
    bundle: Any,
    text_file: Path | None,
    out: Path | None,
    column: str | None,
    inline: object,
    *,
    precision: str | None,
    quiet: bool,
    runner_options: dict[str, Any],
    **options: Any,
) -> None:
    """``run --file TEXTS --out OUT`` (runtimes/corpus.py), with a progress bar and a one-line summary."""
    from bert_export.runtimes.corpus import run_corpus

    if text_file is None or out is None:
        raise BertExportError("--file TEXTS and --out OUT go together, e.g. --file texts.txt --out embeddings.npy")
    if inline:
        raise BertExportError("pass either --file or --text/--question/--context, not both")
    result = run_corpus(
        bundle, text_file, out=out, column=column, precision=precision, progress=not quiet, **options, **runner_options
    )
    console.print(
        f"wrote {result.count} result(s) to {result.out} in {result.seconds:.1f} s ({result.rate:.1f} texts/s)"
    )


def _check_utf8(values: list[tuple[str, str | None]]) -> None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates (PEP 383) and would end in
    a tokenizer traceback; refuse them in one line that says where the bad byte is."""
    for option, value in values:
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(value[exc.start]) - 0xDC00 if 0xDC80 <= ord(value[exc.start]) <= 0xDCFF else None
            what = f"byte 0x{byte:02x}" if byte is not None else "an unpaired surrogate"
            raise BertExportError(
                f"{option} is not valid UTF-8 ({what} at character {exc.start}); pass UTF-8 text "
                f"(e.g. convert it with iconv -t UTF-8)"
            ) from None


def _print_human(pred: object, texts: tuple[str, ...]) -> None:
    """The task's human-readable lines (``Task.human_lines``, models/tasks)."""
    for line in get_task(pred.task).human_lines(texts, pred.results):  # type: ignore[attr-defined]
        click.echo(line)
    results = pred.results  # type: ignore[attr-defined]
    if get_task(pred.task).vector_output and len(results[0]["embeddings"]) > 1:  # type: ignore[attr-defined]
        _print_similarity(results[0]["embeddings"])


def cosine_matrix(vectors: list[list[float]]) -> np.ndarray:
    """Cosine similarity of every pair (pooled vectors need not be normalised: not every pooling is)."""
    m = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    m = m / np.where(norms > 0, norms, 1.0)
    return np.clip(m @ m.T, -1.0, 1.0)


def _print_similarity(vectors: list[list[float]]) -> None:
    """The pairwise cosine matrix, rows and columns numbered as the texts above."""
    sim = cosine_matrix(vectors)
    n = len(vectors)
    click.echo("cosine similarity:")
    click.echo("      " + "".join(f"{f'[{j}]':>8}" for j in range(1, n + 1)))
    for i in range(n):
        click.echo(f"{f'[{i + 1}]':<6}" + "".join(f"{sim[i, j]:8.3f}" for j in range(n)))


def _search(vectors: list[list[float]], texts: tuple[str, ...]) -> list[dict[str, object]]:
    """The texts ranked by cosine similarity to the query (``vectors[0]``), best first."""
    scores = cosine_matrix(vectors)[0, 1:]
    order = sorted(range(len(texts)), key=lambda i: -scores[i])
    return [{"index": i, "text": texts[i], "score": round(float(scores[i]), 6)} for i in order]


def _rerank(results: list[dict[str, Any]], passages: tuple[str, ...]) -> list[dict[str, object]]:
    """The passages ranked by the cross-encoder's score, best first (ties keep the order given)."""
    order = sorted(range(len(passages)), key=lambda i: -results[i]["score"])
    return [{"index": i, "text": passages[i], "score": results[i]["score"]} for i in order]


def _print_search(query: str, ranking: list[dict[str, object]], digits: int = 3) -> None:
    click.echo(f"query: {query[:70]!r}")
    for rank, hit in enumerate(ranking, 1):
        click.echo(f"{rank:>3}. {hit['score']:.{digits}f}  {str(hit['text'])[:70]!r}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--trt-profile", default=None, metavar="MIN,OPT,MAX", help="BATCHxSEQ shapes [1x1,8x128,32x<max seq>].")
@click.option("--timing-cache", type=OutputFile(), default=None, help="TensorRT timing cache file [per-user cache].")
@click.option("--force", is_flag=True, help="Replace the bundle's existing engine.")
def engine(bundle: Path, trt_profile: str | None, timing_cache: Path | None, force: bool) -> None:
    """Build the bundle's TensorRT engine (model.engine + build record) on this GPU."""
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.trt_build import RECORD_KEY, build_engine, parse_profile, require_gpu

    b = load_bundle(bundle)
    profile = parse_profile(trt_profile, b.max_seq) if trt_profile else None
    require_gpu()
    if b.manifest.get(RECORD_KEY) and not force:
        rec = b.manifest[RECORD_KEY]
        raise BertExportError(
            f"{bundle} already has {rec.get('file')} (TensorRT {rec.get('tensorrt_version')}, {rec.get('gpu')}); pass --force to rebuild it"
        )
    with console.status("Building the TensorRT engine"):
        _, record = build_engine(b, profile, timing_cache=timing_cache)
    console.print(
        f"wrote {bundle / record['file']} ({record['bytes'] / 1e6:.1f} MB, TensorRT {record['tensorrt_version']}, "
        f"{record['gpu']}, profile {record['profile']})"
    )


COMMANDS = (run, engine)
