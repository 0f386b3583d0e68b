"""Calibration frames and streaming statistics (calib/data.py, calib/collect.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.calib.cache import CalibrationCache
from edge.calib.collect import (
    BatchRunner,
    calibration_tensors,
    collect_bundle,
    collect_stats,
    derived_tensors,
    map_tensors,
    tensor_signatures,
)
from edge.calib.data import calibration_and_eval_frames, sample_frames, split_frames
from edge.calib.histogram import TensorStats
from edge.core.errors import CalibrationError
from edge.core.manifest import load_bundle
from edge.core.preprocess import InputSpec, frames_to_input
from tiny_models import onnx_model

SPEC = InputSpec(height=32, width=32)


def _conv_graph(batch: int | str = "N") -> onnx.ModelProto:
    """x (float) -> Conv -> Relu -> Add(relu, x) -> y, plus a Shape/Cast int side branch."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(2, 2, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([0.1, -0.2], np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["y"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2, 4, 4]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [4]),
        ],
        [w, b],
    )
    return onnx_model(graph, 17)


def test_calibration_tensors_are_the_float_activations_in_graph_order() -> None:
    names = calibration_tensors(_conv_graph())
    # the int64 shape is not float; shape_f is computed from a graph input, so it is collected
    assert names == ["x", "c", "r", "y", "shape_f"]


def test_collect_stats_streams_exactly_what_the_graph_computes() -> None:
    model = _conv_graph()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 2, 4, 4)).astype(np.float32)
    streamed = collect_stats(
        model, ({"x": x[i : i + 3]} for i in range(0, 10, 3)), tensors=["x", "r", "y"]
    )
    whole = BatchRunner(model, ["r"]).run({"x": x})
    for name, values in (("x", x), ("r", whole["r"]), ("y", whole["y"])):
        ref = TensorStats(name)
        ref.update(values)
        got = streamed.stats[name]
        assert got.count == values.size
        assert got.min == pytest.approx(float(values.min()))
        assert got.max == pytest.approx(float(values.max()))
        np.testing.assert_array_equal(got.counts, ref.counts)  # batch split changes nothing
    assert streamed.tensors == ["x", "r", "y"]


def test_concat_and_transpose_statistics_are_derived_exactly() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Concat", ["r", "x", "r"], ["c"], axis=1),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Neg", ["t"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 3, 6])],
    )
    model = onnx_model(graph, 17)
    names = calibration_tensors(model)
    assert derived_tensors(model, names) == {"c": ["r", "x", "r"], "t": ["c"]}
    x = np.random.default_rng(2).normal(size=(7, 2, 3, 3)).astype(np.float32) * 5
    got = collect_stats(model, ({"x": x[i : i + 2]} for i in range(0, 7, 2)))
    values = BatchRunner(model, ["c", "t"]).run({"x": x})
    for name in ("c", "t", "y"):
        ref = TensorStats(name)
        ref.update(values[name])
        assert got.stats[name].count == ref.count and got.stats[name].range == ref.range
        np.testing.assert_array_equal(got.stats[name].counts, ref.counts)
        assert got.stats[name].absmax == pytest.approx(ref.absmax)


def test_batch_runner_falls_back_to_a_fixed_batch() -> None:
    """A batch of 1 baked into a Reshape: the runner feeds slices of the fixed size."""
    shape = numpy_helper.from_array(np.array([1, 2, 2], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2])],
        [shape],
    )
    model = onnx_model(graph, 17)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = BatchRunner(model).run({"x": x})
    np.testing.assert_array_equal(out["y"], x.reshape(3, 2, 2))


