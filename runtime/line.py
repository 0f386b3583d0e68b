"""What the station tells the line: options, the run header and the compact per-frame record
shared by the MQTT, OPC UA and metrics sinks (:mod:`edge.runtime.line_sinks` builds them).

The compact record (``SCHEMA_VERSION`` 1; the MQTT ``…/result`` payload)::

    {"v": 1, "run": "20261130T010203Z-3f2a9c", "camera": "cam0", "frame": 17,
     "msg": "20261130T010203Z-3f2a9c/17",
     "t": "2026-11-30T01:02:03.456789Z", "latency_ms": 3.1, "reject": false,
     "tasks": {"defect": {"label": "scratch", "score": 0.93}, "mask": {"value": 0.012},
               "angle": {"value": 12.5}, "attrs": {"label": "rusty", "score": 0.8}}}

``tasks`` holds the tasks that ran on the frame: ``label`` (classification: the label;
multi-label: the labels that are on, comma-joined), ``score`` (the label's probability / the
highest probability of an on label), ``value`` (regression: the value, or the first of several
values; segmentation: the share of defect pixels). ``camera`` is the camera id (as in the topics).
``msg`` is unique per frame and run: the key a consumer dedupes on (delivery is at least once); in
a station run (several cameras) it is ``RUN/CAMERA/FRAME``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge.core.errors import ConfigError
from edge.runtime.decode import Decoder, TaskResult
from edge.runtime.pipeline import FrameResult
from edge.runtime.schedule import Condition, parse_condition
from edge.runtime.sinks import WallClock
from edge.runtime.sources.base import Source, redact_uri

SCHEMA_VERSION = 1
_TOPIC_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class LineOutputsConfig:
    """The station's line outputs (``edge run`` flags; each None = off).

    ``mqtt``: ``mqtt[s]://[user:pass@]host[:port]/PREFIX``; ``mqtt_ca/cert/key``: TLS files;
    ``spool``: folder of the MQTT disk spool (default ``~/.cache/etr-edge/spool``), ``spool_max``
    messages at most; ``mqtt_drain_s``: at the end, how long to wait for the broker's
    acknowledgements (what is not acknowledged then stays in the spool for the next run).
    ``opcua``: ``opc.tcp://HOST:PORT``; ``opcua_user``: ``user:password`` (anonymous clients
    are then refused). ``metrics``: ``HOST:PORT`` of /metrics and /healthz; ``stall_s``:
    /healthz answers 503 when no frame came for this long. ``reject``: a condition (schedule
    syntax, e.g. ``defect != ok``) that marks a frame rejected.
    """

    station: str = "station"
    camera: str | None = None
    reject: str | None = None
    mqtt: str | None = None
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    spool: Path | None = None
    spool_max: int = 100_000
    mqtt_drain_s: float = 10.0
    opcua: str | None = None
    opcua_user: str | None = None
    metrics: str | None = None
    stall_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("station", "camera"):
            v = getattr(self, name)
            if v is not None and not _TOPIC_WORD.match(v):
                raise ConfigError(
                    f"--{name} {v!r}: use 1-64 letters, digits, '_', '-' or '.' (it is part of "
                    "MQTT topics and OPC UA names)"
                )
        if self.spool_max < 1:
            raise ConfigError(f"--spool-max {self.spool_max}: must be >= 1")
        if not self.stall_s > 0:
            raise ConfigError(f"--stall-seconds {self.stall_s}: must be > 0")
        if self.opcua_user is not None and ":" not in self.opcua_user:
            raise ConfigError(f"--opcua-user {self.opcua_user!r}: expected USER:PASSWORD")
        if (self.mqtt_cert is None) != (self.mqtt_key is None):
            raise ConfigError("--mqtt-cert and --mqtt-key go together (the client's certificate)")

    @property
    def any(self) -> bool:
        return bool(self.mqtt or self.opcua or self.metrics)


class LineOutput(Protocol):
    """One line output (MQTT, OPC UA, metrics, or your own), fed by the line thread.

    ``frame``: one frame's compact record (module doc), its stage times and its camera's counters
    so far (Frames, Rejects, Drops, Overruns, Gaps); ``event``: a runtime event (drop, overrun,
    gap, ...; its ``camera`` key names the camera) and that camera's counters after it. Neither
    may block for long: the line thread feeds every output in turn. ``report``: counters for the
    run summary; ``close``: flush and stop. An output built for a station (several cameras on one
    connection or server) also has ``camera_report(camera)``: that camera's part of the report."""

    name: str

    def frame(
        self, record: Mapping[str, Any], timings_ns: Mapping[str, int], counters: Mapping[str, int]
    ) -> None: ...

    def event(self, event: Mapping[str, Any], counters: Mapping[str, int]) -> None: ...

    def report(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def camera_id(source: Source) -> str:
    """A topic-safe camera name from the source URI: ``usb:0`` -> ``usb_0``, ``synthetic:?fps=5``
    -> ``synthetic``, ``rtsp://u:p@10.0.0.5/s1`` -> ``rtsp_10.0.0.5_s1`` (credentials dropped)."""
    uri = redact_uri(source.uri).split("?", 1)[0].replace("***@", "")
    word = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri).strip("_.")
    return word[-64:] or source.kind


