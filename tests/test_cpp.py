"""The C++ consumer (examples/cpp): built once per session with its own build.sh, then checked on
exported bundles against the Python side: golden self-test, the same `run --json` results, the
same token ids as Hugging Face tokenizers, and refusal of a tampered bundle.

Cost: the first build is ~25 s on 2 cores (downloads cached in examples/cpp/third_party), two
MiniLM exports (shared with other modules through make_bundle) and three tiny ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.runtimes.factory import load_tokenizer
from bert_export.runtimes.predict import predict
from bert_export.runtimes.texts import long_text

from .test_bad_requests import CI_VARS

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "examples" / "cpp"

# Varied text for tokenizer equality: accents, punctuation, numbers, CJK, long words, empty,
# control and zero-width characters, other scripts, special tokens written in the text.
TOKENIZER_TEXTS = [
    "",
    "   ",
    "Hello, world!",
    "Héllo WÖRLD naïve café résumé Ångström mañana São Paulo Zürich Kraków",
    "北京欢迎你 and 東京 and 한국어 텍스트",
    "1,234.56 + 7e-3 = $89.5bn (8%) on 3/14/2024 at 3:30 p.m.",
    "a" * 150,
    "supercalifragilisticexpialidocious" * 3,
    "İstanbul ΟΔΟΣ straße ﬁne Æsir ǅ",
    "tab\there\nnewline\r\nzero\u200bwidth\u00a0nbsp\u3000ideographic",
    "control\x07\x1fchars\ufffd\u0085 and a soft\u00adhyphen",
    "emoji 😀🥰 ok",
    "[MASK] is [CLS] weird[SEP] [UNK]",
    "“smart quotes” — em dash … ellipsis ‘single’ «guillemets»",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ x²³ ½ ① Ⅻ ℃ ㎏",
    "Ελληνικά και русский текст, مرحبا بالعالم, हिन्दी",
    "e\u0301 combining a\u0308 and o\u0302\u0323",
    'He said, "Don\'t forget the state-of-the-art benchmarks," and left.',
    long_text(600),  # past max_sequence_length: --tokenize does not truncate, like tokenizer(text)
]

QA_REQUESTS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    (
        "Who wrote Pride and Prejudice?",
        "Pride and Prejudice is an 1813 novel of manners written by Jane Austen. It follows Élizabeth Bennet.",
    ),
    ("Où est le café ?", "Le café « Les Deux Magots » se trouve à Saint-Germain-des-Prés, Paris 6e."),
    ("When did Marie Curie win?", long_text(700) + " Marie Curie won in 1911."),  # context truncated to 512 tokens
]


def assert_same(py: Any, cc: Any, tol: float = 2e-6, at: str = "") -> None:
    """Equal JSON, floats within ``tol`` (both sides round to 6 decimals)."""
    if isinstance(py, float) or isinstance(cc, float):
        assert abs(float(py) - float(cc)) <= tol, f"{at}: python {py} vs c++ {cc}"
    elif isinstance(py, dict):
        assert set(py) == set(cc), f"{at}: keys {sorted(py)} vs {sorted(cc)}"
        for k in py:
            assert_same(py[k], cc[k], tol, f"{at}.{k}")
    elif isinstance(py, list):
        assert len(py) == len(cc), f"{at}: length {len(py)} vs {len(cc)}"
        for i, (a, b) in enumerate(zip(py, cc)):
            assert_same(a, b, tol, f"{at}[{i}]")
    else:
        assert py == cc, f"{at}: python {py!r} vs c++ {cc!r}"


@pytest.fixture(scope="session")
def demo() -> Path:
    """examples/cpp/build.sh, run once per session (idempotent; a rebuild takes ~1 s)."""
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"no {' or '.join(missing)} on this machine: the C++ example cannot be built (apt-get install cmake g++)"
        )
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(CPP / "build.sh")], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"build.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    binary = CPP / "build" / "bert_export_demo"
    assert binary.is_file()
    return binary


def cpp(demo: Path, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(demo), str(bundle), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def qa_bundle(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "qa", model=MINILM_ID)


@pytest.fixture(scope="module")
def embed_bundle(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "embed", model=MINILM_ID)


@pytest.mark.parametrize("which", ["qa", "embed"])
def test_self_test_passes_on_minilm(demo: Path, qa_bundle: Path, embed_bundle: Path, which: str) -> None:
    bundle = qa_bundle if which == "qa" else embed_bundle
    proc = cpp(demo, bundle, "--self-test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    golden = json.loads((bundle / "golden.json").read_text(encoding="utf-8"))
    n = len(golden["examples"])
    assert f"self-test: {n}/{n} golden examples within the fp32 tolerances" in proc.stdout
    assert "note: tokenizer check skipped" not in proc.stdout  # the C++ tokenizer was checked too


@pytest.mark.parametrize("question,context", QA_REQUESTS)
def test_qa_json_matches_python(demo: Path, qa_bundle: Path, question: str, context: str) -> None:
    proc = cpp(demo, qa_bundle, "--question", question, "--context", context)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    want = predict(qa_bundle, question=question, context=context).results[0]
    assert_same(want, got)
    assert context[got["start"] : got["end"]] == got["answer"]


def test_embed_json_matches_python(demo: Path, embed_bundle: Path) -> None:
    texts = ["A man is playing a guitar.", "Ein Café in Zürich, naïve & schön!", "猫が好きです", "Yes."]
    proc = cpp(demo, embed_bundle, *[a for t in texts for a in ("--text", t)])
    assert proc.returncode == 0, proc.stderr
    got = np.asarray(json.loads(proc.stdout)["embeddings"])
    want = np.asarray(predict(embed_bundle, texts=texts).results[0]["embeddings"])  # padded batch in Python
    assert got.shape == want.shape == (4, 384)
    assert np.abs(got - want).max() <= 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # MiniLM: mean pooling + normalize


@pytest.mark.parametrize("text", TOKENIZER_TEXTS, ids=range(len(TOKENIZER_TEXTS)))
def test_token_ids_equal_hugging_face(demo: Path, qa_bundle: Path, text: str) -> None:
    tokenizer = load_tokenizer(qa_bundle)
    proc = cpp(demo, qa_bundle, "--tokenize", text)
    assert proc.returncode == 0, proc.stderr
    assert [int(t) for t in proc.stdout.split()] == tokenizer(text)["input_ids"]


@pytest.mark.parametrize(
    "task,texts",
    [
        ("mlm", ["Paris is the [MASK] of France.", "The [MASK] brown fox [MASK] over the dog."]),
        ("seq-cls", ["I absolutely loved this movie!", "Naïve café owners, 2024."]),
        ("token-cls", ["Marie Curie won Nobel Prizes in Paris.", "Zürich's café-owner met Björn."]),
    ],
)
def test_other_tasks_match_python(demo: Path, make_bundle: Callable[..., Path], task: str, texts: list[str]) -> None:
    """Tiny random-init bundles: the post-processing ports (fills, labels, entities) match exactly."""
    bundle = make_bundle("bert", task)
    assert cpp(demo, bundle, "--self-test").returncode == 0
    proc = cpp(demo, bundle, *[a for t in texts for a in ("--text", t)])
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert_same(predict(bundle, texts=texts).results, got)


@pytest.mark.parametrize("damage", ["model", "vocab", "golden", "schema", "missing"])
def test_tampered_bundle_is_refused(
    demo: Path, qa_bundle: Path, copy_bundle: Callable[[Path], Path], damage: str
) -> None:
    bundle = copy_bundle(qa_bundle)
    if damage == "model":
        path = bundle / "onnx/model.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "vocab":
        with (bundle / "vocab.txt").open("a", encoding="utf-8") as fh:
            fh.write("injected\n")
    elif damage == "golden":
        golden = json.loads((bundle / "golden.json").read_text(encoding="utf-8"))
        golden["tolerances"]["fp32"]["max_abs"] = 1.0
        (bundle / "golden.json").write_text(json.dumps(golden), encoding="utf-8")
    elif damage == "schema":
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        manifest["schema_version"] = 99
        (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    else:
        (bundle / "tokenizer.json").unlink()
    for args in (["--self-test"], ["--question", "Q?", "--context", "C."], ["--tokenize", "hi"]):
        proc = cpp(demo, bundle, *args)
        assert proc.returncode == 2, (damage, args, proc.stdout)
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        expected = {"schema": "schema_version 99", "missing": "tokenizer.json is missing"}.get(
            damage, "was modified after export"
        )
        assert expected in lines[0]


def test_self_test_fails_beyond_tolerance(
    demo: Path, make_bundle: Callable[..., Path], copy_bundle: Callable[[Path], Path]
) -> None:
    """A golden reference off by more than the gate (checksums rewritten, so only the numbers differ) exits 1."""
    from bert_export.bundle.reader import write_manifest

    bundle = copy_bundle(make_bundle("bert", "qa"))
    golden = json.loads((bundle / "golden.json").read_text(encoding="utf-8"))
    golden["examples"][0]["outputs"]["start_logits"][1] += 1e-2
    (bundle / "golden.json").write_text(json.dumps(golden), encoding="utf-8")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("schema_version", "files")})
    proc = cpp(demo, bundle, "--self-test")
    assert proc.returncode == 1, proc.stdout
    assert "FAIL qa-0" in proc.stdout and "start_logits max abs diff" in proc.stdout
    assert "self-test: 2/3" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--text", "hello"], "this is a qa bundle"),
        (["--question", "Q?"], "needs both --question and --context"),
        (["--self-test", "--tokenize", "x"], "choose exactly one"),
        (["--bogus"], "unknown option --bogus"),
    ],
)
def test_bad_arguments_fail_cleanly(demo: Path, qa_bundle: Path, args: list[str], message: str) -> None:
    proc = cpp(demo, qa_bundle, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and message in proc.stderr


def test_mlm_text_without_mask_is_refused(demo: Path, make_bundle: Callable[..., Path]) -> None:
    proc = cpp(demo, make_bundle("bert", "mlm"), "--text", "Paris is the capital.")
    assert proc.returncode == 2 and "has no [MASK] to fill" in proc.stderr


def make_bpe_source(directory: Path, head: str = "ForMaskedLM") -> Path:
    """A ModernBERT-style model directory: a byte-level BPE tokenizer (NFC, GPT-2 split pattern,
    [MASK] with lstrip, [CLS] A [SEP] template) trained here on the built-in text, since no
    ModernBERT tokenizer is installed, and a tiny random ModernBert<head>."""
    import torch
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from bert_export.models import FAMILIES
    from bert_export.runtimes.texts import QA_PAIRS, SENTENCES

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(s, normalized=False) for s in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")]
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(SENTENCES) + [q + " " + c for q, c in QA_PAIRS], trainer)
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "mask_token": "[MASK]",
                "model_max_length": 256,
            }
        )
    )
    torch.manual_seed(0)
    model_class = getattr(transformers, f"ModernBert{head}")
    model_class(transformers.ModernBertConfig(**FAMILIES["modernbert"].tiny_config)).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def bpe_bundle(make_bundle: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle("modernbert", "mlm", model=str(make_bpe_source(tmp_path_factory.mktemp("bpe-source"))))


BPE_TEXTS = TOKENIZER_TEXTS + [
    "  multiple   spaces  ",
    "it's I'll we've THEY'RE 'twas",
    "trailing space ",
    "\n\n",
    "$$$ ... !!! ?!",
    "a\u0323\u0302 o\u0302\u0323 q\u0307\u0323",
    "\u1100\u1161\u11a8 \u1100\u1161",  # NFC: reorder, compose, Hangul
    "x [MASK]  [MASK]",
    " [MASK] ",  # [MASK] has lstrip: the space before it belongs to it
]


@pytest.mark.parametrize("text", BPE_TEXTS, ids=range(len(BPE_TEXTS)))
def test_bpe_token_ids_equal_hugging_face(demo: Path, bpe_bundle: Path, text: str) -> None:
    proc = cpp(demo, bpe_bundle, "--tokenize", text)
    assert proc.returncode == 0, proc.stderr
    assert [int(t) for t in proc.stdout.split()] == load_tokenizer(bpe_bundle)(text)["input_ids"]


def test_bpe_bundle_self_test_and_fills_match_python(demo: Path, bpe_bundle: Path) -> None:
    assert load_bundle_manifest(bpe_bundle)["tokenizer"]["kind"] == "bpe"
    proc = cpp(demo, bpe_bundle, "--self-test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-test: 3/3" in proc.stdout and "tokenizer check skipped" not in proc.stdout
    texts = ["Paris is the [MASK] of France.", "Café  [MASK]\n\n naïve 北京 [MASK]", "It's the [MASK]'ll re've 1234 é"]
    proc = cpp(demo, bpe_bundle, *[a for t in texts for a in ("--text", t)])
    assert proc.returncode == 0, proc.stderr
    assert_same(predict(bpe_bundle, texts=texts).results, [json.loads(line) for line in proc.stdout.splitlines()])


@pytest.fixture(scope="module")
def bpe_qa_bundle(make_bundle: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported without validation: the parity cases' 5-token past-window QA pair cannot hold a real
    tokenizer's question (runtimes/cases.py), so a validated ModernBERT qa export fails there."""
    source = make_bpe_source(tmp_path_factory.mktemp("bpe-qa-source"), "ForQuestionAnswering")
    return make_bundle("modernbert", "qa", model=str(source), validate=False)


