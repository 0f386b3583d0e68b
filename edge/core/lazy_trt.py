"""The one place that imports ``tensorrt`` (on first use), its version, its logger and its dtypes.

TensorRT exists only on the device, so nothing may import it at module level (a ruff ban).
``trt`` here is a stand-in that imports the module on the first attribute access. The build
and runtime modules take it as

    if TYPE_CHECKING:
        import tensorrt as trt  # types only
    else:
        from edge.core.lazy_trt import trt

so that for mypy ``trt`` is the real module and every call is checked against the repaired
stubs. ``import_tensorrt`` says where to get TensorRT when it is missing; ``installed_tensorrt``
gives its full version (all four parts where they can be found); ``trt_logger`` is the one
TensorRT logger of the process, shared by ``edge build`` and the runtime; ``numpy_dtype`` maps
TensorRT data types to numpy by enum name (``trt.nptype`` is broken on TensorRT 8.5 with
numpy >= 1.24: it builds its table with ``np.bool``).
"""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.core.errors import EdgeError, import_optional
from edge.core.trt_version import TrtVersion

_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_libs")


def import_tensorrt() -> Any:
    """``tensorrt``, or MissingDependencyError saying where it comes from."""
    return import_optional(
        "tensorrt",
        lambda e: (
            f"TensorRT's Python bindings are not importable here ({e}). Build and run engines "
            "on the device: JetPack ships them (jetson/setup.sh makes them visible in the venv); "
            "on a desktop GPU install NVIDIA's tensorrt wheel; without TensorRT use "
            "--backend onnxruntime"
        ),
    )


class _LazyTensorRT:
    """Stands in for the ``tensorrt`` module; imports it on the first attribute access."""

    def __getattr__(self, name: str) -> Any:
        return getattr(import_tensorrt(), name)


trt = _LazyTensorRT()


# ------------------------------------------------------------------------------------ version


def version_from_metadata() -> TrtVersion | None:
    """The installed TensorRT's version from package metadata, without importing it."""
    found: list[TrtVersion] = []
    for dist in _DISTRIBUTIONS:
        try:
            found.append(TrtVersion.parse(importlib.metadata.version(dist)))
        except (importlib.metadata.PackageNotFoundError, EdgeError):
            continue
    with_build = [v for v in found if v.build is not None]
    return (with_build or found)[0] if found else None


def module_version(module: Any) -> TrtVersion:
    """The full version of an imported ``tensorrt``: ``__version__``, completed with the build
    number from package metadata when ``__version__`` has only three parts (8.6+ source builds).

    TensorRT refuses an engine of another build ("expecting library version 8.6.1.6 got
    8.6.1.4"), so the fourth part matters wherever it is known.
    """
    version = TrtVersion.parse(str(module.__version__))
    if version.build is None:
        meta = version_from_metadata()
        if meta is not None and meta.build is not None and meta.key == version.key:
            return meta
    return version


def engine_version() -> TrtVersion:
    """The full version engines are built with and looked up by here: package metadata when it
    has the build number (no import), else ``module_version`` of the imported module."""
    meta = version_from_metadata()
    if meta is not None and meta.build is not None:
        return meta
    return module_version(import_tensorrt())


def installed_tensorrt() -> TrtVersion | None:
    """The TensorRT importable in this Python (full version), or None if there is none."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError:
        return None
    if not getattr(module, "__version__", None):
        return None
    return module_version(module)


# ------------------------------------------------------------------------------------- dtypes

NUMPY_BY_TRT_NAME: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}
"""TensorRT ``DataType`` member name -> numpy type (BF16, FP8, INT4, FP4, E8M0: none).
Keyed by name because members differ between versions (INT64 exists from 9.x on)."""


def numpy_dtype(trt_dtype: Any) -> np.dtype[Any]:
    """The numpy dtype of a TensorRT ``DataType`` (TypeError naming it when numpy has none)."""
    name = str(getattr(trt_dtype, "name", trt_dtype))
    try:
        return np.dtype(NUMPY_BY_TRT_NAME[name])
    except KeyError:
        raise TypeError(f"TensorRT type {name} has no numpy equivalent") from None


# ------------------------------------------------------------------------------------- logger


@dataclass
class LogState:
    """Where the process's TensorRT logger reports: a line prefix, verbosity, and the errors
    it saw since the last ``trt_logger`` call (for error messages)."""

    prefix: str = "tensorrt"
    verbose: bool = False
    errors: list[str] = field(default_factory=list)


LOG = LogState()
_LOGGER: list[Any] = []


def trt_logger(prefix: str = "tensorrt", verbose: bool = False) -> Any:
    """The one TensorRT logger of this process (a strong reference is kept for its life, as
    TensorRT requires), used by every Builder and Runtime; TensorRT's plugins are registered
    with it once. Each call points it at the caller (``prefix``) and clears the errors it
    collected. It prints warnings and errors to stderr (everything with ``verbose``)."""
    LOG.prefix, LOG.verbose, LOG.errors = prefix, verbose, []
    if not _LOGGER:
        lib = import_tensorrt()

        class _Logger(lib.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                lib.ILogger.__init__(self)  # the trampoline needs the base class initialised

            def log(self, severity: Any, msg: str) -> None:
                if int(severity) <= int(lib.ILogger.ERROR):
                    LOG.errors.append(msg)
                if int(severity) <= int(lib.ILogger.WARNING) or LOG.verbose:
                    print(f"[{LOG.prefix}] TensorRT {severity.name}: {msg}", file=sys.stderr)

        _LOGGER.append(_Logger())
        lib.init_libnvinfer_plugins(_LOGGER[0], "")
    return _LOGGER[0]
