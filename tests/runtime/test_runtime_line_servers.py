"""OPC UA and Prometheus during a live run: an asyncua client reads the station's variables and
sees them change, wrong credentials are refused; /metrics is scraped over HTTP and /healthz
turns 503 while the source is paused."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from brokers import free_port, http_get, until

from edge.core.files import sha256_file
from edge.runtime.line import LineOutputsConfig
from edge.runtime.run import RunConfig, run_bundle
from edge.runtime.sources.readers import RawFrame, SyntheticSource


class PausableLine(SyntheticSource):
    """The live synthetic line at 50 fps that delivers nothing while ``paused`` is set."""

    def __init__(self) -> None:
        super().__init__("synthetic:?fps=50&live=1", fps=50.0, live=True)
        self.paused = threading.Event()

    def _read_impl(self) -> RawFrame | None:
        if self.paused.is_set():
            time.sleep(0.01)
            return None
        return super()._read_impl()


@contextmanager
def live_run(
    bundle: Path, line: LineOutputsConfig
) -> Iterator[tuple[PausableLine, dict[str, Any]]]:
    """``edge run`` on a pausable live line in a thread until the block ends."""
    source, stop, box = PausableLine(), threading.Event(), {}
    cfg = RunConfig(source="synthetic:", warmup=0, line=line)

    def target() -> None:
        try:
            box["summary"] = run_bundle(bundle, cfg, source=source, stop=stop)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    try:
        yield source, box
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive() and "error" not in box, box.get("error")


def sample(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in the scrape"
    return float(m.group(1))


def test_metrics_scraped_during_a_run_and_healthz_503_on_stall(tiny_bundle: Path) -> None:
    pytest.importorskip("prometheus_client", reason="pip install 'etr-edge[metrics]'")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    line = LineOutputsConfig(metrics=f"127.0.0.1:{port}", stall_s=0.5, reject="defect != ok")
    with live_run(tiny_bundle, line) as (source, _):
        until(lambda: sample(http_get(base + "/metrics")[1], "etr_frames_total") > 0)
        assert http_get(base + "/healthz")[0] == 200
        _, first = http_get(base + "/metrics")
        time.sleep(0.5)
        code, text = http_get(base + "/metrics")
        assert code == 200
        assert sample(text, "etr_frames_total") > sample(first, "etr_frames_total") > 0
        assert sample(text, "etr_fps") > 5 and sample(text, "etr_up") == 1.0
        assert 'etr_stage_seconds_bucket{le="+Inf",stage="trunk"}' in text
        assert 'etr_stage_seconds_count{stage="latency"}' in text
        assert "etr_rejects_total" in text and "etr_drops_total" in text
        assert 'bundle_hash="' + sha256_file(tiny_bundle / "manifest.json") in text
        source.paused.set()
        code, body = until(lambda: (r := http_get(base + "/healthz"))[0] == 503 and r, 5)
        assert '"ok": false' in body
        assert sample(http_get(base + "/metrics")[1], "etr_up") == 0.0
        source.paused.clear()
        until(lambda: http_get(base + "/healthz")[0] == 200, 10)
        assert http_get(base + "/nope")[0] == 404
    with pytest.raises(OSError):
        http_get(base + "/healthz")  # the server went with the run


async def read_station(url: str, names: list[str], user: str | None = None) -> dict[str, Any]:
    from asyncua import Client, ua

    c = Client(url, timeout=4)
    if user is not None:
        name, password = user.split(":", 1)
        c.set_user(name)
        c.set_password(password)
    async with c:
        idx = await c.get_namespace_index("urn:etr-edge")
        out = {}
        for n in names:
            out[n] = await c.get_node(ua.NodeId(n, idx)).read_value()
        return out


NAMES = ["Station.Frames", "Station.Heartbeat", "Station.BundleHash", "Station.Reject"]
NAMES += ["Task.defect.Label", "Task.defect.Score", "Task.angle.Value", "Station.LastFrame"]


def test_opcua_client_reads_the_station_and_sees_it_change(tiny_bundle: Path) -> None:
    pytest.importorskip("asyncua", reason="pip install 'etr-edge[opcua]'")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    with live_run(tiny_bundle, LineOutputsConfig(opcua=url, station="st1", reject="defect != ok")):
        first = until(lambda: (r := asyncio.run(read_station(url, NAMES)))["Station.Frames"] and r)
        time.sleep(1.5)
        later = asyncio.run(read_station(url, NAMES))
    assert later["Station.Frames"] > first["Station.Frames"]
    assert later["Station.LastFrame"] > first["Station.LastFrame"]
    assert later["Station.Heartbeat"] > first["Station.Heartbeat"]
    assert later["Station.BundleHash"] == sha256_file(tiny_bundle / "manifest.json")
    assert later["Task.defect.Label"] in ("ok", "scratch", "hole", "stain")
    assert 0.0 < later["Task.defect.Score"] <= 1.0
    assert isinstance(later["Station.Reject"], bool)


def test_opcua_with_a_user_refuses_wrong_and_anonymous_clients(tiny_bundle: Path) -> None:
    pytest.importorskip("asyncua", reason="pip install 'etr-edge[opcua]'")
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    with live_run(tiny_bundle, LineOutputsConfig(opcua=url, opcua_user="plc:s3cret")):
        got = until(lambda: asyncio.run(read_station(url, ["Station.Frames"], "plc:s3cret")))
        assert got["Station.Frames"] >= 0
        for who in ("plc:wrong", None):
            with pytest.raises(Exception, match=r"Bad(UserAccessDenied|IdentityTokenRejected)"):
                asyncio.run(read_station(url, ["Station.Frames"], who))
