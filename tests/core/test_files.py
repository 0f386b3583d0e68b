from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from edge.core.files import sha256_file, staged_dir, write_bytes, write_json, write_with


def test_sha256_streams_the_whole_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > one 1 MiB chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_writes_are_atomic_and_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "a" / "x.json"
    write_json(target, {"b": 1, "a": 2}, sort_keys=True)
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_bytes(target, b"new")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_with(target, broken)
    assert target.read_bytes() == b"new"  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temp left


def test_staged_dir_replaces_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with staged_dir(out) as d:
        (d / "f").write_text("1")
    assert (out / "f").read_text() == "1"
    with pytest.raises(FileExistsError), staged_dir(out) as d:
        (d / "f").write_text("2")
    with pytest.raises(ValueError), staged_dir(out, replace=True) as d:
        (d / "f").write_text("3")
        raise ValueError("failed half-way")
    assert (out / "f").read_text() == "1"
    with staged_dir(out, replace=True) as d:
        (d / "g").write_text("4")
    assert sorted(p.name for p in out.iterdir()) == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