@dataclass(frozen=True)
class RunHeader:
    """Who and what produced the results: retained on MQTT ``…/info``, OPC UA ``Info``."""

    run_id: str
    station: str
    camera: str
    bundle: str
    bundle_hash: str
    backend: str
    precision: str
    mode: str
    tasks: tuple[str, ...]
    started: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "run": self.run_id,
            "station": self.station,
            "camera": self.camera,
            "bundle": self.bundle,
            "bundle_hash": self.bundle_hash,
            "backend": self.backend,
            "precision": self.precision,
            "mode": self.mode,
            "tasks": list(self.tasks),
            "started": self.started,
            **self.extra,
        }


def run_header(
    cfg: LineOutputsConfig, run: Mapping[str, Any], source: Source, tasks: Sequence[str]
) -> RunHeader:
    """The line outputs' view of the run's header (``run``: the line ``edge run`` starts its
    JSONL with: run_id, started, bundle, bundle_sha256, backend, precision, mode), so the JSONL,
    MQTT and OPC UA name a run alike."""
    return _header(cfg, run, cfg.camera or camera_id(source), tasks)


def _header(
    cfg: LineOutputsConfig, run: Mapping[str, Any], camera: str, tasks: Sequence[str]
) -> RunHeader:
    return RunHeader(
        run_id=str(run["run_id"]),
        station=cfg.station,
        camera=camera,
        bundle=Path(str(run["bundle"])).name,
        bundle_hash=str(run["bundle_sha256"]),
        backend=str(run["backend"]),
        precision=str(run["precision"]),
        mode=str(run["mode"]),
        tasks=tuple(tasks),
        started=str(run["started"]),
    )


def reject_rule(text: str | None, decoders: Mapping[str, Decoder]) -> Condition | None:
    """``--reject COND`` through the schedule's condition parser (one syntax for both)."""
    if text is None:
        return None
    return parse_condition(text, decoders, "--reject")


def task_brief(r: TaskResult) -> dict[str, Any]:
    """label / score / value of one task's result (see the module doc)."""
    d = r.data
    if r.type == "softmax_argmax":
        return {"label": d["label"], "score": round(float(d["prob"]), 5)}
    if r.type == "sigmoid_threshold":
        on = list(d["on"])
        score = max((float(d["probs"][lab]) for lab in on), default=0.0)
        return {"label": ",".join(on), "score": round(score, 5)}
    if r.type == "affine":
        v = d["value"] if "value" in d else next(iter(d["values"].values()))
        return {"value": round(float(v), 5)}
    return {"value": round(float(d["fraction"]), 6)}


def station_headers(
    cfg: LineOutputsConfig, run: Mapping[str, Any], cameras: Mapping[str, Sequence[str]]
) -> list[RunHeader]:
    """One header per camera of a station run (``cameras``: id -> the tasks its schedule may
    run); they share the run's id, bundle and backend."""
    if cfg.camera is not None:
        raise ConfigError(
            f"--camera {cfg.camera!r} names the camera of a one-camera run; a station's cameras "
            "are named cam0, cam1, ... (--source order) or by the station file's ids"
        )
    return [_header(cfg, run, cam, tasks) for cam, tasks in cameras.items()]


class Recorder:
    """FrameResult -> the compact record (module doc), plus the reject decision. ``station``:
    the run has several cameras (``msg`` then names the camera too)."""

    def __init__(self, header: RunHeader, reject: Condition | None, station: bool = False) -> None:
        self.header, self.reject, self.station = header, reject, station
        self.clock = WallClock()

    def record(self, result: FrameResult) -> dict[str, Any]:
        rejected = self.reject is not None and self.reject.holds(result.results)
        run, cam = self.header.run_id, self.header.camera
        return {
            "v": SCHEMA_VERSION,
            "run": run,
            "camera": cam,
            "frame": result.frame_id,
            "msg": f"{run}/{cam}/{result.frame_id}" if self.station else f"{run}/{result.frame_id}",
            "t": self.clock.iso(result.t_capture_ns),
            "latency_ms": round(result.latency_ns / 1e6, 3),
            "reject": rejected,
            "tasks": {t: task_brief(r) for t, r in result.results.items() if r is not None},
        }
