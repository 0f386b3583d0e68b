"""The TensorRT-free half of the INT8 calibrator (convert/engine/calibrator.py), here without
TensorRT or a GPU: batches fed as TensorRT reads them, counted, and errors kept for the build.

``swallowing_calibration`` stands in for TensorRT's calibration loop *as its Python binding
behaves* (python/src/infer/pyInt8.cpp, identical in 8.5.2, 8.6.1, 10.3 and 10.13)::

    bool getBatch(void* bindings[], const char* names[], int nbBindings) noexcept override {
        try { ... py::object result = pyGetBatch(namesVec);
              if (!result.is_none() && result.cast<std::vector<size_t>>().size() != 0) {
                  std::memcpy(bindings, ...); return true; } }
        catch (std::exception const& e) {
            std::cerr << "[ERROR] Exception caught in get_batch(): " << e.what() << std::endl; }
        ...
        return false; }

so an exception in ``get_batch`` reads as "no more batches" and the build goes on.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

from edge.convert.engine.calibrator import BatchFeeder, calibration_array, make_calibrator
from edge.core.errors import CalibrationError, EngineBuildError


def swallowing_calibration(feeder: BatchFeeder, names: list[str], limit: int = 100) -> int:
    """TensorRT's loop through its binding: get_batch until it returns no pointers; an
    exception is printed and ends the loop (as the trampoline's catch does). Returns batches."""
    for count in range(limit):
        try:
            result = feeder.get_batch(names)
        except Exception as e:  # the binding's catch (std::exception from py::error_already_set)
            print(f"[ERROR] Exception caught in get_batch(): {e}", file=sys.stderr)
            return count
        if not result:
            return count
    return limit


class Device:
    """Host memory standing in for device buffers: upload keeps a copy, returns an address."""

    def __init__(self) -> None:
        self.uploads: list[np.ndarray] = []

    def upload(self, name: str, array: np.ndarray) -> int:
        self.uploads.append(array.copy())
        return 0x1000 * len(self.uploads)


def frames(count: int, batch: int = 2, shape: tuple[int, ...] = (4, 4, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (batch, *shape), dtype=np.uint8) for _ in range(count)]


def test_all_batches_counted_and_pointers_in_the_order_asked() -> None:
    dev = Device()
    batches = [{"a": x, "b": np.ones((2, 3), np.int32)} for x in frames(3)]
    feeder = BatchFeeder(batches, ["a", "b"], dev.upload)
    assert feeder.batch_size() == 2
    assert feeder.get_batch(["b", "a"]) == [0x2000, 0x1000]  # uploads: a then b
    assert swallowing_calibration(feeder, ["a", "b"]) == 2
    assert (feeder.batches_fed, feeder.frames_fed) == (3, 6)
    feeder.check(6)


def test_unequal_batch_error_is_kept_and_raised_after_the_build() -> None:
    """Issue 12 item 2: a batch of another shape ended calibration quietly after one batch."""
    dev = Device()
    batches = [*frames(2), *frames(1, batch=1), *frames(2)]
    feeder = BatchFeeder(batches, ["image"], dev.upload)
    assert swallowing_calibration(feeder, ["image"]) == 2  # TensorRT saw 2 batches, no error
    with pytest.raises(CalibrationError, match=r"calibration batch 2: input 'image'"):
        feeder.check(10)
    assert feeder.get_batch(["image"]) == []  # after an error: no more batches


def test_source_error_and_unknown_names_are_raised_after_the_build() -> None:
    def broken() -> Any:
        yield from frames(1)
        raise OSError("camera unplugged")

    feeder = BatchFeeder(broken(), ["image"], Device().upload)
    swallowing_calibration(feeder, ["image"])
    with pytest.raises(OSError, match="camera unplugged"):
        feeder.check(2)
    feeder = BatchFeeder(frames(2), ["image"], Device().upload)
    assert swallowing_calibration(feeder, ["input_1"]) == 0
    with pytest.raises(CalibrationError, match=r"asks for inputs \['input_1'\]"):
        feeder.check(4)


def test_fewer_frames_than_asked_is_refused() -> None:
    feeder = BatchFeeder(frames(3), ["image"], Device().upload)
    swallowing_calibration(feeder, ["image"])
    with pytest.raises(CalibrationError, match=r"on 6 frames \(3 batches\), fewer than the 8"):
        feeder.check(8)
    feeder.check(6)
    unused = BatchFeeder(frames(1), ["image"], Device().upload)
    unused.check(8)  # TensorRT took the cache and never asked: nothing to refuse


def test_other_callbacks_keep_their_error() -> None:
    feeder = BatchFeeder(frames(1), ["image"], Device().upload)
    assert feeder.guard(lambda: 1 / 0, None) is None
    with pytest.raises(ZeroDivisionError):
        feeder.check()


def test_uint8_frames_are_uploaded_as_float32() -> None:
    """Issue 12 item 3: TensorRT reads non-index calibration inputs as float32 (4 bytes an
    element; Polygraphy forces them, CHANGELOG v0.49.10); index types stay as they are."""
    dev = Device()
    (batch,) = frames(1)
    feeder = BatchFeeder(
        [{"image": batch[:, ::2], "ids": np.arange(4)}], ["image", "ids"], dev.upload
    )
    feeder.get_batch(["image", "ids"])
    image, ids = dev.uploads
    assert image.dtype == np.float32 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, batch[:, ::2].astype(np.float32))  # 0-255 kept
    assert ids.dtype == np.arange(4).dtype
    for dtype in ("float16", "int8", "uint8", "float64"):
        assert calibration_array(np.zeros(2, dtype)).dtype == np.float32
    for dtype in ("int32", "int64", "bool"):
        assert calibration_array(np.zeros(2, dtype)).dtype == np.dtype(dtype)


def test_tensorrt_11_has_no_calibrators(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Issue 12 item 7: TensorRT 11 deleted pyInt8.cpp (no IInt8* classes): the stand-in module
    is 11.1's in that respect. make_calibrator says what to do instead of an AttributeError."""
    fake = types.ModuleType("tensorrt")
    fake.__dict__["__version__"] = "11.1.0.106"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(EngineBuildError, match=r"removed in TensorRT 11.*--int8-mode explicit"):
        make_calibrator("entropy", frames(1), tmp_path / "c.cache", ["image"])
