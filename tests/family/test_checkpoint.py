from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge.core.errors import CheckpointError
from edge.family.checkpoint import load_checkpoint, save_checkpoint
from edge.family.model import ETRNLP
from tiny_models import tiny_config


def _saved(tmp_path: Path) -> tuple[ETRNLP, Path]:
    m = ETRNLP(tiny_config()).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m, save_checkpoint(tmp_path / "m.pt", m, {"metrics": {"defect": {"accuracy": 1.0}}})


def test_round_trip(tmp_path: Path) -> None:
    m, path = _saved(tmp_path)
    ck = load_checkpoint(path)
    assert ck.config == m.config
    assert ck.meta["metrics"]["defect"]["accuracy"] == 1.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = m(x), ck.model(x)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert len(ck.sha256) == 64


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"corrupt|cannot be read"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not an etr-edge checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "text.pt"
    q.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(q)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save({"format": "etr-edge-checkpoint", "obj": object()}, p)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(p)


def _rewrite_config(path: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    payload = torch.load(path, weights_only=True)
    cfg = json.loads(payload["config"])
    mutate(cfg)
    payload["config"] = json.dumps(cfg)
    torch.save(payload, path)


def test_unknown_primitive_in_config(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    _rewrite_config(path, lambda c: c.update(primitives=["lbc", "sobel"]))
    with pytest.raises(CheckpointError, match="unknown primitive kind"):
        load_checkpoint(path)


def test_unknown_task_kind_in_config(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    _rewrite_config(path, lambda c: c["tasks"][0].update(kind="detection"))
    with pytest.raises(CheckpointError, match="unknown kind 'detection'"):
        load_checkpoint(path)


def test_altered_primitive_is_refused(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    name = next(k for k in payload["state_dict"] if ".kernel_" in k)
    payload["state_dict"][name] = payload["state_dict"][name] * 2
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="fixed primitive"):
        load_checkpoint(path)
