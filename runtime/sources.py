"""Frame sources: video files, image folders, the synthetic demo line and live cameras.

A :class:`Source` is built unopened (normally by :func:`edge.runtime.source_uri.open_source`,
which parses a source URI and lists the accepted forms); ``open()``/``read()``/``close()`` (or
``with``) then give :class:`Frame` objects, each with an id (consecutive from 0, continuing across
reopens) and the host time it arrived (``time.monotonic_ns()``). Classes: :class:`VideoFileSource`,
:class:`ImageFolderSource`, :class:`SyntheticSource` (the :mod:`edge.demo_line`) and
:class:`OpenCVCaptureSource` (V4L2, FFmpeg or GStreamer cameras and streams).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from edge.errors import ConfigError, EdgeError, SourceError


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from a source.

    ``id`` counts from 0 per source and keeps counting across reopens, so gaps in delivered ids
    are exactly the frames dropped/overrun by the capture policy. ``image`` is HxWx3 uint8 BGR
    and may be read-only (the synthetic line shares its render): copy it before drawing on it.
    ``t_capture_ns`` is ``time.monotonic_ns()`` when the frame reached the app; ``source_index``
    is the file frame number / folder position / line index (None for cameras); ``meta`` holds
    source extras (``path``, ``pass``, ``line_frame`` with the synthetic ground truth).
    """

    id: int
    image: np.ndarray
    t_capture_ns: int
    source_index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    t_queued_ns: int | None = None  # set by CaptureThread when the frame enters its buffer


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


