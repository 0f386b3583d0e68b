"""Wrong calibration data is reported (calib/drift.py, calib/data.py): statistics compared per
tensor, small sets, converted and skipped images; evaluation on the demo line's held-out range."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.calib.collect import PartStats
from edge.calib.data import calibration_and_eval_frames
from edge.calib.drift import compare, divergence, warnings
from edge.calib.histogram import TensorStats
from edge.calib.stage import CalibConfig, calibrate_bundle
from edge.core.manifest import load_bundle
from edge.data.demo_line import HOLDOUT_OFFSET


def _stats(name: str, values: np.ndarray) -> TensorStats:
    s = TensorStats(name)
    s.update(values)
    return s


def test_divergence_and_range_ratio_flag_the_tensor_and_its_tasks() -> None:
    rng = np.random.default_rng(0)
    same_a = _stats("t", rng.normal(size=100_000))
    same_b = _stats("t", rng.normal(size=100_000))
    assert divergence(same_a, same_b) < 0.01
    assert divergence(_stats("t", np.full(1000, 0.1)), _stats("t", np.full(1000, 30.0))) > 0.99
    calib = {
        "trunk": PartStats("trunk", ["a"], {"a": same_a}),
        "heads/mask": PartStats("heads/mask", ["m"], {"m": _stats("m", 6 * rng.normal(size=9999))}),
    }
    held = {
        "trunk": PartStats("trunk", ["a"], {"a": same_b}),
        "heads/mask": PartStats("heads/mask", ["m"], {"m": _stats("m", rng.normal(size=9999))}),
    }
    drift = compare(calib, held, {"trunk": ["defect", "mask"], "heads/mask": ["mask"]})
    assert drift["tensors_compared"] == 2 and drift["tensors_flagged"] == 1
    assert drift["tasks_flagged"] == {"mask": 1}
    top = drift["tensors"][0]
    assert top["tensor"] == "m" and top["flagged"] and top["range_ratio"] > 4
    assert not drift["tensors"][1]["flagged"]
    said = warnings(drift, algorithm="entropy", frames=600, data_info={})
    assert len(said) == 1 and "heads/mask:m" in said[0] and "mask (1 tensors)" in said[0]
    assert "500" in warnings(None, algorithm="entropy", frames=499, data_info={})[0]
    assert warnings(None, algorithm="minmax", frames=10, data_info={}) == []


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's bundled sample photographs (mixed sizes, grey, alpha, a multipage TIFF,
    a GIF the folder source does not read) plus one 16-bit PNG."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) missing")
    src = Path(skimage_data.__file__).parent
    out = tmp_path_factory.mktemp("photos")
    for p in sorted(src.iterdir()):
        # multipage_rgb.tif has 64-bit samples OpenCV cannot decode (the folder source refuses
        # it with a clear error)
        if p.suffix.lower() in (".png", ".jpg", ".tif", ".gif") and p.name != "multipage_rgb.tif":
            shutil.copy(p, out / p.name)
    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    assert cv2.imwrite(str(out / "deep16.png"), deep)
    return out


def test_photos_as_calibration_data_are_reported(
    tiny_bundle: Path, photos: Path, tmp_path: Path
) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    count = len([p for p in photos.iterdir() if p.suffix != ".gif"])
    cfg = CalibConfig(
        data=str(photos),
        frames=count,
        batch=8,
        eval_frames=32,
        eval_data="synthetic:",
        placement="all",
    )
    calibrate_bundle(root, cfg)
    report = json.loads((root / "calib/report.json").read_text())
    said = " ".join(report["warnings"])
    assert f"entropy calibration on {count} frames" in said
    images = report["calibration"]["data"]["images"]
    assert images["converted"]["alpha"]["count"] >= 1
    assert "deep16.png" in images["converted"]["16-bit"]["files"]
    assert images["sizes"] > 5
    assert images["skipped"]["files"] == ["no_time_for_that_tiny.gif"]
    assert "skipped" in said and "converted" in said
    drift = report["drift"]
    assert drift["tensors_flagged"] > 0 and set(drift["tasks_flagged"]) == {
        "defect",
        "attrs",
        "mask",
        "angle",
    }
    assert "unlike the evaluation data" in said
    md = (root / "calib/report.md").read_text()
    assert "## Warnings" in md and "Calibration data vs evaluation data" in md
    # the evaluation is the demo line's held-out range, and the report says so
    assert report["evaluation"]["first_index"] == HOLDOUT_OFFSET
    assert f"demo-line frames {HOLDOUT_OFFSET}..{HOLDOUT_OFFSET + 31}" in md


def test_demo_line_calibration_is_not_flagged(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    cfg = CalibConfig(frames=64, batch=16, eval_frames=64, algorithm="minmax", placement="all")
    calibrate_bundle(root, cfg)
    report = json.loads((root / "calib/report.json").read_text())
    assert report["warnings"] == [], report["warnings"]
    assert report["drift"]["tensors_flagged"] == 0 and report["drift"]["tensors_compared"] > 10


def test_eval_data_synthetic_uses_the_holdout_range(tiny_bundle: Path) -> None:
    spec = load_bundle(tiny_bundle).input
    calib, held = calibration_and_eval_frames(
        "synthetic:", spec, frames=8, seed=0, eval_frames=4, eval_data="synthetic:"
    )
    assert held is not None
    assert held.indices == tuple(range(HOLDOUT_OFFSET, HOLDOUT_OFFSET + 4))
    assert max(calib.indices) < HOLDOUT_OFFSET
    assert "never used for training" in held.info["origin"]
