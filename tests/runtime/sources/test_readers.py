"""Sources: opening by URI, video files, folders, the synthetic line, camera open errors.

What every source shares (options, image conversion, redaction) is in
test_base.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.errors import SourceError
from edge.runtime.sources.base import Frame, Source, SourceOptions
from edge.runtime.sources.readers import (
    ImageFolderSource,
    OpenCVCaptureSource,
    SyntheticSource,
    VideoFileSource,
)
from edge.runtime.sources.uri import open_source

# -- helpers ---------------------------------------------------------------------------------


def write_video(path: Path, n: int, fps: float = 10.0) -> list[int]:
    """n frames of 64x48, frame i filled with grey level 20*i; returns the levels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (64, 48))
    assert writer.isOpened()
    levels = [20 * i for i in range(n)]
    for level in levels:
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    return levels


def read_all(source: Source, limit: int = 1000) -> list[Frame]:
    frames: list[Frame] = []
    with source:
        while len(frames) < limit and (f := source.read()) is not None:
            frames.append(f)
    return frames


# -- opening by URI --------------------------------------------------------------------------


def test_open_source_picks_the_reader_for_each_scheme() -> None:
    options = SourceOptions(width=640, height=480)
    expected = {
        "synthetic:?frames=3&seed=2": SyntheticSource,
        "usb:1": OpenCVCaptureSource,
        "csi://0": OpenCVCaptureSource,
    }
    for uri, kind in expected.items():
        src = open_source(uri, options=options, gstreamer=True)
        assert type(src) is kind
        assert src.describe() == open_source(uri, options=options, gstreamer=True).describe()
    with pytest.raises(SourceError, match="Accepted sources"):
        open_source("bogus:thing")


# -- video files -------------------------------------------------------------------------------


def test_video_file_reads_every_frame_then_ends(tmp_path: Path) -> None:
    path = tmp_path / "line.mp4"
    levels = write_video(path, 10)
    for uri in (str(path), f"file://{path}"):
        src = open_source(uri)
        assert isinstance(src, VideoFileSource) and not src.is_live
        frames = read_all(src)
        assert [f.id for f in frames] == list(range(10))
        assert [f.source_index for f in frames] == list(range(10))
        assert src.ended and src.describe()["nominal_fps"] == pytest.approx(10.0)
        for f, level in zip(frames, levels):
            assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
            assert abs(float(f.image.mean()) - level) < 6  # lossy codec, flat frames
        ts = [f.t_capture_ns for f in frames]
        assert ts == sorted(ts)


def test_video_file_loop_restarts_and_ids_keep_counting(tmp_path: Path) -> None:
    path = tmp_path / "line.mp4"
    write_video(path, 4)
    frames = read_all(open_source(str(path), options=SourceOptions(loop=True)), limit=10)
    assert [f.id for f in frames] == list(range(10))
    assert [f.source_index for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [f.meta["pass"] for f in frames] == [0] * 4 + [1] * 4 + [2] * 2


def test_ids_continue_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "line.mp4"
    write_video(path, 3)
    src = open_source(str(path))
    assert [f.id for f in read_all(src)] == [0, 1, 2]
    again = read_all(src)  # the file restarts, the ids do not
    assert [f.id for f in again] == [3, 4, 5]
    assert [f.source_index for f in again] == [0, 1, 2]


def test_undecodable_video_file_fails_on_open(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all" * 10)
    src = open_source(str(path))
    with pytest.raises(SourceError, match="could not be decoded"):
        src.open()
    assert not src.is_open


def test_source_state_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "line.mp4"
    write_video(path, 2)
    src = open_source(str(path))
    with pytest.raises(SourceError, match="not open"):
        src.read()
    src.close()  # closing a never-opened source is harmless
    src.open()
    with pytest.raises(SourceError, match="already open"):
        src.open()
    assert src.describe()["open"] is True
    src.close()
    src.close()
    assert src.describe()["open"] is False


# -- image folders -----------------------------------------------------------------------------


def test_image_folder_natural_order_skips_masks_and_other_files(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"img{n}.png"), np.full((6, 8, 3), n, np.uint8))
    cv2.imwrite(str(tmp_path / "img3.bmp"), np.full((6, 8, 3), 3, np.uint8))
    cv2.imwrite(str(tmp_path / "img4.png"), np.full((6, 8), 4, np.uint8))  # grayscale
    cv2.imwrite(str(tmp_path / "img1_mask.png"), np.full((6, 8), 255, np.uint8))
    (tmp_path / "labels.json").write_text("{}")
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFolderSource)
    frames = read_all(src)
    assert [Path(f.meta["path"]).name for f in frames] == [
        "img1.png",
        "img2.png",
        "img3.bmp",
        "img4.png",
        "img10.png",
    ]
    for f, level in zip(frames, (1, 2, 3, 4, 10)):
        assert f.image.shape == (6, 8, 3)
        assert np.all(f.image == level)  # lossless formats: exact
    assert [f.source_index for f in frames] == list(range(5)) and src.ended


def test_image_folder_corrupt_file_is_named(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    src = open_source(str(tmp_path))
    with src:
        assert src.read() is not None
        with pytest.raises(SourceError, match=r"b\.jpg"):
            src.read()


# -- synthetic line ----------------------------------------------------------------------------


def test_synthetic_delivers_n_rendered_frames_then_ends() -> None:
    from edge.data.demo_line import LineConfig, render_frame

    src = open_source("synthetic:?frames=4&seed=3&width=128&height=96")
    assert isinstance(src, SyntheticSource) and not src.is_live
    frames = read_all(src)
    assert [f.id for f in frames] == [0, 1, 2, 3] and src.ended
    config = LineConfig(width=128, height=96, seed=3)
    for f in frames:
        assert f.source_index == f.id
        assert np.array_equal(f.image, render_frame(f.id, config).image)
        assert f.meta["line_frame"].index == f.id


def test_missing_camera_fails_on_open_with_a_hint() -> None:
    if Path("/dev/video63").exists():
        pytest.skip("/dev/video63 exists here")
    src = open_source("v4l2:///dev/video63")
    with pytest.raises(SourceError, match="v4l2-ctl"):
        src.open()
    assert not src.is_open
