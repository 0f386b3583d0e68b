"""The backend contract on ONNX Runtime: metadata, feed validation, taps, registry."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.core.errors import ConfigError, InputContractError, InternalError, MissingDependencyError
from edge.runtime.backends.base import TensorMeta, concrete_shape, dtype_name
from edge.runtime.backends.ort import OnnxRuntimeBackend, OrtOptions
from edge.runtime.backends.registry import BACKENDS, backend_class, create_backend
from tiny_models import make_tiny_bundle


@pytest.fixture(scope="module")
def dyn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("dyn"), dynamic_batch=True, max_batch=4)


def image(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_metadata_matches_the_manifest(tiny_bundle: Path) -> None:
    with create_backend("onnxruntime").load(tiny_bundle / "trunk.onnx") as b:
        assert b.inputs() == (TensorMeta("image", (1, 32, 32, 3), "uint8"),)
        outs = b.outputs()
        assert [o.name for o in outs] == [f"shared_{k}" for k in range(5)]
        assert outs[1] == TensorMeta("shared_1", (1, 6, 16, 16), "float32")
    with OnnxRuntimeBackend().load(tiny_bundle / "heads" / "angle.onnx") as h:
        assert [i.name for i in h.inputs()] == [o.name for o in outs]
        assert h.outputs() == (TensorMeta("angle_value", (1, 1), "float32"),)


def test_run_equals_a_plain_session_and_selects_outputs(tiny_bundle: Path) -> None:
    x = image()
    ref = ort.InferenceSession(str(tiny_bundle / "fused.onnx")).run(None, {"image": x})
    with OnnxRuntimeBackend(intra_op_threads=2).load(tiny_bundle / "fused.onnx") as b:
        got = b.run({"image": x})
        assert list(got) == ["defect_logits", "attrs_logits", "mask_logits", "angle_value"]
        for a, r in zip(got.values(), ref):
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
        only = b.run({"image": x}, ["mask_logits"])
        assert list(only) == ["mask_logits"] and only["mask_logits"].shape == (
            1,
            2,
            16,
            16,
        )  # stride 2
        assert b.runs == 2 and b.last_run_ns > 0 and b.total_run_ns >= b.last_run_ns


@pytest.mark.parametrize(
    ("feed", "words"),
    [
        ({}, ["missing ['image']"]),
        ({"image": image(), "extra": image()}, ["unexpected ['extra']"]),
        ({"img": image()}, ["missing ['image']", "unexpected ['img']"]),
        ({"image": image().astype(np.float32)}, ["'image'", "uint8", "float32"]),
        ({"image": image()[:, :16]}, ["'image'", "uint8[1,32,32,3]", "[1, 16, 32, 3]"]),
        ({"image": image(2)}, ["'image'", "[2, 32, 32, 3]", "fixed batch size"]),
        ({"image": image()[0]}, ["'image'", "[32, 32, 3]"]),
        ({"image": image().tolist()}, ["'image'", "numpy array", "list"]),
    ],
)
def test_feed_validation_names_tensor_expected_and_got(
    tiny_bundle: Path, feed: dict, words: list[str]
) -> None:
    with OnnxRuntimeBackend().load(tiny_bundle / "trunk.onnx") as b:
        with pytest.raises(InputContractError) as e:
            b.run(feed)
        for w in words:
            assert w in str(e.value)
        assert b.runs == 0


def test_unknown_output_and_unloaded_use(tiny_bundle: Path) -> None:
    b = OnnxRuntimeBackend()
    with pytest.raises(InputContractError, match="load"):
        b.inputs()
    b.load(tiny_bundle / "trunk.onnx")
    with pytest.raises(InputContractError, match="shared_9"):
        b.run({"image": image()}, ["shared_9"])
    with pytest.raises(InputContractError, match="already loaded"):
        b.load(tiny_bundle / "trunk.onnx")
    b.close()
    with pytest.raises(InputContractError, match="does not exist"):
        OnnxRuntimeBackend().load(tiny_bundle / "nope.onnx")


def test_damaged_model_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "trunk.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputContractError, match=r"cannot load .*re-run edge convert"):
        OnnxRuntimeBackend().load(bad)


def test_dynamic_batch_accepts_any_batch_but_one_per_feed(dyn_bundle: Path) -> None:
    with OnnxRuntimeBackend().load(dyn_bundle / "trunk.onnx") as trunk:
        assert trunk.inputs()[0].shape[0] == "batch"
        taps = trunk.run_taps({"image": image(3)})
        assert taps.meta["shared_4"].shape == (3, 12, 4, 4)
    with OnnxRuntimeBackend().load(dyn_bundle / "heads" / "defect.onnx") as head:
        assert head.run_from_taps(taps)["defect_logits"].shape == (3, 4)
        feed = taps.arrays()
        feed["shared_2"] = feed["shared_2"][:2]
        with pytest.raises(InputContractError, match=r"'batch' is 3 .* but 2 in input 'shared_2'"):
            head.run(feed)


def test_heads_on_taps_equal_fused(tiny_bundle: Path) -> None:
    x = image(seed=3)
    with (
        OnnxRuntimeBackend().load(tiny_bundle / "trunk.onnx") as trunk,
        OnnxRuntimeBackend().load(tiny_bundle / "fused.onnx") as fused,
    ):
        ref = fused.run({"image": x})
        taps = trunk.run_taps({"image": x})
        assert taps.on_host and taps.valid and taps.names == [f"shared_{k}" for k in range(5)]
        for task in ("defect", "attrs", "mask", "angle"):
            with OnnxRuntimeBackend().load(tiny_bundle / "heads" / f"{task}.onnx") as head:
                ((name, out),) = head.run_from_taps(taps).items()
                np.testing.assert_allclose(out, ref[name], rtol=1e-4, atol=1e-5)


def test_stale_taps_are_refused(tiny_bundle: Path) -> None:
    with (
        OnnxRuntimeBackend().load(tiny_bundle / "trunk.onnx") as trunk,
        OnnxRuntimeBackend().load(tiny_bundle / "heads" / "defect.onnx") as head,
    ):
        old = trunk.run_taps({"image": image(seed=1)})
        new = trunk.run_taps({"image": image(seed=2)})
        assert not old.valid and new.valid
        with pytest.raises(InputContractError, match="stale"):
            head.run_from_taps(old)
        head.run_from_taps(new)


def test_head_refuses_taps_of_another_trunk(tiny_bundle: Path) -> None:
    with (
        OnnxRuntimeBackend().load(tiny_bundle / "fused.onnx") as fused,
        OnnxRuntimeBackend().load(tiny_bundle / "heads" / "mask.onnx") as head,
    ):
        not_taps = fused.run_taps({"image": image()})
        with pytest.raises(InputContractError, match="does not output"):
            head.run_from_taps(not_taps)


def test_registry_resolves_lazily_and_explains_missing(tiny_bundle: Path) -> None:
    assert set(BACKENDS) == {"onnxruntime", "tensorrt", "triton"}
    assert backend_class("onnxruntime") is OnnxRuntimeBackend
    assert backend_class("ort") is OnnxRuntimeBackend
    with pytest.raises(ConfigError, match=r"unknown backend 'openvino'.*onnxruntime"):
        backend_class("openvino")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(MissingDependencyError, match=r"tensorrt.*--backend onnxruntime"):
            backend_class("tensorrt")
    b = create_backend("onnxruntime", intra_op_threads=1, graph_optimization="basic")
    assert isinstance(b, OnnxRuntimeBackend) and b.options.graph_optimization == "basic"


def test_ort_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="graph_optimization 'max'"):
        OrtOptions(graph_optimization="max")
    with pytest.raises(ConfigError, match=">= 0"):
        OrtOptions(intra_op_threads=-1)


def test_concrete_shape_and_dtype_name() -> None:
    assert concrete_shape(TensorMeta("t", (2, np.int64(3), 4), "float32")) == (2, 3, 4)
    with pytest.raises(InternalError, match="symbolic"):
        concrete_shape(TensorMeta("t", ("batch", 3), "float32"))
    for dt in (np.float32, np.uint8, np.float16):
        assert dtype_name(np.dtype(dt)) == np.dtype(dt).name
        assert dtype_name(np.zeros(1, dt).dtype) == np.dtype(dt).name  # memoised, same answer
