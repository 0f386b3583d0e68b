"""Parse ``tegrastats`` lines of every Jetson module, and sample them during a benchmark.

Line formats (real lines in tests/jetson/data/tegrastats): Orin and Xavier NX print rails as
``VDD_IN 5704mW/5704mW``, Nano and TX2 as ``POM_5V_IN 1284/1284`` (also mW); L4T R39.2 prints a
third value, the peak (``VDD_GPU 4925mW/4925mW/4925mW``: current/average/max). Orin prints the
GPU clock per GPC as ``GR3D_FREQ 0%@[305]`` or ``@[0,0]``, Thor (L4T R38+) without the load
(``GR3D_FREQ @[0,0,0]``), older boards ``GR3D_FREQ 0%@76`` or just ``0%``; CPU cores are
``load%@MHz`` or ``off``; temperatures ``name@41.5C`` (R39.2: ``name@41.5C/42.0C``, current/max),
where ``-256C`` means an absent sensor and ``PMIC@100C`` is a dummy value.

Total power is the module-input rail, never a sum of sub-rails (jetson_stats#51):
``VDD_IN`` (Orin NX/Nano, Xavier NX, TX2), ``POM_5V_IN`` (Nano), ``VIN`` (Thor, where its line
has it). AGX Orin has no single input
rail: its total is VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0, the three rails of its first INA3221
(VDDQ_VDD2_1V8AO is fed from VIN_SYS_5V0 and is not added again; jtop's fallback sums every
rail, which counts it twice). AGX Xavier's six input-side rails add up to its total (NVIDIA
forum "Xavier total power consumption", cited in jetson_stats#51). Thor without ``VIN``: the sum
VDD_GPU + VDD_CPU_SOC_MSS + VIN_SYS_5V0 of its printed rails, labelled as a lower bound (no
module-input rail in the line). Anything else: no total.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from edge.core.errors import EdgeError, MissingDependencyError


class TegrastatsParseError(EdgeError, ValueError):
    """A line is not a tegrastats line (the sampler skips and counts such lines)."""

    stage = "telemetry"


@dataclass(frozen=True)
class TegraSample:
    """One tegrastats line. Frequencies in MHz, loads in %, power in mW, temperatures in °C."""

    timestamp: str | None
    ram_used_mb: int
    ram_total_mb: int
    swap: tuple[int, int] | None
    """(used MB, total MB), or None when the line has no SWAP field."""
    cpu: tuple[tuple[int, int | None] | None, ...]
    """Per core (load %, MHz); None for a core that is off. MHz is None when not printed."""
    emc_load: int | None
    emc_mhz: int | None
    gpu_load: int | None
    """None where the line prints no GPU load (Thor: ``GR3D_FREQ @[f0,f1,f2]``)."""
    gpu_mhz: tuple[int, ...]
    """The GPU clock: one value, or one per GPC on Orin (``@[f0,f1]``); empty when not printed."""
    temps: dict[str, float] = field(default_factory=dict)
    rails: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Rail name -> (current mW, average mW since tegrastats started)."""
    rails_max: dict[str, int] = field(default_factory=dict)
    """Rail name -> peak mW since tegrastats started, where the line prints it (L4T R39.2+)."""
    total_power_mw: int | None = None
    total_power_avg_mw: int | None = None
    total_power_source: str | None = None
    """How the total was obtained: the rail name, or the sum used (see the module docstring)."""


_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)([kMG])B\b")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)([kMG])B\b")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GPU = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@(?:\[([\d,]*)\]|(\d+)))?")
_TEMP = re.compile(r"(?<![\w%@])([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(
    r"(?<![\w@/])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\w/])"
)
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "NC"}

_AGX_ORIN_INPUTS = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
_AGX_XAVIER_INPUTS = ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")
_THOR_RAILS = ("VDD_GPU", "VDD_CPU_SOC_MSS", "VIN_SYS_5V0")


