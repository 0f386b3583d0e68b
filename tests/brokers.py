"""A real mosquitto broker per test on a free 127.0.0.1 port (plain or TLS with a CA made here
by ``cryptography``), and an MQTT subscriber that records what arrives. Tests skip when the
``mosquitto`` binary is missing (``.ci/run`` installs it)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # /usr/sbin: not on every PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def make_ca_and_server_cert(outdir: Path) -> dict[str, Path]:
    """A self-signed EC CA and a server certificate it signed (SAN localhost, 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    outdir.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etr-test-ca")])
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {"ca": outdir / "ca.crt", "cert": outdir / "server.crt", "key": outdir / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    os.chmod(paths["key"], 0o600)
    return paths


class Mosquitto:
    """``Mosquitto(workdir, tls=False).start()``; ``stop()``/``start()`` again keep the port."""

    def __init__(
        self, workdir: Path, tls: bool = False, persistent: bool = False, port: int = 0
    ) -> None:
        need_mosquitto()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca: Path | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistent else 'false'}",
            f"persistence_location {workdir}/",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:  # as root mosquitto drops to 'mosquitto' before reading the certs
            lines.append("user root")
        if tls:
            p = make_ca_and_server_cert(workdir / "certs")
            self.ca = p["ca"]
            lines += [f"cafile {p['ca']}", f"certfile {p['cert']}", f"keyfile {p['key']}"]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"

    def start(self) -> Mosquitto:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError("mosquitto did not start:\n" + self.log.read_text())
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def need_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto; .ci/run does)")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


class Subscriber:
    """Subscribes to ``topic`` (QoS 1) and keeps ``(topic, payload, retain)`` in arrival order;
    reconnects and re-subscribes by itself. ``persistent``: a session the broker keeps (with a
    persistent broker, across its restart), so nothing published while we reconnect is lost."""

    def __init__(
        self, port: int, topic: str, ca: Path | None = None, persistent: bool = False
    ) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sub-{os.getpid()}-{port}",
            clean_session=not persistent,  # persistent: the broker queues QoS 1 while we are away
        )
        if ca is not None:
            import ssl

            c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(0.1, 0.5)
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(5), "subscriber could not subscribe"

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def json(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, pred: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return bool(pred())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def until(pred: Any, timeout: float = 15.0) -> Any:
    """Poll ``pred`` every 0.1 s until it returns something true (connection errors count as
    not yet); raises after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
        except (OSError, ConnectionError, asyncio.TimeoutError):
            got = None
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
