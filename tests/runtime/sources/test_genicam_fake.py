"""genicam:// against Aravis' GigE Vision fake camera (``arv-fake-gv-camera-0.8`` on 127.0.0.1,
real GVCP/GVSP over UDP): frames, settings read back, clear errors, software trigger, a killed
camera reported as a gap and reconnected with its settings re-applied, and ``edge run``.

Skipped with the reason when the fake camera binary (apt aravis-tools) or the Aravis binding
(apt gir1.2-aravis-0.8 + pip PyGObject, the ``genicam`` extra) is missing; .ci/run installs them.
The fake camera always listens on UDP 3956, so only one runs per host: one session fixture.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli import main
from edge.core.errors import SourceError
from edge.runtime.capture import CaptureThread
from edge.runtime.sources.base import Frame, SourceOptions
from edge.runtime.sources.uri import open_source

FAKE = "arv-fake-gv-camera-0.8"
CAM = "genicam://127.0.0.1"


def _aravis_missing() -> str | None:
    if shutil.which(FAKE) is None:
        return f"{FAKE} not installed (apt-get install aravis-tools)"
    try:
        import gi  # optional binding: the genicam extra

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis  # noqa: F401
    except (ImportError, ValueError) as e:
        return f"Aravis binding missing ({e}): apt gir1.2-aravis-0.8, pip 'etr-edge[genicam]'"
    return None


class FakeCamera:
    """The fake camera process; ``kill()`` and ``start()`` for the reconnect test."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [FAKE, "-i", "127.0.0.1", "-s", "ETR001", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(0.5)  # it binds at once; there is no readiness message
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            pytest.skip(f"{FAKE} did not start (UDP 3956 taken by another camera?): {err}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()


@pytest.fixture(scope="session")
def fake_camera() -> Iterator[FakeCamera]:
    reason = _aravis_missing()
    if reason:
        pytest.skip(reason)
    cam = FakeCamera()
    cam.start()
    try:
        yield cam
    finally:
        cam.kill()


@pytest.fixture
def camera(fake_camera: FakeCamera) -> FakeCamera:
    fake_camera.ensure_running()
    return fake_camera


def _frames(src: object, n: int, within_s: float = 10.0) -> list[Frame]:
    out: list[Frame] = []
    deadline = time.monotonic() + within_s
    while len(out) < n and time.monotonic() < deadline:
        f = src.read()  # type: ignore[attr-defined]
        if f is not None:
            out.append(f)
    return out


def test_frames_arrive_with_the_uri_settings_read_back(camera: FakeCamera) -> None:
    uri = (
        f"{CAM}?PixelFormat=BayerRG8&Width=320&Height=240&OffsetX=16&ExposureTime=2500"
        "&Gain=3&AcquisitionFrameRate=40&feature.GainAuto=Off"
    )
    with open_source(uri) as src:
        frames = _frames(src, 5)
        d = src.describe()
    assert len(frames) == 5 and all(f.image.shape == (240, 320, 3) for f in frames)
    assert [f.id for f in frames] == [0, 1, 2, 3, 4]
    assert d["settings"] == {
        "PixelFormat": "BayerRG8",
        "Width": 320,
        "Height": 240,
        "OffsetX": 16,
        "ExposureTime": 2500.0,
        "Gain": 3,
        "AcquisitionFrameRate": 40.0,
        "feature.GainAuto": "Off",
    }
    # the fake camera has the older GigE Vision names: the fallbacks were used
    assert d["features"]["ExposureTime"] == "ExposureTimeAbs"
    assert d["features"]["Gain"] == "GainRaw"
    assert d["vendor"] == "Aravis" and d["serial"] == "ETR001" and d["zero_copy"] is True
    assert d["nominal_fps"] == 40.0 and d["incomplete"] == 0
    g = frames[-1].meta["genicam"]
    assert {"frame_id", "resent_packets", "missing_packets", "incomplete_before"} <= set(g)
    # the fake camera stamps frames with the host's wall clock: latency from the sensor
    assert all(f.device_clock == "genicam" and f.latency_clock == "sensor" for f in frames)
    assert all(0 <= f.t_capture_ns - f.latency_start_ns < 1_000_000_000 for f in frames)


def test_bad_feature_names_and_values_are_clear_errors(camera: FakeCamera) -> None:
    for query, msg in (
        ("Width=5000", r"Width='5000' is out of range: the camera accepts \[1, 2048\]"),
        (
            "ExposureTime=1",
            r"ExposureTimeAbs='1' is out of range: the camera accepts \[10, 1e\+07\]",
        ),
        ("PixelFormat=RGB16", "not one of the camera's values: BayerBG8, .*Mono8"),
        ("feature.Nope=1", "the camera has no available feature Nope"),
        ("feature.SensorWidth=100", "SensorWidth is read-only"),
        ("feature.GainAuto=Sometimes", "not one of the camera's values: Off"),
        ("trigger=line1", "trigger=line1 is not offered by the camera; its trigger sources: line0"),
    ):
        with pytest.raises(SourceError, match=msg):
            open_source(f"{CAM}?{query}").open()


def test_cli_exits_2_on_a_bad_camera_setting(
    camera: FakeCamera, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", str(tiny_bundle), "--source", f"{CAM}?Width=99999", "--frames", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "Width='99999' is out of range: the camera accepts [1, 2048]" in err


def test_software_trigger_gives_exactly_one_frame_per_trigger(camera: FakeCamera) -> None:
    with open_source(f"{CAM}?trigger=software&Width=64&Height=48") as src:
        assert src.triggered and src.stall_timeout_s is None
        assert _frames(src, 1, within_s=0.6) == []  # no trigger, no frame
        got = []
        for _ in range(4):
            src.fire_trigger()
            got.append(len(_frames(src, 2, within_s=0.6)))  # wait long enough for a second one
        assert got == [1, 1, 1, 1]
        assert src.describe()["triggers"] == 4 and src.describe()["trigger"] == "software"
    with open_source(f"{CAM}?trigger=line0") as hw, pytest.raises(SourceError, match="trigger"):
        hw.fire_trigger()  # a hardware line: the runtime waits, it cannot fire it


def test_killed_camera_is_a_gap_and_reconnects_with_settings_reapplied(
    camera: FakeCamera,
) -> None:
    options = SourceOptions(read_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=1.0)
    src = open_source(f"{CAM}?Width=200&Height=100&PixelFormat=Mono8", options=options)
    with CaptureThread(src, "fifo:64") as cap:
        before = [f for f in (cap.get(timeout=5.0) for _ in range(3)) if f is not None]
        assert len(before) == 3
        camera.kill()
        time.sleep(2.0)
        while cap.get(timeout=0.1) is not None:  # what was queued before the kill
            pass
        camera.start()  # a fresh camera: 512x512 until the source re-applies its settings
        after = None
        deadline = time.monotonic() + 30
        while after is None and time.monotonic() < deadline:
            after = cap.get(timeout=0.5)
        stats = cap.stats
    assert after is not None, f"no frame after the camera came back: {stats}"
    assert after.image.shape == (100, 200, 3)  # Width/Height re-applied on reconnect
    assert after.id > before[-1].id
    assert len(stats.gaps) == 1 and stats.reopens >= 1
    gap = stats.gaps[0]
    assert gap.last_id_before is not None and gap.first_id_after == after.id
    assert gap.end_ns - gap.start_ns >= 2_000_000_000


def test_edge_run_on_the_fake_camera(camera: FakeCamera, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    uri = f"{CAM}?Width=128&Height=96&PixelFormat=BayerGR8&AcquisitionFrameRate=50"
    assert main(["run", str(tiny_bundle), "--source", uri, "--frames", "6", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    frames = [x for x in lines if "frame" in x]
    assert len(frames) >= 6
    assert all(x["latency_clock"] == "sensor" and x["device"]["clock"] == "genicam" for x in frames)
    assert all("resent_packets" in x["device"] for x in frames)
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["run"]["source"]["settings"]["Width"] == 128
    assert summary["run"]["policy"] == "latest"


def test_edge_run_with_trigger_every_processes_every_triggered_frame(
    camera: FakeCamera, tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "t.jsonl"
    uri = f"{CAM}?trigger=software&Width=64&Height=48"
    args = ["run", str(tiny_bundle), "--source", uri, "--trigger-every", "100"]
    assert main([*args, "--frames", "5", "--out", str(out)]) == 0
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert summary["run"]["policy"] == "fifo:4"  # triggered: every part is processed
    assert summary["frames"] == 5 and summary["capture"]["overruns"] == 0
    assert summary["run"]["source"]["triggers"] >= 5
    ids = [json.loads(x)["frame"] for x in out.read_text().splitlines() if '"frame"' in x]
    assert ids == list(range(len(ids))) and len(ids) >= 5  # no frame skipped
    # --trigger-every on a source without a software trigger: a clear error, exit 2
    assert main(["run", str(tiny_bundle), "--source", CAM, "--trigger-every", "50"]) == 2


def test_lost_packets_are_counted_per_frame_and_in_describe(camera: FakeCamera) -> None:
    camera.kill()
    camera.start("-r", "20")  # the fake camera drops 2 % of its stream packets
    try:
        with open_source(f"{CAM}?Width=320&Height=240&AcquisitionFrameRate=100") as src:
            frames = _frames(src, 30)
            d = src.describe()  # no read since the last frame: the counters match the frames
    finally:
        camera.kill()
        camera.start()
    assert len(frames) == 30
    metas = [f.meta["genicam"] for f in frames]
    assert d["incomplete"] == sum(m["incomplete_before"] for m in metas) > 0
    assert d["missing_packets"] == sum(m["missing_packets"] for m in metas) > 0
    assert set(d["incomplete_by_status"]) <= {"missing-packets", "timeout", "size-mismatch"}
    assert all(m["missing_packets"] > 0 for m in metas if m["incomplete_before"])


def test_triggered_parts_overrun_a_full_fifo_and_are_recorded_by_id(camera: FakeCamera) -> None:
    src = open_source(f"{CAM}?trigger=software&Width=64&Height=48")
    with CaptureThread(src, "fifo:1") as cap:
        for _ in range(4):  # nobody consumes: the first waits in the queue, 3 overrun
            src.fire_trigger()
            time.sleep(0.3)
        stats = cap.stats
        first = cap.get(timeout=1.0)
    assert stats.captured == 4 and stats.queued == 1 and stats.overruns == 3
    assert stats.overrun_ids == (1, 2, 3) and first is not None and first.id == 0
