"""MQTT out against a real mosquitto: ordered QoS 1 results, info/status/reject, a broker restart
mid-run that loses nothing, the spool bound, the Last Will on SIGKILL, and TLS with a test CA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from brokers import Mosquitto, Subscriber, free_port, mosquitto  # noqa: F401  (fixture)

from edge.core.errors import ConfigError, ScheduleError
from edge.core.files import sha256_file
from edge.runtime.line import LineOutputsConfig
from edge.runtime.run import RunConfig, run_bundle

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt missing: pip install 'etr-edge[mqtt]'")
REPO = Path(__file__).resolve().parents[2]


def first_seen(frames: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for f in frames:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def line(port: int, tmp_path: Path, **kw: Any) -> LineOutputsConfig:
    kw.setdefault("spool", tmp_path / "spool")
    return LineOutputsConfig(
        mqtt=f"mqtt://127.0.0.1:{port}/plant/l1", station="st1", camera="cam", **kw
    )


def test_results_in_order_with_info_status_and_rejects(
    tiny_bundle: Path,
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    sub = Subscriber(mosquitto.port, "plant/l1/st1/cam/#")
    try:
        cfg = RunConfig(
            source="synthetic:?frames=40",
            out=tmp_path / "r.jsonl",
            warmup=0,
            line=line(mosquitto.port, tmp_path, reject="defect != ok"),
        )
        s = run_bundle(tiny_bundle, cfg)
        assert sub.wait_for(lambda: len(sub.json("/result")) >= 40)
        assert sub.wait_for(lambda: any(m["state"] == "offline" for m in sub.json("/status")))
        results = sub.json("/result")
    finally:
        sub.close()
    assert [r["frame"] for r in results] == list(range(40))  # in order, each once
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    jsonl = [j for j in lines if "event" not in j]  # frame lines (the run header is an event)
    want_reject = [j["frame"] for j in jsonl if j["tasks"]["defect"]["label"] != "ok"]
    assert [r["frame"] for r in results if r["reject"]] == want_reject
    assert [m["frame"] for m in sub.json("/reject")] == want_reject
    assert all(r["v"] == 1 and r["msg"] == f"{r['run']}/{r['frame']}" for r in results)
    assert results[3]["tasks"]["defect"]["label"] == jsonl[3]["tasks"]["defect"]["label"]
    (info,) = sub.json("/info")
    assert info["bundle_hash"] == sha256_file(tiny_bundle / "manifest.json")
    assert info["run"] == results[0]["run"] == s.run["line"]["run_id"]
    assert info["backend"] == "onnxruntime" and info["precision"] == "fp32"
    states = [m["state"] for m in sub.json("/status")]
    assert states[0] == "online" and states[-1] == "offline"
    assert sub.json("/status")[-1]["reason"] == "stopped"
    m = s.run["line"]["mqtt"]
    assert m["dropped"] == 0 and m["posted"] == 40 and m["rejects"] == len(want_reject)


@pytest.mark.slow
def test_broker_down_10s_mid_run_loses_nothing(tiny_bundle: Path, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistent=True).start()
    sub = Subscriber(broker.port, "plant/l1/st1/cam/result", persistent=True)
    n = 16 * 30  # 16 s at 30 fps
    cfg = RunConfig(
        source="synthetic:?frames=480&fps=30", warmup=0, line=line(broker.port, tmp_path)
    )
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.update(s=run_bundle(tiny_bundle, cfg)))
    try:
        runner.start()
        assert sub.wait_for(lambda: len(sub.messages) >= 60, 10)
        broker.stop()  # SIGTERM: the broker saves the subscriber's session
        time.sleep(10.0)
        down_frames = len(sub.messages)
        broker.start()
        runner.join(60)
        assert not runner.is_alive()
        assert sub.wait_for(lambda: len({r["frame"] for r in sub.json("result")}) >= n, 20)
        frames = [r["frame"] for r in sub.json("result")]
    finally:
        runner.join(60)
        sub.close()
        broker.stop()
    assert sorted(set(frames)) == list(range(n))  # every frame at least once
    assert first_seen(frames) == list(range(n))  # and in order
    m = box["s"].run["line"]["mqtt"]
    assert m["dropped"] == 0 and m["spooled"] > 0 and m["disconnects"] >= 1
    assert down_frames < n - 200  # the broker really was away for a large part of the run


def test_spool_bound_counts_drops_and_keeps_the_rest_for_later(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens: every message goes to the spool
    cfg = RunConfig(
        source="synthetic:?frames=20",
        warmup=0,
        line=line(port, tmp_path, spool_max=5, mqtt_drain_s=0.5),
    )
    s = run_bundle(tiny_bundle, cfg)
    m = s.run["line"]["mqtt"]
    assert (m["posted"], m["spooled"], m["dropped"], m["spool_waiting"]) == (20, 5, 15, 5)
    first_run = s.run["line"]["run_id"]
    broker = Mosquitto(tmp_path / "broker", port=port).start()
    try:
        sub = Subscriber(port, "plant/l1/st1/cam/result")
        run_bundle(tiny_bundle, RunConfig(source="synthetic:?frames=3", warmup=0, line=cfg.line))
        assert sub.wait_for(lambda: len(sub.messages) >= 8)
        got = [(r["run"] == first_run, r["frame"]) for r in sub.json("result")]
        sub.close()
    finally:
        broker.stop()
    # the previous run's spooled results first, oldest first, then this run's
    assert got == [(True, 0), (True, 1), (True, 2), (True, 3), (True, 4)] + [
        (False, i) for i in range(3)
    ]


def test_last_will_when_the_runtime_is_sigkilled(
    tiny_bundle: Path,
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    sub = Subscriber(mosquitto.port, "plant/l1/st1/+/status")
    url = f"mqtt://127.0.0.1:{mosquitto.port}/plant/l1"
    cmd = [sys.executable, "-m", "edge.cli", "run", str(tiny_bundle)]
    cmd += ["--source", "synthetic:?fps=20&live=1", "--mqtt", url, "--station", "st1"]
    cmd += ["--mqtt-spool", str(tmp_path / "spool")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    try:
        assert sub.wait_for(lambda: any(m["state"] == "online" for m in sub.json("/status")), 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert sub.wait_for(lambda: sub.json("/status")[-1]["state"] == "offline", 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.close()
    last = sub.json("/status")[-1]
    assert last["reason"] == "lost"
    assert sub.messages[-1][0] == "plant/l1/st1/synthetic/status"  # camera id from the source


def test_tls_with_a_ca_made_here(tiny_bundle: Path, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", tls=True).start()
    try:
        assert broker.ca is not None
        sub = Subscriber(broker.port, "plant/l1/#", ca=broker.ca)
        cfg = LineOutputsConfig(
            mqtt=f"mqtts://127.0.0.1:{broker.port}/plant/l1",
            mqtt_ca=broker.ca,
            spool=tmp_path / "spool",
        )
        run_bundle(tiny_bundle, RunConfig(source="synthetic:?frames=10", warmup=0, line=cfg))
        assert sub.wait_for(lambda: len(sub.json("/result")) >= 10)
        assert [r["frame"] for r in sub.json("/result")] == list(range(10))
        sub.close()
    finally:
        broker.stop()


def test_bad_line_options_fail_before_any_output(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    bad = [
        (LineOutputsConfig(mqtt="http://x/y"), ConfigError, "mqtt://"),
        (LineOutputsConfig(mqtt="mqtt://127.0.0.1:1/"), ConfigError, "prefix"),
        (
            LineOutputsConfig(mqtt="mqtt://127.0.0.1:1/p", reject="nosuch != ok"),
            ScheduleError,
            "--reject",
        ),
        (LineOutputsConfig(metrics="nohost"), ConfigError, "HOST:PORT"),
        (LineOutputsConfig(opcua="tcp://x"), ConfigError, "opc.tcp://"),
    ]
    for cfg, err, text in bad:
        with pytest.raises(err, match=text):
            run_bundle(tiny_bundle, RunConfig(source="synthetic:?frames=2", out=out, line=cfg))
        assert not out.exists()
    with pytest.raises(ConfigError, match="--station"):
        LineOutputsConfig(station="a/b")


def test_unacknowledged_at_the_end_go_back_to_the_spool(tiny_bundle: Path, tmp_path: Path) -> None:
    """The broker freezes (SIGSTOP: no PUBACKs, the connection looks alive) before the run ends:
    what was handed to paho but never acknowledged is spooled and sent by the next run."""
    from edge.runtime.spool import Spool

    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "plant/l1/st1/cam/result")
    cfg = line(broker.port, tmp_path, mqtt_drain_s=1.0)
    box: dict[str, Any] = {}
    run1 = threading.Thread(
        target=lambda: box.update(
            s=run_bundle(
                tiny_bundle,
                RunConfig(source="synthetic:?frames=60&fps=30", warmup=0, line=cfg),
            )
        )
    )
    assert broker.proc is not None
    try:
        run1.start()
        assert sub.wait_for(lambda: len(sub.messages) >= 10, 20)
        broker.proc.send_signal(signal.SIGSTOP)
        run1.join(60)
        first_run = box["s"].run["line"]["run_id"]
        spool = Spool(tmp_path / "spool" / "st1-cam.sqlite", 100)
        waiting = len(spool)
        spool.close()
        broker.proc.send_signal(signal.SIGCONT)
        run_bundle(tiny_bundle, RunConfig(source="synthetic:?frames=2", warmup=0, line=cfg))
        got = {r["frame"] for r in sub.json("result") if r["run"] == first_run}
        assert sub.wait_for(
            lambda: (
                {r["frame"] for r in sub.json("result") if r["run"] == first_run} >= set(range(60))
            ),
            20,
        ), sorted(got)
    finally:
        if broker.proc is not None:
            broker.proc.send_signal(signal.SIGCONT)
        sub.close()
        broker.stop()
    assert waiting > 0  # the frozen broker's share really went back to disk
