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

API (TensorRT Python docs, ``IInt8Calibrator``): ``get_batch(names) -> list[int]`` returns
one device pointer per input, in ``names`` order, or [] when the batches are exhausted;
``get_batch_size()``; ``read_calibration_cache() -> bytes | None`` (bytes: TensorRT uses the
cache instead of calibrating); ``write_calibration_cache(cache)``. The base class ``__init__``
must be called explicitly. For a network with dynamic shapes, TensorRT also needs
``config.set_calibration_profile(profile)`` (one fixed shape).

tensorrt and pycuda are imported only inside ``make_calibrator``: this module imports on any
machine, and only calling it needs a GPU. :class:`BatchFeeder` is the TensorRT-free part: it
counts what TensorRT consumed and keeps the errors TensorRT's binding would swallow.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.calib.cache import check_cache_matches, parse_cache
from edge.core.errors import CalibrationError, EngineBuildError
from edge.core.files import write_bytes
from edge.core.lazy_trt import import_tensorrt
from edge.core.trt_version import TrtVersion
from edge.runtime.backends.trt_cuda import pycuda_driver

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


INDEX_DTYPES = ("int32", "int64", "bool")
"""Calibration inputs TensorRT takes as they are; every other input is fed as float32."""


def calibration_array(array: np.ndarray) -> np.ndarray:
    """A calibration input as TensorRT reads it: contiguous, and float32 unless it is an index
    type (int32, int64, bool). TensorRT requires non-index calibration inputs in float32 (it
    reads 4 bytes per element; Polygraphy forces them since v0.49.10), so uint8 frames are
    uploaded as float32 0-255."""
    a = np.asarray(array)
    if a.dtype.name not in INDEX_DTYPES:
        a = a.astype(np.float32, copy=False)
    return np.ascontiguousarray(a)


