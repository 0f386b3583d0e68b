"""The floor plan (docs/architecture.md): the import graph, read as import-linter reads it.

The source folders are mapped onto ``edge.*`` by pyproject's package-dir, which grimp cannot
follow, so the tests lay the folders out as the installed package and build the graph there.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "edge": "edge",
    "edge/convert": "convert",
    "edge/calib": "calib",
    "edge/runtime": "runtime",
    "edge/jetson": "jetson",
}


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> object:
    site = tmp_path_factory.mktemp("site")
    for dest, src in FOLDERS.items():
        shutil.copytree(
            ROOT / src, site / dest, ignore=shutil.ignore_patterns("__pycache__", "assets")
        )
    ours = {m: sys.modules.pop(m) for m in list(sys.modules) if m == "edge" or m[:5] == "edge."}
    sys.path.insert(0, str(site))
    try:  # grimp finds the package through the import system: let it find the copy
        return grimp.build_graph("edge", include_external_packages=True, cache_dir=None)
    finally:
        sys.path.remove(str(site))
        for m in [m for m in sys.modules if m == "edge" or m[:5] == "edge."]:
            del sys.modules[m]
        sys.modules.update(ours)  # later tests see the real package again


def test_no_two_modules_import_each_other(graph: object) -> None:
    pairs = sorted(
        (a, b)
        for a in graph.modules  # type: ignore[attr-defined]
        if a.startswith("edge")
        for b in graph.find_modules_directly_imported_by(a)  # type: ignore[attr-defined]
        if a < b and a in graph.find_modules_directly_imported_by(b)  # type: ignore[attr-defined]
    )
    assert pairs == []


def test_no_import_cycle_between_stage_packages(graph: object) -> None:
    stages = [
        "edge.core",
        "edge.data",
        "edge.family",
        "edge.convert",
        "edge.calib",
        "edge.runtime",
        "edge.jetson",
        "edge.profile",
    ]
    cycles = [
        (a, b)
        for a in stages
        for b in stages
        if a < b
        and graph.chain_exists(a, b, as_packages=True)  # type: ignore[attr-defined]
        and graph.chain_exists(b, a, as_packages=True)  # type: ignore[attr-defined]
    ]
    assert cycles == []


def test_board_side_imports_neither_torch_nor_onnx(graph: object) -> None:
    board = ["edge.core", "edge.data", "edge.runtime", "edge.jetson", "edge.profile"]
    leaks = [
        (src, heavy)
        for src in board
        for heavy in ("torch", "onnx", "onnxsim")
        if heavy in graph.modules  # type: ignore[attr-defined]
        and graph.chain_exists(src, heavy, as_packages=True)  # type: ignore[attr-defined]
    ]
    assert leaks == []
