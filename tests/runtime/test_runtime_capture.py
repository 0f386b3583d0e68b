"""Capture thread and frame policies: drops, overruns, backpressure, reopen with backoff, stop."""

from __future__ import annotations

import threading
import time
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.errors import ConfigError, SourceError
from edge.runtime.capture import CaptureThread, FramePolicy, backoff_delays, parse_policy
from edge.runtime.sources.base import RawFrame, Source, SourceOptions
from edge.runtime.sources.uri import open_source

FAST = SourceOptions(backoff_initial_s=0.01, backoff_max_s=0.04, read_timeout_s=0.05, fps=100)


class FlakyCamera(Source):
    """Test double of a live camera (the behaviour under test is the capture thread's).

    The first session delivers ``fail_after`` frames, then fails: its read raises (``mode``
    "raise") or keeps returning None (``mode`` "none"). The next ``bad_opens`` open attempts
    fail, then the camera works again; after ``total`` frames in all it ends (so tests finish).
    """

    kind = "test-camera"
    live = True

    def __init__(
        self,
        *,
        fail_after: int | None = None,
        mode: str = "raise",
        bad_opens: int = 0,
        total: int | None = None,
        first_open_fails: bool = False,
        options: SourceOptions = FAST,
    ) -> None:
        super().__init__("test://camera", options)
        self.fail_after, self.mode, self.bad_opens, self.total = fail_after, mode, bad_opens, total
        self.first_open_fails = first_open_fails
        self.open_times: list[float] = []
        self.sessions = self.in_session = self.made = 0

    def _open_impl(self) -> None:
        self.open_times.append(time.monotonic())
        if self.first_open_fails or (
            self.sessions >= 1 and len(self.open_times) <= 1 + self.bad_opens
        ):
            raise SourceError("camera unplugged")
        self.sessions += 1
        self.in_session = 0

    def _read_impl(self) -> RawFrame | None:
        if self.total is not None and self.made >= self.total:
            self._mark_ended()
            return None
        if (
            self.sessions == 1
            and self.fail_after is not None
            and self.in_session >= self.fail_after
        ):
            if self.mode == "raise":
                raise OSError("USB disconnect")
            return None
        self.in_session += 1
        self.made += 1
        return RawFrame(np.full((4, 4, 3), self.made % 256, np.uint8), self.made - 1)

    def _close_impl(self) -> None:
        pass


