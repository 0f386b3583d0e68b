"""A station's line outputs, with the real parts: one mosquitto-connected MQTT client carrying
every camera's results under its own topics, one asyncua server with a node set per camera read
by an asyncua client, one /metrics port with per-camera series and a /healthz that names the
camera that stalled; and the CLI that now takes these flags for a station."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from brokers import (  # noqa: F401  (fixture)
    Mosquitto,
    Subscriber,
    free_port,
    http_get,
    mosquitto,
    until,
)

from edge.cli import main
from edge.data.demo_line import LineConfig, render_frame
from edge.runtime.line import LineOutputsConfig
from edge.runtime.replay import ReplaySource
from edge.runtime.sources.base import SourceOptions
from edge.runtime.station import run_station
from edge.runtime.station_config import Camera, StationConfig
from tiny_models import make_tiny_bundle

FAST = SourceOptions(read_timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.1)


@pytest.fixture(scope="module")
def dyn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("stline"), dynamic_batch=True, max_batch=4)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [render_frame(i, LineConfig(width=96, height=80)).image for i in range(6)]


def replay(images: list[np.ndarray], ids: list[str], **kw: Any) -> dict[str, ReplaySource]:
    return {c: ReplaySource(images, name=c, options=FAST, **kw) for c in ids}


def jsonl_frames(path: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return [r for r in recs if "event" not in r]


@contextmanager
def live_station(
    bundle: Path, srcs: dict[str, ReplaySource], line: LineOutputsConfig
) -> Iterator[dict[str, Any]]:
    """A station run on ``srcs`` in a thread until the block ends; yields the summary box."""
    stop, box = threading.Event(), {}
    cfg = StationConfig(tuple(Camera(c, "replay") for c in srcs), warmup=0, line=line)

    def target() -> None:
        try:
            box["summary"] = run_station(bundle, cfg, sources=srcs, stop=stop)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    try:
        yield box
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive() and "error" not in box, box.get("error")


def sample(text: str, name: str, camera: str) -> float:
    m = re.search(rf'^{re.escape(name)}{{camera="{camera}"}} (\S+)$', text, re.M)
    assert m, f'{name}{{camera="{camera}"}} not in the scrape'
    return float(m.group(1))


def test_mqtt_each_camera_on_its_own_topics_over_one_client(
    dyn_bundle: Path,
    images: list[np.ndarray],
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    pytest.importorskip("paho.mqtt.client", reason="pip install 'etr-edge[mqtt]'")
    ids = ["c0", "c1", "c2"]
    out = tmp_path / "st.jsonl"
    line = LineOutputsConfig(
        mqtt=f"mqtt://127.0.0.1:{mosquitto.port}/plant/l1",
        station="st1",
        reject="defect != ok",
        spool=tmp_path / "spool",
    )
    cfg = StationConfig(
        tuple(Camera(c, "replay") for c in ids), frames=10, out=out, warmup=0, line=line
    )
    sub = Subscriber(mosquitto.port, "plant/l1/st1/#")
    try:
        s = run_station(dyn_bundle, cfg, sources=replay(images, ids, fps=60))
        assert sub.wait_for(lambda: len(sub.json("/result")) >= 30)
        assert sub.wait_for(lambda: any(m["state"] == "offline" for m in sub.json("st1/status")))
        with sub.lock:
            msgs = [(t, json.loads(p)) for t, p, _ in sub.messages]
    finally:
        sub.close()
    frames = jsonl_frames(out)
    for cam in ids:
        base = f"plant/l1/st1/{cam}"
        got = [m for t, m in msgs if t == f"{base}/result"]
        mine = [r for r in frames if r["camera"] == cam]
        assert len(mine) == 10 and [r["frame"] for r in got] == [r["frame"] for r in mine]
        assert all(r["camera"] == cam for r in got)
        want_reject = [r["frame"] for r in mine if r["tasks"]["defect"]["label"] != "ok"]
        assert [r["frame"] for r in got if r["reject"]] == want_reject
        rejects = [m for t, m in msgs if t == f"{base}/reject"]
        assert [m["frame"] for m in rejects] == want_reject
        assert all(m["camera"] == cam for m in rejects)
        (info,) = [m for t, m in msgs if t == f"{base}/info"]
        assert info["camera"] == cam and info["station"] == "st1" and info["run"] == got[0]["run"]
        status = [m for t, m in msgs if t == f"{base}/status"]
        assert status[0]["state"] == "online" and status[-1]["state"] == "offline"
        assert status[-1]["frames"] == 10 and status[-1]["camera"] == cam
        part = s["cameras"][cam]["line"]
        assert part["frames"] == 10 and part["rejects"] == len(want_reject)
        assert part["mqtt"] == {"topic": base, "posted": 10, "rejects": len(want_reject)}
    results = [m for t, m in msgs if t.endswith("/result")]
    assert len({m["msg"] for m in results}) == 30  # unique across cameras (frame ids are not)
    station = [m for t, m in msgs if t == "plant/l1/st1/status"]  # the connection's Last Will
    assert station[-1]["state"] == "offline" and station[-1]["reason"] == "stopped"
    assert station[-1]["cameras"] == ids and station[-1]["frames"] == 30
    m = s["line"]["mqtt"]
    assert m["connects"] == 1 and m["posted"] == 30 and m["dropped"] == 0
    assert m["spool"].endswith("st1.sqlite") and m["topic"] == "plant/l1/st1"


async def read_nodes(url: str, names: list[str]) -> dict[str, Any]:
    from asyncua import Client, ua

    async with Client(url, timeout=4) as c:
        idx = await c.get_namespace_index("urn:etr-edge")
        return {n: await c.get_node(ua.NodeId(n, idx)).read_value() for n in names}


def test_opcua_one_server_one_node_set_per_camera(
    dyn_bundle: Path, images: list[np.ndarray]
) -> None:
    pytest.importorskip("asyncua", reason="pip install 'etr-edge[opcua]'")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    names = []
    for cam in ("left", "right"):
        names += [f"{cam}.Station.{v}" for v in ("Frames", "Camera", "LastFrame", "Heartbeat")]
        names += [f"{cam}.Task.defect.Label", f"{cam}.Task.angle.Value"]
    srcs = replay(images, ["left", "right"], fps=30)
    line = LineOutputsConfig(opcua=url, station="st2")
    with live_station(dyn_bundle, srcs, line) as box:
        first = until(
            lambda: (r := asyncio.run(read_nodes(url, names)))["right.Station.Frames"] and r
        )
        time.sleep(1.5)
        later = asyncio.run(read_nodes(url, names))
        with pytest.raises(Exception, match="BadNodeIdUnknown"):  # no one-camera set here
            asyncio.run(read_nodes(url, ["Station.Frames"]))
    for cam in ("left", "right"):
        assert later[f"{cam}.Station.Camera"] == cam
        assert later[f"{cam}.Station.Frames"] > first[f"{cam}.Station.Frames"]
        assert later[f"{cam}.Station.Heartbeat"] > first[f"{cam}.Station.Heartbeat"]
        assert later[f"{cam}.Task.defect.Label"] in ("ok", "scratch", "hole", "stain")
        assert box["summary"]["cameras"][cam]["line"]["frames"] >= later[f"{cam}.Station.Frames"]


def test_metrics_per_camera_and_healthz_names_the_stalled_camera(
    dyn_bundle: Path, images: list[np.ndarray]
) -> None:
    pytest.importorskip("prometheus_client", reason="pip install 'etr-edge[metrics]'")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    srcs = replay(images, ["c0"], fps=40)
    srcs["dead"] = ReplaySource(images, fps=40, stall=(30, 3.0), name="dead", options=FAST)
    line = LineOutputsConfig(metrics=f"127.0.0.1:{port}", stall_s=0.5)
    with live_station(dyn_bundle, srcs, line) as box:
        until(lambda: sample(http_get(base + "/metrics")[1], "etr_frames_total", "dead") > 0)
        _, text = http_get(base + "/metrics")
        assert sample(text, "etr_frames_total", "c0") > 0
        assert 'etr_stage_seconds_count{camera="c0",stage="latency"}' in text
        assert sample(text, "etr_up", "c0") == 1.0
        assert 'camera="dead"' in text and "etr_run_info{" in text
        _, body = until(lambda: (r := http_get(base + "/healthz"))[0] == 503 and r, 8)
        health = json.loads(body)
        assert health["ok"] is False and health["stalled"] == ["dead"], health
        _, text = http_get(base + "/metrics")
        assert sample(text, "etr_up", "dead") == 0.0 and sample(text, "etr_up", "c0") == 1.0
        assert sample(text, "etr_fps", "c0") > 5
        until(lambda: http_get(base + "/healthz")[0] == 200, 10)  # the camera came back
        until(lambda: sample(http_get(base + "/metrics")[1], "etr_gaps_total", "dead") >= 1, 5)
    s = box["summary"]
    assert s["cameras"]["dead"]["line"]["gaps"] >= 1 and s["cameras"]["c0"]["line"]["gaps"] == 0
    assert s["line"]["metrics"]["port"] == port
    with pytest.raises(OSError):
        http_get(base + "/healthz")  # the server went with the run


def test_cli_station_takes_line_flags_and_refuses_the_rest(
    dyn_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("prometheus_client", reason="pip install 'etr-edge[metrics]'")
    src = "synthetic:?frames=4&width=96&height=80"
    srcs = ["--source", src, "--source", src]
    out = tmp_path / "cli.jsonl"
    metrics = ["--metrics", f"127.0.0.1:{free_port()}", "--reject", "defect != ok"]
    assert main(["run", str(dyn_bundle), *srcs, "--out", str(out), *metrics]) == 0
    summary = json.loads((tmp_path / "cli.summary.json").read_text())
    for cam in ("cam0", "cam1"):
        part = summary["cameras"][cam]["line"]
        assert part["frames"] == 4 and part["metrics"] == {"label": f'camera="{cam}"'}
        mine = [r for r in jsonl_frames(out) if r["camera"] == cam]
        assert part["rejects"] == sum(r["tasks"]["defect"]["label"] != "ok" for r in mine)
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    for flags, said in (
        (["--mqtt", "http://broker/x"], "--mqtt"),
        (["--metrics", "127.0.0.1:0", "--reject", "nosuchtask != ok"], "nosuchtask"),
        (["--metrics", "127.0.0.1:0", "--camera", "one"], "--camera"),
        (["--opcua", "opc.tcp://nohostport"], "--opcua"),
        (["--verify-key", str(tmp_path / "k.pub")], "k.pub"),
        (["--rotate", "1h"], "--rotate"),
        (["--trigger-every", "100"], "--trigger-every"),
    ):
        assert main(["run", str(dyn_bundle), *srcs, "--out", str(bad), *flags]) == 2, flags
        assert said in capsys.readouterr().err, flags
        assert not bad.exists(), flags  # refused before any output was opened
