from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.convert.bundle import ConvertConfig, convert_checkpoint
from edge.convert.verify import demo_frames
from edge.core.errors import BundleError, CheckpointError, ExportError
from edge.core.files import sha256_file
from edge.core.manifest import load_bundle
from tiny_models import make_tiny_checkpoint, tiny_config


def _sess(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_bundle_layout_and_manifest(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    assert {p.name for p in tiny_bundle.iterdir()} >= {
        "manifest.json",
        "trunk.onnx",
        "fused.onnx",
        "heads",
        "fold_report.md",
    }
    heads = ["heads/defect", "heads/attrs", "heads/mask", "heads/angle"]
    assert b.parts == ["trunk", *heads, "heads_all", "fused"]
    m = b.manifest.to_dict()
    for rel, info in m["files"].items():
        assert sha256_file(tiny_bundle / rel) == info["sha256"]
    assert m["input"]["dtype"] == "uint8" and m["input"]["layout"] == "NHWC"
    assert set(m["versions"]) >= {"torch", "onnx", "onnxsim", "onnxruntime"}
    assert m["model"]["checkpoint"]["sha256"]
    errs = m["verification"]["max_abs_error"]
    assert set(errs) == set(b.parts)
    trunk = onnx.load(str(b.path("trunk")))
    assert [o.name for o in trunk.graph.output] == b.tap_names
    for t in b.tasks.values():
        head = onnx.load(str(b.path(t.head)))
        assert [i.name for i in head.graph.input] == b.tap_names
        assert [o.name for o in head.graph.output] == [t.output]
    fused = onnx.load(str(b.path("fused")))
    assert [o.name for o in fused.graph.output] == [t.output for t in b.tasks.values()]
    # the fixed primitives are constants, never graph inputs
    assert [i.name for i in trunk.graph.input] == ["image"]


def test_trunk_plus_heads_equals_fused_exactly(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    frames = demo_frames((32, 32), 4)
    trunk, fused = _sess(b.path("trunk")), _sess(b.path("fused"))
    for f in frames:
        image = f[None]
        taps = dict(zip(b.tap_names, trunk.run(None, {"image": image})))
        want = dict(zip([o.name for o in fused.get_outputs()], fused.run(None, {"image": image})))
        for t in b.tasks.values():
            got = _sess(b.path(t.head)).run(None, taps)[0]
            np.testing.assert_allclose(got, want[t.output], rtol=0, atol=1e-5)


def test_tampered_file_fails_hash_check(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    (copy / "heads" / "mask.onnx").write_bytes(b"oops")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)


def test_existing_bundle_needs_force(tiny_bundle: Path, tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "b"
    out.mkdir()
    with pytest.raises(ExportError, match="--force"):
        convert_checkpoint(ckpt, ConvertConfig(out=out))
    convert_checkpoint(ckpt, ConvertConfig(out=out, force=True, verify_frames=2))
    assert load_bundle(out).tasks


def test_bad_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        convert_checkpoint(bad, ConvertConfig(out=tmp_path / "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_unwritable_output_folder(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ExportError, match="does not exist"):
        convert_checkpoint(ckpt, ConvertConfig(out=tmp_path / "no" / "such" / "b"))


def test_verification_failure_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unsupported layer / broken conversion shows up as a numerical mismatch: simulate a
    # broken fold by corrupting the folded weights, and check the stage refuses to write.
    import edge.convert.bundle as stage
    from edge.convert import fold

    real = fold.fold_model

    def broken(model, form="auto"):  # type: ignore[no-untyped-def]
        deploy, report = real(model, form)
        deploy.shared[1].convs[0].weight.data.mul_(1.01)
        return deploy, report

    monkeypatch.setattr(stage, "fold_model", broken)
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt", tiny_config(primitives=("lbc", "gauss")))
    with pytest.raises(ExportError, match="No bundle was written"):
        convert_checkpoint(ckpt, ConvertConfig(out=tmp_path / "b", fold_form="single"))
    assert not (tmp_path / "b").exists()
    assert not any(p.name.startswith(".b.") for p in tmp_path.iterdir())


def test_dynamic_batch_and_float_input(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "m.pt")
    out = convert_checkpoint(
        ckpt,
        ConvertConfig(
            out=tmp_path / "b",
            dynamic_batch=True,
            max_batch=4,
            in_graph_preprocessing=False,
            verify_frames=4,
        ),
    )
    b = load_bundle(out)
    assert b.batch == {"dynamic": True, "min": 1, "opt": 1, "max": 4}
    assert b.input.dtype == "float32"
    sess = _sess(b.path("fused"))
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    outs = sess.run(None, {"image": x})
    assert outs[0].shape[0] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parts"]["trunk"]["inputs"] == ["image"]
