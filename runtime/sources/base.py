"""What every frame source shares: the :class:`Frame` it delivers, its options and the base class.

:class:`Source` checks state in its public methods (``open``/``read``/``close``/``describe``,
``with``) and leaves the work to ``_*_impl`` hooks that return a :class:`RawFrame`; ``read``
turns that into a :class:`Frame` with the next id and the arrival time, through
:func:`as_bgr`. The concrete sources are in :mod:`edge.runtime.sources`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from edge.core.errors import ConfigError, EdgeError, SourceError


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from a source.

    ``id`` counts from 0 per source and keeps counting across reopens, so gaps in delivered ids
    are exactly the frames dropped/overrun by the capture policy. ``image`` is HxWx3 uint8 BGR
    and may be read-only (the synthetic line shares its render): copy it before drawing on it.
    ``t_capture_ns`` is ``time.monotonic_ns()`` when the frame reached the app; ``source_index``
    is the file frame number / folder position / line index (None for cameras); ``meta`` holds
    source extras (``path``, ``pass``, ``line_frame`` with the synthetic ground truth, ``genicam``
    with the camera's frame id and packet counters).

    Camera time, where the source gives one: ``t_device_ns`` is the device/stream timestamp in
    the source's own clock, named by ``device_clock`` (see :data:`CLOCKS`); ``t_sensor_ns`` is
    that instant on the host's ``time.monotonic_ns`` clock when the device clock maps onto it
    (None otherwise). Latency then runs from ``t_sensor_ns`` ("sensor"), else from
    ``t_capture_ns`` ("arrival"): :attr:`latency_start_ns`, :attr:`latency_clock`.
    """

    id: int
    image: np.ndarray
    t_capture_ns: int
    source_index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    t_queued_ns: int | None = None  # set by CaptureThread when the frame enters its buffer
    t_device_ns: int | None = None
    device_clock: str | None = None
    t_sensor_ns: int | None = None

    @property
    def t_buffered_ns(self) -> int:
        """When the frame entered the capture thread's buffer (its arrival, when it never went
        through one): where its queue wait starts."""
        return self.t_queued_ns or self.t_capture_ns

    @property
    def latency_clock(self) -> str:
        """ "sensor" when the camera time maps onto the host clock, else "arrival"."""
        return "arrival" if self.t_sensor_ns is None else "sensor"

    @property
    def latency_start_ns(self) -> int:
        """Where latency starts, on the host's monotonic clock."""
        return self.t_capture_ns if self.t_sensor_ns is None else self.t_sensor_ns


CLOCKS = {
    "genicam": "the camera's timestamp counter (ns on GigE Vision 2 / USB3 Vision); maps onto "
    "the host clock only when it agrees with the host's wall clock within 1 s (PTP-synchronised "
    "cameras, the Aravis fake camera)",
    "v4l2": "the V4L2 buffer timestamp (CLOCK_MONOTONIC on Linux): maps onto the host clock",
    "stream": "the file's / stream's presentation time (OpenCV CAP_PROP_POS_MSEC): no mapping",
}
"""``Frame.device_clock`` values and what they mean."""
MAX_SENSOR_AGE_NS = 10_000_000_000
"""A device time mapped onto the host clock must lie within this much before the arrival."""


@dataclass(frozen=True)
class SourceOptions:
    """Requests for a source. Camera settings are requests: ``describe()`` reports actuals."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None  # V4L2 pixel format request, e.g. "MJPG" for high-res USB cams
    loop: bool = False  # video files: start again at the end
    realtime: bool = False  # video files / folders: pace reads to the fps
    reconnect: bool = True  # live sources: reopen with backoff when they stop delivering
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    read_timeout_s: float = 5.0  # live sources: no frame for this long counts as a failure
    rtsp_latency_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"source option {name}={v!r}: expected a positive integer")
        checks = {
            "fps": self.fps is None or self.fps >= 0,
            "backoff_initial_s": self.backoff_initial_s > 0,
            "backoff_max_s": self.backoff_max_s >= self.backoff_initial_s,
            "read_timeout_s": self.read_timeout_s > 0,
            "rtsp_latency_ms": self.rtsp_latency_ms >= 0,
            "fourcc": self.fourcc is None or len(self.fourcc) == 4,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"source option {name}={getattr(self, name)!r} is out of range: expected "
                    "fps >= 0, 0 < backoff_initial_s <= backoff_max_s, read_timeout_s > 0, "
                    "rtsp_latency_ms >= 0, fourcc of 4 characters"
                )


@dataclass(frozen=True)
class RawFrame:
    """What a ``_read_impl`` hook returns; :meth:`Source.read` adds the id and timestamp."""

    image: np.ndarray
    source_index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    t_device_ns: int | None = None
    device_clock: str | None = None
    t_sensor_ns: int | None = None
    """The device time on the host's monotonic clock, when the source can map it."""


