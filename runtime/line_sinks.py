"""The line outputs of one run behind the runtime's :class:`~edge.runtime.sinks.Sink` interface:
:class:`LineSink` takes each frame and event off the caller in O(1) and, on its own thread,
builds the compact record once and feeds each :class:`~edge.runtime.line.LineOutput`: MQTT,
OPC UA and the metrics (whichever are on; another output implements the same four members).

``open_line_sink(cfg, ...)`` checks every option and starts the servers (a bad flag or a busy
port fails here, before the run opens any output); None when no line output is asked for.
``open_station_line_sink`` does the same for a station run: one connection / server per
process, each camera under its own id.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge.runtime.decode import Decoder
from edge.runtime.line import (
    LineOutput,
    LineOutputsConfig,
    Recorder,
    RunHeader,
    reject_rule,
    run_header,
    station_headers,
)
from edge.runtime.metrics_http import MetricsOut, parse_host_port
from edge.runtime.opcua_station import OpcuaStation, parse_opcua_url
from edge.runtime.pipeline import FrameResult
from edge.runtime.publish_mqtt import MqttPublisher, check_tls_files, parse_mqtt_url
from edge.runtime.sources.base import Source

MAX_BACKLOG = 10_000
"""Frames waiting for the line thread before new ones are counted as ``backlog_dropped``."""


class LineSink:
    """A :class:`Sink`: ``write``/``event`` queue, the ``edge-line`` thread builds each frame's
    record once and feeds every :class:`~edge.runtime.line.LineOutput` in turn.

    ``recorders``: one per camera (a one-camera run has one); ``station``: several cameras share
    these outputs (``write(result, camera)``; events name theirs in ``"camera"``), each camera
    keeping its own counters and its own part of :meth:`report`."""

    def __init__(
        self, recorders: Recorder | Sequence[Recorder], outputs: Sequence[LineOutput]
    ) -> None:
        recs = [recorders] if isinstance(recorders, Recorder) else list(recorders)
        self.recorders = {r.header.camera: r for r in recs}
        self.recorder = recs[0]
        self.station = any(r.station for r in recs)
        self.outputs = list(outputs)
        self.cameras = {cam: _zero() for cam in self.recorders}
        self.counters = self.cameras[self.recorder.header.camera]
        self.backlog_dropped = 0
        self._q: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._closed = False
        self._queued = self._done = 0
        self.errors: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="edge-line", daemon=True)
        self._thread.start()

    def write(self, result: FrameResult, camera: str | None = None) -> None:
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
        self._q.append(("frame", (camera or self.recorder.header.camera, slim)))
        self._wake.set()

    def event(self, event: Mapping[str, Any]) -> None:
        item = dict(event)
        item.setdefault("camera", self.recorder.header.camera)
        if item["camera"] not in self.cameras:
            return  # not one of ours
        self._queued += 1
        self._q.append(("event", item))
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
        if kind == "frame":
            cam, result = item
            c = self.cameras[cam]
            record = self.recorders[cam].record(result)
            c["Frames"] += 1
            c["Rejects"] += bool(record["reject"])
            self._each(lambda out: out.frame(record, result.timings_ns, c))
        else:
            c = self.cameras[item["camera"]]
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
        """Counters for the run summary (``run.line``), once what is queued went out (<= 5 s).
        A station's has ``cameras``: per camera its counters and each output's part."""
        deadline = time.monotonic() + 5.0
        while self._done < self._queued and time.monotonic() < deadline:
            time.sleep(0.005)
        cams = self.cameras.values()
        d: dict[str, Any] = {
            "run_id": self.recorder.header.run_id,
            "frames": sum(c["Frames"] for c in cams),
            "rejects": sum(c["Rejects"] for c in cams),
        }
        if self.backlog_dropped:
            d["backlog_dropped"] = self.backlog_dropped
        for out in self.outputs:
            settle = getattr(out, "settle", None)
            if settle is not None:
                settle(deadline)
            d[out.name] = out.report()
        if self.station:
            d["cameras"] = {}
            for cam, c in self.cameras.items():
                one: dict[str, Any] = {k.lower(): v for k, v in c.items()}
                for out in self.outputs:
                    part = getattr(out, "camera_report", None)
                    if part is not None:
                        one[out.name] = part(cam)
                d["cameras"][cam] = one
        if self.errors:
            d["errors"] = dict(self.errors)
        return d

    def close(self) -> None:
        """Publish what is queued, then close each output (MQTT drains its spool first).
        A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        self._wake.set()
        self._thread.join(30.0)
        for out in self.outputs:
            out.close()


def _zero() -> dict[str, int]:
    return {"Frames": 0, "Rejects": 0, "Drops": 0, "Overruns": 0, "Gaps": 0}


def check_line_config(cfg: LineOutputsConfig | None, decoders: Mapping[str, Decoder]) -> None:
    """Every line-output option that can be checked without starting anything: the reject rule,
    the MQTT URL and TLS files, the OPC UA URL, the metrics address (ConfigError, ScheduleError)
    before any server starts or any output opens."""
    if cfg is None or not cfg.any:
        return
    reject_rule(cfg.reject, decoders)
    if cfg.mqtt is not None:
        parse_mqtt_url(cfg.mqtt)
        check_tls_files(cfg)
    if cfg.opcua is not None:
        parse_opcua_url(cfg.opcua)
    if cfg.metrics is not None:
        parse_host_port(cfg.metrics)


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
    return _open(cfg, [run_header(cfg, run, source, tasks)], decoders, station=False)


def open_station_line_sink(
    cfg: LineOutputsConfig | None,
    *,
    run: Mapping[str, Any],
    decoders: Mapping[str, Decoder],
    cameras: Mapping[str, Sequence[str]],
) -> LineSink | None:
    """The line outputs of a station run (``cameras``: id -> the tasks its schedule may run):
    one MQTT client and spool, one OPC UA server, one metrics port, shared by every camera;
    each camera under its own topics / node set / ``camera`` label. None when none is asked."""
    if cfg is None or not cfg.any:
        return None
    return _open(cfg, station_headers(cfg, run, cameras), decoders, station=True)


def _open(
    cfg: LineOutputsConfig,
    headers: Sequence[RunHeader],
    decoders: Mapping[str, Decoder],
    station: bool,
) -> LineSink:
    check_line_config(cfg, decoders)  # fail on a bad option before starting any server
    reject = reject_rule(cfg.reject, decoders)
    outputs: list[LineOutput] = []
    try:
        if cfg.metrics:
            outputs.append(MetricsOut(cfg.metrics, headers, cfg.stall_s, station=station))
        if cfg.opcua:
            outputs.append(OpcuaStation(cfg.opcua, headers, cfg.opcua_user, station=station))
        if cfg.mqtt:
            outputs.append(MqttPublisher(cfg, headers, station=station))
    except BaseException:
        for out in outputs:
            out.close()
        raise
    return LineSink([Recorder(h, reject, station) for h in headers], outputs)
