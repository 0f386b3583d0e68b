from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge.core.config import TaskSpec
from edge.data.metrics import (
    TaskScorer,
    agreement,
    frame_terms,
    metrics_from_terms,
    primary_from_terms,
    upsample_logits,
)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((3, 2, 16, 16), (32, 32)), ((64, 2, 64, 64), (128, 128)), ((2, 5, 7, 9), (20, 13))],
)
def test_upsample_logits_matches_torch_bilinear(
    shape: tuple[int, ...], size: tuple[int, int]
) -> None:
    x = torch.randn(*shape)
    want = F.interpolate(x, size=size, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(upsample_logits(x.numpy(), size), want, atol=1e-5)


def test_scores_on_known_answers() -> None:
    cls = TaskScorer(TaskSpec("d", "classification", ("a", "b", "c")))
    cls.update(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 1, 2]))
    assert cls.result() == {"accuracy": 75.0}
    reg = TaskScorer(TaskSpec("r", "regression", ("x",), scale=30.0))
    reg.update(np.array([[0.5], [0.0]]), np.array([[0.0], [0.0]]))
    assert reg.result()["mae"] == pytest.approx(7.5)
    seg = TaskScorer(TaskSpec("m", "segmentation", ("bg", "fg")))
    logits = np.zeros((1, 2, 2, 2), np.float32)
    logits[0, 1, 0, :] = 5.0  # top row predicted foreground, at stride 1
    target = np.array([[[1, 0], [0, 0]]])
    seg.update(logits, target)
    assert seg.result()["iou"] == pytest.approx(50.0)  # 1 of 2 predicted pixels is right
    spec = TaskSpec("d", "classification", ("a", "b"))
    assert agreement(spec, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == 0.0


def test_frame_terms_give_the_metric_of_any_subset_of_frames() -> None:
    """Summed per-frame terms reproduce TaskScorer on any subset, row by row when stacked (what
    a bootstrap over frames relies on)."""
    rng = np.random.default_rng(5)
    seg = TaskSpec("m", "segmentation", ("bg", "fg"))
    raw = rng.normal(size=(12, 2, 8, 8))
    target = (rng.random((12, 16, 16)) > 0.7).astype(np.int64)
    terms = frame_terms(seg, raw, target)
    subsets = [np.arange(12), np.array([0, 0, 3, 7]), np.array([5])]
    stacked = primary_from_terms(seg, np.stack([terms[s].sum(axis=0) for s in subsets]))
    for k, s in enumerate(subsets):
        sc = TaskScorer(seg)
        sc.update(raw[s], target[s])
        assert sc.result() == metrics_from_terms(seg, terms[s].sum(axis=0))
        assert stacked[k] == pytest.approx(sc.result()["iou"])
