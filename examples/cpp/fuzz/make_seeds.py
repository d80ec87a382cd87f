"""Write the fuzz target's seed tokenizers (seed_tokenizers.h) and seed corpus (corpus/).

Run from anywhere with a Python that has `tokenizers`:  python examples/cpp/fuzz/make_seeds.py
The outputs are committed; rerun only to change them. Each corpus file starts with the mode byte
of fuzz_target.cpp: 0 manifest.json, 1 tokenizer.json NUL text, 2 text through the seed tokenizers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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

HERE = Path(__file__).resolve().parent
TEXT = [
    "Paris is the capital and most populous city of France.",
    "Héllo WÖRLD naïve café résumé Ångström, 1,234.56 + 7e-3!",
    "it's I'll we've THEY'RE 'twas; 北京欢迎你 and 東京 😀",
]
TEXTS = [
    "",
    " ",
    "Hello, world!",
    "Héllo WÖRLD naïve café",
    "北京欢迎你 and 한국어",
    "tab\there\nnewline\r\n",
    "control\x07\x1fchars\ufffd\u0085 soft\u00adhyphen",
    "emoji 😀🥰",
    "[MASK] is [CLS] weird[SEP] [UNK]",
    "e\u0301 a\u0323\u0302 o\u0302\u0323 \u1100\u1161\u11a8",
    "it's I'll we've  multiple   spaces  ",
    "x [MASK]  [MASK]",
    "a" * 300,
    "\xff\xfe invalid?",
]


def wordpiece() -> Tokenizer:
    vocab = {
        t: i
        for i, t in enumerate(
            [
                "[PAD]",
                "[UNK]",
                "[CLS]",
                "[SEP]",
                "[MASK]",
                "a",
                "b",
                "c",
                "e",
                "h",
                "l",
                "o",
                "p",
                "r",
                "s",
                "t",
                "w",
                "##a",
                "##e",
                "##l",
                "##o",
                "##s",
                "##t",
                "the",
                "is",
                "hello",
                "world",
                "paris",
                "cafe",
                ",",
                ".",
                "!",
                "'",
                "北",
                "京",
                "1",
                "2",
                "3",
            ]
        )
    }
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT * 20, trainer)
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    return tok


def unigram() -> Tokenizer:
    """XLM-R's pipeline (NFKC standing in for its charsmap) with byte fallback: <0x00>..<0xFF> pieces."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    specials = ["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)]
    tok.train_from_iterator(
        TEXT * 20,
        trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>", show_progress=False),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    spec = json.loads(tok.to_str())
    spec["model"]["vocab"] += [[f"<0x{b:02X}>", -20.0] for b in range(256)]
    spec["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


def manifest() -> dict:
    digest = hashlib.sha256(b"").hexdigest()
    return {
        "schema_version": 1,
        "family": "bert",
        "task": "qa",
        "precision": "fp32",
        "max_sequence_length": 128,
        "inputs": [
            {"name": "input_ids", "dtype": "int64"},
            {"name": "attention_mask", "dtype": "int64"},
            {"name": "token_type_ids", "dtype": "int64"},
        ],
        "outputs": [{"name": "start_logits"}, {"name": "end_logits"}],
        "graph": {"file": "onnx/model.onnx", "files": ["onnx/model.onnx"]},
        "tokenizer": {"kind": "wordpiece", "do_lower_case": True},
        "special_tokens": {"cls": 101, "sep": 102, "pad": 0, "mask": 103},
        "labels": {"id2label": {"0": "NEG", "1": "POS"}},
        "pooling": {"mode": "mean", "normalize": True},
        "files": {
            name: {"bytes": 0, "sha256": digest} for name in ("onnx/model.onnx", "tokenizer.json", "golden.json")
        },
    }


def main() -> None:
    wp, bp, un = wordpiece().to_str(), bpe().to_str(), unigram().to_str()
    header = HERE / "seed_tokenizers.h"
    header.write_text(
        "// Generated by make_seeds.py: the fixed tokenizers mode 2 of fuzz_target.cpp encodes text with.\n"
        "#pragma once\n"
        f'static const char kSeedWordPiece[] = R"SEED({wp})SEED";\n'
        f'static const char kSeedBpe[] = R"SEED({bp})SEED";\n'
        f'static const char kSeedUnigram[] = R"SEED({un})SEED";\n',
        encoding="utf-8",
    )
    corpus = HERE / "corpus"
    corpus.mkdir(exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    seeds: list[bytes] = [b"\x00" + json.dumps(manifest()).encode()]
    m = manifest()
    m["task"], m["outputs"], m["graph"]["file"] = "mlm", [{"name": "logits"}], {"fp32": "onnx/model.onnx"}
    seeds.append(b"\x00" + json.dumps(m).encode())
    for spec in (wp, bp, un):
        for text in TEXTS[:6]:
            seeds.append(b"\x01" + spec.encode() + b"\x00" + text.encode("utf-8", "surrogateescape"))
    seeds += [b"\x02" + t.encode("utf-8", "surrogateescape") for t in TEXTS]
    seeds.append(b"\x03" + external_data_graph())
    for data in seeds:
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"wrote {header.name} and {len(seeds)} seeds to {corpus}")


def external_data_graph() -> bytes:
    """Mode 3's seed: a graph whose tensors keep data outside it (dense, sparse, in an If branch)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    dense = TensorProto(name="w", data_type=1, dims=[4], data_location=TensorProto.EXTERNAL)
    dense.external_data.add(key="location", value="model.onnx_data")
    sparse = helper.make_sparse_tensor(dense, numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), [4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    branch = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "b", [], [out], sparse_initializer=[sparse]
    )
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [cond], [out], initializer=[dense])
    return helper.make_model(graph).SerializeToString()


if __name__ == "__main__":
    main()
