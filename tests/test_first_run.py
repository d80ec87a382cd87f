"""A new user's first ten minutes (issue 20): the main job answers for real, untrained heads are loud on
every use (run, validate --data, serve, the Triton post model, the C++ demo), random-init ModernBERT
bundles take text, signals behave the same in the background, and the texts users read are right.

Cost: the packaged MiniLM exported for embed and qa (shared with other modules through make_bundle),
two tiny random-init exports, no server (serve's reply path is TextModel, its start-up line a function).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.bundle.manifest import untrained_warning
from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import main
from bert_export.models import FAMILIES

from .conftest import MINILM_ID, needs, resign

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums.",
]
QUESTION, CONTEXT = "What is the capital of France?", "Paris is the capital and most populous city of France."


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``bert-export ARGS`` in-process, as the program runs it: (exit code, stdout, stderr with spaces joined)."""

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
        captured = capsys.readouterr()
        return int(exc.value.code or 0), captured.out, " ".join(captured.err.split())

    return run


CLI = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def minilm_embed(make_bundle: Callable[..., Path]) -> Path:
    """The README's main job (fp32 + int8; fp16 too, so tests/test_consumers.py and test_layout.py share it)."""
    return make_bundle("bert", "embed", model=MINILM_ID, max_seq=128, precisions="fp32,fp16,int8")


@pytest.fixture(scope="module")
def minilm_qa(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "qa", model=MINILM_ID, max_seq=128)


@pytest.fixture(scope="module")
def tiny_qa(make_bundle: Callable[..., Path]) -> Path:
    """Random-init ModernBERT whose vocabulary holds the borrowed WordPiece's ids (as ModernBERT-base's does)."""
    return make_bundle("modernbert", "qa", overrides={**FAMILIES["modernbert"].tiny_config, "vocab_size": 30528})


# ----------------------------------------------------------------------------- the main job


