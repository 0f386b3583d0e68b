"""Engine sidecars: written atomically, read back, and every mismatch refused before loading."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.core.errors import BundleError, EngineMismatchError, InternalError
from edge.core.sidecar import (
    engine_file_name,
    read_sidecar,
    sidecar_path,
    verify_engine,
    write_sidecar,
)
from edge.core.trt_version import TrtVersion

ONNX_SHA = hashlib.sha256(b"trunk.onnx bytes").hexdigest()


def _info(**over: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "part": "trunk",
        "precision": "int8",
        "int8_mode": "implicit",
        "tensorrt": "10.3.0",
        "device": {
            "name": "Orin",
            "compute_capability": "8.7",
            "l4t": "36.4.3",
            "jetpack": "6.2",
        },
        "onnx_sha256": ONNX_SHA,
        "cache_sha256": hashlib.sha256(b"cache").hexdigest(),
        "io": {"inputs": {"image": [1, 224, 224, 3]}, "outputs": {"s1": [1, 32, 112, 112]}},
    }
    info.update(over)
    return info


@pytest.fixture()
def engine(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle" / "engines" / "orin-nano"
    folder.mkdir(parents=True)
    path = folder / "trunk.int8.engine"
    path.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: more than one hashing chunk
    write_sidecar(path, _info())
    return path


def _verify(engine: Path, **over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "tensorrt": "10.3.0",
        "device_name": "Orin",
        "compute_capability": "8.7",
        "expected_onnx_sha256": ONNX_SHA,
    }
    kw.update(over)
    return verify_engine(engine, **kw)


def test_round_trip(engine: Path) -> None:
    path = sidecar_path(engine)
    assert path.name == "trunk.int8.engine.json"
    assert not list(path.parent.glob(".*.tmp-*"))  # nothing half-written left behind
    record = read_sidecar(engine)
    assert record["format"] == "etr-edge-engine" and record["version"] == 1
    assert record["part"] == "trunk" and record["precision"] == "int8"
    assert record["int8_mode"] == "implicit" and record["dla_core"] is None
    assert record["tensorrt"] == "10.3.0"
    assert record["device"] == {
        "name": "Orin",
        "compute_capability": "8.7",
        "l4t": "36.4.3",
        "jetpack": "6.2",
    }
    assert record["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert record["onnx_sha256"] == ONNX_SHA
    assert record["io"]["inputs"]["image"] == [1, 224, 224, 3]
    assert "T" in record["built_at"]
    assert _verify(engine) == record


def test_defaults_and_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "head.fp16.engine"
    path.write_bytes(b"plan")
    write_sidecar(
        path,
        {
            "part": "head",
            "precision": "fp16",
            "tensorrt": TrtVersion(8, 6, 2),
            "device": {"name": "Xavier", "compute_capability": "72"},
            "onnx_sha256": ONNX_SHA,
            "format": "something else",  # set by write_sidecar, never by the caller
        },
    )
    record = read_sidecar(path)
    assert record["format"] == "etr-edge-engine"
    assert (record["int8_mode"], record["cache_sha256"], record["dla_core"]) == (None, None, None)
    assert record["tensorrt"] == "8.6.2"
    assert record["device"]["compute_capability"] == "7.2"
    assert record["device"]["l4t"] is None
    # versions compare as versions, capabilities as numbers
    _verify(path, tensorrt="8.6.2.3", device_name="Xavier", compute_capability="sm_72")


def test_engine_hash_mismatch(engine: Path) -> None:
    engine.write_bytes(engine.read_bytes()[:-1] + b"\x00")
    with pytest.raises(EngineMismatchError) as e:
        _verify(engine)
    msg = str(e.value)
    assert str(engine) in msg and "engine file: sidecar says sha256" in msg
    assert "edge build" in msg and str(engine.parents[2]) in msg and "--precision int8" in msg


def test_tensorrt_version_mismatch(engine: Path) -> None:
    _verify(engine, tensorrt="10.3")  # 10.3 == 10.3.0
    with pytest.raises(EngineMismatchError, match=r"TensorRT: built with 10\.3\.0, .* has 10\.13"):
        _verify(engine, tensorrt="10.13.0")


def test_tensorrt_build_number_mismatch(engine: Path) -> None:
    """Issue 12 item 4: deserialization compares all four parts ("expecting library version
    8.6.1.6 got 8.6.1.4"), so the sidecar records them and the check compares them."""
    write_sidecar(engine, _info(tensorrt="8.6.1.6"))
    assert read_sidecar(engine)["tensorrt"] == "8.6.1.6"
    _verify(engine, tensorrt="8.6.1.6")
    with pytest.raises(EngineMismatchError, match=r"built with 8\.6\.1\.6, .* has 8\.6\.1\.4"):
        _verify(engine, tensorrt="8.6.1.4")


def test_sidecar_must_describe_the_file_being_loaded(engine: Path) -> None:
    """Issue 13 item 9: the sidecar's precision (and part, and DLA core) must be the file's."""
    write_sidecar(engine, _info(precision="fp16"))  # beside trunk.int8.engine
    with pytest.raises(EngineMismatchError, match=r"describes trunk\.fp16\.engine"):
        _verify(engine)
    write_sidecar(engine, _info(dla_core=0))
    with pytest.raises(EngineMismatchError, match=r"trunk\.int8\.dla0\.engine"):
        _verify(engine)
    dla = engine.with_name(engine_file_name("trunk", "int8", 0))
    dla.write_bytes(engine.read_bytes())
    write_sidecar(dla, _info(dla_core=0, part="heads/trunk"))  # a head's file name: its task
    assert _verify(dla)["dla_core"] == 0


def test_device_name_mismatch(engine: Path) -> None:
    with pytest.raises(EngineMismatchError, match="device: built for 'Orin', this is 'Xavier'"):
        _verify(engine, device_name="Xavier")


def test_compute_capability_mismatch(engine: Path) -> None:
    with pytest.raises(EngineMismatchError, match=r"built for 8\.7, this GPU is 7\.2"):
        _verify(engine, compute_capability="7.2")


def test_onnx_mismatch(engine: Path) -> None:
    other = hashlib.sha256(b"converted again").hexdigest()
    with pytest.raises(EngineMismatchError, match="ONNX: built from sha256") as e:
        _verify(engine, expected_onnx_sha256=other)
    assert other[:12] in str(e.value) and "edge build" in str(e.value)
    _verify(engine, expected_onnx_sha256=None)  # not checked when the caller has no hash


def test_every_mismatch_is_listed(engine: Path) -> None:
    with pytest.raises(EngineMismatchError) as e:
        _verify(engine, tensorrt="8.6.2", compute_capability="5.3")
    assert "TensorRT:" in str(e.value) and "compute capability:" in str(e.value)


def test_missing_sidecar(engine: Path) -> None:
    sidecar_path(engine).unlink()
    with pytest.raises(EngineMismatchError, match=r"has no sidecar trunk\.int8\.engine\.json"):
        _verify(engine)


def test_missing_engine(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        _verify(tmp_path / "trunk.fp16.engine")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"format": "etr-edge-engine", "version": 1, "part": "tr', "not valid JSON"),
        ('["a", "list"]', "not an etr-edge engine sidecar"),
        ('{"format": "etr-edge-engine", "version": 99}', "format version 99"),
        ('{"format": "etr-edge-engine", "version": 1, "part": "trunk"}', "lacks precision"),
    ],
)
def test_corrupt_sidecar(engine: Path, text: str, match: str) -> None:
    sidecar_path(engine).write_text(text)
    with pytest.raises(BundleError, match=match) as e:
        _verify(engine)
    assert "edge build" in str(e.value)


def test_write_refuses_incomplete_info(tmp_path: Path) -> None:
    path = tmp_path / "trunk.fp16.engine"
    with pytest.raises(InternalError, match="does not exist"):
        write_sidecar(path, _info(precision="fp16"))
    path.write_bytes(b"plan")
    info = _info()
    del info["onnx_sha256"]
    with pytest.raises(InternalError, match="lacks onnx_sha256"):
        write_sidecar(path, info)
    with pytest.raises(InternalError, match="precision"):
        write_sidecar(path, _info(precision="int4"))
    assert not sidecar_path(path).exists()


def test_overwrite_is_atomic_and_complete(engine: Path) -> None:
    write_sidecar(engine, _info(dla_core=0, precision="fp16", int8_mode=None))
    record = json.loads(sidecar_path(engine).read_text())
    assert record["dla_core"] == 0 and record["precision"] == "fp16"
    assert len(list(engine.parent.iterdir())) == 2  # the engine and its sidecar only


def test_sidecar_module_imports_no_heavy_frameworks() -> None:
    import subprocess

    code = (
        "import sys, edge.core.sidecar; "
        "bad = [m for m in ('torch', 'onnx', 'tensorrt') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
