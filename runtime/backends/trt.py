"""TensorRT backend: one serialized engine per bundle part, run on the GPU by tensor name.

``create_backend("tensorrt", precision="fp16").load(engine)``; ``artifact_path`` finds a part's
engine, ``bundle/engines/<slug>/<part>.<precision>[.dla<N>].engine`` (``edge build`` writes them).
TensorRT 8.5-11 tensor API; tensorrt (edge.core.lazy_trt) and pycuda are imported lazily.

- The sidecar is checked against this machine before TensorRT sees a byte; a DLA engine is
  deserialized with ``Runtime.DLA_core`` set from it. Tensors are bound by name.
- One device buffer per tensor, pinned host staging, ONE stream for every part of the process
  (edge.runtime.backends.trt_cuda). ``run_taps`` returns the trunk's *device* buffers and
  ``run_from_taps`` binds them as the head's inputs: no copy, the stream orders the two.
- CUDA events time each enqueue (``last_gpu_ms``). ``capture_graph=True``: the first run with
  given bindings warms up, the second is captured, later ones replay; new bindings re-capture.

The comparison with ONNX Runtime is in edge.runtime.backends.trt_selftest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.core.board import probe_jetson
from edge.core.device_identity import device_slug, gpu_identity
from edge.core.errors import BundleError, ConfigError, EngineMismatchError, InputContractError
from edge.core.lazy_trt import (
    LOG,
    engine_version,
    import_tensorrt,
    module_version,
    numpy_dtype,
    trt_logger,
)
from edge.core.sidecar import engine_file_name, verify_engine_here
from edge.core.trt_version import PRECISIONS, TrtVersion
from edge.runtime.backends.base import Backend, Dim, Taps, TensorMeta, concrete_shape
from edge.runtime.backends.trt_cuda import (
    CudaGraph,
    CudaRuntime,
    DeviceBuffer,
    PartTimer,
    shared_runtime,
)

if TYPE_CHECKING:
    import tensorrt as trt  # noqa: TID251  (types only; imported lazily)

    from edge.core.manifest import Bundle


@dataclass(frozen=True)
class TrtOptions:
    """Options of :class:`TensorRTBackend` (``create_backend("tensorrt", **options)``)."""

    precision: str = "fp16"
    """Which engine ``artifact_path`` picks for a part: ``<part>.<precision>.engine``."""
    dla_core: int | None = None
    """Pick the DLA engines ``<part>.<precision>.dla<N>.engine`` (``edge build --dla-core N``)."""
    capture_graph: bool = False
    """Replay each part's enqueue as a CUDA graph (needs cuda-python)."""
    synchronize: bool = False
    """Wait for the GPU at the end of every call (profiling); default: only to read results."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"tensorrt backend precision '{self.precision}': expected one of {PRECISIONS} "
                "(the engines edge build wrote: <part>.<precision>.engine)"
            )
        if self.dla_core is not None and (not isinstance(self.dla_core, int) or self.dla_core < 0):
            raise ConfigError(f"tensorrt backend dla_core {self.dla_core!r}: expected 0 or 1")


@dataclass(frozen=True)
class DeviceTaps:
    """``Taps.device`` of this backend: the trunk's output buffers on the shared stream."""

    runtime: CudaRuntime
    ptrs: Mapping[str, int] = field(default_factory=dict)


def _dims(shape: trt.Dims) -> tuple[int, ...]:
    return tuple(int(shape[i]) for i in range(len(shape)))


def _meta_dims(shape: Sequence[int]) -> tuple[Dim, ...]:
    """TensorRT dims -> TensorMeta dims: -1 is the dynamic batch at 0, unknown elsewhere."""
    return tuple(("batch" if i == 0 else None) if d < 0 else int(d) for i, d in enumerate(shape))


