"""Engine sidecars: ``<part>.<precision>.engine.json`` next to every TensorRT engine.

A TensorRT engine is not portable across TensorRT versions or GPUs (ultralytics#18730), and
deserializing a foreign one fails with an opaque error or crashes. The build stage therefore
writes what the engine was built from and for, and the runtime checks it *before* handing any
bytes to TensorRT::

    {"format": "etr-edge-engine", "version": 1, "part": "trunk", "precision": "int8",
     "int8_mode": "implicit", "tensorrt": "10.3.0",
     "device": {"name": "Orin", "compute_capability": "8.7", "l4t": "36.4.3", "jetpack": "6.2"},
     "dla_core": null, "onnx_sha256": "...", "cache_sha256": "..." | null,
     "engine_sha256": "...", "built_at": "2025-01-01T12:00:00+00:00", "io": {...}}

This module imports neither TensorRT nor torch nor onnx.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.core.errors import BundleError, EngineMismatchError, InternalError
from edge.core.files import sha256_file, write_json
from edge.core.trt_version import TrtVersion

SIDECAR_FORMAT = "etr-edge-engine"
SIDECAR_VERSION = 1
_REQUIRED = ("part", "precision", "tensorrt", "device", "onnx_sha256")
_PRECISIONS = ("fp32", "fp16", "int8")


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``trunk.int8.engine`` -> ``trunk.int8.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def _rebuild_hint(engine_path: Path, precision: object = None) -> str:
    parents = engine_path.resolve().parents
    bundle = str(parents[2]) if len(parents) > 2 and parents[1].name == "engines" else "BUNDLE"
    prec = f" --precision {precision}" if precision in _PRECISIONS else ""
    return f"rebuild it on this machine: edge build {bundle}{prec} ..."


def write_sidecar(engine_path: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write the sidecar of an existing engine file, atomically; returns its path.

    ``info`` carries the fields above; ``format``/``version`` are set here, ``engine_sha256`` is
    computed from the engine file, ``built_at`` defaults to now (UTC), and ``int8_mode``,
    ``dla_core``, ``cache_sha256`` default to null. Missing required fields are a bug in the
    caller (InternalError).
    """
    engine = Path(engine_path)
    missing = [k for k in _REQUIRED if k not in info]
    if missing:
        raise InternalError(f"engine sidecar for {engine.name} lacks {', '.join(missing)}")
    device = info["device"]
    if not isinstance(device, Mapping) or not {"name", "compute_capability"} <= set(device):
        raise InternalError("sidecar 'device' must have 'name' and 'compute_capability'")
    if info["precision"] not in _PRECISIONS:
        raise InternalError(f"sidecar precision {info['precision']!r} not in {_PRECISIONS}")
    if not engine.is_file():
        raise InternalError(f"cannot write a sidecar for {engine}: the engine file does not exist")
    record: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "int8_mode": None,
        "dla_core": None,
        "cache_sha256": None,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "io": {},
    }
    record.update({k: v for k, v in info.items() if k not in ("format", "version")})
    record["tensorrt"] = str(record["tensorrt"])
    record["device"] = {
        "l4t": None,
        "jetpack": None,
        **dict(device),
        "compute_capability": _norm_cc(device["compute_capability"]),
    }
    record["engine_sha256"] = sha256_file(engine)
    return write_json(sidecar_path(engine), record, sort_keys=True)


