"""Which Jetson is this and which JetPack/L4T: read from files under a ``root`` folder, so tests
feed captured files from real boards.

- ``/proc/device-tree/model`` (NUL-terminated): "NVIDIA Jetson Orin Nano Developer Kit";
- ``/proc/device-tree/compatible`` (NUL-separated): the board part number (``nvidia,p3767-0005``)
  and the SoC (``nvidia,tegra234``);
- ``/etc/nv_tegra_release``: ``# R36 (release), REVISION: 4.3, ...`` -> L4T 36.4.3. Inside
  containers it is often empty or absent (jetson-containers#215); the L4T version then comes from
  the dpkg status of ``nvidia-l4t-core`` if the image has it, else it stays unknown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Module key -> (DLA cores). Source: NVIDIA's module data sheets.
DLA_CORES = {
    "agx-orin": 2,
    "orin-nx-16gb": 2,
    "orin-nx-8gb": 1,
    "orin-nano": 0,
    "xavier-nx": 2,
    "agx-xavier": 2,
    "nano": 0,
    "tx2": 0,
    "thor": 0,
    "unknown": 0,
}

# SoC -> CUDA compute capability. Thor is 11.0 under CUDA 13 (it was called 10.1 before CUDA 13;
# CUDA 13.0 release notes: "SM101 has been renumbered as SM110").
COMPUTE_CAPABILITY = {
    "tegra210": "5.3",
    "tegra186": "6.2",
    "tegra194": "7.2",
    "tegra234": "8.7",
    "tegra264": "11.0",
}

# SoCs whose GPU has no fast INT8 (Maxwell Nano/TX1, Pascal TX2): FP16 is the best they get.
_NO_FAST_INT8 = {"tegra210", "tegra186"}

# Board part numbers (p<board>-<sku>) -> module key (jetson_stats MODULE_NAME_TABLE).
_PART_NUMBERS = {
    "p3767-0000": "orin-nx-16gb",
    "p3767-0001": "orin-nx-8gb",
    "p3767-0003": "orin-nano",
    "p3767-0004": "orin-nano",
    "p3767-0005": "orin-nano",
    "p3701-0000": "agx-orin",
    "p3701-0004": "agx-orin",
    "p3701-0005": "agx-orin",
    "p3668-0000": "xavier-nx",
    "p3668-0001": "xavier-nx",
    "p3668-0003": "xavier-nx",
    "p2888-0001": "agx-xavier",
    "p2888-0003": "agx-xavier",
    "p2888-0004": "agx-xavier",
    "p2888-0005": "agx-xavier",
    "p2888-0006": "agx-xavier",
    "p2888-0008": "agx-xavier",
    "p3448-0000": "nano",
    "p3448-0002": "nano",
    "p3448-0003": "nano",
    "p3310-1000": "tx2",
    "p3489-0000": "tx2",
    "p3489-0888": "tx2",
    "p3636-0001": "tx2",
}

# Exact L4T releases -> JetPack (NVIDIA JetPack archive, as tabled by jetson_stats'
# jetson_variables.py; 36.4.4 and 38.2.x from NVIDIA's JetPack release notes).
JETPACK_FOR_L4T = {
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2.0": "7.0",
    "38.2.1": "7.0",
}

# A release not in the table gets its family only (guessing a minor would be wrong: L4T 35.1 was
# JetPack 5.0.2 and 35.2.1 was 5.1).
_JETPACK_FAMILY = (
    ("32.7.", "4.6.x"),
    ("35.", "5.x"),
    ("36.", "6.x"),
    ("38.", "7.x"),
    ("39.", "7.x"),
)

# L4T prefix -> the TensorRT that JetPack ships (JetPack release notes; first match wins).
_TENSORRT_FOR_L4T = (
    ("32.6.", "8.0.1"),
    ("32.7.", "8.2.1"),
    ("35.2.", "8.5.2"),
    ("35.3.", "8.5.2"),
    ("35.4.", "8.5.2"),
    ("35.5.", "8.5.2"),
    ("35.6.", "8.5.2"),
    ("36.2.", "8.6.2"),
    ("36.3.", "8.6.2"),
    ("36.4.", "10.3.0"),
    ("38.2.", "10.13.0"),
)

_L4T_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class JetsonInfo:
    """One Jetson, as probed. ``None`` fields were not knowable (e.g. L4T inside a container)."""

    model: str
    module: str
    soc: str | None
    l4t: str | None
    jetpack: str | None
    dla_cores: int
    fast_int8: bool
    compute_capability: str | None
    tensorrt_default: str | None
    """The TensorRT version that this JetPack ships (None when the JetPack is unknown)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def parse_l4t_release(text: str | None) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> '36.4.3'; None for an empty/foreign file."""
    if not text:
        return None
    m = _L4T_RE.search(text)
    if not m:
        return None
    parts = [m.group(1), *m.group(2).split(".")]
    while len(parts) < 3:
        parts.append("0")
    return ".".join(parts[:3])


def _l4t_from_dpkg(status_text: str | None) -> str | None:
    """The version of nvidia-l4t-core in a dpkg status file ('36.4.3-20250107174145' -> 36.4.3)."""
    if not status_text:
        return None
    for block in status_text.split("\n\n"):
        if re.search(r"^Package:\s*nvidia-l4t-core\s*$", block, re.M):
            m = re.search(r"^Version:\s*(\d+\.\d+(?:\.\d+)?)", block, re.M)
            if m:
                parts = m.group(1).split(".")
                return ".".join([*parts, "0"][:3])
    return None


def jetpack_for_l4t(l4t: str | None) -> str | None:
    """JetPack release for an L4T version: exact when tabled, the family ('6.x') otherwise."""
    if not l4t:
        return None
    if l4t in JETPACK_FOR_L4T:
        return JETPACK_FOR_L4T[l4t]
    for prefix, family in _JETPACK_FAMILY:
        if l4t.startswith(prefix):
            return family
    return None


def tensorrt_for_l4t(l4t: str | None) -> str | None:
    """The TensorRT version that the JetPack of this L4T ships, if known."""
    if not l4t:
        return None
    for prefix, trt in _TENSORRT_FOR_L4T:
        if l4t.startswith(prefix):
            return trt
    return None


def _module_key(model: str, compatible: Sequence[str], soc: str | None, mem_kb: int | None) -> str:
    for entry in compatible:
        for part in re.findall(r"p\d{4}-\d{4}", entry):
            if part in _PART_NUMBERS:
                return _PART_NUMBERS[part]
    name = model.lower()
    if "thor" in name or soc == "tegra264":
        return "thor"
    if "orin nano" in name:
        return "orin-nano"
    if "orin nx" in name:
        if "16gb" in name.replace(" ", "") or (mem_kb is not None and mem_kb > 10 * 1024 * 1024):
            return "orin-nx-16gb"
        return "orin-nx-8gb"  # the smaller module: never promises a DLA core it may not have
    if "orin" in name:
        return "agx-orin"
    if "xavier nx" in name:
        return "xavier-nx"
    if "xavier" in name or name.startswith("jetson-agx") or soc == "tegra194":
        return "agx-xavier"
    if "tx2" in name or "quill" in name or soc == "tegra186":
        return "tx2"
    if "nano" in name:
        return "nano"
    return "unknown"


def _mem_total_kb(root: Path) -> int | None:
    text = read_text(root / "proc" / "meminfo")
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text or "", re.M)
    return int(m.group(1)) if m else None


def probe_jetson(root: Path = Path("/")) -> JetsonInfo | None:
    """Probe the Jetson whose file system is at ``root``; None when it is not a Jetson.

    A Jetson is recognised by its device tree (an NVIDIA Tegra ``compatible`` or a Jetson
    ``model``), so a container with an empty ``/etc/nv_tegra_release`` is still a Jetson, only
    with ``l4t``/``jetpack``/``tensorrt_default`` unknown.
    """
    root = Path(root)
    dt = root / "proc" / "device-tree"
    model = (read_text(dt / "model") or "").replace("\x00", "").strip()
    compatible = [c.strip() for c in (read_text(dt / "compatible") or "").split("\x00")]
    compatible = [c for c in compatible if c]
    soc = next(
        (c.split(",", 1)[1] for c in compatible if re.fullmatch(r"nvidia,tegra\d+", c)), None
    )
    if soc is None and "jetson" not in model.lower():
        return None
    l4t = parse_l4t_release(read_text(root / "etc" / "nv_tegra_release"))
    if l4t is None:
        l4t = _l4t_from_dpkg(read_text(root / "var" / "lib" / "dpkg" / "status"))
    module = _module_key(model, compatible, soc, _mem_total_kb(root))
    return JetsonInfo(
        model=model or "unknown Jetson",
        module=module,
        soc=soc,
        l4t=l4t,
        jetpack=jetpack_for_l4t(l4t),
        dla_cores=DLA_CORES[module],
        fast_int8=soc not in _NO_FAST_INT8 and module not in ("nano", "tx2"),
        compute_capability=COMPUTE_CAPABILITY.get(soc or ""),
        tensorrt_default=tensorrt_for_l4t(l4t),
    )
