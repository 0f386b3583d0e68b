"""Item 4: a full or read-only disk stops the run cleanly: whole JSONL lines only, a summary
whose reason is ``disk full``, a non-zero exit, and no half-written video kept.

The full disk is a 256 KiB tmpfs where the test may mount one; else the per-file size limit
(RLIMIT_FSIZE, which makes writes fail with EFBIG, also "disk full"); the read-only case needs
a mount and is skipped without one."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability.helpers import edge, file_size_limit, frames_of, records, small_disk

SOURCE = "synthetic:?frames=4000&width=96&height=64"


@contextlib.contextmanager
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None] | None]]:
    """(folder whose writes run out of space, a preexec_fn for the CLI or None)."""
    try:
        with small_disk(tmp_path / "disk") as folder:
            yield folder, None
    except OSError:
        folder = tmp_path / "limited"
        folder.mkdir()
        yield folder, file_size_limit(200_000)


def test_jsonl_on_a_full_disk_keeps_whole_lines_and_says_disk_full(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "s.json"
    with full_disk(tmp_path) as (disk, preexec):
        out = disk / "r.jsonl"
        r = edge(
            "run",
            str(tiny_bundle),
            "--source",
            SOURCE,
            "--out",
            str(out),
            "--summary",
            str(summary),
            "--warmup",
            "0",
            preexec=preexec,
        )
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "free space" in r.stderr
        lines = frames_of(out)  # every line parses; the file ends with a newline
        written = records(out)
    s = json.loads(summary.read_text())
    assert s["stopped_by"] == "disk full"
    assert 0 < len(lines) <= s["frames"] < 4000
    assert written[0]["event"] == "run"  # the header, then frames and events (e.g. unprocessed)
    assert s["run"]["outputs"]["jsonl_lines"] == len(written) - 1  # every line after the header
    assert "stopped by disk full" in r.stdout  # the summary is printed before the error


def test_everything_on_a_full_disk_still_exits_non_zero_with_whole_lines(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    with full_disk(tmp_path) as (disk, preexec):
        out = disk / "r.jsonl"
        r = edge(
            "run",
            str(tiny_bundle),
            "--source",
            SOURCE,
            "--out",
            str(out),
            "--warmup",
            "0",
            preexec=preexec,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr
        records(out)
        assert "disk full" in r.stdout


def test_video_on_a_full_disk_is_reported_and_not_kept(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with full_disk(tmp_path) as (disk, preexec):
        video = disk / "v.mp4"
        r = edge(
            "run",
            str(tiny_bundle),
            "--source",
            SOURCE,
            "--video",
            str(video),
            "--out",
            str(out),
            "--warmup",
            "0",
            preexec=preexec,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "annotated video" in r.stderr
        assert not video.exists()  # no unplayable file left under the name
        assert not [p for p in disk.iterdir() if ".tmp-" in p.name]
    s = json.loads(out.with_name("r.summary.json").read_text())
    assert s["stopped_by"] == "disk full" and s["frames"] < 4000
    assert len(frames_of(out)) == s["frames"]  # every processed frame has its line


def test_video_on_a_read_only_mount_is_refused_before_anything_is_written(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text('{"frame": 0}\n')
    try:
        ctx = small_disk(tmp_path / "ro", read_only=True)
        ro = ctx.__enter__()
    except OSError as e:
        pytest.skip(f"a read-only mount is needed ({e})")
    try:
        r = edge(
            "run",
            str(tiny_bundle),
            "--source",
            SOURCE,
            "--video",
            str(ro / "v.mp4"),
            "--out",
            str(out),
        )
    finally:
        ctx.__exit__(None, None, None)
    assert r.returncode == 2 and "read-only" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == '{"frame": 0}\n' and not out.with_name("r.summary.json").exists()
