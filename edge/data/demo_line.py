"""A deterministic demo factory line: one metal part per frame on a moving conveyor belt.

Every frame is a pure function of ``(LineConfig, index)``: frame 1234 is the same whether it is
rendered alone, in an endless stream or by one of several parallel dataset builders. Each frame
carries its ground truth: the defect class, the part class, the part's angle and a pixel mask of
the defect, so every later stage (training, calibration, the runtime) can be scored on it.

Parts: ``plate`` (brushed rectangle with four bolt holes at fixed corners), ``disc`` (turned
washer with a locating tab that shows its angle), ``bracket`` (L-shape). Defects, always on the
part: ``scratch`` (a long bright or dark line, >= 3 px wide), ``hole`` (a black, jagged hole with
a bright burr ring; bigger and darker than a bolt hole and never at the plate's corners),
``stain`` (an irregular rust or oil blob). Sizes are given at 320x240 and scale with the frame,
so the defects stay visible after the runtime's resize to 128x128.

Angles are in degrees, counter-clockwise on screen (OpenCV's ``getRotationMatrix2D``), in
[-ANGLE_RANGE_DEG, ANGLE_RANGE_DEG].

Only numpy and OpenCV are used (here and in the drawing, :mod:`edge.data.line_art`): the runtime's
``synthetic:`` source imports this module.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import ConfigError, EdgeError
from edge.data.datasets import LABELS_FILE, video_sidecar_paths
from edge.data.line_art import TAG_LABELS, TAG_RENDER, render_scene

DEFECT_CLASSES = ("ok", "scratch", "hole", "stain")
PART_CLASSES = ("plate", "disc", "bracket")
ANGLE_RANGE_DEG = 30.0
HOLDOUT_OFFSET = 10_000_000
"""Held-out frames start at this index: training draws 0.., validation, verification and
calibration evaluation draw HOLDOUT_OFFSET.., so no scored frame was ever trained on."""

_STAGE = "demo line"


def _check_range(name: str, value: object, lo: float, hi: float) -> tuple[float, float]:
    a = b = math.nan
    if isinstance(value, Sequence) and len(value) == 2:
        with contextlib.suppress(TypeError, ValueError):
            a, b = float(value[0]), float(value[1])
    if not lo <= a <= b <= hi:
        raise ConfigError(
            f"LineConfig.{name} must be a (low, high) pair with {lo} <= low <= high <= {hi}, "
            f"got {value!r}",
            stage=_STAGE,
        )
    return (a, b)


@dataclass(frozen=True)
class LineConfig:
    """How the demo line looks. Everything random is drawn from ``seed`` and the frame index.

    Args:
        width, height: frame size in pixels (geometry is designed at 320x240 and scales).
        seed: the line's seed: a different seed gives a different belt and different parts.
        defect_probability: probability that a part is defective (kind uniform over the three).
        noise_sigma: sensor noise standard deviation range, in grey levels.
        brightness: range of the global light gain.
        contrast: range of the contrast factor around mid-grey.
        color_temperature: strength of the warm/cool white-balance shift (0 = none).
        vignette: strength of the lighting falloff towards the corners and of the light's
            gradient across the frame (0 = evenly lit).
        blur_probability: probability of a mildly blurred frame (motion or focus).
        belt_speed: belt travel per frame, in pixels at 320x240.
    """

    width: int = 320
    height: int = 240
    seed: int = 0
    defect_probability: float = 0.6
    noise_sigma: tuple[float, float] = (1.0, 4.0)
    brightness: tuple[float, float] = (0.8, 1.15)
    contrast: tuple[float, float] = (0.85, 1.15)
    color_temperature: float = 0.12
    vignette: float = 0.35
    blur_probability: float = 0.25
    belt_speed: float = 7.0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 64 <= v <= 4096:
                raise ConfigError(
                    f"LineConfig.{name} must be an integer in [64, 4096], got {v!r}", stage=_STAGE
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(
                f"LineConfig.seed must be a non-negative integer, got {self.seed!r}", stage=_STAGE
            )
        for name, hi in (
            ("defect_probability", 1.0),
            ("color_temperature", 0.5),
            ("vignette", 1.0),
            ("blur_probability", 1.0),
            ("belt_speed", 1000.0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= hi:
                raise ConfigError(
                    f"LineConfig.{name} must be a number in [0, {hi}], got {v!r}", stage=_STAGE
                )
        ranges = (("noise_sigma", 0, 50), ("brightness", 0.05, 4), ("contrast", 0.05, 4))
        for name, lo, hi in ranges:
            object.__setattr__(self, name, _check_range(name, getattr(self, name), lo, hi))


@dataclass(frozen=True, eq=False)
class LineFrame:
    """One rendered frame and its ground truth.

    Attributes:
        index: the frame's index on the line.
        image: (H, W, 3) uint8 BGR.
        defect: index into DEFECT_CLASSES (0 = ok).
        part: index into PART_CLASSES.
        angle: the part's rotation in degrees, counter-clockwise.
        mask: (H, W) uint8, 1 on defect pixels (all zero when the part is ok).
    """

    index: int
    image: np.ndarray
    defect: int
    part: int
    angle: float
    mask: np.ndarray

    def labels(self) -> dict[str, object]:
        """The frame's labels as JSON-friendly class names: {"defect", "part", "angle"}."""
        return {
            "defect": DEFECT_CLASSES[self.defect],
            "part": PART_CLASSES[self.part],
            "angle": round(float(self.angle), 2),
        }


