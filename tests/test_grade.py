"""`./course.sh grade NAME SUBMISSIONS`, the TAs' command, end to end on a synthetic class.

One class is graded once (module fixture, two workers, a small timeout) through `./course.sh grade`:
alice hands in the solution, bob the blank release, carol a half-done copy (one part left as the stub,
handed in after the due date), dave a file that is not JSON, erin a zip holding her notebook renamed,
in a subfolder, with nbgrader's timestamp.txt, frank a PDF, gina a notebook with an infinite loop,
ivan a damaged zip; harry is on the roster and hands in nothing. The stopping of a student whose kernel
ignores interrupts is tested on a stand-in for nbgrader (seconds, not minutes).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from course_lib.grading import batch

ROOT = Path(__file__).resolve().parent.parent
COURSE_SH = ROOT / "course.sh"
ASSIGNMENT = "a00_metrics"      # the quickest graded notebook
STUBBED = "mia"                  # carol's part left as the stub: no later part uses it
STUB_TEST = "test_mia"
TIMEOUT_S = 60                   # well above a00_metrics' slowest cell on a busy 2-core machine
ROSTER = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "harry", "ivan"]
GRADED = ["alice", "bob", "carol", "erin"]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update(COURSE_VENV=sys.prefix, COURSE_NO_SETUP="1", COURSE_FAST="1", CI="true")
    env.update(extra)
    return env


def _edited(nb_text: str, grade_id: str, source: str) -> str:
    """The notebook with the cell ``grade_id``'s source replaced (outputs cleared)."""
    nb = json.loads(nb_text)
    cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id]
    assert cells, f"{ASSIGNMENT} has no cell {grade_id}"
    for c in cells:
        c["source"], c["outputs"] = source, []
    return json.dumps(nb, indent=1)


