"""Soak test of ``edge run``: a long run on a synthetic live source, watched from outside.

Every few seconds it samples the run's resident memory (VmRSS), open file descriptors and
threads from /proc; at the end it compares throughput in the first and the last minute (from
the JSONL's ``t_result_ns``) and prints one JSON report (also written with --report).

    python bench/soak.py --minutes 10                 # the demo model, converted first
    python bench/soak.py --bundle B --minutes 2 --fps 30

Linux only (/proc). A leak shows as RSS/fds/threads growing between the first and last samples;
a slowdown as the last minute's fps below the first's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def sample(pid: int) -> dict[str, float] | None:
    """RSS (MiB), threads and open fds of ``pid``; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": fds,
    }


def window_fps(times_ns: list[int], seconds: float) -> tuple[float, float]:
    """Frames per second in the first and in the last ``seconds`` of the run."""
    if len(times_ns) < 2:
        return 0.0, 0.0
    t0, t1 = times_ns[0], times_ns[-1]
    w = int(seconds * 1e9)
    first = sum(1 for t in times_ns if t < t0 + w)
    last = sum(1 for t in times_ns if t > t1 - w)
    span = min(seconds, (t1 - t0) / 1e9)
    return round(first / span, 2), round(last / span, 2)


def demo_bundle(folder: Path) -> Path:
    out = folder / "bundle"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "convert",
            str(REPO / "edge/assets/demo.pt"),
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return out


def soak(bundle: Path, minutes: float, interval: float, fps: float, work: Path) -> dict[str, Any]:
    out = work / "soak.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "edge.cli",
        "run",
        str(bundle),
        "--source",
        f"synthetic:?live=1&fps={fps:g}",
        "--out",
        str(out),
        "--duration",
        str(minutes * 60),
        "--warmup",
        "3",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    samples: list[dict[str, float]] = []
    t_start = time.monotonic()
    try:
        deadline = t_start + minutes * 60 + 120
        while proc.poll() is None and time.monotonic() < deadline:
            s = sample(proc.pid)
            if s is not None:
                samples.append({"t_s": round(time.monotonic() - t_start, 1), **s})
            time.sleep(interval)
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate(timeout=60)
    times = []
    with out.open() as f:
        for line in f:
            rec = json.loads(line)
            if "event" not in rec:
                times.append(rec["t_result_ns"])
    first_fps, last_fps = window_fps(times, 60.0)
    steady = [s for s in samples if s["t_s"] >= 30] or samples  # after start-up allocations
    return {
        "minutes": minutes,
        "exit_code": proc.returncode,
        "frames": len(times),
        "fps_first_minute": first_fps,
        "fps_last_minute": last_fps,
        "fps_ratio_last_first": round(last_fps / first_fps, 3) if first_fps else None,
        "samples": len(samples),
        "rss_mib": {
            "first": steady[0]["rss_mib"],
            "last": steady[-1]["rss_mib"],
            "max": max(s["rss_mib"] for s in samples),
        }
        if samples
        else None,
        "fds": {
            "first": steady[0]["fds"],
            "last": steady[-1]["fds"],
            "max": max(s["fds"] for s in samples),
        }
        if samples
        else None,
        "threads": {
            "first": steady[0]["threads"],
            "last": steady[-1]["threads"],
            "max": max(s["threads"] for s in samples),
        }
        if samples
        else None,
        "summary": stdout.strip().splitlines()[:1],
        "stderr_tail": stderr.strip().splitlines()[-3:],
        "trace": samples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", help="bundle to run (default: the demo model, converted)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--fps", type=float, default=0.0, help="source rate (0: as fast as it runs)")
    p.add_argument("--report", help="also write the JSON report here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-soak-") as tmp:
        work = Path(tmp)
        bundle = Path(args.bundle) if args.bundle else demo_bundle(work)
        report = soak(bundle, args.minutes, args.interval, args.fps, work)
    text = json.dumps({k: v for k, v in report.items() if k != "trace"}, indent=2)
    print(text)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
