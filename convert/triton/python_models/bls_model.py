"""Triton Python-backend BLS model: the trunk once, then only the heads a request asks for.

``bls.json`` beside this file names the models (written by edge export-triton): the trunk, and
per task its head model, the taps it reads and its output. A request sends the frame and may set
the parameter ``tasks`` ("defect,mask"; default every task); the response holds those tasks'
outputs only. The trunk's output tensors are handed to the heads as they are (no copy).
"""

from __future__ import annotations

import json
import os
from typing import Any

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        folder = os.path.join(args["model_repository"], str(args["model_version"]))
        with open(os.path.join(folder, "bls.json"), encoding="utf-8") as f:
            self.plan = json.load(f)

    def _tasks(self, request: Any) -> list[str]:
        params = json.loads(request.parameters() or "{}")
        given = params.get(self.plan["parameter"])
        if given is None or given == "":
            return list(self.plan["tasks"])
        tasks = [t.strip() for t in str(given).split(",") if t.strip()]
        unknown = [t for t in tasks if t not in self.plan["tasks"]]
        if unknown:
            raise ValueError(
                f"unknown task(s) {unknown} in parameter '{self.plan['parameter']}'; "
                f"this model has {list(self.plan['tasks'])}"
            )
        return tasks

    def _one(self, request: Any) -> Any:
        tasks = self._tasks(request)
        image = pb_utils.get_input_tensor_by_name(request, self.plan["input"])
        needed = sorted({n for t in tasks for n in self.plan["tasks"][t]["inputs"]})
        trunk = pb_utils.InferenceRequest(
            model_name=self.plan["trunk"], requested_output_names=needed, inputs=[image]
        ).exec()
        if trunk.has_error():
            raise RuntimeError(f"trunk {self.plan['trunk']}: {trunk.error().message()}")
        taps = {n: pb_utils.get_output_tensor_by_name(trunk, n) for n in needed}
        outputs = []
        for task in tasks:
            head = self.plan["tasks"][task]
            reply = pb_utils.InferenceRequest(
                model_name=head["model"],
                requested_output_names=[head["output"]],
                inputs=[taps[n] for n in head["inputs"]],
            ).exec()
            if reply.has_error():
                raise RuntimeError(f"head {head['model']}: {reply.error().message()}")
            outputs.append(pb_utils.get_output_tensor_by_name(reply, head["output"]))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as e:  # the client gets the message; the model lives on
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(str(e))
                    )
                )
        return responses
