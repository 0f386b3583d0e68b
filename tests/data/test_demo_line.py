from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from edge.core.errors import ConfigError, EdgeError
from edge.data.datasets import LabelledFolder, read_video_labels, read_video_masks
from edge.data.demo_line import (
    ANGLE_RANGE_DEG,
    DEFECT_CLASSES,
    PART_CLASSES,
    LineConfig,
    contact_sheet,
    frame_labels,
    render_batch,
    render_frame,
    write_image_folder,
    write_video,
)

CFG = LineConfig()


@pytest.fixture(scope="module")
def frames():
    return render_batch(range(200), CFG)


def test_same_index_gives_identical_bytes_in_any_order():
    a = render_frame(17, CFG)
    b = render_batch([40, 17, 3], CFG)[1]
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    assert (a.defect, a.part, a.angle) == (b.defect, b.part, b.angle)


def test_different_seed_or_index_gives_a_different_frame():
    a = render_frame(5, CFG)
    other_seed = render_frame(5, LineConfig(seed=1))
    other_index = render_frame(6, CFG)
    assert np.abs(a.image.astype(int) - other_seed.image.astype(int)).mean() > 5
    assert np.abs(a.image.astype(int) - other_index.image.astype(int)).mean() > 5


def test_shapes_dtypes_and_labels(frames):
    for f in frames[:20]:
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert f.mask.shape == (240, 320) and f.mask.dtype == np.uint8
        assert set(np.unique(f.mask)) <= {0, 1}
        assert -ANGLE_RANGE_DEG <= f.angle <= ANGLE_RANGE_DEG
        labels = json.loads(json.dumps(f.labels()))
        assert labels == {
            "defect": DEFECT_CLASSES[f.defect],
            "part": PART_CLASSES[f.part],
            "angle": round(f.angle, 2),
        }
        assert frame_labels(f.index, CFG) == (f.defect, f.part, f.angle)


@pytest.mark.parametrize("size", [(160, 120), (96, 200), (640, 480)])
def test_other_frame_sizes(size):
    cfg = LineConfig(width=size[0], height=size[1])
    f = render_frame(3, cfg)
    assert f.image.shape == (size[1], size[0], 3)
    assert f.mask.shape == (size[1], size[0])


def test_class_frequencies_follow_the_config(frames):
    defects = np.array([f.defect for f in frames])
    parts = np.array([f.part for f in frames])
    assert set(defects) == set(range(len(DEFECT_CLASSES)))
    assert set(parts) == set(range(len(PART_CLASSES)))
    assert abs(np.mean(defects > 0) - CFG.defect_probability) < 0.12
    for kind in (1, 2, 3):
        assert 0.12 < np.mean(defects == kind) < 0.28  # 0.6 / 3 = 0.2 each
    for p in range(3):
        assert 0.2 < np.mean(parts == p) < 0.47
    angles = np.array([f.angle for f in frames])
    assert angles.min() < -20 and angles.max() > 20


def test_defect_probability_extremes():
    assert all(frame_labels(i, LineConfig(defect_probability=0.0))[0] == 0 for i in range(100))
    assert all(frame_labels(i, LineConfig(defect_probability=1.0))[0] > 0 for i in range(100))


def test_mask_is_empty_iff_ok_and_defects_are_big_enough(frames):
    for f in frames:
        area = int(f.mask.sum())
        if f.defect == 0:
            assert area == 0
            continue
        assert area > 0
        # inscribed radius: a scratch is >= 3 px wide, a hole >= 6 px, a stain >= 8 px
        inscribed = cv2.distanceTransform(f.mask, cv2.DIST_L2, 3).max()
        kind = DEFECT_CLASSES[f.defect]
        assert inscribed >= {"scratch": 1.5, "hole": 6, "stain": 8}[kind], (f.index, kind)
        assert area >= {"scratch": 90, "hole": 113, "stain": 200}[kind], (f.index, kind)
        ys, _ = np.nonzero(f.mask)
        assert ys.min() > 0.075 * 240 and ys.max() < 0.925 * 240  # on the belt, not the rails


