"""The nbgrader round trip of every graded assignment: the committed release is current and holds no
solution code and no hidden test; the solution scores full marks and the blank release zero through
the class pipeline (``grading.autograde``: the sandboxed executor, then nbgrader); test cells and
stated points follow the conventions; the release states the rules the grader enforces.
(The grading suite, tests/test_grading_suite.py, grades each assignment's other synthetic cases.)"""
import json
from pathlib import Path

import pytest

from course_lib import grading

ROOT = Path(__file__).resolve().parent.parent
NAMES = grading.assignments(ROOT)


def _cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]


def _between(src: str, begin: str, end: str) -> list[str]:
    out, inside = [], False
    for line in src.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and len(line.strip()) > 8:
            out.append(line.strip())
    return out


def test_every_solution_has_a_release():
    """Each solutions/<a> has assignments/<a> and the other way round."""
    rel = sorted(p.name for p in (ROOT / "assignments").iterdir() if p.is_dir())
    assert NAMES and rel == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_release_holds_no_solution_or_hidden_test(name):
    """No marker, no solution line and no hidden-test line reaches the student copy."""
    src = "\n".join(_cells(next((ROOT / "solutions" / name).glob("*.ipynb"))))
    release = "\n".join(_cells(next((ROOT / "assignments" / name).glob("*.ipynb"))))
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in release
    secret = _between(src, "BEGIN SOLUTION", "END SOLUTION") + _between(src, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
    assert secret, "the source should contain solutions and hidden tests"
    secret_set = set(secret)
    public_in_source = set()
    for cell in _cells(next((ROOT / "solutions" / name).glob("*.ipynb"))):
        inside = False
        for line in cell.splitlines():
            if "BEGIN SOLUTION" in line or "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END SOLUTION" in line or "END HIDDEN TESTS" in line:
                inside = False
            elif not inside:
                public_in_source.add(line.strip())
    public = set(ln.strip() for ln in release.splitlines())
    leaked = [ln for ln in secret_set if ln in public and ln not in public_in_source]
    assert not leaked, f"lines of the solution or hidden tests appear in the release: {leaked[:3]}"


@pytest.mark.nbgrader
@pytest.mark.parametrize("name", NAMES)
def test_release_is_current(name):
    """Regenerating assignments/ from solutions/ changes nothing."""
    assert grading.release_is_current(name, ROOT) == []


def _graded_cells(name):
    nb = json.loads(next((ROOT / "solutions" / name).glob("*.ipynb")).read_text(encoding="utf-8"))
    return nb["cells"]


@pytest.mark.parametrize("name", NAMES)
def test_test_cells_start_with_a_comment_and_display_nothing(name):
    """Every graded test cell opens with a comment line (never a docstring: nbgrader grades on outputs)
    and has no bare top-level expression other than a call."""
    import ast
    for cell in _graded_cells(name):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        src = "".join(cell["source"])
        assert src.lstrip().startswith("#"), f"{name}/{meta['grade_id']}: the first line must be a comment"
        code = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
        for node in ast.parse(code).body:
            assert not (isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)), \
                f"{name}/{meta['grade_id']} line {node.lineno}: a bare expression displays a value"


@pytest.mark.parametrize("name", NAMES)
def test_stated_points_match_the_test_cells(name):
    """The title states the total, each "## Part X (N points)" heading the points of its test cells."""
    import re
    cells = _graded_cells(name)
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    title = re.search(r"^# .*\((\d+) points?\)", text, re.M)
    pts = {}
    part = None
    for c in cells:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            m = re.search(r"^## Part (\w+)\b.*?\((\d+) points?\)", src, re.M)
            if m:
                part = m.group(1)
                pts.setdefault(part, [int(m.group(2)), 0])
        meta = c.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and part is not None:
            pts[part][1] += meta.get("points", 0)
    total = sum(c.get("metadata", {}).get("nbgrader", {}).get("points", 0) for c in cells
                if c.get("metadata", {}).get("nbgrader", {}).get("grade"))
    assert title and int(title.group(1)) == total, f"{name}: the title must state the total, {total} points"
    for p, (stated, got) in pts.items():
        assert stated == got, f"{name}: Part {p} states {stated} points, its test cells give {got}"


#: Claims of the grader before it ran students' code in a sandbox: no release may still make them.
_STALE = ("checks what your functions reach", "assert_own_code", "check_kernel", "score 0 for that part",
          "makes every test below it score 0", "do not use exec")


@pytest.mark.parametrize("name", NAMES)
def test_release_states_the_rules_the_grader_enforces(name):
    """The release carries the "Rules the grader enforces" paragraph of the sandboxed grader (answer
    cells in a sandbox, the library's reference code unavailable, limits) and none of the old rules."""
    release = next((ROOT / "assignments" / name).glob("*.ipynb"))
    cells = json.loads(release.read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    rules = [" ".join(p.split()) for p in text.split("\n\n") if "Rules the grader enforces" in " ".join(p.split())]
    assert len(rules) == 1, f"{name}: one paragraph starting **Rules the grader enforces.**"
    flat = rules[0]
    for must in ("sandbox", "NotImplementedError", "300 s"):
        assert must in flat, f"{name}: the rules paragraph should say {must!r}"
    stale = [s for s in _STALE if s in " ".join(text.split())]
    assert not stale, f"{name}: the release still states rules of the old grader: {stale}"
