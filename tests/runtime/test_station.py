"""Station runs: several live cameras batched through one trunk call, per-camera schedules and
result lines, a stalled camera that does not hold the others, and the station file / CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli import main
from edge.core.errors import ConfigError, ScheduleError, SourceError
from edge.data.demo_line import LineConfig, render_frame
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.pipeline import Pipeline
from edge.runtime.replay import ReplaySource
from edge.runtime.schedule import build_schedule
from edge.runtime.sources.base import SourceOptions
from edge.runtime.station import run_station
from edge.runtime.station_batch import task_order
from edge.runtime.station_config import Camera, StationConfig, read_station_file
from tiny_models import make_tiny_bundle

FAST = SourceOptions(read_timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.1)


@pytest.fixture(scope="module")
def dyn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("station"), dynamic_batch=True, max_batch=4)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [render_frame(i, LineConfig(width=96, height=80)).image for i in range(6)]


def lines(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return [r for r in recs if "event" not in r], [r for r in recs if "event" in r]


def replay(images: list[np.ndarray], n: int, **kw: Any) -> dict[str, ReplaySource]:
    return {f"c{i}": ReplaySource(images, name=f"c{i}", options=FAST, **kw) for i in range(n)}


def test_cameras_share_trunk_calls_and_match_one_frame_runs(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    cams = tuple(Camera(f"c{i}", "replay") for i in range(3))
    out = tmp_path / "station.jsonl"
    cfg = StationConfig(cams, frames=12, out=out, batch_wait_ms=20)
    summary = run_station(dyn_bundle, cfg, sources=replay(images, 3, fps=60))
    frames, _ = lines(out)
    assert summary["stopped_by"] == "frames"
    assert {c: s["frames"] for c, s in summary["cameras"].items()} == {"c0": 12, "c1": 12, "c2": 12}
    assert {r["camera"] for r in frames} == {"c0", "c1", "c2"} and len(frames) == 36
    assert any(int(k) > 1 for k in summary["batches"]), summary["batches"]
    assert max(r["batch"] for r in frames) > 1
    # batched results == the one-frame pipeline's on the same image (frame id -> image index)
    with Pipeline(dyn_bundle) as p:
        for r in frames[:9]:
            ref = p.process(images[r["frame"] % len(images)]).results
            for task in ("defect", "attrs"):
                got, want = r["tasks"][task], ref[task]
                assert want is not None
                assert (
                    got["label" if task == "defect" else "on"]
                    == want.to_json()["label" if task == "defect" else "on"]
                )
            assert r["tasks"]["angle"]["value"] == pytest.approx(
                ref["angle"].to_json()["value"], abs=1e-3
            )


def test_per_camera_schedules_run_heads_on_sub_batches(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    cams = (
        Camera("all", "replay"),
        Camera("light", "replay", tasks=("defect", "angle"), every=("angle=2",)),
    )
    out = tmp_path / "sched.jsonl"
    cfg = StationConfig(cams, frames=8, out=out, batch_wait_ms=30)
    run_station(dyn_bundle, cfg, sources={c.id: ReplaySource(images, fps=60) for c in cams})
    frames, _ = lines(out)
    light = [r for r in frames if r["camera"] == "light"]
    full = [r for r in frames if r["camera"] == "all"]
    assert len(light) == 8 and len(full) == 8
    assert all(r["tasks"]["mask"] == "not run" and r["tasks"]["attrs"] == "not run" for r in light)
    assert [r["tasks"]["angle"] != "not run" for r in light] == [i % 2 == 0 for i in range(8)]
    assert all(all(v != "not run" for v in r["tasks"].values()) for r in full)
    with Pipeline(dyn_bundle) as p:  # a sub-batch head (host rows of the taps) == one frame
        for r in light[:4]:
            ref = p.process(images[r["frame"] % len(images)]).results["defect"]
            assert ref is not None and r["tasks"]["defect"]["label"] == ref.to_json()["label"]


def test_a_stalled_camera_does_not_hold_the_others(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    srcs = replay(images, 2, fps=50)
    srcs["dead"] = ReplaySource(images, fps=50, stall=(5, 1.5), name="dead", options=FAST)
    cams = tuple(Camera(c, "replay") for c in srcs)
    out = tmp_path / "stall.jsonl"
    summary = run_station(dyn_bundle, StationConfig(cams, duration_s=2.5, out=out), sources=srcs)
    frames, events = lines(out)
    gaps = [e for e in events if e["event"] == "gap"]
    assert [g["camera"] for g in gaps] == ["dead"], events
    t0, t1 = gaps[0]["start_ns"], gaps[0]["end_ns"]
    during = [r for r in frames if r["camera"] != "dead" and t0 < r["t_capture_ns"] < t1]
    assert len(during) >= 2 * 25, len(during)  # the live cameras kept their pace (~50 fps)
    assert max(r["latency_ms"] for r in during) < 250
    assert summary["cameras"]["dead"]["capture"]["reopens"] >= 1
    assert summary["batch_wait_ms"] == 0.0  # the default on ONNX Runtime's CPU provider
    c0 = summary["cameras"]["c0"]  # light load: its reader resized most frames on arrival
    assert c0["prepared_on_arrival"] >= c0["frames"] // 2, c0
    assert summary["cameras"]["c0"]["capture"]["gaps"] == []


def test_a_camera_that_fails_for_good_ends_alone(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    srcs = replay(images, 2, fps=50)
    no_retry = SourceOptions(read_timeout_s=0.2, reconnect=False)
    srcs["bad"] = ReplaySource(images, fps=50, stall=(3, 10.0), name="bad", options=no_retry)
    out = tmp_path / "fail.jsonl"
    cams = tuple(Camera(c, "replay") for c in srcs)
    summary = run_station(dyn_bundle, StationConfig(cams, duration_s=1.5, out=out), sources=srcs)
    frames, events = lines(out)
    errors = [e for e in events if e["event"] == "error"]
    assert [e["camera"] for e in errors] == ["bad"] and "reconnect is off" in errors[0]["error"]
    assert (
        summary["stopped_by"] == "duration"
        and "reconnect is off" in summary["cameras"]["bad"]["error"]
    )
    assert sum(r["camera"] == "bad" for r in frames) <= 3
    assert summary["cameras"]["c0"]["frames"] >= 40 and summary["cameras"]["c1"]["frames"] >= 40


class LateCamera(ReplaySource):
    """A replay camera whose first ``bad_opens`` opens fail (a camera that boots after the
    board); the behaviour under test is the station's."""

    def __init__(self, images: list[np.ndarray], bad_opens: int, **kw: Any) -> None:
        super().__init__(images, **kw)
        self.bad_opens, self.opens = bad_opens, 0

    def _open_impl(self) -> None:
        self.opens += 1
        if self.opens <= self.bad_opens:
            raise SourceError("camera not up yet")
        super()._open_impl()


