"""Grade a class: a folder of submissions in; a table, CSVs of scores per part and feedback out.

    ./course.sh grade a02_sisa ~/Downloads/a02                 # one worker per core, FAST mode
    ./course.sh grade a02_sisa subs --due "2025-03-01 23:59" --roster students.txt --workers 4

SUBMISSIONS holds one entry per student, named by student id: <id>.ipynb, <id>.zip (the notebook
anywhere inside, perhaps renamed; a timestamp.txt inside gives the hand-in time), or a folder <id>/.
Renamed, late (--due: against timestamp.txt, else the file's modification time), missing (--roster
or --students), corrupt, non-notebook and other assignments' notebooks, and notebooks that run past
--timeout or crash, are reported in the table and the CSVs; they never stop the others. A student
stopped by a limit keeps the points of the tests that ran before.

Every student's answer cells run in a sandbox (bubblewrap: no network, no file but the student's
own folder, limits on time, memory and processes); the given cells and the tests run in a trusted
process; nbgrader (zip_collect, autograde, generate_feedback) keeps the gradebook and writes the
feedback, never running a student's code; workers take the next student as soon as they are free.
All of it happens in a scratch copy of the course (the course's own gradebook is not touched).

Writes OUT/grades.csv (student, total, max, one column per graded part, status, note),
OUT/grades_lms.csv (Student ID, Total, one column per part named by its "Part" heading, Status: what
an LMS gradebook imports), OUT/similarity.csv (answer cells very close to the instructor's solution
or to the library's reference code: for a person to read, never zeroed), OUT/feedback/<student>.html
(visible tests and messages; hidden tests only say that they failed) and OUT/logs/.

A challenge assignment (a08_challenge: its tests leave each student's score as a record) also gets a
class leaderboard, printed under the table: OUT/leaderboard.csv (one row per student and per baseline:
F, RA and TA ratios, final score, rank, seconds, status), OUT/leaderboard.png (final score per student,
baselines as lines) and OUT/feedback/leaderboard.html (for the class, students under pseudonyms).

Without a working bubblewrap (sandbox mode "none") grading refuses: student code would run with the
grader's rights. --no-sandbox grades anyway, without isolation: UNSAFE, for a trusted local test only.

Exit status: 0 when the class was graded (whatever the students' problems), 1 when nbgrader itself
failed (see OUT/logs/), 2 for a bad command line or a missing sandbox.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Characters of a note shown in the table (the whole note is listed below it and in grades.csv).
NOTE_WIDTH = 40


def parse_args(argv: list[str] | None):
    from course_lib.grading import batch

    ap = argparse.ArgumentParser(prog="./course.sh grade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", metavar="NAME", help="the assignment, e.g. a02_sisa")
    ap.add_argument("submissions", metavar="SUBMISSIONS", type=Path, help="folder of notebooks, zips or folders")
    ap.add_argument("--out", type=Path, help="output folder (default: build/grades/NAME)")
    ap.add_argument("--workers", type=int, help="parallel graders (default: one per CPU core)")
    ap.add_argument("--timeout", type=float, default=batch.DEFAULT_TIMEOUT_S,
                    help=f"seconds one cell of a student may run (default {batch.DEFAULT_TIMEOUT_S}); the whole "
                         f"notebook gets {batch.TOTAL_FACTOR} times that. A student past it is stopped ('timed "
                         "out') and keeps the points of the tests that ran before")
    ap.add_argument("--full", action="store_true", help="run the graded notebooks in full mode (COURSE_FAST=0)")
    ap.add_argument("--due", type=_due, help="due date, e.g. '2025-03-01 23:59' (local time unless a zone is given)")
    ap.add_argument("--students", help="comma-separated roster of student ids (ids without a file: 'missing')")
    ap.add_argument("--roster", type=Path, help="file with one student id per line (a CSV's first column)")
    ap.add_argument("--no-sandbox", action="store_true",
                    help="UNSAFE: run students' code without the sandbox (COURSE_SANDBOX=none), with your rights "
                         "and files; only to try the grader on trusted notebooks where bubblewrap is missing")
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
    from course_lib.grading import collect

    try:
        return collect.parse_due(text)
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


def sandbox_problem(no_sandbox: bool) -> str | None:
    """Why grading must not start (None: go): the sandbox is unavailable and --no-sandbox was not
    given. With --no-sandbox, COURSE_SANDBOX=none for every worker."""
    from course_lib.grading import sandbox

    if no_sandbox:
        os.environ["COURSE_SANDBOX"] = "none"
        return None
    try:
        mode = sandbox.mode()
    except (RuntimeError, ValueError) as exc:
        return str(exc)
    if mode == "none":
        why = ("COURSE_SANDBOX=none is set" if os.environ.get("COURSE_SANDBOX", "").strip().lower() == "none"
               else "bubblewrap (bwrap) is missing or cannot create namespaces here")
        return (f"the grader's sandbox is not available: {why}. Grading a class without it runs every student's "
                "code with your rights, files and network. Install it (`apt-get install bubblewrap`; "
                "./course.sh does so when it can) or grade where user namespaces are allowed. "
                "--no-sandbox grades anyway, UNSAFE: only for trusted notebooks on a test machine.")
    return None


def _part_labels(graded) -> dict[str, str]:
    """Column labels of the parts: "A/2" from the "Part A" heading (the grade_id where two cells share one)."""
    labels = {}
    for g, pts in graded.parts.items():
        name = str(graded.names.get(g, g)).removeprefix("Part ").strip() or g
        labels[g] = f"{name}/{pts:g}"
    counts = {}
    for v in labels.values():
        counts[v] = counts.get(v, 0) + 1
    return {g: (v if counts[v] == 1 else f"{g.removeprefix('test_')}/{graded.parts[g]:g}") for g, v in labels.items()}


def _short(text: str, width: int = NOTE_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(graded) -> str:
    """The grades as a text table: student, total, points per part, status, note (cut; the whole
    notes follow the table), seconds the executor took."""
    labels = _part_labels(graded)
    heads = ["student", "total", *labels.values(), "status", "note", "seconds"]
    rows = []
    for r in graded:
        ran = r.seconds is not None
        cells = [f"{r.parts.get(g, 0.0):g}" if ran else "-" for g in labels]
        rows.append([r.student, f"{r.score:g}/{r.max_score:g}", *cells, r.status, _short(r.note),
                     f"{r.seconds:.0f}" if ran else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(heads), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    notes = [f"  {r.student}: {r.note}" for r in graded if r.note and len(" ".join(r.note.split())) > NOTE_WIDTH]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def leaderboard(graded) -> str | None:
    """A challenge's class leaderboard (when some student's tests left a record): written next to the
    grades by ``course_lib.challenge.class_leaderboard``; the text to print. None for other assignments
    (the challenge module, and torch with it, is then not even imported)."""
    recs = [r.record for r in graded if isinstance(getattr(r, "record", None), dict)]
    if not recs:
        return None
    from course_lib import challenge

    made = challenge.class_leaderboard(graded, graded.out_dir)
    if not made:
        return None
    rows, paths = made
    first = next((r for r in recs if challenge.RECORD_KEY in r), recs[0])
    n = f", N = {first['n_models']} models per population" if first.get("n_models") else ""
    return (f"Leaderboard (grading split: {first.get('split', '?')}{n})\n{challenge.format_rows(rows)}\n\n"
            f"Wrote {paths['csv']}\n      {paths['png']}\n      {paths['html']} (for the class: pseudonyms)")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    from course_lib.grading import batch, sandbox

    out = args.out or ROOT / "build" / "grades" / args.name
    try:
        batch.check_arguments(args.name, args.submissions)
    except (ValueError, FileNotFoundError) as exc:
        print(f"course.sh grade: {exc}", file=sys.stderr)
        return 2
    problem = sandbox_problem(args.no_sandbox)
    if problem:
        print(f"course.sh grade: refusing to grade: {problem}", file=sys.stderr)
        return 2
    mode = "full" if args.full else "FAST"
    box = sandbox.mode()
    print(f"Grading {args.name} from {args.submissions} ({mode} mode, {args.timeout:g} s per cell, "
          f"sandbox: {box}) ...", flush=True)
    if box == "none":
        print("WARNING: --no-sandbox: students' code runs WITHOUT isolation (for trusted notebooks only).",
              file=sys.stderr, flush=True)
    try:
        graded = batch.grade(args.name, args.submissions, out, workers=args.workers, timeout=args.timeout,
                             fast=not args.full, due=args.due, students=args.roster_ids)
    except RuntimeError as exc:       # nbgrader itself failed: its log says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"course.sh grade: grading stopped: {first}\n  see the logs in {out / 'logs'}/", file=sys.stderr)
        return 1
    print()
    print(table(graded))
    n_feedback = sum(r.feedback is not None for r in graded)
    print(f"\nWrote {graded.csv}\n      {graded.lms_csv} (for the LMS gradebook)\n      "
          f"{graded.out_dir / 'similarity.csv'} (answers to read: close to the solution or the library)\n      "
          f"{n_feedback} feedback file(s) in {graded.out_dir / 'feedback'}/ (without hidden tests)")
    try:
        board = leaderboard(graded)
    except Exception as exc:  # noqa: BLE001 - the grades are written: say what failed, keep them
        board = None
        print(f"course.sh grade: the leaderboard could not be written: {type(exc).__name__}: {exc}", file=sys.stderr)
    if board:
        print(f"\n{board}\n")
    rate = f" = {3600 * graded.ran / graded.seconds:.0f} students/hour" if graded.seconds > 0 and graded.ran else ""
    print(f"{graded.ran} students ran in {graded.seconds:.0f} s{rate} with {graded.workers} "
          f"worker{'s' if graded.workers != 1 else ''} (sandbox: {box})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
