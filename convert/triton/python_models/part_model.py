"""Triton Python-backend model: one bundle part (``model.onnx`` beside this file) on ONNX Runtime.

Requests that Triton's dynamic batcher hands over together run as one batch (concatenated on the
batch axis, split back per request) when the config batches, else one by one. Copied into the
repository by edge export-triton (flavor ``python``); runs in the stub's Python, not in etr-edge.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], str(args["model_version"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self.outputs, feed))

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        if self.batching and len(feeds) > 1:
            sizes = [len(f[self.inputs[0]]) for f in feeds]
            joined = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
            outs = self._run(joined)
            bounds = np.cumsum(sizes)[:-1]
            per_request = list(zip(*[np.split(o, bounds) for o in outs]))
        else:
            per_request = [tuple(self._run(f)) for f in feeds]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in zip(self.outputs, outs)
                ]
            )
            for outs in per_request
        ]

    def finalize(self) -> None:
        self.session = None
