"""Line outputs' cost: ``edge run`` fps with JSONL only vs JSONL + MQTT + OPC UA + metrics, one
process, arms interleaved per round (ONNX Runtime CPU, the demo model, in-memory frames).

Target (issue 14): with every line output on, at least 95 % of the JSONL-only fps; and the same
with the MQTT broker down for the middle third of the run (stopped when a third of the frames
were read, restarted at two thirds), with zero results lost: a subscriber with a persistent
session counts each frame's result (by the record's ``msg``) after the run.

CPU time per frame (this process + the broker, 10 % to 90 % of each run) is reported too: on
a shared, loaded machine frames/s swing with other load, CPU per frame much less; on a
CPU-bound box the fps ratio approaches the CPU ratio.

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
import os
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


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) this process used, or process ``pid`` (the broker)."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProbeSource(MemorySource):
    """MemorySource that samples CPU time (this process + the broker) at 10 % and 90 % of the
    frames: CPU per frame in the steady state, without the servers' start-up, and much less
    sensitive to other load on a shared machine than frames/s."""

    def __init__(self, frames: list[np.ndarray], count: int, broker: Any) -> None:
        super().__init__(frames, count)
        self.broker = broker
        self.marks: list[tuple[int, float]] = []

    def _read_impl(self) -> RawFrame | None:
        if self.i in (self.count // 10, 9 * self.count // 10):
            pid = self.broker.proc.pid if self.broker.proc is not None else None
            self.marks.append((self.i, cpu_s(None) + (cpu_s(pid) if pid else 0.0)))
        return super()._read_impl()

    def cpu_ms_per_frame(self) -> float:
        (i0, c0), (i1, c1) = self.marks
        return 1e3 * (c1 - c0) / (i1 - i0)


class OutageSource(ProbeSource):
    """Also stops the broker at 1/3 of the frames and restarts it at 2/3 (on a helper thread,
    so capture never waits for the broker process)."""

    def __init__(self, frames: list[np.ndarray], count: int, broker: Any) -> None:
        super().__init__(frames, count, broker)
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
    cfg = RunConfig(
        source="memory:",
        out=out,
        warmup=20,
        line=line,
        backend_options={"intra_op_threads": 1},  # as the other benches: no spinning pool
    )
    s = run_bundle(bundle, cfg, source=src)
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
    cpu: dict[str, list[float]] = {k: [] for k in fps}
    lost: list[int] = []
    spooled: list[int] = []
    lag: list[float] = []
    try:
        arms = list(fps)
        for r in range(a.rounds):
            for arm in arms[r % 3 :] + arms[: r % 3]:  # rotated: no arm always runs first
                out = work / f"r{r}-{arm.replace(' ', '_').replace('/', '')}.jsonl"
                line = None
                src: Any = ProbeSource(frames, a.frames, broker)
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
                cpu[arm].append(src.cpu_ms_per_frame())
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
            print(
                f"round {r}: "
                + ", ".join(f"{k} {v[-1]:.1f} fps {cpu[k][-1]:.2f} ms cpu" for k, v in fps.items())
            )
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
    print("\nCPU per frame, steady state (this process + the broker; 10 % to 90 % of the run):")
    for k, v in cpu.items():
        ratios = [b / x for x, b in zip(v, cpu["jsonl"])]
        print(
            f"{k:>16}: median {statistics.median(v):.3f} ms; jsonl ÷ this per round "
            f"{[round(x, 3) for x in ratios]}, median {statistics.median(ratios):.3f}"
        )
    print(
        f"\nbroker down for the middle third: results lost per round {lost} (target 0), "
        f"spooled {spooled}, all delivered {[round(x, 1) for x in lag]} s after the run ended"
    )


if __name__ == "__main__":
    main()
