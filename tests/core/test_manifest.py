"""The typed manifest: one reader, one writer, the JSON format unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.core.errors import BundleError
from edge.core.manifest import MANIFEST, Manifest, load_bundle, read_manifest, write_manifest


def test_manifest_json_round_trips_unchanged(tiny_bundle: Path) -> None:
    on_disk = json.loads((tiny_bundle / MANIFEST).read_text())
    manifest = read_manifest(tiny_bundle)
    assert manifest.to_dict() == on_disk
    assert manifest.parts["trunk"].inputs == ("image",)
    assert manifest.files and all(len(f.sha256) == 64 for f in manifest.files.values())


def test_unknown_sections_survive_a_rewrite(tiny_bundle: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_bundle / MANIFEST).read_text())
    data["from_a_newer_etr_edge"] = {"kept": [1, 2]}
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    write_manifest(tmp_path, read_manifest(tmp_path).with_calibration({"files": {}}))
    again = json.loads((tmp_path / MANIFEST).read_text())
    assert again["from_a_newer_etr_edge"] == {"kept": [1, 2]}
    assert again["calibration"] == {"files": {}}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[]", "expected a JSON object"),
        ('{"format": "other"}', "not an etr-edge bundle manifest"),
        ('{"format": "etr-edge-bundle", "format_version": 9}', "format version 9"),
        ('{"format": "etr-edge-bundle", "format_version": 1}', "manifest is incomplete"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_manifests_are_refused_clearly(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=problem):
        load_bundle(tmp_path)


def test_a_changed_file_is_caught(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    trunk = copy / "trunk.onnx"
    data = bytearray(trunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    trunk.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(copy)
    assert isinstance(load_bundle(copy, verify=False).manifest, Manifest)
