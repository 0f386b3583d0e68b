"""TensorRT backend: one serialized engine per bundle part, run on the GPU by tensor name.

``create_backend("tensorrt", precision="fp16").load(engine)``; the pipeline finds each part's
engine with :meth:`TensorRTBackend.artifact_path` (``edge build`` writes them to
``bundle/engines/<slug>/<part>.<precision>.engine``). Written against the TensorRT 8.5-10.x
tensor API; tensorrt and pycuda are imported lazily.

- **Verified before deserialized**: the sidecar is checked against this machine (TensorRT
  version, GPU, engine and ONNX hashes) before TensorRT is imported; a mismatch raises
  EngineMismatchError saying how to rebuild (engines are not portable and may carry plugins).
- **By name**: ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``, then
  ``set_tensor_address``; TensorRT's I/O order is never used.
- **Buffers once, one stream**: a device buffer per tensor (the profile's maximum for a dynamic
  batch; ``set_input_shape`` per run), pinned host staging, and ONE stream for every part in the
  process (``execute_async_v3``), see :mod:`edge.runtime.backends.trt_cuda`.
- **Trunk -> heads without copies**: ``run_taps`` returns Taps holding the trunk's *device*
  output buffers; ``run_from_taps`` binds them as the head's input addresses (the shared stream
  orders trunk before head). Host taps (e.g. ONNX Runtime's) are copied in.
- **Timing**: CUDA events around each enqueue, ``last_gpu_ms``. Device taps are returned without
  waiting; ``synchronize=True`` makes ``last_run_ns`` each part's full latency (profiling).
- **CUDA graphs** (``capture_graph=True``): the first run with given bindings is the warm-up,
  the second is captured (cuda-python), later ones replay it, so the trunk and each due head are
  one graph launch each; other addresses or shapes re-capture.

The comparison with ONNX Runtime (:func:`compare_with_onnxruntime`, :func:`self_test`) is in
:mod:`edge.runtime.backends.trt_selftest`.
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
from edge.core.trt_version import TrtVersion
from edge.runtime.backends.base import Backend, Dim, Taps, TensorMeta, concrete_shape
from edge.runtime.backends.trt_cuda import (
    CudaGraph,
    CudaRuntime,
    DeviceBuffer,
    PartTimer,
    shared_runtime,
    tensorrt_logger,
    tensorrt_module,
    tensorrt_version_from_metadata,
    verify_engine_here,
)
from edge.runtime.backends.trt_options import PRECISIONS, TrtOptions

if TYPE_CHECKING:
    import tensorrt as trt  # noqa: TID251  (types only; imported lazily)

    from edge.core.manifest import Bundle


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
                    f"tensorrt backend: {e}; its options are precision, capture_graph and "
                    "synchronize (thread counts are onnxruntime options)"
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
        """``bundle/engines/<this device's slug>/<part>.<precision>.engine``."""

        version = tensorrt_version_from_metadata() or str(tensorrt_module().__version__)
        device = probe_jetson()
        slug = device_slug(gpu_identity(device), device, version)
        return bundle.root / "engines" / slug / f"{part}.{self.options.precision}.engine"

    def artifact_path(self, bundle: Bundle, part: str) -> Path:
        try:
            given = bundle.path(part)
        except BundleError:
            given = None
        if given is not None and given.suffix == ".engine":
            return given  # a view of the bundle that already names engines (edge profile)
        path = self.engine_path(bundle, part)
        if not path.is_file():
            raise BundleError(
                f"{bundle.root}: no {self.options.precision} TensorRT engine for part '{part}' "
                f"({path}); build it on this machine: edge build {bundle.root} --precision "
                f"{self.options.precision}"
            )
        return path

    # -- lifecycle ----------------------------------------------------------------------------
    def _load_impl(self, path: Path) -> None:
        self.sidecar = verify_engine_here(path)  # before TensorRT sees a single byte
        lib = tensorrt_module()
        here = TrtVersion.parse(str(lib.__version__))
        if here != TrtVersion.parse(str(self.sidecar["tensorrt"])):
            raise EngineMismatchError(
                f"engine {path} was built with TensorRT {self.sidecar['tensorrt']}, the imported "
                f"module is {lib.__version__} (its package metadata said otherwise); rebuild "
                "it on this machine: edge build BUNDLE ..."
            )
        rt = shared_runtime()
        self._rt = rt
        try:
            with rt.active():
                self._runtime = lib.Runtime(tensorrt_logger(lib))
                engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
                if engine is None:
                    raise EngineMismatchError(
                        f"TensorRT {here} could not deserialize {path} although its sidecar "
                        "matches this machine (see TensorRT's log above); rebuild it: edge "
                        "build BUNDLE ..."
                    )
                context = engine.create_execution_context()
                if context is None:
                    raise EngineMismatchError(
                        f"TensorRT could not create an execution context for {path} (out of GPU "
                        "memory?); close other GPU programs or build with a smaller workspace"
                    )
                self._engine, self._context = engine, context
                self._allocate(lib, rt, engine, context, path)
                self._timer = PartTimer(rt)
                self._staged = rt.cuda.Event()
        except BaseException:
            self._close_impl()  # whatever was allocated before the failure
            raise
        rt.users.add(self)

    def _allocate(
        self,
        lib: Any,
        rt: CudaRuntime,
        engine: trt.ICudaEngine,
        context: trt.IExecutionContext,
        path: Path,
    ) -> None:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == lib.TensorIOMode.INPUT]
        metas: dict[str, TensorMeta] = {}
        for n in names:
            if engine.get_tensor_location(n) != lib.TensorLocation.DEVICE:
                raise EngineMismatchError(
                    f"{path}: tensor '{n}' lives on the host (a shape "
                    "tensor); etr-edge engines have none: rebuild it"
                )
            if engine.get_tensor_format(n) != lib.TensorFormat.LINEAR:
                raise EngineMismatchError(
                    f"{path}: tensor '{n}' has a vectorized I/O format; "
                    "etr-edge binds linear buffers: rebuild it"
                )
            try:
                dtype = np.dtype(lib.nptype(engine.get_tensor_dtype(n)))
            except TypeError as e:
                raise EngineMismatchError(
                    f"{path}: tensor '{n}' has TensorRT type {engine.get_tensor_dtype(n)}, "
                    "which numpy cannot hold; rebuild it from the bundle's float model"
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


__all__ = [
    "PRECISIONS",
    "DeviceTaps",
    "TensorRTBackend",
    "TrtOptions",
    "tensorrt_version_from_metadata",
    "verify_engine_here",
]
