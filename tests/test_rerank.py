"""The rerank task's acceptance (issue 22): the packaged MiniLM fine-tuned here as a cross-encoder.

A few optimizer steps on (query, passage) pairs this module writes make the scores mean something (the held-out
queries below are paraphrases, not the training queries); then one export (fp32 + int8) and:
- ``run --query Q --passage P ...`` ranks the passages as PyTorch does, scores within fp32 noise;
- ``validate --data`` with (query, passage, label) rows reports MRR@10 and NDCG@10 beside accuracy, fp32 and int8;
  int8 keeps top-1 agreement over each query's passages >= 99% and the metrics within --max-metric-drop;
- sentence-transformers' ``CrossEncoder(bundle, backend="onnx")`` loads the bundle as it is and agrees within 1e-5.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.bundle.reader import load_bundle

from .conftest import needs
from .test_bad_input import assert_one_error_line, run_cli
from .test_consumers import HF_PYTHON
from .test_cpp import demo  # noqa: F401  (the session's C++ build)

# (topic query for training, a paraphrase held out for evaluation, the relevant passage)
TOPICS = [
    (
        "capital of France",
        "which city is the French capital",
        "Paris is the capital and most populous city of France.",
    ),
    (
        "how do plants make food",
        "what process lets leaves turn sunlight into sugar",
        "Photosynthesis converts light, water and carbon dioxide into glucose and oxygen in chloroplasts.",
    ),
    (
        "who wrote Pride and Prejudice",
        "author of the novel about Elizabeth Bennet",
        "Pride and Prejudice is an 1813 novel of manners written by Jane Austen.",
    ),
    (
        "boiling point of water",
        "at what temperature does water boil at sea level",
        "Water boils at 100 degrees Celsius at sea level.",
    ),
    (
        "largest planet in the solar system",
        "which planet is the biggest",
        "Jupiter is the largest planet in the Solar System, a gas giant.",
    ),
    (
        "how do vaccines work",
        "how does immunisation protect the body",
        "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    ),
    (
        "when did the Berlin Wall fall",
        "year the wall dividing Berlin came down",
        "The Berlin Wall fell on 9 November 1989, opening the border between East and West Berlin.",
    ),
    (
        "what is the speed of light",
        "how fast does light travel in a vacuum",
        "Light travels through a vacuum at about 299,792 kilometres per second.",
    ),
    (
        "best way to brew coffee",
        "how to make a good cup of coffee at home",
        "For pour-over coffee, use freshly ground beans and water just off the boil.",
    ),
    (
        "symptoms of dehydration",
        "signs that someone has not drunk enough water",
        "Thirst, dark urine, dizziness and fatigue are common signs of dehydration.",
    ),
]
PASSAGES = [t[2] for t in TOPICS]
STEPS = 20


def _pairs(which: int) -> list[tuple[str, str, int]]:
    """Every query (training: 0, held out: 1) against every passage, label 1 for its own topic."""
    return [(t[which], p, int(i == j)) for i, t in enumerate(TOPICS) for j, p in enumerate(PASSAGES)]


@pytest.fixture(scope="session")
def cross_encoder(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The MiniLM with a one-logit head trained for a few steps (BCE, as sentence-transformers trains
    cross-encoders), its checkpoint, one fp32 + int8 rerank bundle and the held-out data file."""
    import torch
    import transformers

    from bert_export.exporter import export

    root = tmp_path_factory.mktemp("rerank")
    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=1)
    train = _pairs(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(STEPS):
        # every positive each step, and as many negatives drawn at random: a balanced batch of 20
        negatives = [train[i] for i in rng.choice([k for k, r in enumerate(train) if not r[2]], 10, replace=False)]
        batch = [r for r in train if r[2]] + negatives
        enc = tok([q for q, _, _ in batch], [p for _, p, _ in batch], padding=True, return_tensors="pt")
        logits = model(**enc).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([float(r[2]) for r in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ckpt = root / "ckpt"
    model.save_pretrained(str(ckpt))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, ckpt / name)
    bundle = root / "bundle"
    export("bert", "rerank", model=str(ckpt), out=bundle, max_seq=128, precisions="fp32,int8")
    data = root / "heldout.jsonl"
    data.write_text(
        "".join(json.dumps({"query": q, "passage": p, "label": y}) + "\n" for q, p, y in _pairs(1)), encoding="utf-8"
    )
    return {"ckpt": ckpt, "bundle": bundle, "data": data}


def _torch_scores(ckpt: Path, queries: list[str], passages: list[str]) -> list[np.ndarray]:
    """PyTorch's sigmoid scores of each query against every passage (the checkpoint loaded once)."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    model = transformers.BertForSequenceClassification.from_pretrained(str(ckpt)).eval()
    out = []
    for query in queries:
        enc = tok([query] * len(passages), passages, padding=True, truncation="longest_first", return_tensors="pt")
        with torch.no_grad():
            out.append(torch.sigmoid(model(**enc).logits[:, 0]).numpy().astype(np.float64))
    return out


def _run(bundle: Path, *args: str) -> Any:
    """``run BUNDLE --json ARGS``' last line (in-process)."""
    from click.testing import CliRunner

    from bert_export.cli.main import cli

    res = CliRunner().invoke(cli, ["run", str(bundle), "--json", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_run_query_passages_ranks_as_pytorch(cross_encoder: dict[str, Path]) -> None:
    bundle, ckpt = cross_encoder["bundle"], cross_encoder["ckpt"]
    manifest = load_bundle(bundle).manifest
    assert manifest["task"] == "rerank" and manifest["labels"]["num_labels"] == 1
    hits = 0
    passages = PASSAGES[::-1]  # the relevant one is never simply first
    topics = TOPICS[:3]
    for (query, _, relevant), want in zip(topics, _torch_scores(ckpt, [t[0] for t in topics], passages)):
        args = [a for p in passages for a in ("--passage", p)]
        got = _run(bundle, "--query", query, *args)
        assert got["query"] == query
        assert [r["index"] for r in got["results"]] == list(np.argsort(-want, kind="stable"))
        assert [r["text"] for r in got["results"]] == [passages[r["index"]] for r in got["results"]]
        assert np.abs(np.array([r["score"] for r in got["results"]]) - np.sort(want)[::-1]).max() <= 1e-5
        hits += got["results"][0]["text"] == relevant
    assert hits == len(topics)  # the fine-tuned scores mean something: each query's own passage ranks first


def test_rerank_request_mistakes_are_one_line(cross_encoder: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    bundle = str(cross_encoder["bundle"])
    assert_one_error_line(*run_cli(capsys, "run", bundle, "--query", "q"), "--query Q with --passage P")
    assert_one_error_line(*run_cli(capsys, "run", bundle, "--passage", "p"), "--query Q with --passage P")
    assert_one_error_line(*run_cli(capsys, "run", bundle, "--query", "q", "--passage", "p", "--text", "t"), "not both")


def test_validate_data_reports_ranking_metrics_and_int8_keeps_the_order(cross_encoder: dict[str, Path]) -> None:
    """The int8 graph against PyTorch fp32 on the held-out rows (the fp32 graph's gate is the export's own)."""
    from bert_export.evaluation import validate_data

    precision = "int8"
    report = validate_data(
        cross_encoder["bundle"], model=cross_encoder["ckpt"], data=cross_encoder["data"], precision=precision
    )
    assert report.passed, report.failures
    metrics = {r.name: r for r in report.metrics}
    assert set(metrics) == {"mrr@10", "ndcg@10", "accuracy"}
    # held-out paraphrases: the few training steps carry over (a random head scores MRR ~0.3 here)
    assert metrics["mrr@10"].reference >= 0.8 and metrics["ndcg@10"].reference >= 0.85
    summary = report.parity.summary
    assert summary["data_top1_agreement"] >= 0.99
    assert -1 <= summary["data_kendall_tau"] <= 1 and summary["data_order_agreement"] >= 0.97
    assert all(r.drop <= report.max_metric_drop for r in metrics.values())  # the --max-metric-drop gate
    measured = {k: round(v, 4) for k, v in summary.items() if k.startswith("data_")}
    print(json.dumps({precision: {**measured, **{k: [r.reference, r.candidate] for k, r in metrics.items()}}}))


def test_int8_gate_is_on_ranking_agreement_and_score_cosine(cross_encoder: dict[str, Path]) -> None:
    parity = load_bundle(cross_encoder["bundle"], precision="int8").manifest["graphs"]["int8"]["parity"]
    summary = parity["summary"]
    assert {"top1_agreement", "order_agreement", "cosine_mean", "cosine_min"} <= set(summary)
    assert summary["top1_agreement"] >= 0.97 and summary["cosine_min"] >= 0.995


def test_sentence_transformers_cross_encoder_loads_the_bundle(cross_encoder: dict[str, Path]) -> None:
    needs(HF_PYTHON.exists(), f"{HF_PYTHON} missing (run .ci/install.d/32-hf-venv.sh)")
    bundle = cross_encoder["bundle"]
    pairs = [(q, p) for q, _, p in TOPICS[:3]] + [(TOPICS[0][0], p) for p in PASSAGES[3:6]]
    script = (
        "import json, sys\n"
        "from sentence_transformers import CrossEncoder\n"
        "m = CrossEncoder(sys.argv[1], backend='onnx')\n"
        "pairs = json.loads(sys.argv[2])\n"
        "print(json.dumps([float(s) for s in m.predict(pairs)]))\n"
    )
    out = subprocess.run(
        [str(HF_PYTHON), "-c", script, str(bundle), json.dumps(pairs)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    st = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]))
    from click.testing import CliRunner

    from bert_export.cli.main import cli

    args = [a for q, p in pairs for a in ("--text", q, "--pair", p)]
    res = CliRunner().invoke(cli, ["run", str(bundle), "--json", *args], catch_exceptions=False)
    ours = np.asarray([json.loads(line)["score"] for line in res.stdout.splitlines() if line.strip()])
    assert np.abs(st - ours).max() <= 1e-5, (st, ours)


def test_cpp_demo_scores_pairs_like_run(cross_encoder: dict[str, Path], demo: Path) -> None:  # noqa: F811
    """The C++ demo passes the rerank bundle's golden.json (one query against every passage) and scores
    --text Q --pair P as run does."""
    bundle = cross_encoder["bundle"]
    st = subprocess.run([str(demo), str(bundle), "--self-test"], capture_output=True, text=True)
    assert st.returncode == 0 and "FAIL" not in st.stdout, st.stdout
    pairs = [(TOPICS[1][1], p) for p in PASSAGES[:4]]
    args = [a for q, p in pairs for a in ("--text", q, "--pair", p)]
    cc = subprocess.run([str(demo), str(bundle), *args], capture_output=True, text=True, check=True).stdout
    got = [json.loads(line)["score"] for line in cc.splitlines()]
    from click.testing import CliRunner

    from bert_export.cli.main import cli

    res = CliRunner().invoke(cli, ["run", str(bundle), "--json", *args], catch_exceptions=False)
    want = [json.loads(line)["score"] for line in res.stdout.splitlines() if line.strip()]
    assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 2e-6