def test_taps_share_one_statistics_object_and_one_scale(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    parts = {p: onnx.load(bundle.path(p)) for p in bundle.parts if p != "fused"}
    frames = sample_frames("synthetic:", bundle.input, count=16, seed=0)
    stats = collect_bundle(parts, frames.batches(8), input_name=bundle.input.name)
    trunk = stats["trunk"]
    assert set(bundle.tap_names) <= set(trunk.tensors)
    assert "image" not in trunk.tensors  # uint8: never calibrated
    caches = {
        p: CalibrationCache.from_amaxes("10.3.0", "entropy", s.amaxes("entropy"))
        for p, s in stats.items()
    }
    for part, ps in stats.items():
        if part == "trunk":
            continue
        assert ps.tensors[: len(bundle.tap_names)] == bundle.tap_names
        for tap in bundle.tap_names:
            assert ps.stats[tap] is trunk.stats[tap]
            assert caches[part].scales[tap] == caches["trunk"].scales[tap]
        # the head's own tensors were really collected from its graph
        own = [n for n in ps.tensors if n not in bundle.tap_names]
        assert own and all(ps.stats[n].count > 0 for n in own)


def test_fused_tensors_map_to_the_split_parts_with_equal_values(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    parts = {p: onnx.load(bundle.path(p)) for p in bundle.parts}
    split = {p: m for p, m in parts.items() if p != "fused"}
    where = map_tensors(parts["fused"], split)
    fused_tensors = calibration_tensors(parts["fused"])
    assert all(n in where for n in fused_tensors)
    x = frames_to_input([np.full((40, 48, 3), v, np.uint8) for v in (30, 200)], bundle.input)
    fused_out = BatchRunner(parts["fused"], fused_tensors).run({"image": x})
    trunk_out = BatchRunner(split["trunk"], calibration_tensors(split["trunk"])).run({"image": x})
    head = "heads/mask"
    head_out = BatchRunner(split[head], calibration_tensors(split[head])).run(trunk_out)
    checked = 0
    for f, (part, name) in where.items():
        if f not in fused_out or part not in ("trunk", head):
            continue
        ref = trunk_out.get(name) if part == "trunk" else head_out.get(name)
        if ref is not None:
            np.testing.assert_allclose(fused_out[f], ref, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked >= 10


def test_signatures_ignore_names_but_not_weights() -> None:
    a, b = _conv_graph(), _conv_graph()
    for t in b.graph.initializer:  # same values, other names
        t.name = t.name + "_renamed"
    for n in b.graph.node:
        n.input[:] = [i + "_renamed" if i in ("w", "b") else i for i in n.input]
    assert tensor_signatures(a)["y"] == tensor_signatures(b)["y"]
    w = numpy_helper.to_array(b.graph.initializer[0]).copy()
    w[0, 0, 0, 0] += 1.0
    b.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, b.graph.initializer[0].name))
    assert tensor_signatures(a)["y"] != tensor_signatures(b)["y"]


def test_sample_frames_uses_the_runtime_preprocessing_and_is_seeded() -> None:
    from edge.data.demo_line import LineConfig, render_frame

    frames = sample_frames("synthetic:?frames=20&seed=3", SPEC, count=8, seed=5)
    again = sample_frames("synthetic:?frames=20&seed=3", SPEC, count=8, seed=5)
    other = sample_frames("synthetic:?frames=20&seed=3", SPEC, count=8, seed=6)
    assert frames.inputs.shape == (8, 32, 32, 3) and frames.inputs.dtype == np.uint8
    np.testing.assert_array_equal(frames.inputs, again.inputs)
    assert frames.indices == again.indices and frames.indices != other.indices
    assert len(set(frames.indices)) == 8 and all(0 <= i < 20 for i in frames.indices)
    i = frames.indices[0]
    line = render_frame(i, LineConfig(seed=3))
    np.testing.assert_array_equal(frames.inputs[0], frames_to_input([line.image], SPEC)[0])
    labels = frames.labels[0]
    assert labels is not None and labels["defect"] == line.labels()["defect"]
    assert labels["mask"].shape == (32, 32)
    assert frames.info["frames"] == 8 and frames.info["seed"] == 5


def test_folder_and_video_sources_carry_their_labels(tmp_path: Path) -> None:
    from edge.data.demo_line import LineConfig, write_image_folder, write_video

    line = LineConfig(width=64, height=64, seed=2)
    folder = write_image_folder(tmp_path / "imgs", 10, line)
    frames = sample_frames(str(folder), SPEC, count=6, seed=0)
    assert frames.info["read"] == 10 and len(frames) == 6
    assert frames.has_labels("defect") and frames.has_labels("mask")
    video = write_video(tmp_path / "line.mp4", 10, line)
    cal, held = calibration_and_eval_frames(str(video), SPEC, frames=6, seed=0, eval_frames=4)
    assert len(cal) == 6 and held is not None and len(held) == 4
    assert not set(cal.indices) & set(held.indices)  # held-out frames are not calibration ones
    assert held.has_labels("angle")


def test_bad_sources_raise_calibration_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="nosuch"):
        sample_frames(str(tmp_path / "nosuch.mp4"), SPEC, count=4, seed=0)
    with pytest.raises(CalibrationError, match="holds 3 frames, fewer than the 5"):
        sample_frames("synthetic:?frames=3", SPEC, count=5, seed=0)
    frames = sample_frames("synthetic:?frames=4", SPEC, count=4, seed=0)
    with pytest.raises(CalibrationError):
        split_frames(frames, 4)
