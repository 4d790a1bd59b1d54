"""The nbgrader round trip: generate the student release, check it is current, autograde
submissions in a scratch course (a batch never stops for one broken notebook)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


from .. import config

# ----------------------------------------------------------------- the nbgrader round trip

def assignments(root: Path | None = None) -> list[str]:
    """Names of the graded assignments (folders of ``solutions/``)."""
    root = Path(root or config.ROOT)
    return sorted(p.name for p in (root / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _env(fast: bool = True) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # nbgrader calls alembic
    env["COURSE_FAST"] = "1" if fast else "0"
    env.setdefault("COURSE_QUIET", "1")
    env.setdefault("COURSE_HEADLESS", "1")   # no live widgets in a graded run (course_lib/explorer.py)
    return env


#: Seconds an nbgrader command may take before it is stopped (a hang guard; autograde gets more per
#: submission). nbgrader's own per-cell limit (nbgrader_config.py) applies inside.
NBGRADER_TIMEOUT_S = 900
AUTOGRADE_TIMEOUT_PER_SUBMISSION_S = 300


def _run_guarded(cmd: list[str], cwd: Path, fast: bool, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, env=_env(fast), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-2000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-2000:]
        raise RuntimeError(f"`{' '.join(cmd[2:])}` ran past {timeout:.0f} s in {cwd} and was stopped; its log "
                           f"ends:\n{out}") from None


def _nbgrader(args: list[str], cwd: Path, fast: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = _run_guarded(cmd, cwd, fast, NBGRADER_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _scratch_course(root: Path, names: list[str]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="course-grade-"))
    shutil.copy(root / "nbgrader_config.py", tmp / "nbgrader_config.py")
    for a in names:
        shutil.copytree(root / "solutions" / a, tmp / "solutions" / a,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return tmp


def generate_release(name: str, root: Path | None = None, out: Path | None = None) -> Path:
    """Generate the student version of ``name``. By default in place (``assignments/<name>``);
    with ``out`` in a scratch course whose release folder is copied to ``out``."""
    root = Path(root or config.ROOT)
    if out is None:
        _nbgrader(["generate_assignment", name, "--force"], root)
        return root / "assignments" / name
    tmp = _scratch_course(root, [name])
    try:
        _nbgrader(["generate_assignment", name, "--force"], tmp)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp / "assignments" / name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _normalised(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return {"cells": [{k: c.get(k) for k in ("cell_type", "source", "metadata")} for c in nb["cells"]],
            "kernelspec": nb.get("metadata", {}).get("kernelspec")}


def release_is_current(name: str, root: Path | None = None) -> list[str]:
    """Regenerate ``name`` in a scratch folder and compare with the committed release.

    Returns a list of differences (empty when the committed ``assignments/<name>`` is current).
    """
    root = Path(root or config.ROOT)
    with tempfile.TemporaryDirectory() as d:
        fresh = generate_release(name, root, Path(d) / name)
        committed = root / "assignments" / name
        problems = []
        fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        old_files = {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()} if committed.exists() else set()
        for f in sorted(fresh_files ^ old_files):
            problems.append(f"{f}: only in the {'fresh' if f in fresh_files else 'committed'} release")
        for f in sorted(fresh_files & old_files):
            a, b = fresh / f, committed / f
            same = _normalised(a) == _normalised(b) if f.suffix == ".ipynb" else a.read_bytes() == b.read_bytes()
            if not same:
                problems.append(f"{f}: differs from a fresh `nbgrader generate_assignment {name}`")
    return problems


def _nbgrader_autograde(name: str, course: Path, fast: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", "autograde", name, "--force"]
    subs = course / "build" / "nbgrader" / "submitted"
    n = sum(1 for _ in subs.iterdir()) if subs.exists() else 1
    return _run_guarded(cmd, course, fast, NBGRADER_TIMEOUT_S + AUTOGRADE_TIMEOUT_PER_SUBMISSION_S * n)


def _open_gradebook(course: Path, log: str = ""):
    """The scratch course's gradebook; a RuntimeError that says why when SQLite cannot open it."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import OperationalError

    path = course / "build" / "nbgrader" / "gradebook.db"
    try:
        return Gradebook("sqlite:///" + str(path))
    except OperationalError as exc:
        free = shutil.disk_usage(course.parent).free / 2**20 if course.parent.exists() else float("nan")
        raise RuntimeError(
            f"could not open the gradebook of the scratch course {course} ({exc.orig}); the course folder "
            f"{'exists' if course.exists() else 'is gone'}, its gradebook folder "
            f"{'exists' if path.parent.exists() else 'is gone'}, {free:.0f} MiB free in {course.parent}. "
            "SQLite says this when it cannot create the file or its journal: a full temporary folder, or one "
            f"cleaned while grading ran. nbgrader's log ends:\n{log[-1500:]}") from None


