"""Explicit Q/DQ models (calib/qdq.py): placement rules, checked structurally, and ORT numerics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.calib.collect import BatchRunner, collect_bundle, collect_stats
from edge.calib.data import sample_frames
from edge.calib.placement import Placement
from edge.calib.qdq import check_qdq, plan_qdq, qdq_problems, qdq_tensors, quantize_model
from edge.core.errors import CalibrationError
from edge.core.manifest import load_bundle
from tiny_models import onnx_model

WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose")

ALL = Placement.everything()
"""These tests check the Q/DQ rules on every weighted op of tiny models (whose convs the
default placement would keep float)."""


@pytest.fixture(scope="module")
def calibrated(tiny_bundle: Path) -> dict[str, object]:
    bundle = load_bundle(tiny_bundle)
    parts = {p: onnx.load(bundle.path(p)) for p in bundle.parts}
    frames = sample_frames("synthetic:", bundle.input, count=32, seed=0)
    split = {p: m for p, m in parts.items() if p != "fused"}
    stats = collect_bundle(split, frames.batches(16), input_name="image")
    fused = collect_stats(parts["fused"], ({"image": x} for x in frames.batches(16)))
    amaxes = {p: s.amaxes("entropy") for p, s in stats.items()}
    amaxes["fused"] = fused.amaxes("entropy")
    return {"parts": parts, "amaxes": amaxes, "frames": frames}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _assert_rules(model: onnx.ModelProto) -> None:
    """The placement rules, checked here independently of qdq_problems."""
    prod, inits = _producers(model), _inits(model)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    weighted = [n for n in model.graph.node if n.op_type in WEIGHTED]
    assert weighted
    for node in weighted:
        act, weight = node.input[0], node.input[1]
        assert prod[act].op_type == "DequantizeLinear", f"{node.name} input not dequantized"
        wdq = prod[weight]
        assert wdq.op_type == "DequantizeLinear"
        wq = prod[wdq.input[0]]
        assert wq.op_type == "QuantizeLinear" and wq.input[0] in inits  # float weight + Q/DQ
        w = inits[wq.input[0]]
        scale = inits[wdq.input[1]]
        axis = next(a.i for a in wdq.attribute if a.name == "axis")
        if node.op_type == "Conv":
            assert axis == 0 and scale.shape == (w.shape[0],)
            ref = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
            np.testing.assert_allclose(scale, ref, rtol=1e-6)
        # activations: per tensor
        adq = prod[act]
        assert inits[adq.input[1]].size == 1
        assert not any(a.name == "axis" for a in adq.attribute)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
            assert inits[node.input[1]].dtype == np.float32
        if node.op_type == "QuantizeLinear":
            src = prod.get(node.input[0])
            if src is not None and src.op_type in WEIGHTED:  # right after a weighted op
                for dq in users[node.output[0]]:
                    assert all(u.op_type in WEIGHTED for u in users[dq.output[0]])


@pytest.mark.parametrize("part", ["trunk", "heads/defect", "heads/mask", "fused"])
def test_qdq_models_follow_the_tensorrt_rules(calibrated: dict, part: str) -> None:
    model, plan = quantize_model(
        calibrated["parts"][part], calibrated["amaxes"][part], placement=ALL
    )
    onnx.checker.check_model(model)
    _assert_rules(model)
    assert qdq_problems(model) == []
    assert plan.activations and plan.weights and not plan.float_nodes


def test_no_qdq_in_the_uint8_preprocessing_chain(calibrated: dict) -> None:
    fp32 = calibrated["parts"]["trunk"]
    model, plan = quantize_model(fp32, calibrated["amaxes"]["trunk"], placement=ALL)
    readers: dict[str, set[str]] = {}
    for n in fp32.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    quantized = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert "image" not in quantized
    weights = {t.name for t in fp32.graph.initializer}
    for t in quantized:  # only what a conv (or a residual add) reads: never cast/normalise steps
        assert t in weights or readers[t] & {"Conv", "Gemm", "MatMul", "Add"}, t
    assert "shared_0" in plan.activations  # the first float tensor a conv reads


def test_qdq_models_run_on_onnxruntime_close_to_fp32(calibrated: dict) -> None:
    x = calibrated["frames"].inputs[:16]
    fp = calibrated["parts"]["fused"]
    q, _ = quantize_model(fp, calibrated["amaxes"]["fused"], placement=ALL)
    ref = BatchRunner(fp).run({"image": x})
    got = BatchRunner(q).run({"image": x})
    for name, r in ref.items():
        err = np.abs(got[name] - r).mean() / (np.abs(r).mean() + 1e-12)
        assert err < 0.1, f"{name}: relative error {err:.3f}"
        assert not np.array_equal(got[name], r)  # it really is quantized


def test_scales_are_amax_over_127(calibrated: dict) -> None:
    amaxes = calibrated["amaxes"]["heads/defect"]
    plan = plan_qdq(calibrated["parts"]["heads/defect"], amaxes, placement=ALL)
    for t, s in plan.activations.items():
        assert s == pytest.approx(amaxes[t] / 127.0)


def test_mixed_precision_keeps_tensors_and_nodes_float(calibrated: dict) -> None:
    head = calibrated["parts"]["heads/defect"]
    amaxes = calibrated["amaxes"]["heads/defect"]
    model, plan = quantize_model(head, amaxes, keep_float=["shared_0"], placement=ALL)
    assert "shared_0" not in plan.activations and plan.kept_float == ["shared_0"]
    assert not any(
        n.op_type == "QuantizeLinear" and n.input[0] == "shared_0" for n in model.graph.node
    )
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[0] == "shared_0")
    assert conv.input[1] in _inits(model)  # its weights stay float as well
    assert qdq_problems(model, float_nodes=plan.float_nodes) == []
    everything = [n.output[0] for n in head.graph.node]
    model, plan = quantize_model(head, amaxes, keep_float_nodes=everything, placement=ALL)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _residual_graph() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["skip"]),
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Add", ["c", "skip"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "res",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        [w],
    )
    return onnx_model(graph, 17)


def test_collecting_only_the_qdq_tensors_gives_the_same_model(calibrated: dict) -> None:
    """qdq_tensors lists exactly what quantize_model asks for: statistics of those alone give
    the very same Q/DQ model as statistics of every tensor (what a TensorRT cache needs)."""
    fused, frames = calibrated["parts"]["fused"], calibrated["frames"]
    needed = qdq_tensors(fused, placement=ALL)
    full = calibrated["amaxes"]["fused"]
    assert needed and set(needed) < set(full)
    assert set(needed) == set(plan_qdq(fused, full, placement=ALL).activations)
    only = collect_stats(fused, ({"image": x} for x in frames.batches(16)), tensors=needed)
    assert only.tensors == needed
    q_only, _ = quantize_model(fused, only.amaxes("entropy"), placement=ALL)
    q_full, _ = quantize_model(fused, full, placement=ALL)
    assert q_only.SerializeToString() == q_full.SerializeToString()
    kept = qdq_tensors(fused, keep_float=needed[:1], placement=ALL)
    assert needed[0] not in kept and set(kept) <= set(needed)


def test_residual_add_input_is_quantized_conv_output_is_not() -> None:
    model, plan = quantize_model(
        _residual_graph(), {"x": 1.0, "skip": 1.0, "c": 4.0}, placement=ALL
    )
    assert set(plan.activations) == {"x", "skip"}
    add = next(n for n in model.graph.node if n.op_type == "Add")
    prod = _producers(model)
    assert prod[add.input[0]].op_type == "Conv"  # the fused side stays float
    assert prod[add.input[1]].op_type == "DequantizeLinear"
    assert qdq_problems(model) == []


def test_the_check_catches_broken_models(calibrated: dict) -> None:
    model, _ = quantize_model(
        calibrated["parts"]["heads/defect"], calibrated["amaxes"]["heads/defect"], placement=ALL
    )
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    zp = next(t for t in broken.graph.initializer if t.name.endswith("_zero_point"))
    arr = numpy_helper.to_array(zp).copy()
    arr.flat[0] = 3
    zp.CopyFrom(numpy_helper.from_array(arr, zp.name))
    assert any("zero point" in p for p in qdq_problems(broken))
    bypass = onnx.ModelProto()
    bypass.CopyFrom(model)
    conv = next(n for n in bypass.graph.node if n.op_type == "Conv")
    dq = _producers(bypass)[conv.input[0]]
    conv.input[0] = _producers(bypass)[dq.input[0]].input[0]  # read the float tensor directly
    assert any("not fed by DequantizeLinear" in p for p in qdq_problems(bypass))
    with pytest.raises(CalibrationError, match="placement rule"):
        check_qdq(bypass, where="test")


def test_bad_inputs_are_refused(calibrated: dict) -> None:
    head = calibrated["parts"]["heads/defect"]
    with pytest.raises(CalibrationError, match="no calibrated range"):
        quantize_model(head, {}, placement=ALL)
    q, _ = quantize_model(head, calibrated["amaxes"]["heads/defect"], placement=ALL)
    with pytest.raises(CalibrationError, match="already has"):
        quantize_model(q, calibrated["amaxes"]["heads/defect"], placement=ALL)
    old = _residual_graph()
    old.opset_import[0].version = 11
    with pytest.raises(CalibrationError, match="opset"):
        quantize_model(old, {"x": 1.0, "skip": 1.0}, placement=ALL)
