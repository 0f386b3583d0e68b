"""What a station run is: its cameras (id, source URI, schedule, policy) and the run's limits.

A station is several cameras on one board run by one process: engines loaded once, the frames
that are ready batched through one trunk call. ``edge run BUNDLE --source A --source B`` names
cameras ``cam0``, ``cam1``, ...; ``--station-file FILE`` reads them from JSON::

    {"cameras": [
       {"id": "left", "source": "usb:0"},
       {"id": "right", "source": "rtsp://10.0.0.7/s1", "tasks": ["defect", "mask"],
        "every": ["mask=5"], "when": ["mask: defect != ok"], "policy": "latest"}],
     "max_batch": 4, "batch_wait_ms": 4}

``tasks`` / ``every`` / ``when`` / ``policy`` mean what the ``edge run`` flags of the same name
mean, per camera (a camera without them takes the command line's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.errors import ConfigError
from edge.runtime.capture import parse_policy
from edge.runtime.line import LineOutputsConfig
from edge.runtime.outputs import parse_rotate, summary_path
from edge.runtime.sources.base import SourceOptions

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CAMERA_KEYS = ("id", "source", "tasks", "every", "when", "policy")
STATION_KEYS = ("cameras", "max_batch", "batch_wait_ms")
GPU_BATCH_WAIT_MS = 4.0
"""The default batching deadline where the trunk runs on a GPU."""


@dataclass(frozen=True)
class Camera:
    """One camera of a station: ``id`` (in every result line), ``source`` (a URI), and its own
    schedule (``tasks``: None = every task; ``every`` "TASK=N"; ``when`` "TASK: COND") and
    frame policy (None: ``latest`` for live sources, ``fifo:4`` for files)."""

    id: str
    source: str
    tasks: tuple[str, ...] | None = None
    every: tuple[str, ...] = ()
    when: tuple[str, ...] = ()
    policy: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise ConfigError(
                f"station camera id {self.id!r}: use 1-64 letters, digits, '_', '.' or '-'"
            )
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError(f"station camera '{self.id}': 'source' must be a source URI")
        if self.policy is not None:
            parse_policy(self.policy)


@dataclass(frozen=True)
class StationConfig:
    """A station run. ``max_batch``: the most frames per trunk call (None: the bundle's
    maximum; a fixed-batch bundle runs its own batch size). ``batch_wait_ms``: how long the
    first ready frame waits for the other cameras' frames that are due within that time (the
    batching deadline; a camera that is late or dead is never waited for longer)."""

    cameras: tuple[Camera, ...]
    frames: int | None = None
    """Stop once every camera has processed this many frames (or has ended)."""
    duration_s: float | None = None
    out: Path | None = None
    summary: Path | None = None
    rotate: str | None = None
    """Rotate ``out`` at a size ("100M", "2G") or "daily"; ``keep`` rotated files stay."""
    keep: int = 5
    verify_key: Path | None = None
    """Refuse the bundle unless its signature verifies with this public key (``edge sign``)."""
    backend: str = "onnxruntime"
    warmup: int = 3
    max_batch: int | None = None
    batch_wait_ms: float | None = None
    """None: 0 when the backend runs on the CPU (a batch costs about its frames' sum there, so
    waiting only adds latency), ``GPU_BATCH_WAIT_MS`` on a GPU (a batch costs about one frame)."""
    open_timeout_s: float = 300.0
    """A live camera that cannot be opened at the start is retried (with the reopen backoff)
    for this long while the others run; it joins when it opens, or ends alone with an error."""
    source_options: SourceOptions = field(default_factory=SourceOptions)
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    line: LineOutputsConfig | None = None
    """MQTT / OPC UA / metrics / reject, shared by the cameras, each under its id."""

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError("a station needs at least one camera (--source or --station-file)")
        ids = [c.id for c in self.cameras]
        if self.line is not None and self.line.opcua and any("." in i for i in ids):
            raise ConfigError(  # node ids are "<camera>.Station.Frames", "<camera>.Task.<t>..."
                f"station camera ids {ids}: with --opcua an id may not contain '.' (it would "
                "collide with another camera's OPC UA node ids); use '_' or '-'"
            )
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError(f"station camera ids must be unique; repeated: {dup}")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"--frames {self.frames}: must be >= 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration {self.duration_s}: must be > 0 seconds")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"station max_batch {self.max_batch}: must be >= 1")
        if self.batch_wait_ms is not None and not 0 <= self.batch_wait_ms <= 1000:
            raise ConfigError(f"station batch_wait_ms {self.batch_wait_ms}: must be 0..1000")
        if self.rotate is not None and self.out is None:
            raise ConfigError("--rotate applies to --out: give --out too")
        parse_rotate(self.rotate)
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep}: must be >= 1")
        if not self.open_timeout_s >= 0:
            raise ConfigError(f"--open-timeout {self.open_timeout_s}: must be >= 0 seconds")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup}: must be >= 0")
        if self.line is not None and self.line.camera is not None:
            raise ConfigError(
                f"--camera {self.line.camera!r} names the camera of a one-camera run; a "
                "station's cameras are cam0, cam1, ... (--source order) or the station file's ids"
            )

    @property
    def summary_path(self) -> Path | None:
        return summary_path(self.out, self.summary)


def cameras_from_sources(
    sources: Sequence[str],
    *,
    tasks: Sequence[str] | None = None,
    every: Sequence[str] = (),
    when: Sequence[str] = (),
    policy: str | None = None,
) -> tuple[Camera, ...]:
    """``--source`` repeated -> cameras ``cam0``, ``cam1``, ... sharing the command's schedule."""
    t = tuple(tasks) if tasks is not None else None
    return tuple(
        Camera(f"cam{i}", s, t, tuple(every), tuple(when), policy) for i, s in enumerate(sources)
    )


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: '{key}' must be a string or a list of strings")
    return tuple(value)


def read_station_file(path: str | Path, defaults: Camera | None = None) -> dict[str, Any]:
    """``{"cameras": (Camera, ...), "max_batch": int | None, "batch_wait_ms": float | None}``
    from a station JSON file. A camera's missing schedule/policy keys come from ``defaults``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"station file '{p}' cannot be read: {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"station file '{p}' is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise ConfigError(f"station file '{p}': expected {{\"cameras\": [{{...}}, ...]}}")
    unknown = sorted(set(data) - set(STATION_KEYS))
    if unknown:
        raise ConfigError(f"station file '{p}': unknown key(s) {unknown}; keys: {STATION_KEYS}")
    cams = []
    for n, c in enumerate(data["cameras"]):
        where = f"station file '{p}', camera {n}"
        if not isinstance(c, dict) or "source" not in c:
            raise ConfigError(f"{where}: expected an object with at least 'source'")
        bad = sorted(set(c) - set(CAMERA_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; keys: {CAMERA_KEYS}")
        d = defaults
        tasks = _strings(where, "tasks", c["tasks"]) if "tasks" in c else (d and d.tasks)
        cams.append(
            Camera(
                id=str(c.get("id", f"cam{n}")),
                source=c["source"],
                tasks=tasks or None,
                every=_strings(where, "every", c["every"])
                if "every" in c
                else (d and d.every) or (),
                when=_strings(where, "when", c["when"]) if "when" in c else (d and d.when) or (),
                policy=c.get("policy", d.policy if d else None),
            )
        )
    out: dict[str, Any] = {"cameras": tuple(cams)}
    for key, kind in (("max_batch", int), ("batch_wait_ms", float)):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"station file '{p}': '{key}' must be a number")
        out[key] = None if v is None else kind(v)
    return out
