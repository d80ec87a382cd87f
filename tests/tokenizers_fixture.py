"""Tokenizers trained inside the tests, in Hugging Face layout, for the families whose real tokenizers
cannot be installed offline (RoBERTa's byte-level BPE, XLM-R's SentencePiece Unigram).

No hub: each function trains a small tokenizer with the ``tokenizers`` library on ``CORPUS`` (a fixed
multilingual text: Latin, Cyrillic, CJK, Arabic, emoji) and writes ``tokenizer.json`` plus
``tokenizer_config.json`` and ``special_tokens_map.json`` into ``directory``, laid out and post-processed
as the published checkpoints are (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>`` last), so
``AutoTokenizer.from_pretrained(directory)`` loads them and the C++ demo can be compared on them.
Training is deterministic for a given corpus and vocabulary size.

API:
    train_bpe(directory, vocab_size=600) -> Path        # RoBERTa-style byte-level BPE; returns tokenizer.json
    train_unigram(directory, vocab_size=500) -> Path    # XLM-R-style Unigram + Metaspace; returns tokenizer.json
    CORPUS: tuple[str, ...]                             # the training text
    MULTILINGUAL: tuple[str, ...]                       # held-out sentences for agreement tests (incl. unseen chars)
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CORPUS", "MULTILINGUAL", "train_bpe", "train_unigram"]

CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog while the river runs quietly past the old mill.",
    "Machine learning models are exported to ONNX so that they run the same way on every machine.",
    "A tokenizer splits text into pieces; the model only ever sees the ids of those pieces.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Le renard brun rapide saute par-dessus le chien paresseux près de la rivière.",
    "Der schnelle braune Fuchs springt über den faulen Hund, während es draußen regnet.",
    "El rápido zorro marrón salta sobre el perro perezoso en la orilla del río.",
    "Быстрая коричневая лиса прыгает через ленивую собаку у старой мельницы.",
    "Москва — столица России, а Киев — столица Украины.",
    "Модели машинного обучения экспортируются в формат ONNX для быстрого вывода.",
    "敏捷的棕色狐狸跳过了懒狗，河水在老磨坊旁静静流淌。",
    "機械学習モデルはどのマシンでも同じように動くようにエクスポートされます。",
    "東京は日本の首都であり、北京は中国の首都です。",
    "빠른 갈색 여우가 게으른 개를 뛰어넘습니다.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول بجانب النهر.",
    "القاهرة هي عاصمة مصر، والرياض هي عاصمة المملكة العربية السعودية.",
    "نماذج التعلم الآلي تعمل بنفس الطريقة على كل جهاز.",
    "Emoji are text too: 😀 🎉 👍🏽 ❤️ 🚀 and flags like 🇫🇷 🇯🇵 travel through tokenizers.",
    "Numbers and symbols: 3.14159, 2,718, 100%, $42.00, €17, #hashtag, @user, e-mail@example.com.",
    "Ünïcödé àccents, ligatures ﬁ ﬂ, full-width ＡＢＣ１２３ and the ellipsis … are normalised.",
)

MULTILINGUAL: tuple[str, ...] = (
    "The lazy dog sleeps by the river, and the fox runs to Paris.",
    "Лиса и собака живут у реки в Москве.",
    "狐狸和狗住在河边。東京の首都です。",
    "الكلب والثعلب يعيشان بجانب النهر.",
    "Emoji 😀🎉 mixed with text, 👍🏽 and ❤️ 🚀!",
    "Full-width ＡＢＣ and ligature ﬁ, spaces   many   here, and unseen: Ωμέγα ✓ 🦜 ऋषि.",
)

_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_MASK = "<mask>"


def _write_layout(directory: Path, tokenizer: object, tokenizer_class: str) -> Path:
    """tokenizer.json plus the small JSON files transformers reads beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))  # type: ignore[attr-defined]
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": _MASK,
    }
    config = {"tokenizer_class": tokenizer_class, "model_max_length": 512, **specials}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return path


def train_bpe(directory: Path | str, vocab_size: int = 600) -> Path:
    """A RoBERTa-style byte-level BPE: ByteLevel pre-tokenizer (no prefix space) and decoder,
    ``RobertaProcessing`` (``<s> A </s>`` / ``<s> A </s></s> B </s>``), every byte in the alphabet."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens([AddedToken(_MASK, lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=True, add_prefix_space=False
    )
    return _write_layout(Path(directory), tok, "RobertaTokenizer")


def train_unigram(directory: Path | str, vocab_size: int = 500) -> Path:
    """An XLM-R-style Unigram (as transformers' SpmConverter writes it): normaliser NFKC (standing in for
    the SentencePiece ``nmt_nfkc`` Precompiled charsmap, which cannot be built without sentencepiece),
    right Strip and runs of spaces to one ``▁``; Metaspace pre-tokenizer (``▁``, prepend always) and
    decoder; ``<s> A </s>`` / ``<s> A </s> </s> B </s>``; ``<unk>`` is id 3, ``<mask>`` the last id."""
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
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIALS),
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens([AddedToken(_MASK, lstrip=True, special=True)])
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return _write_layout(Path(directory), tok, "XLMRobertaTokenizer")
