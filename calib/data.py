"""Calibration and evaluation frames: a source URI -> shuffled, preprocessed batches (+ labels).

Frames come from the runtime's own sources (``edge.runtime.sources.uri.open_source``: a video file,
an image folder, ``synthetic:`` for the demo line) and go through the runtime's one
preprocessing function, ``edge.core.preprocess.frames_to_input``; nothing here resizes or
normalises by itself, so calibration sees exactly what deployment sees.

Sampling: a finite source (video, folder, ``synthetic:?frames=N``) is read to its end (or to
``max_read`` frames) and a uniform random sample of ``count`` frames is kept (reservoir
sampling, seeded), so only ``count`` preprocessed frames are ever in memory, whatever the
source's length. The endless demo line (``synthetic:`` without ``frames``) and live cameras
give their first ``count`` frames (the demo line draws every frame independently at random, so
these are already a random sample). The kept frames are shuffled with the same seed.

Labels, where the source has them (used by the accuracy report only), keyed by label key:
``synthetic:`` -> the demo line's ground truth (``render_frame``), a video -> its sidecars
(``edge.data.datasets.read_video_labels`` / ``read_video_masks``), a folder -> its ``labels.jsonl``
(``edge.data.datasets.LabelledFolder``). Masks are resized (nearest) to the model's input size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import CalibrationError, DatasetError, SourceError
from edge.core.files import IMAGE_SUFFIXES
from edge.core.preprocess import InputSpec, frames_to_input, resize_mask
from edge.data.datasets import LABELS_FILE, LabelledFolder, read_video_labels, read_video_masks
from edge.data.demo_line import HOLDOUT_OFFSET, render_frame
from edge.runtime.sources.base import Frame, Source, redact_uri
from edge.runtime.sources.uri import open_source

_LISTED = 5
"""File names listed per kind of conversion in ``FrameSet.info["images"]``."""

MAX_READ = 100_000
"""Most frames read from a finite source to sample from (bounds the time spent decoding)."""


@dataclass(frozen=True, eq=False)
class FrameSet:
    """Preprocessed frames (the graph's input tensor, one row per frame) and their labels.

    ``inputs``: what ``frames_to_input`` returns for all the frames: (N, H, W, 3) uint8 with
    in-graph preprocessing, else (N, C, H, W) float32. ``labels[i]``: label key -> value
    (class name, number, or mask resized to the input size) or None where the frame has none.
    ``indices[i]``: the frame's index in its source (frame number, file position, line index).
    """

    inputs: np.ndarray
    labels: tuple[dict[str, Any] | None, ...]
    indices: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """Consecutive batches of ``batch`` frames (the last may be smaller), as views."""
        if batch < 1:
            raise CalibrationError(f"batch size {batch}; expected >= 1")
        for start in range(0, len(self), batch):
            yield self.inputs[start : start + batch]

    def has_labels(self, key: str) -> bool:
        """True when every frame has a label under ``key``."""
        return bool(self.labels) and all(lab is not None and key in lab for lab in self.labels)


def _as_calibration_error(e: Exception, uri: str, what: str) -> CalibrationError:
    return CalibrationError(
        f"{what} {redact_uri(uri)!r}: {e}. Pass a video file, an image folder or "
        "synthetic:?frames=N&seed=S"
    )


def _open(uri: str, what: str) -> Source:
    try:
        return open_source(uri)
    except (SourceError, DatasetError) as e:
        raise _as_calibration_error(e, uri, what) from e


class _Labeller:
    """Finds the labels of one source's frames (None where it has none)."""

    def __init__(self, source: Source, spec: InputSpec) -> None:
        self.spec = spec
        self.kind = source.kind
        self.video_rows: dict[int, dict[str, Any]] = {}
        self.video_masks: np.ndarray | None = None
        self.folder: LabelledFolder | None = None
        self.folder_index: dict[str, int] = {}
        if source.kind == "video":
            path = getattr(source, "path", None)
            rows = read_video_labels(path) if path is not None else None
            if rows:
                self.video_rows = {int(r["frame"]): r for r in rows}  # type: ignore[call-overload]
                self.video_masks = read_video_masks(path) if path is not None else None
        elif source.kind == "folder":
            files = getattr(source, "files", [])
            folder = Path(files[0]).parent if files else None
            if folder is not None and (folder / LABELS_FILE).is_file():
                self.folder = LabelledFolder(folder)  # validates the labels file
                lines = (folder / LABELS_FILE).read_text(encoding="utf-8").splitlines()
                rows = [json.loads(line) for line in lines if line.strip()]
                self.folder_index = {str(r["file"]): i for i, r in enumerate(rows)}

    def _mask(self, mask: np.ndarray) -> np.ndarray:
        return resize_mask(np.asarray(mask, dtype=np.uint8), self.spec.height, self.spec.width)

    def labels(self, frame: Frame) -> dict[str, Any] | None:
        if self.kind == "synthetic":
            line = frame.meta.get("line_frame")
            if line is None:
                return None
            return {**line.labels(), "mask": self._mask(line.mask)}
        if self.kind == "video" and self.video_rows and frame.source_index is not None:
            row = self.video_rows.get(frame.source_index)
            if row is None:
                return None
            out = {k: v for k, v in row.items() if k not in ("frame", "index")}
            if self.video_masks is not None and frame.source_index < len(self.video_masks):
                out["mask"] = self._mask(self.video_masks[frame.source_index])
            return out
        if self.kind == "folder" and self.folder is not None:
            name = Path(str(frame.meta.get("path", ""))).name
            i = self.folder_index.get(name)
            if i is None:
                return None
            labels = dict(self.folder[i].labels)
            return {k: self._mask(v) if isinstance(v, np.ndarray) else v for k, v in labels.items()}
        return None


class _ImageNotes:
    """What a folder source's frames were converted from, and which files it skipped.

    The runtime's folder reader decodes every image to 8-bit BGR (OpenCV ``IMREAD_COLOR``):
    16-bit images are scaled down, alpha is dropped, grey is replicated, and every size is
    resized to the model's input by the preprocessing. Calibrating on such frames is allowed but
    should be a choice, so each kept frame's file is looked at once more as stored.
    """

    def __init__(self, source: Source, spec: InputSpec) -> None:
        self.spec = spec
        files = [Path(f) for f in getattr(source, "files", [])]
        self.active = source.kind == "folder" and bool(files)
        self.skipped: list[str] = []
        if self.active:
            used = {f.name for f in files}
            folder = files[0].parent
            self.skipped = sorted(
                p.name
                for p in folder.iterdir()
                if p.is_file()
                and p.name not in used
                and not p.name.startswith(".")
                and p.name != LABELS_FILE
                and p.suffix.lower() not in IMAGE_SUFFIXES
            )

    def look(self, frame: Frame) -> tuple[str, tuple[int, int], tuple[str, ...]] | None:
        """The frame's file name, stored size and the conversions it went through."""
        path = frame.meta.get("path") if self.active else None
        if not path:
            return None
        import cv2  # the runtime's decoder (already loaded by the folder source)

        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            return None
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        size = (int(raw.shape[0]), int(raw.shape[1]))
        kinds = []
        if raw.dtype.itemsize > 1:
            kinds.append("16-bit")
        if channels in (2, 4):
            kinds.append("alpha")
        if channels in (1, 2):
            kinds.append("grey")
        if size != (self.spec.height, self.spec.width):
            kinds.append("resized")
        return Path(str(path)).name, size, tuple(kinds)

    def info(self, looked: list[Any]) -> dict[str, Any] | None:
        """The summary over the kept frames' ``look`` results."""
        if not self.active:
            return None
        kinds: dict[str, list[str]] = {"16-bit": [], "alpha": [], "grey": [], "resized": []}
        for name, _size, converted in (x for x in looked if x is not None):
            for k in converted:
                kinds[k].append(name)
        return {
            "converted": {
                k: {"count": len(v), "files": sorted(v)[:_LISTED]} for k, v in kinds.items()
            },
            "sizes": len({x[1] for x in looked if x is not None}),
            "skipped": {"count": len(self.skipped), "files": self.skipped[:_LISTED]},
        }


def _finite(source: Source) -> bool:
    if source.is_live:
        return False
    return not (source.kind == "synthetic" and getattr(source, "frames", None) is None)


def sample_frames(
    uri: str,
    spec: InputSpec,
    *,
    count: int,
    seed: int,
    max_read: int = MAX_READ,
    what: str = "calibration data",
) -> FrameSet:
    """``count`` frames of ``uri``, sampled uniformly (seeded), preprocessed and shuffled.

    Raises CalibrationError when the URI cannot be opened or holds fewer than ``count`` frames.
    """
    if count < 1:
        raise CalibrationError(f"{what}: asked for {count} frames; expected >= 1")
    source = _open(uri, what)
    rng = np.random.default_rng(seed)
    finite = _finite(source)
    kept: list[tuple[np.ndarray, dict[str, Any] | None, int, Any]] = []
    seen = 0
    try:
        with source:
            labeller = _Labeller(source, spec)
            notes = _ImageNotes(source, spec)
            while seen < max_read and (finite or seen < count):
                frame = source.read()
                if frame is None:
                    if source.ended:
                        break
                    continue
                slot = seen if seen < count else int(rng.integers(0, seen + 1))
                seen += 1
                if slot >= count:
                    continue
                row = frames_to_input([frame.image], spec)[0]
                index = frame.source_index if frame.source_index is not None else frame.id
                item = (row, labeller.labels(frame), int(index), notes.look(frame))
                if slot < len(kept):
                    kept[slot] = item
                else:
                    kept.append(item)
    except (SourceError, DatasetError) as e:
        raise _as_calibration_error(e, uri, what) from e
    if len(kept) < count:
        raise CalibrationError(
            f"{what} {redact_uri(uri)!r} holds {len(kept)} frames, fewer than the {count} "
            f"asked for; ask for {len(kept)} or fewer (--frames, --eval-frames; the batch no "
            "larger than --frames), or give a source with more frames"
        )
    order = rng.permutation(len(kept))
    return FrameSet(
        inputs=np.stack([kept[i][0] for i in order]),
        labels=tuple(kept[i][1] for i in order),
        indices=tuple(kept[i][2] for i in order),
        info={
            "uri": redact_uri(uri),
            "kind": source.kind,
            "frames": count,
            "seed": seed,
            "read": seen,
            "sampling": "reservoir over the whole source" if finite else "first frames",
            **({"images": notes.info([k[3] for k in kept])} if notes.active else {}),
        },
    )


def split_frames(frames: FrameSet, first: int) -> tuple[FrameSet, FrameSet]:
    """The first ``first`` frames and the rest (disjoint: calibration vs held-out)."""
    if not 0 < first < len(frames):
        raise CalibrationError(
            f"cannot split {len(frames)} frames at {first}; expected 0 < {first} < {len(frames)}"
        )

    def part(sl: slice, role: str) -> FrameSet:
        return FrameSet(
            frames.inputs[sl],
            frames.labels[sl],
            frames.indices[sl],
            {**frames.info, "frames": len(frames.indices[sl]), "role": role},
        )

    return part(slice(0, first), "calibration"), part(slice(first, None), "held-out")


def demo_line_holdout(uri: str, spec: InputSpec, count: int) -> FrameSet:
    """``count`` held-out frames of the demo line that ``uri`` (a ``synthetic:`` URI) names.

    Frames ``HOLDOUT_OFFSET ..``, the ones training never sees, with the URI's line settings
    (seed, size), rendered by the same ``render_frame`` the ``synthetic:`` source uses.
    """

    source = _open(uri, "evaluation data")
    config = getattr(source, "config", None)
    if source.kind != "synthetic" or config is None:
        raise CalibrationError(f"{redact_uri(uri)!r} is not a synthetic: source")
    rows, labels, indices = [], [], []
    for i in range(HOLDOUT_OFFSET, HOLDOUT_OFFSET + count):
        line = render_frame(i, config)
        rows.append(frames_to_input([line.image], spec)[0])
        mask = resize_mask(line.mask, spec.height, spec.width)
        labels.append({**line.labels(), "mask": mask})
        indices.append(i)
    return FrameSet(
        np.stack(rows),
        tuple(labels),
        tuple(indices),
        {
            "uri": redact_uri(uri),
            "kind": "synthetic",
            "frames": count,
            "first_index": HOLDOUT_OFFSET,
            "role": "held-out",
            "sampling": "demo line frames never used for training",
        },
    )


def is_synthetic(uri: str) -> bool:
    return uri.strip().lower().startswith("synthetic:")


def calibration_and_eval_frames(
    data: str,
    spec: InputSpec,
    *,
    frames: int,
    seed: int,
    eval_frames: int,
    eval_data: str | None = None,
) -> tuple[FrameSet, FrameSet | None]:
    """Calibration frames from ``data`` and held-out evaluation frames (None if eval_frames=0).

    Evaluation frames come from ``eval_data`` when given (a ``synthetic:`` one: the demo line's
    held-out indices, ``demo_line_holdout``); else, for the demo line, from its held-out
    indices; else from the same source, disjoint from the calibration frames.
    ``held.info["origin"]`` says which, in words (the report prints it).
    """
    if eval_frames <= 0:
        return sample_frames(data, spec, count=frames, seed=seed), None
    calib_uri = data
    if eval_data is not None and not is_synthetic(eval_data):
        calib = sample_frames(data, spec, count=frames, seed=seed)
        held = sample_frames(
            eval_data, spec, count=eval_frames, seed=seed + 1, what="evaluation data"
        )
        held.info["origin"] = f"--eval-data {held.info['uri']} ({held.info['sampling']})"
        return calib, held
    if eval_data is not None or is_synthetic(data):
        # the demo line: its held-out indices, never the ones training and calibration sample
        line_uri = eval_data if eval_data is not None else calib_uri
        held = demo_line_holdout(line_uri, spec, eval_frames)
        first, last = HOLDOUT_OFFSET, HOLDOUT_OFFSET + eval_frames - 1
        held.info["origin"] = (
            f"demo-line frames {first}..{last} of {held.info['uri']}: the held-out range "
            "(HOLDOUT_OFFSET on), never used for training"
        )
        return sample_frames(data, spec, count=frames, seed=seed), held
    both = sample_frames(
        data,
        spec,
        count=frames + eval_frames,
        seed=seed,
        what="calibration + evaluation data (--frames + --eval-frames)",
    )
    calib, held = split_frames(both, frames)
    held.info["origin"] = (
        f"{eval_frames} frames of --data {held.info['uri']} not used for calibration "
        f"({held.info['sampling']}); not independent of it: pass --eval-data for a separate set"
    )
    return calib, held
