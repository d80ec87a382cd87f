"""INT8 modes and the bounded fallback: the search (no exports), the local-error ranking, and the
per-family mode choice recorded in the manifest (tiny exports). About 30 s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.models import FAMILIES
from bert_export.quantize.fallback import accuracy_fallback, fake_quant_rows, fake_quant_tensor, local_errors
from bert_export.quantize.pipeline import OptimizeOptions, resolve_int8_mode


class Report:
    def __init__(self, passed: bool) -> None:
        self.passed, self.failures = passed, [] if passed else ["cosine"]
        self.summary = {"cosine_mean": 0.999 if passed else 0.99, "cosine_min": 0.996 if passed else 0.9}


def search(n: int, needed: set[str], scores: dict[str, float], budget: float = 60.0, cost: float = 0.0) -> Any:
    names = [f"n{i}" for i in range(n)]
    built: list[frozenset[str]] = []

    def build(keep: frozenset[str]) -> Path:
        built.append(keep)
        time.sleep(cost)
        return Path("x")

    result = accuracy_fallback(
        names,
        build,
        lambda p: Report(needed <= built[-1]),
        None,
        [],
        rank=lambda p: scores,
        budget_s=budget,
        progress=False,
    )
    return result, built


def test_search_finds_the_needed_nodes_in_few_gate_runs() -> None:
    """Ranked right: doubling + bisection, then the shrinking pass: O(log N + k) gate runs, not one per node."""
    scores = {f"n{i}": 1.0 / (i + 1) for i in range(64)}
    result, built = search(64, {"n0", "n1", "n2", "n3", "n4"}, scores)
    assert result.passed and sorted(result.kept) == ["n0", "n1", "n2", "n3", "n4"]
    assert result.evaluations <= 16 and built[-1] == frozenset(result.kept)  # the chosen graph is what is on disk


def test_search_recovers_from_a_misranked_node() -> None:
    """The one node that matters ranks last (small local error, unattenuated downstream): the shrinking
    pass still finds it instead of keeping all 16."""
    scores = {f"n{i}": 1.0 / (i + 1) for i in range(16)}
    result, built = search(16, {"n15"}, scores)
    assert result.passed and result.kept == ["n15"] and built[-1] == frozenset({"n15"})
    assert any(t.get("shrink") for t in result.trials)


def test_search_respects_its_budget() -> None:
    """Out of time before anything passed: keep every candidate and say so; the time stays bounded."""
    scores = {f"n{i}": 1.0 for i in range(40)}
    start = time.perf_counter()
    result, _ = search(40, {f"n{i}" for i in range(40)}, scores, budget=0.3, cost=0.1)
    assert time.perf_counter() - start < 2.0
    assert result.budget_exhausted and result.passed and len(result.kept) == 40
    summary = json.dumps(result.to_json())
    assert '"budget_exhausted": true' in summary and '"trials"' in summary


def test_search_says_when_nothing_passes() -> None:
    result, _ = search(3, {"missing"}, {"n0": 1.0, "n1": 0.5, "n2": 0.1})
    assert not result.passed and len(result.kept) == 3


def test_local_errors_see_outlier_channels() -> None:
    """A per-tensor range stretched by one outlier channel costs more than per-row scales; a node fed by
    outliers ranks above a well-behaved one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 96)).astype(np.float32)
    x_out = x.copy()
    x_out[:, 3] *= 60.0
    w = rng.standard_normal((96, 32)).astype(np.float32)
    err = local_errors({"plain": [x], "outlier": [x_out]}, {"plain": w, "outlier": w}, "tensor")
    assert err["outlier"] > 3 * err["plain"]
    assert np.abs(fake_quant_rows(x) - x).mean() < np.abs(fake_quant_tensor(x, x.min(), x.max()) - x).mean() * 1.5
    assert 0 < local_errors({"a": [x]}, {"a": w}, "rows")["a"] < 0.05


def test_per_family_default_mode_is_data() -> None:
    for family in FAMILIES.values():
        opt, choice = resolve_int8_mode(OptimizeOptions(int8=True), family)
        assert opt.int8_mode == family.int8_mode and choice["mode"] == family.int8_mode
        assert choice["source"].startswith("registry")
    opt, choice = resolve_int8_mode(OptimizeOptions(int8=True, int8_mode="static"), FAMILIES["bert"])
    assert opt.int8_mode == "static" and choice["source"] == "--int8-mode"
    assert resolve_int8_mode(OptimizeOptions(runtime="trt", int8=True), FAMILIES["bert"])[0].mode == "static"


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_int8_manifest_records_the_mode_choice(family: str, make_bundle: Any) -> None:
    bundle = make_bundle(family, "embed", optimization=OptimizeOptions(int8=True))
    m = json.loads((bundle / "manifest.json").read_text())
    i8 = m["optimization"]["int8"]
    assert i8["mode"] == FAMILIES[family].int8_mode and i8["mode_choice"]["mode"] == i8["mode"]
    assert i8["mode_choice"]["measured"] == FAMILIES[family].int8_measured
    fb = m["optimization"]["fallback"]
    assert fb["passed"] and fb["seconds"] <= fb["budget_s"] + 30 and "trials" in fb
