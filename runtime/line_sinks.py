"""The line outputs of one run behind the runtime's :class:`~edge.runtime.sinks.Sink` interface:
:class:`LineSink` takes each frame and event off the caller in O(1) and, on its own thread,
builds the compact record once and feeds each :class:`~edge.runtime.line.LineOutput`: MQTT,
OPC UA and the metrics (whichever are on; another output implements the same four members).

``open_line_sink(cfg, ...)`` checks every option and starts the servers (a bad flag or a busy
port fails here, before the run opens any output); None when no line output is asked for.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge.runtime.decode import Decoder
from edge.runtime.line import LineOutput, LineOutputsConfig, Recorder, reject_rule, run_header
from edge.runtime.metrics_http import MetricsOut
from edge.runtime.opcua_station import OpcuaStation
from edge.runtime.pipeline import FrameResult
from edge.runtime.publish_mqtt import MqttPublisher, parse_mqtt_url
from edge.runtime.sources.base import Source

MAX_BACKLOG = 10_000
"""Frames waiting for the line thread before new ones are counted as ``backlog_dropped``."""


class LineSink:
    """A :class:`Sink`: ``write``/``event`` queue, the ``edge-line`` thread builds each frame's
    record once and feeds every :class:`~edge.runtime.line.LineOutput` in turn."""

    def __init__(self, recorder: Recorder, outputs: Sequence[LineOutput]) -> None:
        self.recorder, self.outputs = recorder, list(outputs)
        self.counters = {"Frames": 0, "Rejects": 0, "Drops": 0, "Overruns": 0, "Gaps": 0}
        self.backlog_dropped = 0
        self._q: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._queued = self._done = 0
        self.errors: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="edge-line", daemon=True)
        self._thread.start()

    def write(self, result: FrameResult) -> None:
        if len(self._q) >= MAX_BACKLOG:
            self.backlog_dropped += 1
            return
        # the record is built on the line thread; keep only what it reads, not the image
        slim = FrameResult(
            frame_id=result.frame_id,
            index=result.index,
            t_capture_ns=result.t_capture_ns,
            t_result_ns=result.t_result_ns,
            results=dict(result.results),
            timings_ns=dict(result.timings_ns),
        )
        self._queued += 1
        self._q.append(("frame", slim))
        self._wake.set()

    def event(self, event: Mapping[str, Any]) -> None:
        self._queued += 1
        self._q.append(("event", dict(event)))
        self._wake.set()

    def _run(self) -> None:
        while True:
            while self._q:
                kind, item = self._q.popleft()
                self._one(kind, item)
                self._done += 1
            if self._stop:
                return
            self._wake.wait(0.1)
            self._wake.clear()

    def _one(self, kind: str, item: Any) -> None:
        c = self.counters
        if kind == "frame":
            record = self.recorder.record(item)
            c["Frames"] += 1
            c["Rejects"] += bool(record["reject"])
            self._each(lambda out: out.frame(record, item.timings_ns, c))
        else:
            key = {"drop": "Drops", "overrun": "Overruns", "gap": "Gaps"}.get(item.get("event"))
            if key is not None:
                c[key] += 1 if key == "Gaps" else len(item.get("frame_ids", ()))
            self._each(lambda out: out.event(item, c))

    def _each(self, call: Callable[[LineOutput], None]) -> None:
        for out in self.outputs:
            try:
                call(out)
            except Exception as e:  # one output's fault must not stop the others
                self.errors.setdefault(out.name, f"{type(e).__name__}: {e}")

    def report(self) -> dict[str, Any]:
        """Counters for the run summary (``run.line``), once what is queued went out (<= 5 s)."""
        deadline = time.monotonic() + 5.0
        while self._done < self._queued and time.monotonic() < deadline:
            time.sleep(0.005)
        d: dict[str, Any] = {
            "run_id": self.recorder.header.run_id,
            "frames": self.counters["Frames"],
            "rejects": self.counters["Rejects"],
        }
        if self.backlog_dropped:
            d["backlog_dropped"] = self.backlog_dropped
        for out in self.outputs:
            settle = getattr(out, "settle", None)
            if settle is not None:
                settle(deadline)
            d[out.name] = out.report()
        if self.errors:
            d["errors"] = dict(self.errors)
        return d

    def close(self) -> None:
        """Publish what is queued, then close each output (MQTT drains its spool first)."""
        self._stop = True
        self._wake.set()
        self._thread.join(30.0)
        for out in self.outputs:
            out.close()


def open_line_sink(
    cfg: LineOutputsConfig | None,
    *,
    run: Mapping[str, Any],
    decoders: Mapping[str, Decoder],
    source: Source,
    tasks: Sequence[str],
) -> LineSink | None:
    """Check the options, start the servers; None when ``cfg`` asks for no line output."""
    if cfg is None or not cfg.any:
        return None
    reject = reject_rule(cfg.reject, decoders)
    if cfg.mqtt is not None:
        parse_mqtt_url(cfg.mqtt)  # fail on a bad URL before starting any server
    header = run_header(cfg, run, source, tasks)
    outputs: list[LineOutput] = []
    try:
        if cfg.metrics:
            outputs.append(MetricsOut(cfg.metrics, header, cfg.stall_s))
        if cfg.opcua:
            outputs.append(OpcuaStation(cfg.opcua, header, cfg.opcua_user))
        if cfg.mqtt:
            outputs.append(MqttPublisher(cfg, header))
    except BaseException:
        for out in outputs:
            out.close()
        raise
    return LineSink(Recorder(header, reject), outputs)
