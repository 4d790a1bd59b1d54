"""Grade a whole class: a folder of submissions in, feedback HTML and CSVs of scores per part out.

    from course_lib.grading import batch
    graded = batch.grade("a02_sisa", "downloads/a02", "build/grades/a02_sisa")

1. :func:`collect.collect` files every student's notebook in a scratch copy of the course (this
   repository is never touched), with a status per student.
2. Every collected notebook is run by the sandboxed executor (``executor.py``: the student's cells
   in a sandbox, the tests in a trusted process) in a pool of ``workers``: each worker takes the
   next student as soon as it is free, so one student's infinite loop holds up one worker for
   the time limit, not a share of the class.
3. One ``nbgrader autograde`` writes the results into nbgrader's notebooks and gradebook (its
   ``Execute`` step is :class:`nbgrader_io.ApplyResults`; no student code runs in nbgrader),
   then ``nbgrader generate_feedback`` writes feedback without the hidden tests.
4. ``OUT/grades.csv`` (per part, with statuses), ``OUT/grades_lms.csv`` (one row per student, a
   column per part named by its "Part" heading: what an LMS gradebook imports),
   ``OUT/feedback/<student>.html`` and ``OUT/logs/``.
5. What a notebook's tests left for the class (``__course_record__``, a plain dict: the challenge's
   score) is each row's ``record``, for ``scripts/grade.py``'s leaderboard.

A student whose code runs past the limit or crashes its sandbox keeps the points of the tests
that ran before, and gets feedback saying why the rest did not run.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .. import config
from . import cells as C
from . import nbgrader_io, similarity
from .collect import CRASHED, ERROR, TIMED_OUT, Submission, collect

#: Seconds a student's cell may run by default; the whole notebook gets :data:`TOTAL_FACTOR` times that.
DEFAULT_TIMEOUT_S = 300
TOTAL_FACTOR = 3


@dataclass
class StudentResult:
    """One row of the class's grades: total and points per graded part (by ``grade_id``), the
    statuses (empty: ok), why, the feedback file (None when there is none), the seconds the
    executor took and the record the tests left (``__course_record__``: a plain dict, else None)."""

    student: str
    score: float
    max_score: float
    parts: dict[str, float]
    flags: list[str] = field(default_factory=list)
    note: str = ""
    feedback: Path | None = None
    seconds: float | None = None
    record: dict | None = None

    @property
    def status(self) -> str:
        """``"ok"`` or the statuses joined by commas, e.g. ``"renamed, late"``."""
        return ", ".join(self.flags) or "ok"

    @property
    def problem(self) -> str:
        """Why the submission was not (fully) graded ("" when it was)."""
        return self.note if self.flags else ""


class ClassGrades(list):
    """The :class:`StudentResult` of every student (a list, sorted by student), with how the batch
    ran: ``workers``, ``seconds`` (wall clock, all included), ``ran`` (students whose notebook was
    executed), ``parts`` (max points by grade_id), ``names`` (part headings) and the files written."""

    def __init__(self, results, *, workers: int, seconds: float, ran: int, parts: dict, names: dict, out_dir: Path):
        super().__init__(results)
        self.workers, self.seconds, self.ran, self.parts, self.names = workers, seconds, ran, parts, names
        self.out_dir, self.csv = Path(out_dir), Path(out_dir) / "grades.csv"
        self.lms_csv = Path(out_dir) / "grades_lms.csv"


def worker_count(workers: int | None, students: int) -> int:
    """Workers to use: ``workers`` (default: one per core), at most one per student, at least 1."""
    return max(1, min(workers or os.cpu_count() or 1, students))


def _thread_env(workers: int) -> dict:
    """CPU threads shared between the workers (an oversubscribed pool slows every student)."""
    share = str(max(1, (os.cpu_count() or 1) // workers))
    return {v: os.environ.get(v, share) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _show_bar() -> bool:
    """The progress bar is drawn unless in CI or with ``COURSE_QUIET=1``."""
    return not (config.in_ci() or os.environ.get("COURSE_QUIET", "").strip().lower() in {"1", "true", "yes", "on"})


def check_arguments(name: str, submissions_dir: Path, root: Path | None = None) -> None:
    """Raise ValueError for an unknown assignment (listing the known ones) and
    FileNotFoundError for a submissions folder that is not there."""
    known = nbgrader_io.assignments(root)
    if name not in known:
        raise ValueError(f"unknown assignment {name!r}; assignments: {', '.join(known)}")
    if not Path(submissions_dir).is_dir():
        raise FileNotFoundError(f"no submissions folder {str(submissions_dir)!r}")


def _fresh_out(out_dir: Path) -> None:
    """Empty the outputs of a previous run (feedback, logs, CSVs); keep anything else."""
    for sub in ("feedback", "logs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)
    for f in ("grades.csv", "grades_lms.csv", "similarity.csv"):
        (out_dir / f).unlink(missing_ok=True)


def execute_all(name: str, course: Path, students: list[str], workers: int, timeout: float, fast: bool,
                results: Path) -> dict[str, dict]:
    """Run the executor on every student's collected notebook, ``workers`` at a time, each worker
    taking the next student when free; the results by student (also ``results/<student>.json``)."""
    from tqdm.auto import tqdm

    nb_name = nbgrader_io.notebook_name(course, name)
    source = course / "solutions" / name / nb_name
    release = course / "assignments" / name
    results.mkdir(parents=True, exist_ok=True)
    extra = _thread_env(workers)
    lock, out = threading.Lock(), {}

    def one(student: str) -> None:
        folder = course / "build" / "nbgrader" / "submitted" / student / name
        nbgrader_io.add_release_files(release, folder)
        res = nbgrader_io.run_executor(source, folder / nb_name, folder, results / f"{student}.json", timeout,
                                       timeout * TOTAL_FACTOR, fast, extra)
        with lock:
            out[student] = res

    with tqdm(total=len(students), desc=f"grading {name}", unit="student", disable=not _show_bar(),
              file=sys.stderr) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(one, s) for s in students]:
            fut.result()
            bar.update(1)
    return out


def _result(sub: Submission, res: dict | None, parts_max: dict, exported: dict, feedback: Path | None) -> StudentResult:
    """The grade row of one student."""
    row = StudentResult(sub.student, 0.0, sum(parts_max.values()), {g: 0.0 for g in parts_max}, list(sub.flags),
                        "; ".join(sub.notes))
    if res is None:
        return row
    row.seconds = res.get("seconds")
    row.record = res.get("record") if isinstance(res.get("record"), dict) else None
    data = exported.get(sub.student)
    status = res.get("status", "error")
    if data is not None:
        row.score, row.max_score = data["score"], data["max_score"] or row.max_score
        row.parts.update(data["parts"])
        row.feedback = feedback
    flag = {"timed out": TIMED_OUT, "crashed": CRASHED, "error": ERROR}.get(status)
    if flag:
        row.flags.append(flag)
        row.note = "; ".join(n for n in (row.note, res.get("note", "")) if n)
    elif data is None:
        row.flags.append(ERROR)
        row.note = "; ".join(n for n in (row.note, "nbgrader recorded no grade") if n)
    return row


def write_csv(path: Path, results: list[StudentResult], parts: dict[str, float]) -> None:
    """``student, total, max, <one column per graded part>, status, note``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "total", "max", *parts, "status", "note"])
        for r in results:
            w.writerow([r.student, f"{r.score:g}", f"{r.max_score:g}", *(f"{r.parts.get(g, 0.0):g}" for g in parts),
                        r.status, r.note])


