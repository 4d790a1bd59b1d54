"""Check one or all graded assignments: release current, solution full marks, blank zero, both graded
through the class pipeline (the sandboxed executor, then nbgrader) without a problem status.

    python scripts/grade_check.py             # every assignment in solutions/
    python scripts/grade_check.py a00_metrics # one
"""
import sys
import time

from course_lib import grading


def main(names: list[str]) -> int:
    names = names or grading.assignments()
    failed = 0
    for name in names:
        t0 = time.time()
        stale = grading.release_is_current(name)
        reports = grading.check_round_trip(name)
        sol, blank = reports["solution"], reports["blank"]
        ok = not stale and sol.score == sol.max_score and blank.score == 0 and sol.status == blank.status == "ok"
        failed += not ok
        status = lambda r: "" if r.status == "ok" else f" ({r.status}: {r.note})"  # noqa: E731
        print(f"{name}: release {'current' if not stale else 'STALE: ' + '; '.join(stale)} | "
              f"solution {sol.score:g}/{sol.max_score:g}{status(sol)} | blank {blank.score:g}/{blank.max_score:g}"
              f"{status(blank)} | {'OK' if ok else 'FAIL'} ({time.time() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
