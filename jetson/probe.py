"""Power mode, clock state and machine facts for reports (``nvpmodel -q``, ``jetson_clocks
--show``), run through a ``run`` function given as a parameter so tests feed captured outputs.

Benchmarks are only comparable with the power mode and clock state recorded next to them
(torch2trt#188: Nano ResNet-18 75 -> 90 FPS after ``jetson_clocks``). Which board this is comes
from :mod:`edge.core.board`.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.core.board import probe_jetson, read_text
from edge.core.lazy_trt import installed_tensorrt

if TYPE_CHECKING:  # an alias for annotations only (Python 3.8 cannot subscript Callable)
    Runner = Callable[..., Any]
    """A ``subprocess.run``-compatible function: ``run(args, capture_output=True, ...)``."""


# ------------------------------------------------------------------ power mode and clocks


def _run_text(run: Runner, args: list[str]) -> tuple[int, str] | None:
    """Run a command; None when it does not exist here. Returns (exit status, stdout+stderr)."""
    try:
        proc = run(args, capture_output=True, text=True, timeout=10, check=False)
    except (FileNotFoundError, PermissionError):
        return None
    except subprocess.TimeoutExpired:
        return (124, f"{args[0]} did not answer within 10 s")
    out = (proc.stdout or "") + (proc.stderr or "")
    return int(proc.returncode), out


def parse_nvpmodel_query(text: str) -> dict[str, Any] | None:
    """Parse ``nvpmodel -q``: 'NV Power Mode: MAXN\\n0' -> {'name': 'MAXN', 'id': 0}.

    Warning lines such as 'NVPM WARN: fan mode is not set!' are ignored.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        m = re.match(r"NV Power Mode:\s*(\S.*)$", line)
        if m:
            mode_id = None
            if i + 1 < len(lines) and re.fullmatch(r"\d+", lines[i + 1]):
                mode_id = int(lines[i + 1])
            return {"name": m.group(1).strip(), "id": mode_id}
    return None


def power_mode(run: Runner = subprocess.run) -> dict[str, Any] | None:
    """The current nvpmodel power mode ({'name', 'id'}), or None where nvpmodel is absent/fails."""
    res = _run_text(run, ["nvpmodel", "-q"])
    if res is None or res[0] != 0:
        return None
    return parse_nvpmodel_query(res[1])


_FREQ_LINE = re.compile(r"^(GPU|EMC)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)")
_CPU_LINE = re.compile(
    r"^cpu(\d+):\s*(?:Online=(\d)\s+)?(?:Governor|Gonvernor)=\S+\s+"
    r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)"
)


def parse_jetson_clocks_show(text: str) -> dict[str, Any]:
    """Parse ``jetson_clocks --show`` and decide whether the clocks are locked.

    Heuristic (what ``jetson_clocks`` does: pin CPU min=max and GPU/EMC at their max): *locked*
    when every online CPU core has MinFreq == MaxFreq, the GPU's CurrentFreq == MaxFreq and the
    EMC's CurrentFreq == MaxFreq. A GPU or EMC line that is missing is not checked. Cores marked
    ``Online=0`` are ignored (newer L4T prints no Online field: those cores count as online). With
    no CPU and no GPU line at all the answer is ``None`` (unknown). DLA/PVA lines are not read.
    """
    cpus: list[dict[str, int]] = []
    units: dict[str, dict[str, int]] = {}
    mode = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _CPU_LINE.match(line)
        if m:
            if m.group(2) == "0":
                continue
            cpus.append(
                {"min": int(m.group(3)), "max": int(m.group(4)), "current": int(m.group(5))}
            )
            continue
        m = _FREQ_LINE.match(line)
        if m:
            units[m.group(1).lower()] = {
                "min": int(m.group(2)),
                "max": int(m.group(3)),
                "current": int(m.group(4)),
            }
            continue
        m = re.match(r"NV Power Mode:\s*(\S.*)$", line)
        if m:
            mode = m.group(1).strip()
    checks: dict[str, bool] = {}
    if cpus:
        checks["cpu_min_eq_max"] = all(c["min"] == c["max"] for c in cpus)
    for unit in ("gpu", "emc"):
        if unit in units:
            checks[f"{unit}_at_max"] = units[unit]["current"] == units[unit]["max"]
    locked = None if not cpus and "gpu" not in units else all(checks.values())
    return {
        "locked": locked,
        "checks": checks,
        "cpu_online": len(cpus),
        "cpu_max_mhz": max((c["max"] // 1000 for c in cpus), default=None),
        "gpu_mhz": {k: v // 1_000_000 for k, v in units["gpu"].items()} if "gpu" in units else None,
        "emc_mhz": {k: v // 1_000_000 for k, v in units["emc"].items()} if "emc" in units else None,
        "power_mode": mode,
    }


def clocks_locked(run: Runner = subprocess.run) -> dict[str, Any] | None:
    """Clock state from ``jetson_clocks --show`` (see ``parse_jetson_clocks_show``).

    None where jetson_clocks does not exist; ``{'locked': None, 'error': ...}`` when it fails
    (it needs root: 'Run this script ... as a root user').
    """
    res = _run_text(run, ["jetson_clocks", "--show"])
    if res is None:
        return None
    status, out = res
    if status != 0 or ("root" in out.lower() and "MinFreq" not in out):
        first = out.strip().splitlines()[0] if out.strip() else f"exit status {status}"
        return {
            "locked": None,
            "error": f"jetson_clocks --show failed ({first}); run the profiler as root (sudo) "
            "to record the clock state",
        }
    return parse_jetson_clocks_show(out)


# ------------------------------------------------------------------ machine facts


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model(root: Path) -> str:
    text = read_text(root / "proc" / "cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def machine_facts(root: Path = Path("/"), run: Runner = subprocess.run) -> dict[str, Any]:
    """Facts for a profiling report: CPU, OS, Python and library versions; on a Jetson also the
    probed module, JetPack/L4T, power mode and clock state. Imports nothing heavy except TensorRT
    (lazily, only to read its version)."""
    trt = installed_tensorrt()
    facts: dict[str, Any] = {
        "cpu": _cpu_model(Path(root)),
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": _dist_version("numpy"),
        "onnxruntime": _dist_version("onnxruntime") or _dist_version("onnxruntime-gpu"),
        "tensorrt": str(trt) if trt is not None else None,
        "jetson": None,
    }
    info = probe_jetson(Path(root))
    if info is not None:
        facts["jetson"] = info.to_dict()
        facts["power_mode"] = power_mode(run)
        facts["clocks"] = clocks_locked(run)
    return facts
