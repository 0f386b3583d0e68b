"""The Jetson kit: shell scripts parse (and pass shellcheck where installed), the systemd unit has
what a line camera needs, setup.sh installs exactly the non-OpenCV dependencies, and the
self-test's comparison judges TensorRT outputs correctly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.jetson.selftest import main, verdict
from edge.runtime.backends.trt_selftest import TOLERANCES, compare_outputs

JETSON = Path(__file__).parents[2] / "jetson"
SCRIPTS = sorted(JETSON.glob("*.sh"))


def test_the_kit_is_complete() -> None:
    names = {p.name for p in JETSON.iterdir()}
    assert {
        "setup.sh",
        "selftest.sh",
        "selftest.py",
        "edge-line.service",
        "Dockerfile",
        "README.md",
    } <= names
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    res = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax: [Section], Key=Value (keys may repeat), comments, continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_service_unit_runs_edge_on_the_camera_after_nvargus() -> None:
    unit = parse_unit((JETSON / "edge-line.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    after = " ".join(unit["Unit"]["After"]).split()
    wants = " ".join(unit["Unit"]["Wants"]).split()
    assert "nvargus-daemon.service" in after and "nvargus-daemon.service" in wants
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service["User"] and "video" in service["SupplementaryGroups"][0].split()
    assert Path(service["WorkingDirectory"][0]).is_absolute()
    env = dict(e.split("=", 1) for e in service["Environment"])
    assert env["EDGE_SOURCE"] == "csi://0"
    (start,) = service["ExecStart"]
    assert Path(start.split()[0]).is_absolute() and start.split()[0].endswith("/edge")
    assert start.split()[1:3] == ["run", "${EDGE_BUNDLE}"]
    assert "--source ${EDGE_SOURCE}" in start and "--out ${EDGE_OUT}" in start
    # the engines, not ONNX Runtime on the CPU
    assert "--backend tensorrt --precision ${EDGE_PRECISION}" in start
    assert env["EDGE_PRECISION"] in ("fp16", "int8") and env["EDGE_OUT"].endswith(".jsonl")
    for pre in service.get("ExecStartPre", []):  # optional: never stops the start
        assert pre.startswith("-"), pre
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_service_unit_is_a_watched_notify_service_in_a_sandbox() -> None:
    service = parse_unit((JETSON / "edge-line.service").read_text())["Service"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert int(service["WatchdogSec"][0]) >= 10  # edge run pings every half period
    assert service["ProtectSystem"] == ["strict"] and service["ProtectHome"] == ["yes"]
    assert service["NoNewPrivileges"] == ["yes"]
    state = "/var/lib/" + service["StateDirectory"][0]
    assert service["ReadWritePaths"] == [state]
    env = dict(e.split("=", 1) for e in service["Environment"])
    assert Path(env["EDGE_OUT"]).parent == Path(state)  # the results are writable
    # CUDA/TensorRT need /dev/nvhost-*, /dev/nvmap; CSI cameras /tmp/argus_socket
    assert "PrivateDevices" not in service and "PrivateTmp" not in service
    assert "DeviceAllow" not in service and "ProtectClock" not in service


def test_service_command_line_parses_in_the_real_cli() -> None:
    from edge.cli import build_parser

    service = parse_unit((JETSON / "edge-line.service").read_text())["Service"]
    env = dict(e.split("=", 1) for e in service["Environment"])
    (start,) = service["ExecStart"]
    argv = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in start.split()[1:]]
    args = build_parser().parse_args(argv)
    assert (args.backend, args.precision, args.open_timeout) == ("tensorrt", "fp16", 600.0)
    assert args.source == ["csi://0"] and args.out == env["EDGE_OUT"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_service_unit_security_exposure(tmp_path: Path) -> None:
    unit = tmp_path / "edge-line.service"
    unit.write_text((JETSON / "edge-line.service").read_text())
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for edge-line.service: (\d+\.\d+)", res.stdout)
    if m is None and "--offline" in res.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {res.stderr.strip()}")
    assert m is not None, res.stdout + res.stderr
    assert float(m.group(1)) <= 7.5  # 9.2 "UNSAFE" without the sandboxing lines


def test_setup_installs_every_dependency_except_opencv() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((JETSON.parent / "pyproject.toml").read_text())["project"]
    wanted = [d for d in project["dependencies"] if not d.startswith("opencv")]
    wanted += project["optional-dependencies"]["jetson"]
    setup = (JETSON / "setup.sh").read_text()
    listed = re.findall(r'"([A-Za-z0-9_.-]+[<>=][^"]*)"', setup)
    names = {re.split(r"[<>=]", d)[0].lower() for d in listed}
    assert {re.split(r"[<>=]", d)[0].lower() for d in wanted} == names
    assert "numpy>=1.23,<2" in listed  # JetPack's cv2 is built against numpy 1.x
    assert "--system-site-packages" in setup and "--no-deps -e" in setup
    assert "opencv" not in " ".join(listed)


def test_dockerfile_takes_the_l4t_tag_and_documents_the_argus_socket() -> None:
    text = (JETSON / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0].startswith("ARG L4T_TAG=r36.")
    assert lines[1] == "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}"
    assert "/tmp/argus_socket:/tmp/argus_socket" in text and "--runtime nvidia" in text
    assert "jetson/setup.sh --image-build" in text


# ------------------------------------------------------------------ the self-test's comparison


def outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "defect_logits": rng.normal(0, 3, (8, 4)).astype(np.float32),
        "mask_logits": rng.normal(0, 2, (2, 2, 8, 8)).astype(np.float32),
        "attrs_logits": rng.normal(0, 2, (8, 3)).astype(np.float32),
        "angle_value": rng.uniform(-30, 30, (8, 1)).astype(np.float32),
    }


KINDS = {
    "defect_logits": "classification",
    "mask_logits": "segmentation",
    "attrs_logits": "multilabel",
    "angle_value": "regression",
}


def test_identical_outputs_pass_at_every_precision() -> None:
    ref = outputs()
    for precision in TOLERANCES:
        result = compare_outputs(ref, dict(ref), precision, part="fused", kinds=KINDS)
        assert [c.ok for c in result] == [True] * 4
        assert all(c.max_err == 0.0 for c in result)
        assert {c.output: c.agreement for c in result}["angle_value"] is None
        assert {c.output: c.agreement for c in result}["mask_logits"] == 1.0


def test_fp16_sized_noise_passes_fp16_but_not_fp32() -> None:
    ref = outputs()
    rng = np.random.default_rng(1)
    noisy = {
        k: v + rng.normal(0, 5e-4, v.shape).astype(np.float32) * (v.max() - v.min())
        for k, v in ref.items()
    }
    assert all(c.ok for c in compare_outputs(ref, noisy, "fp16", kinds=KINDS))
    fp32 = compare_outputs(ref, noisy, "fp32", kinds=KINDS)
    assert not any(c.ok for c in fp32)
    assert all("error" in c.reason for c in fp32)


def test_flipped_decisions_fail_even_when_errors_are_small() -> None:
    ref = {"defect_logits": np.array([[1.0, 1.001], [0.0, 5.0]] * 8, dtype=np.float32)}
    got = {"defect_logits": np.array([[1.001, 1.0], [0.0, 5.0]] * 8, dtype=np.float32)}
    (c,) = compare_outputs(ref, got, "int8", kinds={"defect_logits": "classification"})
    assert c.max_err < TOLERANCES["int8"].max_err and c.agreement == 0.5
    assert not c.ok and "decisions agree 50.00%" in c.reason
    (plain,) = compare_outputs(ref, got, "int8")  # a tap, not a task output: no decisions
    assert plain.ok and plain.agreement is None


def test_multilabel_agreement_is_the_sign_of_the_logit() -> None:
    ref = {"attrs_logits": np.array([[2.0, -2.0, 0.1]] * 10, dtype=np.float32)}
    got = {"attrs_logits": np.array([[2.0, -2.0, -0.1]] * 10, dtype=np.float32)}
    (c,) = compare_outputs(ref, got, "int8", kinds={"attrs_logits": "multilabel"})
    assert c.agreement == pytest.approx(2 / 3) and not c.ok


def test_missing_misshapen_and_nonfinite_outputs_fail() -> None:
    ref = outputs()
    bad = dict(ref)
    del bad["angle_value"]
    bad["mask_logits"] = ref["mask_logits"][:, :1]
    bad["attrs_logits"] = ref["attrs_logits"].copy()
    bad["attrs_logits"][0, 0] = np.nan
    result = {c.output: c for c in compare_outputs(ref, bad, "fp16", part="fused", kinds=KINDS)}
    assert result["defect_logits"].ok
    assert "missing" in result["angle_value"].reason
    assert "shape (2, 1, 8, 8)" in result["mask_logits"].reason
    assert "NaN" in result["attrs_logits"].reason
    ok, reasons = verdict(list(result.values()))
    assert not ok and len(reasons) == 3 and all(r.startswith("fp16 fused ") for r in reasons)


def test_verdict_needs_something_compared_and_no_problems() -> None:
    assert verdict([]) == (False, ["no engines were compared"])
    passing = compare_outputs(outputs(), outputs(), "fp32")
    assert verdict(passing) == (True, [])
    assert verdict(passing, ["no int8 engines"]) == (False, ["no int8 engines"])


def test_selftest_without_tensorrt_exits_3_with_the_reason(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    assert main([str(tiny_bundle), "--precision", "fp16"]) == 3
    err = capsys.readouterr().err
    assert "TensorRT backend cannot run here" in err and "setup.sh" in err


def test_selftest_script_fails_clearly_without_tensorrt(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    res = subprocess.run(
        ["bash", str(JETSON / "selftest.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 1
    assert "FAIL" in res.stdout and "TensorRT" in res.stdout


def test_jetson_readme_edge_commands_parse_and_write_files() -> None:
    import shlex

    from edge.cli import build_parser

    text = (JETSON / "README.md").read_text()
    lines = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.startswith("edge ")
    ]
    assert len(lines) >= 7
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        if args.func.__name__ == "_cmd_run":
            assert args.out and not args.out.endswith("/"), line  # --out is the JSONL file
