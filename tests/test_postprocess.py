"""Task post-processing on hand-made logits: span rules, aggregation, top-k, pooling, JSON shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bert_export.runtimes import postprocess as pp

NEG = -1e4


def test_best_span_prefers_valid_over_higher_invalid() -> None:
    # The argmaxes alone would give end (1) < start (3), and padding/question carry huge logits.
    start = np.array([50.0, 0.0, 1.0, 9.0, 0.0, 99.0])
    end = np.array([50.0, 8.0, 0.0, 2.0, 7.0, 99.0])
    valid = np.array([False, True, True, True, True, False])
    i, j, score = pp.best_span(start, end, valid)
    assert valid[i] and valid[j] and i <= j
    assert (i, j) == (3, 4)
    assert 0.0 < score <= 1.0


def test_best_span_length_limit() -> None:
    n = 40
    start, end = np.full(n, NEG), np.full(n, NEG)
    start[0], end[n - 1] = 10.0, 10.0  # the best pair is 40 tokens long
    end[2] = 5.0
    i, j, _ = pp.best_span(start, end, np.ones(n, bool), max_answer_tokens=30)
    assert (i, j) == (0, 2)
    assert pp.best_span(start, end, np.zeros(n, bool)) is None


def test_qa_result_char_offsets() -> None:
    context = "Paris is the capital of France."
    offsets = [(0, 0), (0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (30, 31), (0, 0)]
    ctx = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    start = np.array([0, 9, 0, 0, 0, 0, 0, 0, 0.0])
    end = np.array([0, 9, 0, 0, 0, 0, 0, 0, 0.0])
    r = pp.qa_result(start, end, ctx, offsets, context)
    assert set(r) == {"answer", "score", "start", "end"}
    assert r["answer"] == "Paris" == context[r["start"] : r["end"]]
    assert pp.qa_result(start, end, np.zeros(9, bool), offsets, context) == {
        "answer": "",
        "score": 0.0,
        "start": 0,
        "end": 0,
    }


def test_seq_cls() -> None:
    r = pp.seq_cls_result(np.array([0.0, 2.0, 1.0]), {"0": "neg", "1": "pos", "2": "neutral"})
    assert r["label"] == "pos" and r["score"] == pytest.approx(np.exp(2) / (1 + np.exp(1) + np.exp(2)), abs=1e-6)
    assert pp.seq_cls_result(np.array([0.0]), {})["score"] == pytest.approx(0.5)
    assert pp.seq_cls_result(np.array([1.0, 0.0]), {})["label"] == "LABEL_0"


def test_token_cls_words_and_simple_aggregation() -> None:
    text = "Marie Curie visited Warsaw"
    # tokens: [CLS] marie cu ##rie visited warsaw [SEP] [PAD]
    offsets = [(0, 0), (0, 5), (6, 8), (8, 11), (12, 19), (20, 26), (0, 0), (0, 0)]
    word_ids = [None, 0, 1, 1, 2, 3, None, None]
    labels = {"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC"}
    picks = [0, 1, 2, 0, 0, 3, 1, 1]  # "##rie" says O: the word's first sub-token decides
    logits = np.full((8, 4), -5.0)
    logits[np.arange(8), picks] = 5.0
    r = pp.token_cls_result(logits, word_ids, offsets, text, labels)
    assert [(e["label"], e["text"]) for e in r["entities"]] == [("PER", "Marie Curie"), ("LOC", "Warsaw")]
    for e in r["entities"]:
        assert text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1
        assert set(e) == {"label", "text", "score", "start", "end"}
    # B- always starts a new entity; unprefixed equal labels merge (and only "O" is dropped).
    logits2 = np.full((8, 4), -5.0)
    logits2[np.arange(8), [0, 1, 1, 0, 0, 1, 0, 0]] = 5.0  # words: B-PER, B-PER, O, B-PER
    assert [e["text"] for e in pp.token_cls_result(logits2, word_ids, offsets, text, labels)["entities"]] == [
        "Marie",
        "Curie",
        "Warsaw",
    ]
    r3 = pp.token_cls_result(logits2, word_ids, offsets, text, {"0": "X", "1": "Y"})
    assert [(e["label"], e["text"]) for e in r3["entities"]] == [
        ("Y", "Marie Curie"),
        ("X", "visited"),
        ("Y", "Warsaw"),
    ]


def test_mlm_top_k() -> None:
    logits = np.zeros((4, 10))
    logits[2] = np.arange(10.0)
    r = pp.mlm_result(logits, [2], [(0, 0), (0, 5), (6, 12), (0, 0)], lambda i: f" tok{i}", top_k=3)
    (fill,) = r["fills"]
    assert (fill["start"], fill["end"]) == (6, 12)
    assert [c["id"] for c in fill["candidates"]] == [9, 8, 7]
    assert fill["candidates"][0]["token"] == "tok9"
    scores = [c["score"] for c in fill["candidates"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", ["cls", "mean", "max", "mean_sqrt_len"])
def test_pool_ignores_padding(mode: str) -> None:
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    h2 = h.copy()
    h2[0, 3:] = 1e6  # garbage at padding must not move row 0
    np.testing.assert_allclose(pp.pool(h, mask, mode), pp.pool(h2, mask, mode))
    v = pp.pool(h, mask, mode, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-12)


def test_embed_json_shape() -> None:
    r = pp.embed_result(np.ones((2, 3, 4)), np.array([[1, 1, 0], [1, 0, 0]]), {"mode": "mean", "normalize": True})
    assert list(r) == ["embeddings"] and np.array(r["embeddings"]).shape == (2, 4)
    json.dumps(r)
