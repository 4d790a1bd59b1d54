"""What one student's lecture costs: peak memory and CPU of a FAST lecture run top to bottom.

    .venv/bin/python hub/measure_memory.py [LECTURE ...] [--json OUT]   (default: 00_unlearning_basics)

Runs each lecture as the build does (``course_lib.nbrun``, FAST mode, headless) and samples the whole
process tree with psutil every 0.1 s: the kernel's peak resident memory (what a student's kernel
holds), the tree's peak (runner + kernel), CPU seconds (user + system, the tree) and wall seconds.
docs/admin.md turns these numbers into students per machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def measure(lecture: str) -> dict:
    nb = ROOT / "notebooks" / f"{lecture}.ipynb"
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "COURSE_HEADLESS": "1", "COURSE_QUIET": "1"}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "course_lib.nbrun", str(nb), str(Path(d) / "out.ipynb"),
                                 "-p", "FAST", "true", "--cwd", str(ROOT / "notebooks")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        top = psutil.Process(proc.pid)
        peak_tree = peak_kernel = 0
        cpu: dict[int, float] = {}
        while proc.poll() is None:
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                break
            tree = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                    tree += rss
                    if "ipykernel" in " ".join(p.cmdline()):
                        peak_kernel = max(peak_kernel, rss)
                except psutil.Error:
                    pass
            peak_tree = max(peak_tree, tree)
            time.sleep(0.1)
        wall = time.monotonic() - t0
    return {"lecture": lecture, "status": proc.returncode, "wall_s": round(wall, 1),
            "cpu_s": round(sum(cpu.values()), 1), "peak_kernel_MiB": round(peak_kernel / 2**20),
            "peak_tree_MiB": round(peak_tree / 2**20)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lectures", nargs="*", default=["00_unlearning_basics"])
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for lec in args.lectures:
        row = measure(lec)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
