"""NAME_post (Triton Python backend): the graph's outputs in, ``bert-export run --json``'s JSON out.

Written by ``bert-export triton``. The rules are bert-export's ``models/postprocess.py``, vendored
beside this file (``postprocess.py``, pure numpy) so the repository runs on any Triton server's
Python without bert-export installed. mlm decodes candidate tokens with the bundle's tokenizer
(``transformers`` needed then).
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import postprocess as pp  # noqa: E402  (the vendored copy)


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(HERE, "bert_export_model.json"), encoding="utf-8") as fh:
            self.cfg = json.load(fh)
        self.task = self.cfg["task"]
        # An untrained head (or a --random-init bundle): its answers mean nothing, so the server's log
        # says so at load and with every batch it answers (bert-export writes the text; older repositories lack it).
        self.warning = self.cfg.get("untrained_warning") or ""
        self._warn()
        self.tok = None
        if self.task == "mlm":
            import transformers

            self.tok = transformers.AutoTokenizer.from_pretrained(
                os.path.join(HERE, "tokenizer"), local_files_only=True, trust_remote_code=False
            )

    def _warn(self):
        if self.warning:
            pb_utils.Logger.log_warn(self.warning)

    def _get(self, request, name):
        return pb_utils.get_input_tensor_by_name(request, name).as_numpy()[0]

    def _text(self, request, name):
        value = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def _result(self, request):
        mask = self._get(request, "MASK")
        offsets = [tuple(int(v) for v in pair) for pair in self._get(request, "OFFSETS")]
        if self.task == "qa":
            context = self._text(request, "CONTEXT")
            seq = self._get(request, "SEQUENCE_IDS")
            return pp.qa_result(
                self._get(request, "start_logits"),
                self._get(request, "end_logits"),
                seq == 1,
                offsets,
                context,
                pp.MAX_ANSWER_TOKENS,
            )
        if self.task == "embed":
            hidden = self._get(request, "last_hidden_state")[None]
            return pp.embed_result(hidden, mask[None], self.cfg["pooling"])
        logits = self._get(request, "logits")
        id2label = self.cfg["id2label"]
        if self.task == "seq-cls":
            return pp.seq_cls_result(logits, id2label)
        if self.task == "rerank":
            return pp.rerank_result(logits)
        text = self._text(request, "TEXT")
        if self.task == "token-cls":
            word_ids = [None if w < 0 else int(w) for w in self._get(request, "WORD_IDS")]
            return pp.token_cls_result(logits, word_ids, offsets, text, id2label)
        ids = self._get(request, "IDS")
        positions = np.flatnonzero((ids == self.tok.mask_token_id) & (mask > 0)).tolist()
        if not positions:
            raise ValueError(f"TEXT has no {self.tok.mask_token} to fill")
        return pp.mlm_result(logits, positions, offsets, lambda t: self.tok.decode([t]), int(self.cfg["top_k"]))

    def execute(self, requests):
        self._warn()
        responses = []
        for request in requests:
            try:
                line = json.dumps(self._result(request), ensure_ascii=False)
                out = pb_utils.Tensor("JSON", np.array([[line.encode("utf-8")]], dtype=np.object_))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # one bad request never fails the others in the batch
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc).splitlines()[0]))
                )
        return responses
