"""The library is layered without cycles: every module imports on its own (in a fresh interpreter),
and the graph of imports between course_lib's modules, lazy imports inside functions included, has
no cycle. A cycle that holds only by import order is a defect even when nothing fails today."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "course_lib"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(current: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _known(name: str) -> str | None:
    """The course_lib module a dotted name belongs to (the longest known prefix)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in MODULES:
            return cand
    return None


def imports_of(name: str) -> set[str]:
    """course_lib modules that module ``name`` imports, anywhere in its code (``from . import x`` counts
    ``x`` when it is a module)."""
    path = MODULES[name]
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                k = _known(a.name)
                if k:
                    out.add(k)
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(name, is_pkg, node.level, node.module) if node.level else (node.module or "")
            if not src.startswith("course_lib"):
                continue
            for a in node.names:
                k = _known(f"{src}.{a.name}") or _known(src)
                if k:
                    out.add(k)
    out.discard(name)
    # a package's own submodules importing the package (for a name it re-exports) is an edge too
    return out


def graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str):
        state[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(g):
        if u not in state:
            c = visit(u)
            if c:
                return c
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_of_course_lib_has_no_cycle():
    g = graph()
    assert len(g) > 40 and g["course_lib.train"], "the graph was not read"
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_leaf_modules_import_nothing_above_them():
    g = graph()
    assert g["course_lib.config"] == set()
    assert g["course_lib.validation"] <= set()
    assert g["course_lib.params"] <= {"course_lib.validation"}


@pytest.mark.parametrize("name", [m for m in MODULES if m != "course_lib"])
def test_every_module_imports_on_its_own(name):
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_no_module_is_over_about_400_lines():
    """A newcomer reads a module in one sitting: none over ~400 lines (420 with its docstring slack)."""
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, f"split these modules: {long}"
