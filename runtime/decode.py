"""Raw network outputs -> task results, as the bundle's manifest says (``tasks[t]["decode"]``).

=====================  =========================================================================
decode type            result ``data`` (JSON-ready) / arrays
=====================  =========================================================================
softmax_argmax         ``label``, ``index``, ``prob`` (of the label), ``probs`` {label: p}
sigmoid_threshold      ``on`` [labels with p >= threshold], ``probs`` {label: p}
affine                 ``value`` = raw * scale + offset and ``unit`` (several names: ``values``
                       {name: value})
argmax_mask            ``fraction`` (share of pixels not background), ``fractions`` {label: share}
                       for every non-background label, ``pixels``, ``shape``; ``mask``: the
                       (H, W) uint8 class-id array (kept for the video sink, not in JSON)
=====================  =========================================================================

Every result has a *primary* field that schedule conditions compare by default (``defect != ok``
compares the label): label, on, value (or values) and fraction respectively.

A raw output holding NaN or Infinity is not decoded: its result's data is ``{"error":
"non-finite output ..."}`` (no label, no value), so a broken model never reports "ok".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.core.errors import BundleError
from edge.core.manifest import Manifest

NON_FINITE = "non-finite output (NaN or Infinity): the model or its input is broken"
DECODE_TYPES = ("softmax_argmax", "sigmoid_threshold", "affine", "argmax_mask")
PRIMARY_FIELD = {
    "softmax_argmax": "label",
    "sigmoid_threshold": "on",
    "affine": "value",
    "argmax_mask": "fraction",
}
FIELDS = {
    "softmax_argmax": ("label", "index", "prob", "probs"),
    "sigmoid_threshold": ("on", "probs"),
    "affine": ("value", "values", "unit"),
    "argmax_mask": ("fraction", "fractions", "pixels", "shape"),
}


@dataclass(frozen=True, eq=False)
class TaskResult:
    """One task's decoded output for one frame."""

    task: str
    type: str
    data: dict[str, Any]
    mask: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return self.data

    @property
    def error(self) -> str | None:
        """Why this task has no result for the frame (non-finite output), else None."""
        e = self.data.get("error")
        return str(e) if e is not None else None

    def get(self, path: str = "") -> Any:
        """A field by dotted path (``"probs.scratch"``); "" gives the primary field."""
        value: Any = self.data
        for key in (path or PRIMARY_FIELD[self.type]).split("."):
            if not isinstance(value, Mapping) or key not in value:
                raise KeyError(path)
            value = value[key]
        return value

    def brief(self) -> str:
        """A short human-readable form for overlays and summaries."""
        d = self.data
        if "error" in d:
            return "error"
        if self.type == "softmax_argmax":
            return f"{d['label']} {d['prob']:.2f}"
        if self.type == "sigmoid_threshold":
            return ",".join(d["on"]) or "-"
        if self.type == "affine":
            unit = f" {d['unit']}" if d["unit"] else ""
            if "value" in d:
                return f"{d['value']:.1f}{unit}"
            return " ".join(f"{k}={v:.1f}" for k, v in d["values"].items()) + unit
        return f"{100.0 * d['fraction']:.1f}% px"


