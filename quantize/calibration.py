"""Calibration inputs: real text through the bundle's tokenizer (random ids only without one).

The sentences are deliberately NOT the parity texts (runtimes/texts.py): calibrating and
judging on the same text would flatter static ranges and the fallback's choices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bert_export.models import TensorSpec

CALIBRATION_TEXTS: tuple[str, ...] = (
    "The museum reopened last spring after a two-year renovation of its east wing.",
    "Could you send me the invoice by Friday? Our accountant needs it before the audit.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Ok.",
    "The striker scored twice in the second half, sealing a 3-1 win for the visitors.",
    "Mix the flour, sugar and butter, then bake at 180 °C for about 25 minutes.",
    "Our quarterly active users grew 12% to 4.3 million, while churn fell below 2%.",
    "She moved to Montréal in 2009 and has taught linguistics at McGill ever since.",
    "Please do not leave luggage unattended anywhere in the terminal.",
    "The defendant's lawyer argued that the evidence had been obtained without a warrant.",
    "Why is the sky blue during the day but red at sunset?",
    "A gentle breeze drifted across the lake as the last boats returned to the harbour.",
    "Error 404: the page you requested could not be found on this server.",
    "Researchers observed that the enzyme's activity doubled when the temperature rose by ten degrees.",
    "I can't believe how rude the staff were; we waited an hour and nobody apologised.",
    "Tokyo, the world's most populous metropolitan area, hosted the Olympic Games in 1964 and 2021.",
    "Update your password every ninety days and never reuse it across sites.",
    "The violinist's performance of the concerto drew a standing ovation lasting several minutes.",
    "Interest rates were left unchanged, although two members of the board voted for a cut.",
    "Honestly, the sequel is better than the original in almost every way.",
    "Glaciers in the Alps have lost roughly half of their volume since 1900.",
    "The new compiler release adds incremental builds, faster linking and better diagnostics.",
    "Where did you put the keys to the garage?",
    "Municipal elections will take place on the first Sunday of October, with results expected by midnight.",
)


def calibration_feeds(
    inputs: tuple[TensorSpec, ...],
    tokenizer: Any | None,
    *,
    samples: int,
    max_seq: int,
    vocab_size: int,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """``samples`` single-sequence feeds (batch 1, no padding, so ranges see only real tokens)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for i in range(samples):
        text = CALIBRATION_TEXTS[i % len(CALIBRATION_TEXTS)]
        if i >= len(CALIBRATION_TEXTS):  # more samples than texts: join neighbours into longer inputs
            text = " ".join(
                CALIBRATION_TEXTS[(i + k) % len(CALIBRATION_TEXTS)] for k in range(1 + i // len(CALIBRATION_TEXTS))
            )
        if tokenizer is not None:
            enc = tokenizer(text, truncation=True, max_length=max_seq, return_token_type_ids=True)
            ids = np.asarray([enc["input_ids"]], dtype=np.int64)
            types = np.asarray([enc.get("token_type_ids") or [0] * ids.shape[1]], dtype=np.int64)
        else:
            n = min(max_seq, 2 + len(text.split()))
            ids = rng.integers(5, max(6, vocab_size), (1, n), dtype=np.int64)
            types = np.zeros_like(ids)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}
        feeds.append({s.name: feed[s.name] for s in inputs})
    return feeds


class FeedReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of feeds (re-iterable)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)
