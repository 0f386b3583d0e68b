"""Explicit quantization: Q/DQ ONNX models the way TensorRT wants them (and ONNX Runtime runs).

Rules (TensorRT developer guide, "Q/DQ layer-placement recommendations"):

- symmetric int8: every zero point is an int8 0; scale = amax / 127 (the cache's number);
- weights of Conv / ConvTranspose / Gemm / MatMul: per-channel scales (max |w| / 127 per output
  channel: axis 0 for Conv, 1 for ConvTranspose, the output axis of Gemm/MatMul);
- activations: per-tensor Q/DQ (no ``axis`` attribute) on the inputs of those weighted ops and on
  the *residual* input of an Add whose other input comes straight from a weighted op (so TensorRT
  fuses conv + add and the add runs in INT8);
- outputs of weighted ops are left unquantized; nothing is quantized before the first float
  tensor (the uint8 ``image`` and the in-graph preprocessing that casts and normalises it);
- biases stay float (TensorRT quantizes nothing else and rejects int32 bias DequantizeLinear).

Weights are stored as float initializers followed by a QuantizeLinear/DequantizeLinear pair with
the per-channel scales, not as int8 initializers + DequantizeLinear: TensorRT 8.x's ONNX parser
rejects a DequantizeLinear fed by int8 weights ("only activation types allowed as input to this
layer", NVIDIA/TensorRT#2163, onnxruntime#14229), while every TensorRT from 8.0 to 10.x/11 accepts
the float-weight pair and quantizes the weights itself with those scales at build time; ONNX
Runtime runs both forms (it constant-folds the weight QuantizeLinear).

Placement (``edge.calib.placement.Placement``): weighted ops where INT8 does not pay on TensorRT
(tiny convs, batch-1 Gemms, an input concatenating very different ranges) stay float; every
weighted op's choice and its reason is in ``QdqPlan.decisions``.

Mixed precision: ``keep_float`` tensors get no Q/DQ, and a weighted op whose activation input is
kept float is left entirely in float (its weights too); ``keep_float_nodes`` (nodes named by
their first output) are left in float the same way, which is how a whole head stays FP32.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.calib.algorithms import MIN_AMAX, scale_from_amax
from edge.calib.collect import FLOAT_TYPES, WEIGHTED_OPS, constant_tensors, tensor_types
from edge.calib.placement import Placement, activation_rows, concat_sources
from edge.core.errors import CalibrationError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
MIN_OPSET = 13
"""Per-channel (``axis``) DequantizeLinear needs opset 13."""


@dataclass(frozen=True)
class QdqPlan:
    """Where Q/DQ pairs go in one graph.

    ``activations``: tensor -> per-tensor scale. ``weights``: initializer -> axis of its
    per-channel scales. ``float_nodes``: weighted ops left in float (mixed precision), by first
    output. ``kept_float``: tensors that the rules would quantize but were kept float.
    """

    activations: dict[str, float] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    float_nodes: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    residual_inputs: list[tuple[str, int]] = field(default_factory=list)
    """(Add node, input index) pairs that read the dequantized residual."""
    decisions: dict[str, dict[str, str]] = field(default_factory=dict)
    """Weighted op (``node_key``) -> {"op", "precision": "int8" | "float", "reason"}."""

    def summary(self) -> dict[str, object]:
        return {
            "activation_qdq": len(self.activations),
            "weight_qdq": len(self.weights),
            "float_weighted_ops": len(self.float_nodes),
            "kept_float": list(self.kept_float),
            "decisions": {k: dict(v) for k, v in self.decisions.items()},
        }


def node_key(node: onnx.NodeProto) -> str:
    """How nodes are named here: by their first output (unique in a graph, unlike node names)."""
    return node.output[0] if node.output else node.name


def weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> int:
    """The output-channel axis of a weighted op's weight (per-channel scales run along it)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return weight.ndim - 1  # MatMul: (..., K, N)


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            if i:
                users.setdefault(i, []).append(node)
    return users


def _preprocessing(model: onnx.ModelProto, types: Mapping[str, int]) -> set[str]:
    """Tensors computed from non-float graph inputs before any weighted op (the in-graph
    preprocessing chain: cast, normalise, transpose), the non-float inputs included."""
    region = {i.name for i in model.graph.input if types.get(i.name) not in FLOAT_TYPES}
    const = constant_tensors(model)
    for node in model.graph.node:
        ins = [i for i in node.input if i and i not in const]
        if node.op_type not in WEIGHTED_OPS and ins and all(i in region for i in ins):
            region.update(o for o in node.output if o)
    return region


