"""TensorRT's calibrator fed by etr-edge (convert/engine/calibrator.py): needs TensorRT 8.5-10.x
and a GPU. Skipped wherever TensorRT (or pycuda) is not importable, and on TensorRT 11, which
has no calibrators (its Python package has no IInt8* classes); nothing here is faked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt")
pytest.importorskip("pycuda.driver")
if not hasattr(trt, "IInt8EntropyCalibrator2"):
    pytest.skip(
        f"TensorRT {trt.__version__} has no INT8 calibrators (removed in 11: implicit INT8 is "
        "gone; explicit Q/DQ INT8 is built by tests/convert/engine/test_build_trt.py)",
        allow_module_level=True,
    )

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge.calib.cache import read_cache  # noqa: E402
from edge.convert.engine.calibrator import make_calibrator  # noqa: E402
from edge.core.errors import CalibrationError  # noqa: E402
from edge.core.trt_version import TrtVersion  # noqa: E402
from tiny_models import onnx_model  # noqa: E402

pytestmark = pytest.mark.tensorrt


def _onnx_bytes() -> bytes:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8, 16, 16])],
        [w],
    )
    return onnx_model(graph, 13).SerializeToString()


def _build(calibrator: object) -> object:
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(_onnx_bytes())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    config.int8_calibrator = calibrator
    return builder.build_serialized_network(network, config)


def _batches(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.uniform(-2, 2, size=(4, 3, 16, 16)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("kind", ["entropy", "minmax"])
def test_tensorrt_calibrates_with_our_batches_and_writes_our_format(
    tmp_path: Path, kind: str
) -> None:
    cache_path = tmp_path / "model.cache"
    calib = make_calibrator(kind, _batches(3), cache_path, ["x"])
    assert isinstance(calib, trt.IInt8Calibrator)
    assert calib.get_batch_size() == 4
    assert _build(calib) is not None
    calib.feeder.check(12)
    assert calib.feeder.batches_fed == 3
    cache = read_cache(cache_path)  # TensorRT's own file parses with our reader
    assert cache.algorithm == ("EntropyCalibration2" if kind == "entropy" else "MinMaxCalibration")
    assert cache.version == TrtVersion.parse(trt.__version__)  # header from TensorRT itself
    assert {"x", "y"} <= set(cache.scales)
    # a second build reads the cache instead of calibrating: no batch is consumed
    again = make_calibrator(kind, _batches(3), cache_path, ["x"], expected_tensors=None)
    assert _build(again) is not None
    assert again.feeder.batches_fed == 0


def test_a_cache_for_another_calibrator_is_refused(tmp_path: Path) -> None:
    cache_path = tmp_path / "model.cache"
    cache_path.write_text("TRT-8601-MinMaxCalibration\nx: 3c010a14\n")
    with pytest.raises(CalibrationError, match="algorithm"):
        make_calibrator("entropy", _batches(1), cache_path, ["x"])
    with pytest.raises(CalibrationError, match="not in the graph"):
        make_calibrator("minmax", _batches(1), cache_path, ["x"], expected_tensors={"y"})


def test_unequal_batches_are_raised_after_the_build(tmp_path: Path) -> None:
    """TensorRT's binding swallows an exception in get_batch (it reads "no more batches"): the
    calibrator keeps it, and ``feeder.check`` raises it once the build returns."""
    batches = [*_batches(2), np.zeros((2, 3, 16, 16), np.float32), *_batches(2)]
    calib = make_calibrator("entropy", batches, tmp_path / "c.cache", ["x"])
    _build(calib)  # may succeed on the two good batches: that is what must not pass unnoticed
    assert calib.feeder.batches_fed == 2
    with pytest.raises(CalibrationError, match="device buffer"):
        calib.feeder.check(20)
