"""NAME_tokenize (Triton Python backend): text in, the graph's inputs out, with what NAME_post needs.

Written by ``bert-export triton``; reads ``bert_export_model.json`` and the bundle's tokenizer files
beside it. Needs ``transformers`` (fast tokenizer: offsets, sequence and word ids) in the server's
Python. Every request is padded to the bundle's max sequence so that Triton's dynamic batcher can
batch the graph model (it batches equal shapes only). A bad request gets its own error response.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = os.path.dirname(os.path.abspath(__file__))


class TritonPythonModel:
    def initialize(self, args):
        import transformers

        with open(os.path.join(HERE, "bert_export_model.json"), encoding="utf-8") as fh:
            self.cfg = json.load(fh)
        self.tok = transformers.AutoTokenizer.from_pretrained(
            os.path.join(HERE, "tokenizer"), local_files_only=True, trust_remote_code=False
        )
        self.max_seq = int(self.cfg["max_seq"])

    def _text(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"missing input {name}")
        values = tensor.as_numpy().reshape(-1)
        if values.size != 1:
            raise ValueError(f"{name}: send one text per request (shape [1, 1]), got {values.size}")
        value = values[0]
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if len(text) > int(self.cfg["max_text_chars"]):
            raise ValueError(
                f"{name} has {len(text)} characters; this model accepts at most {self.cfg['max_text_chars']}"
            )
        return text

    def _encode(self, request):
        if self.cfg["task"] == "qa":
            question, context = self._text(request, "QUESTION"), self._text(request, "CONTEXT")
            full = len(self.tok([question], [context], truncation=False)["input_ids"][0])
            enc = self.tok(
                [question],
                [context],
                truncation="only_second",
                max_length=self.max_seq,
                padding="max_length",
                return_offsets_mapping=True,
                return_token_type_ids=True,
            )
            note = (
                f"note: question + context are {full} tokens; the context was truncated to this bundle's {self.max_seq}"
                if full > self.max_seq
                else ""
            )
        else:
            text = self._text(request, "TEXT")
            # seq-cls / rerank: an optional second text, read as a pair and truncated longest_first (as run does)
            has_pair = pb_utils.get_input_tensor_by_name(request, "TEXT_PAIR") is not None
            pair = [[self._text(request, "TEXT_PAIR")]] if has_pair else []
            if self.cfg.get("pairs_only") and not pair:
                raise ValueError("missing input TEXT_PAIR (a rerank request is a query TEXT and a passage TEXT_PAIR)")
            full = len(self.tok([text], *pair, truncation=False)["input_ids"][0])
            enc = self.tok(
                [text],
                *pair,
                truncation="longest_first",
                max_length=self.max_seq,
                padding="max_length",
                return_offsets_mapping=True,
                return_token_type_ids=True,
            )
            note = (
                f"note: the text is {full} tokens and was truncated to this bundle's {self.max_seq}"
                if full > self.max_seq
                else ""
            )
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        out = {}
        for name in self.cfg["graph_inputs"]:
            value = enc.get(name)
            out[name] = np.asarray(value, dtype=np.int64) if value is not None else np.zeros_like(ids)
        out["OFFSETS"] = np.asarray(enc["offset_mapping"], dtype=np.int64)
        out["SEQUENCE_IDS"] = np.array([[-1 if s is None else s for s in enc.sequence_ids(0)]], dtype=np.int64)
        out["WORD_IDS"] = np.array([[-1 if w is None else w for w in enc.word_ids(0)]], dtype=np.int64)
        out["MASK"] = np.asarray(enc["attention_mask"], dtype=np.int64)
        out["IDS"] = ids
        out["NOTE"] = np.array([[note.encode("utf-8")]], dtype=np.object_)
        return out

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensors = [pb_utils.Tensor(k, v) for k, v in self._encode(request).items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one bad request never fails the others in the batch
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc).splitlines()[0]))
                )
        return responses
