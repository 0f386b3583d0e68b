"""How ``edge run``'s loop gets its frames from the capture thread (:mod:`edge.runtime.run`).

Each feed's ``get(timeout)`` returns ``(frame, its preprocessed input or None, preprocessing ns)``,
:data:`END` once capture has ended, or None on timeout; ``stop()`` returns the ids of frames a
helper thread took that were never handed over (the run's ``unprocessed`` event).

- :class:`DirectFeed`: the calling thread takes every frame itself (``overlap`` off).
- :class:`PrefetchFeed`: a helper takes and preprocesses every frame (``adaptive`` off): frame
  k+1 is resized while frame k is inferred, at the price of one more thread wake-up per frame.
- :class:`LendingFeed` (the default): the calling thread takes a frame itself while it is idle;
  while it processes one (:meth:`LendingFeed.lend` .. the next ``get``) a helper takes the next
  frame that arrives and preprocesses it. Light load: capture -> calling thread, one wake-up.
  Full load: the same overlap as the prefetch feed.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.runtime.capture import CaptureThread
from edge.runtime.pipeline import Pipeline
from edge.runtime.sources.base import Frame

END = object()
"""Capture has ended and every frame was taken."""
_RELEASED = object()  # the lending helper's answer when recalled with no frame in hand
LEND_SLICE_S = 0.002
"""While lent, the helper waits for a frame in slices this long, checking for a recall between
them: the longest the calling thread waits to take frames back (after a frame's sinks)."""
LEND_MARGIN = 1.5
"""Lend when the next frame is expected within this many of the caller's times per frame."""
_EWMA = 0.125  # weight of the newest sample in the moving averages
REHEARSAL_LEAD = 1.5
REHEARSAL_MARGIN_NS = 1_000_000
"""``keep_warm``: the rehearsal starts this many of its own times plus this margin before the
next frame is due on the source's frame grid."""

if TYPE_CHECKING:  # an alias for annotations only (Python 3.8: no tuple[...] at run time)
    Item = tuple[Frame, np.ndarray | None, int]
    """(frame, its preprocessed input or None, the preprocessing time in ns)"""


class DirectFeed:
    """Frames straight from the capture thread; the pipeline preprocesses when a head is due."""

    def __init__(self, capture: CaptureThread) -> None:
        self.capture = capture
        self.lent = False
        """A helper takes the next frame while the caller processes this one."""

    def get(self, timeout: float) -> Item | object | None:
        frame = self.capture.get(timeout=timeout)
        if frame is None:
            return END if self.capture.ended else None
        return (frame, None, 0)

    def lend(self) -> None:
        """No helper: nothing to lend."""

    def ready(self) -> bool:
        return False

    def stop(self) -> list[int]:
        return []


def prepared(pipeline: Pipeline, frame: Frame) -> tuple[Frame, np.ndarray, int]:
    """The frame with its preprocessed input and the preprocessing time (ns)."""
    t0 = time.perf_counter_ns()
    x = pipeline.preprocess(frame.image)
    return (frame, x, time.perf_counter_ns() - t0)


def arrival_timings(frame: Frame, pre_ns: int, now_ns: int) -> dict[str, int]:
    """``capture`` (read -> buffered) and ``queue_wait`` (buffered -> taken up at ``now_ns``,
    less ``pre_ns`` spent preprocessing it meanwhile) of a frame, in ns."""
    queued = frame.t_buffered_ns
    return {"capture": queued - frame.t_capture_ns, "queue_wait": max(0, now_ns - queued - pre_ns)}


class PrefetchFeed(DirectFeed):
    """A worker that takes frames from the capture thread and preprocesses them, so frame k+1
    is resized while frame k is inferred (OpenCV and ONNX Runtime release the GIL)."""

    def __init__(self, capture: CaptureThread, pipeline: Pipeline) -> None:
        super().__init__(capture)
        self.lent = True  # always
        self.pipeline = pipeline
        self.q: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.halt = threading.Event()
        self.unprocessed: list[int] = []
        self.taken = threading.Event()
        self.thread = threading.Thread(target=self._run, name="edge-prefetch", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.halt.is_set():
            try:
                self.q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        latest = self.capture.policy.kind == "latest"
        try:
            while not self.halt.is_set():
                # latest: take the next frame only once the last one was taken, so the frame
                # handed to inference is the newest, not one that aged in this queue
                if latest and not self.q.empty():
                    self.taken.wait(0.05)
                    self.taken.clear()
                    continue
                frame = self.capture.get(timeout=0.05)
                if frame is None:
                    if self.capture.ended:
                        self._put(END)
                        return
                    continue
                if not self._put(prepared(self.pipeline, frame)):
                    self.unprocessed.append(frame.id)
        except BaseException as e:
            self._put(e)

    def get(self, timeout: float) -> Item | object | None:
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        self.taken.set()
        if isinstance(item, BaseException):
            raise item
        return item

    def ready(self) -> bool:
        return not self.q.empty()

    def stop(self) -> list[int]:
        """Stop the worker; the ids of frames it took but that were never processed."""
        self.halt.set()
        self.thread.join(timeout=5.0)
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self.unprocessed.append(item[0].id)
        return sorted(self.unprocessed)


class LendingFeed(DirectFeed):
    """The calling thread takes frames itself, except between :meth:`lend` (it starts on a
    frame) and its next :meth:`get`: then a helper thread takes the next frame that arrives,
    preprocesses it and hands it over. Only one thread takes frames at a time (frames stay in
    order): the helper answers each lend exactly once, with a prepared frame, :data:`END`, an
    error, or "released" when ``get`` recalls it with no frame in hand.

    ``lend`` lends only when the next frame is expected before the caller is done with this one
    (moving averages of the source's frame period and of the caller's time per frame): at light
    load the helper stays asleep (it would only wake, poll and be recalled)."""

    def __init__(
        self, capture: CaptureThread, pipeline: Pipeline, *, keep_warm: bool = False
    ) -> None:
        super().__init__(capture)
        self.pipeline, self.keep_warm = pipeline, keep_warm
        self.rehearsals = 0
        self._rehearse_ns = 0.0  # moving average of a rehearsal's time
        self._rehearsed = False  # since the last frame
        self._lends: queue.Queue[bool] = queue.Queue()
        self._answers: queue.Queue[Any] = queue.Queue()
        self._recall = threading.Event()
        self._halt = threading.Event()
        self.lent = False
        self.lent_count = 0
        self._last: tuple[int, int] | None = None  # the last frame handed out: id, t_capture_ns
        self._t_got = 0  # when get() handed it out (monotonic ns)
        self._period_ns = 0.0  # moving averages (0: not known yet)
        self._grid_ns = 0.0  # when the last frame was due on the source's frame grid
        self._periods = 0
        self._busy_ns = 0.0
        self.thread = threading.Thread(target=self._run, name="edge-prefetch", daemon=True)
        self.thread.start()

    def lend(self) -> None:
        """The caller starts processing the frame ``get`` returned: the helper takes the next
        one, when it is expected before the caller is done."""
        if self.lent or self._last is None or not (self._period_ns and self._busy_ns):
            return  # not known yet (the first two frames)
        if self._last[1] + self._period_ns > self._t_got + LEND_MARGIN * self._busy_ns:
            return
        self.lent = True
        self.lent_count += 1
        self._recall.clear()
        self._lends.put(True)

    def ready(self) -> bool:
        """A frame is prepared and waiting: the caller is behind the camera."""
        return self.lent and not self._answers.empty()

    def get(self, timeout: float) -> Item | object | None:
        now = time.monotonic_ns()
        if self._t_got:  # the caller's time on the last frame
            self._busy_ns += (
                (now - self._t_got - self._busy_ns) * _EWMA
                if self._busy_ns
                else (now - self._t_got)
            )
            self._t_got = 0
        if self.lent:
            self._recall.set()
            try:
                item = self._answers.get(timeout=timeout)
            except queue.Empty:
                return None
            self.lent = False
            if isinstance(item, BaseException):
                raise item
            if item is _RELEASED:
                item = self._direct(timeout)
        else:
            item = self._direct(timeout)
        if isinstance(item, tuple):
            self._arrived(item[0])
        return item

    def _direct(self, timeout: float) -> Item | object | None:
        """The next frame from the capture thread; with ``keep_warm``, the pipeline rehearses
        the last frame just before the next one is due (when that is known and still ahead)."""
        if self.keep_warm and not self._rehearsed and self._last and self._period_ns:
            took = self._rehearse_ns or self._busy_ns  # before the first: a frame's time
            lead_ns = REHEARSAL_LEAD * took + REHEARSAL_MARGIN_NS
            wait_s = (self._grid_ns + self._period_ns - lead_ns - time.monotonic_ns()) / 1e9
            if wait_s > 0:
                item = super().get(min(wait_s, timeout))
                if item is not None or wait_s > timeout:
                    return item  # a frame (early), or the caller's timeout: asked again
                self._rehearse()
        return super().get(timeout)

    def _rehearse(self) -> None:
        t0 = time.perf_counter_ns()
        self.pipeline.rehearse()
        dt = time.perf_counter_ns() - t0
        self._rehearse_ns += (dt - self._rehearse_ns) * _EWMA if self._rehearse_ns else dt
        self._rehearsed = True
        self.rehearsals += 1

    def _arrived(self, frame: Frame) -> None:
        self._rehearsed = False
        last, self._last = self._last, (frame.id, frame.t_capture_ns)
        self._t_got = time.monotonic_ns()
        t = frame.t_capture_ns
        if last is None or frame.id <= last[0]:
            self._grid_ns = t
            return
        n = frame.id - last[0]
        dt = (t - last[1]) / n
        self._periods += 1  # a plain mean over the first samples, then a moving average
        self._period_ns += (dt - self._period_ns) * max(_EWMA, 1 / self._periods)
        # a paced source's frames arrive on a grid, late by a wake-up at times, never early:
        # an arrival before the grid moves it there, a late one moves it only a little
        due = self._grid_ns + n * self._period_ns
        self._grid_ns = t if t < due else due + (t - due) * _EWMA

    def _run(self) -> None:
        try:
            while self._lends.get() and not self._halt.is_set():  # asleep until lent
                self._answers.put(self._take())
        except BaseException as e:
            self._answers.put(e)

    def _take(self) -> Item | object:
        while not self._halt.is_set():
            frame = self.capture.get(timeout=LEND_SLICE_S)
            if frame is not None:
                return prepared(self.pipeline, frame)
            if self.capture.ended:
                return END
            if self._recall.is_set():
                break
        return _RELEASED

    def stop(self) -> list[int]:
        """Stop the helper; the id of a frame it took that was never handed over."""
        self._halt.set()
        self._lends.put(False)  # wakes it when it is not lent
        self.thread.join(timeout=5.0)
        unprocessed = []
        while True:
            try:
                item = self._answers.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                unprocessed.append(item[0].id)
        return unprocessed