def plan_qdq(
    model: onnx.ModelProto,
    amaxes: Mapping[str, float] | None,
    *,
    keep_float: Collection[str] = (),
    keep_float_nodes: Collection[str] = (),
    placement: Placement | None = None,
) -> QdqPlan:
    """Decide every Q/DQ pair of ``model`` (see the module docstring for the rules;
    ``placement``: default ``Placement()``). ``amaxes`` None: placement only, every activation at
    amax 1 (which tensors a plan needs)."""
    if any(n.op_type in QDQ_OPS for n in model.graph.node):
        raise CalibrationError(
            f"graph '{model.graph.name}' already has QuantizeLinear/DequantizeLinear nodes; "
            "calibrate the float model from edge convert, not a quantized one"
        )
    if _opset(model) < MIN_OPSET:
        raise CalibrationError(
            f"graph '{model.graph.name}' uses opset {_opset(model)}; per-channel Q/DQ needs "
            f"opset >= {MIN_OPSET}: re-run edge convert with --opset 13 or newer"
        )
    types = tensor_types(model)
    const = constant_tensors(model)
    inits = {t.name: t for t in model.graph.initializer}
    pre = _preprocessing(model, types)
    producer = {o: n for n in model.graph.node for o in n.output if o}
    keep, keep_nodes = set(keep_float), set(keep_float_nodes)
    policy = Placement() if placement is None else placement
    joined = concat_sources(model)
    rows = activation_rows(model)
    plan = QdqPlan()

    def quantizable(t: str) -> bool:
        return t not in const and types.get(t, TensorProto.FLOAT) in FLOAT_TYPES

    def want(t: str) -> bool:
        """Record an activation Q/DQ on ``t`` (False if it is kept float)."""
        if t in keep:
            if t not in plan.kept_float:
                plan.kept_float.append(t)
            return False
        if amaxes is None:
            plan.activations[t] = scale_from_amax(1.0)
            return True
        if t not in amaxes:
            raise CalibrationError(
                f"graph '{model.graph.name}': tensor '{t}' needs a Q/DQ pair but has no "
                "calibrated range; the statistics do not belong to this graph: re-run calibration"
            )
        plan.activations[t] = scale_from_amax(amaxes[t])
        return True

    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        data = list(node.input[:2])
        acts = [t for t in data if t and quantizable(t)]
        weights = [t for t in data if t in inits and inits[t].data_type in FLOAT_TYPES]
        # only float initializer weights at input 1 get per-channel Q/DQ; anything else
        # constant (a Constant node, a constant first input) leaves the op in float
        odd = (data and data[0] in const) or any(t in const and t not in weights for t in data[1:])
        key = node_key(node)
        shape = tuple(inits[weights[0]].dims) if weights else None
        reason = ""
        if key in keep_nodes:
            reason = "kept float (--keep-float-head)"
        elif any(t in keep for t in acts):
            reason = "kept float (--keep-float)"
        elif not acts or odd:
            reason = "no calibrated activation input or a non-initializer weight"
        else:
            reason = policy.float_reason(node, shape, rows.get(data[0]), joined, amaxes or {})
        if reason:
            plan.float_nodes.append(key)
            plan.kept_float.extend(t for t in acts if t in keep and t not in plan.kept_float)
            plan.decisions[key] = {"op": node.op_type, "precision": "float", "reason": reason}
            continue
        what = f"{shape[0 if node.op_type == 'Conv' else -1]} outputs" if shape else "activations"
        plan.decisions[key] = {"op": node.op_type, "precision": "int8", "reason": what}
        for t in acts:
            want(t)
        for w in weights:
            plan.weights[w] = weight_axis(node, numpy_helper.to_array(inits[w]))
    for node in model.graph.node:
        if node.op_type != "Add" or node_key(node) in keep_nodes:
            continue
        ins = [t for t in node.input if t]
        if len(ins) != 2 or not all(quantizable(t) for t in ins) or any(t in pre for t in ins):
            continue
        from_weighted = [t in producer and producer[t].op_type in WEIGHTED_OPS for t in ins]
        if sum(from_weighted) == 1:
            k = from_weighted.index(False)
            if want(ins[k]):
                plan.residual_inputs.append((node_key(node), list(node.input).index(ins[k])))
    return plan


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def _weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w.astype(np.float64)).max(axis=other) if other else np.abs(w.astype(np.float64))
    return (np.maximum(amax, MIN_AMAX) / 127.0).astype(np.float32)