def as_bgr(image: np.ndarray, *, where: str) -> np.ndarray:
    """Return ``image`` as contiguous HxWx3 uint8 BGR (gray and BGRA/BGRx are converted)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = getattr(image, "dtype", type(image).__name__)
        raise SourceError(f"{where} delivered {got} data: expected a uint8 image")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise SourceError(f"{where} delivered an image of shape {image.shape}: expected HxWx3 BGR")


class Source:
    """Base class. Public methods check state; subclasses implement the ``_*_impl`` hooks."""

    kind = "source"
    live = False  # class default for ``is_live``

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.uri = uri
        self.options = options if options is not None else SourceOptions()
        self._is_open = False
        self._ended = False
        self._next_id = 0
        self._frames_read = 0

    # -- public API ---------------------------------------------------------------------------
    @property
    def is_live(self) -> bool:
        """True for cameras/streams (cannot be paused), False for files, folders, synthetic."""
        return self.live

    @property
    def ended(self) -> bool:
        """True once a finite source is exhausted (live sources never end by themselves)."""
        return self._ended

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def nominal_fps(self) -> float | None:
        """The frame rate the source runs at, when known (used to estimate frames missed)."""
        return self.options.fps or None

    @property
    def triggered(self) -> bool:
        """True when frames come only on a trigger (then silence is normal, not a failure, and
        the run's default policy is ``fifo`` so every triggered part is processed)."""
        return False

    @property
    def stall_timeout_s(self) -> float | None:
        """No frame for this long means the source failed (None: the source detects it)."""
        return self.options.read_timeout_s if self.is_live and not self.triggered else None

    @property
    def software_trigger(self) -> bool:
        """True when :meth:`fire_trigger` works (``genicam://...?trigger=software``)."""
        return False

    def fire_trigger(self) -> None:
        """Fire one software trigger (an MQTT/HTTP handler or ``--trigger-every`` calls it)."""
        raise SourceError(
            f"{self._name()} has no software trigger: use genicam://...?trigger=software"
        )

    def open(self) -> Source:
        """Open (or reopen after ``close()``); raises :class:`SourceError` if it cannot."""
        if self._is_open:
            raise SourceError(f"{self._name()} is already open: close() it before open()")
        try:
            self._open_impl()
        except BaseException as e:
            with contextlib.suppress(Exception):
                self._close_impl()
            if isinstance(e, EdgeError) or not isinstance(e, Exception):
                raise
            raise SourceError(f"{self._name()} could not be opened: {e}") from e
        self._is_open = True
        self._ended = False
        return self

    def read(self) -> Frame | None:
        """The next frame, or None (no frame this time, or ``ended``). Ids continue on reopen."""
        if not self._is_open:
            raise SourceError(f"{self._name()} is not open: call open() (or use `with`) first")
        if self._ended:
            return None
        raw = self._read_impl()
        if raw is None:
            return None
        t_ns = time.monotonic_ns()
        sensor = raw.t_sensor_ns
        if sensor is not None and not 0 <= t_ns - sensor <= MAX_SENSOR_AGE_NS:
            sensor = None  # not plausible on this clock: latency falls back to the arrival
        image = raw.image
        if not (  # the common case checked inline: naming the source per frame costs a regex
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.flags.c_contiguous
        ):
            image = as_bgr(image, where=self._name())
        frame = Frame(
            id=self._next_id,
            image=image,
            t_capture_ns=t_ns,
            source_index=raw.source_index,
            meta=raw.meta,
            t_device_ns=raw.t_device_ns,
            device_clock=raw.device_clock,
            t_sensor_ns=sensor,
        )
        self._next_id += 1
        self._frames_read += 1
        return frame

    def close(self) -> None:
        """Release the device/file. Safe to call twice, or on a source that never opened."""
        if self._is_open:
            self._is_open = False
            self._close_impl()

    def describe(self) -> dict[str, Any]:
        """What this source is and how it is configured (credentials redacted)."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "uri": redact_uri(self.uri),
            "live": self.is_live,
            "open": self._is_open,
            "ended": self._ended,
            "frames_read": self._frames_read,
            "nominal_fps": self.nominal_fps,
        }
        d.update(self._describe_impl())
        return d

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_uri(self.uri)!r}>"

    # -- hooks --------------------------------------------------------------------------------
    def _open_impl(self) -> None:
        raise NotImplementedError

    def _read_impl(self) -> RawFrame | None:
        """The next frame, or None for "nothing this time"; call ``_mark_ended()`` at the end."""
        raise NotImplementedError

    def _close_impl(self) -> None:
        raise NotImplementedError

    def _describe_impl(self) -> dict[str, Any]:
        return {}

    def _mark_ended(self) -> None:
        self._ended = True

    def _name(self) -> str:
        return f"{self.kind} source {redact_uri(self.uri)!r}"


def device_facts(frame: Frame) -> dict[str, Any] | None:
    """The camera facts of a frame for its results line (None when the source has none):
    ``t_device_ns``, ``clock`` and the source's per-frame counters (``meta["genicam"]``)."""
    extra = frame.meta.get("genicam")
    if frame.t_device_ns is None and not extra:
        return None
    return {"t_device_ns": frame.t_device_ns, "clock": frame.device_clock, **(extra or {})}


class TriggerTimer:
    """Fires ``source.fire_trigger()`` every ``period_s`` on a daemon thread while in ``with``.

    A failed trigger (camera gone) is counted, not raised: the capture thread reports the gap.
    """

    def __init__(self, source: Source, period_s: float) -> None:
        if not period_s > 0:
            raise ConfigError(f"trigger period {period_s!r} s: must be > 0")
        self.source, self.period_s = source, period_s
        self.fired = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-trigger", daemon=True)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t += self.period_s
            if not self.source.is_open:
                continue
            try:
                self.source.fire_trigger()
                self.fired += 1
            except Exception:
                self.failed += 1

    def __enter__(self) -> TriggerTimer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def redact_uri(uri: str) -> str:
    """Hide ``user:password@`` in URLs (also inside pipeline strings)."""
    return re.sub(r"(\w+://)[^/@\s\"]+@", r"\1***@", uri)
