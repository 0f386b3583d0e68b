"""Where results go: JSONL lines, annotated frames/video, and the summary at the end.

JSONL (:class:`JsonlSink`): one complete line per frame, written with a single ``write`` call on
an ``O_APPEND`` descriptor, so a reader (``tail -f``) or a stop at any moment never sees half a
line::

    {"frame": 17, "index": 17, "source_index": 17, "t_capture_ns": ..., "t_result_ns": ...,
     "t_capture": "2025-..Z", "t_result": "2025-..Z", "latency_ms": 3.1,
     "tasks": {"defect": {"label": "scratch", "prob": 0.93, ...}, "mask": "not run"},
     "timings_ms": {"queue_wait": 0.1, "preprocess": 0.2, "trunk": 1.1, "head:defect": 0.3, ...}}

Events are lines too: ``{"event": "overrun", "frame_ids": [...]}`` (fifo policy, live source:
those parts were not inspected), ``{"event": "drop", "frame_ids": [...]}`` (latest policy),
``{"event": "gap", ...}`` (a live source stopped and was reopened), ``{"event": "unprocessed",
...}`` (frames taken from the capture queue when the run stopped). ``*_ns`` times are
``time.monotonic_ns``; the ISO times are UTC wall clock derived from them; ``latency_ms`` is
capture -> results ready (the summary's ``e2e`` runs to the end of the sinks), measured from the
sensor when the camera's clock maps onto the host's (``"latency_clock": "sensor"``), else from
the frame's arrival (``"arrival"``). Cameras and streams that stamp frames add ``"device":
{"t_device_ns", "clock", ...}`` (GenICam: the camera frame id, resent/missing packets and the
incomplete frames skipped before this one).

The annotated sink (:class:`AnnotatedSink`) is for people: each task's result as text, the mask
tinted with its contour; an .mp4/.avi/.mkv path writes a video, any other path a folder of PNGs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.core.errors import EdgeError
from edge.core.files import temp_prefix
from edge.runtime.outputs import LineFile, OutputError, write_failed
from edge.runtime.pipeline import NOT_RUN, FrameResult

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv")
SPACE_CHECK_EVERY = 64
"""The annotated video's disk is checked for free space every this many frames (OpenCV's
writer does not report write errors)."""


class Sink(Protocol):
    def write(self, result: FrameResult) -> None: ...

    def event(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class WallClock:
    """Monotonic ns -> UTC ISO text, through one offset measured at creation."""

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def iso(self, mono_ns: int) -> str:
        t = _dt.datetime.fromtimestamp((mono_ns + self.offset_ns) / 1e9, _dt.timezone.utc)
        return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def frame_record(result: FrameResult, clock: WallClock) -> dict[str, Any]:
    """The JSONL record of one frame (see the module doc)."""
    return {
        "frame": result.frame_id,
        "index": result.index,
        "source_index": result.source_index,
        "t_capture_ns": result.t_capture_ns,
        "t_result_ns": result.t_result_ns,
        "t_capture": clock.iso(result.t_capture_ns),
        "t_result": clock.iso(result.t_result_ns),
        "latency_ms": round(result.latency_ns / 1e6, 4),
        "latency_clock": result.latency_clock,
        **({"device": result.device} if result.device else {}),
        "tasks": {t: (NOT_RUN if r is None else r.to_json()) for t, r in result.results.items()},
        "timings_ms": result.timings_ms(),
    }


class JsonlSink:
    """Results as JSON lines appended to ``path`` (see :class:`~edge.runtime.outputs.LineFile`:
    whole lines, strict JSON, the run's ``header`` first, optional rotation)."""

    def __init__(
        self,
        path: str | Path,
        *,
        header: Mapping[str, Any] | None = None,
        rotate: tuple[str, int] | None = None,
        keep: int = 5,
    ) -> None:
        self.path = Path(path)
        self.clock = WallClock()
        self._file: LineFile | None = LineFile(self.path, header=header, rotate=rotate, keep=keep)
        self.lines = 0

    def write(self, result: FrameResult, extra: Mapping[str, Any] | None = None) -> None:
        record = frame_record(result, self.clock)
        if extra:
            record.update(extra)
        self._line(record)

    def event(self, event: Mapping[str, Any]) -> None:
        self._line(dict(event))

    def _line(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            raise EdgeError(f"results file '{self.path}' is already closed", stage="run")
        self._file.write(record)
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SinkWorker:
    """Runs submitted calls on one worker thread, in order, so JSON encoding, drawing and video
    encoding of frame k overlap the inference of frame k+1 (ONNX Runtime releases the GIL).
    ``submit`` blocks while ``maxsize`` calls wait (backpressure, bounded memory). An error in
    a call stops the later calls and is raised by the next ``submit`` or by ``close``.
    :attr:`idle`: every call submitted so far has returned (the submitting thread may then make
    the next call itself, in order, without a thread wake-up)."""

    def __init__(self, maxsize: int = 16, name: str = "edge-sinks") -> None:
        self._q: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(
            maxsize
        )
        self.error: BaseException | None = None
        self._submitted = self._done = 0  # _done: the worker's; _submitted under _count_lock
        self._count_lock = threading.Lock()  # a station submits from two threads
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            if self.error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as e:
                    self.error = e
            self._done += 1

    @property
    def idle(self) -> bool:
        """No call is waiting or running, and none failed (the submitting thread's view)."""
        return self._done == self._submitted and self.error is None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.error is not None:
            raise self.error
        with self._count_lock:
            self._submitted += 1
        self._q.put((fn, args))

    def close(self) -> None:
        """Run everything submitted so far, stop the thread, re-raise a call's error."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error


# -- annotation -----------------------------------------------------------------------------
_TINT = (0, 0, 255)


def annotate(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of the frame with each task's result as text and masks tinted with contours."""
    out = image.copy()
    h, w = out.shape[:2]
    for r in result.results.values():
        if r is not None and r.mask is not None:
            m = cv2.resize(r.mask, (w, h), interpolation=cv2.INTER_NEAREST) > 0
            if m.any():
                out[m] = (0.55 * out[m] + 0.45 * np.array(_TINT)).astype(np.uint8)
                contours, _ = cv2.findContours(
                    m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
                )
                cv2.drawContours(out, contours, -1, _TINT, max(1, h // 240))
    scale = max(0.35, h / 600)
    thick = max(1, round(scale * 1.5))
    line_h = int(22 * scale) + 4
    lines = [f"#{result.frame_id}"] + [
        f"{t}: {NOT_RUN if r is None else r.brief()}" for t, r in result.results.items()
    ]
    for i, text in enumerate(lines):
        y = 4 + line_h * (i + 1)
        colour = (200, 200, 200) if text.endswith(NOT_RUN) else (255, 255, 255)
        cv2.putText(
            out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA
        )
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out


class AnnotatedSink:
    """Annotated frames as a video (``.mp4``/``.avi``/``.mkv``, renamed into place on close) or
    as PNG files ``frame_<id>.png`` in a folder (each written to a temporary name first).

    OpenCV's video writer reports no write errors: the free space is checked every
    ``SPACE_CHECK_EVERY`` frames, and on close the file is read back; a video that is not
    complete raises :class:`~edge.runtime.outputs.OutputError` and is not renamed into place.
    """

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.video = self.path.suffix.lower() in VIDEO_SUFFIXES
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        parent = self.path.parent if self.video else self.path
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_failed("the --video folder", parent, e) from e
        self._tmp = self.path.with_name(f"{temp_prefix(self.path.name)}v{self.path.suffix}")

    def write(self, result: FrameResult) -> None:
        if result.image is None:
            return
        img = annotate(result.image, result)
        if not self.video:
            name = self.path / f"frame_{result.frame_id:06d}.png"
            tmp = name.with_name(f"{temp_prefix(name.name)}f.png")
            if not cv2.imwrite(str(tmp), img):
                tmp.unlink(missing_ok=True)
                raise OutputError(
                    f"cannot write annotated frame '{name}'{_space_note(self.path)}",
                    reason=_space_reason(self.path),
                )
            try:
                os.replace(tmp, name)
            except OSError as e:
                raise write_failed("annotated frame", name, e) from e
        else:
            if self._writer is None:
                self._size = (img.shape[1], img.shape[0])
                fourcc = cv2.VideoWriter.fourcc(*("mp4v" if self.path.suffix == ".mp4" else "MJPG"))
                self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, self._size)
                if not self._writer.isOpened():
                    self._writer = None
                    self._tmp.unlink(missing_ok=True)
                    raise OutputError(
                        f"OpenCV cannot write video '{self.path}'{_space_note(self.path.parent)}"
                        "; give --video a folder to get PNG frames instead",
                        reason=_space_reason(self.path.parent),
                    )
            if (img.shape[1], img.shape[0]) != self._size:
                img = cv2.resize(img, self._size)
            self._writer.write(img)
            check = self.frames % SPACE_CHECK_EVERY == SPACE_CHECK_EVERY - 1
            if check and _space_reason(self.path.parent) == "disk full":
                raise OutputError(
                    f"annotated video '{self.path}': the disk is full after {self.frames} "
                    "frames; free space or write the video elsewhere",
                    reason="disk full",
                )
        self.frames += 1

    def event(self, event: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        """Finish the video; check it holds every frame, then rename it into place."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        readable = _video_frames(self._tmp)
        if readable < self.frames:
            self._tmp.unlink(missing_ok=True)
            reason = _space_reason(self.path.parent)
            raise OutputError(
                f"annotated video '{self.path}' was not written completely ({self.frames} frames "
                f"given, {readable} readable back){_space_note(self.path.parent)}; nothing was "
                "written to that path",
                reason=reason,
            )
        try:
            os.replace(self._tmp, self.path)
        except OSError as e:
            raise write_failed("annotated video", self.path, e) from e


def _video_frames(path: Path) -> int:
    """How many frames OpenCV can read back from a video file (0 when it cannot open it)."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n > 0:
            return n
        while cap.read()[0]:  # no count in the container: read them (a failed file has few)
            n += 1
        return n
    finally:
        cap.release()


def _space_reason(folder: Path) -> str:
    """ "disk full", "read-only filesystem" or "write failed" for the disk holding ``folder``."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return "write failed"
    if st.f_flag & os.ST_RDONLY:
        return "read-only filesystem"
    return "disk full" if st.f_bavail * st.f_frsize < (1 << 16) else "write failed"


def _space_note(folder: Path) -> str:
    reason = _space_reason(folder)
    return "" if reason == "write failed" else f" ({reason})"


# -- summary --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSummary:
    """What a run did: frames, per-task results, capture accounting, per-stage timings."""

    frames: int
    duration_s: float
    fps: float
    stopped_by: str
    """"frames", "duration", "end" (the source ended), "signal" (SIGINT/SIGTERM/SIGHUP),
    "disk full", "read-only filesystem" (an output could not be written) or "error"."""
    tasks: dict[str, dict[str, Any]]
    capture: dict[str, Any]
    stages: dict[str, dict[str, float]]
    run: dict[str, Any] = field(default_factory=dict)
    """Source, backend, mode, schedule, policy and output paths."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """A few lines for people: frames, fps, per-task counts, drops, main stage times."""
        c = self.capture
        lines = [
            f"{self.frames} frames in {self.duration_s:.1f} s ({self.fps:.1f} fps), "
            f"stopped by {self.stopped_by}; dropped {c.get('dropped', 0)}, overruns "
            f"{c.get('overruns', 0)}, gaps {len(c.get('gaps', []))}"
        ]
        schedule = self.run.get("schedule", {})
        for task, d in self.tasks.items():
            detail = {k: v for k, v in d.items() if k not in ("runs", "kind")}
            rule = f" ({schedule[task]})" if task in schedule else ""
            lines.append(f"  {task}{rule}: ran on {d['runs']} frames; {json.dumps(detail)}")
        for warning in self.run.get("warnings", []):
            lines.append(f"  warning: {warning}")
        for stage, s in self.stages.items():
            lines.append(
                f"  {stage:>14}: mean {s['mean_ms']:.3f} ms  p50 {s['p50_ms']:.3f}  "
                f"p99 {s['p99_ms']:.3f}  (n={int(s['count'])})"
            )
        return "\n".join(lines)


class TaskTally:
    """Per-task run counts and result statistics, for the summary."""

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = list(tasks)
        self.data: dict[str, dict[str, Any]] = {t: {"runs": 0} for t in tasks}

    def add(self, result: FrameResult) -> None:
        for t, r in result.results.items():
            if r is None:
                continue
            d = self.data[t]
            d["runs"] += 1
            d.setdefault("kind", r.type)
            if r.error is not None:
                d["errors"] = d.get("errors", 0) + 1
            elif r.type == "softmax_argmax":
                labels = d.setdefault("labels", {})
                labels[r.data["label"]] = labels.get(r.data["label"], 0) + 1
            elif r.type == "sigmoid_threshold":
                on = d.setdefault("on", {})
                for lab in r.data["on"]:
                    on[lab] = on.get(lab, 0) + 1
            elif r.type == "affine":
                values = r.data["values"] if "values" in r.data else {"": r.data["value"]}
                acc = d.setdefault("_acc", {})
                for name, v in values.items():
                    lo_hi_sum = acc.setdefault(name, [v, v, 0.0])
                    lo_hi_sum[0], lo_hi_sum[1] = min(lo_hi_sum[0], v), max(lo_hi_sum[1], v)
                    lo_hi_sum[2] += v
                d["unit"] = r.data["unit"]
            else:
                d["frames_with_pixels"] = d.get("frames_with_pixels", 0) + (r.data["pixels"] > 0)
                d["sum_fraction"] = d.get("sum_fraction", 0.0) + r.data["fraction"]

    def result(self) -> dict[str, dict[str, Any]]:
        out = {}
        for t, d in self.data.items():
            d = dict(d)
            n = d["runs"] - d.get("errors", 0)
            for name, (lo, hi, total) in d.pop("_acc", {}).items():
                stats = {"mean": round(total / n, 4), "min": round(lo, 4), "max": round(hi, 4)}
                if name:
                    d.setdefault("values", {})[name] = stats
                else:
                    d.update(stats)
            if "sum_fraction" in d:
                d["mean_fraction"] = round(d.pop("sum_fraction") / n, 6)
            out[t] = d
        return out
