"""Where INT8 pays on TensorRT: which weighted ops of a graph get Q/DQ, and why (``Placement``).

``qdq.plan_qdq`` asks ``Placement.float_reason`` about every Conv/ConvTranspose/Gemm/MatMul with
a quantizable activation input; a non-empty reason leaves the op in float and is recorded in
the plan (``QdqPlan.decisions``, shown in report.json / report.md). The default rules:

- **tiny convolutions** (fewer than ``min_conv_channels`` = 16 output or input channels):
  TensorRT's INT8 kernels work on channel groups of 32 (16 for the smallest tactics); a conv
  with a few channels pads them and runs no faster in INT8 than in FP16, but it pays the
  rounding: of a logit map on its output (the 8 -> 2 mask classifier), or of a thin early
  feature map on its input (14 channels at full resolution, which every task reads);
- **batch-1 Gemm / MatMul** (the row count of the activation is 1): a 1 x K by K x N product is
  a memory-bound GEMV whose time is reading the weights; INT8 saves nothing worth the rounding of
  a classifier's input;
- **one scale over features of very different range**: an activation input that is a Concat
  (through reshapes) of sources whose calibrated amax differs more than ``max_range_ratio``
  (4x) times, e.g. a global average (amax ~2) next to a global max (amax ~44) of the same
  features: one per-tensor scale leaves the small half a handful of levels. Such an op stays
  float (a Q/DQ before the Concat would not help: the op itself still reads one scale).

``Placement.everything()`` turns all of them off (every weighted op quantized).

``exact_input_scales``: a graph whose input is uint8 and whose in-graph preprocessing is
``(x - mean) * k`` takes at most 256 values per channel; when they are all multiples of one step
and fit int8 (e.g. ``(x - 128) / 64``: step 1/64), that step is a scale that loses nothing,
where a calibrated amax of 2.0 (scale 2/127) has 254 levels for 256 values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from edge.calib.collect import ALIAS_OPS, BatchRunner, constant_tensors, tensor_types

MIN_CONV_CHANNELS = 16
MAX_RANGE_RATIO = 4.0
_UINT8_TYPES = (TensorProto.UINT8,)


@dataclass(frozen=True)
class Placement:
    """The rules that keep a weighted op in float (see the module docstring); 0 turns one off."""

    min_conv_channels: int = MIN_CONV_CHANNELS
    float_batch1_gemm: bool = True
    max_range_ratio: float = MAX_RANGE_RATIO

    @classmethod
    def everything(cls) -> Placement:
        """Quantize every weighted op that has a calibrated activation input."""
        return cls(min_conv_channels=0, float_batch1_gemm=False, max_range_ratio=0.0)

    def float_reason(
        self,
        node: onnx.NodeProto,
        weight_shape: tuple[int, ...] | None,
        rows: int | None,
        concat_sources: Mapping[str, Collection[str]],
        amaxes: Mapping[str, float],
    ) -> str:
        """Why ``node`` should stay float ('' to quantize it).

        ``weight_shape``: its initializer weight's shape (None if it has none); ``rows``: the
        row count of its activation input (Gemm/MatMul; None if unknown); ``concat_sources``:
        activation tensor -> the tensors a Concat joined into it; ``amaxes``: calibrated ranges.
        """
        op = node.op_type
        if self.min_conv_channels and op in ("Conv", "ConvTranspose") and weight_shape:
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            if op == "Conv":  # weight (out, in / groups, k...)
                outs, ins = weight_shape[0], weight_shape[1] * groups
            else:  # ConvTranspose: (in, out / groups, k...)
                outs, ins = weight_shape[1] * groups, weight_shape[0]
            for what, channels in (("output", outs), ("input", ins)):
                if channels < self.min_conv_channels:
                    return (
                        f"tiny conv: {channels} {what} channels < {self.min_conv_channels} "
                        "(no INT8 speed-up on TensorRT)"
                    )
        if self.float_batch1_gemm and op in ("Gemm", "MatMul") and rows == 1:
            return "batch-1 Gemm/MatMul: a weight-bound GEMV, no INT8 speed-up"
        if self.max_range_ratio:
            for t in node.input[:1]:
                srcs = [s for s in concat_sources.get(t, ()) if s in amaxes]
                ranges = [amaxes[s] for s in srcs if amaxes[s] > 0]
                if len(ranges) >= 2 and max(ranges) > self.max_range_ratio * min(ranges):
                    return (
                        f"mixed ranges under one scale: '{t}' concatenates amax "
                        f"{min(ranges):.3g} .. {max(ranges):.3g} "
                        f"(> {self.max_range_ratio:g}x)"
                    )
        return ""


def concat_sources(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Tensor -> the inputs of the Concat that made it (looking through ``ALIAS_OPS``)."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    const = constant_tensors(model)
    out: dict[str, list[str]] = {}
    for t in producer:
        node, seen = producer[t], 0
        while node.op_type in ALIAS_OPS and node.input and node.input[0] in producer and seen < 64:
            node, seen = producer[node.input[0]], seen + 1
        if node.op_type == "Concat":
            out[t] = [i for i in node.input if i and i not in const]
    return out


def activation_rows(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor -> its row count (the second-to-last dimension; the first of a 2-D tensor) where
    shape inference knows it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes are a help here, not a requirement
        return {}
    rows: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[-2].HasField("dim_value"):
            rows[vi.name] = int(dims[-2].dim_value)
    return rows


def _all_values_feed(model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """Every uint8 input filled so that each channel runs through all 256 values (None when an
    input is not uint8 or has an unknown dimension besides the batch)."""
    types = tensor_types(model)
    feed: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if types.get(vi.name) not in _UINT8_TYPES:
            return None
        dims = [
            d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim
        ]
        shape = [dims[0] or 1, *dims[1:]]
        if not all(shape):
            return None
        n = int(np.prod(shape))
        channels = shape[-1] if shape[-1] <= 4 else 1  # HWC: repeat each value across channels
        feed[vi.name] = ((np.arange(n) // channels) % 256).astype(np.uint8).reshape(shape)
    return feed or None


def exact_step(values: np.ndarray, tol: float = 1e-6) -> float | None:
    """A scale ``s`` with every value an integer multiple of it in [-128, 127], or None."""
    v = np.unique(np.asarray(values, dtype=np.float64))
    if v.size < 2:
        return None
    step = float(np.min(np.diff(v)))
    if step <= 0:
        return None
    # snap to the float32 step, then check every value lands on the integer grid
    step = float(np.float32(step))
    q = v / step
    if np.max(np.abs(q - np.round(q))) > tol * max(1.0, float(np.max(np.abs(q)))):
        return None
    if q.min() < -128.5 or q.max() > 127.5:
        return None
    return step


ELEMENTWISE_OPS = frozenset({"Cast", "Sub", "Add", "Mul", "Div", *ALIAS_OPS})
"""Ops of an in-graph preprocessing chain: every output value comes from one input value."""

SELECTING_OPS = frozenset({"Slice", "Gather", "Split", "MaxPool"})
"""Ops whose outputs only hold (some of) the values of their first input."""


def exact_input_scales(model: onnx.ModelProto, tensors: Collection[str]) -> dict[str, float]:
    """For each of ``tensors`` computed from the uint8 input alone by elementwise ops (the
    preprocessing chain: cast, subtract, multiply, transpose): the scale that represents every
    value it can take exactly (``exact_step`` over all 256 inputs per channel), if there is
    one; a tensor selecting values of such a tensor (a Slice, a MaxPool) gets its scale.
    Empty when the graph input is not uint8."""
    feed = _all_values_feed(model)
    if feed is None:
        return {}
    const = constant_tensors(model)
    region, picks = set(feed), {}
    for node in model.graph.node:
        ins = [i for i in node.input if i and i not in const]
        if not ins:
            continue
        if node.op_type in ELEMENTWISE_OPS and all(i in region for i in ins):
            region.update(o for o in node.output if o)
        elif node.op_type in SELECTING_OPS and node.input[0] in region:
            picks.update({o: node.input[0] for o in node.output if o})
    wanted = [t for t in tensors if t in region and t not in feed]
    if not wanted:
        return {}
    out = BatchRunner(model, wanted).run(feed)
    scales = {}
    for t in wanted:
        if np.issubdtype(out[t].dtype, np.floating):
            step = exact_step(out[t])
            if step is not None:
                scales[t] = step
    for t in tensors:
        src = picks.get(t)
        while src is not None and src not in scales:
            src = picks.get(src)
        if src is not None:
            scales[t] = scales[src]
    return scales


def placement_markdown(qdq: Mapping[str, Mapping[str, object]], part: str = "fused") -> list[str]:
    """report.md's table of ``part``'s weighted ops: INT8 or float, and why."""
    decisions = qdq.get(part, {}).get("decisions") if qdq else None
    if not isinstance(decisions, Mapping) or not decisions:
        return []
    lines = [
        "",
        f"## Placement ({part} graph): which weighted ops run in INT8",
        "",
        "| op | output | precision | reason |",
        "|---|---|---|---|",
    ]
    for key, d in decisions.items():
        lines.append(f"| {d['op']} | `{key}` | {d['precision']} | {d['reason']} |")
    return lines
