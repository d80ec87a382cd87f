"""Bad requests: one `error:` line, a non-zero exit, no traceback, bounded memory; and what we write
stays valid (strict JSON) and private (no ONNX Runtime telemetry)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_export.exporter import loading
from bert_export.models import FAMILIES
from bert_export.runtimes import bench as bench_mod
from bert_export.runtimes.ort_runner import OrtRunner
from bert_export.runtimes.predict import Prediction

from .conftest import own_peak_rss
from .test_bad_input import assert_one_error_line, run_cli

CLI = [sys.executable, "-c", "from bert_export.cli.main import main; main()"]  # the entry point (-m misses subcommands)


def strict_json(line: str) -> object:
    def reject(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=reject)


@pytest.fixture
def no_model_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a check lets the request reach model construction."""

    def built(*args, **kwargs):
        raise AssertionError("the model was built before the request was refused")

    monkeypatch.setattr(loading, "task_class", built)


# --------------------------------------------------------------------------- configs that make no model


CONFIGS = [
    (("--config", "hidden_size=0"), "hidden_size=0 makes no model"),
    (("--config", "hidden_size=-4"), "hidden_size=-4 makes no model"),
    (("--config", "hidden_size=32", "--config", "num_attention_heads=3"), "not divisible by num_attention_heads=3"),
    (("--config", "num_hidden_layers=0"), "num_hidden_layers=0 makes no model"),
    (("--config", "intermediate_size=1.5"), "intermediate_size"),
    (("--config", "vocab_size=big"), "vocab_size"),
    (("--config", "max_position_embeddings=4"), "below the 16 tokens"),
    (("--num-labels", "1000000000"), "--num-labels must be between 1 and 100000"),
    (("--config", "num_labels=1000000000"), "more than 100000"),
    (("--max-seq", "2"), "--max-seq 2 is too short"),
    (("--config", "hidden_size=65536", "--config", "num_attention_heads=1"), "GiB of memory"),
    (("--config", "vocab_size=1000000000"), "beyond what a bundle can hold"),
]


@pytest.mark.parametrize(("args", "needle"), CONFIGS, ids=[" ".join(a) for a, _ in CONFIGS])
def test_config_that_makes_no_model(
    capsys, tmp_path: Path, no_model_built: None, args: tuple[str, ...], needle: str
) -> None:
    out = tmp_path / "o"
    code, err = run_cli(capsys, "bert", "--task", "seq-cls", "--random-init", "--tiny", *args, "--out", str(out))
    assert_one_error_line(code, err, needle)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_qa_needs_room_for_a_question(capsys, tmp_path: Path, no_model_built: None) -> None:
    code, err = run_cli(
        capsys, "bert", "--task", "qa", "--random-init", "--tiny", "--max-seq", "20", "--out", str(tmp_path / "o")
    )
    assert_one_error_line(code, err, "--max-seq 20 is too short for a qa bundle", "--max-seq 48")


