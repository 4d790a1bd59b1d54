"""The grading regression suite: synthetic submissions of every graded assignment (the solution,
the blank release, cheats of each class, plausible bugs, correct-but-different solutions), autograded
end to end with nbgrader, each with the score it deserves.

Cases live in ``tests/grading_cases/<assignment>.py`` (see ``tests/grading_cases/__init__.py``);
every ``a*.py`` there is discovered. All cases of one assignment are graded in ONE scratch course and
one ``nbgrader autograde`` call; the assignments are separate tests (``pytest -n 2`` runs them side
by side). Each batch also holds a broken notebook and a renamed one: they score 0, are reported, and
do not stop the batch.

``tests/grading_cases/cheats.py`` generates one cheat of every kind for every assignment: they are
graded in a batch of their own per assignment, and the denial-of-service ones (an infinite loop, a fork
bomb) in another with a short time limit. A class of 30 with hostile students in it goes through
``batch.grade`` with two workers.
"""
from __future__ import annotations

import csv
import html
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path

import pytest

from course_lib import grading
from course_lib.grading import cells as C

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grading_cases import cheats  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASE_FILES = sorted((ROOT / "tests" / "grading_cases").glob("a*.py"))
#: The capstone's cases are graded as a class by the TAs' command, leaderboard included (the last test).
CHALLENGE = "a08_challenge"


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


def grade_cases(assignment: str, cases, extra: dict[str, Path] | None = None, timeout: float | None = None,
                workers: int = 1):
    """Autograde every case of ``assignment`` (and ``extra`` raw submissions) in one batch
    (``timeout``: seconds per cell, default the grader's)."""
    with tempfile.TemporaryDirectory(prefix=f"suite-{assignment}-") as d:
        subs = {}
        for i, case in enumerate(cases):
            subs[f"case{i:02d}"] = build_submission(assignment, case, Path(d) / f"case{i:02d}")
        subs.update(extra or {})
        return grading.autograde(assignment, subs, ROOT, workers=workers, timeout=timeout)


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
    if case.base in ("solution", "release") and not case.edits and rep.status != "ok":
        errs.append(f"the untouched {case.base} is flagged {rep.status}: {rep.note}")
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
@pytest.mark.parametrize("path", [p for p in CASE_FILES if p.stem != CHALLENGE],
                         ids=[p.stem for p in CASE_FILES if p.stem != CHALLENGE])