class _Pacer:
    """Sleeps so that successive ``wait()`` calls are 1/fps apart (no catch-up bursts)."""

    def __init__(self, fps: float | None) -> None:
        self.period_ns = int(1e9 / fps) if fps else 0
        self._next_ns: int | None = None

    def wait(self) -> None:
        if not self.period_ns:
            return
        now = time.monotonic_ns()
        if self._next_ns is None or now - self._next_ns > self.period_ns:
            self._next_ns = now  # first frame, or fell behind by more than a period: resync
        elif self._next_ns > now:
            time.sleep((self._next_ns - now) / 1e9)
        self._next_ns += self.period_ns


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
        frame = Frame(
            id=self._next_id,
            image=as_bgr(raw.image, where=self._name()),
            t_capture_ns=t_ns,
            source_index=raw.source_index,
            meta=raw.meta,
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


class VideoFileSource(Source):
    """A video file read with ``cv2.VideoCapture``; ``source_index`` is the frame number."""

    kind = "video"

    def __init__(self, uri: str, path: Path, options: SourceOptions | None = None) -> None:
        super().__init__(uri, options)
        self.path = path
        self._cap: Any = None
        self._index = 0
        self._pass = 0
        self._file_fps: float | None = None
        self._pacer = _Pacer(None)

    @property
    def nominal_fps(self) -> float | None:
        return self.options.fps or self._file_fps

    def _open_impl(self) -> None:
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(
                f"video file {self.path} could not be decoded by OpenCV "
                f"(backends: FFmpeg {_build_flag('FFMPEG')}); check the file plays, or convert "
                "it, e.g. ffmpeg -i in.ext -c:v libx264 out.mp4"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._file_fps = fps if fps > 0 and np.isfinite(fps) else None
        self._index = 0
        self._pacer = _Pacer(self.nominal_fps if self.options.realtime else None)

    def _read_impl(self) -> RawFrame | None:
        ok, image = self._cap.read()
        if not ok and self.options.loop and self._index > 0:
            self._cap.release()
            self._cap = cv2.VideoCapture(str(self.path))
            self._index, self._pass = 0, self._pass + 1
            ok, image = self._cap.read()
        if not ok:
            self._mark_ended()
            return None
        self._pacer.wait()
        self._index += 1
        meta = {"pass": self._pass} if self.options.loop else {}
        return RawFrame(image, self._index - 1, meta)

    def _close_impl(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _describe_impl(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "loop": self.options.loop,
            "realtime": self.options.realtime,
        }


class ImageFolderSource(Source):
    """Images in a folder, natural sort order; ``source_index`` is the position in that list."""

    kind = "folder"

    def __init__(self, uri: str, files: list[Path], options: SourceOptions | None = None) -> None:
        super().__init__(uri, options)
        self.files = files
        self._index = 0
        self._pacer = _Pacer(None)

    def _open_impl(self) -> None:
        self._index = 0
        self._pacer = _Pacer(self.options.fps if self.options.realtime else None)

    def _read_impl(self) -> RawFrame | None:
        if self._index >= len(self.files):
            self._mark_ended()
            return None
        path = self.files[self._index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(
                f"image {path} in folder source {self.uri!r} cannot be decoded: "
                "remove or replace the file (expected PNG, JPEG or BMP)"
            )
        self._pacer.wait()
        self._index += 1
        return RawFrame(image, self._index - 1, {"path": str(path)})

    def _close_impl(self) -> None:
        pass

    def _describe_impl(self) -> dict[str, Any]:
        return {"files": len(self.files), "first": str(self.files[0]) if self.files else None}


class SyntheticSource(Source):
    """The demo inspection line (:mod:`edge.demo_line`); ``source_index`` is the line index."""

    kind = "synthetic"

    def __init__(
        self,
        uri: str,
        *,
        frames: int | None = None,
        fps: float = 0.0,
        config: Any = None,
        live: bool = False,
        options: SourceOptions | None = None,
    ) -> None:
        from edge.demo_line import LineConfig

        super().__init__(uri, options)
        self.frames, self.fps, self.live = frames, fps, live
        self.config = config if config is not None else LineConfig()
        self._index = 0
        self._pacer = _Pacer(None)
        self._render: Any = None

    @property
    def nominal_fps(self) -> float | None:
        return self.fps or None

    def _open_impl(self) -> None:
        from edge.demo_line import render_frame

        self._render = render_frame
        self._pacer = _Pacer(self.fps)

    def _read_impl(self) -> RawFrame | None:
        # The index keeps counting across close()/open(): a reopened line continues where it was.
        if self.frames is not None and self._index >= self.frames:
            self._mark_ended()
            return None
        self._pacer.wait()
        line_frame = self._render(self._index, self.config)
        self._index += 1
        return RawFrame(line_frame.image, self._index - 1, {"line_frame": line_frame})

    def _close_impl(self) -> None:
        self._render = None

    def _describe_impl(self) -> dict[str, Any]:
        c = self.config
        return {"frames": self.frames, "fps": self.fps, "width": c.width, "height": c.height,
                "seed": c.seed}  # fmt: skip


class OpenCVCaptureSource(Source):
    """A live camera/stream through ``cv2.VideoCapture`` (V4L2, FFmpeg or GStreamer backend)."""

    live = True

    def __init__(
        self,
        uri: str,
        *,
        kind: str,
        target: int | str,
        api: int,
        backend: str,
        params: tuple[int, ...] = (),
        env: dict[str, str] | None = None,
        hint: str = "",
        options: SourceOptions | None = None,
    ) -> None:
        super().__init__(uri, options)
        self.kind, self.target, self.api, self.backend = kind, target, api, backend
        self.params, self.env, self.hint = params, dict(env or {}), hint
        self._cap: Any = None
        self._actual: dict[str, Any] = {}

    @property
    def nominal_fps(self) -> float | None:
        return self._actual.get("fps") or self.options.fps or None

    def _open_impl(self) -> None:
        for k, v in self.env.items():
            os.environ.setdefault(k, v)  # OpenCV reads these at open time; the user's value wins
        if self.params:
            try:
                self._cap = cv2.VideoCapture(self.target, self.api, list(self.params))
            except TypeError:  # OpenCV < 4.5.2: no params argument
                self._cap = cv2.VideoCapture(self.target, self.api)
        else:
            self._cap = cv2.VideoCapture(self.target, self.api)
        if not self._cap.isOpened():
            raise SourceError(
                f"{self._name()} could not be opened with OpenCV's {self.backend} backend. "
                f"{self.hint}"
            )
        if self.kind in ("usb", "v4l2"):
            o = self.options
            if o.fourcc:
                self._cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*o.fourcc))
            for prop, value in (
                (cv2.CAP_PROP_FRAME_WIDTH, o.width),
                (cv2.CAP_PROP_FRAME_HEIGHT, o.height),
                (cv2.CAP_PROP_FPS, o.fps),
            ):
                if value:
                    self._cap.set(prop, float(value))
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ignored by backends that do not support it
        w, h, fps = (self._cap.get(p) for p in (3, 4, 5))  # CAP_PROP_FRAME_WIDTH/HEIGHT/FPS
        self._actual = {"width": int(w) or None, "height": int(h) or None, "fps": fps or None}

    def _read_impl(self) -> RawFrame | None:
        ok, image = self._cap.read()
        return RawFrame(image) if ok and image is not None else None

    def _close_impl(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _describe_impl(self) -> dict[str, Any]:
        d: dict[str, Any] = {"backend": self.backend, "actual": dict(self._actual)}
        if isinstance(self.target, str) and self.api == cv2.CAP_GSTREAMER:
            d["pipeline"] = redact_uri(self.target)
        else:
            d["device"] = redact_uri(self.target) if isinstance(self.target, str) else self.target
        if self.env:
            d["env"] = {k: os.environ.get(k, v) for k, v in self.env.items()}
        return d


# -- helpers ---------------------------------------------------------------------------------------


def redact_uri(uri: str) -> str:
    """Hide ``user:password@`` in URLs (also inside pipeline strings)."""
    return re.sub(r"(\w+://)[^/@\s\"]+@", r"\1***@", uri)


def _build_flag(name: str) -> str:
    m = re.search(rf"^\s*{name}:\s*(\S*)", cv2.getBuildInformation(), re.M)
    return m.group(1) if m else "unknown"


def open_source(
    uri: str, *, options: SourceOptions | None = None, gstreamer: bool | None = None
) -> Source:
    """Build the (unopened) source for ``uri``: :func:`edge.runtime.source_uri.open_source`."""
    from edge.runtime.source_uri import open_source as open_uri  # source_uri imports this module

    return open_uri(uri, options=options, gstreamer=gstreamer)
