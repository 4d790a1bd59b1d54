"""Stress test of the lectures' explorer cells (not in CI): each lecture runs once up to its explorer,
then its explorer cell and the cell that calls ``plots.explorer`` are executed again REPEATS times in the
same kernel, headless as in the build (``COURSE_HEADLESS=1``) or, with ``--live``, building the real
widgets (the setting of nbclient's intermittent hang, jupyter/nbclient#312).

    .venv/bin/python scripts/stress_explorers.py                  # every lecture, 20 repeats, headless
    .venv/bin/python scripts/stress_explorers.py 04_boundary --repeats 50 --live

Every cell runs under a timeout (``--cell-timeout``, default 120 s) and the whole lecture under an alarm,
so a hang is reported as a failure with the cell, never waited on. Prints one line per lecture: the
repeats that finished, the median and slowest seconds of one repeat. Exits 1 if any repeat failed.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def stress(path: Path, repeats: int, cell_timeout: int, live: bool) -> tuple[int, list[float], str]:
    """(repeats finished, seconds per repeat, problem) for one lecture."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from course_lib import nbrun

    nb = parameterize_notebook(load_notebook_node(str(path)), {"FAST": True})
    tagged = [i for i, c in enumerate(nb.cells) if "explorer" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        return 0, [], f"{len(tagged)} cells tagged 'explorer'"
    view_i = tagged[0]
    call_i = view_i + 1
    os.environ["COURSE_HEADLESS"] = "0" if live else "1"
    os.environ["COURSE_FAST"] = "1"
    with __import__("tempfile").TemporaryDirectory(prefix="course-kernel-") as sock:
        client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", config=nbrun.kernel_config(sock),
                                resources={"metadata": {"path": str(path.parent)}})
        times: list[float] = []
        with client.setup_kernel():
            for i in range(call_i + 1):
                if nb.cells[i].cell_type == "code":
                    client.execute_cell(nb.cells[i], i)
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i in (view_i, call_i):
                    nb.cells[i].outputs = []
                    client.execute_cell(nb.cells[i], i)
                times.append(time.perf_counter() - t0)
    return len(times), times, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lectures", nargs="*", help="lecture stems (default: all)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cell-timeout", type=int, default=120)
    ap.add_argument("--live", action="store_true", help="build the real widgets (COURSE_HEADLESS=0)")
    args = ap.parse_args(argv)
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.lectures:
        paths = [p for p in paths if p.stem in args.lectures]
    failed = 0
    signal.signal(signal.SIGALRM, _on_alarm)
    for path in paths:
        signal.alarm(600 + args.repeats * args.cell_timeout)   # the whole lecture: never an endless wait
        t0 = time.perf_counter()
        try:
            done, times, problem = stress(path, args.repeats, args.cell_timeout, args.live)
        except _Alarm:
            done, times, problem = 0, [], "the lecture ran past its alarm"
        except Exception as exc:  # noqa: BLE001 - a timeout or an error in a cell: report it, go on
            done, times, problem = 0, [], f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
        finally:
            signal.alarm(0)
        ok = done == args.repeats and not problem
        failed += not ok
        stats = (f"median {statistics.median(times):.2f} s, slowest {max(times):.2f} s per repeat" if times else "")
        print(f"{path.stem:22s} {'ok' if ok else 'FAILED'}: {done}/{args.repeats} repeats "
              f"({'live widgets' if args.live else 'headless'}) {stats} {problem}; "
              f"{time.perf_counter() - t0:.0f} s in all", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