def _check_index(index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ConfigError(
            f"a frame index must be a non-negative integer, got {index!r}", stage=_STAGE
        )
    return int(index)


def frame_labels(index: int, config: LineConfig = LineConfig()) -> tuple[int, int, float]:
    """(defect, part, angle) of frame ``index`` without rendering it (cheap)."""
    index = _check_index(index)
    rng = np.random.default_rng([config.seed, index, TAG_LABELS])
    part = int(rng.integers(len(PART_CLASSES)))
    defective = bool(rng.random() < config.defect_probability)
    kind = 1 + int(rng.integers(len(DEFECT_CLASSES) - 1))
    angle = round(float(rng.uniform(-ANGLE_RANGE_DEG, ANGLE_RANGE_DEG)), 2)
    return (kind if defective else 0), part, angle


def render_frame(index: int, config: LineConfig = LineConfig()) -> LineFrame:
    """Render frame ``index`` of the line: a pure function of (config, index)."""
    defect, part, angle = frame_labels(index, config)
    rng = np.random.default_rng([config.seed, int(index), TAG_RENDER])
    image, mask = render_scene(
        rng, config, int(index), PART_CLASSES[part], DEFECT_CLASSES[defect], angle
    )
    return LineFrame(int(index), image, defect, part, angle, mask)


def render_batch(indices: Iterable[int], config: LineConfig = LineConfig()) -> list[LineFrame]:
    """Render several frames (any order, any indices)."""
    return [render_frame(i, config) for i in indices]


def contact_sheet(
    images: Sequence[np.ndarray], columns: int = 4, tile: tuple[int, int] | None = None
) -> np.ndarray:
    """Tile BGR images into one sheet, ``columns`` wide; ``tile`` = (width, height) resizes each."""
    if not images:
        raise ConfigError("contact_sheet needs at least one image", stage=_STAGE)
    tiles = [cv2.resize(im, tile, interpolation=cv2.INTER_AREA) if tile else im for im in images]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * (h + 2), columns * (w + 2), 3), np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = t
    return sheet


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"frame count must be a positive integer, got {count!r}", stage=_STAGE)
    return count


