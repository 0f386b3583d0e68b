"""Check every exported graph on ONNX Runtime against PyTorch on real frames.

The reference is the *unfolded* training-form model (eval mode), so folding, export and
simplification are verified together. The error bound is relative to each output's range:
max|ort - torch| <= tolerance * (max(torch) - min(torch)). Any non-finite output (NaN or
Infinity, from either side) fails verification: such a model must not become a bundle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from edge.convert.export import IMAGE, output_name, tap_names
from edge.core.errors import ExportError
from edge.core.preprocess import resize_frame
from edge.data.demo_line import HOLDOUT_OFFSET, LineConfig, render_frame
from edge.family.model import ETRNLP, Preprocess


@dataclass(frozen=True)
class OutputCheck:
    part: str
    output: str
    max_abs_error: float
    range: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.max_abs_error) and math.isfinite(self.range)

    @property
    def relative(self) -> float:
        return self.max_abs_error / max(self.range, 1e-12)


def demo_frames(config_size: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """``count`` held-out demo-line frames at model size, uint8 (N, H, W, 3)."""

    cfg = LineConfig(seed=seed)
    h, w = config_size
    return np.stack(
        [resize_frame(render_frame(HOLDOUT_OFFSET + i, cfg).image, h, w) for i in range(count)]
    )


def reference_outputs(model: ETRNLP, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Every tap and every task output of the training-form model, keyed by graph tensor names."""
    cfg = model.config
    pre = Preprocess(cfg.mean, cfg.std)
    with torch.no_grad():
        shared = model.trunk(pre(torch.from_numpy(frames)))
        out = {n: s.numpy() for n, s in zip(tap_names(cfg), shared)}
        for t in cfg.tasks:
            out[output_name(t)] = model.head(t.name, shared).numpy()
    return out


def check_parts(
    parts: dict[str, onnx.ModelProto], model: ETRNLP, frames: np.ndarray, in_graph: bool, batch: int
) -> list[OutputCheck]:
    """Run each part on ORT (batch by batch) and compare with the reference outputs."""
    import onnxruntime as ort

    ref = reference_outputs(model, frames)
    feed_image = frames if in_graph else ref["shared_0"]
    checks = []
    for part, proto in parts.items():
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        got: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for i in range(0, len(frames), batch):
            if part in ("trunk", "fused"):
                feed = {IMAGE: feed_image[i : i + batch]}
            else:
                feed = {x.name: ref[x.name][i : i + batch] for x in sess.get_inputs()}
            for n, v in zip(names, sess.run(names, feed)):
                got[n].append(v)
        for n in names:
            r = ref[n]
            err = float(np.abs(np.concatenate(got[n]) - r).max())
            checks.append(OutputCheck(part, n, err, float(r.max() - r.min())))
    return checks


def enforce_tolerance(checks: list[OutputCheck], tolerance: float) -> None:
    nonfinite = [f"{c.part}/{c.output}" for c in checks if not c.finite]
    if nonfinite:
        more = f" and {len(nonfinite) - 5} more" if len(nonfinite) > 5 else ""
        shown = ", ".join(nonfinite[:5]) + more
        raise ExportError(
            f"{len(nonfinite)} output(s) are not finite (NaN or Infinity) on the verification "
            f"frames: {shown}. No bundle was written. The checkpoint's weights hold NaN/Inf "
            "(a diverged training run?): re-train or use an earlier checkpoint"
        )
    bad = [c for c in checks if c.relative > tolerance]
    if bad:
        worst = max(bad, key=lambda c: c.relative)
        raise ExportError(
            f"{len(bad)} output(s) differ from PyTorch beyond the tolerance {tolerance:g} of "
            f"their range; worst: {worst.part}/{worst.output} max abs error "
            f"{worst.max_abs_error:.3g} over a range of {worst.range:.3g}. No bundle was written. "
            "This is a conversion bug or an unsupported layer; --tolerance loosens the check"
        )
