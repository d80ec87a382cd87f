"""Registries stay the one place behaviour is keyed on a name (issue 19)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_task_switches() -> None:
    """No code outside models/tasks branches on a task's name: task behaviour is hooks on the task.

    Counted: comparisons with a task name (``task == "qa"``, ``"mlm" != t``, ``task.name in ("a", "b")``),
    dicts keyed by task names, and switches on the task's parity metric (``task.metric == "top5"``).
    Allowed, by file and count: the Triton Python-backend models, which run inside the server's own
    Python without bert-export installed (serving/repository.py copies them beside a vendored
    models/postprocess.py), so they cannot import the task classes.
    """
    from bert_export.models import TASKS

    names = "|".join(re.escape(n) for n in TASKS)
    literal = rf"[\"'](?:{names})[\"']"
    patterns = [
        re.compile(rf"(?:==|!=)\s*{literal}"),
        re.compile(rf"{literal}\s*(?:==|!=)"),
        re.compile(rf"\bin\s*[(\[{{]\s*{literal}"),
        re.compile(rf"^\s*{literal}\s*:"),  # a dict keyed by task name
        re.compile(r"\.metric\s*(?:==|!=|\bin\b)"),
    ]
    allowed = {
        "serving/pymodels/post_model.py": 6,  # runs in Triton without bert_export (see docstring)
        "serving/pymodels/tokenize_model.py": 1,  # likewise
    }
    packages = ["bundle", "cli", "evaluation", "exporter", "models", "quantize", "runtimes", "serving", "testing"]
    found: dict[str, list[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("models/tasks/"):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if any(p.search(line) for p in patterns):
                    found.setdefault(rel, []).append(f"{rel}:{n}: {line.strip()}")
    extra = [hit for rel, hits in found.items() if len(hits) > allowed.get(rel, 0) for hit in hits]
    assert not extra, "task-name switches outside models/tasks (add a hook on the task instead):\n" + "\n".join(extra)
    # The counter itself works: the allowed files really do switch (else drop them from the list).
    assert {rel: len(found.get(rel, [])) for rel in allowed} == allowed
