"""One exception hierarchy for user errors, and a separate one for our own bugs.

Every user-facing error says which stage failed, on which object, what was expected and what to
do about it. The CLI prints ``EdgeError`` messages without a traceback and exits with status 2;
``InternalError`` means a bug in etr-edge and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

QUOTE_LIMIT = 200
"""The most characters of the user's input an error message quotes (see :func:`quote`)."""
MESSAGE_LIMIT = 2000
"""Longer messages are cut in the middle: an error must stay one readable line."""


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said (for quoting
    user input such as a schedule line, which may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class EdgeError(Exception):
    """A problem with the user's input, files or environment: fixable by the user."""

    stage = "edge"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        if stage is not None:
            self.stage = stage
        if len(message) > MESSAGE_LIMIT:
            cut = len(message) - MESSAGE_LIMIT
            half = MESSAGE_LIMIT // 2
            message = f"{message[:half]} ...[{cut} characters cut]... {message[-half:]}"
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.stage}: {super().__str__()}"


class ConfigError(EdgeError):
    """A model, stage or CLI configuration is invalid."""

    stage = "config"


class CheckpointError(EdgeError):
    """A checkpoint file is missing, corrupt, not a checkpoint, or describes an unknown model."""

    stage = "checkpoint"


class DatasetError(EdgeError):
    """A dataset or labels file cannot be read or does not match the model's tasks."""

    stage = "data"


class ExportError(EdgeError):
    """Conversion to ONNX failed, or its verification against PyTorch failed."""

    stage = "convert"


class BundleError(EdgeError):
    """A bundle on disk is missing, incomplete, altered, or from an unknown format version."""

    stage = "bundle"


class CalibrationError(EdgeError):
    """INT8 calibration failed, or a calibration cache does not match the bundle."""

    stage = "calibrate"


class EngineBuildError(EdgeError):
    """A TensorRT engine could not be built with the requested options."""

    stage = "build"


class EngineMismatchError(EdgeError):
    """An engine file does not match this machine or its sidecar: it must be rebuilt."""

    stage = "engine"


class SourceError(EdgeError):
    """A camera/video/image source URI is invalid or cannot be opened."""

    stage = "source"


class SourceSettingError(SourceError):
    """The source answered but refuses a setting (an unknown feature, a value out of range, a
    format it does not honour): retrying cannot help, so it is never retried."""


class InputContractError(EdgeError):
    """A feed given to a backend does not match the model's inputs (names, shapes, dtypes)."""

    stage = "runtime"


class ScheduleError(EdgeError):
    """A dispatch schedule (CLI flags or file) is invalid."""

    stage = "schedule"


class MissingDependencyError(EdgeError):
    """An optional dependency (torch, onnx, tensorrt, pycuda, matplotlib) is not installed."""

    stage = "environment"


class InternalError(Exception):
    """A bug in etr-edge, not a user error. Deliberately not an EdgeError."""


def import_optional(module: str, missing: Callable[[ImportError], str]) -> Any:
    """Import an optional dependency; when it is not importable, raise MissingDependencyError
    with ``missing(the ImportError)``: what needs it and how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(missing(e)) from e


def require(module: str, *, extra: str, purpose: str) -> object:
    """Import an optional dependency or raise a MissingDependencyError saying how to get it."""
    return import_optional(
        module,
        lambda e: (
            f"{purpose} needs the Python package '{module}', which is not importable ({e}); "
            f"install it with: pip install 'etr-edge[{extra}]'"
        ),
    )
