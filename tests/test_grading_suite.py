"""The grading regression suite: synthetic submissions of every graded assignment (the solution,
the blank release, cheats of each class, plausible bugs, correct-but-different solutions), autograded
end to end with nbgrader, each with the score it deserves.

Cases live in ``tests/grading_cases/<assignment>.py`` (see ``tests/grading_cases/__init__.py``);
every ``a*.py`` there is discovered. All cases of one assignment are graded in ONE scratch course and
one ``nbgrader autograde`` call; the assignments are separate tests (``pytest -n 2`` runs them side
by side). Each batch also holds a broken notebook and a renamed one: they score 0, are reported, and
do not stop the batch.
"""
from __future__ import annotations

import importlib
import sys
import json
import tempfile
from pathlib import Path

import pytest

from course_lib import grading

ROOT = Path(__file__).resolve().parent.parent
CASE_FILES = sorted((ROOT / "tests" / "grading_cases").glob("a*.py"))


def _cases(path: Path):
    """``CASES`` of one case file, imported as ``grading_cases.<name>`` (relative imports work)."""
    if str(path.parent.parent) not in sys.path:
        sys.path.insert(0, str(path.parent.parent))
    return importlib.import_module(f"grading_cases.{path.stem}").CASES


def _notebook(assignment: str, base: str) -> Path:
    folder = "solutions" if base == "solution" else "assignments"
    return next((ROOT / folder / assignment).glob("*.ipynb"))


def _answer_ids(nb: dict) -> set[str]:
    return {c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def build_submission(assignment: str, case, out: Path) -> Path:
    """A student's submission folder for ``case``: the release's files, the edited notebook, and the
    case's extra files."""
    nb_path = _notebook(assignment, case.base)
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    missing = set(case.edits) - _answer_ids(nb)
    if missing:
        raise KeyError(f"{assignment} / {case.name}: no answer cell with grade_id {sorted(missing)}")
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in case.edits:
            cell["source"] = case.edits[gid]
            cell["outputs"], cell["execution_count"] = [], None
    release = ROOT / "assignments" / assignment
    for f in release.rglob("*"):
        if f.is_file() and f.suffix != ".ipynb":
            (out / f.relative_to(release)).parent.mkdir(parents=True, exist_ok=True)
            (out / f.relative_to(release)).write_bytes(f.read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    (out / nb_path.name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    for name, text in case.files.items():
        (out / name).write_text(text, encoding="utf-8")
    return out


def grade_cases(assignment: str, cases, extra: dict[str, Path] | None = None):
    """Autograde every case of ``assignment`` (and ``extra`` raw submissions) in one batch."""
    with tempfile.TemporaryDirectory(prefix=f"suite-{assignment}-") as d:
        subs = {}
        for i, case in enumerate(cases):
            subs[f"case{i:02d}"] = build_submission(assignment, case, Path(d) / f"case{i:02d}")
        subs.update(extra or {})
        return grading.autograde(assignment, subs, ROOT)


def _broken_and_renamed(assignment: str, d: Path) -> dict[str, Path]:
    nb_name = _notebook(assignment, "release").name
    broken, renamed = d / "broken", d / "renamed"
    for folder in (broken, renamed):
        folder.mkdir(parents=True)
    (broken / nb_name).write_text('{"cells": [ this is not json', encoding="utf-8")
    (renamed / ("my_" + nb_name)).write_bytes(_notebook(assignment, "solution").read_bytes())
    return {"zz-broken": broken, "zz-renamed": renamed}


def check(case, rep) -> list[str]:
    """What is wrong with the report ``rep`` of ``case`` (empty: as expected)."""
    errs = []
    got, full = rep.score, rep.max_score
    if case.score is not None and abs(got - case.score) > 1e-9:
        errs.append(f"score {got}/{full}, expected {case.score}")
    if case.at_most is not None and got > case.at_most + 1e-9:
        errs.append(f"score {got}/{full}, expected at most {case.at_most}")
    if case.score is None and case.at_most is None and abs(got - full) > 1e-9:
        errs.append(f"score {got}/{full}, expected full marks")
    for gid, pts in case.parts.items():
        if gid not in rep.parts:
            errs.append(f"no graded cell {gid!r}")
        elif abs(rep.parts[gid] - pts) > 1e-9:
            errs.append(f"{gid}: {rep.parts[gid]} points, expected {pts}")
    return errs


def test_case_files_cover_the_required_kinds():
    """Every assignment has a case file with the solution (full), the blank release (0) and at least
    six more submissions, and every edit names an answer cell."""
    names = grading.assignments(ROOT)
    assert {p.stem for p in CASE_FILES} >= set(names), \
        f"assignments without grading cases: {sorted(set(names) - {p.stem for p in CASE_FILES})}"
    for path in CASE_FILES:
        cases = _cases(path)
        assert any(c.base == "solution" and not c.edits and c.score is None and c.at_most is None for c in cases), path
        assert any(c.base == "release" and not c.edits and c.score == 0 for c in cases), path
        assert len(cases) >= 8, f"{path.name}: solution, blank, four cheats, a bug and a different solution"
        for c in cases:
            ids = _answer_ids(json.loads(_notebook(path.stem, c.base).read_text(encoding="utf-8")))
            assert set(c.edits) <= ids, f"{path.name} / {c.name}: {sorted(set(c.edits) - ids)} are not answer cells"


@pytest.mark.nbgrader
@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_every_submission_gets_the_score_it_deserves(path, tmp_path):
    """All cases of one assignment, autograded in one batch, score what they deserve; a broken and a
    renamed notebook in the same batch score 0, are reported, and do not stop the others."""
    cases = _cases(path)
    reports = grade_cases(path.stem, cases, _broken_and_renamed(path.stem, tmp_path))
    problems = []
    for i, case in enumerate(cases):
        rep = reports[f"case{i:02d}"]
        for e in check(case, rep):
            problems.append(f"{case.name}: {e} (parts {rep.parts}; {rep.problem})")
    for student in ("zz-broken", "zz-renamed"):
        rep = reports[student]
        if rep.score != 0 or not rep.problem:
            problems.append(f"{student}: {rep.score}/{rep.max_score}, problem {rep.problem!r}")
    assert not problems, "\n".join(problems)
