"""Prometheus metrics and a health check on one port (prometheus-client, the ``metrics`` extra):
``GET /metrics`` (text format) and ``GET /healthz`` (JSON; 200 while frames flow, 503 once no
frame came for ``stall_s`` seconds), anything else 404. Served by a threaded wsgiref server on
its own daemon thread; the run's line thread feeds it (:meth:`MetricsOut.frame`, ``event``).

Metrics (all prefixed ``etr_``): ``frames_total``, ``fps`` (last 2 s), ``stage_seconds{stage}``
(histogram per pipeline stage, plus ``latency`` capture -> result), ``drops_total``,
``overruns_total``, ``gaps_total``, ``rejects_total``, ``up`` (1 while frames flow),
``last_frame_age_seconds`` and ``run_info{run,station,camera,bundle_hash,backend,precision}``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
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
    """The registry, the HTTP server and the stall clock of one run."""

    def __init__(self, address: str, header: RunHeader, stall_s: float) -> None:
        host, port = parse_host_port(address)
        # prometheus-client is an optional extra: imported only when --metrics is used
        prom: Any = require("prometheus_client", extra="metrics", purpose="--metrics")
        self.stall_s = stall_s
        self.reg = reg = prom.CollectorRegistry()
        self.frames = prom.Counter("etr_frames", "frames processed", registry=reg)
        self.rejects = prom.Counter("etr_rejects", "frames rejected by --reject", registry=reg)
        self.drops = prom.Counter("etr_drops", "frames dropped (latest policy)", registry=reg)
        self.overruns = prom.Counter("etr_overruns", "frames not queued (fifo full)", registry=reg)
        self.gaps = prom.Counter("etr_gaps", "source stalls that were reopened", registry=reg)
        self.stages = prom.Histogram(
            "etr_stage_seconds", "time per pipeline stage", ["stage"], buckets=BUCKETS, registry=reg
        )
        prom.Gauge("etr_fps", "frames per second over the last 2 s", registry=reg).set_function(
            self.fps
        )
        prom.Gauge("etr_up", "1 while frames flow", registry=reg).set_function(
            lambda: float(self.healthy()[0])
        )
        prom.Gauge("etr_last_frame_age_seconds", "since the last frame", registry=reg).set_function(
            self.age
        )
        info = prom.Info("etr_run", "the run header", registry=reg)
        h = header.to_json()
        info.info({k: str(h[k]) for k in ("run", "station", "camera", "bundle_hash", "backend")})
        self._recent: collections.deque[float] = collections.deque(maxlen=4096)
        self._last = time.monotonic()  # a run that never gets a frame stalls too
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

    # -- fed by the line thread ---------------------------------------------------------------
    def frame(
        self, record: Mapping[str, Any], timings_ns: Mapping[str, int], counters: Mapping[str, int]
    ) -> None:
        now = time.monotonic()
        self._last = now
        self._recent.append(now)
        self.frames.inc()
        if record.get("reject"):
            self.rejects.inc()
        for stage, ns in timings_ns.items():
            self.stages.labels(stage).observe(ns / 1e9)
        self.stages.labels("latency").observe(float(record["latency_ms"]) / 1e3)

    def event(self, event: Mapping[str, Any], counters: Mapping[str, int]) -> None:
        kind = event.get("event")
        n = len(event.get("frame_ids", ()))
        if kind == "drop":
            self.drops.inc(n)
        elif kind == "overrun":
            self.overruns.inc(n)
        elif kind == "gap":
            self.gaps.inc()

    # -- read by scrapes ----------------------------------------------------------------------
    def age(self) -> float:
        return time.monotonic() - self._last

    def fps(self) -> float:
        now = time.monotonic()
        recent = [t for t in list(self._recent) if t >= now - 2.0]
        return len(recent) / 2.0

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        age = self.age()
        return age <= self.stall_s, {"last_frame_age_s": round(age, 3), "stall_s": self.stall_s}

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return list(self._metrics_app(environ, start))
        if path == "/healthz":
            ok, detail = self.healthy()
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

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5.0)