def test_absurd_sizes_in_bounded_memory(tmp_path: Path) -> None:
    """The real entry point: refused in one line, and the process never grew past what importing takes."""
    probe = (
        "import atexit, resource, sys; atexit.register(lambda: print(resource.getrusage(resource.RUSAGE_SELF)"
        ".ru_maxrss // 1024)); from bert_export.cli.main import main; main(sys.argv[1:])"
    )
    for args in (
        ["--config", "hidden_size=1048576", "--config", "num_attention_heads=1"],
        ["--num-labels", "1000000000"],
        ["--config", "max_position_embeddings=100000000"],
    ):
        proc = subprocess.run(
            own_peak_rss(
                [
                    sys.executable,
                    "-c",
                    probe,
                    "bert",
                    "--task",
                    "seq-cls",
                    "--random-init",
                    *args,
                    "--out",
                    str(tmp_path / "o"),
                ]
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert int(proc.stdout.split()[-1]) < 1024, f"peak RSS {proc.stdout.strip()} MB for {args}"


def test_own_peak_rss_measures_the_child_alone() -> None:
    """The memory bounds above (and the fuzz run's) hold only if a child's peak is its own: spawned
    straight from this process it starts at this process' resident size (Linux keeps ru_maxrss
    across execve), through own_peak_rss it does not."""
    ballast = bytearray(400 << 20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # resident, not just reserved
    probe = [
        sys.executable,
        "-S",
        "-c",
        "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)",
    ]
    direct = int(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
    wrapped = int(subprocess.run(own_peak_rss(probe), capture_output=True, text=True, check=True).stdout)
    del ballast
    assert direct >= 400, f"direct child's peak {direct} MB: the inherited peak no longer shows (kernel changed?)"
    assert wrapped < 100, f"child's own peak {wrapped} MB through own_peak_rss"


# --------------------------------------------------------------------------- run: invalid UTF-8, NaN


@pytest.fixture(scope="module")
def seq_cls(make_bundle) -> Path:
    return make_bundle("bert", "seq-cls")


@pytest.fixture(scope="module")
def qa(make_bundle) -> Path:
    return make_bundle("bert", "qa", validate=False)


def test_invalid_utf8_text(capsys, seq_cls: Path) -> None:
    code, err = run_cli(capsys, "run", str(seq_cls), "--text", "fine", "--text", "caf\udce9 au lait")
    assert_one_error_line(code, err, "--text #2 is not valid UTF-8", "byte 0xe9")


@pytest.mark.parametrize("option", ["--question", "--context"])
def test_invalid_utf8_question_context(capsys, qa: Path, option: str) -> None:
    values = {"--question": "Who?", "--context": "Jane wrote it."}
    values[option] = "\udcff" + values[option]
    code, err = run_cli(capsys, "run", str(qa), *[x for kv in values.items() for x in kv])
    assert_one_error_line(code, err, f"{option} is not valid UTF-8", "byte 0xff")


def test_invalid_utf8_from_a_real_shell(seq_cls: Path) -> None:
    """Bytes in argv, as a shell passes them (click hands them on surrogate-escaped)."""
    proc = subprocess.run([*CLI, "run", str(seq_cls), "--text", b"caf\xe9"], capture_output=True, timeout=300)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and err.startswith("error: --text #1 is not valid UTF-8") and err.count("\n") == 1, err


def test_nan_outputs_stay_strict_json(monkeypatch, seq_cls: Path, capsys, caplog) -> None:
    from bert_export.cli.main import main

    real = OrtRunner._infer
    monkeypatch.setattr(OrtRunner, "_infer", lambda self, feed: {k: v * np.nan for k, v in real(self, feed).items()})
    with pytest.raises(SystemExit) as exc:
        main(["run", str(seq_cls), "--text", "one", "--text", "two", "--json"])
    assert exc.value.code in (0, None)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        doc = strict_json(line)
        assert doc["score"] is None
    warned = err + caplog.text  # the warning is logged (stderr in the CLI, caplog under pytest)
    assert "NaN or infinite" in warned and "printed as null" in warned


def test_json_lines_unit() -> None:
    pred = Prediction(
        "qa", [{"answer": "x", "score": float("inf"), "nested": [{"v": np.float32("nan")}, 1.5, -math.inf]}], "ort"
    )
    (line,) = pred.json_lines()
    assert strict_json(line) == {"answer": "x", "score": None, "nested": [{"v": None}, 1.5, None]}


# --------------------------------------------------------------------------- bench


def test_bench_feed_memory_is_linear_in_batch() -> None:
    """make_feed gathered rows by rolling the whole stream per row: batch x (seq + 37 batch) ids."""
    import tracemalloc

    inputs = FAMILIES["bert"].inputs
    for batch, seq in ((1, 7), (5, 33), (8, 128)):  # the same ids as the documented definition
        stream = np.random.default_rng(batch).integers(5, 999, size=seq + 37 * batch)
        feed = bench_mod.make_feed(inputs, {"cls": 1, "sep": 2}, stream, batch, seq)
        for r in range(batch):
            assert (feed["input_ids"][r, 1:-1] == np.roll(stream, -37 * r)[1 : seq - 1]).all()
    batch, seq = 2048, 16
    stream = np.arange(seq + 37 * batch)
    tracemalloc.start()
    bench_mod.make_feed(inputs, {"cls": 1, "sep": 2}, stream, batch, seq)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * batch * seq * 8, f"{peak / 2**20:.1f} MiB for a {batch}x{seq} feed (was 1.2 GiB)"


def test_bench_output_paths_checked_before_measuring(capsys, monkeypatch, tmp_path: Path, seq_cls: Path) -> None:
    def measured(*a, **k):
        raise AssertionError("bench ran before its output paths were checked")

    monkeypatch.setattr(bench_mod, "bench", measured)
    code, err = run_cli(capsys, "bench", str(seq_cls), "--json", str(tmp_path))
    assert_one_error_line(code, err, "--json", "is a directory")
    blocker = tmp_path / "f"
    blocker.write_text("")
    code, err = run_cli(capsys, "bench", str(seq_cls), "--plot", str(blocker / "p.png"))
    assert_one_error_line(code, err, "cannot create the directory of --plot")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, err = run_cli(capsys, "bench", str(seq_cls), "--plot", str(tmp_path / "p.png"))
    assert_one_error_line(code, err, "--plot needs matplotlib", "pip install matplotlib")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# --------------------------------------------------------------------------- ONNX Runtime telemetry

CI_VARS = (
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "TF_BUILD",
    "TEAMCITY_VERSION",
    "CIRCLECI",
    "ORT_RUNNING_UNIT_TESTS",
    "ORT_DISABLE_TELEMETRY",
)


def _run_in_fresh_home(home: Path, bundle: Path, **extra: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}  # ONNX Runtime skips telemetry on CI
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **extra)
    home.mkdir()
    proc = subprocess.run(
        [*CLI, "run", str(bundle), "--text", "hello", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def test_run_writes_no_onnxruntime_telemetry(tmp_path: Path, seq_cls: Path) -> None:
    assert _run_in_fresh_home(tmp_path / "home", seq_cls) == []
    # The same run with ONNX Runtime's default restored shows what the default would write.
    control = _run_in_fresh_home(tmp_path / "control", seq_cls, ORT_DISABLE_TELEMETRY="0")
    if not control:
        pytest.skip("this onnxruntime build writes no telemetry at all (nothing to turn off)")
    assert any("onnxruntime" in p for p in control), control