def test_a_late_camera_joins_and_one_that_never_opens_ends_alone(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    srcs: dict[str, Any] = replay(images, 2, fps=50)
    srcs["late"] = LateCamera(images, 3, fps=50, name="late", options=FAST)
    srcs["never"] = LateCamera(images, 10**6, fps=50, name="never", options=FAST)
    out = tmp_path / "late.jsonl"
    cams = tuple(Camera(c, "replay") for c in srcs)
    cfg = StationConfig(cams, duration_s=2.0, out=out, open_timeout_s=0.8)
    summary = run_station(dyn_bundle, cfg, sources=srcs)
    frames, events = lines(out)
    first = {
        c: min(r["t_capture_ns"] for r in frames if r["camera"] == c) for c in srcs if c != "never"
    }
    assert first["late"] > first["c0"] and summary["cameras"]["late"]["frames"] >= 20
    assert summary["cameras"]["c0"]["frames"] >= 60  # not held while the others were opened
    assert srcs["late"].opens == 4 and srcs["never"].opens >= 2
    errors = [e for e in events if e["event"] == "error"]
    assert [e["camera"] for e in errors] == ["never"] and "not up yet" in errors[0]["error"]
    assert summary["stopped_by"] == "duration" and "never" not in {r["camera"] for r in frames}
    assert "[capture never]" in capsys.readouterr().err


def test_fixed_batch_bundle_runs_cameras_one_by_one(
    tiny_bundle: Path, images: list[np.ndarray]
) -> None:
    cams = tuple(Camera(f"c{i}", "replay") for i in range(2))
    summary = run_station(
        tiny_bundle, StationConfig(cams, frames=5), sources=replay(images, 2, fps=100)
    )
    assert set(summary["batches"]) == {"1"} and summary["max_batch"] == 1
    assert all(c["frames"] == 5 for c in summary["cameras"].values())


def test_conditions_must_agree_on_one_task_order(dyn_bundle: Path) -> None:
    from edge.core.manifest import load_bundle

    dec = decoders_from_manifest(load_bundle(dyn_bundle).manifest)
    a = build_schedule(dec, when=("mask: defect != ok",))
    b = build_schedule(dec, when=("defect: angle > 0",))
    assert task_order([a], list(dec)).index("defect") < task_order([a], list(dec)).index("mask")
    with pytest.raises(ScheduleError, match="opposite"):
        task_order([a, b, build_schedule(dec, when=("angle: mask.fraction > 0",))], list(dec))


def test_station_file_and_bad_input(tmp_path: Path) -> None:
    f = tmp_path / "station.json"
    f.write_text(
        json.dumps(
            {
                "cameras": [
                    {"id": "left", "source": "synthetic:?live=1"},
                    {"source": "synthetic:", "tasks": ["defect"], "every": "defect=2"},
                ],
                "max_batch": 2,
            }
        )
    )
    st = read_station_file(f, Camera("d", "-", policy="latest"))
    assert [c.id for c in st["cameras"]] == ["left", "cam1"]
    assert st["cameras"][1].tasks == ("defect",) and st["cameras"][1].every == ("defect=2",)
    assert st["cameras"][0].policy == "latest" and st["max_batch"] == 2
    f.write_text('{"cameras": [{"id": "a b", "source": "x"}]}')
    with pytest.raises(ConfigError, match="camera id"):
        read_station_file(f)
    f.write_text('{"cameras": [{"source": "x", "fps": 3}]}')
    with pytest.raises(ConfigError, match="unknown key"):
        read_station_file(f)
    with pytest.raises(ConfigError, match="unique"):
        StationConfig((Camera("a", "x"), Camera("a", "y")))


def test_cli_repeated_source_runs_a_station(
    dyn_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.jsonl"
    src = "synthetic:?frames=4&width=96&height=80"
    rc = main(["run", str(dyn_bundle), "--source", src, "--source", src, "--out", str(out)])
    assert rc == 0
    frames, _ = lines(out)
    assert sorted((r["camera"], r["frame"]) for r in frames) == [
        (c, i) for c in ("cam0", "cam1") for i in range(4)
    ]
    assert json.loads((tmp_path / "cli.summary.json").read_text())["cameras"]["cam1"]["frames"] == 4
    header = json.loads(out.read_text().splitlines()[0])  # edge run's header line, appended
    assert header["event"] == "run" and len(header["bundle_sha256"]) == 64
    video = tmp_path / "cam.avi"
    video.write_bytes(b"not really a video")
    argv = ["run", str(dyn_bundle), "--source", src, "--source", str(video), "--out", str(video)]
    assert main(argv) == 2 and video.read_bytes() == b"not really a video"  # never clobbered
    assert "same file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["run", str(dyn_bundle), "--station-file", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_station_refuses_flags_it_does_not_implement(dyn_bundle: Path, tmp_path: Path) -> None:
    from edge.cli import main

    srcs = ["--source", "synthetic:?frames=2", "--source", "synthetic:?frames=2"]
    assert main(["run", str(dyn_bundle), *srcs, "--trigger-every", "100"]) == 2


def test_station_verifies_a_signed_bundle_and_rotates_its_lines(
    dyn_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("cryptography")
    import shutil

    from edge.core.signing import generate_keys, sign_bundle

    copy = tmp_path / "signed"
    shutil.copytree(dyn_bundle, copy)
    private, public = generate_keys(tmp_path / "release.key")
    sign_bundle(copy, private)
    src = "synthetic:?frames=40&width=96&height=80"
    out = tmp_path / "lines.jsonl"
    argv = ["run", str(copy), "--source", src, "--source", src, "--out", str(out)]
    assert main([*argv, "--verify-key", str(public), "--rotate", "4K", "--keep", "50"]) == 0
    rotated = sorted(tmp_path.glob("lines*.jsonl*"))
    assert len(rotated) >= 3, rotated  # 80 lines of ~1.3 kB: several 4 kB files
    frames = [r for p in rotated for r in lines(p)[0]]
    assert sorted((r["camera"], r["frame"]) for r in frames) == [
        (c, i) for c in ("cam0", "cam1") for i in range(40)
    ]  # rotation loses no line
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + " ")
    capsys.readouterr()
    other = tmp_path / "other.jsonl"
    argv = ["run", str(copy), "--source", src, "--source", src, "--out", str(other)]
    assert main([*argv, "--verify-key", str(public)]) == 2
    assert "altered" in capsys.readouterr().err and not other.exists()


def test_a_camera_whose_frames_cannot_be_preprocessed_fails_alone_and_all_failed_raises(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    srcs: dict[str, Any] = replay(images, 2, fps=50)
    empty = [np.zeros((0, 0, 3), np.uint8)]  # a broken driver's empty frames: no resize
    srcs["odd"] = ReplaySource(empty, fps=50, name="odd", options=FAST)
    out = tmp_path / "odd.jsonl"
    cams = tuple(Camera(c, "replay") for c in srcs)
    summary = run_station(dyn_bundle, StationConfig(cams, duration_s=1.0, out=out), sources=srcs)
    frames, events = lines(out)
    errors = [e for e in events if e["event"] == "error"]
    assert [e["camera"] for e in errors] == ["odd"], errors
    assert summary["stopped_by"] == "duration" and "odd" not in {r["camera"] for r in frames}
    assert summary["cameras"]["c0"]["frames"] >= 20
    no_retry = SourceOptions(read_timeout_s=0.2, reconnect=False)
    dead = {
        c: ReplaySource(images, fps=50, stall=(2, 10.0), name=c, options=no_retry)
        for c in ("a", "b")
    }
    cams = tuple(Camera(c, "replay") for c in dead)
    with pytest.raises(SourceError, match="reconnect is off"):  # every camera failed
        run_station(dyn_bundle, StationConfig(cams, duration_s=5.0), sources=dead)


def test_fifo_cameras_report_overruns_not_drops_and_opcua_ids_without_dots(
    dyn_bundle: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    srcs = replay(images, 2, fps=5000)  # far faster than the station: fifo:1 overruns
    out = tmp_path / "fifo.jsonl"
    cams = tuple(Camera(c, "replay", policy="fifo:1") for c in srcs)
    run_station(dyn_bundle, StationConfig(cams, duration_s=1.5, out=out), sources=srcs)
    _, events = lines(out)
    kinds = {e["event"] for e in events}
    assert "overrun" in kinds and "drop" not in kinds, kinds
    from edge.runtime.line import LineOutputsConfig

    line = LineOutputsConfig(opcua="opc.tcp://127.0.0.1:4840")
    with pytest.raises(ConfigError, match=r"may not contain '\.'"):
        StationConfig((Camera("a.Task", "x"), Camera("a", "y")), line=line)
