"""Per-task metrics on raw network outputs (numpy only: used by training, calibration reports and
the runtime's summaries alike).

- classification: accuracy (%) of the argmax;
- multilabel: bit accuracy (%) of sigmoid(logit) >= threshold;
- regression: mean absolute error in the task's unit (raw outputs are normalised by ``scale``);
- segmentation: IoU (×100) averaged over the non-background classes, and pixel accuracy.

Each kind has one primary metric (``PRIMARY``) that reports compare.
"""

from __future__ import annotations

import numpy as np

from edge.core.config import TaskSpec

PRIMARY = {
    "classification": "accuracy",
    "multilabel": "accuracy",
    "regression": "mae",
    "segmentation": "iou",
}
HIGHER_IS_BETTER = {"accuracy": True, "iou": True, "mae": False, "agreement": True}


def frame_terms(spec: TaskSpec, raw: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(frames, k) per-frame additive terms of the task's metrics: summed over any set of frames
    they give that set's metrics (``metrics_from_terms``). What ``TaskScorer`` accumulates, and
    what a bootstrap over frames resamples.

    classification / multilabel: [correct share, 1]; regression: [mean |error| in the task's
    unit, 1]; segmentation: [correct pixels, pixels, then per foreground class c: intersection,
    union]."""
    n = len(target)
    one = np.ones(n)
    kind = spec.kind
    if kind == "classification":
        return np.stack([raw.argmax(axis=1) == target, one], axis=1).astype(np.float64)
    if kind == "multilabel":
        pred = raw >= np.log(spec.threshold / (1 - spec.threshold))
        return np.stack([(pred == (target > 0.5)).reshape(n, -1).mean(axis=1), one], axis=1)
    if kind == "regression":
        err = np.abs(raw.reshape(target.shape) - target) * abs(spec.scale)
        return np.stack([err.reshape(n, -1).mean(axis=1), one], axis=1)
    pred = upsample_logits(raw, target.shape[-2:]).argmax(axis=1).reshape(n, -1)
    flat = target.reshape(n, -1)
    cols = [(pred == flat).sum(axis=1), np.full(n, flat.shape[1])]
    for c in range(1, spec.num_outputs):
        p, t = pred == c, flat == c
        cols += [(p & t).sum(axis=1), (p | t).sum(axis=1)]
    return np.stack(cols, axis=1).astype(np.float64)


def primary_from_terms(spec: TaskSpec, sums: np.ndarray) -> np.ndarray:
    """The primary metric (``PRIMARY``) from summed ``frame_terms``, ``sums``: (..., k)."""
    if spec.kind in ("classification", "multilabel"):
        return 100.0 * sums[..., 0] / sums[..., 1]
    if spec.kind == "regression":
        return sums[..., 0] / sums[..., 1]
    inter, union = sums[..., 2::2], sums[..., 3::2]
    seen = union > 0  # foreground classes present in prediction or target; none: IoU 1.0
    ratio = np.divide(inter, union, out=np.zeros_like(inter), where=seen)
    count = seen.sum(axis=-1)
    return 100.0 * np.where(count > 0, ratio.sum(axis=-1) / np.maximum(count, 1), 1.0)


def metrics_from_terms(spec: TaskSpec, sums: np.ndarray) -> dict[str, float]:
    """Every metric of the task from summed ``frame_terms`` (one set of frames)."""
    primary = {PRIMARY[spec.kind]: float(primary_from_terms(spec, sums))}
    if spec.kind == "segmentation":
        primary["pixel_accuracy"] = 100.0 * float(sums[0] / sums[1])
    return primary


class TaskScorer:
    """Accumulates one task's metric over batches: ``update(raw, target)`` then ``result()``."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.n = 0
        self.sums: np.ndarray | None = None

    def update(self, raw: np.ndarray, target: np.ndarray) -> None:
        terms = frame_terms(self.spec, raw, target).sum(axis=0)
        self.sums = terms if self.sums is None else self.sums + terms
        self.n += len(target)

    def result(self) -> dict[str, float]:
        if self.n == 0 or self.sums is None:
            return {}
        return metrics_from_terms(self.spec, self.sums)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear interpolation with half-pixel centres
    (torch ``align_corners=False``: source = (dst + 0.5) * n_in / n_out - 0.5, clamped)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def upsample_logits(raw: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """(N, C, h, w) logits -> (N, C, H, W), bilinear with half-pixel centres (as torch's
    ``interpolate(align_corners=False)``); unchanged when already that size."""
    h, w = int(size[0]), int(size[1])
    if raw.shape[-2:] == (h, w):
        return raw
    y0, y1, wy = _linear_taps(raw.shape[-2], h)
    x0, x1, wx = _linear_taps(raw.shape[-1], w)
    rows = raw[..., y0, :] * (1 - wy)[:, None] + raw[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def agreement(spec: TaskSpec, raw_a: np.ndarray, raw_b: np.ndarray) -> float:
    """How far two raw outputs of the same task agree (%): the same argmax/bits/pixels, or for
    regression 100 - mean relative deviation. Used where no labels exist (INT8 vs FP32)."""
    if spec.kind in ("classification", "segmentation"):
        return 100.0 * float((raw_a.argmax(axis=1) == raw_b.argmax(axis=1)).mean())
    if spec.kind == "multilabel":
        return 100.0 * float(((raw_a >= 0) == (raw_b >= 0)).mean())
    denom = float(np.abs(raw_b).mean()) or 1.0
    return 100.0 * max(0.0, 1.0 - float(np.abs(raw_a - raw_b).mean()) / denom)