def _to_mb(value: str, unit: str) -> int:
    n = int(value)
    return {"k": n // 1024, "M": n, "G": n * 1024}[unit]


def _parse_cpu(body: str, shared_mhz: str | None) -> tuple[tuple[int, int | None] | None, ...]:
    cores: list[tuple[int, int | None] | None] = []
    for entry in (e.strip() for e in body.split(",")):
        if entry == "off":
            cores.append(None)
            continue
        m = re.fullmatch(r"(\d+)%(?:@(\d+))?", entry)
        if m:  # anything else (e.g. an ellipsis in a pasted line) is not a core: skipped
            mhz = m.group(2) or shared_mhz
            cores.append((int(m.group(1)), int(mhz) if mhz else None))
    return tuple(cores)


def _total_power(rails: dict[str, tuple[int, int]]) -> tuple[int | None, int | None, str | None]:
    for name in ("VDD_IN", "POM_5V_IN", "VIN"):
        if name in rails:
            cur, avg = rails[name]
            return cur, avg, f"{name} (module input rail)"
    for group, label in (
        (_AGX_ORIN_INPUTS, "AGX Orin"),
        (_AGX_XAVIER_INPUTS, "AGX Xavier"),
    ):
        if all(name in rails for name in group):
            cur = sum(rails[n][0] for n in group)
            avg = sum(rails[n][1] for n in group)
            return cur, avg, f"{' + '.join(group)} ({label}: sum of its input-side rails)"
    if all(name in rails for name in _THOR_RAILS):
        cur = sum(rails[n][0] for n in _THOR_RAILS)
        avg = sum(rails[n][1] for n in _THOR_RAILS)
        rails_sum = " + ".join(_THOR_RAILS)
        return cur, avg, f"{rails_sum} (Thor: sum of the printed rails; a lower bound, no VIN)"
    return None, None, None


def parse_tegrastats_line(line: str) -> TegraSample:
    """Parse one tegrastats output line. Raises TegrastatsParseError if it has no ``RAM`` field."""
    text = line.strip()
    ram = _RAM.search(text)
    if ram is None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise TegrastatsParseError(
            f"not a tegrastats line (no 'RAM used/totalMB' field): {shown!r}; expected the "
            "output of `tegrastats --interval MS`"
        )
    ts = _TIMESTAMP.match(text)
    swap = _SWAP.search(text)
    cpu = _CPU.search(text)
    emc = _EMC.search(text)
    gpu = _GPU.search(text)
    gpu_mhz: tuple[int, ...] = ()
    if gpu is not None and gpu.group(2):
        gpu_mhz = tuple(int(f) for f in gpu.group(2).split(",") if f)
    elif gpu is not None and gpu.group(3):
        gpu_mhz = (int(gpu.group(3)),)
    temps: dict[str, float] = {}
    for name, value in _TEMP.findall(text):
        t = float(value)
        if t <= -256.0 or (name.upper() == "PMIC" and t == 100.0):
            continue  # absent sensor / dummy reading
        temps[name] = t
    rails: dict[str, tuple[int, int]] = {}
    rails_max: dict[str, int] = {}
    for name, cur, avg, peak in _RAIL.findall(text):
        if name not in _NOT_RAILS:
            rails[name] = (int(cur), int(avg))
            if peak:
                rails_max[name] = int(peak)
    total, total_avg, source = _total_power(rails)
    return TegraSample(
        timestamp=ts.group(1) if ts else None,
        ram_used_mb=_to_mb(ram.group(1), ram.group(3)),
        ram_total_mb=_to_mb(ram.group(2), ram.group(3)),
        swap=(
            (_to_mb(swap.group(1), swap.group(3)), _to_mb(swap.group(2), swap.group(3)))
            if swap
            else None
        ),
        cpu=_parse_cpu(cpu.group(1), cpu.group(2)) if cpu else (),
        emc_load=int(emc.group(1)) if emc else None,
        emc_mhz=int(emc.group(2)) if emc and emc.group(2) else None,
        gpu_load=int(gpu.group(1)) if gpu and gpu.group(1) else None,
        gpu_mhz=gpu_mhz,
        temps=temps,
        rails=rails,
        rails_max=rails_max,
        total_power_mw=total,
        total_power_avg_mw=total_avg,
        total_power_source=source,
    )


class TegrastatsSampler:
    """Collect tegrastats samples, each with a ``time.monotonic()`` stamp, while code runs.

    Use ``start()``/``stop()`` (or ``with``) around a benchmark, or ``from_lines`` on captured
    output. Lines that do not parse are skipped and counted (``skipped``), never fatal.
    """

    def __init__(
        self,
        interval_ms: int = 500,
        *,
        command: str = "tegrastats",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_ms <= 0:
            raise EdgeError(f"tegrastats interval must be > 0 ms, got {interval_ms}")
        self.interval_ms = int(interval_ms)
        self.command = command
        self._clock = clock
        self.samples: list[tuple[float, TegraSample]] = []
        self.skipped = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_lines(
        cls, lines: Iterable[str], *, clock: Callable[[], float] | None = None
    ) -> TegrastatsSampler:
        """A sampler filled from captured lines (stamps from ``clock``, else 0, 1, 2, ...)."""
        sampler = cls()
        counter = iter(range(1 << 62))
        stamp = clock or (lambda: float(next(counter)))
        for line in lines:
            sampler._add(line, stamp())
        return sampler

    @classmethod
    def available(cls, command: str = "tegrastats") -> bool:
        return shutil.which(command) is not None

    def _add(self, line: str, stamp: float) -> None:
        if not line.strip():
            return
        try:
            sample = parse_tegrastats_line(line)
        except TegrastatsParseError as e:
            with self._lock:
                self.skipped += 1
                self.last_error = str(e)
            return
        with self._lock:
            self.samples.append((stamp, sample))

    def start(self) -> TegrastatsSampler:
        """Start ``tegrastats --interval MS`` in the background. Raises MissingDependencyError
        (with advice) where tegrastats is not installed."""
        if self._proc is not None:
            raise EdgeError("this tegrastats sampler is already running; call stop() first")
        exe = shutil.which(self.command)
        if exe is None:
            raise MissingDependencyError(
                f"'{self.command}' is not on PATH: power/temperature telemetry needs a Jetson "
                "(tegrastats ships with L4T, package nvidia-l4t-tools); inside a container, "
                "mount /usr/bin/tegrastats from the host, or profile without --telemetry"
            )
        args = [exe, "--interval", str(self.interval_ms)]
        stdbuf = shutil.which("stdbuf")
        if stdbuf is not None:  # tegrastats block-buffers into a pipe; ask for line buffering
            args = [stdbuf, "-oL", *args]
        self._proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            self._add(line, self._clock())

    def stop(self) -> None:
        """Stop the tegrastats process and wait for the reader thread."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TegrastatsSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """Mean/max power per rail and total, max temperatures, mean GPU/EMC load, peak RAM."""
        with self._lock:
            samples = [s for _, s in self.samples]
            stamps = [t for t, _ in self.samples]
            skipped = self.skipped
        out: dict[str, Any] = {
            "samples": len(samples),
            "skipped_lines": skipped,
            "duration_s": (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
        }
        if not samples:
            return out

        def stats(values: list[int]) -> dict[str, float]:
            return {"mean": fmean(values), "max": float(max(values))}

        power: dict[str, dict[str, float]] = {}
        totals = [s.total_power_mw for s in samples if s.total_power_mw is not None]
        if totals:
            power["total"] = stats(totals)
        for name in sorted({n for s in samples for n in s.rails}):
            power[name] = stats([s.rails[name][0] for s in samples if name in s.rails])
        temps: dict[str, float] = {}
        for s in samples:
            for name, t in s.temps.items():
                temps[name] = max(t, temps.get(name, t))
        gpu = [s.gpu_load for s in samples if s.gpu_load is not None]
        emc = [s.emc_load for s in samples if s.emc_load is not None]
        sources = {s.total_power_source for s in samples if s.total_power_source}
        out.update(
            power_mw=power,
            total_power_source=sources.pop() if len(sources) == 1 else None,
            temps_max_c=temps,
            gpu_load_mean=fmean(gpu) if gpu else None,
            emc_load_mean=fmean(emc) if emc else None,
            ram_used_max_mb=max(s.ram_used_mb for s in samples),
        )
        return out


def jtop_stats() -> dict[str, Any] | None:
    """One snapshot of ``jtop`` stats when jetson-stats is importable and its service answers;
    None otherwise. Optional: tegrastats parsing above needs no jtop."""
    import importlib

    try:
        jtop_mod = importlib.import_module("jtop")
    except ImportError:
        return None
    try:
        with jtop_mod.jtop() as j:
            return dict(j.stats) if j.ok() else None
    except Exception:  # the service is down, not accessible, or of another version
        return None
