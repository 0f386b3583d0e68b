"""What ``edge run`` writes, made safe: path checks, the output lock, whole-line appends with
rotation, and write errors turned into clear stops.

- :func:`check_output_paths`: no two of source / ``--out`` / ``--video`` / ``--summary`` may be
  the same file, and each output's folder must be writable (checked before anything is opened).
- :class:`OutputLock`: an exclusive ``fcntl.flock`` on ``.NAME.lock`` beside the results file,
  held for the whole run; a second run on the same ``--out`` is refused. (The lock is on its own
  file, not on the results file, because rotation renames the results file.)
- :class:`LineFile`: JSON lines appended with one ``write`` per line on an ``O_APPEND``
  descriptor; a write that fails part-way is cut back to the last whole line. ``rotate``
  ("SIZE" such as ``100M``, or ``daily``) renames the full file to ``NAME.1.jsonl`` (older ones
  shift to ``.2``, ``.3``...; ``keep`` of them stay) and starts a new one with the run's header.
- :class:`OutputError`: a write failed; ``reason`` is ``disk full`` (ENOSPC, EDQUOT, EFBIG),
  ``read-only filesystem`` (EROFS) or ``write failed``: the run stops with that reason.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge import __version__
from edge.core.errors import ConfigError, EdgeError
from edge.core.files import NO_SPACE_ERRNOS, clean_stale_temporaries, sha256_file
from edge.core.manifest import MANIFEST

try:  # POSIX only; Windows has no flock (the lock is then skipped)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class OutputError(EdgeError):
    """Writing a run's output failed; ``reason`` becomes the summary's ``stopped_by``."""

    stage = "run"

    def __init__(self, message: str, *, reason: str = "write failed") -> None:
        super().__init__(message)
        self.reason = reason
        self.summary: Any = None
        """The run's summary, set by the run loop before it re-raises."""


def reason_of(e: OSError) -> str:
    if e.errno in NO_SPACE_ERRNOS:
        return "disk full"
    if e.errno == errno.EROFS:
        return "read-only filesystem"
    return "write failed"


def write_failed(what: str, path: Path, e: OSError) -> OutputError:
    reason = reason_of(e)
    hint = {
        "disk full": "free space on that disk or write elsewhere",
        "read-only filesystem": "write to a writable location",
    }.get(reason, "check the path and permissions")
    return OutputError(f"cannot write {what} '{path}': {e.strerror or e}; {hint}", reason=reason)


def parse_rotate(text: str | None) -> tuple[str, int] | None:
    """``"100M"`` -> ("size", 104857600); ``"daily"`` -> ("daily", 0); None -> None."""
    if text is None:
        return None
    if text.strip().lower() == "daily":
        return ("daily", 0)
    m = _SIZE.match(text)
    size = int(float(m[1]) * _UNITS[m[2].lower()]) if m else 0
    if size < 1024:
        raise ConfigError(
            f"--rotate {text!r}: expected a size of at least 1K (e.g. 100M, 2G) or 'daily'"
        )
    return ("size", size)


def _local_path(source: str) -> Path | None:
    """The file a source URI reads, when it is a local path (not a camera, stream, synthetic)."""
    scheme, sep, rest = source.partition(":")
    if sep and scheme.lower() == "file":
        return Path(rest[2:] if rest.startswith("//") else rest)
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]+", scheme) and not Path(source).exists():
        return None
    return Path(source)


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(
    source: str, out: Path | None, video: Path | None, summary: Path | None
) -> None:
    """Refuse outputs that are the source or each other, or whose folder is not writable."""
    named: list[tuple[str, Path]] = []
    src = _local_path(source)
    if src is not None:
        named.append(("--source", src))
    named += [(f, p) for f, p in (("--out", out), ("--video", video), ("--summary", summary)) if p]
    for i, (fa, a) in enumerate(named):
        for fb, b in named[i + 1 :]:
            if _same(a, b):
                raise ConfigError(
                    f"{fa} and {fb} are the same file ('{b}'): writing one would destroy the "
                    "other; give each output its own path"
                )
    for flag, p in named[1 if src is not None else 0 :]:
        folder = p if flag == "--video" and p.suffix == "" else p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # the first existing ancestor decides writability
        if not os.access(folder, os.W_OK):
            ro = _read_only(folder)
            raise ConfigError(
                f"{flag} '{p}': the folder '{folder}' is "
                f"{'on a read-only filesystem' if ro else 'not writable'}; choose another path"
            )


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def summary_path(out: Path | None, summary: Path | None) -> Path | None:
    """Where a run's summary goes: ``summary`` when given, else ``<out>.summary.json`` beside the
    JSONL (``r.jsonl`` -> ``r.summary.json``), else nowhere."""
    if summary is not None:
        return Path(summary)
    if out is not None:
        return Path(out).with_name(Path(out).stem + ".summary.json")
    return None


