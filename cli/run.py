"""``bert-export run`` (text through a bundle) and ``bert-export engine`` (build its TensorRT engine).

Thin click wrappers over ``bert_export.runtimes.predict`` and ``runtimes.trt_build``; the JSON
shapes ``run --json`` prints are defined (and documented) in runtimes/postprocess.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from rich.markup import escape

from bert_export.bundle.layout import PRECISIONS
from bert_export.models import BertExportError
from bert_export.models.progress import console
from bert_export.runtimes.providers import RUNTIME_NAMES


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
    "--query",
    default=None,
    metavar="TEXT",
    help="embed: rank the --text entries by cosine similarity to this text (semantic search).",
)
@click.option("--question", default=None, help="qa: the question.")
@click.option("--context", default=None, help="qa: the passage the answer is taken from.")
@click.option(
    "--runtime",
    type=click.Choice(RUNTIME_NAMES),
    default="ort",
    show_default=True,
    help="ort (CPU), ort-cuda, ort-trt (ONNX Runtime providers, with CPU fallback), trt (TensorRT engine), "
    "openvino (its IR, or any bundle's ONNX graph).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print only JSON (one object per line; see runtimes/postprocess.py); warnings stay on stderr.",
)
@click.option("--top-k", default=5, show_default=True, help="mlm: candidates per mask token.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (CPU).")
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
def run(
    bundle: Path,
    texts: tuple[str, ...],
    query: str | None,
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
) -> None:
    """Run text through a bundle and print the task's answer (or JSON with --json).

    embed bundles print the cosine similarity of every pair of --text, or with --query the texts
    ranked by similarity to it."""
    from bert_export.bundle.manifest import untrained_warning
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.predict import predict

    if max_answer_len < 1 or max_question_len < 1:
        raise BertExportError("--max-answer-len and --max-question-len must be >= 1")
    _check_utf8(
        [(f"--text #{i + 1}", t) for i, t in enumerate(texts)]
        + [("--query", query), ("--question", question), ("--context", context)]
    )
    b = load_bundle(bundle, precision=precision)
    if query is not None and (b.manifest["task"] != "embed" or not texts):
        raise BertExportError("--query is for embed bundles, with the texts to search in as --text TEXT (one or more)")
    warning = untrained_warning(b.manifest)
    if warning:  # every use, before any answer: one export-time note is easy to miss
        console.print(f"[bold yellow]{escape(warning)}[/bold yellow]", soft_wrap=True)
    pred = predict(
        b,
        texts=((query,) + texts if query is not None else texts) or None,
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
    )
    if query is not None:
        ranking = _search(pred.results[0]["embeddings"], texts)
        if as_json:
            click.echo(json.dumps({"query": query, "results": ranking}, ensure_ascii=False))
            return
        _print_search(query, ranking)
    elif as_json:
        for line in pred.json_lines():
            click.echo(line)
        return
    else:
        _print_human(pred, texts)
    active = (pred.providers or {}).get("active")
    console.print(f"[dim]ran on {pred.runtime}{' (' + ', '.join(active) + ')' if active else ''}[/dim]")


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
    task, results = pred.task, pred.results  # type: ignore[attr-defined]
    out = click.echo
    if task == "qa":
        r = results[0]
        out(f"answer: {r['answer']!r}  (score {r['score']:.4f}, chars {r['start']}..{r['end']})")
    elif task == "embed":
        vectors = results[0]["embeddings"]
        for i, (text, vec) in enumerate(zip(texts, vectors), 1):
            head = ", ".join(f"{v:+.4f}" for v in vec[:4])
            out(f"[{i}] {len(vec)}-d [{head}, ...]  {text[:60]!r}")
        if len(vectors) > 1:
            _print_similarity(vectors)
    else:
        for text, r in zip(texts, results):
            out(f"{text[:70]!r}")
            if task == "seq-cls":
                out(f"  {r['label']}  ({r['score']:.4f})")
            elif task == "token-cls":
                for e in r["entities"] or [{"label": "-", "text": "(no entities)", "score": 0.0, "start": 0, "end": 0}]:
                    out(f"  {e['label']:<10} {e['text']!r}  ({e['score']:.4f}, chars {e['start']}..{e['end']})")
            elif task == "mlm":
                for f in r["fills"]:
                    cands = ", ".join(f"{c['token']} ({c['score']:.3f})" for c in f["candidates"])
                    out(f"  chars {f['start']}..{f['end']}: {cands}")


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


def _print_search(query: str, ranking: list[dict[str, object]]) -> None:
    click.echo(f"query: {query[:70]!r}")
    for rank, hit in enumerate(ranking, 1):
        click.echo(f"{rank:>3}. {hit['score']:.3f}  {str(hit['text'])[:70]!r}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--trt-profile", default=None, metavar="MIN,OPT,MAX", help="BATCHxSEQ shapes [1x1,8x128,32x<max seq>].")
@click.option(
    "--timing-cache", type=click.Path(path_type=Path), default=None, help="TensorRT timing cache file [per-user cache]."
)
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