def apply_qdq(model: onnx.ModelProto, plan: QdqPlan) -> onnx.ModelProto:
    """A copy of ``model`` with the Q/DQ pairs of ``plan`` inserted (topological order kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    taken = {t.name for t in g.initializer} | {i.name for i in g.input}
    taken |= {o for n in g.node for o in n.output} | {n.name for n in g.node}
    inits = {t.name: t for t in g.initializer}
    dq_of: dict[str, str] = {}
    new_inits: list[TensorProto] = []
    pairs: dict[str, list[onnx.NodeProto]] = {}

    def pair(t: str, scale: np.ndarray, axis: int | None) -> list[onnx.NodeProto]:
        s = _unique(f"{t}_scale", taken)
        z = _unique(f"{t}_zero_point", taken)
        q, dq = _unique(f"{t}_quantized", taken), _unique(f"{t}_dequantized", taken)
        new_inits.append(numpy_helper.from_array(scale.astype(np.float32), s))
        new_inits.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), z))
        kw: dict[str, Any] = {} if axis is None else {"axis": axis}
        dq_of[t] = dq
        qname = _unique(f"{t}_QuantizeLinear", taken)
        dqname = _unique(f"{t}_DequantizeLinear", taken)
        return [
            helper.make_node("QuantizeLinear", [t, s, z], [q], qname, **kw),
            helper.make_node("DequantizeLinear", [q, s, z], [dq], dqname, **kw),
        ]

    head: list[onnx.NodeProto] = []
    for w, axis in plan.weights.items():
        head += pair(w, _weight_scales(numpy_helper.to_array(inits[w]), axis), axis)
    for t, scale in plan.activations.items():
        pairs[t] = pair(t, np.asarray(scale, dtype=np.float32), None)
    graph_inputs = {i.name for i in g.input} | set(inits)
    head += [n for t, p in pairs.items() if t in graph_inputs for n in p]

    float_nodes = set(plan.float_nodes)
    residuals = set(plan.residual_inputs)
    nodes: list[onnx.NodeProto] = list(head)
    for node in g.node:
        key = node_key(node)
        if node.op_type in WEIGHTED_OPS and key not in float_nodes:
            for k in range(min(2, len(node.input))):
                if node.input[k] in dq_of:
                    node.input[k] = dq_of[node.input[k]]
        for k, t in enumerate(node.input):
            if (key, k) in residuals:
                node.input[k] = dq_of[t]
        nodes.append(node)
        for o in node.output:
            if o in pairs and o not in graph_inputs:
                nodes += pairs[o]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    return out


def quantize_model(
    model: onnx.ModelProto,
    amaxes: Mapping[str, float],
    *,
    keep_float: Collection[str] = (),
    keep_float_nodes: Collection[str] = (),
    placement: Placement | None = None,
) -> tuple[onnx.ModelProto, QdqPlan]:
    """The Q/DQ model of ``model`` for the calibrated ``amaxes`` (tensor -> amax), and its plan."""
    plan = plan_qdq(
        model,
        amaxes,
        keep_float=keep_float,
        keep_float_nodes=keep_float_nodes,
        placement=placement,
    )
    return apply_qdq(model, plan), plan


# ------------------------------------------------------------------------------ structural check
def _init_array(inits: Mapping[str, TensorProto], name: str) -> np.ndarray | None:
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _check_pair_params(node: onnx.NodeProto, inits: Mapping[str, TensorProto]) -> list[str]:
    where = f"{node.op_type} '{node.name}'"
    if len(node.input) < 3 or not node.input[2]:
        return [f"{where}: no zero point (TensorRT needs an explicit int8 zero point of 0)"]
    scale, zp = _init_array(inits, node.input[1]), _init_array(inits, node.input[2])
    problems = []
    if scale is None or zp is None:
        return [f"{where}: scale and zero point must be initializers"]
    if scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        problems.append(f"{where}: scale must be positive finite float32, got {scale.dtype}")
    if zp.dtype != np.int8 or np.any(zp != 0):
        problems.append(f"{where}: zero point must be int8 zeros (symmetric), got {zp.dtype}")
    if zp.shape != scale.shape:
        problems.append(f"{where}: zero point shape {zp.shape} != scale shape {scale.shape}")
    return problems


def qdq_problems(model: onnx.ModelProto, *, float_nodes: Collection[str] = ()) -> list[str]:
    """Every way ``model`` breaks the Q/DQ rules of this module (empty list: it follows them).

    Checked: symmetric int8 parameters on every Q/DQ; each Q feeds only DQs with the same scale;
    every Conv/ConvTranspose/Gemm/MatMul reads its activation inputs and its weight through a
    DequantizeLinear, unless it is one of ``float_nodes`` (then it reads neither); weight
    scales are per channel along the output axis (axis 0 for Conv) with one scale per output
    channel; activation scales are per tensor; no Q/DQ sits right after a weighted op's output
    unless it only feeds weighted ops; nothing quantizes a non-float tensor.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output if o}
    users = _consumers(model)
    types = tensor_types(model)
    floats = set(float_nodes)
    problems: list[str] = []
    for node in g.node:
        if node.op_type in QDQ_OPS:
            problems += _check_pair_params(node, inits)
        if node.op_type == "QuantizeLinear":
            src = node.input[0]
            if types.get(src, TensorProto.FLOAT) not in FLOAT_TYPES:
                problems.append(f"QuantizeLinear '{node.name}' quantizes non-float '{src}'")
            dqs = users.get(node.output[0], [])
            if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
                problems.append(f"QuantizeLinear '{node.name}' must feed DequantizeLinear only")
            for d in dqs:
                if list(d.input[1:3]) != list(node.input[1:3]):
                    problems.append(f"Q/DQ pair on '{src}' uses different scales/zero points")
            p = producer.get(src)
            if p is not None and p.op_type in WEIGHTED_OPS:
                after = [u for d in dqs for u in users.get(d.output[0], [])]
                if any(u.op_type not in WEIGHTED_OPS for u in after):
                    problems.append(
                        f"Q/DQ right after the output '{src}' of {p.op_type} feeds a "
                        "non-weighted op (outputs of weighted ops stay unquantized)"
                    )
            if src not in inits:
                scale = _init_array(inits, node.input[1])
                if scale is not None and scale.size != 1:
                    problems.append(f"activation Q/DQ on '{src}' must be per tensor")
    for node in g.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        key = node_key(node)
        fed = [producer.get(t) for t in node.input[:2]]
        via_dq = [p is not None and p.op_type == "DequantizeLinear" for p in fed]
        if key in floats:
            if any(via_dq):
                problems.append(f"{node.op_type} '{key}' should stay float but reads Q/DQ")
            continue
        if not all(via_dq):
            missing = [t for t, ok in zip(node.input[:2], via_dq) if not ok]
            problems.append(f"{node.op_type} '{key}': inputs {missing} not fed by DequantizeLinear")
            continue
        wdq = fed[1]
        assert wdq is not None
        q = producer.get(wdq.input[0])
        is_weight = q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits
        if not is_weight and wdq.input[0] not in inits:
            continue  # an activation x activation MatMul: both inputs per tensor
        weight = _init_array(inits, q.input[0] if q is not None else wdq.input[0])
        scale = _init_array(inits, wdq.input[1])
        if weight is None or scale is None:
            continue
        axis = weight_axis(node, weight)
        got = next((a.i for a in wdq.attribute if a.name == "axis"), 1)
        if got != axis or scale.shape != (weight.shape[axis],):
            problems.append(
                f"{node.op_type} '{key}': weight scales must be per channel on axis {axis} "
                f"({weight.shape[axis]} scales), got axis {got} with shape {scale.shape}"
            )
    return problems


