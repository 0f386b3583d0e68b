"""Placement policy (calib/placement.py): which weighted ops stay float, and exact input scales."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.calib.collect import BatchRunner
from edge.calib.placement import Placement, exact_input_scales, exact_step
from edge.calib.qdq import qdq_problems, qdq_tensors, quantize_model


def _graph(nodes: list, inits: list, inp: tuple, out: tuple, elem: int = TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", elem, list(inp))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _w(name: str, *shape: int) -> onnx.TensorProto:
    rng = np.random.default_rng(len(name))
    return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)


def _pooled_classifier() -> onnx.ModelProto:
    """conv 8 -> 32 -> conv 32 -> 4 -> [mean, max] concat -> Gemm (batch 1)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["b"]),
        helper.make_node("Conv", ["r", "w3"], ["c"]),
        helper.make_node("ReduceMean", ["c"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMax", ["c"], ["max"], axes=[2, 3], keepdims=0),
        helper.make_node("Concat", ["mean", "max"], ["feat"], axis=1),
        helper.make_node("Gemm", ["feat", "wf"], ["y"], transB=1),
    ]
    inits = [_w("w1", 32, 32, 3, 3), _w("w2", 4, 32, 1, 1), _w("w3", 32, 32, 1, 1), _w("wf", 5, 64)]
    return _graph(nodes, inits, (1, 32, 8, 8), (1, 5))


AMAXES = {"x": 3.0, "a": 9.0, "r": 9.0, "b": 4.0, "c": 40.0, "mean": 2.0, "max": 44.0, "feat": 44.0}


def test_tensorrt_placement_keeps_tiny_convs_and_batch1_gemm_float_with_reasons() -> None:
    model = _pooled_classifier()
    q, plan = quantize_model(model, AMAXES)
    d = plan.decisions
    assert d["a"]["precision"] == "int8" and d["c"]["precision"] == "int8"
    assert d["b"]["precision"] == "float" and "4 output channels < 16" in d["b"]["reason"]
    assert d["y"]["precision"] == "float" and "batch-1" in d["y"]["reason"]
    assert set(plan.float_nodes) == {"b", "y"}
    assert qdq_problems(q, float_nodes=plan.float_nodes) == []
    assert plan.summary()["decisions"] == d
    # the same graph with every op quantized (the old behaviour)
    _, everything = quantize_model(model, AMAXES, placement=Placement.everything())
    assert everything.float_nodes == [] and "feat" in everything.activations


def test_mixed_ranges_under_one_scale_stay_float() -> None:
    model = _pooled_classifier()
    no_gemm_rule = Placement(float_batch1_gemm=False)
    _, plan = quantize_model(model, AMAXES, placement=no_gemm_rule)
    assert plan.decisions["y"]["precision"] == "float"
    assert "mixed ranges" in plan.decisions["y"]["reason"] and "44" in plan.decisions["y"]["reason"]
    _, close = quantize_model(model, {**AMAXES, "max": 3.0}, placement=no_gemm_rule)
    assert close.decisions["y"]["precision"] == "int8"
    # what a Q/DQ-only calibration collects includes the Concat's sources, so the rule can run
    needed = qdq_tensors(model, placement=no_gemm_rule)
    assert {"mean", "max"} <= set(needed)


def test_input_channels_below_16_keep_a_conv_float() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    model = _graph(nodes, [_w("w", 32, 3, 1, 1)], (1, 3, 4, 4), (1, 32, 4, 4))
    _, plan = quantize_model(model, {"x": 1.0})
    assert "3 input channels" in plan.decisions["y"]["reason"]


def _uint8_preprocessing(mean: list[float], inv_std: list[float]) -> onnx.ModelProto:
    """uint8 NHWC image -> transpose -> cast -> (x - mean) * inv_std -> conv; and a slice."""
    m = numpy_helper.from_array(np.array(mean, np.float32).reshape(1, 3, 1, 1), "mean")
    k = numpy_helper.from_array(np.array(inv_std, np.float32).reshape(1, 3, 1, 1), "k")
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([2], np.int64), "ends")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["f", "mean"], ["s"]),
        helper.make_node("Mul", ["s", "k"], ["n"]),
        helper.make_node("Slice", ["n", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Conv", ["n", "w"], ["y"]),
    ]
    inits = [m, k, starts, ends, axes, _w("w", 16, 3, 1, 1)]
    return _graph(nodes, inits, (1, 32, 32, 3), (1, 16, 32, 32), TensorProto.UINT8)


def test_exact_scale_of_a_normalised_uint8_input() -> None:
    model = _uint8_preprocessing([128.0] * 3, [1 / 64] * 3)
    scales = exact_input_scales(model, ["s", "n", "sl", "y"])
    assert scales == {"s": 1.0, "n": 1 / 64, "sl": 1 / 64}
    # the scale loses nothing: every uint8 value survives a Q/DQ round trip exactly
    x = np.arange(256, dtype=np.float64)
    n = (x - 128) / 64
    q = np.clip(np.round(n / scales["n"]), -128, 127) * scales["n"]
    assert np.array_equal(q, n)
    # the 2/127 scale of amax 2.0 does not
    q2 = np.clip(np.round(n / (2 / 127)), -128, 127) * (2 / 127)
    assert len(np.unique(q2)) < 256


def test_no_exact_scale_for_per_channel_normalisation() -> None:
    model = _uint8_preprocessing([123.7, 116.3, 103.5], [1 / 58.4, 1 / 57.1, 1 / 57.4])
    assert exact_input_scales(model, ["n"]) == {}
    assert exact_step(np.array([0.0, 0.5, 1.0, 300.0])) is None  # beyond int8
    out = BatchRunner(model, ["n"]).run({"x": np.zeros((1, 32, 32, 3), np.uint8)})
    assert out["n"].shape == (1, 3, 32, 32)
