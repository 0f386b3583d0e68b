"""The one resize: exact where the factor is trivial, area-like (no aliasing) when shrinking by
any factor, bilinear when enlarging, and the input contract."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.core.errors import InputContractError
from edge.core.preprocess import InputSpec, frames_to_input, resize_frame
from edge.data.demo_line import LineConfig, render_frame


def test_same_size_is_the_frame_itself_and_enlarging_is_bilinear() -> None:
    img = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    assert resize_frame(img, 64, 48) is img
    want = cv2.resize(img, (96, 128), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize_frame(img, 128, 96), want)
    mixed = cv2.resize(img, (32, 128), interpolation=cv2.INTER_LINEAR)  # one axis enlarges
    np.testing.assert_array_equal(resize_frame(img, 128, 32), mixed)


def test_an_exact_two_times_shrink_is_the_area_filter() -> None:
    img = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    want = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resize_frame(img, 128, 128), want)


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1280, 720)])
def test_camera_frames_stay_within_about_one_grey_level_of_area(size: tuple[int, int]) -> None:
    w, h = size
    for i in range(3):
        img = render_frame(10_000_000 + i, LineConfig(width=w, height=h)).image
        area = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
        diff = np.abs(resize_frame(img, 128, 128).astype(np.float32) - area)
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (size, diff.mean())


@pytest.mark.parametrize("period", [4, 6])
def test_shrinking_attenuates_aliasing(period: int) -> None:
    """Stripes finer than the output grid become false stripes under plain bilinear sampling;
    the supersampled filter damps them at least 3x (640x480 -> 128x128). It is not a full area
    filter: at factors above 3 x SUPERSAMPLE[1] pixel-scale patterns still alias."""
    xx = np.mgrid[0:480, 0:640][1]
    stripes = np.where(xx % period < period // 2, 255, 0).astype(np.uint8)
    img = np.repeat(stripes[..., None], 3, axis=2)
    ours = resize_frame(img, 128, 128).astype(np.float32)
    naive = cv2.resize(img, (128, 128), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert abs(ours.mean() - 127.5) < 8
    assert naive.std() > 3 * ours.std(), (naive.std(), ours.std())


def test_bad_frames_are_refused_and_batches_are_stacked() -> None:
    with pytest.raises(InputContractError, match="uint8 HxWx3"):
        resize_frame(np.zeros((10, 10), np.uint8), 4, 4)
    with pytest.raises(InputContractError, match="at least one frame"):
        frames_to_input([], InputSpec())
    frames = [np.full((480, 640, 3), v, np.uint8) for v in (0, 200)]
    x = frames_to_input(frames, InputSpec())
    assert x.shape == (2, 128, 128, 3) and x.dtype == np.uint8
    assert x[0].max() == 0 and x[1].min() == 200 and x[1].max() == 200
    f = frames_to_input(frames, InputSpec(in_graph=False))
    assert f.shape == (2, 3, 128, 128) and f.dtype == np.float32
    np.testing.assert_allclose(f[1], (200 - 128) / 64)
