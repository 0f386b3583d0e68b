"""Frame sources: video files, image folders, the synthetic demo line and live cameras.

A :class:`Source` is built unopened (normally by :func:`edge.runtime.sources.uri.open_source`,
which parses a source URI and lists the accepted forms); ``open()``/``read()``/``close()`` (or
``with``) then give :class:`Frame` objects, each with an id (consecutive from 0, continuing across
reopens) and the host time it arrived (``time.monotonic_ns()``). Classes: :class:`VideoFileSource`,
:class:`ImageFolderSource`, :class:`SyntheticSource` (the :mod:`edge.data.demo_line`) and
:class:`OpenCVCaptureSource` (V4L2, FFmpeg or GStreamer cameras and streams). What they share
(:class:`Frame`, :class:`SourceOptions`, :class:`RawFrame`, :class:`Source`, :func:`as_bgr`,
:func:`redact_uri`) is in :mod:`edge.runtime.sources.base`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.core.errors import SourceError, SourceSettingError
from edge.data.demo_line import LineConfig, render_frame
from edge.runtime.sources.base import RawFrame, Source, SourceOptions, redact_uri


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
        self.declared_frames: int | None = None
        """The frame count the container declares (None when it declares none)."""
        self.truncated: dict[str, int] | None = None
        """{"declared", "read"} once the file ended before its declared frame count."""

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
        count = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.declared_frames = int(count) if count > 0 and np.isfinite(count) else None
        self.truncated = None
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
            declared = self.declared_frames
            if self._pass == 0 and declared is not None and self._index < declared:
                # the container promised more frames: the file is truncated or damaged
                self.truncated = {"declared": declared, "read": self._index}
            self._mark_ended()
            return None
        self._pacer.wait()
        self._index += 1
        meta = {"pass": self._pass} if self.options.loop else {}
        return RawFrame(image, self._index - 1, meta, *_stream_time(self._cap, "stream"))

    def _close_impl(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _describe_impl(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": str(self.path),
            "loop": self.options.loop,
            "realtime": self.options.realtime,
        }
        if self.truncated:
            d["truncated"] = self.truncated
        return d


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
        meta: dict[str, Any] = {"path": str(path)}
        damage = truncated_image(path)
        if damage:
            meta["warning"] = f"{path.name}: {damage}; the decoded image is incomplete"
        return RawFrame(image, self._index - 1, meta)

    def _close_impl(self) -> None:
        pass

    def _describe_impl(self) -> dict[str, Any]:
        return {"files": len(self.files), "first": str(self.files[0]) if self.files else None}


_IMAGE_ENDS = {
    ".jpg": (b"\xff\xd9", "truncated JPEG (no end-of-image marker)"),
    ".jpeg": (b"\xff\xd9", "truncated JPEG (no end-of-image marker)"),
    ".png": (b"IEND\xaeB`\x82", "truncated PNG (no IEND chunk)"),
}


def truncated_image(path: Path) -> str | None:
    """Why an image file is cut short (OpenCV decodes such files with grey or missing rows and
    only a message on stderr), or None. Checks the format's end marker; trailing zero padding
    some cameras add is allowed."""
    end = _IMAGE_ENDS.get(path.suffix.lower())
    if end is None:
        return None
    marker, why = end
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            tail = f.read().rstrip(b"\0")
    except OSError:
        return None
    return None if tail.endswith(marker) else why


class SyntheticSource(Source):
    """The demo inspection line (:mod:`edge.data.demo_line`); ``source_index`` is the line index."""

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
        return {
            "frames": self.frames,
            "fps": self.fps,
            "width": c.width,
            "height": c.height,
            "seed": c.seed,
        }


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
        if self.kind in ("usb", "v4l2"):
            self._actual["fourcc"] = fourcc_text(self._cap.get(cv2.CAP_PROP_FOURCC))
            self._check_honoured()

    def _check_honoured(self) -> None:
        """A setting the camera did not take is an error: name what it runs at instead."""
        o, a = self.options, self._actual
        wrong = [
            f"{name}={want} (the camera runs at {a.get(name)})"
            for name, want, ok in (
                ("width", o.width, a["width"] == o.width),
                ("height", o.height, a["height"] == o.height),
                ("fps", o.fps, o.fps and a["fps"] and abs(a["fps"] - o.fps) <= 0.01 * o.fps),
                ("fourcc", o.fourcc, a["fourcc"] == o.fourcc),
            )
            if want and not ok
        ]
        if wrong:
            raise SourceSettingError(
                f"{self._name()} did not honour {', '.join(wrong)}. List what it supports with "
                "v4l2-ctl --list-formats-ext -d DEVICE"
            )

    def _read_impl(self) -> RawFrame | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return RawFrame(image, None, {}, *_stream_time(self._cap, self._clock))

    @property
    def _clock(self) -> str:
        return "v4l2" if self.api == cv2.CAP_V4L2 else "stream"

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


def fourcc_text(value: float) -> str | None:
    """OpenCV's CAP_PROP_FOURCC number -> its 4 characters (None when unset)."""
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code else None


def _stream_time(cap: Any, clock: str) -> tuple[int | None, str | None, int | None]:
    """(device ns, clock, the same instant on the host's monotonic clock or None) of the frame
    just read: OpenCV's CAP_PROP_POS_MSEC, the V4L2 buffer time (CLOCK_MONOTONIC) on V4L2."""
    ms = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
    if not (ms > 0 and np.isfinite(ms)):
        return None, None, None
    ns = int(ms * 1e6)
    return ns, clock, ns if clock == "v4l2" else None


def _build_flag(name: str) -> str:
    m = re.search(rf"^\s*{name}:\s*(\S*)", cv2.getBuildInformation(), re.M)
    return m.group(1) if m else "unknown"