def _as_feed(batch: Mapping[str, np.ndarray] | np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    if isinstance(batch, Mapping):
        missing = [n for n in names if n not in batch]
        if missing:
            raise CalibrationError(
                f"a calibration batch has no input {missing}; it has {sorted(batch)}"
            )
        return {n: calibration_array(batch[n]) for n in names}
    if len(names) != 1:
        raise CalibrationError(
            f"the network has {len(names)} inputs {list(names)}; give each batch as a dict "
            "input name -> array"
        )
    return {names[0]: calibration_array(batch)}


class BatchFeeder:
    """The Python side of an INT8 calibrator, without TensorRT: one device pointer per input
    name for each batch, counted, and errors kept rather than raised.

    TensorRT's binding (python/src/infer/pyInt8.cpp, 8.5-10.x) wraps ``get_batch``,
    ``get_batch_size``, ``read_calibration_cache`` and ``write_calibration_cache`` in
    ``try { ... } catch (std::exception const& e) { std::cerr << "[ERROR] Exception caught in
    get_batch(): " ... }`` and then returns false ("no more batches"): an exception would end
    calibration quietly and the build would succeed on fewer frames. So ``get_batch`` and
    ``guard`` never raise; the first error is kept in ``error`` and ``check`` raises it after
    ``build_serialized_network``, and refuses a calibration that saw fewer frames than asked.
    ``upload(name, array)`` copies one input to the device and returns its address.
    """

    def __init__(
        self,
        batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
        names: Sequence[str],
        upload: Callable[[str, np.ndarray], int],
    ) -> None:
        self.names = list(names)
        self._batches = iter(batches)
        self._upload = upload
        self._specs: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        self.batches_fed = 0
        self.frames_fed = 0
        self.asked = False
        """TensorRT asked for a batch (it calibrates rather than using a cache)."""
        self.error: BaseException | None = None
        self._first = self._next()  # read now: get_batch_size needs its shape

    def _next(self) -> dict[str, Any] | None:
        try:
            return _as_feed(next(self._batches), self.names)
        except StopIteration:
            return None

    def batch_size(self) -> int:
        feed = self._first
        if feed is not None:
            return int(next(iter(feed.values())).shape[0])
        return int(next(iter(self._specs.values()))[0][0]) if self._specs else 1

    def get_batch(self, names_asked: Sequence[str]) -> list[int]:
        """Pointers for ``names_asked`` in that order, or [] (no more batches, or an error)."""
        self.asked = True
        if self.error is not None:
            return []
        try:
            return self._feed(list(names_asked))
        except BaseException as e:  # the binding would swallow it: keep it for check()
            self.error = e
            return []

    def guard(self, call: Callable[[], Any], default: Any) -> Any:
        """Run another callback for TensorRT: its result, or ``default`` with the error kept."""
        try:
            return call()
        except BaseException as e:
            self.error = self.error or e
            return default

    def _feed(self, names_asked: list[str]) -> list[int]:
        unknown = [n for n in names_asked if n not in self.names]
        if unknown:
            raise CalibrationError(
                f"TensorRT asks for inputs {unknown}; the calibrator feeds {self.names}"
            )
        feed, self._first = (self._first, None) if self._first is not None else (self._next(), None)
        if feed is None:
            return []
        ptrs = {}
        for name, arr in feed.items():
            spec = (tuple(arr.shape), arr.dtype)
            known = self._specs.setdefault(name, spec)
            if known != spec:
                raise CalibrationError(
                    f"calibration batch {self.batches_fed}: input '{name}' is "
                    f"{arr.dtype}{list(arr.shape)}, the device buffer was made for "
                    f"{known[1]}{list(known[0])}; give equal batches (drop a short last one)"
                )
            ptrs[name] = int(self._upload(name, arr))
        self.batches_fed += 1
        self.frames_fed += int(next(iter(feed.values())).shape[0])
        return [ptrs[n] for n in names_asked]

    def check(self, frames_wanted: int | None = None) -> None:
        """After the build: raise the error a callback kept; refuse a calibration that
        consumed fewer than ``frames_wanted`` frames (CalibrationError)."""
        if self.error is not None:
            raise self.error
        if self.asked and frames_wanted is not None and self.frames_fed < frames_wanted:
            raise CalibrationError(
                f"TensorRT calibrated on {self.frames_fed} frames ({self.batches_fed} batches), "
                f"fewer than the {frames_wanted} asked: the frame source ran out; give a source "
                "with more frames or a smaller --calibrate-frames"
            )


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

    Its ``feeder`` (:class:`BatchFeeder`) uploads each batch as float32 (index inputs as they
    are) into device buffers allocated once; every batch must have the first one's shapes.
    After the build, call ``calibrator.feeder.check(frames)``. An existing ``cache_path`` is
    checked now (``validated_cache``) and then given to TensorRT, which skips calibration;
    TensorRT's own cache is checked and written atomically when it calibrates. TensorRT 11
    has no calibrators: EngineBuildError saying to use explicit INT8.
    """
    if kind not in KINDS:
        raise CalibrationError(f"calibrator kind '{kind}'; expected one of {sorted(KINDS)}")
    names = list(input_names)
    if not names:
        raise CalibrationError("the calibrator needs the network's input names")
    trt = import_tensorrt()
    class_name = "IInt8EntropyCalibrator2" if kind == "entropy" else "IInt8MinMaxCalibrator"
    base: Any = getattr(trt, class_name, None)
    if base is None:  # TensorRT 11 deleted pyInt8.cpp: no IInt8* classes, no int8_calibrator
        raise EngineBuildError(
            f"implicit INT8 was removed in TensorRT 11 (this is {trt.__version__}, it has no "
            f"{class_name}): use --int8-mode explicit (the Q/DQ models of edge calibrate)"
        )
    path = Path(cache_path)
    existing = validated_cache(path, kind, expected_tensors=expected_tensors, target=target)
    cuda = pycuda_driver()
    cuda.init()
    if cuda.Context.get_current() is None:
        import pycuda.autoinit  # noqa: F401, TID251  (creates and pushes a context)

    buffers: dict[str, Any] = {}

    def upload(name: str, array: np.ndarray) -> int:
        if name not in buffers:  # the feeder checked that every batch has the first's shape
            buffers[name] = cuda.mem_alloc(array.nbytes)
        cuda.memcpy_htod(buffers[name], array)
        return int(buffers[name])

    feeder = BatchFeeder(batches, names, upload)

    class EdgeCalibrator(base):  # type: ignore[misc, valid-type]
        """Streams etr-edge batches to TensorRT through ``feeder``; never raises into it."""

        def __init__(self) -> None:
            base.__init__(self)  # the trampoline needs the base class initialised
            self.cache_path = path
            self.feeder = feeder
            self.buffers = buffers  # kept alive as long as the calibrator
            self._cache = existing

        def get_batch_size(self) -> int:
            return int(feeder.guard(feeder.batch_size, 1))

        def get_batch(self, names_asked: list[str]) -> list[int]:
            return feeder.get_batch(names_asked)

        def read_calibration_cache(self) -> bytes | None:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            feeder.guard(lambda: self._write(bytes(cache)), None)  # a copy: valid during the call

        def _write(self, data: bytes) -> None:
            parse_cache(data.decode("utf-8"), source=f"TensorRT's cache for {self.cache_path}")
            write_bytes(self.cache_path, data)
            self._cache = data

    return EdgeCalibrator()
