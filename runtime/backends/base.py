"""The backend contract: load one bundle part, describe its tensors, run a feed.

A backend is a context manager (``with create_backend("onnxruntime").load(path) as b:``). The
public methods check state and inputs and time themselves; subclasses implement only the hooks
``_load_impl``, ``_describe_impl``, ``_run_impl`` and ``_close_impl`` (the Polygraphy runner
pattern). A feed that does not match the model raises :class:`InputContractError` naming the
tensor, what was expected and what was given; nothing is coerced silently.

Trunk and heads: the trunk's outputs are the heads' inputs (the taps). ``run_taps`` returns a
:class:`Taps` handle instead of arrays and ``run_from_taps`` feeds a head from one. Here the
handle holds numpy arrays; a device backend (TensorRT) returns handles to its own device-resident
output buffers and binds them straight as the heads' input addresses, so nothing is copied
between trunk and heads. A handle is valid until its producer runs again (a later run may reuse
the buffers), which ``run_from_taps`` checks.

Backends are chosen by name through :data:`BACKENDS`, resolved lazily: importing this module
imports no inference library at all.

Writing a device backend (TensorRT): implement the four hooks, and also

- ``artifact_path(bundle, part)``: the file to load for a part (its engine for this device and
  precision, instead of the ONNX graph);
- ``_run_taps_impl``: enqueue the trunk with its outputs in buffers it owns and return
  ``Taps(self, self.generation, meta, device=...)`` (``meta`` with the concrete shapes/dtypes);
- ``_run_from_taps_impl``: when ``taps.device`` comes from a compatible backend (same CUDA
  context and stream), bind those buffers as this engine's input addresses
  (``set_tensor_address``) and enqueue; else fall back to ``taps.host(name)``;
- ``_tap_to_host``: copy one tap to the host (debugging, calibration, the ORT fallback).

``last_run_ns`` is host wall time around the public call; a device backend that returns before
the GPU finishes must synchronise first (or report device time from CUDA events).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Union

import numpy as np

from edge.core.errors import (
    EdgeError,
    InputContractError,
    InternalError,
)

if TYPE_CHECKING:
    from edge.core.manifest import Bundle

Dim = Union[int, str, None]  # noqa: UP007  (Python 3.8 has no X | Y at run time)
"""A dimension: an int when fixed, a symbol (``"batch"``) or None when dynamic."""

_B = TypeVar("_B", bound="Backend")


@dataclass(frozen=True)
class TensorMeta:
    """One input or output of a loaded part."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    """numpy dtype name: "float32", "uint8", "float16", "int8", ..."""

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


_DTYPE_NAMES: dict[np.dtype[Any], str] = {}


def dtype_name(dtype: np.dtype[Any]) -> str:
    """``dtype.name`` ("float32", "uint8", ...), memoised: numpy computes the name in Python on
    every access (~7 us), and every run names each input and tap."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


def concrete_shape(meta: TensorMeta) -> tuple[int, ...]:
    """The shape of an actual tensor (every dim a number: taps and outputs, not declarations)."""
    dims = tuple(int(d) for d in meta.shape if isinstance(d, (int, np.integer)))
    if len(dims) != len(meta.shape):
        raise InternalError(f"tensor '{meta.name}' has symbolic dims {meta.shape} after a run")
    return dims


class Taps:
    """The trunk's outputs for one run, as the heads consume them.

    ``host(name)`` returns a numpy array (a device backend copies it to the host on first
    access, then caches it). ``meta[name]`` gives the concrete shape and dtype without touching
    the data. ``producer`` / ``generation`` identify the run that made them.
    """

    def __init__(
        self,
        producer: Backend,
        generation: int,
        meta: Mapping[str, TensorMeta],
        arrays: Mapping[str, np.ndarray] | None = None,
        device: Any = None,
    ) -> None:
        self.producer = producer
        self.generation = generation
        self.meta = dict(meta)
        self.device = device
        """Backend-specific handle (e.g. a dict of device pointers); None for host taps."""
        self._arrays: dict[str, np.ndarray] = dict(arrays or {})

    @property
    def names(self) -> list[str]:
        return list(self.meta)

    @property
    def on_host(self) -> bool:
        return self.device is None

    @property
    def valid(self) -> bool:
        """False once the producer has run again (its buffers may hold another frame)."""
        return self.producer.generation == self.generation

    def host(self, name: str) -> np.ndarray:
        if name not in self.meta:
            raise InputContractError(
                f"tap '{name}' is not among the trunk's outputs {self.names}; the head and the "
                "trunk come from different bundles: re-run edge convert"
            )
        if name not in self._arrays:
            self._arrays[name] = self.producer._tap_to_host(self, name)
        return self._arrays[name]

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: self.host(n) for n in self.meta}


