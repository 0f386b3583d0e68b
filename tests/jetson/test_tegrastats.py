"""tegrastats parsing on real lines of every module, and the sampler."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edge.core.errors import EdgeError, MissingDependencyError
from edge.jetson.tegrastats import (
    TegrastatsParseError,
    TegrastatsSampler,
    parse_tegrastats_line,
)

LINES = Path(__file__).parent / "data" / "tegrastats"


def line(name: str) -> str:
    return (LINES / f"{name}.txt").read_text().rstrip("\n")


def test_orin_nano_jp6() -> None:
    s = parse_tegrastats_line(line("orin_nano_jp6"))
    assert s.timestamp == "11-30-2025 13:26:01"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap) == (2461, 7620, (1243, 3810))
    assert s.cpu == ((19, 729), (14, 729), (22, 729), (8, 729), (15, 729), (17, 729))
    assert (s.emc_load, s.emc_mhz, s.gpu_load, s.gpu_mhz) == (4, 2133, 0, (305,))
    assert s.temps == {
        "cpu": 46.531,
        "soc2": 47.312,
        "soc0": 46.593,
        "gpu": 48.218,
        "tj": 48.843,
        "soc1": 48.843,
    }
    assert s.rails == {
        "VDD_IN": (5704, 5704),
        "VDD_CPU_GPU_CV": (831, 831),
        "VDD_SOC": (1624, 1624),
    }
    assert (s.total_power_mw, s.total_power_avg_mw) == (5704, 5704)  # not 5704 + 831 + 1624
    assert s.total_power_source is not None and s.total_power_source.startswith("VDD_IN")


def test_agx_orin_64gb() -> None:
    s = parse_tegrastats_line(line("agx_orin_64gb"))
    assert s.timestamp == "04-11-2025 10:36:27"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap) == (4321, 62801, (19, 31400))
    assert s.cpu == ((0, 729),)  # the pasted line elides the other cores as "...x12"
    assert (s.emc_load, s.emc_mhz, s.gpu_load, s.gpu_mhz) == (0, 2133, 0, (0, 0))
    # CV0/CV1/CV2/GPU at -256C are absent sensors
    assert s.temps == {
        "CPU": 44.562,
        "Tboard": 32.0,
        "SOC2": 40.093,
        "Tdiode": 33.0,
        "SOC0": 41.093,
        "tj": 44.343,
        "SOC1": 41.25,
    }
    assert s.rails == {
        "VDD_GPU_SOC": (2340, 2340),
        "VDD_CPU_CV": (390, 390),
        "VIN_SYS_5V0": (4025, 4025),
        "VDDQ_VDD2_1V8AO": (301, 301),
    }  # the two "NC" (not connected) channels are dropped
    assert s.total_power_mw == 2340 + 390 + 4025  # VDDQ_VDD2_1V8AO is not added again
    assert s.total_power_source is not None
    assert "VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0" in s.total_power_source


def test_xavier_nx() -> None:
    s = parse_tegrastats_line(line("xavier_nx"))
    assert s.timestamp is None
    assert (s.ram_used_mb, s.ram_total_mb, s.swap) == (2690, 6854, (479, 3427))
    assert s.cpu == ((3, 1904), (7, 1906), (1, 1905), (0, 1907), None, None)
    assert (s.emc_load, s.emc_mhz, s.gpu_load, s.gpu_mhz) == (0, 1600, 0, (510,))
    assert s.temps == {"AUX": 39.0, "CPU": 39.5, "AO": 37.5, "GPU": 37.5, "PMIC": 50.0}
    assert s.rails["VDD_IN"] == (5079, 5079) and len(s.rails) == 3
    assert s.total_power_mw == 5079


def test_thor_r38_gpu_clock_without_load_and_its_rails() -> None:
    s = parse_tegrastats_line(line("thor_r38"))
    assert s.timestamp == "02-14-2026 09:12:40"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap) == (5120, 125773, (0, 2048))
    assert len(s.cpu) == 14 and s.cpu[9] == (12, 2601)
    assert (s.emc_load, s.emc_mhz) == (1, 665)
    assert (s.gpu_load, s.gpu_mhz) == (None, (0, 0, 0))  # R38 prints no GPU load
    assert s.temps == {"cpu": 36.125, "tj": 37.5, "soc012": 35.906, "soc345": 36.25}
    assert s.rails == {
        "VDD_GPU": (0, 0),
        "VDD_CPU_SOC_MSS": (4402, 4390),
        "VIN_SYS_5V0": (4215, 4198),
    }
    assert s.rails_max == {}
    assert (s.total_power_mw, s.total_power_avg_mw) == (0 + 4402 + 4215, 0 + 4390 + 4198)
    assert s.total_power_source is not None and "lower bound" in s.total_power_source


def test_thor_r38_vin_is_the_total() -> None:
    s = parse_tegrastats_line(line("thor_r38_vin"))
    assert (s.gpu_load, s.gpu_mhz) == (None, (1575, 1575, 1575))
    assert set(s.rails) == {"VDD_GPU", "VDD_CPU_SOC_MSS", "VIN_SYS_5V0", "VIN"}
    assert (s.total_power_mw, s.total_power_avg_mw) == (38640, 37915)  # not a sum of sub-rails
    assert s.total_power_source is not None and s.total_power_source.startswith("VIN ")


def test_thor_r39_2_three_value_rails_and_temperatures() -> None:
    s = parse_tegrastats_line(line("thor_r39_2"))
    assert (s.gpu_load, s.gpu_mhz) == (None, (314, 314, 314))
    assert s.rails == {
        "VDD_GPU": (5012, 4980),
        "VDD_CPU_SOC_MSS": (8120, 8405),
        "VIN_SYS_5V0": (6702, 6735),
    }
    assert s.rails_max == {"VDD_GPU": 5120, "VDD_CPU_SOC_MSS": 8790, "VIN_SYS_5V0": 6810}
    assert s.temps == {  # current of "current/max"
        "cpu": 35.125,
        "tj": 36.25,
        "soc012": 34.75,
        "gpu": 36.25,
        "soc345": 34.5,
    }
    assert s.total_power_mw == 5012 + 8120 + 6702
    summary = TegrastatsSampler.from_lines([line("thor_r39_2")] * 3).summary()
    assert summary["skipped_lines"] == 0 and summary["gpu_load_mean"] is None
    assert summary["power_mw"]["VDD_GPU"] == {"mean": 5012, "max": 5012.0}


def test_tx2_jp4_rails_without_mw_suffix() -> None:
    s = parse_tegrastats_line(line("tx2_jp4"))
    assert (s.ram_used_mb, s.ram_total_mb, s.swap) == (2020, 7852, None)
    assert s.cpu == ((9, 345), (21, 345))
    assert (s.emc_load, s.emc_mhz, s.gpu_load, s.gpu_mhz) == (0, None, 0, ())
    assert "PMIC" not in s.temps  # PMIC@100C is a dummy
    assert s.temps["thermal"] == 41.9 and s.temps["Tdiode"] == 41.25 and len(s.temps) == 7
    assert s.rails == {
        "VDD_SYS_GPU": (153, 158),
        "VDD_SYS_SOC": (536, 547),
        "VDD_4V0_WIFI": (633, 527),
        "VDD_IN": (3140, 3208),
        "VDD_SYS_CPU": (536, 590),
        "VDD_SYS_DDR": (557, 601),
    }
    assert (s.total_power_mw, s.total_power_avg_mw) == (3140, 3208)


def test_nano_jp4_pom_rails_and_iram() -> None:
    s = parse_tegrastats_line(line("nano_jp4"))
    assert (s.ram_used_mb, s.ram_total_mb, s.swap) == (2020, 3964, None)
    assert s.cpu == ((9, 102), (5, 102), (1, 102), (3, 102))
    assert (s.emc_load, s.emc_mhz, s.gpu_load, s.gpu_mhz) == (0, 204, 0, (76,))
    assert s.temps == {"PLL": 23.0, "CPU": 25.5, "GPU": 24.5, "AO": 31.5, "thermal": 25.0}
    assert s.rails == {"POM_5V_IN": (1284, 1284), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (193, 193)}
    assert s.total_power_mw == 1284  # POM_5V_IN is the total; never 1284 + 0 + 193
    assert s.total_power_source is not None and s.total_power_source.startswith("POM_5V_IN")


def test_agx_xavier_rails_sum_and_shared_cpu_clock() -> None:
    # Constructed in the AGX Xavier (JetPack 4) format: rails without "mW", six input rails.
    s = parse_tegrastats_line(
        "RAM 3500/15692MB (lfb 2x4MB) SWAP 0/7846MB (cached 0MB) CPU [2%,3%,off,off]@1190 "
        "EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 APE 150 MTS fg 0% bg 0% AO@36C GPU@36.5C "
        "PMIC@100C CPU@37.5C GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 155/155 "
        "SYS5V 1275/1275"
    )
    assert s.cpu == ((2, 1190), (3, 1190), None, None)
    assert s.temps == {"AO": 36.0, "GPU": 36.5, "CPU": 37.5}
    assert s.total_power_mw == 311 + 1243 + 155 + 1275
    assert s.total_power_source is not None and "AGX Xavier" in s.total_power_source


def test_unknown_rail_set_has_no_total() -> None:
    s = parse_tegrastats_line("RAM 100/200MB (lfb 1x1MB) VDD_GPU 500mW/500mW VDD_CPU 200mW/200mW")
    assert s.rails == {"VDD_GPU": (500, 500), "VDD_CPU": (200, 200)}
    assert s.total_power_mw is None and s.total_power_source is None


@pytest.mark.parametrize("bad", ["", "hello world", "NV Power Mode: MAXN", "CPU [1%@100]"])
def test_garbage_raises_a_value_error_that_is_an_edge_error(bad: str) -> None:
    with pytest.raises(TegrastatsParseError, match="not a tegrastats line") as e:
        parse_tegrastats_line(bad)
    assert isinstance(e.value, ValueError) and isinstance(e.value, EdgeError)


# ---------------------------------------------------------------- sampler


def test_summary_from_lines_counts_skipped() -> None:
    base = line("orin_nano_jp6")
    hot = base.replace("VDD_IN 5704mW/5704mW", "VDD_IN 7000mW/6352mW")
    busy = base.replace("VDD_IN 5704mW/5704mW", "VDD_IN 6300mW/6336mW")
    lines = [
        base,
        "garbage line",
        hot.replace("tj@48.843C", "tj@61.5C"),
        "",
        busy.replace("0%@[305]", "60%@[918]"),
    ]
    sampler = TegrastatsSampler.from_lines(lines)
    summary = sampler.summary()
    assert summary["samples"] == 3 and summary["skipped_lines"] == 1
    assert summary["duration_s"] == 4.0  # default stamps are the line indices: 0, 2, 4
    assert summary["power_mw"]["total"] == {"mean": pytest.approx(6334.6667), "max": 7000.0}
    assert summary["power_mw"]["VDD_SOC"] == {"mean": 1624.0, "max": 1624.0}
    assert summary["total_power_source"].startswith("VDD_IN")
    assert summary["temps_max_c"]["tj"] == 61.5 and summary["temps_max_c"]["cpu"] == 46.531
    assert summary["gpu_load_mean"] == pytest.approx(20.0)
    assert summary["emc_load_mean"] == pytest.approx(4.0)
    assert summary["ram_used_max_mb"] == 2461
    assert sampler.last_error is not None and "garbage line" in sampler.last_error


def test_empty_summary() -> None:
    assert TegrastatsSampler.from_lines([]).summary() == {
        "samples": 0,
        "skipped_lines": 0,
        "duration_s": 0.0,
    }


def test_start_without_tegrastats_gives_advice() -> None:
    sampler = TegrastatsSampler(command="no-such-tegrastats-binary")
    assert not TegrastatsSampler.available("no-such-tegrastats-binary")
    with pytest.raises(MissingDependencyError, match="needs a Jetson"):
        sampler.start()


def test_start_stop_runs_a_tegrastats_process(tmp_path: Path) -> None:
    """A stand-in tegrastats (a script printing captured lines) run as a real subprocess."""
    argv_file = tmp_path / "argv.txt"
    script = tmp_path / "tegrastats"
    payload = [line("xavier_nx"), "not a tegrastats line", line("nano_jp4"), line("tx2_jp4")]
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        f"open({str(argv_file)!r}, 'w').write(' '.join(sys.argv[1:]))\n"
        f"for line in {payload!r}:\n"
        "    print(line, flush=True)\n"
        "time.sleep(60)\n"
    )
    os.chmod(script, 0o755)
    sampler = TegrastatsSampler(interval_ms=200, command=str(script))
    with sampler:
        deadline = time.monotonic() + 20
        while len(sampler.samples) + sampler.skipped < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert argv_file.read_text() == "--interval 200"
    assert [s.total_power_mw for _, s in sampler.samples] == [5079, 1284, 3140]
    assert sampler.skipped == 1
    stamps = [t for t, _ in sampler.samples]
    assert stamps == sorted(stamps)
    assert sampler._proc is None  # stopped
    with pytest.raises(EdgeError, match="interval must be > 0"):
        TegrastatsSampler(interval_ms=0)
