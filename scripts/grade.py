"""Grade a class: a folder of submissions in, feedback HTML, grades.csv and a table out.

    ./course.sh grade a02_sisa ~/Downloads/a02                 # one worker per core, FAST mode
    ./course.sh grade a02_sisa subs --due "2025-03-01 23:59" --roster students.txt --workers 4

SUBMISSIONS holds one entry per student, named by student id: <id>.ipynb, <id>.zip (the notebook
anywhere inside, perhaps renamed; a timestamp.txt inside gives the hand-in time), or a folder <id>/.
Renamed, late (--due: against timestamp.txt, else the file's modification time), missing (--roster
or --students), corrupt and non-notebook submissions, and notebooks that run past --timeout, are
reported in the table and in grades.csv; they never stop the others. Underneath: nbgrader's
zip_collect, autograde, generate_feedback and export, in scratch copies of the course (the course's
own gradebook is not touched). Writes OUT/grades.csv (student, total, max, one column per graded
part, status, note), OUT/feedback/<student>.html and nbgrader's logs in OUT/logs/.

Exit status: 0 when the class was graded (whatever the students' problems), 2 for a bad command line.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None):
    from course_lib.grading import batch

    ap = argparse.ArgumentParser(prog="./course.sh grade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", metavar="NAME", help="the assignment, e.g. a02_sisa")
    ap.add_argument("submissions", metavar="SUBMISSIONS", type=Path, help="folder of notebooks, zips or folders")
    ap.add_argument("--out", type=Path, help="output folder (default: build/grades/NAME)")
    ap.add_argument("--workers", type=int, help="parallel graders (default: one per CPU core)")
    ap.add_argument("--timeout", type=float, default=batch.DEFAULT_TIMEOUT_S,
                    help=f"seconds a student's notebook may run (default {batch.DEFAULT_TIMEOUT_S}); a longer "
                         f"cell is interrupted, a student stuck for {batch.STARTUP_GRACE_S} s more is stopped; "
                         "either way 'timed out', score 0")
    ap.add_argument("--full", action="store_true", help="run the graded notebooks in full mode (COURSE_FAST=0)")
    ap.add_argument("--due", type=_due, help="due date, e.g. '2025-03-01 23:59' (local time unless a zone is given)")
    ap.add_argument("--students", help="comma-separated roster of student ids (ids without a file: 'missing')")
    ap.add_argument("--roster", type=Path, help="file with one student id per line (a CSV's first column)")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.timeout <= 0:
        ap.error("--timeout must be positive")
    try:
        args.roster_ids = roster(args.students, args.roster)
    except OSError as exc:
        ap.error(f"cannot read the roster: {exc}")
    return args


def _due(text: str):
    from course_lib.grading import batch

    try:
        return batch.parse_due(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def roster(students: str | None, path: Path | None) -> list[str] | None:
    """Student ids from ``--students a,b`` and ``--roster FILE`` (first column; a header named
    id or student is skipped). None when neither is given."""
    if students is None and path is None:
        return None
    ids = [s.strip() for s in (students or "").split(",") if s.strip()]
    if path is not None:
        for line in path.read_text(encoding="utf-8").splitlines():
            first = line.split(",")[0].strip().strip('"')
            if first and first.lower() not in {"id", "student", "student_id"}:
                ids.append(first)
    return list(dict.fromkeys(ids))


def table(graded) -> str:
    """The grades as a text table: student, score/max, points per part, status; then the notes."""
    parts = graded.parts
    heads = ["student", "score", *(f"{g.removeprefix('test_')}/{p:g}" for g, p in parts.items()), "status"]
    rows = []
    for r in graded:
        ran = not set(r.flags) & {"corrupt", "not a notebook", "missing"}
        cells = [f"{r.parts.get(g, 0.0):g}" if ran else "-" for g in parts]
        rows.append([r.student, f"{r.score:g}/{r.max_score:g}", *cells, r.status])
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(heads), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    notes = [f"  {r.student}: {r.note}" for r in graded if r.note]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    from course_lib.grading import batch

    out = args.out or ROOT / "build" / "grades" / args.name
    try:
        batch.check_arguments(args.name, args.submissions)
    except (ValueError, FileNotFoundError) as exc:
        print(f"course.sh grade: {exc}", file=sys.stderr)
        return 2
    mode = "full" if args.full else "FAST"
    print(f"Grading {args.name} from {args.submissions} ({mode} mode, timeout {args.timeout:g} s) ...", flush=True)
    graded = batch.grade(args.name, args.submissions, out, workers=args.workers, timeout=args.timeout,
                         fast=not args.full, due=args.due, students=args.roster_ids)
    print()
    print(table(graded))
    n_feedback = sum(r.feedback is not None for r in graded)
    print(f"\nWrote {graded.csv} and {n_feedback} feedback file(s) in {graded.out_dir / 'feedback'}/")
    seconds = time.perf_counter() - t0      # the whole command, start-up included
    print(f"{graded.ran} students in {seconds:.0f} s = {3600 * graded.ran / seconds:.0f} students/hour "
          f"with {graded.workers} worker{'s' if graded.workers != 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
