"""Camera settings as URI options (no camera needed): syntax and ranges, the pipelines they
build, genicam:// parsing, raw pixel formats to BGR, and stream timestamps on frames.
(The genicam options against a real camera: test_genicam_fake.py.)"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.errors import MissingDependencyError, SourceError
from edge.runtime.sources.base import RawFrame, Source
from edge.runtime.sources.genicam import PIXEL_FORMATS, to_bgr
from edge.runtime.sources.genicam_settings import parse_genicam_uri
from edge.runtime.sources.readers import fourcc_text
from edge.runtime.sources.uri import open_source


def test_usb_query_becomes_options_and_unknown_keys_are_errors() -> None:
    src = open_source("usb:2?width=1280&height=720&fps=30&fourcc=MJPG")
    assert src.target == 2  # type: ignore[attr-defined]
    o = src.options
    assert (o.width, o.height, o.fps, o.fourcc) == (1280, 720, 30.0, "MJPG")
    v4l2 = open_source("v4l2:///dev/video3?fourcc=YUYV")
    assert v4l2.target == "/dev/video3" and v4l2.options.fourcc == "YUYV"  # type: ignore[attr-defined]
    for bad, msg in (
        ("usb:0?exposure=3", r"unknown option\(s\) \['exposure'\]"),
        ("usb:0?width=0", "width='0' must be an integer in"),
        ("usb:0?fps=abc", "fps='abc' must be a number"),
        ("v4l2:///dev/video0?fourcc=MJPEG", "fourcc='MJPEG' must be 4 characters"),
        ("usb:0?width=640&width=320", "given twice"),
    ):
        with pytest.raises(SourceError, match=msg):
            open_source(bad)


def test_csi_query_builds_the_argus_pipeline_with_crop() -> None:
    uri = (
        "csi://1?sensor-mode=2&width=1920&height=1080&fps=60&flip=2&exposure=20000-1000000"
        "&gain=1-8&wbmode=0&aelock=1&awblock=0&left=100&right=1380&top=60&bottom=780"
    )
    p = open_source(uri, gstreamer=True).describe()["pipeline"]
    elements = [e.strip() for e in p.split("!")]
    assert elements[0] == (
        'nvarguscamerasrc sensor-id=1 sensor-mode=2 exposuretimerange="20000 1000000" '
        'gainrange="1 8" wbmode=0 aelock=true awblock=false'
    )
    assert elements[1] == (
        "video/x-raw(memory:NVMM),width=1920,height=1080,format=NV12,framerate=60/1"
    )
    assert elements[3] == "nvvidconv flip-method=2 left=100 right=1380 top=60 bottom=780"
    assert elements[4] == "video/x-raw,width=1280,height=720,format=BGRx"
    sid = open_source("csi://?sensor-id=3&right=640", gstreamer=True).describe()["pipeline"]
    assert "sensor-id=3 " in sid and "left=0 right=640 top=0 bottom=720" in sid
    for bad, msg in (
        ("csi://0?iso=100", r"unknown option\(s\) \['iso'\]"),
        ("csi://0?exposure=5-1", "must be a range LOW-HIGH"),
        ("csi://0?gain=x", "must be a range LOW-HIGH"),
        ("csi://0?wbmode=12", r"wbmode='12' must be an integer in \[0, 9\]"),
        ("csi://0?flip=9", r"flip='9' must be an integer in \[0, 7\]"),
        ("csi://0?aelock=yes", "aelock='yes' must be 0 or 1"),
        ("csi://0?width=640&left=600&right=500", "0 <= left < right <= width"),
        ("csi://0?sensor-id=1", "disagree"),
    ):
        with pytest.raises(SourceError, match=msg):
            open_source(bad, gstreamer=True)


def test_rtsp_takes_latency_and_transport_and_leaves_other_query_keys_in_the_url() -> None:
    url = "rtsp://cam:554/live?channel=1&latency=120&transport=udp"
    gst = open_source(url, gstreamer=True).describe()["pipeline"]
    assert 'location="rtsp://cam:554/live?channel=1"' in gst
    assert "latency=120 drop-on-latency=true protocols=udp" in gst
    ff = open_source(url, gstreamer=False)
    assert ff.target == "rtsp://cam:554/live?channel=1"  # type: ignore[attr-defined]
    assert "rtsp_transport;udp" in ff.describe()["env"]["OPENCV_FFMPEG_CAPTURE_OPTIONS"] or (
        # the user's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins over ours
        "OPENCV_FFMPEG_CAPTURE_OPTIONS" in __import__("os").environ
    )
    for bad, msg in (
        ("rtsp://cam/s?transport=http", "transport='http' must be tcp or udp"),
        ("rtsp://cam/s?latency=-5", "latency='-5' must be an integer"),
    ):
        with pytest.raises(SourceError, match=msg):
            open_source(bad, gstreamer=True)


def test_genicam_uri_parsing() -> None:
    s = parse_genicam_uri(
        "genicam://192.168.1.20?ExposureTime=5000&OffsetX=8&Width=640&pixelformat=BayerRG8"
        "&trigger=line1&feature.GainAuto=Off&buffers=4"
    )
    assert s.device_id == "192.168.1.20" and s.trigger == "Line1" and s.buffers == 4
    keys = [k for k, _, _ in s.features]
    assert keys == ["PixelFormat", "Width", "OffsetX", "ExposureTime", "feature.GainAuto"]
    assert dict((k, c) for k, c, _ in s.features)["ExposureTime"] == (
        "ExposureTime",
        "ExposureTimeAbs",
    )
    assert parse_genicam_uri("genicam://").device_id is None
    assert parse_genicam_uri("genicam://Basler-2104%2042?trigger=software").device_id == (
        "Basler-2104 42"
    )
    for bad, msg in (
        ("genicam://x?Exposure=5", "unknown option 'Exposure' \\(did you mean 'ExposureTime'"),
        ("genicam://x?trigger=line", "trigger='line': expected software or lineN"),
        ("genicam://x?buffers=1", r"buffers='1' must be an integer in \[2, 256\]"),
        ("genicam://x?feature.a-b=1", "letters, digits and _"),
        ("genicam://x?Width=1&width=2", "given twice"),
        ("genicam://x/path", "unexpected path"),
    ):
        with pytest.raises(SourceError, match=msg):
            open_source(bad)


def _mosaic(bgr: tuple[int, int, int], pattern: str, h: int = 8, w: int = 8) -> np.ndarray:
    """A flat colour as the raw bytes of a Bayer sensor with GenICam's ``pattern`` (e.g. RG)."""
    b, g, r = bgr
    value = {"R": r, "G": g, "B": b}
    rows = {"RG": ("RG", "GB"), "GR": ("GR", "BG"), "GB": ("GB", "RG"), "BG": ("BG", "GR")}
    cells = np.array([[value[c] for c in row] for row in rows[pattern]], np.uint8)
    return np.tile(cells, (h // 2, w // 2))


@pytest.mark.parametrize("pattern", ["RG", "GR", "GB", "BG"])
def test_bayer8_converts_to_the_right_colour(pattern: str) -> None:
    code = next(c for c, (n, _, _) in PIXEL_FORMATS.items() if n == f"Bayer{pattern}8")
    raw = _mosaic((30, 120, 220), pattern)
    bgr = to_bgr(raw.ravel(), 8, 8, code)
    assert bgr.shape == (8, 8, 3) and bgr.dtype == np.uint8
    centre = bgr[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    assert np.allclose(centre, (30, 120, 220), atol=2), (pattern, centre)


def test_mono_rgb_and_16_bit_formats_to_bgr() -> None:
    mono = np.arange(12, dtype=np.uint8)
    out = to_bgr(mono, 4, 3, 0x01080001)
    assert out.shape == (3, 4, 3) and (out[..., 0] == mono.reshape(3, 4)).all()
    rgb = np.array([10, 20, 30] * 4, np.uint8)
    assert tuple(to_bgr(rgb, 2, 2, 0x02180014)[0, 0]) == (30, 20, 10)
    m16 = np.full(4, 0xABCD, "<u2").view(np.uint8)
    assert to_bgr(m16, 2, 2, 0x01100007)[0, 0, 0] == round(0xABCD / 256)
    m12 = np.full(4, 0x0ABC, "<u2").view(np.uint8)
    assert to_bgr(m12, 2, 2, 0x01100005)[0, 0, 0] == round(0x0ABC / 16)
    top = np.full(4, 0xFFFF, "<u2").view(np.uint8)
    assert to_bgr(top, 2, 2, 0x01100007)[0, 0, 0] == 255
    with pytest.raises(SourceError, match="not supported: set PixelFormat= one of"):
        to_bgr(mono, 4, 3, 0x01080099)
    with pytest.raises(SourceError, match="buffer holds 12 bytes"):
        to_bgr(mono, 4, 4, 0x01080001)


def test_fourcc_text() -> None:
    assert fourcc_text(float(cv2.VideoWriter.fourcc(*"MJPG"))) == "MJPG"
    assert fourcc_text(0.0) is None


class _Stamped(Source):
    """Frames whose device time is ``age_ns`` before now on the host clock."""

    kind, live = "stamped", True

    def __init__(self, age_ns: int) -> None:
        super().__init__("stamped:")
        self.age_ns = age_ns

    def _open_impl(self) -> None:
        pass

    def _close_impl(self) -> None:
        pass

    def _read_impl(self) -> RawFrame:
        import time

        t = time.monotonic_ns() - self.age_ns
        return RawFrame(np.zeros((2, 2, 3), np.uint8), None, {}, 123, "v4l2", t)


def test_sensor_time_is_used_only_when_plausible_on_the_host_clock() -> None:
    with _Stamped(2_000_000) as src:
        f = src.read()
    assert f is not None and f.latency_clock == "sensor" and f.t_device_ns == 123
    assert 2_000_000 <= f.t_capture_ns - f.latency_start_ns < 1_000_000_000
    for age in (-5_000_000_000, 60_000_000_000):  # in the future, or a minute old: not this clock
        with _Stamped(age) as src:
            g = src.read()
        assert g is not None and g.latency_clock == "arrival" and g.t_sensor_ns is None
        assert g.device_clock == "v4l2" and g.latency_start_ns == g.t_capture_ns


def test_video_file_frames_carry_their_stream_time(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (32, 32))
    for i in range(5):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    frames = []
    with open_source(str(path)) as src:
        while (f := src.read()) is not None:
            frames.append(f)
    stamped = [f for f in frames if f.t_device_ns is not None]
    assert len(stamped) >= 4 and all(f.device_clock == "stream" for f in stamped)
    times = [f.t_device_ns for f in stamped]
    steps = np.diff(np.asarray(times, np.int64))
    assert (np.abs(steps - 100_000_000) < 2_000_000).all()
    assert all(f.latency_clock == "arrival" for f in frames)  # a file's time is not the host's


@pytest.mark.skipif(not glob.glob("/dev/video*"), reason="no V4L2 device on this machine")
def test_usb_setting_the_camera_does_not_honour_is_an_error() -> None:
    device = sorted(glob.glob("/dev/video*"))[0]
    with pytest.raises(SourceError, match="did not honour width=7"):
        open_source(f"v4l2://{device}?width=7&height=5").open()


def test_genicam_without_the_binding_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gi", None)  # as on a machine without PyGObject
    src = open_source("genicam://10.0.0.9?Width=640")  # parsing needs no binding
    with pytest.raises(MissingDependencyError, match=r"gir1.2-aravis-0.8.*etr-edge\[genicam\]"):
        src.open()
