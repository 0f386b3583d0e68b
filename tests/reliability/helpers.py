"""Shared parts of the reliability suite: the CLI in a subprocess, a small disk, JSONL reading."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 180


def edge(
    *args: str, preexec: Callable[[], None] | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``edge ARGS`` in a subprocess (the installed CLI's code from this checkout)."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        preexec_fn=preexec,
    )


def popen_edge(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, strictly parsed (no NaN), the file ending in a newline."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"{path} ends with half a line: {text[-80:]!r}"

    def no_constants(name: str) -> Any:
        raise AssertionError(f"{path} holds a bare {name}: not strict JSON")

    return [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]


def frames_of(path: Path) -> list[dict[str, Any]]:
    return [r for r in records(path) if "event" not in r]


def dead_pid() -> int:
    """The PID of a process that has exited (reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "256k", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder``; raises OSError where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise OSError(f"mount -t tmpfs failed: {r.stderr.strip() or r.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def file_size_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: writes past ``limit`` bytes per file fail with EFBIG (RLIMIT_FSIZE)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply
