"""jetson/selftest.sh's exact command lines, run through the real parsers.

The script runs here with a recording ``edge`` on PATH and a ``PYTHON`` that records
``-m edge.jetson.selftest`` (and answers the ``import tensorrt`` check, which needs a board);
every other python call (the Jetson probe that decides on INT8) runs for real. Each recorded
argument list then goes through ``edge.cli``'s parser and the self-test's parser: an option the
CLI does not take (``edge profile --out``) fails here as it would on the board.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import build_parser
from edge.jetson.selftest import build_parser as selftest_parser

JETSON = Path(__file__).parents[2] / "jetson"

RECORDER = """#!{python}
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps({{"tool": {tool!r}, "argv": sys.argv[1:]}}) + "\\n")
"""

FAKE_PYTHON = """#!{python}
import json, os, sys
argv = sys.argv[1:]
if argv[:2] == ["-m", "edge.jetson.selftest"]:
    with open({log!r}, "a") as f:
        f.write(json.dumps({{"tool": "selftest", "argv": argv[2:]}}) + "\\n")
    sys.exit(0)
if argv[:1] == ["-c"] and argv[1].strip() == "import tensorrt":
    sys.exit(0)  # TensorRT exists on the board only
os.execv({python!r}, [{python!r}, *argv])
"""


def _write_tool(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _run_selftest(tmp_path: Path, bundle: Path, extra_env: dict[str, str]) -> list[dict]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    _write_tool(bin_dir / "edge", RECORDER.format(python=sys.executable, log=str(log), tool="edge"))
    fake_python = bin_dir / "fake-python"
    _write_tool(fake_python, FAKE_PYTHON.format(python=sys.executable, log=str(log)))
    env = {k: v for k, v in os.environ.items() if k != "EDGE_PROFILE_ARGS"}
    env = {
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": str(fake_python),
        "HOME": str(tmp_path),
        **extra_env,
    }
    res = subprocess.run(
        ["bash", str(JETSON / "selftest.sh"), str(bundle), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[selftest] PASS" in res.stdout
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_selftest_script_command_lines_parse_in_the_real_cli(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    calls = _run_selftest(tmp_path, tiny_bundle, {})
    edge_calls = [c["argv"] for c in calls if c["tool"] == "edge"]
    selftest_calls = [c["argv"] for c in calls if c["tool"] == "selftest"]
    # not a Jetson here: the probe says None, so INT8 is built too
    assert [a[:1] for a in edge_calls] == [["build"], ["build"], ["profile"]]
    parser = build_parser()
    parsed = []
    for argv in edge_calls:
        try:
            parsed.append(parser.parse_args(argv))
        except SystemExit as e:  # argparse's "unrecognized arguments" and friends
            pytest.fail(f"edge {' '.join(argv)}: edge.cli rejects it (exit {e.code})")
    assert [a.precision for a in parsed] == ["fp16", "int8", "fp16"]
    assert all(Path(a.bundle) == tiny_bundle for a in parsed)
    profile = parsed[2]
    assert profile.backend == "tensorrt" and profile.frames == 300
    assert Path(profile.report) == tmp_path / "work" / "profile"

    (compare,) = selftest_calls
    args = selftest_parser().parse_args(compare)
    assert args.precision == ["fp16", "int8"] and args.bundle == tiny_bundle
    assert args.json == tmp_path / "work" / "compare.json"


def test_selftest_profile_args_from_the_environment_reach_edge_profile(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    calls = _run_selftest(
        tmp_path, tiny_bundle, {"EDGE_PROFILE_ARGS": "--backend onnxruntime --frames 20"}
    )
    (profile,) = [c["argv"] for c in calls if c["argv"][:1] == ["profile"]]
    assert profile == ["profile", str(tiny_bundle), "--backend", "onnxruntime", "--frames", "20"]
    build_parser().parse_args(profile)
