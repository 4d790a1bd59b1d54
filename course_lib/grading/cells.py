"""One home for reading a graded notebook's cells: nbgrader metadata, the kind of each cell, the
visible and hidden parts of a test cell, the points of each part."""
from __future__ import annotations

import json
import re
from pathlib import Path

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_PART = re.compile(r"^#{1,3}\s+(Part\s+[^\s(]+)", re.M)


def meta(cell) -> dict:
    """The cell's nbgrader metadata (``{}`` when it has none)."""
    return (cell.get("metadata", {}) or {}).get("nbgrader", {}) or {}


def source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else str(s)


def kind(cell) -> str:
    """``"markdown"``, ``"test"`` (autograded tests), ``"answer"`` (a student writes it; also
    cells a student added), ``"given"`` (the instructor's locked code) or ``"manual"`` (a
    free-text answer graded by hand)."""
    m = meta(cell)
    if cell.get("cell_type") != "code":
        return "manual" if m.get("solution") and m.get("grade") else "markdown"
    if m.get("grade") and not m.get("solution"):
        return "test"
    if m.get("solution") or not m:
        return "answer"
    return "given"


def split_hidden(text: str) -> tuple[str, str]:
    """(visible, hidden) code of a test cell; hidden is ``""`` when there are no hidden tests."""
    if HIDDEN_BEGIN not in text:
        return text, ""
    before, _, rest = text.partition(HIDDEN_BEGIN)
    hidden, _, after = rest.partition(HIDDEN_END)
    return before + after, hidden


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def parts(nb: dict) -> dict[str, float]:
    """Max points of every graded cell, by grade_id, in notebook order."""
    return {meta(c)["grade_id"]: float(meta(c).get("points", 0)) for c in nb["cells"] if meta(c).get("grade")}


def part_names(nb: dict) -> dict[str, str]:
    """The "Part X" heading above every graded cell, by grade_id (for tables and LMS columns)."""
    names, current = {}, ""
    for c in nb["cells"]:
        if c.get("cell_type") == "markdown":
            m = _PART.search(source(c))
            current = m.group(1) if m else current
        if meta(c).get("grade"):
            names[meta(c)["grade_id"]] = current or meta(c)["grade_id"]
    return names


def grade_id(cell) -> str | None:
    return meta(cell).get("grade_id")


def names_read(text: str) -> set[str]:
    """Every name a cell mentions (a superset of what it reads; magics ignored)."""
    import ast
    try:
        tree = ast.parse(strip_magics(text))
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def strip_magics(text: str) -> str:
    """Given cells may hold IPython line magics (``%matplotlib inline``): no-ops on this side."""
    return "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in text.splitlines())


def plan(source_nb: dict, submission_nb: dict) -> list[dict]:
    """The cells to run, in order: the source's given and test cells (whatever the submission holds in
    their place), the submission's answer cells (one it lacks runs empty) and the code cells the
    student added, each after the known cell it follows in the submission."""
    src = [c for c in source_nb["cells"] if c.get("cell_type") == "code"]
    known = {grade_id(c): kind(c) for c in src if grade_id(c)}
    answers, extras, last = {}, {}, None
    for cell in submission_nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        gid = grade_id(cell)
        if gid in known:
            if known[gid] == "answer":
                answers.setdefault(gid, cell)
            last = gid
        elif not meta(cell).get("grade"):
            extras.setdefault(last, []).append({**cell, "metadata": {}})
    out = list(extras.get(None, []))
    for s in src:
        gid = grade_id(s)
        out.append(answers.get(gid, {**s, "source": ""}) if kind(s) == "answer" else s)
        out.extend(extras.get(gid, []))
    return out
