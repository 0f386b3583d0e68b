"""The one preprocessing function shared by training, calibration and the runtime.

Camera frames (any size, uint8 HWC BGR) are resized to the model's input size; that is all the
CPU does when the bundle has in-graph preprocessing (the graph casts, normalises and transposes).
Without it, ``frames_to_input`` also normalises and transposes in numpy, with the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.core.errors import InputContractError


@dataclass(frozen=True)
class InputSpec:
    """What a bundle's graphs take (recorded in the manifest's "input" section)."""

    name: str = "image"
    height: int = 128
    width: int = 128
    channels: int = 3
    color: str = "BGR"
    mean: tuple[float, ...] = (128.0, 128.0, 128.0)
    std: tuple[float, ...] = (64.0, 64.0, 64.0)
    in_graph: bool = True
    """True: the graph takes uint8 NHWC BGR; False: float32 NCHW, already normalised."""

    @property
    def layout(self) -> str:
        return "NHWC" if self.in_graph else "NCHW"

    @property
    def dtype(self) -> str:
        return "uint8" if self.in_graph else "float32"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "color": self.color,
            "mean": list(self.mean),
            "std": list(self.std),
            "in_graph_preprocessing": self.in_graph,
            "layout": self.layout,
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            name=str(d["name"]),
            height=int(d["height"]),
            width=int(d["width"]),
            channels=int(d["channels"]),
            color=str(d["color"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            in_graph=bool(d["in_graph_preprocessing"]),
        )


SUPERSAMPLE = (2, 4)
"""Shrinking samples the frame bilinearly on a grid ``s`` times denser than the output per axis
(``s`` = the shrink factor / 3, kept within these bounds), then averages each ``s`` x ``s``
block: an area-like filter whose cost follows the output size, not the input's."""


def _supersample(src: int, dst: int) -> int:
    lo, hi = SUPERSAMPLE
    return min(hi, max(lo, -(-src // (3 * dst))))


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one uint8 HxWx3 BGR frame to (height, width). Returns the frame itself when it
    already has that size; bilinear when enlarging (either axis); when shrinking, bilinear
    samples on a grid 2-4 times denser (``SUPERSAMPLE``), averaged per block (cv2.INTER_AREA
    at an integer factor): within ~1 grey level of a full area filter on camera frames, at a
    cost that follows the output (bench/bench_station.py, 128x128 from 640x480 / 1280x720:
    0.14 / 0.47 ms, where INTER_AREA costs 0.58 / 1.8 ms)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputContractError(
            f"a frame must be uint8 HxWx3 (BGR), got {image.dtype} {image.shape}; convert "
            "grayscale with cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)"
        )
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if h < height or w < width:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    grid = (width * _supersample(w, width), height * _supersample(h, height))
    if (w, h) != grid:
        image = cv2.resize(image, grid, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def frames_to_input(frames: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """A batch of frames -> the graph's input tensor (N, H, W, C) uint8 or (N, C, H, W) float32."""
    if not frames:
        raise InputContractError("frames_to_input needs at least one frame")
    batch = np.stack([resize_frame(f, spec.height, spec.width) for f in frames])
    if spec.in_graph:
        return batch
    return normalise(batch, spec)


def normalise(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 with the spec's mean/std (the graph's math)."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv = (1.0 / np.asarray(spec.std, dtype=np.float32)).astype(np.float32)
    x = (batch.astype(np.float32) - mean) * inv
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a label mask (H, W) with nearest neighbour (class ids are not interpolated)."""
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


@contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's worker threads set to ``n`` for the block, then restored (process-wide).

    The run loop resizes frame k+1 on its own thread while ONNX Runtime infers frame k on one
    intra-op thread; letting ``cv2.resize`` also fan out over every core would take cycles from
    the inference it is meant to overlap."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)
