"""Below the TensorRT backend, CUDA only: context, the one stream, buffers, events, graphs.

- :class:`CudaRuntime`: device 0's *primary* context (the one the CUDA runtime API, and so
  TensorRT, uses; ``Device.retain_primary_context``) and ONE stream shared by every engine in the
  process, so a trunk and its heads are ordered by the stream alone (docs/architecture.md, "One
  CUDA stream").
  Every CUDA call here runs inside :meth:`CudaRuntime.active`, which makes the context current
  on the calling thread (the pipeline may run inference on its own thread).
- :class:`DeviceBuffer`: one tensor's device memory, allocated once for its largest shape
  (``pycuda.driver.mem_alloc``), and a pinned host staging array (``pagelocked_empty``) made on
  first use, for tensors that cross to or from the host (``memcpy_htod_async`` /
  ``memcpy_dtoh_async`` on the shared stream).
- :class:`PartTimer`: CUDA events recorded on the stream around one enqueue; read after sync.
- :class:`CudaGraph`: stream capture of an enqueue and its replay. PyCUDA's own graph API
  (``Stream.begin_capture``/``end_capture``, ``Graph.instantiate``) exists only in recent
  releases and its launch-on-a-stream signature is not documented, so capture uses NVIDIA's
  cuda-python runtime bindings (``cudaStreamBeginCapture`` ... ``cudaGraphLaunch``, as in
  TensorRT's own Python demos) on the same stream handle.

pycuda and cuda-python are imported lazily (importlib), never at module import; nothing here
knows TensorRT (edge.core.lazy_trt imports it, edge.core.sidecar checks engines).
"""

from __future__ import annotations

import atexit
import importlib
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from edge.core.errors import (
    ConfigError,
    InputContractError,
    MissingDependencyError,
    import_optional,
)

PYCUDA_ADVICE = (
    "install pycuda next to TensorRT: on a Jetson run jetson/setup.sh (it builds pycuda against "
    "JetPack's CUDA), elsewhere: pip install 'etr-edge[jetson]'"
)
GRAPH_ADVICE = (
    "CUDA-graph capture (capture_graph=True) uses NVIDIA's cuda-python bindings, which are not "
    "installed: pip install 'cuda-python==<your CUDA major>.*' (e.g. 12.* on JetPack 6), or "
    "run without capture_graph"
)


def pycuda_driver() -> Any:
    """``pycuda.driver``, or MissingDependencyError saying how to get it."""
    return import_optional(
        "pycuda.driver",
        lambda e: (
            f"the tensorrt backend needs pycuda for device memory and streams ({e}); "
            + PYCUDA_ADVICE
        ),
    )


def cudart_module() -> Any | None:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


