"""edge.core.lazy_trt: the one TensorRT import point, its dtype table and its version."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

from edge.core import lazy_trt
from edge.core.lazy_trt import NUMPY_BY_TRT_NAME, module_version, numpy_dtype

ROOT = Path(__file__).parents[2]
IMPORTS = (
    r"""(import_module|import_optional)\(\s*["']tensorrt["']"""
    r"|^\s*(import tensorrt|from tensorrt import)\b(?!.*types only)"
)


class DataType:
    """A member of ``tensorrt.DataType`` as the binding defines it: pybind11 ``enum_`` members
    have a ``name`` property (pybind11 2.3+, TensorRT 7.2+ docs), e.g. ``DataType.HALF.name``."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_dtypes_by_enum_name() -> None:
    """Issue 12 item 1: TensorRT 8.5.2's ``trt.nptype`` builds its table with ``np.bool`` on every
    call (python/packaging/tensorrt/__init__.py:166), an AttributeError with numpy 1.24-1.26."""
    expected = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32"}
    expected.update({"INT64": "int64", "BOOL": "bool", "UINT8": "uint8"})
    assert {n: numpy_dtype(DataType(n)).name for n in NUMPY_BY_TRT_NAME} == expected
    for name in ("BF16", "FP8", "INT4", "FP4", "E8M0"):
        with pytest.raises(TypeError, match=f"TensorRT type {name} has no numpy equivalent"):
            numpy_dtype(DataType(name))


def test_no_trt_nptype_and_one_tensorrt_import_point() -> None:
    """Issue 12 item 1 and issue 11 item 3: nothing calls ``nptype``; only lazy_trt imports
    tensorrt (by name, through ``import_optional``/``importlib``)."""
    sources = [
        p
        for d in ("edge", "convert", "calib", "runtime", "jetson")
        for p in (ROOT / d).rglob("*.py")
    ]
    nptype = [p for p in sources if re.search(r"\bnptype\s*\(", p.read_text())]
    assert nptype == []
    importers = [
        p.relative_to(ROOT).as_posix() for p in sources if re.search(IMPORTS, p.read_text(), re.M)
    ]
    assert importers == ["edge/core/lazy_trt.py"]


def test_module_version_takes_the_build_from_package_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12 item 4: TensorRT 8.6+ ``__version__`` may have three parts (OSS build.sh fills
    ``##TENSORRT_PYTHON_VERSION##`` with major.minor.patch); the wheel's metadata has four."""
    module = types.SimpleNamespace(__version__="10.3.0")
    monkeypatch.setattr(lazy_trt, "version_from_metadata", lambda: None)
    assert str(module_version(module)) == "10.3.0"
    monkeypatch.setattr(
        lazy_trt, "version_from_metadata", lambda: lazy_trt.TrtVersion(10, 3, 0, 30)
    )
    assert str(module_version(module)) == "10.3.0.30"
    other = lazy_trt.TrtVersion(10, 4, 0, 9)
    monkeypatch.setattr(lazy_trt, "version_from_metadata", lambda: other)
    assert str(module_version(module)) == "10.3.0"  # another release's metadata: not ours
    assert str(module_version(types.SimpleNamespace(__version__="8.5.2.2"))) == "8.5.2.2"
    assert np.dtype("float32") == numpy_dtype(DataType("FLOAT"))


def test_engine_version_needs_no_import_when_metadata_has_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine folder is looked up with the version ``edge build`` used: the metadata's when
    it has all four parts (no TensorRT import), else the imported module's."""
    meta = lazy_trt.TrtVersion(8, 5, 2, 2)
    monkeypatch.setattr(lazy_trt, "version_from_metadata", lambda: meta)
    assert lazy_trt.engine_version() is meta
    short = lazy_trt.TrtVersion(10, 3, 0)
    monkeypatch.setattr(lazy_trt, "version_from_metadata", lambda: short)
    monkeypatch.setattr(
        lazy_trt, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.3.0.30")
    )
    assert str(lazy_trt.engine_version()) == "10.3.0.30"
