"""The C++ demo's tokenizers (examples/cpp/src/tokenizer*.cpp) against Hugging Face tokenizers.

Tokenizers of the three families are trained inside the test on a fixed multilingual corpus (no hub):
WordPiece (BERT), byte-level BPE with RoBERTa's pre-tokenizer and post-processor, and Unigram with
XLM-R's pipeline (NFKC, Strip, Replace, WhitespaceSplit + Metaspace, `<s> A </s></s> B </s>`). Each is
saved as tokenizer.json and read by ``bx_tokenize`` (examples/cpp/src/tokenize_check.cpp: the demo's
tokenizers without ONNX Runtime), one process per tokenizer for every request; its ids, type ids and
offsets must equal Python's on Latin with accents, Cyrillic, CJK, Arabic, emoji and whitespace
oddities, single texts and pairs, with and without truncation (``longest_first``). Malformed
tokenizer.json files must be one ``error:`` line (exit 2), never a crash.

Cost: the build is shared with tests/test_cpp.py (~1 s when built); training three tiny tokenizers
takes about a second.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import build_cpp_target

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "examples" / "cpp"

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Naïve café owners in São Paulo serve crème brûlée.",
    "Zürich, Kraków and Ångström: résumé, mañana, façade, coöperate, déjà vu, El Niño.",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир! Ёлка и щука.",
    "北京欢迎你。東京は日本の首都です。我们今天去公园散步，天气很好。한국어 텍스트도 있습니다.",
    "مرحبا بالعالم. اللغة العربية جميلة جدا، وهي تكتب من اليمين إلى اليسار.",
    "Emoji time 😀🥰👍🏽 ❤️ 🇫🇷 family 👨‍👩‍👧 and symbols ★ ✓ → ∞ ½ x²",
    "Tabs\tand\nnewlines\r\nand  double  spaces and\u00a0nbsp\u3000ideographic space.",
    "Numbers 1,234.56 and 7e-3 and 3:30 p.m. on 3/14/2024; prices $89.5bn (8%).",
    "Ελληνικά γράμματα και हिन्दी पाठ, עברית, ไทย, Tiếng Việt có dấu.",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ ﬁ ligature ① ℃ ㎏ and combining e\u0301 a\u0308.",
    "Don't stop believing: it's what we'd do, they're sure, you've seen, I'm here, we'll go.",
] * 4

TEXTS = [
    "",
    "   ",
    "Hello, world!",
    "Héllo WÖRLD naïve café résumé Ångström mañana São Paulo Zürich Kraków",
    "Привет, как дела? Съешь ещё этих мягких французских булок.",
    "北京欢迎你 and 東京 and 한국어 텍스트 and 天気がいい",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "emoji 😀🥰 ok 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 end",
    "  leading and trailing spaces   ",
    "tab\there\nnewline\r\nzero\u200bwidth\u00a0nbsp\u3000ideographic  double   triple",
    "control\x07\x1fchars\ufffd\u0085 and a soft\u00adhyphen",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ x²³ ½ ① Ⅻ ℃ ㎏ ﬁne",
    "e\u0301 combining a\u0308 and o\u0302\u0323 Å",
    'He said, "Don\'t forget the state-of-the-art benchmarks," and left.',
    "unseen letters: ꙮ ᚠᚢᚦ ∮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⅋",
    "special tokens in text: <mask> and <s> and </s> and [MASK] [CLS]",
    "word " * 90,
]

PAIRS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("Кто написал роман?", "Роман написал Лев Толстой в 1869 году."),
    ("東京はどこ？", "東京は日本の首都です。"),
    ("", "empty first text"),
    ("emoji 😀", ""),
    ("مرحبا", "Hello there, naïve café 👍🏽"),
]
MAX_LENS = [0, 8, 13]


def train_wordpiece() -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.decoder = decoders.WordPiece()
    return tok


def train_roberta_bpe() -> Any:
    """RoBERTa's tokenizer.json: no normalizer, ByteLevel pre-tokenizer, RobertaProcessing."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)]
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_xlmr_unigram() -> Any:
    """XLM-R's pipeline: NFKC (in place of its precompiled SentencePiece charsmap), Strip + Replace as
    transformers' converter writes them, WhitespaceSplit + Metaspace, `<s> A </s></s> B </s>`."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    specials = ["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)]
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def with_byte_fallback(tok: Any) -> Any:
    """The Unigram with byte fallback (Llama/Gemma-style SentencePiece): <0x00>..<0xFF> pieces appended
    and model.byte_fallback set (the trainer has no such option), reloaded from its JSON."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    low = min(score for _, score in spec["model"]["vocab"]) - 1.0
    spec["model"]["vocab"] += [[f"<0x{b:02X}>", low] for b in range(256)]
    spec["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


TRAINERS = {
    "wordpiece": train_wordpiece,
    "roberta-bpe": train_roberta_bpe,
    "xlmr-unigram": train_xlmr_unigram,
    "unigram-byte-fallback": lambda: with_byte_fallback(train_xlmr_unigram()),
}


@pytest.fixture(scope="module")
def bx_tokenize() -> Path:
    """examples/cpp/build.sh's bx_tokenize target (idempotent, ~1 s when built)."""
    return build_cpp_target("bx_tokenize", "the C++ tokenizers")


def run_cpp(binary: Path, spec: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run([str(binary), str(spec)], input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(requests)
    return answers


def requests() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for max_len in MAX_LENS:
        out += [{"text": t, "max_len": max_len} for t in TEXTS]
        out += [{"text": a, "pair": b, "max_len": max_len} for a, b in PAIRS]
    return out


def python_encoding(tok: Any, request: dict[str, Any]) -> dict[str, Any]:
    if request["max_len"]:
        tok.enable_truncation(request["max_len"], strategy="longest_first")
    else:
        tok.no_truncation()
    enc = tok.encode(request["text"], request.get("pair"))
    return {"ids": enc.ids, "type_ids": enc.type_ids, "offsets": [list(o) for o in enc.offsets]}


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_cpp_ids_equal_hugging_face(bx_tokenize: Path, tmp_path: Path, kind: str) -> None:
    tok = TRAINERS[kind]()
    spec = tmp_path / "tokenizer.json"
    tok.save(str(spec))
    reqs = requests()
    got = run_cpp(bx_tokenize, spec, reqs)
    mismatches = []
    for req, cc in zip(reqs, got, strict=True):
        py = python_encoding(tok, req)
        if "error" not in cc and cc["ids"] == py["ids"]:
            # A bare word-start marker "▁" has no characters of its own: Hugging Face anchors the one a
            # Metaspace prepends inconsistently (before a leading-space run, on a word's first letter).
            for i, token_id in enumerate(py["ids"]):
                if tok.id_to_token(token_id) == "▁":
                    cc["offsets"][i] = py["offsets"][i]
        if "error" in cc or cc != py:
            mismatches.append(f"{req!r}:\n  python {py}\n  c++    {cc}")
    assert not mismatches, f"{len(mismatches)}/{len(reqs)} differ:\n" + "\n".join(mismatches[:6])


def darts_charsmap(table: dict[str, str]) -> bytes:
    """A SentencePiece precompiled charsmap for `table` (key -> replacement): the darts-clone
    double-array layout Hugging Face's spm_precompiled reads (u32 trie size, units, NUL-terminated
    replacements). Each node's children get their own 256-unit block, so base ^ label == base + label."""
    blob = b""
    values: dict[bytes, int] = {}
    for key, rep in table.items():
        values[key.encode()] = len(blob)
        blob += rep.encode() + b"\0"
    trie: dict[bytes, set[int]] = {}
    for key in values:
        for i in range(len(key) + 1):
            trie.setdefault(key[:i], set())
            if i < len(key):
                trie[key[:i]].add(key[i])
    units: dict[int, int] = {}
    position = {b"": 0}
    next_block = 256
    for prefix in sorted(trie, key=len):
        children = trie[prefix]
        here = position[prefix]
        base = next_block
        next_block += 256
        units[here] = units.get(here, 0) | ((here ^ base) << 10)
        if prefix in values:
            units[base] = values[prefix] | (1 << 31)
        for c in children:
            child = prefix + bytes([c])
            position[child] = base ^ c
            units[base ^ c] = c | ((1 << 8) if child in values else 0)
    array = [units.get(i, 0) for i in range(next_block)]
    return struct.pack("<I", 4 * len(array)) + struct.pack(f"<{len(array)}I", *array) + blob


# A few of nmt_nfkc's entries, plus one multi-code-point key (a grapheme looked up whole).
CHARSMAP = {
    "Ａ": "A",
    "Ｂ": "B",
    "ｆ": "f",
    "ｕ": "u",
    "ﬁ": "fi",
    "①": "1",
    "\u3000": " ",
    "\u00a0": " ",
    "e\u0301": "é",
    "℃": "°C",
}


def test_precompiled_charsmap_matches_hugging_face(bx_tokenize: Path, tmp_path: Path) -> None:
    """XLM-R's real normalizer is SentencePiece's precompiled charsmap: the same Unigram with a
    Precompiled normalizer built here, including Hugging Face's quirks (a grapheme under 6 bytes is
    looked up whole and its shortest matching prefix replaces all of it: "Ａ\u0301" becomes "A")."""
    from tokenizers import Tokenizer, normalizers

    tok = train_xlmr_unigram()
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(darts_charsmap(CHARSMAP)), normalizers.Strip(left=False, right=True)]
    )
    spec = tmp_path / "tokenizer.json"
    tok.save(str(spec))
    tok = Tokenizer.from_file(str(spec))
    texts = [*TEXTS, "ＡＢ ｆｕll ﬁne ① ℃ e\u0301 Ａ\u0301 x\u3000y\u00a0z", "Ａ\u0301\u0302 e\u0301\u0301 ｆ"]
    reqs = [{"text": t, "max_len": 0} for t in texts]
    got = run_cpp(bx_tokenize, spec, reqs)
    assert tok.normalizer.normalize_str("Ａ\u0301 ①") == "A 1"  # the quirk is real, and exercised
    for req, cc in zip(reqs, got, strict=True):
        assert cc.get("ids") == python_encoding(tok, req)["ids"], req


def malformed_specs() -> dict[str, Any]:
    """tokenizer.json variants a hostile or broken bundle could carry, each refused in one line."""
    bpe = json.loads(train_roberta_bpe().to_str())
    uni = json.loads(train_xlmr_unigram().to_str())
    out: dict[str, Any] = {}
    out["bad-merge"] = {**bpe, "model": {**bpe["model"], "merges": [["Ġ", "no-such-token"]]}}
    out["merge-not-pair"] = {**bpe, "model": {**bpe["model"], "merges": ["a b c"]}}
    out["unigram-piece-not-pair"] = {**uni, "model": {**uni["model"], "vocab": [["<s>", 0.0, 1], "x"]}}
    out["unigram-score-string"] = {**uni, "model": {**uni["model"], "vocab": [["<s>", "high"]]}}
    out["unigram-unk-out-of-range"] = {**uni, "model": {**uni["model"], "unk_id": 10**9}}
    out["unigram-empty-vocab"] = {**uni, "model": {**uni["model"], "vocab": []}}
    # Past the reader's limits (a 2^24-entry vocabulary is refused the same way, but costs 200 MB of JSON).
    out["huge-piece"] = {**uni, "model": {**uni["model"], "vocab": [["x" * 5000, -1.0]]}}
    out["huge-id"] = {**bpe, "model": {**bpe["model"], "vocab": {**bpe["model"]["vocab"], "Ġ": 1 << 40}}}
    out["bad-charsmap"] = {**uni, "normalizer": {"type": "Precompiled", "precompiled_charsmap": "AAAA/w=="}}
    out["charsmap-past-end"] = {
        **uni,
        "normalizer": {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(b"\xff\xff\xff\x7f").decode()},
    }
    out["regex-replace"] = {
        **uni,
        "normalizer": {"type": "Replace", "pattern": {"Regex": "(a|b)*"}, "content": "x"},
    }
    out["unknown-model"] = {**uni, "model": {"type": "WordLevel", "vocab": {}}}
    out["template-id-missing"] = {
        **uni,
        "post_processor": {
            **uni["post_processor"],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [99999], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
            },
        },
    }
    return out


def test_malformed_tokenizer_json_is_one_error_line(bx_tokenize: Path, tmp_path: Path) -> None:
    cases = malformed_specs()
    raw = {
        "invalid-utf8": b'{"model": {"type": "Unigram", "vocab": [["\xff\xfe", 0.0]]}}',
        "truncated": b'{"model": {"type": "BPE", "vocab": {',
        "not-an-object": b"[1, 2, 3]",
    }
    for name, spec in [*((n, json.dumps(s).encode()) for n, s in cases.items()), *raw.items()]:
        path = tmp_path / f"{name}.json"
        path.write_bytes(spec)
        proc = subprocess.run([str(bx_tokenize), str(path)], input="", capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr[-2000:])
        assert "json.exception" not in lines[0], (name, lines[0])  # every field type-checked, no library message
