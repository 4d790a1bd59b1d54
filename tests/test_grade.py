"""`./course.sh grade NAME SUBMISSIONS`, the TAs' command, end to end on a synthetic class.

One class is graded once (module fixture, two workers, a small timeout, the sandbox on) through
`./course.sh grade`: alice hands in the solution, bob the blank release, carol a half-done copy (one
part left as the stub, handed in after the due date), dave a file that is not JSON, erin a zip holding
her notebook renamed, in a subfolder, with nbgrader's timestamp.txt, frank a PDF, abby a notebook whose
Part D function loops forever (first in line, so one worker is stuck on her while the other grades the
rest), ivan a damaged zip, judy the notebook of another assignment, kim the solution with one answer cell
copy-pasted (two cells with the same nbgrader grade_id, a common accident); harry is on the roster and
hands in nothing.
"""
from __future__ import annotations

import copy
import csv
import html
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from course_lib.grading import cells as C
from course_lib.grading import collect, sandbox

ROOT = Path(__file__).resolve().parent.parent
COURSE_SH = ROOT / "course.sh"
ASSIGNMENT = "a00_metrics"      # the quickest graded notebook
OTHER = "a01_definitions"        # judy hands in this one's release
STUBBED, STUB_TEST = "mia", "test_mia"        # carol's part left as the stub: no later test uses it
LOOPED, LOOP_TEST = "mia", "test_mia"         # abby's infinite loop: Part D, after three parts that pass
TIMEOUT_S = 45                   # per cell: well above a00_metrics' slowest cell on a busy 2-core machine
ROSTER = ["abby", "alice", "bob", "carol", "dave", "erin", "frank", "harry", "ivan", "judy", "kim"]
GRADED = ["abby", "alice", "bob", "carol", "erin"]     # a notebook of this assignment was executed
STATUS = {"abby": "timed out", "alice": "ok", "bob": "ok", "carol": "late", "dave": "corrupt", "erin": "renamed",
          "frank": "not a notebook", "harry": "missing", "ivan": "corrupt", "judy": "wrong assignment"}


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update(COURSE_VENV=sys.prefix, COURSE_NO_SETUP="1", COURSE_FAST="1", CI="true")
    env.pop("COURSE_SANDBOX", None)
    env.update(extra)
    return env


def _nb(folder: str, name: str = ASSIGNMENT) -> Path:
    return ROOT / folder / name / f"{name}.ipynb"


def _edited(nb_text: str, grade_id: str, source: str) -> str:
    """The notebook with the cell ``grade_id``'s source replaced (outputs cleared)."""
    nb = json.loads(nb_text)
    cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id]
    assert cells, f"{ASSIGNMENT} has no cell {grade_id}"
    for c in cells:
        c["source"], c["outputs"] = source, []
    return json.dumps(nb, indent=1)


def _stub(grade_id: str) -> str:
    return next(C.source(c) for c in C.load(_nb("assignments"))["cells"] if C.grade_id(c) == grade_id)