class OutputLock:
    """An exclusive lock on ``.NAME.lock`` beside ``path``, held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(f".{path.name}.lock")
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_failed("the lock file", self.path, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"another edge run (pid {holder}) is writing to '{path}' (it holds "
                f"'{self.path}'); stop it or give this run another --out",
                reason="locked",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking would race)
            self._fd = None


def _finite(value: Any) -> Any:
    """``value`` with every NaN/Infinity float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_line(record: Mapping[str, Any]) -> bytes:
    """One strict-JSON line (NaN/Infinity become null)."""
    try:
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode()


def strict_json(data: Any) -> Any:
    """``data`` safe for ``json.dumps(allow_nan=False)`` (summaries)."""
    return _finite(data)


class LineFile:
    """Appends whole JSON lines to ``path``, with optional rotation (see the module doc).

    ``header``: a record written first in every file this run writes to (the run line).
    """

    def __init__(
        self,
        path: Path,
        *,
        header: Mapping[str, Any] | None = None,
        rotate: tuple[str, int] | None = None,
        keep: int = 5,
    ) -> None:
        if keep < 1:
            raise ConfigError(f"--keep {keep}: must be >= 1")
        self.path, self.header, self.rotate, self.keep = path, header, rotate, keep
        self.lines = 0
        self.rotations = 0
        self._fd: int | None = None
        self._size = 0
        self._day = ""
        self._open()
        if rotate is not None and rotate[0] == "daily" and self._size and self._day != _today():
            self._rotate()
        elif self.header is not None:
            self._append(json_line(self.header))

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise write_failed("results to", self.path, e) from e
        st = os.fstat(fd)
        self._fd, self._size = fd, st.st_size
        self._day = (
            _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).date().isoformat()
            if st.st_size
            else _today()
        )

    def write(self, record: Mapping[str, Any]) -> None:
        data = json_line(record)
        if self.rotate is not None and self._size and self._due(len(data)):
            self._rotate()
        self._append(data)
        self.lines += 1

    def _due(self, n: int) -> bool:
        kind, size = self.rotate or ("", 0)
        if kind == "size":
            return self._size + n > size
        return _today() != self._day

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            raise EdgeError(f"results file '{self.path}' is already closed", stage="run")
        start, view = self._size, memoryview(data)
        try:
            while view:  # one call for a regular file; the loop only guards short writes
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)  # cut back to the last whole line
            raise write_failed("results to", self.path, e) from e
        self._size = start + len(data)

    def _rotate(self) -> None:
        """NAME.jsonl -> NAME.1.jsonl (older ones shift up, beyond ``keep`` deleted); a new
        NAME.jsonl starting with the header."""
        self.close()
        try:
            names = [self._numbered(i) for i in range(self.keep + 1)]
            if names[-1].exists():
                names[-1].unlink()
            for i in range(self.keep - 1, -1, -1):
                if names[i].exists():
                    os.replace(names[i], names[i + 1])
        except OSError as e:
            raise write_failed("rotated results", self.path, e) from e
        self.rotations += 1
        self._open()
        if self.header is not None:
            self._append(json_line(self.header))

    def _numbered(self, i: int) -> Path:
        return (
            self.path if i == 0 else self.path.with_name(f"{self.path.stem}.{i}{self.path.suffix}")
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_precision(backend: str, backend_options: Mapping[str, Any]) -> str:
    """The precision a run's header records for ``backend`` and its options."""
    if backend == "triton":
        return "server"  # what the Triton repository was exported with
    given = backend_options.get("precision")
    return str(given) if given else ("fp16" if backend in ("tensorrt", "trt") else "fp32")


def run_header(
    root: Path, backend: str, precision: str, split: bool, source: str
) -> dict[str, Any]:
    """The line each run (and each rotated file) starts with."""
    return {
        "event": "run",
        "run_id": uuid.uuid4().hex,
        "started": now_iso(),
        "bundle": str(root),
        "bundle_sha256": sha256_file(root / MANIFEST),
        "backend": backend,
        "precision": precision,
        "mode": "split" if split else "fused",
        "source": source,
        "etr_edge": __version__,
        "pid": os.getpid(),
    }


def clean_stale_outputs(*paths: Path | None) -> list[Path]:
    """Remove the temporaries a killed run left beside these outputs (and inside a --video
    folder of PNGs); returns what was removed."""
    removed: list[Path] = []
    for p in paths:
        if p is not None:
            removed += clean_stale_temporaries(Path(p).parent, (Path(p).name,))
            if Path(p).is_dir():
                removed += clean_stale_temporaries(p)
    return removed


def stop_reason(e: BaseException) -> str:
    """The summary's ``stopped_by`` for a run ended by ``e``."""
    if isinstance(e, OutputError):
        return e.reason
    if isinstance(e, OSError) and e.errno is not None:  # e.g. a custom sink's write
        reason = reason_of(e)
        return reason if reason != "write failed" else "error"
    return "error"