def make_class(folder: Path) -> None:
    """The synthetic class's submissions folder (see the module's doc)."""
    sol = (ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text(encoding="utf-8")
    blank = (ROOT / "assignments" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text(encoding="utf-8")
    folder.mkdir(parents=True)
    (folder / "alice.ipynb").write_text(sol, encoding="utf-8")
    (folder / "bob.ipynb").write_text(blank, encoding="utf-8")
    (folder / "carol.ipynb").write_text(_edited(sol, STUBBED, "# YOUR CODE HERE\nraise NotImplementedError()"),
                                        encoding="utf-8")
    (folder / "dave.ipynb").write_text("this is not a notebook {", encoding="utf-8")
    with zipfile.ZipFile(folder / "erin.zip", "w") as z:
        z.writestr(f"work/my_{ASSIGNMENT}.ipynb", sol)
        z.writestr("work/timestamp.txt", "2020-01-01 10:00:00 UTC")
    (folder / "frank.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    (folder / "gina.ipynb").write_text(_edited(sol, "accuracy", "while True:\n    pass\n"), encoding="utf-8")
    (folder / "ivan.zip").write_bytes(b"PK\x03\x04 a truncated zip")
    ten_days_ago = time.time() - 10 * 86400
    for f in folder.iterdir():
        if f.name != "carol.ipynb":            # carol's file is new: late for a due date 5 days ago
            os.utime(f, (ten_days_ago, ten_days_ago))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the synthetic class once per test run: (process, output folder, CSV rows by student).

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
                                   "--students", ",".join(ROSTER)],
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
    return batch.release_parts(ROOT / "assignments" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")


@pytest.mark.nbgrader
def test_scores_are_exact(graded):
    """Solution full marks, blank 0, half-done exactly max minus the stubbed part's points, the
    renamed notebook in a zip full marks; per-part columns agree."""
    _, _, rows = graded
    parts = _parts()
    full = sum(parts.values())
    for s in GRADED:
        assert rows[s]["status"] in ("ok", "late", "renamed"), rows[s]
    assert float(rows["alice"]["total"]) == full == float(rows["alice"]["max"])
    assert all(float(rows["alice"][g]) == p for g, p in parts.items())
    assert float(rows["bob"]["total"]) == 0 and all(float(rows["bob"][g]) == 0 for g in parts)
    carol = float(rows["carol"]["total"])
    assert 0 < carol < full and carol == full - parts[STUB_TEST]
    assert float(rows["carol"][STUB_TEST]) == 0
    assert float(rows["erin"]["total"]) == full


@pytest.mark.nbgrader
def test_csv_has_one_row_per_student_and_a_column_per_part(graded):
    _, out, rows = graded
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["student", "total", "max", *_parts(), "status", "note"]
    assert sorted(rows) == sorted(ROSTER)


@pytest.mark.nbgrader
def test_problems_are_reported_and_never_stop_the_others(graded):
    """Every kind of problem has its status and a note; the graded students are not affected."""
    proc, _, rows = graded
    status = {s: r["status"] for s, r in rows.items()}
    assert status["alice"] == "ok" and status["bob"] == "ok"
    assert status["carol"] == "late" and "late by" in rows["carol"]["note"]
    assert status["erin"] == "renamed" and f"my_{ASSIGNMENT}.ipynb" in rows["erin"]["note"]
    assert status["dave"] == "corrupt" and "JSON" in rows["dave"]["note"]
    assert status["ivan"] == "corrupt" and "zip" in rows["ivan"]["note"]
    assert status["frank"] == "not a notebook" and "frank.pdf" in rows["frank"]["note"]
    assert status["harry"] == "missing"
    for s in ("dave", "frank", "harry", "ivan"):
        assert float(rows[s]["total"]) == 0
    table = proc.stdout
    for s, st in status.items():
        assert any(line.startswith(s) and line.rstrip().endswith(st) for line in table.splitlines()), (s, st)


@pytest.mark.nbgrader
def test_an_infinite_loop_times_out_and_scores_zero(graded):
    _, _, rows = graded
    assert rows["gina"]["status"] == "timed out"
    assert float(rows["gina"]["total"]) == 0 and "accuracy" in rows["gina"]["note"]


@pytest.mark.nbgrader
def test_feedback_for_graded_students_and_the_rate(graded):
    proc, out, _ = graded
    for s in GRADED:
        html = (out / "feedback" / f"{s}.html").read_text(encoding="utf-8")
        assert ASSIGNMENT in html and "<html" in html.lower()
    assert sorted(p.stem for p in (out / "feedback").iterdir()) == GRADED
    assert "students/hour with 2 workers" in proc.stdout
    assert "5 students in" in proc.stdout        # alice, bob, carol, erin and gina ran


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


_STAND_IN = """
import signal, subprocess, sys, time
print("[AutogradeApp | INFO] Creating/updating student with ID 'stuck': {}", flush=True)
kernel = subprocess.Popen([sys.executable, "-c",
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\\nwhile True: pass"], start_new_session=True)
open(sys.argv[1], "w").write(str(kernel.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_a_stalled_student_is_stopped_with_its_kernel(tmp_path, monkeypatch):
    """A grading that makes no progress (a kernel that ignores interrupts, in a session of its own)
    is killed with everything it started after timeout + grace; the student is timed out."""
    monkeypatch.setattr(batch, "STARTUP_GRACE_S", 1)
    script, pid_file = tmp_path / "stand_in.py", tmp_path / "kernel.pid"
    script.write_text(_STAND_IN, encoding="utf-8")
    chunk = batch._Chunk(ASSIGNMENT, ["stuck", "next"], tmp_path, tmp_path / "w.log", timeout=2, env=dict(os.environ))
    monkeypatch.setattr(chunk, "_launch", lambda args: _popen(chunk, [sys.executable, str(script), str(pid_file)]))
    t0 = time.monotonic()
    again = chunk._autograde_once()
    assert again is True, "the student after the stalled one must still be graded"
    assert 3 <= time.monotonic() - t0 < 30
    assert "stopped after" in chunk.stopped["stuck"]
    kernel = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kernel), "the stalled kernel must be killed too"


def _popen(chunk, cmd):
    with open(chunk.log, "a", encoding="utf-8") as fh:
        chunk.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return chunk.proc


def test_student_ids_and_roster(tmp_path):
    """Ids come from file names (zip and folder alike); the roster reads --students and a file."""
    assert batch.student_id("alice.ipynb", False) == "alice" == batch.student_id("alice.zip", False)
    assert batch.student_id("john.smith", True) == "john.smith" == batch.student_id("john.smith.zip", False)
    assert batch.student_id("Ann Lee.ipynb", False) == "Ann_Lee"
    sys.path.insert(0, str(ROOT / "scripts"))
    import grade as cli

    roster = tmp_path / "roster.csv"
    roster.write_text("id,name\nbob,Bob B\ncarol,Carol C\n", encoding="utf-8")
    assert cli.roster("alice, bob", roster) == ["alice", "bob", "carol"]
    assert cli.roster(None, None) is None
