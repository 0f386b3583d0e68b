"""TensorRT's own INT8 calibrators, fed with etr-edge's calibration batches (on the device).

For users who calibrate with TensorRT itself (implicit INT8, TensorRT 8.x-10.x; removed in 11):
``make_calibrator`` returns an ``tensorrt.IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``)
that streams the same preprocessed batches as ``edge calibrate`` (``calib/data.py``) through
pycuda device buffers, and reads and writes the same cache file format (``calib/cache.py``)::

    frames = sample_frames("synthetic:", bundle.input, count=512, seed=0)
    calibrator = make_calibrator("entropy", frames.batches(32), "calib/trunk.cache",
                                 [bundle.input.name])
    config.set_flag(trt.BuilderFlag.INT8)
    config.int8_calibrator = calibrator

API (TensorRT Python docs, ``IInt8Calibrator``): ``get_batch(names) -> list[int] | None`` returns
one device pointer per input, in ``names`` order, or None when the batches are exhausted;
``get_batch_size()``; ``read_calibration_cache() -> bytes | None`` (bytes: TensorRT uses the
cache instead of calibrating); ``write_calibration_cache(cache)``. The base class ``__init__``
must be called explicitly. For a network with dynamic shapes, TensorRT also needs
``config.set_calibration_profile(profile)`` (one fixed shape).

tensorrt and pycuda are imported only inside ``make_calibrator``: this module imports on any
machine, and only calling it needs a GPU.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.calib.cache import check_cache_matches, parse_cache
from edge.core.errors import CalibrationError
from edge.core.files import write_bytes
from edge.core.trt_version import TrtVersion

KINDS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}
"""Calibrator kind -> the algorithm name in its cache header."""


def validated_cache(
    cache_path: str | Path,
    kind: str,
    *,
    expected_tensors: Collection[str] | None = None,
    target: TrtVersion | None = None,
) -> bytes | None:
    """The cache file's bytes if it exists and fits (CalibrationError if it does not); None
    if there is no file. Checks: it parses, its algorithm is the calibrator's, and (when given)
    its TensorRT version is ``target`` and it lists exactly ``expected_tensors`` (TensorRT
    internal names aside)."""
    path = Path(cache_path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CalibrationError(f"{path}: not a text calibration cache ({e})") from e
    cache = parse_cache(text, source=str(path))
    expected = set(cache.scales) if expected_tensors is None else set(expected_tensors)
    check_cache_matches(
        cache, expected_tensors=expected, target=target, algorithm=KINDS[kind], source=str(path)
    )
    return data


def _as_feed(batch: Mapping[str, np.ndarray] | np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    if isinstance(batch, Mapping):
        missing = [n for n in names if n not in batch]
        if missing:
            raise CalibrationError(
                f"a calibration batch has no input {missing}; it has {sorted(batch)}"
            )
        return {n: np.ascontiguousarray(batch[n]) for n in names}
    if len(names) != 1:
        raise CalibrationError(
            f"the network has {len(names)} inputs {list(names)}; give each batch as a dict "
            "input name -> array"
        )
    return {names[0]: np.ascontiguousarray(batch)}


def make_calibrator(
    kind: str,
    batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
    cache_path: str | Path,
    input_names: Sequence[str],
    *,
    expected_tensors: Collection[str] | None = None,
    target: TrtVersion | None = None,
) -> Any:
    """A TensorRT INT8 calibrator of ``kind`` ('entropy' -> IInt8EntropyCalibrator2, 'minmax'
    -> IInt8MinMaxCalibrator) over ``batches`` (arrays, or dicts input name -> array).

    Device buffers are allocated once, for the first batch's shapes; every batch must have
    those shapes (the last may not be smaller: drop it). An existing ``cache_path`` is checked
    now (``validated_cache``) and then given to TensorRT, which skips calibration; TensorRT's
    own cache is checked and written atomically when it calibrates.
    """
    if kind not in KINDS:
        raise CalibrationError(f"calibrator kind '{kind}'; expected one of {sorted(KINDS)}")
    names = list(input_names)
    if not names:
        raise CalibrationError("the calibrator needs the network's input names")
    path = Path(cache_path)
    existing = validated_cache(path, kind, expected_tensors=expected_tensors, target=target)

    import pycuda.driver as cuda  # noqa: TID251  (TensorRT modules import pycuda lazily)
    import tensorrt as trt  # noqa: TID251  (only the device has TensorRT)

    cuda.init()
    if cuda.Context.get_current() is None:
        import pycuda.autoinit  # noqa: F401, TID251  (creates and pushes a context)

    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator

    class EdgeCalibrator(base):  # type: ignore[misc, valid-type]
        """Streams etr-edge batches to TensorRT through device buffers allocated once."""

        def __init__(self) -> None:
            base.__init__(self)
            self.cache_path = path
            self.batches_fed = 0
            self._batches = iter(batches)
            self._buffers: dict[str, Any] = {}
            self._shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
            self._first = self._next()
            self._cache = existing

        def _next(self) -> dict[str, Any] | None:
            try:
                return _as_feed(next(self._batches), names)
            except StopIteration:
                return None

        def get_batch_size(self) -> int:
            if self._first is not None:
                return int(next(iter(self._first.values())).shape[0])
            return int(next(iter(self._shapes.values()))[0][0]) if self._shapes else 1

        def get_batch(self, names_asked: list[str]) -> list[int] | None:
            feed, self._first = (
                (self._first, None) if self._first is not None else (self._next(), None)
            )
            if feed is None:
                return None
            for name, arr in feed.items():
                spec = (arr.shape, arr.dtype)
                if name not in self._buffers:
                    self._buffers[name] = cuda.mem_alloc(arr.nbytes)
                    self._shapes[name] = spec
                elif self._shapes[name] != spec:
                    raise CalibrationError(
                        f"calibration batch {self.batches_fed}: input '{name}' is "
                        f"{arr.dtype}{arr.shape}, the device buffer was made for "
                        f"{self._shapes[name][1]}{self._shapes[name][0]}; give equal batches"
                    )
                cuda.memcpy_htod(self._buffers[name], arr)
            self.batches_fed += 1
            unknown = [n for n in names_asked if n not in self._buffers]
            if unknown:
                raise CalibrationError(
                    f"TensorRT asks for inputs {unknown}; the calibrator feeds {names}"
                )
            return [int(self._buffers[n]) for n in names_asked]

        def read_calibration_cache(self) -> bytes | None:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            data = bytes(cache)
            parse_cache(data.decode("utf-8"), source=f"TensorRT's cache for {self.cache_path}")
            write_bytes(self.cache_path, data)
            self._cache = data

    return EdgeCalibrator()