class TensorRTBackend(Backend):
    """``TensorRTBackend(precision="fp16").load("bundle/engines/<slug>/trunk.fp16.engine")``."""

    name = "tensorrt"

    def __init__(self, options: TrtOptions | None = None, **kw: Any) -> None:
        super().__init__()
        if options is None:
            try:
                options = TrtOptions(**kw)
            except TypeError as e:
                raise ConfigError(
                    f"tensorrt backend: {e}; its options are precision, dla_core, capture_graph "
                    "and synchronize (thread counts are onnxruntime options)"
                ) from e
        self.options = options
        self.sidecar: dict[str, Any] = {}
        self._rt: CudaRuntime | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._buffers: dict[str, DeviceBuffer] = {}
        self._metas: tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]] = ((), ())
        self._dynamic: set[str] = set()
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._bound: dict[str, int] = {}
        self._timer: PartTimer | None = None
        self._staged: Any = None
        self._graph: CudaGraph | None = None
        self._warm_key: tuple[Any, ...] | None = None

    # -- files --------------------------------------------------------------------------------
    def engine_path(self, bundle: Bundle, part: str) -> Path:
        """``bundle/engines/<this device's slug>/<part>.<precision>[.dla<N>].engine``."""
        device = probe_jetson()
        slug = device_slug(gpu_identity(device), device, engine_version())
        name = engine_file_name(part, self.options.precision, self.options.dla_core)
        return bundle.root / "engines" / slug / name

    def artifact_path(self, bundle: Bundle, part: str) -> Path:
        try:
            given = bundle.path(part)
        except BundleError:
            given = None
        if given is not None and given.suffix == ".engine":
            return given  # a view of the bundle that already names engines (edge profile)
        path = self.engine_path(bundle, part)
        if not path.is_file():
            dla = "" if self.options.dla_core is None else f" --dla-core {self.options.dla_core}"
            raise BundleError(
                f"{bundle.root}: no {self.options.precision} TensorRT engine for part '{part}' "
                f"({path}); build it on this machine: edge build {bundle.root} --precision "
                f"{self.options.precision}{dla}"
            )
        return path

    # -- lifecycle ----------------------------------------------------------------------------
    def _verify(self, path: Path) -> dict[str, Any]:
        """``path``'s sidecar, checked against this machine (before TensorRT or CUDA)."""
        return verify_engine_here(path)

    def _open_engine(self, path: Path) -> tuple[Any, Any]:
        """Deserialize the verified ``path``; returns (engine, execution context). Runs inside
        the CUDA context. With ``_verify``, the seam a GPU test replaces with a stand-in engine
        (tests/runtime/test_runtime_trt_gpu.py)."""
        lib = import_tensorrt()
        here, built = module_version(lib), TrtVersion.parse(str(self.sidecar["tensorrt"]))
        rebuild = f"edge build BUNDLE --precision {self.sidecar['precision']} --force"
        if not here.same_build(built):
            raise EngineMismatchError(
                f"engine {path} was built with TensorRT {built}, the imported module is {here} "
                f"(its package metadata said otherwise); rebuild it on this machine: {rebuild}"
            )
        self._runtime = lib.Runtime(trt_logger())
        dla = self.sidecar.get("dla_core")
        if dla is not None:  # a DLA engine deserializes onto the core it was built for
            self._runtime.DLA_core = int(dla)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            why = "; ".join(LOG.errors[-3:]) or "see TensorRT's log above"
            raise EngineMismatchError(
                f"TensorRT {here} could not deserialize {path} although its sidecar matches "
                f"this machine ({why}); rebuild it: {rebuild}"
            )
        context = engine.create_execution_context()
        if context is None:
            raise EngineMismatchError(
                f"TensorRT could not create an execution context for {path} (out of GPU "
                "memory?); close other GPU programs or build with a smaller workspace"
            )
        return engine, context

    def _load_impl(self, path: Path) -> None:
        self.sidecar = self._verify(path)  # before TensorRT or CUDA sees a single byte
        rt = shared_runtime()
        self._rt = rt
        try:
            with rt.active():
                self._engine, self._context = self._open_engine(path)
                self._allocate(rt, self._engine, self._context, path)
                self._timer = PartTimer(rt)
                self._staged = rt.cuda.Event()
        except BaseException:
            self._close_impl()  # whatever was allocated before the failure
            raise
        rt.users.add(self)

    def _allocate(
        self,
        rt: CudaRuntime,
        engine: trt.ICudaEngine,
        context: trt.IExecutionContext,
        path: Path,
    ) -> None:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        # enums by name: the same on every TensorRT version (pybind11 ``name``, TensorRT 7.2+)
        inputs = [n for n in names if engine.get_tensor_mode(n).name == "INPUT"]
        metas: dict[str, TensorMeta] = {}
        for n in names:
            if engine.get_tensor_location(n).name != "DEVICE":
                raise EngineMismatchError(
                    f"{path}: tensor '{n}' lives on the host (a shape "
                    "tensor); etr-edge engines have none: rebuild it"
                )
            if engine.get_tensor_format(n).name != "LINEAR":
                raise EngineMismatchError(
                    f"{path}: tensor '{n}' has a vectorized I/O format; "
                    "etr-edge binds linear buffers: rebuild it"
                )
            try:
                dtype = numpy_dtype(engine.get_tensor_dtype(n))
            except TypeError as e:
                raise EngineMismatchError(
                    f"{path}: tensor '{n}': {e}; rebuild it from the bundle's float model"
                ) from e
            metas[n] = TensorMeta(n, _meta_dims(_dims(engine.get_tensor_shape(n))), dtype.name)
        for n in inputs:
            shape = _dims(engine.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                self._dynamic.add(n)
                shape = _dims(engine.get_tensor_profile_shape(n, 0)[2])
                context.set_input_shape(n, shape)
            self._shapes[n] = shape
        for n in names:
            shape = _dims(context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise EngineMismatchError(
                    f"{path}: output '{n}' has a data-dependent shape; "
                    "etr-edge engines have none: rebuild it"
                )
            self._buffers[n] = DeviceBuffer(rt, n, np.dtype(metas[n].dtype), shape)
            if n not in inputs:
                self._bind(n, self._buffers[n].ptr)  # outputs: allocated and bound once
        self._metas = (
            tuple(metas[n] for n in inputs),
            tuple(metas[n] for n in names if n not in inputs),
        )

    def _describe_impl(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        return self._metas

    def _close_impl(self) -> None:
        rt = self._rt
        if rt is None or rt.closed:
            return
        with rt.active():
            rt.synchronize()
            if self._graph is not None:
                self._graph.destroy()
            for buf in self._buffers.values():
                buf.free()
            self._context = self._engine = self._runtime = None
            self._timer = self._staged = self._graph = None
        for state in (self._buffers, self._bound, self._dynamic, self._shapes):
            state.clear()
        self._warm_key = None
        rt.users.discard(self)
        self._rt = None

    # -- introspection --------------------------------------------------------------------------
    @property
    def last_gpu_ms(self) -> float:
        """GPU time of the last enqueue (CUDA events); waits for the GPU if still running."""
        if self._timer is None or self._rt is None:
            return 0.0
        with self._rt.active():
            return self._timer.ms

    @property
    def graph_captured(self) -> bool:
        """True while a CUDA graph of this part's enqueue is being replayed."""
        return self._graph is not None

    def device_ptr(self, name: str) -> int:
        """Address of this backend's own device buffer for tensor ``name``."""
        self._require_loaded()
        assert self._rt is not None
        with self._rt.active():
            return self._buffers[name].ptr

    def tensor_address(self, name: str) -> int:
        """The address TensorRT has bound for ``name`` (``get_tensor_address``)."""
        self._require_loaded()
        assert self._context is not None
        return int(self._context.get_tensor_address(name))

    # -- running --------------------------------------------------------------------------------
    def _bind(self, name: str, ptr: int) -> None:
        if self._bound.get(name) != ptr:
            assert self._context is not None
            if not self._context.set_tensor_address(name, ptr):
                raise EngineMismatchError(f"{self}: TensorRT refused an address for '{name}'")
            self._bound[name] = ptr

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if name not in self._dynamic or self._shapes.get(name) == shape:
            return
        assert self._context is not None and self._engine is not None
        if not self._context.set_input_shape(name, shape):
            lo, _, hi = (_dims(d) for d in self._engine.get_tensor_profile_shape(name, 0))
            raise InputContractError(
                f"{self}: input '{name}' shape {list(shape)} is outside the engine's optimization "
                f"profile {list(lo)}..{list(hi)}; rebuild for a larger batch range"
            )
        self._shapes[name] = shape

    def _stage(self, feed: Mapping[str, np.ndarray]) -> None:
        """Copy the feed into this part's input buffers (through pinned memory)."""
        assert self._staged is not None
        self._staged.synchronize()  # the previous frame's host->device copies have been read
        for t in self._inputs:
            array = np.ascontiguousarray(feed[t.name])
            self._set_shape(t.name, tuple(array.shape))
            buf = self._buffers[t.name]
            buf.upload(array)
            self._bind(t.name, buf.ptr)
        assert self._rt is not None
        self._staged.record(self._rt.stream)

    def _execute(self) -> None:
        assert self._context is not None and self._rt is not None
        if not self._context.execute_async_v3(self._rt.stream_handle):
            raise EngineMismatchError(
                f"{self}: TensorRT failed to enqueue (see its log above); rebuild the engine "
                "on this machine, or run with --backend onnxruntime"
            )

    def _enqueue(self) -> None:
        assert self._timer is not None and self._rt is not None
        self._timer.begin()
        if self.options.capture_graph:
            key = tuple(sorted((n, p, self._shapes.get(n)) for n, p in self._bound.items()))
            if self._graph is not None and self._graph.key != key:
                self._graph.destroy()
                self._graph = None
            if self._graph is None and self._warm_key == key:
                self._graph = CudaGraph.capture(self._rt, key, self._execute)
            if self._graph is not None:
                self._graph.launch()
            else:
                self._execute()  # warm-up: the next run with these bindings is captured
                self._warm_key = key
        else:
            self._execute()
        self._timer.finish()
        if self.options.synchronize:
            self._rt.synchronize()

    def _fetch(self, outputs: list[str]) -> dict[str, np.ndarray]:
        """Copy the named outputs to the host, wait, and return caller-owned arrays."""
        assert self._context is not None and self._rt is not None
        views = {
            n: self._buffers[n].download(_dims(self._context.get_tensor_shape(n))) for n in outputs
        }
        self._rt.synchronize()
        return {n: v.copy() for n, v in views.items()}

    def _run_impl(
        self, feed: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        assert self._rt is not None
        with self._rt.active():
            self._stage(feed)
            self._enqueue()
            return self._fetch(outputs)

    def _run_taps_impl(self, feed: Mapping[str, np.ndarray]) -> Taps:
        assert self._rt is not None and self._context is not None
        with self._rt.active():
            self._stage(feed)
            self._enqueue()
            meta = {}
            for t in self._outputs:
                shape = _dims(self._context.get_tensor_shape(t.name))
                meta[t.name] = TensorMeta(t.name, shape, t.dtype)
            ptrs = {t.name: self._buffers[t.name].ptr for t in self._outputs}
        return Taps(self, self.generation, meta, device=DeviceTaps(self._rt, ptrs))

    def _run_from_taps_impl(self, taps: Taps, outputs: list[str]) -> dict[str, np.ndarray]:
        device = taps.device
        if not isinstance(device, DeviceTaps) or device.runtime is not self._rt:
            return super()._run_from_taps_impl(taps, outputs)  # host taps: copied in
        assert self._rt is not None
        with self._rt.active():
            for t in self._inputs:  # names, shapes and dtypes were checked by run_from_taps
                self._set_shape(t.name, concrete_shape(taps.meta[t.name]))
                self._bind(t.name, device.ptrs[t.name])  # the trunk's buffer: no copy
            self._enqueue()
            return self._fetch(outputs)

    def _tap_to_host(self, taps: Taps, name: str) -> np.ndarray:
        if not taps.valid:
            raise InputContractError(
                f"{self}: these taps are stale (the trunk ran again); read them before the "
                "trunk's next run"
            )
        assert self._rt is not None
        with self._rt.active():
            shape = concrete_shape(taps.meta[name])
            view = self._buffers[name].download(shape)
            self._rt.synchronize()
            return view.copy()
