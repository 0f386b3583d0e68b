"""Item 5: SIGHUP stops a run like SIGTERM (summary, finished video, exit 0); temporaries left
by killed processes are removed at the next start, and that is said."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
from reliability.helpers import dead_pid, edge, frames_of, popen_edge, stop

from edge.core.files import clean_stale_temporaries, staged_dir, write_text

LIVE = "synthetic:?fps=40&width=96&height=64&live=1"


def _wait_for_lines(out: Path, n: int, proc: object) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # type: ignore[attr-defined]
        if out.exists() and out.read_text().count("\n") >= n:
            return
        time.sleep(0.05)


def test_sighup_stops_like_sigterm_with_summary_and_video(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out, video = tmp_path / "r.jsonl", tmp_path / "v.mp4"
    proc = popen_edge(
        "run",
        str(tiny_bundle),
        "--source",
        LIVE,
        "--out",
        str(out),
        "--video",
        str(video),
        "--warmup",
        "0",
    )
    try:
        _wait_for_lines(out, 6, proc)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGHUP)
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr
    summary = json.loads(out.with_name("r.summary.json").read_text())
    assert summary["stopped_by"] == "signal" and summary["frames"] == len(frames_of(out)) >= 5
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]
    cap.release()


def test_a_killed_runs_temporary_video_is_removed_at_the_next_start(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out, video = tmp_path / "r.jsonl", tmp_path / "v.mp4"
    proc = popen_edge(
        "run",
        str(tiny_bundle),
        "--source",
        LIVE,
        "--out",
        str(out),
        "--video",
        str(video),
        "--warmup",
        "0",
    )
    try:
        _wait_for_lines(out, 4, proc)
    finally:
        stop(proc)  # SIGKILL: no cleanup
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".v.mp4.tmp-")]
    assert len(left) == 1 and str(proc.pid) in left[0].name
    live = tmp_path / f".v.mp4.tmp-{__import__('os').getpid()}-v.mp4"  # a live writer's: kept
    live.write_bytes(b"x")
    r = edge(
        "run",
        str(tiny_bundle),
        "--source",
        "synthetic:?frames=3&width=96&height=64",
        "--out",
        str(out),
        "--video",
        str(video),
        "--warmup",
        "0",
    )
    assert r.returncode == 0, r.stderr
    assert not left[0].exists() and live.exists()
    assert f"removed {left[0]}" in r.stderr and "no longer runs" in r.stderr


def test_stale_staging_folders_and_files_of_dead_processes_are_cleaned(tmp_path: Path) -> None:
    pid = dead_pid()
    stale_dir = tmp_path / f".bundle.tmp-{pid}-abc123"
    (stale_dir / "heads").mkdir(parents=True)
    stale_file = tmp_path / f".manifest.json.tmp-{pid}-q1w2"
    stale_file.write_text("{")
    other = tmp_path / f".unrelated.tmp-{pid}-zz"  # not one of the names asked for
    other.write_text("")
    # a swap killed between its two renames: the old bundle waits aside, the target is gone
    aside = tmp_path / f".model.old-{pid}-k9"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    with staged_dir(tmp_path / "ours") as mine:  # this live process's own staging folder
        removed = clean_stale_temporaries(tmp_path, ("bundle", "manifest.json", "model", "ours"))
        assert mine.exists()
    assert sorted(removed) == sorted([stale_dir, stale_file, aside])
    assert not stale_dir.exists() and not stale_file.exists() and other.exists()
    assert (tmp_path / "model" / "manifest.json").exists()  # put back, not deleted
    write_text(tmp_path / "t.txt", "ok")  # temporaries carry the PID and vanish on success
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == [other.name]


def test_convert_removes_a_killed_converts_staging_folder(tmp_path: Path) -> None:
    from tiny_models import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    stale = tmp_path / f".b.tmp-{dead_pid()}-x1y2"
    (stale / "heads").mkdir(parents=True)
    r = edge("convert", str(ckpt), "--out", str(tmp_path / "b"), "--verify-frames", "2")
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and f"removed {stale}" in r.stdout
