"""Autograde the submissions an instructor collected on the hub, through the course's sandboxed grading.

    python /path/to/the/course/hub/autograde.py NAME [--course ~/unlearning-course] [--workers N]

Run by the instructor (a terminal in the instructor's JupyterLab), after the formgrader's or
``nbgrader collect NAME``'s collection, in the instructor's nbgrader course folder:

1. every collected notebook (``build/nbgrader/submitted/<student>/NAME``) is run by the course's
   executor (``course_lib.grading.batch.execute_all``: answer cells in the bubblewrap sandbox, tests in a
   trusted process, ``--workers`` students at a time), as ``./course.sh grade`` does;
2. ``nbgrader autograde NAME`` writes those results into nbgrader's notebooks and gradebook (its Execute
   step is ``ApplyResults``, reading ``$COURSE_GRADING_RESULTS``: no student code runs in nbgrader);
3. ``nbgrader generate_feedback NAME`` (hidden tests hidden);
4. ``build/grades/NAME/grades.csv`` and ``grades_lms.csv`` from the gradebook (``hub/export_grades.py``).

Then release the feedback from the formgrader (or ``nbgrader release_feedback NAME``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def autograde(name: str, course: Path, workers: int | None = None, timeout: float | None = None,
              fast: bool = True) -> dict:
    """Steps 1-4 above; returns ``{"students", "seconds", "csv"}``."""
    from course_lib.grading import batch, nbgrader_io

    t0 = time.monotonic()
    course = Path(course).expanduser().resolve()
    submitted = course / "build" / "nbgrader" / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p / name).is_dir()) if submitted.is_dir() else []
    if not students:
        raise FileNotFoundError(f"no collected submissions of {name} in {submitted}: collect them first")
    nb_name = nbgrader_io.notebook_name(course, name)
    for s in students:
        nbgrader_io.dedupe_cells(submitted / s / name / nb_name)
    results = course / "build" / "grades" / name / "results"
    n = batch.worker_count(workers, len(students))
    batch.execute_all(name, course, students, n, timeout or batch.DEFAULT_TIMEOUT_S, fast, results)
    extra = {nbgrader_io.RESULTS_ENV: str(results)}
    nbgrader_io.run_nbgrader(["autograde", name, "--force"], course, fast, extra_env=extra)
    nbgrader_io.run_nbgrader(["generate_feedback", name, "--force"], course)
    sys.path.insert(0, str(HERE))
    import export_grades
    csv = export_grades.export(name, course, course / "build" / "grades" / name)
    return {"students": students, "seconds": time.monotonic() - t0, "csv": str(csv)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the assignment, e.g. a00_metrics")
    ap.add_argument("--course", type=Path, default=Path("~/unlearning-course"),
                    help="the instructor's nbgrader course folder (default ~/unlearning-course)")
    ap.add_argument("--workers", type=int, help="students graded at a time (default: one per core)")
    ap.add_argument("--timeout", type=float, help="seconds one cell may run (default: ./course.sh grade's)")
    ap.add_argument("--full", action="store_true", help="full mode (COURSE_FAST=0)")
    args = ap.parse_args(argv)
    try:
        out = autograde(args.name, args.course, args.workers, args.timeout, not args.full)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"autograde: {err}", file=sys.stderr)
        return 1
    print(Path(out["csv"]).read_text(encoding="utf-8"), end="")
    print(f"graded {len(out['students'])} students in {out['seconds']:.1f} s; {out['csv']}; now release the "
          f"feedback (formgrader, or: nbgrader release_feedback {args.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