def test_every_submission_gets_the_score_it_deserves(path, tmp_path):
    """All cases of one assignment, autograded in one batch, score what they deserve; in the same batch a
    broken notebook scores 0 and is reported, a renamed solution is graded in full and flagged
    "renamed", and neither stops the others."""
    cases = _cases(path)
    reports = grade_cases(path.stem, cases, _broken_and_renamed(path.stem, tmp_path))
    problems = []
    for i, case in enumerate(cases):
        rep = reports[f"case{i:02d}"]
        for e in check(case, rep):
            problems.append(f"{case.name}: {e} (parts {rep.parts}; {rep.problem})")
    broken, renamed = reports["zz-broken"], reports["zz-renamed"]
    if broken.score != 0 or not broken.problem:
        problems.append(f"zz-broken: {broken.score}/{broken.max_score}, problem {broken.problem!r}")
    if renamed.score != renamed.max_score or "renamed" not in renamed.flags:
        problems.append(f"zz-renamed: {renamed.score}/{renamed.max_score}, flags {renamed.flags}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------- cheats of every kind, on every assignment

ASSIGNMENTS = [p.stem for p in CASE_FILES]
#: Denial of service is the sandbox's business, not an assignment's: two assignments (a light and a heavy
#: set-up) keep the suite's time in bounds; the class run below adds a killer, a fork bomb and a loop on a00.
DOS_ASSIGNMENTS = ["a00_metrics", "a03_legonet"]


def _answer_cells(assignment: str) -> dict[str, str]:
    nb = json.loads(_notebook(assignment, "solution").read_text(encoding="utf-8"))
    return {C.grade_id(c): C.source(c) for c in nb["cells"] if C.grade_id(c) and C.kind(c) == "answer"}


def test_every_assignment_has_a_cheat_spec_that_matches_its_notebook():
    """The spec table of ``cheats.py`` names real answer cells, functions, values and library references
    (forbidden in the notebook), and its cheated part has graded parts before it."""
    assert set(cheats.SPECS) >= set(grading.assignments(ROOT))
    for a, spec in cheats.SPECS.items():
        answers = _answer_cells(a)
        for gid in (spec.answer, spec.values, spec.ref_answer):
            assert gid in answers, f"{a}: {gid} is not an answer cell"
            assert cheats.tests_of(a, gid), f"{a}: no test cell grades {gid}"
        assert f"def {spec.function}(" in answers[spec.answer], f"{a}: {spec.answer} does not define {spec.function}"
        forbidden = C.load(_notebook(a, "solution"))["metadata"]["course"]["forbidden"]
        design_task = not forbidden     # a08: one function, nothing forbidden, no earlier part to keep
        assert design_task or cheats.tests_before(a, spec.answer), f"{a}: {spec.answer} is the first graded part"
        for name in spec.names:
            assert re.search(rf"^\s*{name}\s*=", answers[spec.values], re.M), f"{a}: {spec.values} does not bind {name}"
        mod = importlib.import_module(f"course_lib.{spec.ref_module}")
        assert callable(getattr(mod, spec.ref_name)), f"{a}: no course_lib.{spec.ref_module}.{spec.ref_name}"
        full = f"course_lib.{spec.ref_module}.{spec.ref_name}"
        assert design_task or any(full == f or full.startswith(f + ".") for f in forbidden), f"{a}: {full} is not forbidden"


def _problems(cases, reports) -> list[str]:
    out = []
    for i, case in enumerate(cases):
        rep = reports[f"case{i:02d}"]
        for e in check(case, rep):
            out.append(f"{case.name}: {e} (parts {rep.parts}; {rep.status}: {rep.problem})")
    return out


@pytest.mark.nbgrader
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_cheats_of_every_kind_get_the_score_they_deserve(assignment):
    """One cheat of every kind (``cheats.GENERATORS``) on this assignment, autograded in one batch: the
    cheated part scores 0, the parts before it keep their points, the total is at most what the honest
    parts earn (a huge output: full marks; killing the grader: only the earlier parts)."""
    cases = [c for c in cheats.cases(assignment) if c.timeout is None]
    problems = _problems(cases, grade_cases(assignment, cases))
    assert not problems, "\n".join(problems)


@pytest.mark.nbgrader
@pytest.mark.parametrize("assignment", DOS_ASSIGNMENTS)
def test_denial_of_service_ends_at_the_time_limit_and_earlier_parts_keep_their_points(assignment):
    """An infinite loop and a fork bomb (where processes are capped) in one part, graded with a short
    time limit: they end at the limit, the parts before keep their points, the rest score 0 (on
    ``DOS_ASSIGNMENTS``)."""
    cases = [c for c in cheats.cases(assignment) if c.timeout is not None]
    if not cases:
        pytest.skip("no denial-of-service case can run here")
    timeout = max(c.timeout for c in cases)
    problems = _problems(cases, grade_cases(assignment, cases, timeout=timeout, workers=2))
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------- a class with hostile students

def _hidden_lines(assignment: str) -> list[str]:
    """Lines of the hidden tests that appear nowhere else (not in the release, not in any visible part of
    the solution notebook, whose answers a student may well have written): what feedback must not show."""
    src = C.load(_notebook(assignment, "solution"))
    visible = " ".join(_notebook(assignment, "release").read_text(encoding="utf-8").split())
    visible += " ".join(" ".join(C.split_hidden(C.source(c))[0].split()) for c in src["cells"])
    out = []
    for c in src["cells"]:
        for line in C.split_hidden(C.source(c))[1].splitlines():
            line = " ".join(line.split())
            if len(line) >= 12 and not line.startswith("#") and line not in visible:
                out.append(line)
    return out


@pytest.mark.nbgrader
def test_a_class_of_30_with_hostile_students_is_graded_right(tmp_path):
    """30 submissions of a00_metrics through ``batch.grade`` with 2 workers and a short time limit:
    solutions, blanks, a plausible bug, different correct answers, and hostile students (a killer of
    its parent, a fork bomb, an infinite loop, a huge output, a memory hog, the answer key read from
    disk, always-equal values, the forbidden reference by getattr). The run completes; everyone gets
    the score they deserve; both CSVs have a row per student; no feedback shows a hidden test."""
    from course_lib.grading import batch
    a = "a00_metrics"
    own = {c.name: c for c in _cases(ROOT / "tests" / "grading_cases" / f"{a}.py")}
    honest = [own["solution"]] * 10 + [own["blank"]] * 6
    honest += [c for n, c in own.items() if n.startswith(("bug", "different"))] * 3
    by_kind = {g.__name__: g for g in cheats.GENERATORS}
    spec = cheats.SPECS[a]
    hostile = []
    for kind in ("kill_the_grader", "fork_bomb", "infinite_loop", "huge_output", "memory_hog",
                 "answer_key_from_disk", "always_equal_values", "forbidden_via_getattr"):
        made = by_kind[kind](spec)
        hostile.extend(made if isinstance(made, list) else [made])
    cases = (honest + hostile)[:30]
    cases += [own["solution"]] * (30 - len(cases))
    subs = tmp_path / "submissions"
    names = {}
    for i, case in enumerate(cases):
        student = f"s{i:02d}"
        names[student] = case
        build_submission(a, case, subs / student)
    out = tmp_path / "out"
    graded = batch.grade(a, subs, out, workers=2, timeout=cheats.DOS_TIMEOUT_S, root=ROOT)

    problems = []
    reports = {r.student: r for r in graded}
    assert set(reports) == set(names), sorted(set(names) ^ set(reports))
    for student, case in names.items():
        for e in check(case, reports[student]):
            problems.append(f"{student} ({case.name}): {e} ({reports[student].status}: {reports[student].problem})")
    for f in ("grades.csv", "grades_lms.csv"):
        with open(out / f, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
        if sorted(r[0] for r in rows) != sorted(names):
            problems.append(f"{f}: rows for {sorted(r[0] for r in rows)}")
    hidden = _hidden_lines(a)
    assert hidden, "a00_metrics has hidden tests to look for"
    for student in names:
        fb = out / "feedback" / f"{student}.html"
        if not fb.exists():
            problems.append(f"{student}: no feedback file")
            continue
        raw = fb.read_text(encoding="utf-8")
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw)).split())
        if "BEGIN HIDDEN TESTS" in raw or "BEGIN HIDDEN TESTS" in text:
            problems.append(f"{student}: the feedback shows a hidden-test marker")
        shown = [line for line in hidden if line in text]
        if shown:
            problems.append(f"{student}: the feedback shows hidden test code {shown[:2]}")
        if len(raw) > 2_000_000:
            problems.append(f"{student}: feedback of {len(raw)} bytes")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------- the capstone: a class run and its leaderboard

