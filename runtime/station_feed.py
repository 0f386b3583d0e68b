"""A station's batcher and its side of each camera (:mod:`edge.runtime.station`).

:class:`CameraFeed` takes one camera's newest frame from its capture thread without waiting, or
the frame the capture's reader resized on arrival (:meth:`CameraFeed.lend`); :class:`Batcher`
collects one batch, at most one frame per camera, under the batching deadline.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.runtime.capture import CaptureThread
from edge.runtime.feed import prepared
from edge.runtime.pipeline import Pipeline
from edge.runtime.sources.base import Frame

IDLE_WAIT_S = 0.05
if TYPE_CHECKING:
    from edge.runtime.feed import Item


class CameraFeed:
    """One camera's side of the batcher: takes its newest frame from its capture thread without
    waiting (``take``), learns the camera's frame period, and records how its capture ended.

    While the batcher is idle, the capture's reader thread may call :meth:`lend` for a frame that
    just arrived: it takes and preprocesses that frame itself (the cameras' frames of a batch are
    then resized in parallel as they arrive, not one after another once the batch is
    complete); under load the batcher is never idle and takes and resizes the newest frames."""

    def __init__(self, index: int, capture: CaptureThread, pipeline: Pipeline) -> None:
        self.index, self.capture, self.pipeline = index, capture, pipeline
        self.error: BaseException | None = None
        self.ended = False
        self.last_ns: int | None = None
        self.last_id: int | None = None
        self.period_ns: float | None = None
        self.lent = 0
        """Frames a reader thread took and preprocessed."""
        self.full = False
        """The run's ``frames`` are processed: the batcher takes no more of this camera's."""
        self._lock = threading.Lock()
        self._held: tuple[Frame, np.ndarray, int] | BaseException | None = None
        self._lending = False

    def lend(self) -> None:
        """On the capture's thread: take the frame that just arrived and preprocess it here."""
        with self._lock:
            if self._held is not None or self._lending or self.ended or self.full:
                return
            try:
                frame = self.capture.get(timeout=0)
            except Exception:  # the failure reaches the batcher through take()
                return
            if frame is None:
                return
            self._lending = True
        held: Any = None
        try:
            held = prepared(self.pipeline, frame)
        except Exception as e:  # a frame the model cannot take: this camera fails (take())
            held = e
        finally:
            with self._lock:
                self._held, self._lending = held, False
                self.lent += not isinstance(held, BaseException)

    def fail(self, error: BaseException) -> None:
        """This camera ends alone with ``error`` (its capture failed, or a frame of it cannot
        be preprocessed)."""
        self.error, self.ended = error, True

    def unprocessed(self) -> list[int]:
        """The id of a frame a reader prepared that no batch took (at the end of the run)."""
        with self._lock:
            held, self._held = self._held, None
        return [held[0].id] if isinstance(held, tuple) else []

    def take(self) -> tuple[Frame, np.ndarray | None, int] | None:
        """The next frame, with its preprocessed input and time if a reader prepared it."""
        if self.ended:
            return None
        held: tuple[Frame, np.ndarray | None, int] | BaseException | None
        with self._lock:  # one taker at a time, so frames keep their order
            held, self._held = self._held, None
            if held is None and self._lending:
                return None  # a reader is preparing this camera's next frame: wait for it
            if held is None:
                try:
                    frame = self.capture.get(timeout=0)
                except Exception as e:  # failed for good: the camera ends alone
                    self.fail(e)
                    return None
                if frame is None:
                    self.ended = self.capture.ended
                    return None
                held = (frame, None, 0)
        if isinstance(held, BaseException):
            self.fail(held)
            return None
        frame = held[0]
        t = frame.t_buffered_ns
        if self.last_ns is not None and self.last_id is not None and frame.id > self.last_id:
            gap = (t - self.last_ns) / (frame.id - self.last_id)
            self.period_ns = gap if self.period_ns is None else 0.8 * self.period_ns + 0.2 * gap
        self.last_ns, self.last_id = t, frame.id
        return held

    def due_by(self, now_ns: int, end_ns: int, wait_ns: int) -> bool:
        """True when this camera's next frame is expected by ``end_ns`` and it is not late."""
        if self.ended or self.full or self.last_ns is None or self.period_ns is None:
            return False
        nxt = self.last_ns + self.period_ns
        return nxt <= end_ns and now_ns <= nxt + self.period_ns + wait_ns


class Batcher:
    """Collects one batch: at most one frame per camera, the newest each capture holds (see the
    module doc). The captures wake it through :meth:`notify` (their ``on_frame``)."""

    def __init__(self, wait_s: float) -> None:
        self.feeds: list[CameraFeed] = []
        self.wait_ns = int(wait_s * 1e9)
        self.cond = threading.Condition()
        self.seq = 0
        self.idle = False
        """True while :meth:`collect` waits for frames (a reader may then lend a hand)."""

    def notify(self) -> None:
        with self.cond:
            self.seq += 1
            self.cond.notify_all()

    def arrived(self, feed: CameraFeed) -> None:
        """A capture's ``on_frame``: while the batcher waits, the reader thread preprocesses
        the frame itself; then the batcher is woken."""
        if self.idle:
            feed.lend()
        self.notify()

    def collect(self) -> list[tuple[int, Item]]:
        """The next batch as (camera index, (frame, its input or None, preprocessing ns));
        empty when nothing came within ``IDLE_WAIT_S``."""
        got: dict[int, Item] = {}
        end: int | None = None
        t_idle = time.monotonic() + IDLE_WAIT_S
        while True:
            with self.cond:
                seq = self.seq
            for f in self.feeds:
                if f.index not in got and not f.full:
                    frame = f.take()
                    if frame is not None:
                        got[f.index] = frame
            now = time.monotonic_ns()
            if got and end is None:
                end = min(t[0].t_buffered_ns for t in got.values())
                end += self.wait_ns
            if end is not None:
                waiting = [
                    f for f in self.feeds if f.index not in got and f.due_by(now, end, self.wait_ns)
                ]
                if not waiting or now >= end:
                    return sorted(got.items())
                timeout = (end - now) / 1e9
            else:
                timeout = t_idle - time.monotonic()
                if timeout <= 0 or all(f.ended or f.full for f in self.feeds):
                    return []
            with self.cond:
                if self.seq == seq:
                    self.idle = True
                    self.cond.wait(timeout)
                    self.idle = False
