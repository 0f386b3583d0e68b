"""Labelled image folders and the ground-truth sidecars of demo videos.

A labelled folder holds images and a ``labels.jsonl`` file, one JSON object per line::

    {"file": "frame_000000.png", "defect": "scratch", "part": "disc", "angle": 12.3,
     "mask": "frame_000000_mask.png"}

``file`` names the image (relative to the folder). Every other key is a task label whose kind
follows from its values: a class name (string) for classification, a number for regression, or
the name of a mask image (a string ending in an image extension) for segmentation. A mask's
non-zero pixels are the labelled ones: a mask holding only 0 and 255 reads as a 0/1 mask,
any other mask as class ids. The keys ``index`` and ``frame`` are bookkeeping, not tasks.
A line may leave out a task (its sample then has no label for it).

Only numpy and OpenCV are used.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.core.errors import DatasetError
from edge.core.files import IMAGE_SUFFIXES

LABELS_FILE = "labels.jsonl"
METADATA_KEYS = frozenset({"file", "index", "frame"})
"""Keys of a labels line that are bookkeeping, not tasks."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One labelled image.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        labels: task -> class name (str), value (float) or mask ((H, W) uint8).
        file: the image's path relative to its folder.
    """

    image: np.ndarray
    labels: dict[str, object] = field(default_factory=dict)
    file: str = ""


def _is_mask_name(value: object) -> bool:
    return isinstance(value, str) and value.lower().endswith(IMAGE_SUFFIXES)


def _kind_of(value: object) -> str:
    if _is_mask_name(value):
        return "segmentation"
    if isinstance(value, str):
        return "classification"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "regression"
    return "unsupported"


def _read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, object]]]:
    """(line number, object) for every non-blank line; DatasetError on bad JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"cannot read {what} '{path}': {e}") from e
    rows = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{what} '{path}' line {no} is not valid JSON ({e.msg}); each line must be "
                "one JSON object"
            ) from e
        if not isinstance(obj, dict):
            raise DatasetError(
                f"{what} '{path}' line {no} is a JSON {type(obj).__name__}, expected an object"
            )
        rows.append((no, obj))
    return rows


