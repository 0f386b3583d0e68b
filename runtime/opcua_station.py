"""The station as an OPC UA server (asyncua, the ``opcua`` extra) that a PLC or SCADA reads.

Namespace ``urn:etr-edge`` (its index from the server's NamespaceArray); string node ids, so a
client may address them directly (``ns=<idx>;s=Station.Frames``). Under ``Objects/Station``:

====================  ========  ===========================================================
node id (s=...)       type      meaning
====================  ========  ===========================================================
Station.Name          String    --station
Station.Camera        String    camera id (from the source or --camera)
Station.RunId         String    this run's id (as on MQTT)
Station.BundleHash    String    sha256 of the bundle's manifest.json
Station.Backend       String    onnxruntime / tensorrt; Station.Precision: fp32 / fp16 / int8
Station.Frames        UInt64    frames processed
Station.Rejects       UInt64    frames rejected by --reject
Station.Drops         UInt64    frames dropped (latest policy); Station.Overruns: fifo full
Station.Gaps          UInt64    source stalls that were reopened
Station.Heartbeat     UInt64    +1 every second while the server runs
Station.LastFrame     UInt64    id of the last frame published
Station.Reject        Boolean   the last frame's reject bit
Station.LatencyMs     Double    the last frame's capture -> result latency
Task.<t>.Label        String    per task: label (classification / on labels, comma-joined)
Task.<t>.Score        Double    its probability
Task.<t>.Value        Double    regression value / segmentation defect share
Task.<t>.Frame        UInt64    frame of the task's last result (tasks may skip frames)
====================  ========  ===========================================================

A station run (several cameras) serves one server with one such node set per camera: the
object ``Objects/<camera>`` (node id ``s=<camera>``) holds that camera's variables and task
objects, each node id prefixed by the camera id: ``<camera>.Station.Frames``,
``<camera>.Task.<t>.Label`` (``Station.Camera`` says the id; ``Heartbeat`` ticks in each).

The server runs its own asyncio loop on a thread. The line thread keeps the newest values and
hands them to that loop with ``run_coroutine_threadsafe`` at most 10 times a second, when the
previous hand-over is done (never waiting: a slow client costs intermediate values, never
inference time); the loop's 1 s heartbeat also writes what is left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from edge.core.errors import ConfigError, require
from edge.runtime.line import RunHeader

NAMESPACE = "urn:etr-edge"
_STRING, _DOUBLE, _UINT, _BOOL = "String", "Double", "UInt64", "Boolean"
STATION_VARS = {
    "Name": _STRING,
    "Camera": _STRING,
    "RunId": _STRING,
    "BundleHash": _STRING,
    "Backend": _STRING,
    "Precision": _STRING,
    "Frames": _UINT,
    "Rejects": _UINT,
    "Drops": _UINT,
    "Overruns": _UINT,
    "Gaps": _UINT,
    "Heartbeat": _UINT,
    "LastFrame": _UINT,
    "Reject": _BOOL,
    "LatencyMs": _DOUBLE,
}
TASK_VARS = {"Label": _STRING, "Score": _DOUBLE, "Value": _DOUBLE, "Frame": _UINT}
_ZERO = {_STRING: "", _DOUBLE: 0.0, _UINT: 0, _BOOL: False}


def _ua() -> Any:
    """``asyncua.ua`` (an optional extra: imported only when --opcua is used)."""
    from asyncua import ua

    return ua


def parse_opcua_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "opc.tcp" or not parts.hostname or port is None:
        raise ConfigError(
            f"--opcua {url!r}: expected opc.tcp://HOST:PORT, e.g. opc.tcp://0.0.0.0:4840"
        )
    return parts.hostname, port


class OpcuaStation:
    name = "opcua"
    """Start the server (``__init__`` returns once it listens); ``update`` from one thread.
    ``headers``: one per camera; ``station``: one node set per camera (module doc)."""

    def __init__(
        self,
        url: str,
        headers: RunHeader | Sequence[RunHeader],
        user: str | None = None,
        start_timeout: float = 30.0,
        *,
        station: bool = False,
    ) -> None:
        host, port = parse_opcua_url(url)
        require("asyncua", extra="opcua", purpose="--opcua")
        self.url = f"opc.tcp://{host}:{port}/"
        hs = [headers] if isinstance(headers, RunHeader) else list(headers)
        self.headers = {h.camera: h for h in hs}
        self.header, self.station = hs[0], station
        self.credentials = tuple(user.split(":", 1)) if user else None
        self.loop = asyncio.new_event_loop()
        self.nodes: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._pending: concurrent.futures.Future[None] | None = None
        self._values: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()  # _values: merged by the line thread, taken by either
        self._last_handover = 0.0
        self.min_interval_s = 0.1
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name="edge-opcua", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            raise ConfigError(f"--opcua {url}: the server did not start in {start_timeout:.0f} s")
        if self.error is not None:
            raise ConfigError(f"--opcua {url}: cannot serve ({self.error})") from self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        # asyncua is an optional extra: imported only when --opcua is used
        from asyncua import Server
        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.server.user_managers import UserManager

        ua: Any = _ua()
        logging.getLogger("asyncua").setLevel(logging.ERROR)  # one line per client otherwise
        creds = self.credentials

        class _Users(UserManager):  # type: ignore[misc]
            def get_user(
                self,
                iserver: Any,
                username: str | None = None,
                password: str | None = None,
                certificate: Any = None,
            ) -> Any:
                if creds is not None and (username, password) == creds:
                    return User(role=UserRole.User, name=username)
                return None  # refused: BadUserAccessDenied

        try:
            srv = Server(user_manager=_Users() if creds else None)
            await srv.init()
            srv.set_endpoint(self.url)
            srv.set_server_name(f"etr-edge {self.header.station}")
            srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            if creds:
                if hasattr(srv, "set_identity_tokens"):  # asyncua >= 1.1.6: anonymous refused
                    srv.set_identity_tokens([ua.UserNameIdentityToken])
                else:  # asyncua 1.1.5, the last for Python 3.8
                    srv.set_security_IDs(["Username"])
            idx = await srv.register_namespace(NAMESPACE)
            for h in self.headers.values():
                await self._node_set(srv, idx, h)
            self._stop = asyncio.Event()
            async with srv:
                self._ready.set()
                beat = 0
                while not self._stop.is_set():
                    try:
                        await asyncio.wait_for(self._stop.wait(), 1.0)
                    except asyncio.TimeoutError:
                        beat += 1
                        beats = {f"{p}Station.Heartbeat": (beat, _UINT) for p in self._prefixes()}
                        await self._write({**self._take(), **beats})
        except BaseException as e:
            self.error = e
            self._ready.set()

    def _prefix(self, camera: str) -> str:
        """What a camera's node ids start with: ``<camera>.`` in a station, nothing otherwise."""
        return f"{camera}." if self.station else ""

    def _prefixes(self) -> list[str]:
        return [self._prefix(c) for c in self.headers]

    async def _node_set(self, srv: Any, idx: int, h: RunHeader) -> None:
        """One camera's object, variables and task objects (the module doc's table)."""
        ua = _ua()
        pre = self._prefix(h.camera)
        top = h.camera if self.station else "Station"
        station = await srv.nodes.objects.add_object(ua.NodeId(top, idx), top)
        init = {
            "Name": h.station,
            "Camera": h.camera,
            "RunId": h.run_id,
            "BundleHash": h.bundle_hash,
            "Backend": h.backend,
            "Precision": h.precision,
        }
        for name, vt in STATION_VARS.items():
            await self._var(station, idx, f"{pre}Station.{name}", name, init.get(name), vt)
        for task in h.tasks:
            obj = await station.add_object(ua.NodeId(f"{pre}Task.{task}", idx), task)
            for name, vt in TASK_VARS.items():
                await self._var(obj, idx, f"{pre}Task.{task}.{name}", name, None, vt)

    async def _var(self, parent: Any, idx: int, nid: str, name: str, value: Any, vt: str) -> None:
        ua = _ua()
        vtype = getattr(ua.VariantType, vt)
        v = _ZERO[vt] if value is None else value
        self.nodes[nid] = await parent.add_variable(ua.NodeId(nid, idx), name, ua.Variant(v, vtype))

    async def _write(self, values: Mapping[str, tuple[Any, str]]) -> None:
        ua = _ua()
        for nid, (v, vt) in values.items():
            await self.nodes[nid].write_value(ua.Variant(v, getattr(ua.VariantType, vt)))

    # -- fed by the line thread ---------------------------------------------------------------
    def update(
        self,
        counters: Mapping[str, int],
        record: Mapping[str, Any] | None,
        camera: str | None = None,
    ) -> None:
        """A camera's newest counters (Frames, Rejects, Drops, Overruns, Gaps) and, for a frame,
        its record; handed to the server loop at most every ``min_interval_s`` and only when the
        previous hand-over finished (never waits; the server's 1 s tick writes what is left)."""
        cam = camera or (str(record["camera"]) if record and "camera" in record else None)
        pre = self._prefix(cam or self.header.camera)
        with self._lock:
            self._merge(counters, record, pre)
        if time.monotonic() - self._last_handover >= self.min_interval_s:
            self.flush()

    def _merge(
        self, counters: Mapping[str, int], record: Mapping[str, Any] | None, pre: str = ""
    ) -> None:
        vals = self._values
        for k, n in counters.items():
            vals[f"{pre}Station.{k}"] = (int(n), _UINT)
        if record is not None:
            vals[f"{pre}Station.LastFrame"] = (int(record["frame"]), _UINT)
            vals[f"{pre}Station.Reject"] = (bool(record["reject"]), _BOOL)
            vals[f"{pre}Station.LatencyMs"] = (float(record["latency_ms"]), _DOUBLE)
            for task, d in record["tasks"].items():
                t = f"{pre}Task.{task}"
                if f"{t}.Frame" not in self.nodes:
                    continue
                vals[f"{t}.Frame"] = (int(record["frame"]), _UINT)
                if "label" in d:
                    vals[f"{t}.Label"] = (str(d["label"]), _STRING)
                    vals[f"{t}.Score"] = (float(d["score"]), _DOUBLE)
                if "value" in d:
                    vals[f"{t}.Value"] = (float(d["value"]), _DOUBLE)

    def _take(self) -> dict[str, tuple[Any, str]]:
        with self._lock:
            batch, self._values = self._values, {}
        return batch

    def flush(self, wait: float = 0.0) -> None:
        """Hand the newest values to the loop unless a hand-over is still running; ``wait`` > 0
        (only at close) waits for it."""
        if self._pending is not None and not self._pending.done():
            if wait <= 0:
                self.skipped += 1
                return
            concurrent.futures.wait([self._pending], wait)
        if self._values and self._thread.is_alive():
            self._last_handover = time.monotonic()
            self._pending = asyncio.run_coroutine_threadsafe(self._write(self._take()), self.loop)
            if wait > 0:
                concurrent.futures.wait([self._pending], wait)

    def frame(
        self, record: Mapping[str, Any], timings_ns: Mapping[str, int], counters: Mapping[str, int]
    ) -> None:
        self.update(counters, record)

    def event(self, event: Mapping[str, Any], counters: Mapping[str, int]) -> None:
        cam = event.get("camera")
        self.update(counters, None, str(cam) if cam in self.headers else None)

    def report(self) -> dict[str, Any]:
        return {"url": self.url, "skipped_updates": self.skipped}

    def camera_report(self, camera: str) -> dict[str, Any]:
        return {"object": camera, "nodes": f"{self._prefix(camera)}Station.*"}

    def close(self) -> None:
        self.flush(wait=2.0)
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)
