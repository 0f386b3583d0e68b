"""Item 11: bad inputs give one line and exit 2, never a traceback, and an error quotes at most
a few hundred characters of what it was given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from reliability.helpers import edge, small_disk

from edge.core.config import ModelConfig
from edge.core.errors import ConfigError, EdgeError
from edge.family.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from tiny_models import make_tiny_checkpoint, tiny_config, tiny_model


def _one_line_exit_2(r: object) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # type: ignore[attr-defined]
    err = r.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    return str(err)


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", "abc"), ("widths", [16.5, 32, 32]), ("gamma", "0.5"), ("depthwise", 1),
     ("mean", [1.0, float("nan"), 2.0]), ("input_size", 32)],
)  # fmt: skip
def test_config_fields_of_the_wrong_type_are_named(field: str, value: object) -> None:
    data = {**tiny_config().to_dict(), field: value}
    with pytest.raises(ConfigError, match=f"'{field}' must be"):
        ModelConfig.from_dict(data)


def test_task_fields_of_the_wrong_type_are_named() -> None:
    data = tiny_config().to_dict()
    data["tasks"][0]["labels"] = "okbad"
    with pytest.raises(ConfigError, match="'labels' must be a list of strings"):
        ModelConfig.from_dict(data)
    data["tasks"][0]["labels"] = ["ok", "bad"]
    data["tasks"][0]["threshold"] = None
    with pytest.raises(ConfigError, match="'threshold' must be a finite number"):
        ModelConfig.from_dict(data)


def _payload(path: Path) -> dict:  # type: ignore[type-arg]
    return dict(torch.load(path, weights_only=True))


def test_checkpoints_with_bad_config_or_state_are_one_line_errors(tmp_path: Path) -> None:
    good = make_tiny_checkpoint(tmp_path / "good.pt")
    bad_seed = _payload(good)
    cfg = json.loads(bad_seed["config"])
    cfg["seed"] = "abc"
    bad_seed["config"] = json.dumps(cfg)
    torch.save(bad_seed, tmp_path / "seed.pt")
    bad_state = _payload(good)
    key = next(iter(bad_state["state_dict"]))
    bad_state["state_dict"][key] = 7
    torch.save(bad_state, tmp_path / "state.pt")
    assert bad_seed["format"] == FORMAT and bad_seed["format_version"] == FORMAT_VERSION
    err = _one_line_exit_2(edge("convert", str(tmp_path / "seed.pt"), "--out", str(tmp_path / "b")))
    assert "'seed' must be an integer" in err
    err = _one_line_exit_2(edge("info", str(tmp_path / "state.pt")))
    assert f"'{key}' is a int, not a tensor" in err


def test_a_manifest_that_is_a_list_is_a_clear_error(tiny_bundle: Path, tmp_path: Path) -> None:
    b = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    (b / "manifest.json").write_text("[]")
    err = _one_line_exit_2(edge("run", str(b), "--source", "synthetic:?frames=1"))
    assert "expected a JSON object" in err


def test_binary_and_huge_schedule_files(tiny_bundle: Path, tmp_path: Path) -> None:
    binary = tmp_path / "s.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    err = _one_line_exit_2(
        edge("run", str(tiny_bundle), "--source", "synthetic:?frames=1", "--schedule", str(binary))
    )
    assert "not a text file" in err
    huge = tmp_path / "s.txt"
    huge.write_text("defect: every when mask in [" + ", ".join(["x"] * 3_000_000) + "]\n")
    err = _one_line_exit_2(
        edge("run", str(tiny_bundle), "--source", "synthetic:?frames=1", "--schedule", str(huge))
    )
    assert "is it the right file" in err and len(err) < 1000


def test_error_messages_are_capped() -> None:
    e = EdgeError("x" * 10_000_000)
    assert len(str(e)) < 2200 and "characters cut" in str(e)


def test_a_long_bad_rule_is_quoted_briefly(tiny_bundle: Path, tmp_path: Path) -> None:
    sched = tmp_path / "s.txt"
    sched.write_text("defect " + "y" * 50_000 + "\n")
    err = _one_line_exit_2(
        edge("run", str(tiny_bundle), "--source", "synthetic:?frames=1", "--schedule", str(sched))
    )
    assert "characters)" in err and len(err) < 1000


def _small_disk_or_skip(folder: Path, size: str) -> object:
    ctx = small_disk(folder, size)
    try:
        ctx.__enter__()
    except OSError as e:
        pytest.skip(f"needs a small tmpfs to fill ({e}); RLIMIT_FSIZE cannot stop a folder write")
    return ctx


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "m.pt", tiny_model())
    disk = tmp_path / "disk"
    ctx = _small_disk_or_skip(disk, "64k")
    try:
        err = _one_line_exit_2(
            edge("convert", str(ckpt), "--out", str(disk / "b"), "--verify-frames", "2")
        )
        assert "No space left" in err
        assert list(disk.iterdir()) == []  # the staging folder is gone too
    finally:
        ctx.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_calibrate_on_a_full_disk_is_one_line_and_keeps_the_bundle(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    size = sum(p.stat().st_size for p in tiny_bundle.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    ctx = _small_disk_or_skip(disk, str(size + 96 * 1024))
    try:
        b = Path(shutil.copytree(tiny_bundle, disk / "b"))
        before = (b / "manifest.json").read_bytes()
        err = _one_line_exit_2(
            edge("calibrate", str(b), "--frames", "32", "--batch", "16", "--eval-frames", "0")
        )
        assert "No space left" in err or "free space" in err
        assert (b / "manifest.json").read_bytes() == before
        assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in tiny_bundle.iterdir())
    finally:
        ctx.__exit__(None, None, None)  # type: ignore[attr-defined]
