"""Students per hour of `./course.sh grade` on this machine: a class of N copies of one assignment's
solution (and, with --loop, one student whose last part loops forever), graded with W workers.

    .venv/bin/python benchmarks/grading_throughput.py a00_metrics --students 12 --workers 2 [--loop] [--timeout 60]

Prints the wall time, seconds per autograded notebook (wall time x workers / students) and students
per hour. Speed is measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("assignment")
    p.add_argument("--students", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--loop", action="store_true", help="one student's last answer cell loops forever")
    a = p.parse_args()
    from course_lib.grading import batch

    sol = next((ROOT / "solutions" / a.assignment).glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as d:
        subs = Path(d) / "subs"
        subs.mkdir()
        for i in range(a.students):
            shutil.copy(sol, subs / f"s{i:03d}.ipynb")
        if a.loop:
            nb = json.loads(sol.read_text(encoding="utf-8"))
            answers = [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
            answers[-1]["source"] = "while True:\n    pass\n"
            (subs / "s000.ipynb").write_text(json.dumps(nb), encoding="utf-8")
        t0 = time.perf_counter()
        graded = batch.grade(a.assignment, subs, Path(d) / "out", workers=a.workers, timeout=a.timeout)
        wall = time.perf_counter() - t0
    scores = sorted({r.score for r in graded})
    print(f"{a.assignment}: {a.students} students, {a.workers} workers{' (one looping)' if a.loop else ''}: "
          f"{wall:.0f} s wall, {wall * a.workers / a.students:.1f} s per notebook per worker, "
          f"{3600 * a.students / wall:.0f} students/hour; scores {scores}")


if __name__ == "__main__":
    main()
