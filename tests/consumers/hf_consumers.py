"""Load bert-export bundles with Optimum and sentence-transformers, as their users would.

Runs inside the HF consumers' own venv (.ci/cache/hf-venv: transformers 4.x, optimum-onnx,
sentence-transformers), never the project's: ``python hf_consumers.py jobs.json`` prints one JSON
list, one result per job. A job is ``{"bundle": dir, "task": ..., "inputs": ..., "file_name": null}``;
``file_name`` (e.g. "onnx/model_quantized.onnx") picks a graph other than onnx/model.onnx, the
file both libraries look for by default (sentence-transformers would otherwise try to export the
model from PyTorch weights a bundle does not have); with null they get no extra arguments at all. Raw logits come back next to the
pipelines' results so the caller can show exactly where a pipeline's definition differs from ours.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

ORT_CLASSES = {
    "qa": "ORTModelForQuestionAnswering",
    "seq-cls": "ORTModelForSequenceClassification",
    "token-cls": "ORTModelForTokenClassification",
    "mlm": "ORTModelForMaskedLM",
    "embed": "ORTModelForFeatureExtraction",
}


def _kwargs(job: dict[str, Any]) -> dict[str, Any]:
    """Optimum's way to pick one graph: subfolder + file_name (e.g. onnx/model_quantized.onnx)."""
    if not job.get("file_name"):
        return {}
    folder, _, name = job["file_name"].rpartition("/")
    return {"file_name": name, **({"subfolder": folder} if folder else {})}


def _load(job: dict[str, Any]) -> tuple[Any, Any]:
    import optimum.onnxruntime as ort_models
    from transformers import AutoTokenizer

    cls = getattr(ort_models, ORT_CLASSES[job["task"]])
    model = cls.from_pretrained(job["bundle"], **_kwargs(job))
    return model, AutoTokenizer.from_pretrained(job["bundle"])


def _qa(job: dict[str, Any]) -> dict[str, Any]:
    from transformers import pipeline

    model, tok = _load(job)
    pipe = pipeline("question-answering", model=model, tokenizer=tok)
    out = []
    for item in job["inputs"]:
        # max_answer_len=30: ours (and the SQuAD scripts'); the pipeline's default is 15.
        res = pipe(question=item["question"], context=item["context"], max_answer_len=30)
        enc = tok(item["question"], item["context"], return_tensors="np")
        logits = model(**enc)
        out.append(
            {
                **res,
                "input_ids": enc["input_ids"][0].tolist(),
                "start_logits": logits.start_logits[0].tolist(),
                "end_logits": logits.end_logits[0].tolist(),
            }
        )
    return {"outputs": out, "model_path": str(model.model_path)}


def _seq_cls(job: dict[str, Any]) -> dict[str, Any]:
    from transformers import pipeline

    model, tok = _load(job)
    pipe = pipeline("text-classification", model=model, tokenizer=tok)
    return {
        "outputs": [pipe(t)[0] for t in job["inputs"]],
        "id2label": model.config.id2label,
        "model_path": str(model.model_path),
    }


def _token_cls(job: dict[str, Any]) -> dict[str, Any]:
    from transformers import pipeline

    model, tok = _load(job)
    # "first": a word's label is its first sub-token's argmax, as in bert-export's run.
    pipe = pipeline(
        "token-classification", model=model, tokenizer=tok, aggregation_strategy="first", ignore_labels=["O"]
    )
    out = [
        [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in e.items()} for e in pipe(t)]
        for t in job["inputs"]
    ]
    return {"outputs": out, "model_path": str(model.model_path)}


def _mlm(job: dict[str, Any]) -> dict[str, Any]:
    from transformers import pipeline

    model, tok = _load(job)
    pipe = pipeline("fill-mask", model=model, tokenizer=tok, top_k=5)
    out = [
        [{"id": int(c["token"]), "token": c["token_str"], "score": float(c["score"])} for c in pipe(t)]
        for t in job["inputs"]
    ]
    return {"outputs": out, "model_path": str(model.model_path)}


def _embed(job: dict[str, Any]) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    # sentence-transformers takes the relative path in file_name and splits the folder itself.
    kwargs = {"model_kwargs": {"file_name": job["file_name"]}} if job.get("file_name") else {}
    st = SentenceTransformer(job["bundle"], backend="onnx", device="cpu", **kwargs)
    vectors = st.encode(job["inputs"], batch_size=len(job["inputs"]), convert_to_numpy=True)
    model, _ = _load(job)  # ORTModelForFeatureExtraction must load the same directory too
    return {
        "outputs": vectors.astype(np.float64).tolist(),
        "modules": [type(m).__name__ for m in st],
        "max_seq_length": st.max_seq_length,
        "model_path": str(model.model_path),
    }


RUNNERS = {"qa": _qa, "seq-cls": _seq_cls, "token-cls": _token_cls, "mlm": _mlm, "embed": _embed}


def main() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    jobs = json.loads(open(sys.argv[1], encoding="utf-8").read())
    results = []
    for job in jobs:
        t0 = time.perf_counter()
        res = RUNNERS[job["task"]](job)
        results.append({"task": job["task"], "bundle": job["bundle"], "seconds": time.perf_counter() - t0, **res})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
