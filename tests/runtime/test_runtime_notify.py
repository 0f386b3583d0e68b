"""systemd notifications over a real AF_UNIX datagram socket standing where systemd's would be:
READY, watchdog pings only while the capture heartbeat is fresh, STOPPING; and ``edge run``
sending them under Type=notify."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.runtime.notify import ServiceNotifier, sd_notify, watchdog_period_s
from edge.runtime.run import RunConfig, run_bundle


@pytest.fixture
def systemd_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in the abstract namespace, as NOTIFY_SOCKET names it ('@...')."""
    name = f"@etr-edge-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(0.05)
    try:
        yield name, sock
    finally:
        sock.close()


def received(sock: socket.socket, limit_s: float = 1.0, until: str | None = None) -> list[str]:
    """Messages for ``limit_s`` seconds (or until the message ``until``)."""
    messages: list[str] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and (until is None or until not in messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_sd_notify_sends_one_datagram_to_a_path_socket(tmp_path: Path) -> None:
    path = Path("/tmp") / f"edge-notify-{uuid.uuid4().hex[:8]}.sock"  # AF_UNIX: < 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        assert sd_notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    finally:
        sock.close()
        path.unlink()
    assert not sd_notify("READY=1", {})  # not under systemd: nothing, no error
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(path)})  # nobody listens any more


def test_watchdog_period_is_for_this_process_only() -> None:
    pid = str(os.getpid())
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "0"}) is None and watchdog_period_s({}) is None


def test_pings_stop_while_the_heartbeat_is_stale(systemd_socket) -> None:
    name, sock = systemd_socket
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    age = [0.0]
    with ServiceNotifier(lambda: age[0], status="running test", env=env) as notifier:
        healthy = received(sock, 0.6)
        age[0] = 5.0  # the capture monitor hangs in close(): no more pings
        stale = received(sock, 0.6)
    assert healthy[0] == "READY=1\nSTATUS=running test"
    assert healthy[1:].count("WATCHDOG=1") >= 3
    assert "WATCHDOG=1" not in stale[1:]  # one ping may have been on its way
    assert any(m.startswith("STATUS=capture or pipeline silent") for m in stale)
    assert received(sock, 0.2) == ["STOPPING=1"]
    assert notifier.pings >= 3 and notifier.skipped >= 2


def test_edge_run_tells_systemd_ready_watchdog_and_stopping(
    systemd_socket, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, sock = systemd_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    cfg = RunConfig(
        source="synthetic:?live=1&fps=30&width=160&height=120", duration_s=1.0, warmup=0
    )
    messages: list[str] = []
    listener = threading.Thread(target=lambda: messages.extend(received(sock, 30.0, "STOPPING=1")))
    listener.start()  # systemd reads as messages come; its queue holds about 10
    summary = run_bundle(tiny_bundle, cfg)
    listener.join(timeout=35)
    assert summary.frames > 0 and summary.stopped_by == "duration"
    assert messages[0].startswith("READY=1\nSTATUS=running synthetic:")
    assert messages.count("WATCHDOG=1") >= 3 and messages[-1] == "STOPPING=1"