@pytest.mark.parametrize("question,context", QA_REQUESTS[:3])
def test_bpe_qa_json_matches_python(demo: Path, bpe_qa_bundle: Path, question: str, context: str) -> None:
    """Pairs through byte-level BPE: the answer's character offsets equal run's."""
    bundle = bpe_qa_bundle
    proc = cpp(demo, bundle, "--question", question, "--context", context)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert_same(predict(bundle, question=question, context=context).results[0], got)
    assert context[got["start"] : got["end"]] == got["answer"]


def load_bundle_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def test_unsupported_tokenizer_is_refused_but_self_tested(
    demo: Path, bpe_bundle: Path, copy_bundle: Callable[[Path], Path]
) -> None:
    """A tokenizer the demo cannot reproduce (here a BPE with a Whitespace pre-tokenizer): text input is
    refused naming the part, and the self-test still checks the graph on golden.json's stored ids."""
    from bert_export.bundle.reader import write_manifest

    bundle = copy_bundle(bpe_bundle)
    spec = json.loads((bundle / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (bundle / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    manifest = load_bundle_manifest(bundle)
    write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("schema_version", "files")})
    proc = cpp(demo, bundle, "--self-test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "note: tokenizer check skipped" in proc.stdout
        and "not ByteLevel" in proc.stdout
        and "self-test: 3/3" in proc.stdout
    )
    for args in (["--tokenize", "hi"], ["--text", "a [MASK]."]):
        proc = cpp(demo, bundle, *args)
        assert proc.returncode == 2 and "pre-tokenizer is not ByteLevel" in proc.stderr


def test_demo_writes_no_onnxruntime_telemetry(demo: Path, qa_bundle: Path, tmp_path: Path) -> None:
    """ONNX Runtime's Linux builds keep a telemetry queue under the cache directory unless told not
    to; the demo turns it off (a user who sets ORT_DISABLE_TELEMETRY=0 gets it back: the control)."""
    runs = {}
    for name, extra in (("default", {}), ("control", {"ORT_DISABLE_TELEMETRY": "0"})):
        home = tmp_path / name
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", *CI_VARS)}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **extra)
        proc = subprocess.run(
            [str(demo), str(qa_bundle), "--self-test"], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        runs[name] = sorted(p.name for p in home.rglob("*"))
    assert runs["default"] == []
    assert "onnxruntime.db" in runs["control"] or "deviceid" in runs["control"]
