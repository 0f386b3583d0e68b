"""Item 12: a video file that ends before its declared frame count is warned about (summary,
stderr, a ``truncated`` event); a truncated image in a folder is recorded in its frame's line."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from reliability.helpers import edge, frames_of, records

from edge.data.demo_line import write_video

FRAMES = 40


def faststart(mp4: bytes) -> bytes:
    """The same MP4 with its moov atom before the media data (what ``ffmpeg -movflags
    +faststart`` writes), chunk offsets shifted to match."""
    atoms, i = [], 0
    while i < len(mp4):
        size, kind = struct.unpack(">I4s", mp4[i : i + 8])
        atoms.append((kind, mp4[i : i + size]))
        i += size
    moov = bytearray(dict(atoms)[b"moov"])
    j = moov.find(b"stco")
    while j != -1:
        count = struct.unpack(">I", moov[j + 8 : j + 12])[0]
        for k in range(count):
            o = j + 12 + 4 * k
            moov[o : o + 4] = struct.pack(">I", struct.unpack(">I", moov[o : o + 4])[0] + len(moov))
        j = moov.find(b"stco", j + 4)
    head = b"".join(a for k, a in atoms if k == b"ftyp")
    return head + bytes(moov) + b"".join(a for k, a in atoms if k not in (b"ftyp", b"moov"))


@pytest.mark.parametrize("kind", ["faststart.mp4", "avi"])
def test_a_truncated_video_is_warned_about(tiny_bundle: Path, tmp_path: Path, kind: str) -> None:
    ext = kind.rsplit(".", 1)[-1]
    whole = write_video(tmp_path / f"whole.{ext}", FRAMES)
    data = whole.read_bytes()
    if kind.startswith("faststart"):
        data = faststart(data)
        fixed = tmp_path / "fs.mp4"
        fixed.write_bytes(data)
        cap = cv2.VideoCapture(str(fixed))
        assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
        cap.release()
        r = edge(
            "run", str(tiny_bundle), "--source", str(fixed), "--out", str(tmp_path / "w.jsonl")
        )
        assert r.returncode == 0 and "warning" not in r.stderr  # the whole file: no warning
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "r.jsonl"
    r = edge("run", str(tiny_bundle), "--source", str(cut), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"of the {FRAMES} frames its file declares" in r.stderr
    n = len(frames_of(out))
    assert 0 < n < FRAMES
    event = [e for e in records(out) if e.get("event") == "truncated"]
    assert event == [{"event": "truncated", "declared": FRAMES, "read": n}]


def test_a_truncated_jpeg_in_a_folder_is_recorded_in_its_line(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"f{i}.jpg"), img)
    bad = folder / "f1.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "r.jsonl"
    r = edge("run", str(tiny_bundle), "--source", str(folder), "--out", str(out))
    assert r.returncode == 0, r.stderr
    frames = frames_of(out)
    assert [f.get("warnings") for f in frames] == [
        None,
        ["f1.jpg: truncated JPEG (no end-of-image marker); the decoded image is incomplete"],
        None,
    ]
    assert "1 frame(s) came from damaged images (frames 1)" in r.stderr
