"""Items 1-3: outputs never destroy inputs or each other, are appended with a run header (or
rotated), and are locked against a second run."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from reliability.helpers import edge, frames_of, popen_edge, records, stop

from edge.core.errors import ConfigError, SourceError
from edge.data.demo_line import write_video
from edge.runtime.outputs import OutputError, OutputLock
from edge.runtime.run import RunConfig, run_bundle
from edge.runtime.sources.base import RawFrame, Source

SYNTH = "synthetic:?frames=6&width=96&height=64"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "v.mp4", 4)


@pytest.mark.parametrize(
    "flags",
    [
        {"out": "SRC"},
        {"video": "SRC"},
        {"out": "r.jsonl", "summary": "r.jsonl"},
        {"out": "r.jsonl", "video": "r.jsonl"},
        {"out": "r.jsonl", "summary": "./sub/../r.jsonl"},
    ],
)
def test_an_output_equal_to_the_source_or_another_output_is_refused(
    tiny_bundle: Path, video: Path, tmp_path: Path, flags: dict[str, str]
) -> None:
    src = tmp_path / "v.mp4"
    src.write_bytes(video.read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "r.jsonl").write_text('{"frame": 0}\n')
    before = {p: p.read_bytes() for p in (src, tmp_path / "r.jsonl")}
    kw = {k: (src if v == "SRC" else tmp_path / v) for k, v in flags.items()}
    with pytest.raises(ConfigError, match="same file"):
        run_bundle(tiny_bundle, RunConfig(source=str(src), warmup=0, **kw))  # type: ignore[arg-type]
    assert {p: p.read_bytes() for p in before} == before  # nothing touched


def test_cli_refuses_out_equal_to_source_with_exit_2(
    tiny_bundle: Path, video: Path, tmp_path: Path
) -> None:
    src = tmp_path / "v.mp4"
    src.write_bytes(video.read_bytes())
    r = edge("run", str(tiny_bundle), "--source", str(src), "--out", str(src))
    assert r.returncode == 2 and "same file" in r.stderr and "Traceback" not in r.stderr
    assert src.read_bytes() == video.read_bytes()


class _Unreachable(Source):
    """A camera that cannot be reached (the open fails as a real unplugged one does)."""

    kind = "camera"
    live = True

    def _open_impl(self) -> None:
        raise SourceError("camera 10.0.0.9 unreachable")

    def _read_impl(self) -> RawFrame | None:
        return None

    def _close_impl(self) -> None:
        pass


def test_a_run_that_fails_to_start_leaves_earlier_results_untouched(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    run_bundle(tiny_bundle, RunConfig(source=SYNTH, out=out, warmup=0))
    before, summary = out.read_bytes(), out.with_name("r.summary.json").read_bytes()
    with pytest.raises(SourceError, match="unreachable"):
        run_bundle(
            tiny_bundle,
            RunConfig(source="cam", out=out, warmup=0, open_timeout_s=0.3),  # retried briefly
            source=_Unreachable("cam"),
        )
    assert out.read_bytes() == before and out.with_name("r.summary.json").read_bytes() == summary


def test_runs_append_each_after_its_header(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    for _ in range(2):
        run_bundle(tiny_bundle, RunConfig(source=SYNTH, out=out, warmup=0))
    recs = records(out)
    headers = [i for i, r in enumerate(recs) if r.get("event") == "run"]
    assert headers == [0, 7]  # 6 frames each
    h = recs[0]
    manifest_sha = hashlib.sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()
    assert h["bundle_sha256"] == manifest_sha
    assert (h["backend"], h["precision"]) == ("onnxruntime", "fp32")
    assert recs[0]["run_id"] != recs[7]["run_id"] and h["started"].endswith("Z")
    summary = __import__("json").loads(out.with_name("r.summary.json").read_text())
    assert summary["run"]["run_id"] == recs[7]["run_id"]
    assert summary["run"]["precision"] == "fp32" and summary["run"]["backend"] == "onnxruntime"


def test_rotation_by_size_keeps_n_files_each_with_a_header(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    cfg = RunConfig(
        source="synthetic:?frames=40&width=96&height=64", out=out, warmup=0, rotate="4K", keep=2
    )
    run_bundle(tiny_bundle, cfg)
    files = sorted(p.name for p in tmp_path.glob("r*.jsonl"))
    assert files == ["r.1.jsonl", "r.2.jsonl", "r.jsonl"]
    for name in files:
        p = tmp_path / name
        assert p.stat().st_size <= 4096 and records(p)[0]["event"] == "run"
    ids = [
        f["frame"] for n in ("r.2.jsonl", "r.1.jsonl", "r.jsonl") for f in frames_of(tmp_path / n)
    ]
    assert ids == sorted(ids) and ids[-1] == 39 and len(ids) < 40  # the oldest were dropped


def test_daily_rotation_starts_a_new_file_on_a_new_day(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text('{"event": "run", "run_id": "yesterday"}\n')
    day_ago = time.time() - 86400 * 1.5
    os.utime(out, (day_ago, day_ago))
    run_bundle(tiny_bundle, RunConfig(source=SYNTH, out=out, warmup=0, rotate="daily"))
    assert records(tmp_path / "r.1.jsonl")[0]["run_id"] == "yesterday"
    assert records(out)[0]["run_id"] != "yesterday" and len(frames_of(out)) == 6


def test_bad_rotate_values_are_refused(tmp_path: Path) -> None:
    for bad in ("10", "fast", "-5M"):
        with pytest.raises(ConfigError, match="--rotate"):
            RunConfig(source=SYNTH, out=tmp_path / "r.jsonl", rotate=bad)
    with pytest.raises(ConfigError, match="--out"):
        RunConfig(source=SYNTH, rotate="daily")


def test_a_second_run_on_the_same_out_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    first = popen_edge(
        "run",
        str(tiny_bundle),
        "--source",
        "synthetic:?fps=50&width=96&height=64",
        "--out",
        str(out),
        "--warmup",
        "0",
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        second = edge("run", str(tiny_bundle), "--source", SYNTH, "--out", str(out))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"another edge run (pid {first.pid})" in second.stderr
    finally:
        stop(first)
    ids = [f["frame"] for f in frames_of(out)]
    assert len(ids) == len(set(ids))  # no interleaved second run
    assert [r for r in records(out) if r.get("event") == "run"].__len__() == 1


def test_the_lock_is_released_after_a_run(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    lock = OutputLock(out)
    with pytest.raises(OutputError, match="another edge run"):
        run_bundle(tiny_bundle, RunConfig(source=SYNTH, out=out, warmup=0))
    lock.release()
    run_bundle(tiny_bundle, RunConfig(source=SYNTH, out=out, warmup=0))
    OutputLock(out).release()  # free again


def test_every_output_is_locked_not_only_the_jsonl(tiny_bundle: Path, tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    held = OutputLock(video)  # another run writing this video
    try:
        with pytest.raises(OutputError, match="another edge run"):
            run_bundle(
                tiny_bundle,
                RunConfig(source=SYNTH, out=tmp_path / "r.jsonl", video=video, warmup=0),
            )
        assert not (tmp_path / "r.jsonl").exists()  # refused before anything was written
    finally:
        held.release()
    OutputLock(tmp_path / "r.jsonl").release()  # the refused run let go of the JSONL's lock
