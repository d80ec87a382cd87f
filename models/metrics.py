"""Task metrics against gold labels, as the task's community computes them.

- seq-cls: accuracy and macro-F1 (scikit-learn);
- token-cls: entity-level F1 over IOB2 spans, as seqeval's default (conlleval) mode computes it;
- qa: exact match and token F1 over answer strings with the official SQuAD v1.1 normalisation;
- mlm: top-1 / top-5 accuracy of the original token at masked positions;
- embed: Spearman correlation (scipy) of cosine similarity with the gold score.

Every metric is a fraction (Spearman: -1..1); reports show it in points (x100), and the drop
gate compares points.

Hand-written here, and why: the SQuAD normalisation and F1 are the ten lines of the official
evaluation script (``evaluate``'s squad metric downloads that script at run time, which an
offline CI cannot); the entity spans follow seqeval's conlleval rules, but seqeval itself has had
no release since 2020, so it is not a runtime dependency (tests cross-check against it).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

# --- seq-cls -------------------------------------------------------------------------------


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(list(gold), list(pred)))


def macro_f1(gold: Sequence[int], pred: Sequence[int], labels: Sequence[int]) -> float:
    """Macro-F1 over the labels present in gold or predictions (scikit-learn's definition)."""
    from sklearn.metrics import f1_score

    present = sorted(set(gold) | set(pred))
    return float(
        f1_score(
            list(gold),
            list(pred),
            labels=[l for l in labels if l in present] or present,  # noqa: E741
            average="macro",
            zero_division=0,
        )
    )


# --- token-cls -----------------------------------------------------------------------------


def _split(tag: str) -> tuple[str, str]:
    """``B-PER`` -> (B, PER); ``O`` -> (O, ""); a bare ``PER`` is treated as ``I-PER`` (conlleval)."""
    if tag in ("O", "", "-"):
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BIESLU":
        return tag[0], tag[2:]
    return "I", tag


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) entity spans of one sentence, by conlleval's start/end rules."""
    spans: set[tuple[str, int, int]] = set()
    start, prev_p, prev_t = None, "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        p, t = _split(tag)
        ends = prev_p in "ESLU" or (prev_p != "O" and (p in "BSU" or p == "O" or t != prev_t))
        if start is not None and ends:
            spans.add((prev_t, start, i - 1))
            start = None
        begins = p in "BSU" or (p != "O" and (prev_p in "OESLU" or t != prev_t))
        if begins:
            start = i
        prev_p, prev_t = p, t
    return spans


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over entity spans of every sentence (seqeval's default)."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        gs, ps = entity_spans(g), entity_spans(p)
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- qa (official SQuAD v1.1 evaluation) ----------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the SQuAD script's)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:  # SQuAD 2.0: no-answer matches only no-answer
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean over questions of the best EM / F1 against any gold answer."""
    em = [max((exact_match(p, a) for a in (golds or [""])), default=0.0) for p, golds in zip(predictions, answers)]
    f1 = [max((token_f1(p, a) for a in (golds or [""])), default=0.0) for p, golds in zip(predictions, answers)]
    return {"exact_match": float(np.mean(em)) if em else 0.0, "f1": float(np.mean(f1)) if f1 else 0.0}


# --- mlm, embed -----------------------------------------------------------------------------


def topk_accuracy(gold: np.ndarray, ranked: np.ndarray) -> dict[str, float]:
    """``gold`` [n] token ids, ``ranked`` [n, >=5] candidate ids best first."""
    if gold.size == 0:
        return {"top1_accuracy": 0.0, "top5_accuracy": 0.0}
    return {
        "top1_accuracy": float((ranked[:, 0] == gold).mean()),
        "top5_accuracy": float((ranked[:, :5] == gold[:, None]).any(1).mean()),
    }


def spearman(pred: Sequence[float], gold: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(pred) < 2:
        return 0.0
    rho = spearmanr(pred, gold).statistic
    return float(rho) if np.isfinite(rho) else 0.0


# --- rerank --------------------------------------------------------------------------------


def _ranked(scores: Sequence[float]) -> list[int]:
    """Indices by score, best first; ties keep input order (stable), as every consumer sorts."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def mrr_at_k(groups: Sequence[tuple[Sequence[float], Sequence[float]]], k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant passage (gold > 0) in the top ``k``, over (scores, gold) groups.

    Queries without a relevant passage are left out (trec_eval's and BEIR's convention): they have no rank to find.
    """
    rr = []
    for scores, gold in groups:
        if not any(g > 0 for g in gold):
            continue
        rank = next((r for r, i in enumerate(_ranked(scores)[:k], 1) if gold[i] > 0), None)
        rr.append(1.0 / rank if rank else 0.0)
    return float(np.mean(rr)) if rr else 0.0


def ndcg_at_k(groups: Sequence[tuple[Sequence[float], Sequence[float]]], k: int = 10) -> float:
    """NDCG@k with graded gain ``2**rel - 1`` and ``log2(rank + 1)`` discount (trec_eval's ndcg_cut), over groups
    with at least one relevant passage."""
    out = []
    for scores, gold in groups:
        ideal = sorted((float(g) for g in gold), reverse=True)[:k]
        idcg = sum((2.0**g - 1) / np.log2(r + 2) for r, g in enumerate(ideal))
        if idcg <= 0:
            continue
        dcg = sum((2.0 ** float(gold[i]) - 1) / np.log2(r + 2) for r, i in enumerate(_ranked(scores)[:k]))
        out.append(dcg / idcg)
    return float(np.mean(out)) if out else 0.0


def order_agreement(ref: Sequence[float], got: Sequence[float]) -> tuple[int, int]:
    """(concordant, compared) passage pairs: pairs the reference orders strictly, ordered the same way by ``got``.

    ``concordant / compared`` is Kendall's tau-a rescaled to 0..1 (tau = 2 * rate - 1) over the strictly
    ordered pairs; a tie in ``got`` where the reference has none counts as a disagreement.
    """
    r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    dr, dg = np.sign(r[:, None] - r[None, :]), np.sign(g[:, None] - g[None, :])
    upper = np.triu(np.ones(dr.shape, dtype=bool), 1) & (dr != 0)
    return int((dr == dg)[upper].sum()), int(upper.sum())
