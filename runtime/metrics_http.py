"""Prometheus metrics and a health check on one port (prometheus-client, the ``metrics`` extra):
``GET /metrics`` (text format) and ``GET /healthz`` (JSON; 200 while frames flow, 503 once no
frame came for ``stall_s`` seconds), anything else 404. Served by a threaded wsgiref server on
its own daemon thread; the run's line thread feeds it (:meth:`MetricsOut.frame`, ``event``).

Metrics (all prefixed ``etr_``): ``frames_total``, ``fps`` (last 2 s), ``stage_seconds{stage}``
(histogram per pipeline stage, plus ``latency`` capture -> result), ``drops_total``,
``overruns_total``, ``gaps_total``, ``rejects_total``, ``up`` (1 while frames flow),
``last_frame_age_seconds`` and ``run_info{run,station,camera,bundle_hash,backend}``.

A station run (several cameras) serves one port: every series but ``run_info`` carries a
``camera="ID"`` label (``run_info`` one sample per camera), and ``/healthz`` answers 503 once
any camera stalls, naming it: ``{"ok": false, "stalled": ["cam1"], "cameras": {...}}``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from edge.core.errors import ConfigError, require
from edge.runtime.line import RunHeader

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def parse_host_port(text: str, flag: str = "--metrics") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {text!r}: expected HOST:PORT, e.g. 0.0.0.0:9108")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no line per scrape on stderr
        pass


class MetricsOut:
    name = "metrics"
    """The registry, the HTTP server and the stall clocks of one run (``headers``: one per
    camera; ``station``: label every series by camera, see the module doc)."""

    def __init__(
        self,
        address: str,
        headers: RunHeader | Sequence[RunHeader],
        stall_s: float,
        *,
        station: bool = False,
    ) -> None:
        host, port = parse_host_port(address)
        # prometheus-client is an optional extra: imported only when --metrics is used
        prom: Any = require("prometheus_client", extra="metrics", purpose="--metrics")
        hs = [headers] if isinstance(headers, RunHeader) else list(headers)
        self.headers = {h.camera: h for h in hs}
        self.station, self.stall_s = station, stall_s
        self.default = hs[0].camera
        cam = ("camera",) if station else ()
        self.reg = reg = prom.CollectorRegistry()

        def counter(name: str, doc: str) -> Any:
            return prom.Counter(name, doc, cam, registry=reg)

        self.frames = counter("etr_frames", "frames processed")
        self.rejects = counter("etr_rejects", "frames rejected by --reject")
        self.drops = counter("etr_drops", "frames dropped (latest policy)")
        self.overruns = counter("etr_overruns", "frames not queued (fifo full)")
        self.gaps = counter("etr_gaps", "source stalls that were reopened")
        self.stages = prom.Histogram(
            "etr_stage_seconds",
            "time per pipeline stage",
            (*cam, "stage"),
            buckets=BUCKETS,
            registry=reg,
        )
        if station:  # every camera's series from the start (at 0), not from its first event
            for c in self.headers:
                for m in (self.frames, self.rejects, self.drops, self.overruns, self.gaps):
                    m.labels(c)
        now = time.monotonic()  # a run that never gets a frame stalls too
        self._last = {c: now for c in self.headers}
        self._recent: dict[str, collections.deque[float]] = {
            c: collections.deque(maxlen=4096) for c in self.headers
        }
        reg.register(_Live(self, prom))
        self._metrics_app = prom.make_wsgi_app(reg)
        try:
            self.httpd = make_server(host, port, self._app, _Server, handler_class=_Quiet)
        except OSError as e:
            raise ConfigError(f"--metrics {address}: cannot listen ({e}); pick a free port") from e
        self.port = self.httpd.server_port
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    def _of(self, metric: Any, camera: str) -> Any:
        """The camera's child of a labelled metric (a one-camera run's metrics have no label)."""
        return metric.labels(camera) if self.station else metric

    # -- fed by the line thread ---------------------------------------------------------------
    def frame(
        self, record: Mapping[str, Any], timings_ns: Mapping[str, int], counters: Mapping[str, int]
    ) -> None:
        cam = str(record.get("camera", self.default))
        now = time.monotonic()
        self._last[cam] = now
        self._recent[cam].append(now)
        self._of(self.frames, cam).inc()
        if record.get("reject"):
            self._of(self.rejects, cam).inc()
        pre = (cam,) if self.station else ()
        for stage, ns in timings_ns.items():
            self.stages.labels(*pre, stage).observe(ns / 1e9)
        self.stages.labels(*pre, "latency").observe(float(record["latency_ms"]) / 1e3)

    def event(self, event: Mapping[str, Any], counters: Mapping[str, int]) -> None:
        cam = str(event.get("camera", self.default))
        kind = event.get("event")
        n = len(event.get("frame_ids", ()))
        if kind == "drop":
            self._of(self.drops, cam).inc(n)
        elif kind == "overrun":
            self._of(self.overruns, cam).inc(n)
        elif kind == "gap":
            self._of(self.gaps, cam).inc()

    # -- read by scrapes ----------------------------------------------------------------------
    def age(self, camera: str | None = None) -> float:
        return time.monotonic() - self._last[camera or self.default]

    def fps(self, camera: str | None = None) -> float:
        now = time.monotonic()
        recent = [t for t in list(self._recent[camera or self.default]) if t >= now - 2.0]
        return len(recent) / 2.0

    def healthy(self, camera: str | None = None) -> tuple[bool, dict[str, Any]]:
        """One camera's health (a one-camera run: the run's); a station's ``/healthz`` body
        comes from :meth:`health`."""
        age = self.age(camera)
        return age <= self.stall_s, {"last_frame_age_s": round(age, 3), "stall_s": self.stall_s}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The ``/healthz`` answer: ok unless a camera stalled (a station names each one)."""
        if not self.station:
            return self.healthy()
        cams = {c: self.healthy(c) for c in self.headers}
        stalled = [c for c, (ok, _) in cams.items() if not ok]
        detail = {"stalled": stalled, "stall_s": self.stall_s}
        detail["cameras"] = {c: d["last_frame_age_s"] for c, (_, d) in cams.items()}
        return not stalled, detail

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return list(self._metrics_app(environ, start))
        if path == "/healthz":
            ok, detail = self.health()
            body = json.dumps({"ok": ok, **detail}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start(
                status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    def report(self) -> dict[str, Any]:
        return {"port": self.port}

    def camera_report(self, camera: str) -> dict[str, Any]:
        return {"label": f'camera="{camera}"'}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5.0)


class _Live:
    """The gauges read at scrape time (fps, up, last frame age) and the run info, per camera
    (a prometheus-client custom collector: labelled gauges computed on scrape)."""

    def __init__(self, out: MetricsOut, prom: Any) -> None:
        self.out = out
        self.core: Any = prom.metrics_core

    def collect(self) -> Iterable[Any]:
        out, core = self.out, self.core
        labels = ["camera"] if out.station else []
        gauges = (
            ("etr_fps", "frames per second over the last 2 s", out.fps),
            ("etr_up", "1 while frames flow", lambda c: float(out.healthy(c)[0])),
            ("etr_last_frame_age_seconds", "since the last frame", out.age),
        )
        for name, doc, read in gauges:
            g = core.GaugeMetricFamily(name, doc, labels=labels)
            for cam in out.headers:
                g.add_metric([cam] if out.station else [], read(cam))
            yield g
        info = core.InfoMetricFamily("etr_run", "the run header")
        for h in out.headers.values():
            d = h.to_json()
            keys = ("run", "station", "camera", "bundle_hash", "backend")
            info.add_metric([], {k: str(d[k]) for k in keys})
        yield info
