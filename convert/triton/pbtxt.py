"""Triton ``config.pbtxt`` text (protobuf text format) for one model of the repository.

Only the fields etr-edge sets: name, platform/backend, max_batch_size, inputs/outputs, dynamic
batching, instance groups, ensemble steps, parameters. Dims exclude the batch dimension when
``max_batch_size`` > 0 (Triton adds it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge.runtime.backends.triton import TRITON_DTYPES


@dataclass(frozen=True)
class Tensor:
    """One input or output: numpy dtype name and dims (without the batch dim when batching)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class Step:
    """One ensemble step: ``model`` with {its tensor: ensemble tensor} maps."""

    model: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]


@dataclass(frozen=True)
class ModelSpec:
    """Everything one config.pbtxt says. ``platform`` xor ``backend``."""

    name: str
    inputs: Sequence[Tensor]
    outputs: Sequence[Tensor]
    max_batch_size: int
    platform: str = ""
    backend: str = ""
    queue_delay_us: int | None = None
    """None: no dynamic batching (ensembles, unbatched models)."""
    instances: int = 0
    """0: no instance group (ensembles)."""
    kind: str = "KIND_AUTO"
    steps: Sequence[Step] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    default_model_filename: str = ""


def _q(text: str) -> str:
    return json.dumps(text)  # a protobuf text string literal is a JSON string for our names


def _tensor(t: Tensor) -> str:
    dims = ", ".join(str(d) for d in t.dims) or ""
    opt = " optional: true" if t.optional else ""
    return (
        f"  {{ name: {_q(t.name)} data_type: TYPE_{TRITON_DTYPES[t.dtype]} dims: [ {dims} ]{opt} }}"
    )


def render(spec: ModelSpec) -> str:
    """The config.pbtxt text of ``spec``."""
    lines = [f"name: {_q(spec.name)}"]
    if spec.platform:
        lines.append(f"platform: {_q(spec.platform)}")
    if spec.backend:
        lines.append(f"backend: {_q(spec.backend)}")
    if spec.default_model_filename:
        lines.append(f"default_model_filename: {_q(spec.default_model_filename)}")
    lines.append(f"max_batch_size: {spec.max_batch_size}")
    for key, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        lines.append(f"{key} [")
        lines.append(",\n".join(_tensor(t) for t in tensors))
        lines.append("]")
    if spec.queue_delay_us is not None and spec.max_batch_size > 0:
        lines.append(
            f"dynamic_batching {{ max_queue_delay_microseconds: {int(spec.queue_delay_us)} }}"
        )
    if spec.instances > 0:
        lines.append(f"instance_group [ {{ count: {spec.instances} kind: {spec.kind} }} ]")
    if spec.steps:
        lines.append("ensemble_scheduling {\n  step [")
        steps = []
        for s in spec.steps:
            maps = [
                f"      input_map {{ key: {_q(k)} value: {_q(v)} }}" for k, v in s.inputs.items()
            ]
            maps += [
                f"      output_map {{ key: {_q(k)} value: {_q(v)} }}" for k, v in s.outputs.items()
            ]
            body = "\n".join(maps)
            steps.append(
                f"    {{\n      model_name: {_q(s.model)}\n      model_version: -1\n{body}\n    }}"
            )
        lines.append(",\n".join(steps))
        lines.append("  ]\n}")
    for key, value in spec.parameters.items():
        lines.append(f"parameters {{ key: {_q(key)} value: {{ string_value: {_q(value)} }} }}")
    return "\n".join(lines) + "\n"
