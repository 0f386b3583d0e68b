"""Line outputs' cost: ``edge run`` fps with JSONL only vs JSONL + MQTT + OPC UA + metrics, one
process, arms interleaved per round (ONNX Runtime CPU, the demo model, in-memory frames).

Target (issue 14): with every line output on, at least 95 % of the JSONL-only fps; and the same
with the MQTT broker down for the middle third of the run (stopped when a third of the frames
were read, restarted at two thirds), with zero results lost: a subscriber with a persistent
session counts each frame's result (by the record's ``msg``) after the run.

Arms per round (their order rotates from round to round; ratios are paired per round):
- jsonl: ``--out`` only;
- all on: ``--out`` + ``--mqtt`` (real mosquitto on 127.0.0.1) + ``--opcua`` + ``--metrics``;
- broker down 1/3: as "all on", the broker is stopped (SIGTERM) for the middle third.

    python bench/bench_sinks.py [--frames 900] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_pipeline import MemorySource

from edge.data.demo_line import demo_config, render_frame
from edge.runtime.line import LineOutputsConfig
from edge.runtime.run import RunConfig, run_bundle
from edge.runtime.sources.base import RawFrame


def _load_brokers() -> Any:
    """The tests' mosquitto helper (a real broker), by path: adding tests/ to sys.path would
    shadow the ``edge`` package with the tests' ``tests/edge`` folder."""
    path = Path(__file__).resolve().parents[1] / "tests" / "brokers.py"
    spec = importlib.util.spec_from_file_location("brokers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


brokers = _load_brokers()
Mosquitto, Subscriber, free_port = brokers.Mosquitto, brokers.Subscriber, brokers.free_port


class OutageSource(MemorySource):
    """MemorySource that stops the broker at 1/3 of the frames and restarts it at 2/3 (on a
    helper thread, so capture never waits for the broker process)."""

    def __init__(self, frames: list[np.ndarray], count: int, broker: Any) -> None:
        super().__init__(frames, count)
        self.broker = broker
        self.helpers: list[threading.Thread] = []

    def _read_impl(self) -> RawFrame | None:
        if self.i in (self.count // 3, 2 * self.count // 3):
            action = self.broker.stop if self.i == self.count // 3 else self.broker.start
            t = threading.Thread(target=action)
            t.start()
            self.helpers.append(t)
        return super()._read_impl()


def one_run(
    bundle: Path,
    frames: list[np.ndarray],
    n: int,
    out: Path,
    line: LineOutputsConfig | None,
    src: Any,
) -> Any:
    s = run_bundle(bundle, RunConfig(source="memory:", out=out, warmup=20, line=line), source=src)
    assert s.frames == n and s.stopped_by == "end", s
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    from bench_dispatch import build_bundle  # the same demo bundle as bench_dispatch.py

    work = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
    bundle = build_bundle(demo_config(), work / "multi")
    frames = [render_frame(i).image for i in range(32)]
    broker = Mosquitto(work / "broker", persistent=True).start()
    sub = Subscriber(broker.port, "bench/#", persistent=True)
    fps: dict[str, list[float]] = {"jsonl": [], "all on": [], "broker down 1/3": []}
    lost: list[int] = []
    spooled: list[int] = []
    lag: list[float] = []
    try:
        arms = list(fps)
        for r in range(a.rounds):
            for arm in arms[r % 3 :] + arms[: r % 3]:  # rotated: no arm always runs first
                out = work / f"r{r}-{arm.replace(' ', '_').replace('/', '')}.jsonl"
                line = None
                src: Any = MemorySource(frames, a.frames)
                if arm != "jsonl":
                    line = LineOutputsConfig(
                        station="bench",
                        camera="cam",
                        reject="defect != ok",
                        mqtt=f"mqtt://127.0.0.1:{broker.port}/bench",
                        spool=work / "spool",
                        opcua=f"opc.tcp://127.0.0.1:{free_port()}",
                        metrics=f"127.0.0.1:{free_port()}",
                    )
                if arm == "broker down 1/3":
                    src = OutageSource(frames, a.frames, broker)
                s = one_run(bundle, frames, a.frames, out, line, src)
                t_end = time.monotonic()
                fps[arm].append(s.fps)
                if arm == "broker down 1/3":
                    for t in src.helpers:
                        t.join(10)
                    run_id = s.run["line"]["run_id"]
                    want = {f"{run_id}/{i}" for i in range(a.frames)}

                    def got(run_id: str = run_id) -> set[str]:
                        return {m["msg"] for m in sub.json("/result") if m["run"] == run_id}

                    sub.wait_for(lambda want=want, got=got: got() >= want, 60)
                    lag.append(time.monotonic() - t_end)
                    lost.append(len(want - got()))
                    spooled.append(s.run["line"]["mqtt"]["spooled"])
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f} fps" for k, v in fps.items()))
    finally:
        sub.close()
        broker.stop()
    base = fps["jsonl"]
    print()
    for k, v in fps.items():
        ratios = [x / b for x, b in zip(v, base)]
        print(
            f"{k:>16}: median {statistics.median(v):7.1f} frames/s; per round ÷ jsonl "
            f"{[round(x, 3) for x in ratios]}, median {statistics.median(ratios):.3f}"
            + ("" if k == "jsonl" else " (target >= 0.95)")
        )
    print(
        f"\nbroker down for the middle third: results lost per round {lost} (target 0), "
        f"spooled {spooled}, all delivered {[round(x, 1) for x in lag]} s after the run ended"
    )


if __name__ == "__main__":
    main()
