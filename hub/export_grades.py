"""The hub's gradebook to the same CSVs as ``./course.sh grade``.

    python hub/export_grades.py NAME [--course ~/unlearning-course] [--out grades]

Reads nbgrader's gradebook of the instructor's course folder (``COURSE/build/nbgrader/gradebook.db``,
filled by the formgrader's or ``nbgrader autograde``'s runs through the course's sandboxed executor)
and writes ``OUT/grades.csv`` (student, total, max, one column per graded part by ``grade_id``,
status, note) and ``OUT/grades_lms.csv`` (Student ID, Total, one column per part named by its
"Part" heading, Status): the columns of ``course_lib.grading.batch`` (they are written by its
``write_csv`` / ``write_lms_csv``). A student in the gradebook without a submission is ``missing``;
a late one (nbgrader's ``timestamp`` past the assignment's ``duedate``) is ``late``.

Run it in a terminal of the instructor's JupyterLab (the course's environment is the terminal's
``python``), or as root with ``--course /path/to/the/instructor/home/unlearning-course``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def export(name: str, course: Path, out: Path) -> Path:
    """Write ``out/grades.csv`` and ``out/grades_lms.csv`` for assignment ``name``; returns grades.csv."""
    from nbgrader.api import Gradebook, MissingEntry

    from course_lib.grading import batch
    from course_lib.grading import cells as C
    from course_lib.grading import nbgrader_io

    course = Path(course).expanduser().resolve()
    nb_name = nbgrader_io.notebook_name(course, name)
    source = C.load(course / "solutions" / name / nb_name)
    parts, names = C.parts(source), C.part_names(source)
    db = course / "build" / "nbgrader" / "gradebook.db"
    if not db.exists():
        raise FileNotFoundError(f"no gradebook at {db}: autograde the submissions first")
    rows = []
    with Gradebook("sqlite:///" + str(db)) as gb:
        for student in sorted(s.id for s in gb.students):
            row = batch.StudentResult(student, 0.0, float(sum(parts.values())), {g: 0.0 for g in parts})
            try:
                sub = gb.find_submission(name, student)
            except MissingEntry:
                row.flags.append("missing")
                row.note = "no submission collected"
                rows.append(row)
                continue
            row.score, row.max_score = float(sub.score), float(sub.max_score) or row.max_score
            for nb in sub.notebooks:
                for g in nb.grades:
                    row.parts[g.name] = float(g.score)
            if sub.total_seconds_late and sub.total_seconds_late > 0:
                row.flags.append("late")
                row.note = f"{sub.total_seconds_late / 3600:.1f} h late"
            if any(nb.needs_manual_grade for nb in sub.notebooks):
                row.flags.append("needs manual grade")
            rows.append(row)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch.write_csv(out / "grades.csv", rows, parts)
    batch.write_lms_csv(out / "grades_lms.csv", rows, parts, names)
    return out / "grades.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the assignment, e.g. a00_metrics")
    ap.add_argument("--course", type=Path, default=Path("~/unlearning-course"),
                    help="the instructor's nbgrader course folder (default ~/unlearning-course)")
    ap.add_argument("--out", type=Path, help="output folder (default: COURSE/build/grades/NAME)")
    args = ap.parse_args(argv)
    course = args.course.expanduser()
    out = args.out or course / "build" / "grades" / args.name
    try:
        path = export(args.name, course, out)
    except (FileNotFoundError, StopIteration) as err:
        print(f"export_grades: {err or 'unknown assignment ' + args.name}", file=sys.stderr)
        return 2
    print(path.read_text(encoding="utf-8"), end="")
    print(f"(written: {path} and {path.parent / 'grades_lms.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
