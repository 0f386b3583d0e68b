"""jetson/setup.sh run for real up to the point where it would install something: its JetPack
check on the release files of real boards (a venv without system site packages stops it at the
venv step), and its check of the CUDA toolkit that pycuda builds against (nvcc, curand.h)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

JETSON = Path(__file__).parents[2] / "jetson"

RELEASES = {
    "R35": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023",
    "R36": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025",
    "R38": "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Aug 22 00:55:42 UTC 2025",
    "R39": "# R39 (release), REVISION: 2.0, GCID: 44000001, BOARD: generic, EABI: aarch64, "
    "DATE: Mon Jun  1 14:16:51 UTC 2026",
    "R32": "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, "
    "DATE: Fri Jun  9 04:25:08 UTC 2023",
}


def run_setup(
    tmp_path: Path, release: str | None, *, system_site: bool = False, cuda: Path | None = None
) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # imports nothing
    (venv / "bin" / "python").chmod(0o755)
    (venv / "pyvenv.cfg").write_text(
        f"include-system-site-packages = {'true' if system_site else 'false'}\n"
    )
    release_file = tmp_path / "nv_tegra_release"
    if release is not None:
        release_file.write_text(release + "\n")
    env = {**os.environ, "EDGE_L4T_RELEASE_FILE": str(release_file)}
    if cuda is not None:
        env["CUDA_HOME"] = str(cuda)
    return subprocess.run(
        ["bash", str(JETSON / "setup.sh"), "--no-apt", "--venv", str(venv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("release", "jetpack"), [("R35", "5.x"), ("R36", "6.x"), ("R38", "7.x"), ("R39", "7.x")]
)
def test_supported_releases_pass_the_jetpack_check(
    tmp_path: Path, release: str, jetpack: str
) -> None:
    res = run_setup(tmp_path, RELEASES[release])
    assert f"[setup] L4T {release} (JetPack {jetpack}): # {release} (release)" in res.stdout
    # stopped at the venv step, after the check, with that step's own message
    assert res.returncode == 1 and "without --system-site-packages" in res.stderr


def test_jetpack_4_is_refused_for_what_it_is(tmp_path: Path) -> None:
    res = run_setup(tmp_path, RELEASES["R32"])
    assert res.returncode == 1
    assert "L4T R32 is JetPack 4.x" in res.stderr and "JetPack 5.1 or newer" in res.stderr


def test_no_release_file_needs_force(tmp_path: Path) -> None:
    res = run_setup(tmp_path, None)
    assert res.returncode == 1
    assert "not JetPack 5.1/6.x/7.x" in res.stderr and "--force" in res.stderr
    assert "4.6" not in res.stderr


def test_cuda_toolkit_without_curand_header_is_refused_before_installing(tmp_path: Path) -> None:
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (cuda / "bin" / "nvcc").chmod(0o755)
    res = run_setup(tmp_path, RELEASES["R36"], system_site=True, cuda=cuda)
    assert res.returncode == 1
    assert f"no {cuda}/include/curand.h (pycuda's build needs it)" in res.stderr
    assert "using the existing" in res.stdout and "building pycuda" not in res.stdout


def test_missing_nvcc_is_refused_before_installing(tmp_path: Path) -> None:
    res = run_setup(tmp_path, RELEASES["R38"], system_site=True, cuda=tmp_path / "none")
    assert res.returncode == 1 and "nvcc missing" in res.stderr