@dataclass(frozen=True)
class Decoder:
    """Decodes one task's raw output (one sample, no batch axis) per its manifest spec."""

    task: str
    spec: Mapping[str, Any]

    def __post_init__(self) -> None:
        kind = self.spec.get("type")
        if kind not in DECODE_TYPES:
            raise BundleError(
                f"task '{self.task}': unknown decode type {kind!r} in the manifest; this "
                f"etr-edge decodes {DECODE_TYPES}: upgrade etr-edge or re-run edge convert"
            )
        key = "names" if kind == "affine" else "labels"
        if not self.spec.get(key):
            raise BundleError(f"task '{self.task}': decode spec {dict(self.spec)} has no '{key}'")

    @property
    def type(self) -> str:
        return str(self.spec["type"])

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.spec["names" if self.type == "affine" else "labels"])

    def decode(self, raw: np.ndarray) -> TaskResult:
        """``raw``: this task's output for one frame (the graph's output without the batch
        axis): (n,) for image-level tasks, (n, H, W) for masks."""
        return self.decode_batch(raw[None])[0]

    def decode_batch(self, raw: np.ndarray) -> list[TaskResult]:
        """``raw``: this task's output for N frames, (N, n) or (N, n, H, W): N results, each
        equal to :meth:`decode` of its row (one set of numpy calls for the whole batch)."""
        self._check(raw.shape[1:])
        if not len(raw):
            return []
        if raw.dtype.kind == "f":
            sums = raw.reshape(len(raw), -1).sum(axis=1, dtype=np.float64)
            if not np.isfinite(sums).all():  # the broken rows alone get an error result
                ok = np.isfinite(sums)
                good = iter(self.decode_batch(raw[ok]) if ok.any() else [])
                bad = TaskResult(self.task, self.type, {"error": NON_FINITE})
                return [next(good) if k else bad for k in ok]
        out: list[TaskResult] = getattr(self, f"_{self.type}")(raw)
        return out

    def _check(self, shape: tuple[int, ...]) -> None:
        n = len(self.labels)
        dense = self.type == "argmax_mask"
        if len(shape) != (3 if dense else 1) or shape[0] != n:
            want = f"({n}, H, W)" if dense else f"({n},)"
            raise BundleError(
                f"task '{self.task}': output of shape {shape} cannot be decoded as "
                f"{self.type} with {n} labels (expected {want} per frame); the bundle's "
                "manifest and its graphs disagree: re-run edge convert"
            )

    def _softmax_argmax(self, raw: np.ndarray) -> list[TaskResult]:
        x = raw.astype(np.float64)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        index = np.argmax(raw, axis=1).tolist()
        labels = self.labels
        return [
            TaskResult(
                self.task,
                self.type,
                {
                    "label": labels[i],
                    "index": i,
                    "prob": p[i],
                    "probs": dict(zip(labels, p)),
                },
            )
            for i, p in zip(index, probs.tolist())
        ]

    def _sigmoid_threshold(self, raw: np.ndarray) -> list[TaskResult]:
        probs = 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
        th = float(self.spec.get("threshold", 0.5))
        labels = self.labels
        return [
            TaskResult(
                self.task,
                self.type,
                {
                    "on": [lab for lab, v in zip(labels, p) if v >= th],
                    "probs": dict(zip(labels, p)),
                },
            )
            for p in probs.tolist()
        ]

    def _affine(self, raw: np.ndarray) -> list[TaskResult]:
        scale, offset = float(self.spec.get("scale", 1.0)), float(self.spec.get("offset", 0.0))
        rows = (raw.astype(np.float64) * scale + offset).tolist()
        unit = str(self.spec.get("unit", ""))
        if raw.shape[1] == 1:
            return [TaskResult(self.task, self.type, {"value": v[0], "unit": unit}) for v in rows]
        return [
            TaskResult(self.task, self.type, {"values": dict(zip(self.labels, v)), "unit": unit})
            for v in rows
        ]

    def _argmax_mask(self, raw: np.ndarray) -> list[TaskResult]:
        masks = argmax_channels(raw, axis=1)
        total = masks[0].size
        k = len(self.labels)
        if k == 2:
            fg = np.count_nonzero(masks.reshape(len(masks), -1), axis=1)
            counts = np.stack([total - fg, fg], axis=1)
        else:
            counts = np.stack([np.bincount(m.ravel(), minlength=k) for m in masks])
        shape = [int(masks.shape[1]), int(masks.shape[2])]
        out = []
        for mask, c in zip(masks, counts.tolist()):
            fg_px = total - c[0]
            data = {
                "fraction": fg_px / total,
                "fractions": {lab: n / total for lab, n in zip(self.labels[1:], c[1:])},
                "pixels": fg_px,
                "shape": list(shape),
            }
            out.append(TaskResult(self.task, self.type, data, mask=mask))
        return out


def argmax_channels(raw: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.argmax(raw, axis)`` as uint8 for logits with the classes on ``axis`` ((C, H, W), or
    (N, C, H, W) with ``axis=1``). Two classes (the common defect / background mask) take one
    comparison, ~30x faster than numpy's strided argmax; ties go to class 0, as with
    ``np.argmax``."""
    if raw.shape[axis] == 2:
        pair = np.moveaxis(raw, axis, 0)  # a view: classes first
        return np.greater(pair[1], pair[0]).view(np.uint8)
    return np.argmax(raw, axis=axis).astype(np.uint8)


def decoders_from_manifest(manifest: Manifest) -> dict[str, Decoder]:
    """{task: Decoder} from a bundle manifest's tasks."""
    try:
        return {t: Decoder(t, entry.decode) for t, entry in manifest.tasks.items()}
    except (KeyError, TypeError) as e:
        raise BundleError(
            f"manifest has no decode spec for a task ({e}); re-run edge convert"
        ) from e
