"""Item 10: ``--precision int8`` on ONNX Runtime runs the bundle's int8/ Q/DQ models (after
``edge calibrate``) or refuses clearly; backend and precision are in the header and summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reliability.helpers import edge, frames_of, records

from edge.calib.stage import CalibConfig, calibrate_bundle
from edge.core.errors import ConfigError
from edge.runtime.run import RunConfig, run_bundle

SOURCE = "synthetic:?frames=6"


def test_int8_without_calibration_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    r = edge("run", str(tiny_bundle), "--source", SOURCE, "--precision", "int8", "--out", str(out))
    assert r.returncode == 2 and "edge calibrate" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()  # refused before any output was opened


def test_fp16_on_onnxruntime_is_refused(tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs --backend tensorrt"):
        run_bundle(
            tiny_bundle,
            RunConfig(source=SOURCE, backend_options={"precision": "fp16"}, warmup=0),
        )


def test_int8_runs_the_qdq_models_and_says_so(tiny_bundle: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    calibrate_bundle(root, CalibConfig(data="synthetic:", frames=32, batch=16, eval_frames=0))
    runs = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.jsonl"
        r = edge("run", str(root), "--source", SOURCE, "--precision", precision, "--out", str(out))
        assert r.returncode == 0, r.stderr
        header = records(out)[0]
        assert (header["backend"], header["precision"]) == ("onnxruntime", precision)
        summary = json.loads(out.with_name(f"{precision}.summary.json").read_text())
        assert summary["run"]["precision"] == precision
        runs[precision] = frames_of(out)
    probs = [
        (a["tasks"]["defect"]["probs"], b["tasks"]["defect"]["probs"])
        for a, b in zip(runs["fp32"], runs["int8"])
    ]
    assert len(probs) == 6 and any(a != b for a, b in probs)  # quantized: not the fp32 graphs
    for a, b in probs:  # ... but close to them
        assert max(abs(a[k] - b[k]) for k in a) < 0.2
