"""Serving bundles on NVIDIA Triton Inference Server (docs/serving.md).

- ``repository.write_repository``: a Triton model repository from a bundle (``bert-export triton``):
  the graph on the onnxruntime or tensorrt backend, Python-backend tokenizer and post-processing
  models, and an ensemble that takes text and returns ``run --json``'s JSON.
- ``server.serve``: a real Triton server through PyTriton with the bundle's runner inside
  (``bert-export serve``).

Everything here needs the ``serve`` extra (``pip install bert-export[serve]``); ``deps.require_serve``
checks it before any work starts.
"""
