"""RTSP on a Jetson: the board is recognised by the device-tree probe (also in a container
without /etc/nv_tegra_release), and the GStreamer pipeline asks for RTSP over TCP, as the FFmpeg
path does."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.runtime.sources.uri import _is_jetson, rtsp_pipeline

ROOTS = Path(__file__).parents[2] / "jetson" / "data" / "roots"


def test_jetson_recognised_without_the_l4t_release_file(tmp_path: Path) -> None:
    root = tmp_path / "container"
    shutil.copytree(ROOTS / "container-orin-nx" / "proc", root / "proc")
    assert not (root / "etc" / "nv_tegra_release").exists()
    assert _is_jetson(root)
    assert not _is_jetson(ROOTS / "x86-workstation")


def test_gstreamer_rtsp_forces_tcp() -> None:
    for jetson in (False, True):
        pipeline = rtsp_pipeline("rtsp://cam/s", codec="h264", jetson=jetson)
        assert pipeline.startswith('rtspsrc location="rtsp://cam/s" ')
        assert " protocols=tcp " in pipeline.split("!")[0] + " "
