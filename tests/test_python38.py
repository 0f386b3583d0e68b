"""What a board runs must run on Python 3.8 (JetPack 5's python; its TensorRT bindings exist for
3.8 only), while this machine has 3.10+. vermin (in .ci/run) checks the syntax and the standard
library; it reads annotations as strings under ``from __future__ import annotations``, which is
right for 3.8, but it cannot see 3.9+ forms evaluated at run time. This test finds those:

- ``list[int]``, ``deque[Frame]``, ``Callable[..., Any]`` (collections.abc) outside annotations
  (a module-level alias, a base class, a ``cast``): TypeError "not subscriptable" on 3.8;
- ``X | None`` / ``int | str`` outside annotations (PEP 604 is 3.10);
- ``str.removeprefix``/``removesuffix``, ``Path.is_relative_to``/``with_stem``/``readlink``,
  ``int.bit_count`` (methods vermin cannot tie to a type).

Annotations are skipped (strings on 3.8 with the future import, which every board module must
have), as are ``if TYPE_CHECKING:`` blocks. The board modules are the board packages plus every
``edge`` module they import, and .ci/run's vermin step must cover all of them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BOARD_PACKAGES = ("edge/core", "edge/data", "runtime", "convert/engine", "jetson", "edge/profile")
BOARD_FILES = ("edge/__init__.py", "edge/cli.py")  # the CLI's stage imports are function-local
# pyproject's package-dir: import name -> folder
FOLDERS = {
    "edge.convert": "convert",
    "edge.calib": "calib",
    "edge.runtime": "runtime",
    "edge.jetson": "jetson",
    "edge": "edge",
}
GENERIC_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}
# classes that became subscriptable in 3.9 (PEP 585), by module; None: every name in it
PEP585: dict[str, frozenset[str] | None] = {
    "collections.abc": None,
    "collections": frozenset({"deque", "defaultdict", "OrderedDict", "Counter", "ChainMap"}),
    "queue": frozenset({"Queue", "SimpleQueue", "LifoQueue", "PriorityQueue"}),
    "subprocess": frozenset({"Popen", "CompletedProcess"}),
    "re": frozenset({"Pattern", "Match"}),
    "os": frozenset({"PathLike", "DirEntry"}),
    "contextlib": frozenset({"AbstractContextManager", "AbstractAsyncContextManager"}),
    "concurrent.futures": frozenset({"Future"}),
    "functools": frozenset({"partial", "partialmethod"}),
}
TYPE_NAMES = GENERIC_BUILTINS | {"int", "float", "str", "bytes", "bool", "complex", "object"}
NEW_METHODS = {"removeprefix", "removesuffix", "is_relative_to", "with_stem", "bit_count"}


def module_path(name: str) -> Path | None:
    for prefix, folder in sorted(FOLDERS.items(), key=lambda kv: -len(kv[0])):
        if name == prefix or name.startswith(prefix + "."):
            base = ROOT / folder / name[len(prefix) :].lstrip(".").replace(".", "/")
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
    return None


def edge_imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("edge"))
    return names


def board_modules() -> list[Path]:
    """The board packages, the files above, and every edge module they import (transitively;
    edge/cli.py's imports are not followed: they reach the training stages)."""
    todo = [p for d in BOARD_PACKAGES for p in (ROOT / d).rglob("*.py")]
    seen = {ROOT / f for f in BOARD_FILES}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in edge_imports(ast.parse(path.read_text())):
            found = module_path(name)
            if found is not None and found not in seen:
                todo.append(found)
                # a package's __init__ runs before its modules
                for parent in found.parents:
                    init = parent / "__init__.py"
                    if parent == ROOT or not init.is_file():
                        break
                    todo.append(init)
    return sorted(seen)


class Finder(ast.NodeVisitor):
    """Collects 3.9+ run-time forms outside annotations and TYPE_CHECKING blocks."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.pep585: set[str] = set(GENERIC_BUILTINS)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module in PEP585:
            names = PEP585[node.module]
            self.pep585.update(
                a.asname or a.name for a in node.names if names is None or a.name in names
            )

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _args(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        self._args(node.args)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def _where(self, node: ast.AST) -> str:
        return f"line {getattr(node, 'lineno', '?')}: {ast.unparse(node)}"

    def _is_generic_base(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.pep585
        if isinstance(node, ast.Attribute):
            module = ast.unparse(node.value)
            names = PEP585.get(module, frozenset())
            return names is None or node.attr in names
        return False

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self._is_generic_base(node.value):
            self.problems.append(f"{self._where(node)}  (PEP 585 generic at run time: 3.9+)")
        self.generic_visit(node)

    def _typeish(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant) and node.value is None:
            return True
        if isinstance(node, ast.Name) and node.id in TYPE_NAMES:
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._typeish(node.left) or self._typeish(node.right)
        return isinstance(node, ast.Subscript) and self._is_generic_base(node.value)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.BitOr) and (
            self._typeish(node.left) or self._typeish(node.right)
        ):
            self.problems.append(f"{self._where(node)}  (PEP 604 union at run time: 3.10+)")
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in NEW_METHODS:
            self.problems.append(f"{self._where(node)}  ({func.attr}: 3.9+)")
        if (
            isinstance(func, ast.Name)
            and func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
            and isinstance(node.args[1], ast.BinOp)
        ):
            self.problems.append(f"{self._where(node)}  (a union in {func.id}: 3.10+)")
            self.visit(node.args[0])
            return
        self.generic_visit(node)


def problems_in(source: str) -> list[str]:
    finder = Finder()
    finder.visit(ast.parse(source))
    return finder.problems


MODULES = board_modules()


def test_board_modules_are_found() -> None:
    rel = {p.relative_to(ROOT).as_posix() for p in MODULES}
    assert {"runtime/run.py", "calib/cache.py", "edge/cli.py", "jetson/probe.py"} <= rel
    assert not any(r.startswith("edge/family/") for r in rel)


def has_annotations(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if node.returns is not None or any(a.annotation is not None for a in args):
                return True
    return False


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_python39_forms_at_run_time(path: Path) -> None:
    text = path.read_text()
    if has_annotations(ast.parse(text)):
        assert "from __future__ import annotations" in text, "annotations must stay strings"
    assert problems_in(text) == []


def test_the_finder_sees_each_form() -> None:
    bad = """
from collections import deque
from collections.abc import Callable
Alias = tuple[int, "np.ndarray | None"]
Runner = Callable[..., int]
Opt = int | None
class Box(dict[str, int]): pass
def f(x: list[int] | None = None) -> dict[str, int]:  # annotations: fine
    y: deque[int] = deque()  # fine
    isinstance(x, int | str)
    return "a".removeprefix("b")
"""
    found = problems_in(bad)
    assert len(found) == 6, found
    good = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    Alias = tuple[int, int]
flags = 1 | 2
def g(a: int | None = None) -> list[int]:
    return [a or 0]
"""
    assert problems_in(good) == []


def test_ci_runs_vermin_over_every_board_module() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"^\s*vermin (.*?)$", ci, re.M)
    assert m, ".ci/run has no vermin step"
    args = m.group(1).split()
    assert "-t=3.8-" in args and "--eval-annotations" not in args
    covered = [a.rstrip("/") for a in args if not a.startswith("-")]

    def is_covered(path: Path) -> bool:
        rel = path.relative_to(ROOT).as_posix()
        return any(rel == c or rel.startswith(c + "/") for c in covered)

    missing = [p.relative_to(ROOT).as_posix() for p in MODULES if not is_covered(p)]
    assert missing == []
