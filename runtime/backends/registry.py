"""Backends by name: ``create_backend("onnxruntime", intra_op_threads=1)``. Each backend's module
(and its library) is imported only when that backend is asked for."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from edge.core.errors import ConfigError, MissingDependencyError
from edge.runtime.backends.base import Backend


def _onnxruntime() -> type[Backend]:
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingDependencyError(
            "the onnxruntime backend needs the Python package 'onnxruntime'; install it with: "
            "pip install onnxruntime"
        )
    from edge.runtime.backends.ort import OnnxRuntimeBackend

    return OnnxRuntimeBackend


def _tensorrt() -> type[Backend]:
    if importlib.util.find_spec("tensorrt") is None:
        raise MissingDependencyError(
            "the tensorrt backend needs the Python package 'tensorrt' (it comes with JetPack on a "
            "Jetson, or NVIDIA's wheels on a desktop GPU) and is not installed here; use "
            "--backend onnxruntime on this machine"
        )
    try:
        module = importlib.import_module("edge.runtime.backends.trt")
    except ImportError as e:
        raise MissingDependencyError(
            f"the tensorrt backend could not be imported ({e}); on a Jetson install "
            "'etr-edge[jetson]' (pycuda) next to JetPack's tensorrt"
        ) from e
    cls: type[Backend] = module.TensorRTBackend
    return cls


def _triton() -> type[Backend]:
    from edge.runtime.backends.triton import TritonBackend  # tritonclient: imported on load

    return TritonBackend


BACKENDS: dict[str, Callable[[], type[Backend]]] = {
    "onnxruntime": _onnxruntime,
    "tensorrt": _tensorrt,
    "triton": _triton,
}
"""Backend name -> a function returning its class (imports happen only when called)."""

ALIASES = {"ort": "onnxruntime", "trt": "tensorrt"}


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (or an alias: ``ort``, ``trt``)."""
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        raise ConfigError(
            f"unknown backend '{name}'; available: {sorted(BACKENDS)} (aliases {sorted(ALIASES)})"
        )
    return BACKENDS[key]()


def create_backend(name: str, **options: Any) -> Backend:
    """An unloaded backend instance: ``create_backend("onnxruntime", intra_op_threads=1)``."""
    return backend_class(name)(**options)
