"""``bert-export bench`` on tiny bundles: JSON shape and sane values, a real PNG, clean failures.

Values are checked for consistency (ordering, units, the FLOP model), never for speed: timings
on a shared CI machine are noise. About 30 s on 2 cores, most of it the two cached exports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import transformers

from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import main
from bert_export.models import get_family
from bert_export.runtimes.bench import _token_stream, make_feed, model_flops, resolve_seqs, specials_of
from bert_export.runtimes.factory import load_tokenizer

ROW_KEYS = {
    "runtime",
    "precision",
    "batch",
    "seq",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "seq_per_s",
    "tokens_per_s",
    "gflops",
    "speedup_vs_torch",
}
FAST = ("--warmup", "1", "--runs", "3", "-q")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def bert_embed(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "embed")


@pytest.fixture(scope="module")
def modernbert_embed(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("modernbert", "embed")


def assert_sane(row: dict, batch_seq: set[tuple[int, int]]) -> None:
    assert ROW_KEYS <= set(row), set(row)
    assert (row["batch"], row["seq"]) in batch_seq
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["seq_per_s"] > 0 and row["gflops"] > 0
    assert row["tokens_per_s"] == pytest.approx(row["seq_per_s"] * row["seq"], rel=1e-3)
    assert row["seq_per_s"] == pytest.approx(row["batch"] * 1e3 / row["p50_ms"], rel=1e-3)
    assert row["peak_mem_mb"] is not None and row["peak_mem_mb"] >= 0


def test_bench_json_table_and_plot(bert_embed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "r.json", tmp_path / "plots" / "r.png"
    code, stdout, err = run_cli(
        capsys,
        "bench",
        str(bert_embed),
        "--batch",
        "1,2",
        "--seq",
        "8,32",
        "--threads",
        "1",
        "--json",
        str(out),
        "--plot",
        str(png),
        *FAST,
    )
    assert code == 0, err
    doc = json.loads(out.read_text())
    cells = {(b, s) for b in (1, 2) for s in (8, 32)}
    assert [(r["runtime"], r["precision"]) for r in doc["results"]] == [("ort", "fp32")] * 4
    assert {(r["batch"], r["seq"]) for r in doc["results"]} == cells
    assert {(r["batch"], r["seq"]) for r in doc["torch"]} == cells
    for row in doc["results"] + doc["torch"]:
        assert_sane(row, cells)
    torch_p50 = {(r["batch"], r["seq"]): r["p50_ms"] for r in doc["torch"]}
    for row in doc["results"]:
        assert row["speedup_vs_torch"] == pytest.approx(torch_p50[(row["batch"], row["seq"])] / row["p50_ms"], rel=1e-2)
    machine = doc["machine"]
    assert machine["cpu"] and machine["cores_logical"] >= 1 and "onnxruntime" in machine["versions"]
    assert machine["threads"] == 1 and isinstance(machine["cpu_flags"], dict)
    # GFLOP/s is the configuration's FLOPs over the median latency, for every row alike.
    cfg = json.loads((bert_embed / "config.json").read_text())
    for row in doc["results"]:
        expect = model_flops(cfg, get_family("bert"), "embed", row["batch"], row["seq"]) / (row["p50_ms"] / 1e3) / 1e9
        assert row["gflops"] == pytest.approx(expect, rel=1e-2)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "tokens/s" in stdout and "ort fp32" in stdout and "torch fp32" in stdout


def test_bench_no_torch_json_to_stdout(modernbert_embed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run_cli(
        capsys, "bench", str(modernbert_embed), "--batch", "1", "--seq", "40", "--no-torch", "--json", "-", *FAST
    )
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["torch"] == [] and len(doc["results"]) == 1
    assert_sane(doc["results"][0], {(1, 40)})
    assert doc["results"][0]["speedup_vs_torch"] is None


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--batch", "0"), "--batch 0"),
        (("--batch", "1,x"), "comma-separated"),
        (("--seq", "129"), "maximum sequence length of 128"),
        (("--runtime", "nope"), "unknown runtime 'nope'"),
        (("--runs", "0"), "--runs"),
        (("--plot", "out.svg"), ".png"),
    ],
)
def test_bad_arguments_fail_in_one_line(
    bert_embed: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str
) -> None:
    code, _, err = run_cli(capsys, "bench", str(bert_embed), *args, "-q")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


def test_gpu_runtime_without_gpu_is_refused_not_measured_on_cpu(
    bert_embed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bert_export.runtimes import providers

    monkeypatch.setenv(providers.NO_GPU_ENV, "1")
    providers.detect_gpu.cache_clear()
    try:
        code, _, err = run_cli(capsys, "bench", str(bert_embed), "--runtime", "ort-cuda", "-q")
    finally:
        providers.detect_gpu.cache_clear()
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith("error: ort-cuda would run on CPUExecutionProvider") and "not a fallback" in last


def test_missing_bundle_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "bench", str(tmp_path / "nope"), "-q")
    assert code == 2 and err.startswith("error: ") and "does not exist" in err


def test_default_lengths_fit_the_bundle() -> None:
    assert resolve_seqs(None, 2048) == (128, 512)
    assert resolve_seqs(None, 128) == (128,)
    assert resolve_seqs(None, 64) == (64,)


def test_feed_is_real_text_with_full_masks(bert_embed: Path) -> None:
    b = load_bundle(bert_embed)
    tok = load_tokenizer(b.path)
    stream = _token_stream(tok, 30522, 200)
    feed = make_feed(b.inputs, specials_of(tok, b.manifest), stream, 3, 64)
    ids = feed["input_ids"]
    assert ids.shape == (3, 64) and ids.dtype == np.int64
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.sep_token_id).all()
    assert not np.array_equal(ids[0], ids[1])  # rows differ
    words = tok.decode(ids[0, 1:-1]).split()
    assert {"the", "capital", "of"} & set(words)  # real English, not random ids
    assert (feed["attention_mask"] == 1).all() and (feed["token_type_ids"] == 0).all()


@pytest.mark.parametrize("family", ["bert", "modernbert"])
@pytest.mark.parametrize("task", ["embed", "mlm", "seq-cls", "token-cls", "qa"])
def test_flops_match_torch_flop_counter(family: str, task: str) -> None:
    """The FLOP model against PyTorch's own count of the real module (eager attention, every layer global)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bert_export.exporter.loading import task_class
    from bert_export.models import get_task

    fam = get_family(family)
    config = getattr(transformers, fam.config_class)(**fam.tiny_config)
    config._attn_implementation = "eager"  # SDPA's CPU kernels are not counted by FlopCounterMode
    if fam.local_window_attr:
        config.layer_types = ["full_attention"] * config.num_hidden_layers  # eager computes masked scores too
    torch.manual_seed(0)
    model = task_class(fam, get_task(task))(config).eval()
    ids = torch.randint(5, 100, (2, 24))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert model_flops(config.to_dict(), fam, task, 2, 24) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_flops_match_the_textbook_count_and_credit_only_the_window() -> None:
    bert = transformers.BertConfig().to_dict()
    # BERT-base, 1 x 128: 12 layers x (8 h^2 + 4 h i + 4 s h) per token + the pooler.
    h, i, s = 768, 3072, 128
    expect = 12 * s * (8 * h * h + 4 * h * i + 4 * s * h) + 2 * h * h
    assert model_flops(bert, get_family("bert"), "embed", 1, s) == expect
    assert model_flops(bert, get_family("bert"), "embed", 4, s) == pytest.approx(4 * expect, rel=1e-3)

    mb = transformers.ModernBertConfig().to_dict()
    fam = get_family("modernbert")
    all_global = {**mb, "layer_types": ["full_attention"] * mb["num_hidden_layers"]}
    # Up to the half-window every key is in reach: local layers cost the same as global ones.
    assert model_flops(mb, fam, "embed", 1, 64) == model_flops(all_global, fam, "embed", 1, 64)
    # At 2048 tokens the local layers (2 of every 3) see at most 129 keys per query.
    local_layers = sum(t == "sliding_attention" for t in mb["layer_types"])
    saved = model_flops(all_global, fam, "embed", 1, 2048) - model_flops(mb, fam, "embed", 1, 2048)
    assert saved > local_layers * 4 * 2048 * mb["hidden_size"] * (2048 - 129)
    assert saved < local_layers * 4 * 2048 * mb["hidden_size"] * (2048 - 64)
