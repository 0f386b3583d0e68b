from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.cli import main
from tiny_models import make_tiny_checkpoint


def test_info_prints_config_tasks_and_counts(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    for word in ("learnable shared", "learnable defect", "fixed primitives", "segmentation"):
        assert word in out
    assert main(["info", str(ckpt), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"]["learnable"] == data["parameters"]["shared"] + sum(
        data["parameters"]["per_task"].values()
    )


def test_user_errors_exit_2_without_traceback(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.pt"
    bad.write_text("nope")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint:") and "Traceback" not in err


def test_convert_cli(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    assert main(["convert", str(ckpt), "--out", str(tmp_path / "b"), "--verify-frames", "2"]) == 0
    assert (tmp_path / "b" / "manifest.json").is_file()
    assert "MACs before" in capsys.readouterr().out
    assert main(["convert", str(ckpt), "--out", str(tmp_path / "b")]) == 2
    assert "--force" in capsys.readouterr().err


def test_console_script_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("train", "convert", "calibrate", "build", "run", "profile", "demo", "info"):
        assert cmd in r.stdout


def test_run_keep_warm_flag_rehearses_between_frames(tmp_path: Path) -> None:
    from tiny_models import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "b")
    out = tmp_path / "warm.jsonl"
    src = "synthetic:?frames=200&fps=40&live=1&width=96&height=80"
    argv = ["run", str(bundle), "--source", src, "--frames", "25", "--out", str(out)]
    assert main([*argv, "--keep-warm"]) == 0
    summary = json.loads((tmp_path / "warm.summary.json").read_text())
    assert summary["frames"] == 25 and summary["run"]["keep_warm"]["rehearsals"] >= 5
    assert main([*argv, "--keep-warm", "--no-overlap"]) == 2  # needs the adaptive loop