class CudaRuntime:
    """Device 0's primary CUDA context and the one stream every TensorRT part runs on."""

    def __init__(self) -> None:
        cuda = pycuda_driver()
        cuda.init()
        if cuda.Device.count() < 1:
            raise MissingDependencyError(
                "the tensorrt backend found no CUDA device (is the NVIDIA driver loaded, and "
                "is this process allowed to use the GPU?); use --backend onnxruntime here"
            )
        self.cuda = cuda
        self.device = cuda.Device(0)
        self.context = self.device.retain_primary_context()
        self.users: weakref.WeakSet[Any] = weakref.WeakSet()
        """Backends holding buffers in this context (closed before the context goes)."""
        self.closed = False
        with self.active():
            self.stream = cuda.Stream()

    @property
    def stream_handle(self) -> int:
        """The stream as the integer TensorRT's ``execute_async_v3`` takes."""
        return int(self.stream.handle)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make the context current on this thread for the block (no-op when it already is)."""
        if self.closed:
            raise InputContractError("tensorrt backend: the CUDA context was released at exit")
        current = self.cuda.Context.get_current()
        if current is not None and current == self.context:
            yield
            return
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        """Close every backend still open, then release the primary context (at exit)."""
        if self.closed:
            return
        for user in list(self.users):
            user.close()
        with self.active():
            self.stream = None
        self.context.detach()
        self.closed = True


_RUNTIME: list[CudaRuntime] = []
_RUNTIME_LOCK = threading.Lock()


def shared_runtime() -> CudaRuntime:
    """The process-wide :class:`CudaRuntime` (created on first use, released at exit)."""
    with _RUNTIME_LOCK:
        if not _RUNTIME or _RUNTIME[0].closed:
            _RUNTIME[:] = [CudaRuntime()]
            atexit.register(_RUNTIME[0].close)
        return _RUNTIME[0]


class DeviceBuffer:
    """Device memory for one tensor at its largest shape, plus pinned host staging on demand.

    The device allocation is made on first use of :attr:`ptr` (a head fed from the trunk's
    buffers never needs its own input memory) and never moves afterwards, which is what CUDA
    graphs and the heads' bound addresses rely on.
    """

    def __init__(
        self, rt: CudaRuntime, name: str, dtype: np.dtype[Any], max_shape: tuple[int, ...]
    ) -> None:
        self.rt, self.name, self.dtype, self.max_shape = rt, name, np.dtype(dtype), max_shape
        self.capacity = int(np.prod(max_shape, dtype=np.int64)) if max_shape else 1
        self.nbytes = self.capacity * self.dtype.itemsize
        self._device: Any = None
        self._host: np.ndarray | None = None

    @property
    def ptr(self) -> int:
        if self._device is None:
            self._device = self.rt.cuda.mem_alloc(max(self.nbytes, 1))
        return int(self._device)

    def host_view(self, shape: tuple[int, ...]) -> np.ndarray:
        """A pinned host array of ``shape`` inside the staging buffer."""
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count > self.capacity:
            raise InputContractError(
                f"tensorrt backend: tensor '{self.name}' of shape {list(shape)} is larger than the "
                f"engine's maximum {list(self.max_shape)}; lower the batch size or rebuild the "
                "engine for a larger batch (edge convert --dynamic-batch, then edge build)"
            )
        if self._host is None:
            self._host = self.rt.cuda.pagelocked_empty(self.capacity, self.dtype)
        return self._host[:count].reshape(shape)

    def upload(self, array: np.ndarray) -> None:
        """Stage ``array`` in pinned memory and enqueue its copy to the device."""
        view = self.host_view(tuple(array.shape))
        np.copyto(view, array, casting="equiv")
        self.rt.cuda.memcpy_htod_async(self.ptr, view, self.rt.stream)

    def download(self, shape: tuple[int, ...]) -> np.ndarray:
        """Enqueue the copy of the first ``shape`` elements to pinned memory; valid after sync."""
        view = self.host_view(shape)
        self.rt.cuda.memcpy_dtoh_async(view, self.ptr, self.rt.stream)
        return view

    def free(self) -> None:
        if self._device is not None:
            self._device.free()
            self._device = None
        if self._host is not None:
            allocation: Any = self._host.base  # pycuda's PagelockedHostAllocation
            allocation.free()
            self._host = None


class PartTimer:
    """Start/end CUDA events around one part's enqueue; ``ms`` waits for the end event."""

    def __init__(self, rt: CudaRuntime) -> None:
        self.rt = rt
        self.start, self.end = rt.cuda.Event(), rt.cuda.Event()
        self._pending = False
        self._ms = 0.0

    def begin(self) -> None:
        self.start.record(self.rt.stream)

    def finish(self) -> None:
        self.end.record(self.rt.stream)
        self._pending = True

    @property
    def ms(self) -> float:
        """GPU time of the last enqueue in milliseconds (waits for it to finish)."""
        if self._pending:
            self.end.synchronize()
            self._ms = float(self.end.time_since(self.start))
            self._pending = False
        return self._ms


def _checked(result: Any, call: str) -> Any:
    """cuda-python returns ``(err, *values)``: raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ConfigError(
            f"tensorrt backend: {call} failed ({err}) while capturing a CUDA graph; this engine "
            "cannot be captured (plugins or data-dependent shapes): run without capture_graph"
        )
    return values[0] if len(values) == 1 else tuple(values)


class CudaGraph:
    """A captured enqueue, replayed with one ``cudaGraphLaunch`` on the shared stream.

    ``key`` identifies what was baked in (tensor addresses and shapes); the owner re-captures
    when it changes. Capture follows TensorRT's rules: one ordinary enqueue first (lazy
    initialisation), fixed addresses, no synchronisation inside the captured call.
    """

    def __init__(self, rt: CudaRuntime, cudart: Any, graph: Any, exe: Any, key: Hashable) -> None:
        self.rt, self.cudart, self.graph, self.exe, self.key = rt, cudart, graph, exe, key

    @classmethod
    def capture(cls, rt: CudaRuntime, key: Hashable, enqueue: Callable[[], None]) -> CudaGraph:
        cudart = cudart_module()
        if cudart is None:
            raise MissingDependencyError(GRAPH_ADVICE)
        stream = cudart.cudaStream_t(rt.stream_handle)
        rt.synchronize()  # capture starts on an idle stream
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _checked(cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        except BaseException:
            err, graph = cudart.cudaStreamEndCapture(stream)  # leave the stream usable
            if int(err) == 0 and graph is not None:
                cudart.cudaGraphDestroy(graph)
            raise
        graph = _checked(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        exe = _checked(cudart.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")
        return cls(rt, cudart, graph, exe, key)

    def launch(self) -> None:
        stream = self.cudart.cudaStream_t(self.rt.stream_handle)
        _checked(self.cudart.cudaGraphLaunch(self.exe, stream), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.exe is not None:
            self.cudart.cudaGraphExecDestroy(self.exe)
            self.cudart.cudaGraphDestroy(self.graph)
            self.exe = self.graph = None