@dataclass
class GradeReport:
    """Score of one submission of one assignment.

    ``parts``: points of every graded cell by its ``grade_id``; ``problem``: why a submission
    could not be (fully) graded, e.g. a missing or unreadable notebook (it then scores 0)."""

    assignment: str
    student: str
    score: float
    max_score: float
    parts: dict = field(default_factory=dict)
    problem: str = ""


def autograde(name: str, submissions: dict[str, Path], root: Path | None = None,
              fast: bool = True) -> dict[str, GradeReport]:
    """Autograde many submissions of one assignment as nbgrader would, in ONE scratch course and
    one ``nbgrader autograde`` call.

    ``submissions`` maps a student id to a notebook (e.g. ``{"solution": solutions/a/a.ipynb,
    "blank": assignments/a/a.ipynb}``), copied under the assignment's notebook name, or to a
    folder (a student's whole submission, copied as it is: extra files, a renamed notebook).
    Never raises for one student's broken, missing or renamed notebook: that submission scores 0
    and its report says why in ``problem``.
    """
    from nbgrader.api import MissingEntry

    root = Path(root or config.ROOT)
    tmp = _scratch_course(root, [name])
    try:
        _nbgrader(["generate_assignment", name, "--force"], tmp)
        nb_name = next((tmp / "solutions" / name).glob("*.ipynb")).name
        for student, nb in submissions.items():
            dest = tmp / "build" / "nbgrader" / "submitted" / student / name
            nb = Path(nb)
            if nb.is_dir():
                shutil.copytree(nb, dest)
            else:
                shutil.copytree(tmp / "assignments" / name, dest)  # data files travel with the release
                shutil.copy(nb, dest / nb_name)
        proc = _nbgrader_autograde(name, tmp, fast)
        log = proc.stdout + proc.stderr
        out = {}
        with _open_gradebook(tmp, log) as gb:
            max_score = float(gb.find_assignment(name).max_score)
            for student in submissions:
                done = tmp / "build" / "nbgrader" / "autograded" / student / name / nb_name
                lines = [ln.strip() for ln in log.splitlines() if f"/{student}/" in ln or f"'{student}'" in ln
                         or f" {student} " in ln]
                problem = "; ".join(ln for ln in lines if "ERROR" in ln or "No submitted file" in ln
                                    or "Skipping unknown" in ln)[:1500]
                try:
                    sub = gb.find_submission(name, student)
                except MissingEntry:
                    out[student] = GradeReport(name, student, 0.0, max_score, {}, problem or "not graded")
                    continue
                parts = {}
                for snb in sub.notebooks:
                    for g in snb.grades:
                        parts[g.name] = float(g.score)
                if not done.exists():
                    problem = problem or f"no notebook named {nb_name} was graded"
                    out[student] = GradeReport(name, student, 0.0, max_score, {k: 0.0 for k in parts}, problem)
                else:
                    out[student] = GradeReport(name, student, float(sub.score), float(sub.max_score), parts, problem)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_round_trip(name: str, root: Path | None = None) -> dict[str, GradeReport]:
    """Solution must score full marks, blank release zero. Returns the two reports."""
    root = Path(root or config.ROOT)
    sol = next((root / "solutions" / name).glob("*.ipynb"))
    blank = root / "assignments" / name / sol.name
    if not blank.exists():
        raise FileNotFoundError(f"{blank} is missing: run `nbgrader generate_assignment {name} --force`")
    return autograde(name, {"solution": sol, "blank": blank}, root)
