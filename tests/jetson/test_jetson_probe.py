"""Jetson probe on captured device files, and power mode / clocks on captured command outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.core.board import jetpack_for_l4t, parse_l4t_release, probe_jetson
from edge.jetson.probe import clocks_locked, machine_facts, power_mode

DATA = Path(__file__).parent / "data"
ROOTS = DATA / "roots"
COMMANDS = DATA / "commands"


def runner(outputs: dict[str, tuple[str, int]]) -> Any:
    """A subprocess.run stand-in that answers each command from a captured output file."""

    def run(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        if args[0] not in outputs:
            raise FileNotFoundError(args[0])
        name, status = outputs[args[0]]
        text = (COMMANDS / name).read_text()
        return subprocess.CompletedProcess(args, status, stdout=text, stderr="")

    return run


def test_orin_nano_jp62() -> None:
    info = probe_jetson(ROOTS / "orin-nano-jp62")
    assert info is not None
    assert info.model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert "\x00" not in info.model
    assert (info.module, info.soc, info.compute_capability) == ("orin-nano", "tegra234", "8.7")
    assert (info.l4t, info.jetpack, info.tensorrt_default) == ("36.4.3", "6.2", "10.3.0")
    assert info.dla_cores == 0 and info.fast_int8


def test_agx_orin_jp61() -> None:
    info = probe_jetson(ROOTS / "agx-orin-jp61")
    assert info is not None
    assert (info.module, info.dla_cores, info.fast_int8) == ("agx-orin", 2, True)
    assert (info.l4t, info.jetpack, info.tensorrt_default) == ("36.4.0", "6.1", "10.3.0")


def test_xavier_nx_jp51() -> None:
    info = probe_jetson(ROOTS / "xavier-nx-jp51")
    assert info is not None
    assert (info.module, info.soc, info.compute_capability) == ("xavier-nx", "tegra194", "7.2")
    assert (info.l4t, info.jetpack, info.tensorrt_default) == ("35.2.1", "5.1", "8.5.2")
    assert info.dla_cores == 2


def test_nano_jp46() -> None:
    info = probe_jetson(ROOTS / "nano-jp46")
    assert info is not None
    assert (info.module, info.soc, info.compute_capability) == ("nano", "tegra210", "5.3")
    assert (info.l4t, info.jetpack, info.tensorrt_default) == ("32.7.1", "4.6.1", "8.2.1")
    assert info.dla_cores == 0 and not info.fast_int8


def test_container_with_empty_nv_tegra_release_is_still_a_jetson() -> None:
    root = ROOTS / "container-orin-nx"
    assert (root / "etc" / "nv_tegra_release").read_text() == ""
    info = probe_jetson(root)
    assert info is not None
    assert (info.module, info.dla_cores) == ("orin-nx-16gb", 2)
    assert info.l4t is None and info.jetpack is None and info.tensorrt_default is None


def test_container_l4t_from_dpkg_status(tmp_path: Path) -> None:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    (dt / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0001\x00nvidia,tegra234\x00")
    status = tmp_path / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: bash\nStatus: install ok installed\nVersion: 5.1-6ubuntu1\n\n"
        "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\n"
        "Version: 36.4.4-20250616085344\n\n"
    )
    info = probe_jetson(tmp_path)
    assert info is not None
    assert (info.module, info.dla_cores) == ("orin-nx-8gb", 1)
    assert (info.l4t, info.jetpack, info.tensorrt_default) == ("36.4.4", "6.2.1", "10.3.0")


def test_orin_nx_without_part_number_uses_memory(tmp_path: Path) -> None:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"NVIDIA Jetson Orin NX Developer Kit\x00")
    (dt / "compatible").write_bytes(b"nvidia,tegra234\x00")
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:       15655728 kB\n")
    info = probe_jetson(tmp_path)
    assert info is not None and info.module == "orin-nx-16gb"
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:        7620000 kB\n")
    info = probe_jetson(tmp_path)
    assert info is not None and info.module == "orin-nx-8gb"


def test_thor_by_soc(tmp_path: Path) -> None:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"NVIDIA Jetson AGX Thor Developer Kit\x00")
    (dt / "compatible").write_bytes(b"nvidia,p3971-0080+p3834-0008\x00nvidia,tegra264\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(
        "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64\n"
    )
    info = probe_jetson(tmp_path)
    assert info is not None
    assert (info.module, info.compute_capability, info.dla_cores) == ("thor", "11.0", 0)
    assert (info.jetpack, info.tensorrt_default) == ("7.0", "10.13.0")


def test_not_a_jetson() -> None:
    assert probe_jetson(ROOTS / "x86-workstation") is None
    assert probe_jetson(ROOTS / "does-not-exist") is None


def test_l4t_and_jetpack_tables() -> None:
    assert parse_l4t_release("# R39 (release), REVISION: 2.0, GCID: 1, BOARD: generic") == "39.2.0"
    assert parse_l4t_release("# R32 (release), REVISION: 7.6, GCID: 1") == "32.7.6"
    assert parse_l4t_release("") is None and parse_l4t_release("garbage") is None
    assert jetpack_for_l4t("36.2.0") == "6.0 DP" and jetpack_for_l4t("36.3.0") == "6.0"
    assert jetpack_for_l4t("35.9.9") == "5.x"  # unknown revision: family only, never a guess
    assert jetpack_for_l4t("38.9.0") == "7.x" and jetpack_for_l4t("32.7.9") == "4.6.x"
    assert jetpack_for_l4t("28.2.0") is None and jetpack_for_l4t(None) is None


# ---------------------------------------------------------------- nvpmodel / jetson_clocks


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nvpmodel_orin_nano_maxn_super.txt", {"name": "MAXN_SUPER", "id": 2}),
        ("nvpmodel_nano_maxn.txt", {"name": "MAXN", "id": 0}),
        ("nvpmodel_agx_orin_30w.txt", {"name": "MODE_30W", "id": 2}),
    ],
)
def test_power_mode(name: str, expected: dict[str, Any]) -> None:
    assert power_mode(runner({"nvpmodel": (name, 0)})) == expected


def test_power_mode_absent_or_failing() -> None:
    assert power_mode(runner({})) is None
    assert power_mode(runner({"nvpmodel": ("nvpmodel_nano_maxn.txt", 1)})) is None


def test_clocks_unlocked_orin_nx() -> None:
    res = clocks_locked(runner({"jetson_clocks": ("jetson_clocks_orin_nx_unlocked.txt", 0)}))
    assert res is not None and res["locked"] is False
    assert res["checks"] == {"cpu_min_eq_max": False, "gpu_at_max": False, "emc_at_max": True}
    assert res["cpu_online"] == 6 and res["cpu_max_mhz"] == 1984
    assert res["gpu_mhz"] == {"min": 306, "max": 1173, "current": 306}
    assert res["power_mode"] == "MAXN_SUPER"


def test_clocks_locked_agx_orin_newer_format_without_online_field() -> None:
    res = clocks_locked(runner({"jetson_clocks": ("jetson_clocks_agx_orin_locked.txt", 0)}))
    assert res is not None and res["locked"] is True
    assert res["cpu_online"] == 12  # DLA/PVA lines are not CPU or GPU lines
    assert res["gpu_mhz"] == {"min": 1300, "max": 1300, "current": 1300}


def test_clocks_locked_nano() -> None:
    res = clocks_locked(runner({"jetson_clocks": ("jetson_clocks_nano_locked.txt", 0)}))
    assert res is not None and res["locked"] is True
    assert res["emc_mhz"] == {"min": 204, "max": 1600, "current": 1600}


def test_clocks_offline_cores_are_ignored() -> None:
    res = clocks_locked(runner({"jetson_clocks": ("jetson_clocks_nano_5w_offline_cores.txt", 0)}))
    assert res is not None and res["locked"] is True and res["cpu_online"] == 2
    assert res["power_mode"] == "5W"


@pytest.mark.parametrize("status", [0, 1])
def test_clocks_not_root(status: int) -> None:
    res = clocks_locked(runner({"jetson_clocks": ("jetson_clocks_not_root.txt", status)}))
    assert res is not None and res["locked"] is None
    assert "root" in res["error"] and "sudo" in res["error"]


def test_clocks_absent() -> None:
    assert clocks_locked(runner({})) is None


# ---------------------------------------------------------------- machine facts


def test_machine_facts_non_jetson() -> None:
    facts = machine_facts(ROOTS / "x86-workstation", run=runner({}))
    assert facts["cpu"] == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    assert facts["jetson"] is None and "power_mode" not in facts
    assert facts["python"] == sys.version.split()[0]
    assert facts["numpy"] and facts["onnxruntime"]
    assert isinstance(facts["cpu_cores"], int) and facts["cpu_cores"] >= 1


def test_machine_facts_jetson() -> None:
    run = runner(
        {
            "nvpmodel": ("nvpmodel_orin_nano_maxn_super.txt", 0),
            "jetson_clocks": ("jetson_clocks_orin_nx_unlocked.txt", 0),
        }
    )
    facts = machine_facts(ROOTS / "orin-nano-jp62", run=run)
    assert facts["jetson"]["module"] == "orin-nano"
    assert facts["jetson"]["jetpack"] == "6.2"
    assert facts["power_mode"] == {"name": "MAXN_SUPER", "id": 2}
    assert facts["clocks"]["locked"] is False
