"""Item 8: a manifest without its file list (or missing a graph from it) is refused; signed
bundles refuse any changed, added or removed file, the manifest and engines included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reliability.helpers import edge

from edge.core.errors import BundleError, ConfigError
from edge.core.manifest import load_bundle
from edge.core.signing import generate_keys, sign_bundle, verify_bundle
from edge.runtime.run import RunConfig, run_bundle

pytest.importorskip("cryptography", reason="bundle signing needs etr-edge[sign]")


@pytest.fixture
def copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "b"))


def _edit_manifest(bundle: Path, fn: object) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)  # type: ignore[operator]
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_a_manifest_without_its_file_list_is_refused(copy: Path) -> None:
    _edit_manifest(copy, lambda m: m.pop("files"))
    data = bytearray((copy / "trunk.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "trunk.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match='no "files" list'):
        load_bundle(copy)
    r = edge("run", str(copy), "--source", "synthetic:?frames=2")
    assert r.returncode == 2 and "files" in r.stderr and "Traceback" not in r.stderr


def test_a_manifest_not_listing_a_graph_is_refused(copy: Path) -> None:
    _edit_manifest(copy, lambda m: m["files"].pop("heads/defect.onnx"))
    with pytest.raises(BundleError, match=r"heads/defect\.onnx"):
        load_bundle(copy)


@pytest.fixture
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys") / "release.key")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _swap_labels(bundle: Path) -> None:
    def swap(m: dict) -> None:  # type: ignore[type-arg]
        labels = m["tasks"]["defect"]["decode"]["labels"]
        labels[0], labels[1] = labels[1], labels[0]

    _edit_manifest(bundle, swap)


TAMPERS = {
    "trunk byte": lambda b: _flip(b / "trunk.onnx"),
    "manifest byte": lambda b: (b / "manifest.json").write_text(
        (b / "manifest.json").read_text().replace('"opset": 17', '"opset": 17 ')
    ),
    "swapped labels": _swap_labels,
    "no files list": lambda b: _edit_manifest(b, lambda m: m.pop("files")),
    "added engine": lambda b: (
        (b / "engines" / "x").mkdir(parents=True),
        (b / "engines" / "x" / "trunk.fp16.engine").write_bytes(b"evil"),
    ),
    "removed head": lambda b: (b / "heads" / "mask.onnx").unlink(),
    "signature edited": lambda b: (b / "signature.json").write_text(
        json.dumps({**json.loads((b / "signature.json").read_text()), "files": [["x", "y"]]})
    ),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_a_signed_bundle_refuses_every_tampering(
    copy: Path, keys: tuple[Path, Path], tamper: str
) -> None:
    private, public = keys
    sign_bundle(copy, private)
    verify_bundle(copy, public)  # intact: accepted
    TAMPERS[tamper](copy)
    with pytest.raises(BundleError):
        verify_bundle(copy, public)
    with pytest.raises(BundleError):
        run_bundle(copy, RunConfig(source="synthetic:?frames=2", verify_key=public, warmup=0))


def test_unsigned_and_wrong_key_are_refused_by_the_cli(
    copy: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    r = edge("run", str(copy), "--source", "synthetic:?frames=2", "--verify-key", str(public))
    assert r.returncode == 2 and "not signed" in r.stderr and "Traceback" not in r.stderr
    r = edge("sign", str(copy), "--key", str(private))
    assert r.returncode == 0, r.stderr
    _, other_public = generate_keys(tmp_path / "other.key")
    r = edge("run", str(copy), "--source", "synthetic:?frames=2", "--verify-key", str(other_public))
    assert r.returncode == 2 and "does not verify" in r.stderr
    r = edge("run", str(copy), "--source", "synthetic:?frames=2", "--verify-key", str(public))
    assert r.returncode == 0, r.stderr
    r = edge("build", str(copy), "--verify-key", str(other_public))
    assert r.returncode == 2 and "does not verify" in r.stderr  # before TensorRT is needed
    with pytest.raises(ConfigError, match="Ed25519 private key"):
        sign_bundle(copy, public)


def test_keygen_never_overwrites_and_keeps_the_private_key_private(tmp_path: Path) -> None:
    r = edge("keygen", "--out", str(tmp_path / "k"))
    assert r.returncode == 0 and (tmp_path / "k.pub").is_file()
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    r = edge("keygen", "--out", str(tmp_path / "k"))
    assert r.returncode == 2 and "never overwritten" in r.stderr