def test_embed_run_prints_a_meaningful_similarity_matrix(cli: CLI, minilm_embed: Path) -> None:
    code, out, err = cli("run", str(minilm_embed), *[a for t in SENTENCES for a in ("--text", t)])
    assert code == 0, err
    assert "warning" not in err  # every weight came from the checkpoint
    lines = out.splitlines()
    at = lines.index("cosine similarity:")
    sim = np.array([[float(v) for v in line.split()[1:]] for line in lines[at + 2 : at + 2 + len(SENTENCES)]])
    assert np.allclose(np.diag(sim), 1.0, atol=1e-3) and np.allclose(sim, sim.T, atol=1e-3)
    # the two eating sentences are each other's nearest neighbour, far above the unrelated pairs
    assert sim[0, 1] > 0.6 and max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3], sim[2, 3]) < 0.3


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_embed_query_ranks_the_matching_sentence_first(cli: CLI, minilm_embed: Path, precision: str) -> None:
    bundle = minilm_embed
    args = ("run", str(bundle), "--precision", precision, "--query", "Someone is having a meal.")
    texts = [a for t in SENTENCES[1:] for a in ("--text", t)]
    code, out, err = cli(*args, *texts, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["query"] == "Someone is having a meal."
    assert [r["text"] for r in doc["results"]][0] == "A man is eating a piece of bread."
    assert doc["results"][0]["score"] > 0.4 > doc["results"][1]["score"]
    code, out, err = cli(*args, *texts)
    assert code == 0 and out.splitlines()[1].split(None, 2)[2] == repr("A man is eating a piece of bread."), out


def test_query_is_for_embed_bundles(cli: CLI, minilm_qa: Path) -> None:
    code, _, err = cli("run", str(minilm_qa), "--query", "x", "--text", "y")
    assert code == 2 and err.startswith("error: --query is for embed bundles")


# ----------------------------------------------------------------------------- untrained heads are loud


def test_manifest_records_the_untrained_head(minilm_qa: Path, minilm_embed: Path, tiny_qa: Path) -> None:
    qa = load_bundle(minilm_qa).manifest["untrained"]
    assert qa["reason"] == "new-head" and "qa_outputs.weight" in qa["params"] and "qa head" in qa["warning"]
    assert "untrained" not in load_bundle(minilm_embed).manifest
    assert load_bundle(tiny_qa).manifest["untrained"]["reason"] == "random-init"


@pytest.mark.parametrize("as_json", [False, True])
def test_run_warns_on_every_use(cli: CLI, minilm_qa: Path, as_json: bool) -> None:
    for _ in range(2):
        code, out, err = cli("run", str(minilm_qa), "--question", QUESTION, "--context", CONTEXT, *["--json"] * as_json)
        assert code == 0, err
        assert "warning: this bundle's qa head was not in the checkpoint and was randomly initialised" in err
        if as_json:  # stdout stays pure JSON (the contract every consumer compares against): the warning is on stderr
            assert set(json.loads(out)) == {"answer", "score", "start", "end"}


def test_older_bundles_without_the_field_still_warn(cli: CLI, minilm_qa: Path, tiny_qa: Path, copy_bundle: Any) -> None:
    for src, words in ((minilm_qa, "qa head"), (tiny_qa, "--random-init")):
        old = copy_bundle(src)
        resign(old, lambda m: m.pop("untrained"))
        manifest = load_bundle(old).manifest
        assert "untrained" not in manifest and words in (untrained_warning(manifest) or "")
        code, _, err = cli("run", str(old), "--question", QUESTION, "--context", CONTEXT)
        assert code == 0 and words in err


def test_a_bad_untrained_field_is_refused(cli: CLI, tiny_qa: Path, copy_bundle: Any) -> None:
    bad = copy_bundle(tiny_qa)
    resign(bad, lambda m: m["untrained"].update(reason="mostly-trained"))
    code, _, err = cli("run", str(bad), "--question", QUESTION, "--context", CONTEXT)
    assert code == 2 and "untrained.reason" in err


def test_validate_data_warns(cli: CLI, minilm_qa: Path, minilm_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    row = {"question": QUESTION, "context": CONTEXT, "answers": {"text": ["Paris"], "answer_start": [0]}}
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    code, _, err = cli("validate", str(minilm_qa), "--model", str(minilm_dir), "--data", str(data), "-q")
    assert err.startswith("warning: this bundle's qa head"), err


def test_serve_replies_and_start_carry_the_warning(minilm_qa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """serve's reply path (TextModel: every reply's NOTE) and its start-up line, without starting Triton."""
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner
    from bert_export.serving.textmodel import TextModel, warn_at_start

    b = load_bundle(minilm_qa)
    with make_runner(b, "ort", 1) as runner:
        model = TextModel(b, runner, bundle_tokenizer(b))
        replies = model.predict([{"QUESTION": QUESTION, "CONTEXT": CONTEXT}, {"QUESTION": b"\xff", "CONTEXT": "x"}])
        warn_at_start(model)
    assert replies[0].note.startswith("warning: this bundle's qa head") and json.loads(replies[0].json)["answer"]
    assert replies[1].error and not replies[1].note  # an error reply needs no answer caveat
    assert "warning: this bundle's qa head" in " ".join(capsys.readouterr().err.split())


def test_triton_post_model_logs_the_warning(minilm_qa: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's NAME_post model (Triton Python backend) logs the warning at load and with every batch."""
    needs(
        importlib.util.find_spec("tritonclient") is not None,
        "the serve extra (tritonclient) is not installed: pip install 'bert-export[serve]'",
    )
    from bert_export.serving.repository import write_repository

    names = write_repository(minilm_qa, tmp_path / "repo")
    post = tmp_path / "repo" / next(n for n in names if n.endswith("_post")) / "1"
    logged: list[str] = []
    fake = types.SimpleNamespace(Logger=types.SimpleNamespace(log_warn=logged.append))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.setattr(sys, "path", list(sys.path))  # model.py puts its own folder first: undone after the test
    spec = importlib.util.spec_from_file_location("bx_post_model", post / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        model.initialize({})
        assert len(logged) == 1 and "qa head" in logged[0]
        model.execute([])
        model.execute([])
        assert logged == logged[:1] * 3
    finally:
        sys.modules.pop("postprocess", None)  # the repository's vendored copy


@pytest.fixture(scope="module")
def demo() -> Path:
    """examples/cpp's demo (tests/test_cpp.py builds it the same way; a rebuild takes ~1 s)."""
    needs(all(shutil.which(t) for t in ("cmake", "c++")), "no cmake or c++: the C++ example cannot be built")
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "cpp" / "build.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ROOT / "examples" / "cpp" / "build" / "bert_export_demo"


def test_cpp_demo_warns(demo: Path, tiny_qa: Path, minilm_embed: Path) -> None:
    for _ in range(2):
        proc = subprocess.run(
            [str(demo), str(tiny_qa), "--question", QUESTION, "--context", CONTEXT], capture_output=True, text=True
        )
        assert proc.returncode == 0 and json.loads(proc.stdout)["answer"], proc.stderr
        assert proc.stderr.startswith("warning: this bundle was exported with --random-init")
    clean = subprocess.run([str(demo), str(minilm_embed), "--text", "hi"], capture_output=True, text=True)
    assert clean.returncode == 0 and clean.stderr == ""


# ----------------------------------------------------------------------------- random-init ModernBERT takes text


def test_random_init_modernbert_gets_a_tokenizer_whose_ids_fit(cli: CLI, tiny_qa: Path) -> None:
    b = load_bundle(tiny_qa)
    assert b.manifest["tokenizer"]["kind"] == "wordpiece"
    vocab = (tiny_qa / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) <= b.manifest["config"]["vocab_size"]
    config = json.loads((tiny_qa / "config.json").read_text(encoding="utf-8"))
    assert (config["pad_token_id"], config["cls_token_id"], config["sep_token_id"]) == (0, 1, 2)  # --config wins
    code, out, err = cli("run", str(tiny_qa), "--question", QUESTION, "--context", CONTEXT, "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert CONTEXT[answer["start"] : answer["end"]] == answer["answer"]
    assert "--random-init" in err


def test_random_init_special_ids_follow_the_borrowed_tokenizer() -> None:
    """ModernBERT's default special ids name its own BPE vocabulary; with the WordPiece they are the tokenizer's."""
    from bert_export.exporter.loading import load_source
    from bert_export.models import get_family, get_task

    tiny = {k: v for k, v in FAMILIES["modernbert"].tiny_config.items() if not k.endswith("token_id")}
    source = load_source(
        get_family("modernbert"), get_task("qa"), random_init=True, overrides={**tiny, "vocab_size": 30528}
    )
    c = source.config
    assert source.tokenizer_dir is not None
    assert (c.pad_token_id, c.cls_token_id, c.sep_token_id, c.bos_token_id, c.eos_token_id) == (0, 101, 102, 101, 102)
    assert source.model.get_input_embeddings().padding_idx == 0


def test_tiny_modernbert_keeps_no_tokenizer(make_bundle: Callable[..., Path]) -> None:
    """The borrowed WordPiece's 30522 ids do not fit the tiny config's 1024: no tokenizer, as before."""
    b = load_bundle(make_bundle("modernbert", "embed"))
    assert not b.manifest["tokenizer"]["files"]


# ----------------------------------------------------------------------------- signals in the background


CHILD = "import os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(3); print('survived')"


def test_sigint_reaches_children_when_started_in_the_background() -> None:
    """`nohup ... &` starts us with SIGINT ignored. A plain child inherits that (and survives SIGINT);
    .ci/default-signals.py (how .ci/run starts pytest) and tests/test_publish.py's preexec reset undo it."""
    from .test_publish import default_signals

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        plain = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
        wrapped = subprocess.run(
            [sys.executable, str(ROOT / ".ci" / "default-signals.py"), sys.executable, "-c", CHILD],
            capture_output=True,
            text=True,
            timeout=60,
        )
        reset = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, preexec_fn=default_signals
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert plain.returncode == 0 and "survived" in plain.stdout  # the premise: ignored is inherited
    for proc in (wrapped, reset):
        assert proc.returncode == -signal.SIGINT and "survived" not in proc.stdout, proc.stderr
        assert "KeyboardInterrupt" in proc.stderr  # Python's own handler ran: as started from a terminal


def test_ci_run_starts_pytest_with_default_signals() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".venv/bin/python .ci/default-signals.py .venv/bin/python -m pytest -q" in text


# ----------------------------------------------------------------------------- texts users read


def test_help_and_error_texts(cli: CLI) -> None:
    _, export_help, _ = cli("bert", "--help")
    assert "~12% faster" in export_help and "%%" not in export_help
    _, validate_help, _ = cli("validate", "--help")
    validate_help = " ".join(validate_help.split())
    assert "openvino (OpenVINO" in validate_help and "-q, --quiet No progress lines" in validate_help
    _, compare_help, _ = cli("compare", "--help")
    assert "-q, --quiet No progress lines" in " ".join(compare_help.split())
    _, run_help, _ = cli("run", "--help")
    assert "openvino (OpenVINO" in " ".join(run_help.split())


def test_validate_model_errors_do_not_suggest_random_init(cli: CLI, minilm_qa: Path) -> None:
    code, _, err = cli("validate", str(minilm_qa), "--model", "/nonexistent/model")
    assert code == 2 and "does not exist" in err and "--random-init" not in err.split("does not exist")[1], err


def test_embed_bundle_errors_read_right(cli: CLI, minilm_embed: Path) -> None:
    code, _, err = cli("run", str(minilm_embed), "--question", "q", "--context", "c")
    assert code == 2 and "task is embed" in err and "a embed" not in err


def test_bench_plot_title_fits_a_single_cell() -> None:
    needs(importlib.util.find_spec("matplotlib") is not None, "matplotlib (the bench extra) is not installed")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bert_export.runtimes.bench import BenchResult, Row, figure

    def row(runtime: str) -> Row:
        return Row(runtime, "fp32", 1, 128, 10.0, 11.0, 12.0, 100.0, 12800.0, 5.0, 2.0 if runtime == "ort" else None)

    for name in ("b", "a-rather-long-bundle-directory-name-" * 3):
        result = BenchResult(
            [row("ort")],
            [row("torch")],
            {"cpu": "AMD EPYC 9B14 96-Core Processor with a long marketing name", "load_avg": [9.4, 9.3, 5.4]},
            {"bundle": f"/somewhere/exports/{name}", "family": "modernbert", "task": "qa", "threads": 2},
        )
        fig = figure(result, plt)
        fig.canvas.draw()
        box, title = fig.bbox, fig.get_suptitle() and fig._suptitle.get_window_extent()
        plt.close(fig)
        assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1, (title, box)