def read_image(path: Path) -> np.ndarray:
    """Read a BGR uint8 image, or raise DatasetError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(
            f"cannot read image '{path}': missing, unreadable or not an image format OpenCV "
            "decodes; replace the file or remove its line from the labels"
        )
    return image


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel uint8 mask; a 0/255 mask becomes 0/1."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetError(f"cannot read mask '{path}': missing or not an image OpenCV decodes")
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise DatasetError(f"mask '{path}' has {mask.dtype} pixels; expected 8-bit (uint8)")
    if mask.max(initial=0) == 255 and not np.any((mask > 0) & (mask < 255)):
        mask = (mask > 0).astype(np.uint8)
    return mask


class LabelledFolder:
    """A folder of images described by ``labels.jsonl`` (see the module docstring).

    The labels file is read and checked when the folder is opened: every line must be a JSON
    object with a ``file`` that exists, every referenced mask must exist, and each task must keep
    one kind (class name, number or mask file) throughout. Images are read on access.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        labels_path = self.folder / LABELS_FILE
        if not self.folder.is_dir():
            raise DatasetError(f"dataset folder '{self.folder}' does not exist or is not a folder")
        if not labels_path.is_file():
            raise DatasetError(
                f"dataset folder '{self.folder}' has no {LABELS_FILE}; a labelled folder needs "
                'one JSON object per line such as {"file": "img.png", "defect": "scratch"}'
            )
        self._rows: list[dict[str, object]] = []
        self._kinds: dict[str, str] = {}
        for no, row in _read_jsonl(labels_path, "labels file"):
            where = f"labels file '{labels_path}' line {no}"
            name = row.get("file")
            if not isinstance(name, str) or not name:
                raise DatasetError(f'{where} has no "file" (the image\'s name in the folder)')
            if not (self.folder / name).is_file():
                raise DatasetError(
                    f"{where} names file '{name}', which does not exist in '{self.folder}'"
                )
            for task, value in row.items():
                if task in METADATA_KEYS:
                    continue
                kind = _kind_of(value)
                if kind == "unsupported":
                    raise DatasetError(
                        f"{where}: label '{task}' = {value!r} is neither a class "
                        "name, a number nor a mask file name"
                    )
                if self._kinds.setdefault(task, kind) != kind:
                    raise DatasetError(
                        f"{where}: label '{task}' is a {kind} label here but a "
                        f"{self._kinds[task]} label on earlier lines"
                    )
                if kind == "segmentation" and not (self.folder / str(value)).is_file():
                    raise DatasetError(
                        f"{where} names mask '{value}' for '{task}', which does "
                        f"not exist in '{self.folder}'"
                    )
            self._rows.append(row)
        if not self._rows:
            raise DatasetError(f"labels file '{labels_path}' lists no images")

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for a dataset of {len(self)}")
        row = self._rows[i]
        name = str(row["file"])
        image = read_image(self.folder / name)
        labels: dict[str, object] = {}
        for task, value in row.items():
            if task in METADATA_KEYS:
                continue
            kind = self._kinds[task]
            if kind == "segmentation":
                mask = read_mask(self.folder / str(value))
                if mask.shape != image.shape[:2]:
                    raise DatasetError(
                        f"mask '{value}' is {mask.shape[1]}x{mask.shape[0]} but its image "
                        f"'{name}' is {image.shape[1]}x{image.shape[0]}; they must match"
                    )
                labels[task] = mask
            elif kind == "regression":
                labels[task] = float(value)  # type: ignore[arg-type]
            else:
                labels[task] = value
        return Sample(image, labels, name)

    @property
    def tasks(self) -> set[str]:
        """The label keys present (bookkeeping keys excluded)."""
        return set(self._kinds)

    def task_kind(self, task: str) -> str:
        """'classification', 'regression' or 'segmentation', as inferred from the values."""
        if task not in self._kinds:
            raise DatasetError(
                f"dataset '{self.folder}' has no labels for task '{task}'; it has "
                f"{sorted(self._kinds)}"
            )
        return self._kinds[task]

    def class_names(self, task: str) -> list[str]:
        """The sorted class names seen for a classification task."""
        kind = self.task_kind(task)
        if kind != "classification":
            raise DatasetError(
                f"task '{task}' of dataset '{self.folder}' holds {kind} labels, not class names"
            )
        return sorted({str(r[task]) for r in self._rows if task in r})


def video_sidecar_paths(video_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(labels, masks) sidecars of a video: ``<video>.labels.jsonl``, ``<video>.masks.npz``."""
    p = Path(video_path)
    return p.with_name(p.name + ".labels.jsonl"), p.with_name(p.name + ".masks.npz")


def read_video_labels(video_path: str | os.PathLike[str]) -> list[dict[str, object]] | None:
    """The per-frame labels written beside a video, in frame order; None without a sidecar."""
    labels_path, _ = video_sidecar_paths(video_path)
    if not labels_path.exists():
        return None
    rows = []
    for no, row in _read_jsonl(labels_path, "video labels"):
        if not isinstance(row.get("frame"), int):
            raise DatasetError(f"video labels '{labels_path}' line {no} has no integer \"frame\"")
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["frame"]))  # type: ignore[call-overload]


def read_video_masks(video_path: str | os.PathLike[str]) -> np.ndarray | None:
    """The (frames, H, W) uint8 defect masks written beside a video; None without a sidecar."""
    _, masks_path = video_sidecar_paths(video_path)
    if not masks_path.exists():
        return None
    try:
        with np.load(masks_path, allow_pickle=False) as data:
            masks = data["masks"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(
            f"cannot read video masks '{masks_path}': {e}; expected an .npz with "
            "a uint8 array 'masks' of shape (frames, H, W)"
        ) from e
    if masks.ndim != 3 or masks.dtype != np.uint8:
        raise DatasetError(
            f"video masks '{masks_path}' hold {masks.dtype}{masks.shape}; expected "
            "uint8 (frames, H, W)"
        )
    return masks
