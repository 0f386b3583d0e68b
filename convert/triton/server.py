"""A local ``tritonserver`` from the ``nvidia-pytriton`` wheel (x86_64, glibc >= 2.35): serve a
repository on 127.0.0.1 for tests, benchmarks and CPU machines without NVIDIA's containers.

The wheel lives in its own venv (it needs numpy < 2, which the Python backend's stub imports in
that venv's Python, next to onnxruntime for the ``python`` flavor):

    python -m venv .triton-venv
    .triton-venv/bin/pip install nvidia-pytriton "numpy<2" onnxruntime

    with LocalTritonServer(repo, venv=".triton-venv") as server:
        server.url     # http://127.0.0.1:PORT

The backends folder is copied to a temporary folder with the stub for the venv's Python version
(pytriton does the same), the venv's bin goes first on PATH (the stub takes its prefix from the
first python3 there) and its libpython's folder first on LD_LIBRARY_PATH, then the wheel's
bundled libraries.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from edge.core.errors import MissingDependencyError
from edge.runtime.backends.triton import TritonError

VENV_ENV = "EDGE_TRITON_VENV"
"""Environment variable naming the venv that holds nvidia-pytriton."""

_PROBE = (
    "import json, sys, sysconfig; print(json.dumps({'purelib': sysconfig.get_paths()['purelib'], "
    "'libdir': sysconfig.get_config_var('LIBDIR'), "
    "'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED')), "
    "'version': '%d.%d' % sys.version_info[:2]}))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _layout(venv: Path) -> dict[str, Any]:
    python = venv / "bin" / "python"
    if not python.is_file():
        raise MissingDependencyError(
            f"no Python venv at {venv} (set {VENV_ENV}); make one with: python -m venv {venv} && "
            f"{venv}/bin/pip install nvidia-pytriton 'numpy<2' onnxruntime"
        )
    info = json.loads(
        subprocess.run(
            [str(python), "-c", _PROBE], check=True, text=True, capture_output=True, timeout=60
        ).stdout
    )
    dist = Path(info["purelib"]) / "pytriton" / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise MissingDependencyError(
            f"{venv} has no nvidia-pytriton (no {dist}/bin/tritonserver); install it with: "
            f"{venv}/bin/pip install nvidia-pytriton 'numpy<2' onnxruntime"
        )
    if not info["shared"]:
        raise MissingDependencyError(
            f"the Python of {venv} has no shared libpython, which the Python backend's stub "
            "loads; make the venv with a Python built with --enable-shared (pyenv: "
            "PYTHON_CONFIGURE_OPTS=--enable-shared; Debian/Ubuntu: python3 plus libpython3.X)"
        )
    return {**info, "dist": str(dist), "libs": str(Path(info["purelib"]) / "nvidia_pytriton.libs")}


class LocalTritonServer:
    """``tritonserver`` on 127.0.0.1 free ports serving ``repo``; a context manager."""

    def __init__(self, repo: str | Path, *, venv: str | Path, ready_timeout_s: float = 120.0):
        self.repo = Path(repo).resolve()
        self.venv = Path(venv).resolve()
        self.ready_timeout_s = ready_timeout_s
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> LocalTritonServer:
        info = _layout(self.venv)
        self._tmp = tempfile.TemporaryDirectory(prefix="etr-triton-")
        work = Path(self._tmp.name)
        dist = Path(info["dist"])
        backends = work / "backends"
        shutil.copytree(dist / "backends", backends)
        stub = dist / "python_backend_stubs" / info["version"] / "triton_python_backend_stub"
        shutil.copy2(stub, backends / "python" / stub.name)
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = [info["libdir"], info["libs"], env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        cmd = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            f"--cache-directory={dist / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
        ]
        self.log_path = work / "tritonserver.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with status {self.process.returncode} while loading "
                    f"{self.repo}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TritonError(
            f"tritonserver not ready after {self.ready_timeout_s:g} s on {self.repo}:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        p, self.process = self.process, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