def test_mask_covers_exactly_what_the_defect_changed():
    """The same frame with defect_probability=0 is the same scene minus its defect."""
    clean_cfg = dataclasses.replace(CFG, defect_probability=0.0)
    checked = set()
    for i in range(40):
        f = render_frame(i, CFG)
        if f.defect == 0:
            continue
        g = render_frame(i, clean_cfg)
        assert (g.defect, g.part, g.angle) == (0, f.part, f.angle)
        diff = np.abs(f.image.astype(int) - g.image.astype(int)).max(axis=2)
        # the defect changes its own pixels clearly...
        assert diff[f.mask > 0].mean() > 25
        # ...and nothing away from them (blur may spread it by a few pixels)
        near = cv2.dilate(f.mask, np.ones((11, 11), np.uint8)) > 0
        assert diff[~near].max() <= 3
        # and is still visible after the runtime's resize to 128x128
        small_f = cv2.resize(f.image, (128, 128), interpolation=cv2.INTER_AREA).astype(int)
        small_g = cv2.resize(g.image, (128, 128), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(small_f - small_g).max() >= 40
        checked.add(f.defect)
    assert checked == {1, 2, 3}


def test_belt_moves_between_frames():
    cfg = dataclasses.replace(
        CFG,
        noise_sigma=(0.0, 0.0),
        brightness=(1.0, 1.0),
        contrast=(1.0, 1.0),
        color_temperature=0.0,
        vignette=0.0,
        blur_probability=0.0,
    )
    a, b = render_frame(0, cfg).image, render_frame(1, cfg).image
    strip_a, strip_b = a[25:35, :, 1].astype(int), b[25:35, :, 1].astype(int)  # belt, no part
    shift = round(cfg.belt_speed)
    assert np.abs(strip_b[:, shift + 20 : 300] - strip_a[:, 20 : 300 - shift]).mean() < 1.0
    assert np.abs(strip_b[:, 20:300] - strip_a[:, 20:300]).mean() > 2.0


def test_config_and_index_validation():
    with pytest.raises(ConfigError, match="width"):
        LineConfig(width=10)
    with pytest.raises(ConfigError, match="defect_probability"):
        LineConfig(defect_probability=1.5)
    with pytest.raises(ConfigError, match="noise_sigma"):
        LineConfig(noise_sigma=(3.0, 1.0))
    with pytest.raises(ConfigError, match="seed"):
        LineConfig(seed=-1)
    with pytest.raises(ConfigError, match="index"):
        render_frame(-1)


def test_contact_sheet_tiles():
    imgs = [np.full((10, 20, 3), v, np.uint8) for v in (10, 20, 30)]
    sheet = contact_sheet(imgs, columns=2)
    assert sheet.shape == (2 * 12, 2 * 22, 3)
    assert sheet[0, 0, 0] == 10 and sheet[0, 22, 0] == 20 and sheet[12, 0, 0] == 30
    assert contact_sheet(imgs, columns=3, tile=(8, 4)).shape == (6, 30, 3)


def test_write_video_round_trip(tmp_path):
    path = write_video(tmp_path / "line.mp4", 8, CFG, fps=10.0, start=100)
    cap = cv2.VideoCapture(str(path))
    read = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        read.append(img)
    cap.release()
    assert len(read) == 8
    assert all(im.shape == (240, 320, 3) for im in read)
    expected = render_batch(range(100, 108), CFG)
    assert np.abs(read[3].astype(int) - expected[3].image.astype(int)).mean() < 12  # lossy codec
    labels = read_video_labels(path)
    assert labels is not None and len(labels) == 8
    assert labels[5] == {"frame": 5, "index": 105, **expected[5].labels()}
    masks = read_video_masks(path)
    assert masks is not None and masks.shape == (8, 240, 320) and masks.dtype == np.uint8
    assert all(np.array_equal(m, f.mask) for m, f in zip(masks, expected))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "line.mp4",
        "line.mp4.labels.jsonl",
        "line.mp4.masks.npz",
    ]


def test_write_video_unopenable_writer_leaves_nothing(tmp_path):
    with pytest.raises(EdgeError, match="video writer"):
        write_video(tmp_path / "line.xyz", 2, CFG)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EdgeError, match="does not exist"):
        write_video(tmp_path / "missing" / "line.mp4", 2, CFG)


def test_write_image_folder_round_trip(tmp_path):
    folder = write_image_folder(tmp_path / "ds", 6, CFG, start=20)
    ds = LabelledFolder(folder)
    assert len(ds) == 6
    assert ds.tasks == {"defect", "part", "angle", "mask"}
    assert ds.task_kind("mask") == "segmentation" and ds.task_kind("angle") == "regression"
    for i, f in enumerate(render_batch(range(20, 26), CFG)):
        s = ds[i]
        assert np.array_equal(s.image, f.image)
        assert np.array_equal(s.labels["mask"], f.mask)
        assert s.labels["defect"] == DEFECT_CLASSES[f.defect]
        assert s.labels["part"] == PART_CLASSES[f.part]
        assert s.labels["angle"] == pytest.approx(f.angle)
    assert set(ds.class_names("part")) <= set(PART_CLASSES)
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"]  # no temporary left


def test_write_image_folder_refuses_non_empty_folder(tmp_path):
    target = tmp_path / "ds"
    target.mkdir()
    write_image_folder(target, 2, CFG)  # an empty folder is fine
    with pytest.raises(EdgeError, match="not empty"):
        write_image_folder(target, 3, CFG)
    assert len(LabelledFolder(target)) == 2
    write_image_folder(target, 3, CFG, overwrite=True)
    assert len(LabelledFolder(target)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
