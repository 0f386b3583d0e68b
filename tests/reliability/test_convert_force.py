"""Item 6 and part of 11: ``edge convert --force`` replaces only a bundle, never a sibling,
keeps the user's files and engines, and says what it drops; ``--out .`` is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from reliability.helpers import edge

from edge.convert.bundle import ConvertConfig, convert_checkpoint
from edge.core.errors import ExportError
from edge.core.manifest import load_bundle
from tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ck")
    return make_tiny_checkpoint(d / "a.pt", seed=0), make_tiny_checkpoint(d / "b.pt", seed=1)


def test_force_refuses_a_folder_that_is_not_a_bundle(
    ckpts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "DIR"
    (out / "sub").mkdir(parents=True)
    (out / "camera.yaml").write_text("fps: 30\n")
    r = edge("convert", str(ckpts[0]), "--out", str(out), "--force")
    assert r.returncode == 2 and "not a bundle" in r.stderr and "Traceback" not in r.stderr
    assert (out / "camera.yaml").read_text() == "fps: 30\n" and (out / "sub").is_dir()


def test_force_keeps_user_files_engines_and_siblings(
    ckpts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "DIR"
    convert_checkpoint(ckpts[0], ConvertConfig(out=out, verify_frames=2))
    sibling = tmp_path / ".DIR.old"  # an unrelated sibling whose name a swap once reused
    sibling.mkdir()
    (sibling / "keep.txt").write_text("mine")
    (out / "camera.yaml").write_text("fps: 30\n")
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("n")
    (out / "engines" / "dev").mkdir(parents=True)
    (out / "engines" / "dev" / "trunk.fp16.engine").write_bytes(b"E" * 10)
    (out / "calib").mkdir()
    (out / "calib" / "trunk.cache").write_text("c")
    said: list[str] = []
    convert_checkpoint(
        ckpts[1], ConvertConfig(out=out, force=True, verify_frames=2), log=said.append
    )
    assert (sibling / "keep.txt").read_text() == "mine"
    assert (out / "camera.yaml").read_text() == "fps: 30\n"
    assert (out / "sub" / "notes.txt").read_text() == "n"
    assert (out / "engines" / "dev" / "trunk.fp16.engine").read_bytes() == b"E" * 10
    assert not (out / "calib").exists()  # made from the replaced graphs
    assert any("dropped calib/" in m for m in said) and any("kept engines/" in m for m in said)
    assert load_bundle(out).tasks  # the new bundle verifies
    assert sorted(p.name for p in tmp_path.iterdir()) == [".DIR.old", "DIR"]


def test_force_with_the_same_graphs_keeps_calibration(
    ckpts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "B"
    convert_checkpoint(ckpts[0], ConvertConfig(out=out, verify_frames=2))
    m = json.loads((out / "manifest.json").read_text())
    m["calibration"] = {"files": {}}
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "calib").mkdir()
    (out / "calib" / "trunk.cache").write_text("c")
    convert_checkpoint(ckpts[0], ConvertConfig(out=out, force=True, verify_frames=2))
    assert (out / "calib" / "trunk.cache").read_text() == "c"
    assert "calibration" in json.loads((out / "manifest.json").read_text())


def test_out_dot_with_force_is_a_clear_error(ckpts: tuple[Path, Path], tmp_path: Path) -> None:
    convert_checkpoint(ckpts[0], ConvertConfig(out=tmp_path / "b", verify_frames=2))
    cwd = os.getcwd()
    os.chdir(tmp_path / "b")
    try:
        with pytest.raises(ExportError, match="current folder"):
            convert_checkpoint(ckpts[0], ConvertConfig(out=Path("."), force=True, verify_frames=2))
    finally:
        os.chdir(cwd)
    assert load_bundle(tmp_path / "b").tasks