class Backend:
    """Base class of inference backends; one instance runs one ONNX/engine file."""

    name = "backend"

    def __init__(self) -> None:
        self.path: Path | None = None
        self._inputs: tuple[TensorMeta, ...] = ()
        self._outputs: tuple[TensorMeta, ...] = ()
        self._input_by_name: dict[str, TensorMeta] = {}
        self._output_names: frozenset[str] = frozenset()
        self.generation = 0
        """Counts runs; a :class:`Taps` handle is valid while this has not changed."""
        self.last_run_ns = 0
        """Wall time of the last ``run``/``run_taps``/``run_from_taps`` (validation included)."""
        self.total_run_ns = 0
        self.runs = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def load(self: _B, path: str | Path) -> _B:
        """Load a part (``trunk.onnx``, ``heads/<t>.onnx``, an engine...); returns ``self``."""
        if self.path is not None:
            raise InputContractError(f"{self}: already loaded; close() it or make a new one")
        p = Path(path)
        if not p.is_file():
            raise InputContractError(
                f"{self.name}: model file '{p}' does not exist; check the bundle path "
                "(edge convert writes trunk.onnx, heads/<task>.onnx and fused.onnx)"
            )
        try:
            self._load_impl(p)
        except EdgeError:
            raise
        except Exception as e:
            raise InputContractError(
                f"{self.name}: cannot load '{p}': {type(e).__name__}: {e}; the file may be "
                "damaged or from an unsupported version: re-run edge convert"
            ) from e
        self.path = p
        self._inputs, self._outputs = self._describe_impl()
        self._input_by_name = {t.name: t for t in self._inputs}
        self._output_names = frozenset(t.name for t in self._outputs)
        return self

    def close(self) -> None:
        if self.path is not None:
            self._close_impl()
            self.path = None

    def __enter__(self) -> Backend:
        self._require_loaded()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    def __str__(self) -> str:
        return f"{self.name} backend ({self.path.name if self.path else 'not loaded'})"

    def artifact_path(self, bundle: Bundle, part: str) -> Path:
        """The file this backend loads for ``part`` ("trunk", "heads/<task>", "fused") of
        ``bundle``: the ONNX graph here; a device backend returns its engine."""
        return bundle.path(part)

    # -- metadata -----------------------------------------------------------------------------
    def inputs(self) -> tuple[TensorMeta, ...]:
        self._require_loaded()
        return self._inputs

    def outputs(self) -> tuple[TensorMeta, ...]:
        self._require_loaded()
        return self._outputs

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs()]

    # -- running ------------------------------------------------------------------------------
    def run(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run on ``feed`` ({input name: array}); returns {output name: array} (all outputs,
        or those named in ``outputs``)."""
        t0 = time.perf_counter_ns()
        self._require_loaded()
        self.validate_feed(feed)
        names = self._check_output_names(outputs)
        result = self._run_impl(feed, names)
        self.generation += 1
        self._timed(t0)
        return result

    def run_taps(self, feed: Mapping[str, np.ndarray]) -> Taps:
        """Run the trunk and return its outputs as a :class:`Taps` handle for the heads."""
        t0 = time.perf_counter_ns()
        self._require_loaded()
        self.validate_feed(feed)
        self.generation += 1
        taps = self._run_taps_impl(feed)
        self._timed(t0)
        return taps

    def run_from_taps(
        self, taps: Taps, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run a head on the trunk's taps (this part's inputs must all be taps)."""
        t0 = time.perf_counter_ns()
        self._require_loaded()
        if not taps.valid:
            raise InputContractError(
                f"{self}: these taps are stale: their trunk ({taps.producer}) has run again "
                "since; run the heads of a frame before the trunk's next run"
            )
        missing = [t.name for t in self._inputs if t.name not in taps.meta]
        if missing:
            raise InputContractError(
                f"{self}: needs inputs {missing} that the trunk does not output (it outputs "
                f"{taps.names}); the head and the trunk come from different bundles"
            )
        self._validate_metas([taps.meta[t.name] for t in self._inputs])
        names = self._check_output_names(outputs)
        result = self._run_from_taps_impl(taps, names)
        self.generation += 1
        self._timed(t0)
        return result

    def validate_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`InputContractError` unless ``feed`` matches the inputs exactly."""
        missing = [n for n in self._input_by_name if n not in feed]
        extra = [n for n in feed if n not in self._input_by_name]
        if missing or extra:
            raise InputContractError(
                f"{self}: feed has inputs {sorted(feed)}, expected exactly "
                f"{[t.name for t in self._inputs]}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )
        metas = []
        for t in self._inputs:
            a = feed[t.name]
            if not isinstance(a, np.ndarray):
                raise InputContractError(
                    f"{self}: input '{t.name}' must be a numpy array {t.describe()}, got "
                    f"{type(a).__name__}"
                )
            metas.append(TensorMeta(t.name, tuple(a.shape), dtype_name(a.dtype)))
        self._validate_metas(metas)

    def _validate_metas(self, given: Sequence[TensorMeta]) -> None:
        symbols: dict[str, tuple[int, str]] = {}
        for g in given:
            t = self._input_by_name[g.name]
            if g.dtype != t.dtype:
                raise InputContractError(
                    f"{self}: input '{t.name}' expected dtype {t.dtype}, got {g.dtype} (shape "
                    f"{g.shape}); convert it explicitly (the model's input spec says "
                    f"{t.describe()})"
                )
            ok = len(g.shape) == len(t.shape)
            for want, got in zip(t.shape, g.shape):
                if not ok:
                    break
                if isinstance(want, int) and want >= 0:
                    ok = want == got
                else:
                    ok = isinstance(got, int) and got >= 1
                    if ok and isinstance(want, str) and want:
                        prev = symbols.setdefault(want, (int(got), g.name))  # type: ignore[arg-type]
                        if prev[0] != got:
                            raise InputContractError(
                                f"{self}: dimension '{want}' is {prev[0]} in input '{prev[1]}' "
                                f"but {got} in input '{g.name}'; every input must have the "
                                "same batch size"
                            )
            if not ok:
                raise InputContractError(
                    f"{self}: input '{t.name}' expected shape {t.describe()}, got "
                    f"{g.dtype}{list(g.shape)}"
                    + (
                        " (a fixed batch size: resize or pad the batch, or convert with "
                        "--dynamic-batch)"
                        if len(g.shape) == len(t.shape)
                        else ""
                    )
                )

    def _check_output_names(self, outputs: Sequence[str] | None) -> list[str]:
        if outputs is None:
            return [t.name for t in self._outputs]
        unknown = [n for n in outputs if n not in self._output_names]
        if unknown:
            raise InputContractError(
                f"{self}: unknown output(s) {unknown}; this part outputs "
                f"{[t.name for t in self._outputs]}"
            )
        return list(outputs)

    def _require_loaded(self) -> None:
        if self.path is None:
            raise InputContractError(f"{self.name} backend: call load(path) before using it")

    def _timed(self, t0: int) -> None:
        self.last_run_ns = time.perf_counter_ns() - t0
        self.total_run_ns += self.last_run_ns
        self.runs += 1

    # -- hooks (subclasses) -------------------------------------------------------------------
    def _load_impl(self, path: Path) -> None:
        raise NotImplementedError

    def _describe_impl(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        raise NotImplementedError

    def _run_impl(
        self, feed: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close_impl(self) -> None:
        """Release the session/engine. Default: nothing to release."""

    def _run_taps_impl(self, feed: Mapping[str, np.ndarray]) -> Taps:
        """Default: run on the host and wrap the arrays. Device backends override this to keep
        the outputs in their own device buffers (``Taps.device``)."""
        arrays = self._run_impl(feed, [t.name for t in self._outputs])
        meta = {n: TensorMeta(n, tuple(a.shape), dtype_name(a.dtype)) for n, a in arrays.items()}
        return Taps(self, self.generation, meta, arrays=arrays)

    def _run_from_taps_impl(self, taps: Taps, outputs: list[str]) -> dict[str, np.ndarray]:
        """Default: feed the taps' host arrays. A device backend binds ``taps.device`` buffers
        as its input addresses when it can (same device and stream), else falls back to this."""
        return self._run_impl({t.name: taps.host(t.name) for t in self._inputs}, outputs)

    def _tap_to_host(self, taps: Taps, name: str) -> np.ndarray:
        """Copy one device-resident tap to the host (device backends only)."""
        raise InputContractError(f"{self}: tap '{name}' is not available on the host")