def check_qdq(model: onnx.ModelProto, *, float_nodes: Collection[str] = (), where: str) -> None:
    """Raise CalibrationError listing every rule ``model`` breaks (see ``qdq_problems``)."""
    problems = qdq_problems(model, float_nodes=float_nodes)
    if problems:
        raise CalibrationError(
            f"{where}: the Q/DQ model breaks {len(problems)} placement rule(s): "
            + "; ".join(problems[:8])
            + ". This is a bug in etr-edge's Q/DQ placement; please report it"
        )


def qdq_tensors(
    model: onnx.ModelProto,
    *,
    keep_float: Collection[str] = (),
    keep_float_nodes: Collection[str] = (),
    placement: Placement | None = None,
) -> list[str]:
    """The activation tensors ``quantize_model`` will need an amax for: what a
    calibration that only produces the Q/DQ model has to collect (a TensorRT cache wants every
    tensor: ``collect.calibration_tensors``), and the sources of any Concat among them (the
    placement compares their ranges)."""
    plan = plan_qdq(
        model,
        None,
        keep_float=keep_float,
        keep_float_nodes=keep_float_nodes,
        placement=placement,
    )
    out = list(plan.activations)
    if (Placement() if placement is None else placement).max_range_ratio:
        joined = concat_sources(model)
        out += [s for t in plan.activations for s in joined.get(t, ()) if s not in out]
    return out