def make_class(folder: Path) -> None:
    """The synthetic class's submissions folder (see the module's doc)."""
    sol = _nb("solutions").read_text(encoding="utf-8")
    blank = _nb("assignments").read_text(encoding="utf-8")
    folder.mkdir(parents=True)
    (folder / "alice.ipynb").write_text(sol, encoding="utf-8")
    (folder / "bob.ipynb").write_text(blank, encoding="utf-8")
    (folder / "carol.ipynb").write_text(_edited(sol, STUBBED, _stub(STUBBED)), encoding="utf-8")
    (folder / "dave.ipynb").write_text("this is not a notebook {", encoding="utf-8")
    with zipfile.ZipFile(folder / "erin.zip", "w") as z:
        z.writestr(f"work/my_{ASSIGNMENT}.ipynb", sol)
        z.writestr("work/timestamp.txt", "2020-01-01 10:00:00 UTC")
    (folder / "frank.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    loop = "def mia_efficacy(conf_retain, conf_test, conf_forget, seed=0):\n    while True:\n        pass\n"
    (folder / "abby.ipynb").write_text(_edited(sol, LOOPED, loop), encoding="utf-8")
    (folder / "ivan.zip").write_bytes(b"PK\x03\x04 a truncated zip")
    (folder / "judy.ipynb").write_text(_nb("assignments", OTHER).read_text(encoding="utf-8"), encoding="utf-8")
    nb = json.loads(sol)
    i = next(k for k, c in enumerate(nb["cells"]) if C.grade_id(c) == "accuracy")
    nb["cells"].insert(i + 1, copy.deepcopy(nb["cells"][i]))
    (folder / "kim.ipynb").write_text(json.dumps(nb, indent=1), encoding="utf-8")
    ten_days_ago = time.time() - 10 * 86400
    for f in folder.iterdir():
        if f.name != "carol.ipynb":            # carol's file is new: late for a due date 5 days ago
            os.utime(f, (ten_days_ago, ten_days_ago))


def _unsafe() -> list[str]:
    """Where bubblewrap cannot run (a CI container without user namespaces) grade refuses: the class is
    then graded with --no-sandbox, to test everything but the isolation (the sandbox's own tests cover it)."""
    return ["--no-sandbox"] if sandbox.mode() == "none" else []


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the synthetic class once per test run: (process, output folder, grades.csv rows by student).

    Under ``pytest -n 2`` the tests of this module may land on both workers; the class is graded once,
    in a folder the workers share, behind a file lock (the other worker waits and reads the result)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's base is <run>/popen-gwK: their parent is this run's, shared by the workers
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = shared / "grade-class"
    with FileLock(str(shared / "grade-class.lock")):
        if not (d / "result.json").exists():
            make_class(d / "subs")
            due = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() - 5 * 86400))
            t0 = time.perf_counter()
            proc = subprocess.run(["bash", str(COURSE_SH), "grade", ASSIGNMENT, str(d / "subs"), "--out",
                                   str(d / "out"), "--workers", "2", "--timeout", str(TIMEOUT_S), "--due", due,
                                   "--students", ",".join(ROSTER), *_unsafe()],
                                  env=_env(), capture_output=True, text=True, timeout=1200)
            (d / "result.json").write_text(json.dumps({"args": proc.args, "returncode": proc.returncode,
                                                       "stdout": proc.stdout, "stderr": proc.stderr,
                                                       "seconds": time.perf_counter() - t0}), encoding="utf-8")
    res = json.loads((d / "result.json").read_text(encoding="utf-8"))
    proc = subprocess.CompletedProcess(res["args"], res["returncode"], res["stdout"], res["stderr"])
    print(proc.stdout, proc.stderr[-3000:], f"{res['seconds']:.0f} s", sep="\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(d / "out" / "grades.csv", newline="", encoding="utf-8") as fh:
        rows = {r["student"]: r for r in csv.DictReader(fh)}
    return proc, d / "out", rows


def _parts() -> dict[str, float]:
    return C.parts(C.load(_nb("solutions")))


@pytest.mark.nbgrader
def test_every_student_gets_the_right_status_and_score(graded):
    """Solution full marks, blank 0, half-done exactly max minus the stubbed part, the renamed notebook
    in a zip full marks; every problem has its status and a note, and scores 0 when nothing ran."""
    _, _, rows = graded
    parts = _parts()
    full = sum(parts.values())
    assert sorted(rows) == sorted(ROSTER)
    assert {s: r["status"] for s, r in rows.items() if s in STATUS} == STATUS
    # kim's duplicated cell: graded (the first copy counts) or reported as an error, never a crash
    assert rows["kim"]["status"] in ("ok", "error"), rows["kim"]
    assert rows["kim"]["status"] == "error" or float(rows["kim"]["total"]) == full
    assert float(rows["alice"]["total"]) == full == float(rows["alice"]["max"])
    assert all(float(rows["alice"][g]) == p for g, p in parts.items())
    assert float(rows["bob"]["total"]) == 0 and all(float(rows["bob"][g]) == 0 for g in parts)
    assert float(rows["carol"]["total"]) == full - parts[STUB_TEST] and float(rows["carol"][STUB_TEST]) == 0
    assert "late by" in rows["carol"]["note"]
    assert float(rows["erin"]["total"]) == full and f"my_{ASSIGNMENT}.ipynb" in rows["erin"]["note"]
    assert "JSON" in rows["dave"]["note"] and "zip" in rows["ivan"]["note"]
    assert "frank.pdf" in rows["frank"]["note"]
    assert OTHER in rows["judy"]["note"]
    for s in ("dave", "frank", "harry", "ivan", "judy"):
        assert float(rows[s]["total"]) == 0


@pytest.mark.nbgrader
def test_a_student_stopped_by_the_time_limit_keeps_the_earlier_parts(graded):
    """abby's Part D loops forever: she is timed out, keeps the points of Parts A to C, and the other
    worker graded everyone else meanwhile (two workers, abby first in line)."""
    _, _, rows = graded
    parts = _parts()
    order = list(parts)
    before = order[:order.index(LOOP_TEST)]
    assert before, "the loop must come after a graded part"
    assert rows["abby"]["status"] == "timed out" and str(TIMEOUT_S) in rows["abby"]["note"]
    assert all(float(rows["abby"][g]) == parts[g] for g in before), rows["abby"]
    assert all(float(rows["abby"][g]) == 0 for g in order[order.index(LOOP_TEST):])
    for s in GRADED:
        if s != "abby":
            assert rows[s]["status"] in ("ok", "late", "renamed"), rows[s]


@pytest.mark.nbgrader
def test_the_table_and_the_command_output(graded):
    """One table line per student with its status; the files and the measured rate are printed; no
    traceback anywhere, whatever the students handed in."""
    proc, out, _ = graded
    lines = proc.stdout.splitlines()
    for s, st in STATUS.items():
        assert any(ln.startswith(s + " ") and st in re.split(r"\s{2,}", ln) for ln in lines), (s, st)
    for f in ("grades.csv", "grades_lms.csv", "similarity.csv", "feedback"):
        assert str(out / f) in proc.stdout, f
    assert re.search(r"6 students ran in \d+ s = \d+ students/hour with 2 workers", proc.stdout), proc.stdout
    assert f"sandbox: {sandbox.mode()}" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.nbgrader
def test_csvs_one_row_per_student_a_column_per_part(graded):
    """grades.csv: a column per graded cell; grades_lms.csv: Student ID, Total (N pts), one column per
    part named by its Part heading, Status, with the same totals."""
    _, out, rows = graded
    parts = _parts()
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["student", "total", "max", *parts, "status", "note"]
    with open(out / "grades_lms.csv", newline="", encoding="utf-8") as fh:
        lms = list(csv.reader(fh))
    names = C.part_names(C.load(_nb("solutions")))
    assert lms[0] == ["Student ID", f"Total ({sum(parts.values()):g} pts)",
                      *(f"{names[g]} ({p:g} pts)" for g, p in parts.items()), "Status"]
    assert lms[0][2] == "Part A (2 pts)"
    by_id = {r[0]: r for r in lms[1:]}
    assert sorted(by_id) == sorted(ROSTER)
    for s, r in rows.items():
        assert float(by_id[s][1]) == float(r["total"]) and by_id[s][-1] == r["status"]


@pytest.mark.nbgrader
def test_feedback_for_every_graded_student_without_hidden_tests(graded):
    """Every student whose notebook ran has feedback (abby, who timed out, too); none shows a hidden
    test, neither its markers nor any of its lines."""
    _, out, _ = graded
    have = {p.stem for p in (out / "feedback").iterdir()}
    assert set(GRADED) <= have <= set(GRADED) | {"kim"}, have
    cells = C.load(_nb("solutions"))["cells"]
    hidden, shown = set(), set()           # lines only hidden tests hold; lines a student may see
    for c in cells:
        visible, secret = C.split_hidden(C.source(c)) if C.kind(c) == "test" else (C.source(c), "")
        hidden |= {ln.strip() for ln in secret.splitlines() if len(ln.strip()) > 20}
        shown |= {ln.strip() for ln in visible.splitlines()}
    hidden -= shown
    assert hidden, f"{ASSIGNMENT} should have hidden tests"
    for s in sorted(have):
        raw = (out / "feedback" / f"{s}.html").read_text(encoding="utf-8")
        assert ASSIGNMENT in raw and "<html" in raw.lower()
        lines = {ln.strip() for ln in html.unescape(re.sub(r"<[^>]+>", "", raw)).splitlines()}
        assert "BEGIN HIDDEN TESTS" not in html.unescape(raw)
        assert not hidden & lines, f"{s}'s feedback shows hidden test lines: {sorted(hidden & lines)[:3]}"


@pytest.mark.nbgrader
def test_similarity_report_flags_a_copy_of_the_solution(graded):
    """alice handed in the instructor's solution: flagged for a person to read (not zeroed); bob's stubs are not."""
    _, out, rows = graded
    with open(out / "similarity.csv", newline="", encoding="utf-8") as fh:
        sim = list(csv.DictReader(fh))
    assert {r["student"] for r in sim} >= {"alice"} and "bob" not in {r["student"] for r in sim}
    assert "for a human to look at" in rows["alice"]["note"] and rows["alice"]["status"] == "ok"


@pytest.mark.nbgrader
def test_no_leaderboard_for_an_assignment_whose_tests_leave_no_record(graded):
    """a00_metrics leaves no ``__course_record__``: no leaderboard printed or written, records null."""
    proc, out, _ = graded
    assert "Leaderboard" not in proc.stdout and "leaderboard" not in proc.stderr
    assert not (out / "leaderboard.csv").exists() and not (out / "feedback" / "leaderboard.html").exists()
    log = json.loads((out / "logs" / "alice.json").read_text(encoding="utf-8"))
    assert "record" in log and log["record"] is None


def test_the_record_a_students_tests_left_is_kept_in_the_grade_row():
    """``batch._result`` copies the executor's ``record`` (a dict) into the row, None otherwise; the
    rest of the row is as before."""
    from course_lib.grading import batch

    rec = {"challenge": {"final": 0.05, "status": "ok"}, "split": "grading"}
    exported = {"alice": {"score": 2.0, "max_score": 2.0, "parts": {"t": 2.0}}}
    row = batch._result(collect.Submission("alice"), {"status": "ok", "seconds": 4.0, "record": rec}, {"t": 2.0},
                        exported, None)
    assert row.record == rec and row.score == 2.0 and row.parts == {"t": 2.0} and row.status == "ok"
    assert row.seconds == 4.0
    for res in ({"status": "ok", "seconds": 1.0}, {"status": "ok", "record": [1, 2]}, None):
        assert batch._result(collect.Submission("alice"), res, {"t": 2.0}, exported, None).record is None
    assert batch.StudentResult("bob", 0.0, 2.0, {}).record is None


def _challenge_class(out: Path, records: bool = True):
    """A graded class as ``batch.grade`` returns it, with challenge records (hand-made plain data)."""
    from course_lib.grading import batch

    def res(final, status="ok"):
        return {"name": "x", "F": final, "ra_ratio": 1.0, "ta_ratio": 1.0, "final": final, "seconds": 2.5,
                "status": status}

    base = {"do nothing": res(0.037), "Retrain": res(0.191), "fine-tune": res(0.035), "NegGrad+": res(0.017)}
    rec = lambda r: {"challenge": r, "split": "grading", "n_models": 32, "baselines": base} if records else None  # noqa: E731
    rows = [batch.StudentResult("alice", 3.0, 5.0, {}, record=rec(res(0.08))),
            batch.StudentResult("bob", 0.0, 5.0, {}, record=rec(res(None, "over budget"))),
            batch.StudentResult("carol", 0.0, 5.0, {}, flags=["crashed"])]
    return batch.ClassGrades(rows, workers=1, seconds=1.0, ran=3, parts={}, names={}, out_dir=out)


def test_a_challenge_class_gets_a_leaderboard_printed_and_written(tmp_path):
    """Rows with records: the leaderboard under its heading (students and baselines ranked, the refused
    and the unscored unranked), and the CSV, figure and class page written where it says."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import grade as cli

    text = cli.leaderboard(_challenge_class(tmp_path))
    assert text.startswith("Leaderboard (grading split: grading, N = 32 models per population)"), text
    lines = text.splitlines()
    ranked = [ln.split()[1] for ln in lines[3:] if ln.split() and ln.split()[0].isdigit()]
    assert ranked == ["Retrain", "alice", "do", "fine-tune", "NegGrad+"], text
    assert any(" bob " in ln and "over budget" in ln for ln in lines), text
    assert any("carol" in ln and "not scored (crashed)" in ln for ln in lines), text
    for f in ("leaderboard.csv", "leaderboard.png", "feedback/leaderboard.html"):
        assert (tmp_path / f).exists() and str(tmp_path / f) in text, f
    with open(tmp_path / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        names = [r["name"] for r in csv.DictReader(fh)]
    assert sorted(names) == sorted(["alice", "bob", "carol", "do nothing", "Retrain", "fine-tune", "NegGrad+"])


def test_a_class_without_records_gets_no_leaderboard_and_does_not_import_the_challenge(tmp_path):
    code = ("import sys; sys.path.insert(0, 'scripts'); sys.path.insert(0, 'tests'); import grade, test_grade\n"
            f"assert grade.leaderboard(test_grade._challenge_class(__import__('pathlib').Path({str(tmp_path)!r}), "
            "records=False)) is None\n"
            "assert 'course_lib.challenge' not in sys.modules, 'imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())


def test_bad_command_lines_exit_2():
    """An unknown assignment lists the known ones; a missing folder says so; both exit 2."""
    proc = subprocess.run(["bash", str(COURSE_SH), "grade", "a99_nothing", str(ROOT)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "a99_nothing" in proc.stderr and ASSIGNMENT in proc.stderr
    proc = subprocess.run(["bash", str(COURSE_SH), "grade", ASSIGNMENT, str(ROOT / "no-such-folder")],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no-such-folder" in proc.stderr
    proc = subprocess.run(["bash", str(COURSE_SH), "grade", ASSIGNMENT], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_grading_without_the_sandbox_is_refused(tmp_path):
    """With the sandbox unavailable (COURSE_SANDBOX=none stands in for a missing bubblewrap) grade
    refuses, says why and names --no-sandbox; nothing is graded."""
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "alice.ipynb").write_text(_nb("assignments").read_text(encoding="utf-8"), encoding="utf-8")
    proc = subprocess.run(["bash", str(COURSE_SH), "grade", ASSIGNMENT, str(subs), "--out", str(tmp_path / "out")],
                          env=_env(COURSE_SANDBOX="none"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sandbox" in proc.stderr and "--no-sandbox" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_no_sandbox_flag_means_grading_without_isolation(monkeypatch):
    """--no-sandbox lets grading go on, and every worker then runs with COURSE_SANDBOX=none."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import grade as cli
    from course_lib.grading import sandbox

    monkeypatch.setenv("COURSE_SANDBOX", "none")
    assert "--no-sandbox" in cli.sandbox_problem(False)
    monkeypatch.setenv("COURSE_SANDBOX", "auto")
    assert cli.sandbox_problem(True) is None and os.environ["COURSE_SANDBOX"] == "none"
    assert sandbox.mode() == "none"


def test_student_ids_and_roster(tmp_path):
    """Ids come from file names (zip and folder alike); the roster reads --students and a file."""
    assert collect.student_id("alice.ipynb", False) == "alice" == collect.student_id("alice.zip", False)
    assert collect.student_id("john.smith", True) == "john.smith" == collect.student_id("john.smith.zip", False)
    assert collect.student_id("Ann Lee.ipynb", False) == "Ann_Lee"
    sys.path.insert(0, str(ROOT / "scripts"))
    import grade as cli

    roster = tmp_path / "roster.csv"
    roster.write_text("id,name\nbob,Bob B\ncarol,Carol C\n", encoding="utf-8")
    assert cli.roster("alice, bob", roster) == ["alice", "bob", "carol"]
    assert cli.roster(None, None) is None


def test_the_autograde_step_finds_the_course_folder_of_the_converter_that_runs_it(tmp_path):
    """nbgrader hands ``coursedir`` to converters, not to their preprocessors: a plain ``nbgrader autograde``
    (or the formgrader's button) must still find the course's sources (it used to raise AttributeError)."""
    from traitlets.config import Configurable
    from course_lib.grading import nbgrader_io
    from nbgrader.coursedir import CourseDirectory

    course = CourseDirectory(root=str(tmp_path))
    converter = Configurable()
    converter.coursedir = course                      # what nbgrader's converters carry
    exporter = Configurable(parent=converter)
    step = nbgrader_io.ApplyResults(parent=exporter)
    assert step.coursedir is course
    alone = nbgrader_io.ApplyResults()
    assert isinstance(alone.coursedir, CourseDirectory)