def write_lms_csv(path: Path, results: list[StudentResult], parts: dict[str, float], names: dict[str, str]) -> None:
    """What an LMS gradebook imports: ``Student ID, Total, <Part A (2 pts)>, ..., Status``."""
    cols = {}
    for g, pts in parts.items():
        label = f"{names.get(g, g)} ({pts:g} pts)"
        cols[g] = label if label not in cols.values() else f"{label} [{g}]"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Student ID", f"Total ({sum(parts.values()):g} pts)", *cols.values(), "Status"])
        for r in results:
            w.writerow([r.student, f"{r.score:g}", *(f"{r.parts.get(g, 0.0):g}" for g in parts), r.status])


def grade(name: str, submissions_dir: Path, out_dir: Path, workers: int | None = None,
          timeout: float = DEFAULT_TIMEOUT_S, fast: bool = True, due: datetime | None = None,
          students: list[str] | None = None, root: Path | None = None) -> ClassGrades:
    """Collect, execute in the sandbox (``workers`` at a time), autograde and write feedback with
    nbgrader, write the CSVs; see the module's doc. ``timeout``: seconds per cell (the whole
    notebook: ``TOTAL_FACTOR`` times that). Returns every student's :class:`StudentResult` (one
    student's problem never stops the others)."""
    t0 = time.perf_counter()
    root, out_dir = Path(root or config.ROOT), Path(out_dir)
    check_arguments(name, submissions_dir, root)
    _fresh_out(out_dir)
    logs = out_dir / "logs"
    course = nbgrader_io.scratch_course(root, [name])
    try:
        nbgrader_io.run_nbgrader(["generate_assignment", name, "--force"], course, log=logs / "nbgrader.log")
        subs = collect(name, submissions_dir, course, students, due, logs / "collect.log")
        nb_name = nbgrader_io.notebook_name(course, name)
        source_nb = C.load(course / "solutions" / name / nb_name)
        parts_max, names = C.parts(source_nb), C.part_names(source_nb)
        todo = [s for s, sub in subs.items() if sub.graded]
        n = worker_count(workers, len(todo))
        results_dir = course / "results"
        executed = execute_all(name, course, todo, n, timeout, fast, results_dir) if todo else {}
        for s, res in executed.items():
            (logs / f"{s}.json").write_text(json.dumps({k: v for k, v in res.items() if k != "cells"}, indent=1),
                                            encoding="utf-8")
        exported = {}
        if todo:
            for s in todo:
                nbgrader_io.dedupe_cells(course / "build" / "nbgrader" / "submitted" / s / name / nb_name)
            extra = {nbgrader_io.RESULTS_ENV: str(results_dir)}
            try:
                nbgrader_io.run_nbgrader(["autograde", name, "--force"], course, fast, extra_env=extra,
                                         log=logs / "nbgrader.log")
            except RuntimeError as exc:   # one notebook nbgrader refuses must not stop the class
                (logs / "autograde-error.txt").write_text(str(exc), encoding="utf-8")
            graded = {s for s in todo if (course / "build" / "nbgrader" / "autograded" / s / name / nb_name).exists()}
            exported = {s: d for s, d in nbgrader_io.export_parts(course).items() if s in graded}
            try:
                nbgrader_io.run_nbgrader(["generate_feedback", name, "--force"], course, log=logs / "nbgrader.log")
            except RuntimeError as exc:
                (logs / "feedback-error.txt").write_text(str(exc), encoding="utf-8")
        results = []
        for s, sub in subs.items():
            fb = course / "build" / "nbgrader" / "feedback" / s / name / (Path(nb_name).stem + ".html")
            dest = None
            if fb.exists():
                dest = out_dir / "feedback" / f"{s}.html"
                shutil.copy(fb, dest)
            results.append(_result(sub, executed.get(s), parts_max, exported, dest))
        flags = similarity.report(course, name, nb_name, todo, out_dir / "similarity.csv")
        for r in results:
            if flags.get(r.student):
                r.note = "; ".join(x for x in (r.note, flags[r.student]) if x)
        write_csv(out_dir / "grades.csv", results, parts_max)
        write_lms_csv(out_dir / "grades_lms.csv", results, parts_max, names)
    finally:
        shutil.rmtree(course, ignore_errors=True)
    return ClassGrades(results, workers=n, seconds=time.perf_counter() - t0, ran=len(todo), parts=parts_max,
                       names=names, out_dir=out_dir)
