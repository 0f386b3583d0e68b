"""The INT8 calibrators of an implicit-INT8 build (TensorRT 8.5-10.x).

``cache_calibrator`` hands TensorRT the bundle's cache from ``edge calibrate`` and never
calibrates; ``calibration_batches`` feeds ``edge.calib``'s calibrator when the build calibrates
on the spot from a frame source (``--calibrate-data``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.convert.engine.config import BuildJob
from edge.core.errors import CalibrationError
from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input
from edge.runtime.backends.registry import create_backend
from edge.runtime.sources.uri import open_source

if TYPE_CHECKING:
    import numpy as np
    import tensorrt as trt  # noqa: TID251  (types only; the module is imported lazily)
else:
    from edge.core.lazy_trt import trt

_CACHE_ALGORITHMS = {
    "EntropyCalibration2": "ENTROPY_CALIBRATION_2",
    "MinMaxCalibration": "MINMAX_CALIBRATION",
}


@dataclass
class CacheUse:
    """Set by the cache-only calibrator when TensorRT asked it for batches."""

    asked_for_batches: bool = False


def cache_calibrator(data: bytes, algorithm: str, batch: int, use: CacheUse) -> trt.IInt8Calibrator:
    """A calibrator that only hands TensorRT an existing cache.

    TensorRT calls ``read_calibration_cache`` first; when it accepts the cache (same TensorRT
    version and calibrator algorithm) it never asks for batches. If it rejects the cache it
    starts calibrating: ``get_batch`` then returns no data ("[] or None: no more batches"), the
    build fails ("Calibration failure occurred with no scaling factors detected"), and ``use``
    tells the caller why. Based on ``IInt8Calibrator`` with ``get_algorithm`` (the header's
    algorithm; DLA requires ENTROPY_CALIBRATION_2), as Polygraphy and Ultralytics do.
    """
    algo: trt.CalibrationAlgoType = getattr(trt.CalibrationAlgoType, _CACHE_ALGORITHMS[algorithm])

    class _CacheOnly(trt.IInt8Calibrator):
        def __init__(self) -> None:
            trt.IInt8Calibrator.__init__(self)

        def get_algorithm(self) -> trt.CalibrationAlgoType:
            return algo

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int]:
            use.asked_for_batches = True
            return []

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache: Any) -> None:
            return None  # the bundle's cache belongs to edge calibrate: never rewritten here

    return _CacheOnly()


def calibration_batches(job: BuildJob) -> Iterator[dict[str, np.ndarray]]:
    """Feeds for calibrating ``job.part`` on the spot: frames through the runtime preprocessing;
    for a head, the trunk's taps computed with ONNX Runtime (the same tensors it will see)."""

    bundle = load_bundle(job.bundle_root, verify=False)
    batch = job.inputs[0].opt[0]
    trunk = None
    if job.part.startswith("heads/"):
        trunk = create_backend("onnxruntime").load(bundle.path("trunk"))
    names = [s.name for s in job.inputs]
    seen = 0
    with open_source(str(job.calibrate_source)) as source:
        while seen < job.calibrate_frames:
            frames: list[np.ndarray] = []
            while len(frames) < batch and (frame := source.read()) is not None:
                frames.append(frame.image)
            if len(frames) < batch:
                break
            seen += batch
            image = frames_to_input(frames, bundle.input)
            feed = trunk.run({bundle.input.name: image}) if trunk else {bundle.input.name: image}
            yield {n: feed[n] for n in names}
    if seen == 0:
        raise CalibrationError(
            f"--calibrate-data {job.calibrate_source} gave no full batch of {batch} frames; "
            "give a source with more frames"
        )
