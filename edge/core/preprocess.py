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


PREFILTER_MIN = 0.9
"""Shrinking reads every ``m``-th pair of rows, ``m`` the largest even step that keeps at least
this fraction of the output's height; likewise columns at a step of at most ``COLUMN_STEP``,
then halved (pairs averaged) while at least this fraction of the output's width remains."""

COLUMN_STEP = 4
ROW_STEP = 6
"""Rows are read in pairs at a step of at most this (2 of every 6 at 1280x720); a taller frame
is then halved (row pairs averaged) like the columns, so no frame's rows are sampled sparser
than a 720p frame's."""
"""A row is read whole anyway (cache lines); a finer column step costs compute, not memory."""


def _step(src: int, dst: int) -> int:
    """The even sampling step along one axis, or 1 (no prefilter) below a ~1.8x shrink."""
    m = 2 * int(src / (2 * PREFILTER_MIN * dst))
    return m if m >= 2 else 1


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one uint8 HxWx3 BGR frame to (height, width). Returns the frame itself when it
    already has that size; bilinear when enlarging (either axis). Shrinking by ~1.8x or more
    (``PREFILTER_MIN``) first takes the mean of 2x2 blocks at even steps (a bilinear sample
    between two rows reads only those: 2 of every ``m`` rows, m = 4 at 480 -> 128, 6 at 720;
    taller frames: 6 (``ROW_STEP``), then halved),
    on the centred crop that is a multiple of the steps (under a step lost), halves the
    columns while wide enough, then bilinear to the output. 1-px stripes and checkers average
    to grey instead of aliasing, finer columns alias about as little as under INTER_AREA, but
    rows are read in pairs: 2-px rows at 1280x720 still alias (not a full area filter; see
    bench/bench_resize.py's table). The result is within ~1.2 / 1.6 / 1.8 grey levels
    (mean) of cv2.INTER_AREA on 320x240 / 640x480 / 1280x720 demo-line frames. The cost
    follows the rows read: 0.08 / 0.17 ms back to back (the former 2-4x grid + area: 0.2 /
    0.6 ms, INTER_AREA 0.7 / 2.4 ms); in a 30 fps run on a shared 2-core VM about half the
    former's, near one plain bilinear call (preprocess p50, medians of 4 runs: 0.45 vs 0.82
    ms at 640x480, 1.0 vs 1.4 ms at 1280x720; bilinear 0.46 / 1.0; bench/bench_resize.py)."""
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
    my, mx = min(ROW_STEP, _step(h, height)), min(COLUMN_STEP, _step(w, width))
    if (my > 1 or mx > 1) and h // my >= 1 and w // mx >= 1:
        ny, nx = h // my, w // mx
        y0, x0 = (h - ny * my) // 2, (w - nx * mx) // 2
        crop = image[y0 : y0 + ny * my, x0 : x0 + nx * mx]
        image = cv2.resize(crop, (nx, ny), interpolation=cv2.INTER_LINEAR)
        while True:  # 2x bilinear shrinks: the mean of each pixel pair (row pair, 2x2 block)
            hx, hy = _step(nx, width) > 1, _step(ny, height) > 1
            if not (hx or hy):
                break
            nx, ny = (nx // 2 if hx else nx), (ny // 2 if hy else ny)
            view = image[: 2 * ny if hy else ny, : 2 * nx if hx else nx]
            image = cv2.resize(view, (nx, ny), interpolation=cv2.INTER_LINEAR)
        if (ny, nx) == (height, width):
            return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def frames_to_input(frames: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """A batch of frames -> the graph's input tensor (N, H, W, C) uint8 or (N, C, H, W) float32."""
    if not frames:
        raise InputContractError("frames_to_input needs at least one frame")
    if len(frames) == 1:  # [None], not np.stack: ~0.1 ms less right after a frame wait
        one = resize_frame(frames[0], spec.height, spec.width)
        batch = (one.copy() if one is frames[0] else one)[None]
    else:
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
