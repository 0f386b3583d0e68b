"""Files: written atomically, hashed the same way everywhere. Imports nothing heavy.

Nothing is written half: every artifact is written to a temporary name beside its target, then
renamed into place (``os.replace`` is atomic on one filesystem).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
DIR_MODE = 0o755

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Image files a folder source or a labelled folder reads (lower case; OpenCV decodes them)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, streamed (engines and bundles can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` to write a temporary file beside ``path``, then rename it.

    For writers that insist on a path of their own (``torch.save``, ``onnx.save``, ``np.savez``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; artifacts are shared with other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
    """Write ``data`` (fsync'd before the rename: engines must survive a power cut)."""

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return write_with(path, writer)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text))


def write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int = 2, sort_keys: bool = False
) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


@contextmanager
def staged_dir(target: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it becomes ``target``.

    On an exception the temporary folder is removed and ``target`` is untouched. With
    ``replace``, an existing ``target`` is swapped out only after the new one is complete.
    """
    target = Path(target)
    parent = target.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            if p.is_dir():
                os.chmod(p, DIR_MODE)
        old = None
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} exists")
            old = parent / f".{target.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
