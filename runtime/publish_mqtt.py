"""MQTT out (paho-mqtt 2.x, the ``mqtt`` extra): per frame the compact record
(:mod:`edge.runtime.line`) on ``PREFIX/<station>/<camera>/result`` (QoS 1), rejected frames on
``…/reject``, a retained ``…/status`` (Last Will: state ``offline``) and the retained run header
on ``…/info``.

A station run (several cameras) shares one client and one spool: each camera publishes under
its own ``PREFIX/<station>/<camera>/…`` exactly as above (its own retained ``info`` and
``status``); MQTT allows one Last Will per connection, so the station's is on
``PREFIX/<station>/status`` (retained, ``online`` while the client is connected, ``offline``
with reason ``lost`` or ``stopped``), and a clean stop also says ``offline`` on each camera's.

``post`` only appends to an in-memory queue: the inference thread never waits for the network.
A publisher thread hands messages to paho while the broker is connected (at most ``window``
unacknowledged) and spools them to disk (:class:`~edge.runtime.spool.Spool`, bounded, in order)
while it is not; after a reconnect it first waits until paho has re-sent and got PUBACKs for
what was in flight, then empties the spool oldest first, then goes on live. Messages that do not
fit the spool are counted as ``dropped`` (in ``report()``, the run summary and the next status).
Delivery is at least once: a frame may arrive twice around a reconnect; ``msg`` dedupes.
"""

from __future__ import annotations

import collections
import os
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from edge.core.errors import ConfigError, require
from edge.runtime.line import SCHEMA_VERSION, LineOutputsConfig, RunHeader
from edge.runtime.outputs import json_line
from edge.runtime.spool import Spool

if TYPE_CHECKING:
    from edge.runtime.spool import Message

STATUS_EVERY_S = 5.0


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``mqtt[s]://[user:pass@]host[:port]/PREFIX``."""

    host: str
    port: int
    tls: bool
    prefix: str
    user: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"--mqtt {url!r}: expected mqtt://[user:pass@]host[:port]/PREFIX (mqtts:// for TLS)"
        )
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as e:
        raise ConfigError(f"--mqtt {url!r}: bad port ({e})") from e
    prefix = parts.path.strip("/")
    if not prefix or any(c in prefix for c in "+#") or "//" in prefix:
        raise ConfigError(
            f"--mqtt {url!r}: give a topic prefix after the host, e.g. mqtt://broker/factory/line1 "
            "(no '+', '#' or empty levels)"
        )
    return MqttTarget(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        prefix=prefix,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def check_tls_files(cfg: LineOutputsConfig) -> None:
    for name in ("mqtt_ca", "mqtt_cert", "mqtt_key"):
        p = getattr(cfg, name)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"--{name.replace('_', '-')} '{p}': no such file")


def default_spool_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "etr-edge" / "spool"


