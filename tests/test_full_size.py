"""Full-size architectures (BertConfig() / ModernBertConfig(), random init): run with BERT_EXPORT_SLOW=1.

Each takes one to three minutes and several GB of memory, so CI skips them; the README's
"Measured" table comes from the same commands.
"""

from __future__ import annotations

import pytest

from bert_export.exporter import export, validate


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_full_size_qa_exports_and_validates(tmp_path, family: str) -> None:
    result = export(family, "qa", random_init=True, out=tmp_path / family)
    assert result.report is not None and result.report.passed, result.report.failures
    assert max(result.report.summary["max_abs"].values()) <= 1e-4
    assert validate(result.bundle).passed