def _slug(i: int, name: str) -> str:
    return f"s{i:02d}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32]


@pytest.mark.nbgrader
def test_the_challenge_class_is_graded_by_the_tas_command_and_ranked_on_a_leaderboard(tmp_path):
    """Every a08 case (the baselines as submissions, do nothing, a random net, a budget-breaker, a crash on
    some originals, a reach for the grading split, correct designs, a bug) graded as one class by
    ``./course.sh grade a08_challenge`` with two workers: each gets the score it deserves, and
    ``leaderboard.csv`` has a row per student and per baseline, ranked by final score, the budget-breaker
    refused (no rank), the random net and the collapsed bug at the bottom, do nothing scored exactly as
    the do-nothing baseline, the solution above every baseline but Retrain."""
    import subprocess
    import types
    from course_lib.grading import sandbox

    path = ROOT / "tests" / "grading_cases" / f"{CHALLENGE}.py"
    if not path.exists():
        pytest.skip("no a08 cases")
    cases = _cases(path)
    subs, out = tmp_path / "subs", tmp_path / "out"
    by_id = {}
    for i, case in enumerate(cases):
        sid = _slug(i, case.name)
        build_submission(CHALLENGE, case, subs / sid)
        by_id[sid] = case
    env = dict(__import__("os").environ, COURSE_VENV=sys.prefix, COURSE_NO_SETUP="1", COURSE_FAST="1", CI="true")
    env.pop("COURSE_SANDBOX", None)
    unsafe = ["--no-sandbox"] if sandbox.mode() == "none" else []
    proc = subprocess.run(["bash", str(ROOT / "course.sh"), "grade", CHALLENGE, str(subs), "--out", str(out),
                           "--workers", "2", *unsafe], env=env, capture_output=True, text=True, timeout=3000)
    print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Leaderboard (grading split" in proc.stdout
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        grades = {r["student"]: r for r in csv.DictReader(fh)}
    problems = []
    for sid, case in by_id.items():
        row = grades[sid]
        parts = {k: float(v) for k, v in row.items() if k not in ("student", "total", "max", "status", "note")}
        rep = types.SimpleNamespace(score=float(row["total"]), max_score=float(row["max"]), status=row["status"],
                                    note=row["note"], parts=parts, problem=row["note"])
        problems += [f"{case.name}: {e} (parts {parts}; {row['status']}: {row['note']})" for e in check(case, rep)]
    assert not problems, "\n".join(problems)

    with open(out / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        board = list(csv.DictReader(fh))
    from course_lib import challenge
    students = {r["name"]: r for r in board if r["kind"] == "student"}
    base = {r["name"]: r for r in board if r["kind"] == "baseline"}
    assert set(students) == set(by_id) and set(base) == set(challenge.BASELINES)
    ranked = [r for r in board if r["rank"]]
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    finals = [float(r["final score"]) for r in ranked]
    assert finals == sorted(finals, reverse=True), "ranked by final score"
    assert all(float(r["seconds"]) > 0 for r in students.values() if r["rank"]), "seconds per submission"
    kind = lambda word: [sid for sid, c in by_id.items() if word in c.name.lower()]  # noqa: E731
    for sid in kind("budget"):
        assert students[sid]["status"] == "over budget" and students[sid]["rank"] == "", "refused: no rank"
    bottom = {r["name"] for r in ranked[-4:]}
    for sid in kind("random net") + kind("same seed"):
        assert sid in bottom, f"{sid} should be at the bottom of the board"
    for sid in kind("do nothing"):
        assert students[sid]["final score"] == base["do nothing"]["final score"]
    sol = students[next(sid for sid, c in by_id.items() if c.name == "solution")]
    assert all(float(sol["final score"]) > float(b["final score"]) for n, b in base.items() if n != "Retrain")
    assert (out / "leaderboard.png").stat().st_size > 1000 and (out / "feedback" / "leaderboard.html").exists()
