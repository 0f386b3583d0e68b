from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.core.errors import DatasetError
from edge.data.datasets import (
    LABELS_FILE,
    LabelledFolder,
    read_mask,
    read_video_labels,
    read_video_masks,
    video_sidecar_paths,
)


def _image(value: int, h: int = 6, w: int = 8) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = value, value + 1, value + 2
    return img


def _folder(tmp_path, rows, images=("a.png", "b.png"), masks=("a_mask.png",)):
    for k, name in enumerate(images):
        cv2.imwrite(str(tmp_path / name), _image(10 * k))
    for name in masks:
        m = np.zeros((6, 8), np.uint8)
        m[1:3, 2:5] = 255
        cv2.imwrite(str(tmp_path / name), m)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (tmp_path / LABELS_FILE).write_text("\n".join(lines) + "\n")
    return tmp_path


def test_reads_images_and_every_label_kind(tmp_path):
    folder = _folder(
        tmp_path,
        [
            {
                "file": "a.png",
                "index": 7,
                "defect": "scratch",
                "angle": 12.5,
                "mask": "a_mask.png",
                "note": "x",
            },
            "",
            {"file": "b.png", "defect": "ok", "angle": -3},
        ],
    )
    ds = LabelledFolder(folder)
    assert len(ds) == 2
    assert ds.tasks == {"defect", "angle", "mask", "note"}
    assert ds.task_kind("defect") == "classification"
    assert ds.task_kind("angle") == "regression"
    assert ds.task_kind("mask") == "segmentation"
    assert ds.class_names("defect") == ["ok", "scratch"]
    a, b = ds[0], ds[1]
    assert np.array_equal(a.image, _image(0)) and np.array_equal(b.image, _image(10))
    assert a.file == "a.png" and ds[-1].file == "b.png"
    assert a.labels["defect"] == "scratch" and a.labels["angle"] == 12.5
    expected = np.zeros((6, 8), np.uint8)
    expected[1:3, 2:5] = 1  # a 0/255 mask reads as 0/1
    assert np.array_equal(a.labels["mask"], expected) and a.labels["mask"].dtype == np.uint8
    assert b.labels == {"defect": "ok", "angle": -3.0}  # a task may be missing on a line
    assert isinstance(b.labels["angle"], float)
    with pytest.raises(IndexError):
        ds[2]


def test_class_id_masks_keep_their_values(tmp_path):
    m = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    cv2.imwrite(str(tmp_path / "ids.png"), m)
    assert np.array_equal(read_mask(tmp_path / "ids.png"), m)


def test_missing_labels_file(tmp_path):
    with pytest.raises(DatasetError, match=r"no labels\.jsonl"):
        LabelledFolder(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        LabelledFolder(tmp_path / "nope")


def test_bad_json_names_the_line(tmp_path):
    _folder(tmp_path, [{"file": "a.png"}, '{"file": "b.png", ', {"file": "b.png"}])
    with pytest.raises(DatasetError, match=r"labels.jsonl' line 2 is not valid JSON"):
        LabelledFolder(tmp_path)


def test_line_that_is_not_an_object(tmp_path):
    _folder(tmp_path, [{"file": "a.png"}, "[1, 2]"])
    with pytest.raises(DatasetError, match="line 2 is a JSON list"):
        LabelledFolder(tmp_path)


def test_missing_file_key(tmp_path):
    _folder(tmp_path, [{"file": "a.png"}, {"defect": "ok"}])
    with pytest.raises(DatasetError, match=r"line 2 has no \"file\""):
        LabelledFolder(tmp_path)


def test_referenced_image_does_not_exist(tmp_path):
    _folder(tmp_path, [{"file": "a.png"}, {"file": "c.png"}])
    with pytest.raises(DatasetError, match=r"line 2 names file 'c\.png', which does not exist"):
        LabelledFolder(tmp_path)


def test_referenced_mask_does_not_exist(tmp_path):
    _folder(tmp_path, [{"file": "a.png", "mask": "zz_mask.png"}])
    with pytest.raises(DatasetError, match=r"line 1 names mask 'zz_mask\.png'"):
        LabelledFolder(tmp_path)


def test_a_task_must_keep_one_kind(tmp_path):
    _folder(tmp_path, [{"file": "a.png", "angle": 3.0}, {"file": "b.png", "angle": "big"}])
    with pytest.raises(DatasetError, match="line 2: label 'angle' is a classification label"):
        LabelledFolder(tmp_path)


def test_unsupported_label_value(tmp_path):
    _folder(tmp_path, [{"file": "a.png", "attrs": [1, 2]}])
    with pytest.raises(DatasetError, match="line 1: label 'attrs'"):
        LabelledFolder(tmp_path)


def test_empty_labels_file(tmp_path):
    _folder(tmp_path, ["", "  "])
    with pytest.raises(DatasetError, match="lists no images"):
        LabelledFolder(tmp_path)


def test_unreadable_image_and_mismatched_mask(tmp_path):
    _folder(
        tmp_path, [{"file": "a.png", "mask": "small_mask.png"}, {"file": "broken.png"}], masks=()
    )
    cv2.imwrite(str(tmp_path / "small_mask.png"), np.zeros((3, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    ds = LabelledFolder(tmp_path)
    with pytest.raises(DatasetError, match=r"mask 'small_mask\.png' is 3x3 but its image"):
        ds[0]
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.png"):
        ds[1]


def test_class_names_and_task_kind_errors(tmp_path):
    _folder(tmp_path, [{"file": "a.png", "angle": 1.0}])
    ds = LabelledFolder(tmp_path)
    with pytest.raises(DatasetError, match="regression labels, not class names"):
        ds.class_names("angle")
    with pytest.raises(DatasetError, match="no labels for task 'part'"):
        ds.task_kind("part")


def test_video_sidecars(tmp_path):
    video = tmp_path / "v.mp4"
    labels_path, masks_path = video_sidecar_paths(video)
    assert (labels_path.name, masks_path.name) == ("v.mp4.labels.jsonl", "v.mp4.masks.npz")
    assert read_video_labels(video) is None and read_video_masks(video) is None
    labels_path.write_text('{"frame": 1, "defect": "ok"}\n{"frame": 0, "defect": "hole"}\n')
    assert read_video_labels(video) == [
        {"frame": 0, "defect": "hole"},
        {"frame": 1, "defect": "ok"},
    ]
    masks = np.zeros((2, 4, 5), np.uint8)
    masks[1, 2, 3] = 1
    with open(masks_path, "wb") as f:
        np.savez_compressed(f, masks=masks)
    assert np.array_equal(read_video_masks(video), masks)


def test_video_sidecar_errors(tmp_path):
    video = tmp_path / "v.mp4"
    labels_path, masks_path = video_sidecar_paths(video)
    labels_path.write_text('{"frame": 0}\n{"frame": \n')
    with pytest.raises(DatasetError, match="line 2 is not valid JSON"):
        read_video_labels(video)
    labels_path.write_text('{"index": 0}\n')
    with pytest.raises(DatasetError, match='line 1 has no integer "frame"'):
        read_video_labels(video)
    masks_path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read video masks"):
        read_video_masks(video)
    with open(masks_path, "wb") as f:
        np.savez_compressed(f, other=np.zeros(3))
    with pytest.raises(DatasetError, match="cannot read video masks"):
        read_video_masks(video)
    with open(masks_path, "wb") as f:
        np.savez_compressed(f, masks=np.zeros((2, 3), np.float32))
    with pytest.raises(DatasetError, match="expected uint8"):
        read_video_masks(video)
