"""Item 7: NaN weights fail conversion; a bundle whose graph yields NaN is flagged per frame
with an ``error`` field (never a label) and the JSONL stays strict JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from reliability.helpers import frames_of

from edge.convert.bundle import ConvertConfig, convert_checkpoint
from edge.core.errors import ExportError
from edge.core.files import sha256_file
from edge.family.checkpoint import save_checkpoint
from edge.runtime.decode import Decoder
from edge.runtime.run import RunConfig, run_bundle
from tiny_models import tiny_model


def test_a_checkpoint_with_nan_weights_does_not_convert(tmp_path: Path) -> None:
    model = tiny_model()
    head = next(n for n, _ in model.named_parameters() if "defect" in n and n.endswith("weight"))
    with torch.no_grad():
        dict(model.named_parameters())[head].fill_(float("nan"))
    ckpt = save_checkpoint(tmp_path / "nan.pt", model)
    with pytest.raises(ExportError, match="not finite"):
        convert_checkpoint(ckpt, ConvertConfig(out=tmp_path / "b", verify_frames=2))
    assert not (tmp_path / "b").exists()


def _poison(bundle: Path, part: str) -> None:
    """Set every float initializer of ``part`` to NaN and re-hash it in the manifest."""
    path = bundle / f"{part}.onnx"
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f" and arr.size > 1:
            init.CopyFrom(numpy_helper.from_array(np.full_like(arr, np.nan), init.name))
    onnx.save(model, str(path))
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][f"{part}.onnx"]["sha256"] = sha256_file(path)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_non_finite_outputs_are_errors_per_frame_in_strict_json(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    _poison(bundle, "heads/defect")
    out = tmp_path / "r.jsonl"
    cfg = RunConfig(source="synthetic:?frames=5", out=out, warmup=0, tasks=("defect", "angle"))
    s = run_bundle(bundle, cfg)  # two tasks: their own heads, not the merged graph
    frames = frames_of(out)  # strict parse: a bare NaN fails
    assert len(frames) == 5
    for f in frames:
        defect = f["tasks"]["defect"]
        assert "label" not in defect and "NaN" in defect["error"]
        assert "value" in f["tasks"]["angle"] or "values" in f["tasks"]["angle"]  # others fine
    assert s.tasks["defect"]["errors"] == 5 and "labels" not in s.tasks["defect"]
    summary = out.with_name("r.summary.json").read_text()
    assert "NaN" not in summary.replace("NaN or", "")


def test_decoders_flag_inf_and_nan_for_every_type() -> None:
    specs = {
        "softmax_argmax": {"type": "softmax_argmax", "labels": ["ok", "bad"]},
        "sigmoid_threshold": {"type": "sigmoid_threshold", "labels": ["a", "b"]},
        "affine": {"type": "affine", "names": ["v", "w"]},
        "argmax_mask": {"type": "argmax_mask", "labels": ["bg", "fg"]},
    }
    for kind, spec in specs.items():
        dec = Decoder("t", spec)
        raw = np.zeros((2, 4, 4) if kind == "argmax_mask" else (2,), np.float32)
        assert dec.decode(raw).error is None
        for bad in (np.nan, np.inf, -np.inf):
            raw.flat[1] = bad
            r = dec.decode(raw)
            assert r.error is not None and set(r.data) == {"error"} and r.brief() == "error"
            raw.flat[1] = 0
