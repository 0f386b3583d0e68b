"""systemd service notifications for `edge run` under `Type=notify` (jetson/edge-line.service).

``READY=1`` once the bundle is loaded and warmed up; then, when systemd set a watchdog
(``WatchdogSec=``: it passes ``WATCHDOG_USEC`` and ``WATCHDOG_PID``), ``WATCHDOG=1`` every half
period, but only while the capture thread's heartbeat (:meth:`CaptureThread.heartbeat_age_s`)
is fresh: a camera ``open()``/``close()`` that hangs or a pipeline that stops taking frames
stops the pings, and systemd kills and restarts the wedged process. ``STOPPING=1`` at the end.

The protocol is one datagram per message on the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a
leading ``@`` is the abstract namespace); without that variable (not under systemd) every call
here does nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType


def sd_notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. "READY=1") to systemd; False when not run under systemd."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)  # never wait on a full queue: a ping must not wedge the service
        try:
            sock.connect(target)
            sock.send(message.encode("utf-8"))
        except OSError:
            return False  # systemd went away (shutdown) or is not reading: nothing to do
    return True


def watchdog_period_s(env: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog period for this process (``WatchdogSec=``), or None when unset or
    meant for another process (``WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class ServiceNotifier:
    """``with ServiceNotifier(capture.heartbeat_age_s):`` around the capture loop.

    ``health_age_s`` returns how many seconds ago the watched work last showed life; a ping is
    sent only while that is under half the watchdog period. ``env``: the environment to read
    (tests pass their own).
    """

    def __init__(
        self,
        health_age_s: Callable[[], float],
        *,
        status: str = "running",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.health_age_s = health_age_s
        self.status = status
        self.env = dict(os.environ if env is None else env)
        self.period_s = watchdog_period_s(self.env)
        self.pings = self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ServiceNotifier:
        if not sd_notify(f"READY=1\nSTATUS={self.status}", self.env):
            return self
        if self.period_s is not None:
            self._thread = threading.Thread(target=self._ping, name="edge-watchdog", daemon=True)
            self._thread.start()
        return self

    def _ping(self) -> None:
        assert self.period_s is not None
        half = self.period_s / 2
        while not self._stop.wait(half):
            age = self.health_age_s()
            if age < half:
                sd_notify("WATCHDOG=1", self.env)
                self.pings += 1
            else:
                self.skipped += 1
                sd_notify(f"STATUS=capture or pipeline silent for {age:.0f} s", self.env)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        sd_notify("STOPPING=1", self.env)
