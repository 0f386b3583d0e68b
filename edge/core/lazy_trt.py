"""The ``tensorrt`` module for ``edge build``, imported on first use.

TensorRT exists only on the device, so nothing may import it at module level (a ruff ban).
``trt`` here is a stand-in that imports the module on the first attribute access. The build
modules take it as

    if TYPE_CHECKING:
        import tensorrt as trt  # types only
    else:
        from edge.core.lazy_trt import trt

so that for mypy ``trt`` is the real module and every call is checked against the repaired
stubs. ``import_tensorrt`` says where to get TensorRT when it is missing.
"""

from __future__ import annotations

from typing import Any

from edge.core.errors import import_optional


def import_tensorrt() -> Any:
    return import_optional(
        "tensorrt",
        lambda e: (
            f"edge build needs TensorRT's Python bindings, which are not importable here "
            f"({e}). Build engines on the device: JetPack ships them (jetson/setup.sh makes them "
            "visible in the venv); on a desktop GPU install NVIDIA's tensorrt wheel"
        ),
    )


class _LazyTensorRT:
    """Stands in for the ``tensorrt`` module; imports it on the first attribute access."""

    def __getattr__(self, name: str) -> Any:
        return getattr(import_tensorrt(), name)


trt = _LazyTensorRT()
