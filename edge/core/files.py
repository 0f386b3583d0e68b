"""Files: written atomically, hashed the same way everywhere. Imports nothing heavy.

Nothing is written half: every artifact is written to a temporary name beside its target, then
renamed into place (``os.replace`` is atomic on one filesystem). Temporary names carry the
writer's PID (``.NAME.tmp-PID-XXXX``), so what a killed process left behind is recognised and
removed by :func:`clean_stale_temporaries` at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
DIR_MODE = 0o755
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Write errors meaning "the disk (or the file size limit) is full"."""
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:[-.].*)?$")


def temp_prefix(name: str, kind: str = "tmp") -> str:
    """``.NAME.tmp-PID-``: the prefix of this process's temporaries for ``name``."""
    return f".{name}.{kind}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be told)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, owned by someone else
    return True


def clean_stale_temporaries(
    folder: str | os.PathLike[str], names: tuple[str, ...] | None = None
) -> list[Path]:
    """Remove temporaries (``.NAME.tmp-PID...``, ``.NAME.old-PID...``) in ``folder`` whose
    writer process is dead; only those of ``names`` when given. Returns what was removed.

    A ``.NAME.old-PID`` folder whose ``NAME`` is missing (a swap killed half-way) is renamed
    back to ``NAME`` rather than removed; it is reported too.
    """
    folder = Path(folder)
    done: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return done
    for p in entries:
        m = _TEMP.match(p.name)
        if m is None or (names is not None and m["name"] not in names):
            continue
        if pid_alive(int(m["pid"])):
            continue
        try:
            target = folder / m["name"]
            if m["kind"] == "old" and not target.exists():
                os.replace(p, target)
            elif p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        done.append(p)
    return done


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
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
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
    ``replace``, an existing ``target`` is swapped out only after the new one is complete (the
    old one goes aside under a name of this process's own, never a sibling's, then is removed).
    """
    target = Path(os.path.abspath(target))
    parent = target.parent
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=parent))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            if p.is_dir():
                os.chmod(p, DIR_MODE)
        swap_dir(tmp, target, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_dir(new: Path, target: Path, *, replace: bool = False) -> None:
    """Rename folder ``new`` to ``target``; an existing ``target`` (with ``replace``) is moved
    aside to a unique ``.NAME.old-PID-XXXX`` first and removed after. The one folder swap."""
    if target.exists() and not replace:
        raise FileExistsError(f"{target} exists")
    old = _aside(target)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        _remove(old)


def swap_in(root: Path, staged: Path, names: tuple[str, ...]) -> None:
    """Replace the entries ``names`` (files or folders) of folder ``root`` with those of
    ``staged``, each by one rename; the old ones wait aside until all are in and are put back
    if one fails."""
    moved: list[tuple[str, Path | None]] = []
    try:
        for n in names:
            old = _aside(root / n)
            moved.append((n, old))
            os.replace(staged / n, root / n)
    except BaseException:
        for n, old in reversed(moved):
            if not os.path.lexists(staged / n):  # the new one went in: take it out again
                _remove(root / n)
            if old is not None:
                os.replace(old, root / n)
        raise
    for _, old in moved:
        if old is not None:
            _remove(old)


def _aside(path: Path) -> Path | None:
    """Move ``path`` (when it exists) to a unique ``.NAME.old-PID-XXXX`` beside it."""
    if not os.path.lexists(path):
        return None
    prefix = temp_prefix(path.name, "old")
    if path.is_dir() and not path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        old = Path(name)
    os.replace(path, old)
    return old


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def temp_dir(parent: str | os.PathLike[str], name: str) -> Path:
    """A new empty ``parent/.NAME.tmp-PID-XXXX`` folder (removed by the caller)."""
    return Path(tempfile.mkdtemp(prefix=temp_prefix(name), dir=parent))