class MqttPublisher:
    name = "mqtt"
    """``frame(record, ...)`` per frame; ``close()`` delivers what waits (up to
    ``mqtt_drain_s``, also waiting for a broker that is away to come back; the spool keeps the
    rest for the next run) and says offline. ``headers``: one per camera (a one-camera run has
    one); ``station``: a station run (see the module doc)."""

    def __init__(
        self,
        cfg: LineOutputsConfig,
        headers: RunHeader | Sequence[RunHeader],
        *,
        station: bool = False,
        window: int = 500,
        status_every_s: float = STATUS_EVERY_S,
    ) -> None:
        assert cfg.mqtt is not None
        target = parse_mqtt_url(cfg.mqtt)
        check_tls_files(cfg)
        # paho is an optional extra: imported only when --mqtt is used
        mqtt: Any = require("paho.mqtt.client", extra="mqtt", purpose="--mqtt")
        hs = [headers] if isinstance(headers, RunHeader) else list(headers)
        self.headers = {h.camera: h for h in hs}
        self.header, self.station = hs[0], station
        header = self.header
        self.window, self.drain_s = window, cfg.mqtt_drain_s
        self.status_every_s = status_every_s
        self.bases = {h.camera: f"{target.prefix}/{h.station}/{h.camera}" for h in hs}
        self.cam_topics = {
            cam: {k: f"{b}/{k}" for k in ("result", "reject", "status", "info")}
            for cam, b in self.bases.items()
        }
        self.cam_counts = {cam: {"posted": 0, "rejects": 0} for cam in self.bases}
        self.base = self.bases[header.camera]
        self.topics = self.cam_topics[header.camera]
        self.station_base = f"{target.prefix}/{header.station}"
        # the Last Will: the camera's status, or (a station) the station's
        self.will_topic = f"{self.station_base}/status" if station else self.topics["status"]
        spool_dir = Path(cfg.spool) if cfg.spool is not None else default_spool_dir()
        name = header.station if station else f"{header.station}-{header.camera}"
        self.spool_path = spool_dir / f"{name}.sqlite"
        self._spool_max = cfg.spool_max
        self._inbox: collections.deque[Message] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._resync = False  # after a reconnect: wait until paho's re-sent messages are acked
        self._lock = threading.Lock()
        self.counts = {"posted": 0, "published": 0, "acked": 0, "spooled": 0, "dropped": 0}
        self.counts.update({"connects": 0, "disconnects": 0, "rejects": 0})
        self._unacked = 0
        self._inflight: dict[int, Message] = {}  # mid -> message, insertion (= send) order
        self._early: set[int] = set()
        self._busy = False
        self.spool_left = 0
        self.error: BaseException | None = None

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"etr-{name}-{os.getpid()}",
            protocol=mqtt.MQTTv311,
        )
        if target.user is not None:
            c.username_pw_set(target.user, target.password)
        if target.tls:
            c.tls_set(
                ca_certs=str(cfg.mqtt_ca) if cfg.mqtt_ca else None,
                certfile=str(cfg.mqtt_cert) if cfg.mqtt_cert else None,
                keyfile=str(cfg.mqtt_key) if cfg.mqtt_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        c.will_set(self.will_topic, self._status("offline", "lost"), qos=1, retain=True)
        c.max_inflight_messages_set(min(window, 200))
        c.reconnect_delay_set(0.2, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.client = c
        c.connect_async(target.host, target.port, keepalive=15)
        c.loop_start()
        self._thread = threading.Thread(target=self._run, name="edge-mqtt", daemon=True)
        self._thread.start()

    # -- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(self, c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            return
        with self._lock:
            self.counts["connects"] += 1
            self._resync = True
        for cam, h in self.headers.items():
            info = json_line(h.to_json()).rstrip(b"\n")
            self._publish(self.cam_topics[cam]["info"], info, True)
            self._publish(self.cam_topics[cam]["status"], self._status("online", camera=cam), True)
        if self.station:
            self._publish(self.will_topic, self._status("online"), True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        with self._lock:
            self.counts["disconnects"] += 1

    def _on_publish(self, c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self._unacked -= 1
            self.counts["acked"] += 1
            if self._inflight.pop(mid, None) is None:
                self._early.add(mid)  # acked before _publish recorded it
        self._wake.set()

    # -- producer side ------------------------------------------------------------------------
    def event(self, event: Mapping[str, Any], counters: Mapping[str, int]) -> None:
        pass  # counters reach MQTT through the periodic status

    def frame(
        self, record: Mapping[str, Any], timings_ns: Mapping[str, int], counters: Mapping[str, int]
    ) -> None:
        """Queue one frame's record (and its reject message); never blocks."""
        cam = str(record.get("camera", self.header.camera))
        topics, counts = self.cam_topics[cam], self.cam_counts[cam]
        payload = json_line(record).rstrip(b"\n")  # strict JSON: NaN/Infinity become null
        self._inbox.append((topics["result"], payload, 1, False))
        if record.get("reject"):
            rej = {k: record[k] for k in ("v", "run", "camera", "frame", "msg", "t") if k in record}
            rej["reject"] = True
            self._inbox.append((topics["reject"], json_line(rej).rstrip(b"\n"), 1, False))
            self.counts["rejects"] += 1
            counts["rejects"] += 1
        self.counts["posted"] += 1
        counts["posted"] += 1
        self._wake.set()

    def _status(self, state: str, reason: str = "", camera: str | None = None) -> bytes:
        """A status payload: the camera's (``camera``) or the whole connection's; ``dropped`` and
        ``spooled`` are the connection's (one spool)."""
        c = self.counts
        mine = self.cam_counts[camera] if camera is not None else c
        d: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "state": state,
            "run": self.header.run_id,
            "t": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "frames": mine["posted"],
            "rejects": mine["rejects"],
            "dropped": c["dropped"],
            "spooled": c["spooled"],
        }
        if self.station:
            d["camera"] = camera
        if self.station and camera is None:
            d["cameras"] = list(self.headers)
        if reason:
            d["reason"] = reason
        return json_line(d).rstrip(b"\n")

    def _publish(
        self, topic: str, payload: bytes, retain: bool = False, keep: bool = False
    ) -> None:
        """QoS 1 publish; ``keep``: remember the message until its PUBACK, so that one still
        unacknowledged at close goes back to the spool. Never holds our lock inside paho
        (paho calls on_publish holding its own)."""
        with self._lock:
            self._unacked += 1
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if keep:
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                else:
                    self._inflight[info.mid] = (topic, payload, 1, retain)

    # -- publisher thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            spool = Spool(self.spool_path, self._spool_max)
        except BaseException as e:
            self.error = e
            return
        try:
            self._loop(spool)
        except BaseException as e:  # a broken spool must not stop the run's other outputs
            self.error = e
        finally:
            with self._lock:  # handed to paho, never acknowledged: back to disk, in order
                left = list(self._inflight.values())
                self._inflight.clear()
            try:
                spool.push_front(left)
                self.counts["returned_to_spool"] = len(left)
            finally:
                self.spool_left = len(spool)
                spool.close()

    def _room(self) -> int:
        """How many messages may go to paho now (0 while disconnected or resyncing)."""
        if not self._connected.is_set():
            return 0
        with self._lock:
            if self._resync and self._unacked > 0:
                return 0
            self._resync = False
            return max(0, self.window - self._unacked)

    def _loop(self, spool: Spool) -> None:
        next_status = time.monotonic() + self.status_every_s
        deadline: float | None = None
        while True:
            batch: list[Message] = []
            self._busy = True
            while self._inbox:
                batch.append(self._inbox.popleft())
            room = self._room()
            if len(spool):  # older messages wait on disk: send those first
                rows = spool.peek(room) if room else []
                for _, (t, p, _q, r) in rows:
                    self._publish(t, p, r, keep=True)
                if rows:
                    spool.pop(rows[-1][0])
                    self.counts["published"] += len(rows)
                room -= len(rows)
            direct = batch[:room] if not len(spool) else []
            for t, p, _q, r in direct:
                self._publish(t, p, r, keep=True)
            self.counts["published"] += len(direct)
            rest = batch[len(direct) :]
            if rest:
                dropped = spool.push(rest)
                self.counts["dropped"] += dropped
                self.counts["spooled"] += len(rest) - dropped
            self.spool_left = len(spool)
            self._busy = False
            now = time.monotonic()
            if now >= next_status and self._connected.is_set():
                for cam, topics in self.cam_topics.items():
                    self._publish(topics["status"], self._status("online", camera=cam), True)
                if self.station:
                    self._publish(self.will_topic, self._status("online"), True)
                next_status = now + self.status_every_s
            if self._stop.is_set():
                deadline = deadline or now + self.drain_s
                with self._lock:
                    idle = self._unacked == 0
                if (idle and not self._inbox and not len(spool)) or now >= deadline:
                    return  # at the deadline the spool keeps the rest for the next run
            self._wake.wait(0.05)
            self._wake.clear()

    def settle(self, deadline: float) -> None:
        """Wait (until the monotonic ``deadline``) for the publisher to take every posted message
        (to paho or the spool), so the counters are final for the run summary."""
        while (self._inbox or self._busy) and time.monotonic() < deadline:
            time.sleep(0.005)

    def report(self) -> dict[str, Any]:
        with self._lock:
            d: dict[str, Any] = dict(self.counts, unacked=self._unacked)
        d["spool"] = str(self.spool_path)
        d["spool_waiting"] = self.spool_left
        d["topic"] = self.station_base if self.station else self.base
        if self.error is not None:
            d["error"] = f"{type(self.error).__name__}: {self.error}"
        return d

    def camera_report(self, camera: str) -> dict[str, Any]:
        """One camera's part (a station run): its topic path and counts."""
        return {"topic": self.bases[camera], **self.cam_counts[camera]}

    def close(self) -> None:
        """Deliver what waits (up to ``drain_s``), publish state offline, disconnect."""
        self._stop.set()
        self._wake.set()
        self._thread.join(self.drain_s + 5.0)
        if self._connected.is_set():
            last = [
                (t["status"], self._status("offline", "stopped", cam))
                for cam, t in self.cam_topics.items()
            ]
            if self.station:
                last.append((self.will_topic, self._status("offline", "stopped")))
            infos = [self.client.publish(t, p, qos=1, retain=True) for t, p in last]
            for info in infos:
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
