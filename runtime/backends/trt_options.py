"""Options of the TensorRT backend (``create_backend("tensorrt", **options)``).

Apart from the backend so that they can be checked, shown and passed on without the backend's
CUDA machinery; imports neither TensorRT nor CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.core.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TrtOptions:
    """Options of :class:`TensorRTBackend` (``create_backend("tensorrt", **options)``)."""

    precision: str = "fp16"
    """Which engine ``artifact_path`` picks for a part: ``<part>.<precision>.engine``."""
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
