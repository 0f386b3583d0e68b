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

from edge.config import TaskSpec

PRIMARY = {
    "classification": "accuracy",
    "multilabel": "accuracy",
    "regression": "mae",
    "segmentation": "iou",
}
HIGHER_IS_BETTER = {"accuracy": True, "iou": True, "mae": False, "agreement": True}


class TaskScorer:
    """Accumulates one task's metric over batches: ``update(raw, target)`` then ``result()``."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.n = 0
        self.correct = 0.0
        self.abs_err = 0.0
        n_cls = spec.num_outputs
        self.inter = np.zeros(n_cls, dtype=np.float64)
        self.union = np.zeros(n_cls, dtype=np.float64)
        self.pixels = 0

    def update(self, raw: np.ndarray, target: np.ndarray) -> None:
        kind = self.spec.kind
        if kind == "classification":
            self.correct += float((raw.argmax(axis=1) == target).sum())
            self.n += len(target)
        elif kind == "multilabel":
            pred = raw >= np.log(self.spec.threshold / (1 - self.spec.threshold))
            self.correct += float((pred == (target > 0.5)).mean(axis=1).sum())
            self.n += len(target)
        elif kind == "regression":
            err = np.abs(raw.reshape(target.shape) - target) * abs(self.spec.scale)
            self.abs_err += float(err.mean(axis=tuple(range(1, err.ndim))).sum())
            self.n += len(target)
        else:
            pred = upsample_logits(raw, target.shape[-2:]).argmax(axis=1)
            for c in range(self.spec.num_outputs):
                p, t = pred == c, target == c
                self.inter[c] += np.logical_and(p, t).sum()
                self.union[c] += np.logical_or(p, t).sum()
            self.correct += float((pred == target).sum())
            self.pixels += target.size
            self.n += len(target)

    def result(self) -> dict[str, float]:
        kind = self.spec.kind
        if self.n == 0:
            return {}
        if kind in ("classification", "multilabel"):
            return {"accuracy": 100.0 * self.correct / self.n}
        if kind == "regression":
            return {"mae": self.abs_err / self.n}
        fg = [c for c in range(1, self.spec.num_outputs) if self.union[c] > 0]
        iou = float(np.mean([self.inter[c] / self.union[c] for c in fg])) if fg else 1.0
        return {"iou": 100.0 * iou, "pixel_accuracy": 100.0 * self.correct / self.pixels}


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
