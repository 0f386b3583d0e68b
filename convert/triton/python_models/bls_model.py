"""Triton Python-backend BLS model: the trunk once, then only the heads a request asks for.

``bls.json`` beside this file names the models (written by edge export-triton): the trunk, and
per task its head model, the taps it reads and its output. A request sends the frame and may set
the parameter ``tasks`` ("defect,mask"; default every task) and the parameter ``when``
("mask: defect != ok; angle: defect in [scratch, hole]"): a task with a condition runs only when
a classification task of the same request (run first) decoded to a label that meets it, on any
frame of the request. The response holds the outputs of the tasks that ran. The trunk's output
tensors are handed to the heads as they are (no copy).
"""

from __future__ import annotations

import json
import os
from typing import Any

import triton_python_backend_utils as pb_utils

OPS = ("not in", "in", "!=", "==")


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

    def _conditions(self, request: Any, tasks: list[str]) -> dict[str, tuple[str, str, set[str]]]:
        """``when`` -> {task: (classification task, op, labels)}."""
        params = json.loads(request.parameters() or "{}")
        out = {}
        for clause in str(params.get(self.plan["when_parameter"]) or "").split(";"):
            if not clause.strip():
                continue
            task, _, cond = clause.partition(":")
            task, cond = task.strip(), cond.strip()
            op = next((o for o in OPS if f" {o} " in f" {cond} "), "")
            other, _, value = cond.partition(f" {op} ") if op else ("", "", "")
            other = other.strip()
            labels = {v.strip(" '\"") for v in value.strip().strip("[]").split(",") if v.strip()}
            known = self.plan["labels"].get(other)
            if task not in self.plan["tasks"] or known is None or not labels or not op:
                raise ValueError(
                    f"condition '{clause.strip()}': expected 'TASK: OTHER ==|!=|in|not in LABEL' "
                    f"with OTHER a classification task {sorted(self.plan['labels'])}"
                )
            if labels - set(known):
                raise ValueError(f"condition '{clause.strip()}': {other} has labels {known}")
            if other == task or other not in tasks:
                raise ValueError(f"condition '{clause.strip()}': {other} must be among {tasks}")
            out[task] = (other, op, labels)
        return out

    def _holds(self, cond: tuple[str, str, set[str]], decoded: dict[str, list[str]]) -> bool:
        other, op, labels = cond
        got = decoded.get(other, [])
        if op in ("==", "in"):
            return any(g in labels for g in got)
        return any(g not in labels for g in got)

    def _one(self, request: Any) -> Any:
        tasks = self._tasks(request)
        conditions = self._conditions(request, tasks)
        tasks = [t for t in tasks if t not in conditions] + [t for t in tasks if t in conditions]
        image = pb_utils.get_input_tensor_by_name(request, self.plan["input"])
        needed = sorted({n for t in tasks for n in self.plan["tasks"][t]["inputs"]})
        trunk = pb_utils.InferenceRequest(
            model_name=self.plan["trunk"], requested_output_names=needed, inputs=[image]
        ).exec()
        if trunk.has_error():
            raise RuntimeError(f"trunk {self.plan['trunk']}: {trunk.error().message()}")
        taps = {n: pb_utils.get_output_tensor_by_name(trunk, n) for n in needed}
        outputs = []
        decoded: dict[str, list[str]] = {}
        for task in tasks:
            if task in conditions and not self._holds(conditions[task], decoded):
                continue
            head = self.plan["tasks"][task]
            reply = pb_utils.InferenceRequest(
                model_name=head["model"],
                requested_output_names=[head["output"]],
                inputs=[taps[n] for n in head["inputs"]],
            ).exec()
            if reply.has_error():
                raise RuntimeError(f"head {head['model']}: {reply.error().message()}")
            out = pb_utils.get_output_tensor_by_name(reply, head["output"])
            outputs.append(out)
            if task in self.plan["labels"]:
                logits = out.as_numpy().reshape(out.as_numpy().shape[0], -1)
                decoded[task] = [self.plan["labels"][task][int(i)] for i in logits.argmax(1)]
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