def _tmp_beside(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


def write_video(
    path: str | os.PathLike[str],
    count: int,
    config: LineConfig = LineConfig(),
    fps: float = 30.0,
    start: int = 0,
) -> Path:
    """Write frames ``start .. start+count-1`` as an mp4 (mp4v) with its ground truth.

    Beside the video: ``<path>.labels.jsonl`` (one line per frame: frame, index, defect, part,
    angle) and ``<path>.masks.npz`` (key "masks", uint8 (count, H, W), 1 = defect). All three
    files are written to temporary names and renamed, so none is ever half-written.
    """
    path = Path(path)
    count = _check_count(count)
    start = _check_index(start)
    if not fps > 0:
        raise ConfigError(f"fps must be positive, got {fps!r}", stage=_STAGE)
    if not path.parent.is_dir():
        raise EdgeError(
            f"cannot write video '{path}': folder '{path.parent}' does not exist; create it first",
            stage=_STAGE,
        )
    labels_path, masks_path = video_sidecar_paths(path)
    tmp_video = _tmp_beside(path, path.suffix or ".mp4")
    tmp_labels, tmp_masks = _tmp_beside(labels_path), _tmp_beside(masks_path)
    writer = cv2.VideoWriter(
        str(tmp_video), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (config.width, config.height)
    )
    try:
        if not writer.isOpened():
            raise EdgeError(
                f"OpenCV cannot open an mp4v video writer for '{path}' (codec or container "
                "unsupported by this OpenCV build); use write_image_folder instead, or an "
                "OpenCV with FFmpeg support",
                stage=_STAGE,
            )
        masks = np.zeros((count, config.height, config.width), np.uint8)
        lines = []
        for i in range(count):
            frame = render_frame(start + i, config)
            writer.write(frame.image)
            masks[i] = frame.mask
            lines.append(json.dumps({"frame": i, "index": start + i, **frame.labels()}))
        writer.release()
        tmp_labels.write_text("\n".join(lines) + "\n")
        with open(tmp_masks, "wb") as f:
            np.savez_compressed(f, masks=masks)
        os.replace(tmp_masks, masks_path)
        os.replace(tmp_labels, labels_path)
        os.replace(tmp_video, path)
    finally:
        writer.release()
        for t in (tmp_video, tmp_labels, tmp_masks):
            t.unlink(missing_ok=True)
    return path


def write_image_folder(
    folder: str | os.PathLike[str],
    count: int,
    config: LineConfig = LineConfig(),
    start: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write frames as a labelled folder that ``edge.data.datasets.LabelledFolder`` reads.

    Files: ``frame_000000.png`` (the image), ``frame_000000_mask.png`` (0/255 defect mask) and
    ``labels.jsonl`` with one line per frame: {"file", "index", "defect", "part", "angle",
    "mask"}. The folder is built beside the target and renamed into place; an existing non-empty
    folder is refused unless ``overwrite`` is true.
    """
    folder = Path(folder)
    count = _check_count(count)
    start = _check_index(start)
    if folder.exists() and not folder.is_dir():
        raise EdgeError(
            f"cannot write image folder '{folder}': it exists and is not a folder", stage=_STAGE
        )
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise EdgeError(
            f"image folder '{folder}' exists and is not empty; choose another "
            "folder or pass overwrite=True",
            stage=_STAGE,
        )
    if not folder.parent.is_dir():
        raise EdgeError(
            f"cannot write image folder '{folder}': parent '{folder.parent}' does "
            "not exist; create it first",
            stage=_STAGE,
        )
    tmp, old = _tmp_beside(folder), _tmp_beside(folder, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        lines = []
        for i in range(count):
            frame = render_frame(start + i, config)
            name, mask_name = f"frame_{i:06d}.png", f"frame_{i:06d}_mask.png"
            ok = cv2.imwrite(str(tmp / name), frame.image)
            ok = ok and cv2.imwrite(str(tmp / mask_name), frame.mask * np.uint8(255))
            if not ok:
                raise EdgeError(
                    f"OpenCV could not write PNG files into '{tmp}' (disk full or not writable?)",
                    stage=_STAGE,
                )
            lines.append(
                json.dumps({"file": name, "index": start + i, **frame.labels(), "mask": mask_name})
            )
        (tmp / LABELS_FILE).write_text("\n".join(lines) + "\n")
        if folder.is_dir():
            os.replace(folder, old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def demo_tasks() -> tuple[TaskSpec, ...]:
    """The four tasks of the demo inspection line."""
    return (
        TaskSpec("defect", "classification", tuple(DEFECT_CLASSES)),
        TaskSpec("part", "classification", tuple(PART_CLASSES)),
        TaskSpec("mask", "segmentation", ("background", "defect"), decoder_channels=8),
        TaskSpec("angle", "regression", ("angle",), scale=ANGLE_RANGE_DEG, unit="deg"),
    )


def demo_config(**overrides: Any) -> ModelConfig:
    """The demo model: 4 stages, γ = 0.9, four linear primitives, the four demo tasks."""
    return ModelConfig(tasks=demo_tasks(), name="demo-line", **overrides)