def wait_until(predicate, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


def balanced(s) -> bool:
    return s.captured == s.delivered + s.dropped + s.overruns + s.queued + s.discarded


# -- policy parsing ----------------------------------------------------------------------------


def test_parse_policy() -> None:
    assert parse_policy("latest") == FramePolicy("latest", 1)
    assert parse_policy(" FIFO:8 ") == FramePolicy("fifo", 8)
    assert str(parse_policy("fifo:3")) == "fifo:3" and str(parse_policy("latest")) == "latest"
    for bad in ("", "fifo", "fifo:0", "fifo:-1", "fifo:x", "fifo:2.5", "lifo", "latest:1"):
        with pytest.raises(ConfigError, match="fifo:N"):
            parse_policy(bad)


def test_backoff_delays_double_up_to_the_cap() -> None:
    assert list(islice(backoff_delays(0.5, 10.0), 7)) == [0.5, 1, 2, 4, 8, 10, 10]
    assert list(islice(backoff_delays(0.3, 0.3), 3)) == [0.3, 0.3, 0.3]


# -- latest ------------------------------------------------------------------------------------


def test_latest_keeps_only_the_newest_and_counts_every_drop() -> None:
    cap = CaptureThread(open_source("synthetic:?frames=30&width=64&height=64"), "latest").start()
    assert cap.join(timeout=20)  # the consumer takes nothing until the source has ended
    s = cap.stats
    assert (s.captured, s.dropped, s.queued) == (30, 29, 1)
    assert s.dropped_ids == tuple(range(29))
    frame = cap.get(timeout=1)
    assert frame is not None and frame.id == 29 and frame.t_queued_ns >= frame.t_capture_ns
    assert cap.get(timeout=1) is None and cap.ended
    s = cap.stats
    assert s.captured == s.delivered + s.dropped and s.ended


def test_on_frame_wakes_a_consumer_per_buffered_frame_and_once_at_the_end() -> None:
    calls: list[int] = []
    cap = CaptureThread(
        open_source("synthetic:?frames=12&width=64&height=64"),
        "fifo:20",
        on_frame=lambda: calls.append(1),
    ).start()
    assert cap.join(timeout=20)
    assert len(calls) == 12 + 1 and cap.stats.queued == 12  # each frame, then "ended"
    assert [cap.get(timeout=0).id for _ in range(12)] == list(range(12))  # type: ignore[union-attr]
    assert cap.get(timeout=0) is None and cap.ended


def test_latest_with_a_slow_consumer_accounts_for_every_id() -> None:
    cap = CaptureThread(open_source("synthetic:?frames=40&width=64&height=64"), "latest")
    with cap:
        delivered = []
        for frame in cap:
            delivered.append(frame.id)
            time.sleep(0.004)
    s = cap.stats
    assert s.captured == 40 and s.captured == s.delivered + s.dropped
    assert delivered == sorted(delivered)  # never an older frame after a newer one
    assert sorted(delivered + list(s.dropped_ids)) == list(range(40))


def test_dropped_id_list_is_capped_but_counts_stay_exact() -> None:
    src = open_source("synthetic:?frames=25&width=64&height=64")
    cap = CaptureThread(src, "latest", max_recorded_ids=5).start()
    assert cap.join(timeout=20)
    s = cap.stats
    assert s.dropped == 24 and s.dropped_ids == (19, 20, 21, 22, 23)


# -- fifo --------------------------------------------------------------------------------------


def test_fifo_on_a_live_source_records_overruns_against_ids() -> None:
    cap = CaptureThread(open_source("synthetic:?frames=20&live=1&width=64&height=64"), "fifo:3")
    cap.start()
    assert cap.join(timeout=20)  # consumer stalled for the whole run
    s = cap.stats
    assert (s.captured, s.queued, s.overruns, s.dropped) == (20, 3, 17, 0)
    assert s.overrun_ids == tuple(range(3, 20))
    assert cap.pop_overruns() == list(range(3, 20)) and cap.pop_overruns() == []
    assert [f.id for f in cap] == [0, 1, 2]
    s = cap.stats
    assert s.delivered + s.overruns == s.captured and cap.ended


def test_fifo_on_a_live_source_with_a_slow_consumer_loses_no_id_silently() -> None:
    cap = CaptureThread(open_source("synthetic:?frames=40&live=1&width=64&height=64"), "fifo:2")
    with cap:
        delivered = []
        for frame in cap:
            delivered.append(frame.id)
            time.sleep(0.003)
    s = cap.stats
    assert s.delivered + s.overruns == s.captured == 40 and s.dropped == 0
    assert delivered == sorted(delivered)
    assert sorted(delivered + list(s.overrun_ids)) == list(range(40))


def test_fifo_on_a_file_source_applies_backpressure_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "line.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (32, 32))
    for i in range(12):
        writer.write(np.full((32, 32, 3), 20 * i, np.uint8))
    writer.release()
    cap = CaptureThread(open_source(str(path)), "fifo:2")
    with cap:
        time.sleep(0.05)  # let the producer fill the queue and block
        frames = []
        for frame in cap:
            frames.append(frame)
            time.sleep(0.005)
    s = cap.stats
    assert [f.id for f in frames] == list(range(12))
    assert [f.source_index for f in frames] == list(range(12))
    assert (s.captured, s.delivered, s.overruns, s.dropped, s.discarded) == (12, 12, 0, 0, 0)
    assert s.max_queued <= 2 and cap.ended and cap.error is None
    for f in frames:
        assert abs(float(f.image.mean()) - 20 * f.source_index) < 6


# -- failures and reopen -----------------------------------------------------------------------


def test_camera_that_raises_is_reopened_with_backoff_and_ids_continue() -> None:
    cam = FlakyCamera(fail_after=5, mode="raise", bad_opens=2, total=12)
    cap = CaptureThread(cam, "fifo:64")
    with cap:
        ids = [f.id for f in cap]
    assert ids == list(range(12)) and cap.error is None
    s = cap.stats
    assert (s.reopens, s.reopen_attempts, s.read_failures, s.overruns) == (1, 3, 1, 0)
    (gap,) = s.gaps
    assert (gap.last_id_before, gap.first_id_after, gap.reopen_attempts) == (4, 5, 3)
    assert "OSError" in gap.reason and gap.end_ns > gap.start_ns
    assert isinstance(gap.frames_missed_estimate, int) and gap.frames_missed_estimate >= 0
    # open attempts: initial, then reopen tries spaced by at least 0.01, 0.02, 0.04 s
    waits = np.diff(cam.open_times)
    assert len(waits) == 3 and all(w >= d for w, d in zip(waits, (0.01, 0.02, 0.04)))


def test_camera_that_goes_silent_is_reopened_after_the_read_timeout() -> None:
    cam = FlakyCamera(fail_after=3, mode="none", total=8)
    cap = CaptureThread(cam, "fifo:64")
    with cap:
        ids = [f.id for f in cap]
    assert ids == list(range(8))
    (gap,) = cap.stats.gaps
    assert "no frame" in gap.reason and (gap.last_id_before, gap.first_id_after) == (2, 3)
    assert gap.end_ns - gap.start_ns >= 0.05e9  # at least the read timeout
    assert gap.to_dict()["reopen_attempts"] == 1


def test_live_source_without_reconnect_fails_after_draining() -> None:
    opts = SourceOptions(reconnect=False, read_timeout_s=0.05)
    cap = CaptureThread(FlakyCamera(fail_after=3, options=opts), "fifo:8").start()
    assert cap.join(timeout=10)
    assert [cap.get(timeout=1) for _ in range(3)] and cap.stats.delivered == 3
    with pytest.raises(SourceError, match="USB disconnect"):
        cap.get(timeout=1)
    s = cap.stats
    assert (s.reopen_attempts, s.read_failures) == (0, 1) and "OSError" in (s.error or "")


def test_first_open_failure_raises_at_once_without_retries() -> None:
    cam = FlakyCamera(first_open_fails=True)
    cap = CaptureThread(cam, "latest")
    with pytest.raises(SourceError, match="camera unplugged"):
        cap.start()
    assert len(cam.open_times) == 1 and not cap.is_alive
    with pytest.raises(SourceError, match="not running"):
        cap.get(timeout=0)


def test_finite_source_read_error_reaches_the_consumer(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"garbage")
    cap = CaptureThread(open_source(str(tmp_path)), "fifo:4").start()
    assert cap.get(timeout=5) is not None
    with pytest.raises(SourceError, match=r"b\.png"):
        cap.get(timeout=5)
    assert cap.stats.reopen_attempts == 0  # files are never reopened


def test_stop_interrupts_a_long_backoff_and_records_the_open_gap() -> None:
    opts = SourceOptions(backoff_initial_s=30.0, backoff_max_s=60.0, read_timeout_s=0.05)
    cap = CaptureThread(FlakyCamera(fail_after=2, bad_opens=10**6, options=opts), "latest")
    cap.start()
    wait_until(lambda: cap.stats.read_failures == 1)
    cap.stop()
    assert cap.join(timeout=5)
    (gap,) = cap.stats.gaps
    assert gap.last_id_before == 1 and gap.first_id_after is None
    assert cap.get(timeout=1) is not None  # the newest frame is still there to take
    assert cap.get(timeout=1) is None and cap.ended


def test_stop_releases_a_producer_blocked_on_backpressure() -> None:
    cap = CaptureThread(open_source("synthetic:?width=64&height=64"), "fifo:2").start()
    wait_until(lambda: cap.stats.backpressure_waits >= 1)
    cap.stop()
    assert cap.join(timeout=5)
    s = cap.stats
    assert s.discarded == 1 and s.queued == 2 and balanced(s)
    assert not cap.source.is_open  # the thread closed its source


def test_capture_cannot_start_twice() -> None:
    cap = CaptureThread(open_source("synthetic:?frames=1&width=64&height=64"), "latest")
    with cap, pytest.raises(SourceError, match="already started"):
        cap.start()
    assert cap.join(timeout=5)


# -- a read that blocks (OpenCV < 4.7 in GStreamer's pull_sample) ------------------------------


class BlockingCamera(Source):
    """A live camera whose first session delivers ``before`` frames, then blocks inside
    ``read()`` on an event, as a wedged GStreamer pipeline does. ``close()`` releases the blocked
    read (GStreamer's pipeline going to NULL wakes ``pull_sample``) unless ``close_unblocks`` is
    False; a released read returns None, or a late frame with ``late_frame``."""

    kind = "test-camera"
    live = True

    def __init__(
        self,
        before: int,
        total: int,
        *,
        close_unblocks: bool = True,
        late_frame: bool = False,
        options: SourceOptions = FAST,
    ) -> None:
        super().__init__("test://blocking", options)
        self.before, self.total = before, total
        self.close_unblocks, self.late_frame = close_unblocks, late_frame
        self.sessions = self.made = 0
        self.release = threading.Event()
        self.blocked = threading.Event()

    def _open_impl(self) -> None:
        self.sessions += 1

    def _read_impl(self) -> RawFrame | None:
        if self.made >= self.total:
            self._mark_ended()
            return None
        if self.sessions == 1 and self.made >= self.before:
            self.blocked.set()
            self.release.wait(timeout=30)  # bounded: a test never hangs
            if not self.late_frame:
                return None
        self.made += 1
        return RawFrame(np.full((4, 4, 3), self.made % 256, np.uint8), self.made - 1)

    def _close_impl(self) -> None:
        if self.close_unblocks:
            self.release.set()


STALL = SourceOptions(backoff_initial_s=0.01, backoff_max_s=0.04, read_timeout_s=0.3, fps=100)


def test_a_read_that_blocks_is_abandoned_and_the_source_reopened() -> None:
    cam = BlockingCamera(before=4, total=10, options=STALL)
    cap = CaptureThread(cam, "fifo:64")
    t0 = time.monotonic()
    with cap:
        ids = [f.id for f in cap]
    assert ids == list(range(10)) and cap.error is None
    assert time.monotonic() - t0 < 10  # found by the deadline, not by the read's 30 s limit
    s = cap.stats
    assert (s.stalls, s.reopens, s.read_failures, s.abandoned_frames) == (1, 1, 1, 0)
    (gap,) = s.gaps
    assert (gap.last_id_before, gap.first_id_after) == (3, 4)
    assert "no frame for 0.3 s" in gap.reason and "read() blocked" in gap.reason
    assert gap.end_ns - gap.start_ns >= 0.3e9


def test_a_read_that_stays_blocked_after_close_is_left_behind() -> None:
    cam = BlockingCamera(before=3, total=8, close_unblocks=False, late_frame=True, options=STALL)
    cap = CaptureThread(cam, "fifo:64").start()
    got = [cap.get(timeout=10) for _ in range(5)]
    assert [f.id for f in got if f is not None] == [0, 1, 2, 3, 4]  # ids continue
    assert cap.stats.stalls == 1 and cap.stats.reopens == 1
    cam.release.set()  # the stuck read finally returns a frame: it is discarded, not delivered
    wait_until(lambda: cap.stats.abandoned_frames == 1)
    rest = [f.id for f in cap]
    cap.stop()
    assert cap.join(timeout=5)
    assert rest and all(i > 4 for i in rest) and len(set(rest)) == len(rest)
    s = cap.stats
    assert balanced(s) and s.delivered == 5 + len(rest)


def test_the_heartbeat_goes_stale_when_close_hangs_the_monitor() -> None:
    hang = threading.Event()

    class HangingClose(BlockingCamera):
        def _close_impl(self) -> None:
            hang.wait(timeout=30)  # a driver that never returns from release()

    cam = HangingClose(before=2, total=100, close_unblocks=False, options=STALL)
    cap = CaptureThread(cam, "fifo:64").start()
    assert cap.get(timeout=5) is not None
    assert cap.heartbeat_age_s() < 0.2
    assert cam.blocked.wait(timeout=5)
    deadline = time.monotonic() + 10
    while cap.heartbeat_age_s() < 1.0 and time.monotonic() < deadline:
        cap.get(timeout=0.05)  # the consumer keeps beating; the monitor is stuck in close()
    assert cap.heartbeat_age_s() >= 1.0
    hang.set()
    cam.release.set()
    cap.stop()
    assert cap.join(timeout=5)


# -- the first open: retried with backoff for open_timeout_s -----------------------------------


class LateCamera(Source):
    """A live camera that refuses ``refusals`` opens (it is still booting), then delivers
    ``total`` frames and ends."""

    kind = "test-camera"
    live = True

    def __init__(self, refusals: int, total: int = 5, options: SourceOptions = FAST) -> None:
        super().__init__("rtsp://camera.local/stream", options)
        self.refusals, self.total = refusals, total
        self.open_times: list[float] = []
        self.made = 0

    def _open_impl(self) -> None:
        self.open_times.append(time.monotonic())
        if len(self.open_times) <= self.refusals:
            raise ConnectionRefusedError("connection refused")

    def _read_impl(self) -> RawFrame | None:
        if self.made >= self.total:
            self._mark_ended()
            return None
        self.made += 1
        return RawFrame(np.zeros((4, 4, 3), np.uint8), self.made - 1)

    def _close_impl(self) -> None:
        pass


def test_a_late_camera_is_opened_by_retries_each_reported() -> None:
    cam = LateCamera(refusals=3)
    messages: list[str] = []
    cap = CaptureThread(cam, "fifo:8", open_timeout_s=10, report=messages.append)
    with cap:
        ids = [f.id for f in cap]
    assert ids == [0, 1, 2, 3, 4] and cap.error is None
    assert cap.stats.open_attempts == 4 and len(cam.open_times) == 4
    assert [m.split(" of ")[0] for m in messages[:3]] == [
        "open attempt 1",
        "open attempt 2",
        "open attempt 3",
    ]
    assert all("connection refused" in m and "next in" in m for m in messages[:3])
    assert messages[3].endswith("opened on attempt 4") and len(messages) == 4
    waits = np.diff(cam.open_times)  # the reopen backoff: 0.01, 0.02, 0.04 s
    assert all(w >= d for w, d in zip(waits, (0.01, 0.02, 0.04)))


def test_a_camera_that_never_opens_fails_after_the_open_timeout() -> None:
    cam = LateCamera(refusals=10**6)
    messages: list[str] = []
    cap = CaptureThread(cam, "latest", open_timeout_s=0.3, report=messages.append).start()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"did not open within --open-timeout 0\.3 s"):
        cap.get(timeout=10)
    assert 0.2 < time.monotonic() - t0 < 5
    assert len(messages) == cap.stats.open_attempts - 1 >= 2  # the last failure is the error


def test_stop_ends_the_open_retries() -> None:
    slow = SourceOptions(backoff_initial_s=30.0, backoff_max_s=60.0)
    cap = CaptureThread(LateCamera(refusals=10**6, options=slow), "latest", open_timeout_s=600)
    cap.report = lambda message: None
    cap.start()
    cap.stop()
    assert cap.join(timeout=5) and cap.get(timeout=1) is None


def test_files_are_not_retried(tmp_path: Path) -> None:
    class MissingFile(LateCamera):
        live = False

    cap = CaptureThread(MissingFile(refusals=1), "fifo:2", open_timeout_s=60)
    with pytest.raises(SourceError, match="connection refused"):
        cap.start()
