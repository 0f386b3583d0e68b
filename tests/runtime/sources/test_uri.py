"""Source URIs: parsing every kind, pipeline strings, GStreamer detection, bad URIs."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from edge.core.errors import SourceError
from edge.runtime.sources.base import SourceOptions
from edge.runtime.sources.readers import OpenCVCaptureSource
from edge.runtime.sources.uri import csi_pipeline, open_source, opencv_has_gstreamer, rtsp_pipeline

# -- URI parsing (no cameras opened) -----------------------------------------------------------


def test_usb_and_v4l2_uris_build_v4l2_captures() -> None:
    usb = open_source("usb:2")
    assert isinstance(usb, OpenCVCaptureSource)
    assert (usb.kind, usb.target, usb.api, usb.backend) == ("usb", 2, cv2.CAP_V4L2, "V4L2")
    v4l2 = open_source("v4l2:///dev/video1", options=SourceOptions(width=640, height=480, fps=30))
    assert (v4l2.kind, v4l2.target, v4l2.api) == ("v4l2", "/dev/video1", cv2.CAP_V4L2)
    d = v4l2.describe()
    assert d["live"] is True and d["open"] is False and d["nominal_fps"] == 30
    for bad in ("usb:-1", "usb:x", "usb:", "v4l2:///dev/sda", "v4l2://video0"):
        with pytest.raises(SourceError, match="Accepted sources"):
            open_source(bad)


def test_rtsp_uses_gstreamer_pipeline_when_available_else_ffmpeg() -> None:
    url = "rtsp://admin:secret@10.0.0.5:554/stream1"
    gst = open_source(url, gstreamer=True, options=SourceOptions(rtsp_latency_ms=50))
    d = gst.describe()
    assert d["backend"] == "GStreamer" and gst.api == cv2.CAP_GSTREAMER
    assert "latency=50 drop-on-latency=true" in d["pipeline"]
    assert d["pipeline"].endswith("appsink drop=1 max-buffers=1 sync=false")
    ff = open_source(url, gstreamer=False)
    d = ff.describe()
    assert d["backend"] == "FFmpeg" and ff.api == cv2.CAP_FFMPEG
    assert ff.env == {
        "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
    }
    assert ff.params[1] == ff.params[3] == 5000  # open/read timeouts from read_timeout_s
    # credentials never appear in descriptions
    assert "secret" not in repr(gst.describe()) + repr(ff.describe()) + repr(ff)
    with pytest.raises(SourceError, match="needs a host"):
        open_source("rtsp:///nohost", gstreamer=False)


def test_rtsp_pipeline_strings() -> None:
    generic = rtsp_pipeline("rtsp://cam/s")
    assert generic == (
        'rtspsrc location="rtsp://cam/s" latency=0 drop-on-latency=true protocols=tcp ! '
        "decodebin ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=1 max-buffers=1 sync=false"
    )
    jetson = rtsp_pipeline("rtsp://cam/s", 100, codec="h265", jetson=True, width=640, height=360)
    assert "latency=100" in jetson
    assert "rtph265depay ! h265parse ! nvv4l2decoder ! nvvidconv" in jetson
    assert "video/x-raw,format=BGRx,width=640,height=360 ! videoconvert" in jetson
    assert "avdec_h264" in rtsp_pipeline("rtsp://cam/s", codec="h264")
    with pytest.raises(SourceError):
        rtsp_pipeline("rtsp://cam/s", codec="vp9")
    with pytest.raises(SourceError):
        rtsp_pipeline('rtsp://cam/"x"')


def test_csi_pipeline_string() -> None:
    p = csi_pipeline(1, 960, 540, 30, capture_width=1920, capture_height=1080, flip_method=2)
    elements = [e.strip() for e in p.split("!")]
    assert elements[0] == "nvarguscamerasrc sensor-id=1"
    assert elements[1] == (
        "video/x-raw(memory:NVMM),width=1920,height=1080,format=NV12,framerate=30/1"
    )
    assert elements[2] == "queue max-size-buffers=3 leaky=downstream"
    assert elements[3] == "nvvidconv flip-method=2"
    assert elements[4] == "video/x-raw,width=960,height=540,format=BGRx"
    assert elements[-1] == "appsink drop=1 max-buffers=1 sync=false"
    q = csi_pipeline(0, fps=29.97, sensor_mode=3, leaky_queue=False)
    assert "sensor-mode=3" in q and "framerate=30000/1001" in q and "queue" not in q


def test_csi_and_gst_with_gstreamer_available() -> None:
    csi = open_source("csi://0", gstreamer=True, options=SourceOptions(width=640, height=480))
    assert csi.describe()["pipeline"] == csi_pipeline(0, 640, 480, 30)
    pipe = "videotestsrc ! videoconvert ! appsink max-buffers=1"
    gst = open_source(f"gst:{pipe}", gstreamer=True)
    assert gst.describe()["pipeline"] == pipe and gst.kind == "gst"
    for bad in ("gst:videotestsrc ! fakesink", "gst:", "csi://", "csi://a", "csi:0"):
        with pytest.raises(SourceError, match="Accepted sources"):
            open_source(bad, gstreamer=True)


def test_csi_and_gst_without_gstreamer_give_the_jetpack_advice() -> None:
    for uri in ("csi://0", "gst:videotestsrc ! appsink"):
        with pytest.raises(SourceError, match="pip's opencv") as e:
            open_source(uri, gstreamer=False)
        assert "JetPack" in str(e.value) and "jetson/setup.sh" in str(e.value)


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_pip_opencv_is_detected_as_lacking_gstreamer() -> None:
    with pytest.raises(SourceError, match="GStreamer"):
        open_source("csi://0")


def test_opencv_has_gstreamer_reads_both_build_info_layouts() -> None:
    assert opencv_has_gstreamer("  Video I/O:\n    GStreamer:    YES (1.20.3)\n")
    assert not opencv_has_gstreamer("  Video I/O:\n    GStreamer:    NO\n    FFMPEG: YES\n")
    old = (
        "  Video I/O:\n    GStreamer:\n      base:   YES (ver 1.14.5)\n"
        "      app:    YES (ver 1.14.5)\n    FFMPEG: YES\n"
    )
    assert opencv_has_gstreamer(old)
    assert not opencv_has_gstreamer("  Video I/O:\n    GStreamer:\n    FFMPEG: YES\n")
    assert not opencv_has_gstreamer("no video section")


def test_bad_uris_list_the_accepted_forms(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "only_mask.png").write_bytes(b"")
    cases = {
        "http://example.com/x.mp4": "unknown scheme",
        str(tmp_path / "missing.mp4"): "no such file",
        f"file://{tmp_path}/missing.mp4": "no such file",
        str(tmp_path): "no \\*.png",
        "": "empty",
    }
    for uri, problem in cases.items():
        with pytest.raises(SourceError, match=problem) as e:
            open_source(uri)
        msg = str(e.value)
        assert msg.startswith("source: ")
        for form in ("usb:N", "v4l2:///dev/videoN", "rtsp://", "csi://N", "gst:", "synthetic:"):
            assert form in msg


def test_synthetic_parameters() -> None:
    src = open_source("synthetic:?fps=25&live=1", options=SourceOptions(width=160, height=120))
    d = src.describe()
    assert src.is_live and (d["width"], d["height"], d["fps"], d["frames"]) == (160, 120, 25, None)
    assert open_source("synthetic:").describe()["frames"] is None  # endless
    assert open_source("synthetic://?frames=2").describe()["frames"] == 2
    for bad in (
        "synthetic:?frames=0",
        "synthetic:?bogus=1",
        "synthetic:?fps=-1",
        "synthetic:?fps=abc",
        "synthetic:?live=maybe",
        "synthetic:foo",
        "synthetic:?width=10",
    ):
        with pytest.raises(SourceError, match="Accepted sources"):
            open_source(bad)
