"""The README's examples run: the CLI tour block, command by command, in a fresh folder; and the
two set-up commands are the ones CI relies on."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks_after(heading: str) -> list[str]:
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_two_setup_commands() -> None:
    blocks = _blocks_after("Two commands")
    assert len(blocks) == 2 and all(b.count("\n") == 1 for b in blocks)
    assert blocks[0].strip().endswith("edge demo")
    test_cmd = blocks[1].strip().rsplit("&& ", 1)[1]
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_cli_tour_runs(tmp_path: Path) -> None:
    (block,) = _blocks_after("CLI")
    edge = shutil.which("edge") or ""
    exe = [edge] if edge else [sys.executable, "-m", "edge.cli"]
    for line in block.strip().splitlines():
        args = shlex.split(line.split("  #")[0])
        assert args[0] == "edge", line
        args = [str(ROOT / a) if a.startswith("edge/assets/") else a for a in args[1:]]
        r = subprocess.run(exe + args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert (tmp_path / "bundle" / "calib" / "report.json").is_file()
    assert (tmp_path / "results.jsonl").read_text().count("\n") >= 40
    assert (tmp_path / "profile-report" / "report.json").is_file()
    assert (tmp_path / "model.pt").is_file()