def read_sidecar(engine_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the sidecar of ``engine_path``.

    Raises EngineMismatchError when it is missing (an engine of unknown origin), BundleError when
    it is not valid JSON, not an etr-edge engine sidecar, or of an unknown format version.
    """
    engine = Path(engine_path)
    path = sidecar_path(engine)
    hint = _rebuild_hint(engine)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EngineMismatchError(
            f"engine {engine} has no sidecar {path.name}, so nothing says which TensorRT and GPU "
            f"it was built for; {hint}"
        ) from None
    except OSError as e:
        raise BundleError(f"cannot read engine sidecar {path}: {e}; {hint}") from e
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"engine sidecar {path} is not valid JSON ({e}); {hint}") from e
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise BundleError(
            f"{path} is not an etr-edge engine sidecar (expected format '{SIDECAR_FORMAT}'); {hint}"
        )
    if record.get("version") != SIDECAR_VERSION:
        raise BundleError(
            f"engine sidecar {path} has format version {record.get('version')!r}; this etr-edge "
            f"reads version {SIDECAR_VERSION}; {hint}"
        )
    missing = [k for k in (*_REQUIRED, "engine_sha256") if k not in record]
    device = record.get("device")
    if not isinstance(device, dict) or not {"name", "compute_capability"} <= set(device):
        missing.append("device.name/compute_capability")
    if missing:
        raise BundleError(f"engine sidecar {path} lacks {', '.join(missing)}; {hint}")
    return record


def _norm_cc(value: object) -> str:
    """'8.7', '87', 'sm_87', (8, 7) -> '8.7'; '11.0' / '110' -> '11.0'."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).strip().lower()
    text = text[3:] if text.startswith("sm_") else text  # Python 3.8: no str.removeprefix
    if "." in text:
        major, minor = text.split(".", 1)
        return f"{int(major)}.{int(minor)}" if major.isdigit() and minor.isdigit() else text
    if text.isdigit() and len(text) >= 2:
        return f"{int(text[:-1])}.{int(text[-1])}"
    return text


def verify_engine(
    engine_path: str | os.PathLike[str],
    *,
    tensorrt: str | TrtVersion,
    device_name: str,
    compute_capability: str,
    expected_onnx_sha256: str | None = None,
) -> dict[str, Any]:
    """Check an engine against its sidecar and this machine; return the sidecar.

    Nothing is deserialized. Checked: the engine file's SHA-256 equals the sidecar's; the TensorRT
    version equals ``tensorrt`` (as versions: 10.3 == 10.3.0); the device name and compute
    capability equal this machine's; and, when given, the ONNX hash equals the bundle's. Any
    difference raises EngineMismatchError listing every mismatch (expected vs found) and how
    to rebuild.
    """
    engine = Path(engine_path)
    if not engine.is_file():
        raise BundleError(f"engine {engine} does not exist; {_rebuild_hint(engine)}")
    record = read_sidecar(engine)
    mismatches: list[str] = []
    built_trt = TrtVersion.parse(record["tensorrt"])
    here_trt = TrtVersion.parse(tensorrt)
    if built_trt != here_trt:
        mismatches.append(f"TensorRT: built with {record['tensorrt']}, this machine has {tensorrt}")
    built_dev = record["device"]
    if str(built_dev["name"]).strip() != str(device_name).strip():
        mismatches.append(f"device: built for '{built_dev['name']}', this is '{device_name}'")
    if _norm_cc(built_dev["compute_capability"]) != _norm_cc(compute_capability):
        mismatches.append(
            f"compute capability: built for {built_dev['compute_capability']}, "
            f"this GPU is {compute_capability}"
        )
    if expected_onnx_sha256 is not None and record["onnx_sha256"] != expected_onnx_sha256:
        mismatches.append(
            f"ONNX: built from sha256 {str(record['onnx_sha256'])[:12]}..., the bundle's model "
            f"is {expected_onnx_sha256[:12]}... (the bundle was converted again)"
        )
    actual = sha256_file(engine)
    if actual != record["engine_sha256"]:
        mismatches.append(
            f"engine file: sidecar says sha256 {str(record['engine_sha256'])[:12]}..., the "
            f"file is {actual[:12]}... (replaced or corrupted after the build)"
        )
    if mismatches:
        raise EngineMismatchError(
            f"engine {engine} does not match: "
            + "; ".join(mismatches)
            + f"; {_rebuild_hint(engine, record.get('precision'))}"
        )
    return record
