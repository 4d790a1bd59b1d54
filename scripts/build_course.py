"""Build the course: execute every notebook with papermill, render HTML, regenerate assignments.

    python scripts/build_course.py                 # FAST on a CPU, full mode on a GPU
    python scripts/build_course.py --fast          # force FAST
    python scripts/build_course.py --full          # force full mode (GPU, CIFAR-10)
    python scripts/build_course.py --only 00_unlearning_basics a00_metrics

Outputs: build/notebooks/*.ipynb (executed), build/html/*.html, assignments/ (regenerated from
solutions/), and a table of notebooks with status and seconds. Exits 1 if any step failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course_lib import config, grading  # noqa: E402


def notebooks() -> list[tuple[str, Path]]:
    lectures = sorted((ROOT / "notebooks").glob("*.ipynb"))
    solutions = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    return [("lecture", p) for p in lectures] + [("solution", p) for p in solutions]


def execute(kind: str, path: Path, fast: bool, out_dir: Path) -> Path:
    import papermill as pm

    out = out_dir / path.name
    env_fast = os.environ.get("COURSE_FAST")
    os.environ["COURSE_FAST"] = "1" if fast else "0"  # graded notebooks read the environment
    try:
        pm.execute_notebook(str(path), str(out), parameters={"FAST": fast} if kind == "lecture" else {},
                            cwd=str(path.parent), progress_bar=False, kernel_name="python3")
    finally:
        if env_fast is None:
            os.environ.pop("COURSE_FAST", None)
        else:
            os.environ["COURSE_FAST"] = env_fast
    return out


def to_html(nb_path: Path, html_dir: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(nb_path))
    out = html_dir / (nb_path.stem + ".html")
    out.write_text(body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="force FAST mode")
    mode.add_argument("--full", action="store_true", help="force full mode (needs a GPU and CIFAR-10)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebook stems to run (default: all)")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    ap.add_argument("--no-release", action="store_true", help="do not regenerate assignments/")
    args = ap.parse_args(argv)

    fast = True if args.fast else False if args.full else config.fast_mode()
    nb_dir, html_dir = config.BUILD_DIR / "notebooks", config.BUILD_DIR / "html"
    nb_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    todo = [(k, p) for k, p in notebooks() if not args.only or p.stem in args.only]
    if args.only and len(todo) < len(args.only):
        known = ", ".join(p.stem for _, p in notebooks())
        print(f"unknown notebook in --only {args.only}; known: {known}", file=sys.stderr)
        return 2
    print(f"building {len(todo)} notebooks in {'FAST' if fast else 'full'} mode into {config.BUILD_DIR}")

    rows = []
    for kind, path in todo:
        t0 = time.perf_counter()
        try:
            out = execute(kind, path, fast, nb_dir)
            if not args.no_html:
                to_html(out, html_dir)
            status = "ok"
        except Exception as exc:  # keep building the others; report at the end
            status = f"FAILED: {type(exc).__name__}"
            traceback.print_exc(limit=1)
        rows.append((f"{kind}", path.relative_to(ROOT).as_posix(), status, time.perf_counter() - t0))
        print(f"  {rows[-1][1]:55s} {status:10s} {rows[-1][3]:6.1f} s", flush=True)

    if not args.no_release:
        for name in grading.assignments():
            if args.only and not any(p.parent.name == name for _, p in todo):
                continue
            t0 = time.perf_counter()
            try:
                grading.generate_release(name)
                status = "ok"
            except Exception as exc:
                status = f"FAILED: {type(exc).__name__}"
                print(exc, file=sys.stderr)
            rows.append(("release", f"assignments/{name}/", status, time.perf_counter() - t0))

    width = max(len(r[1]) for r in rows) if rows else 10
    print(f"\n{'kind':9s} {'notebook':{width}s} {'status':10s} {'seconds':>8s}")
    print("-" * (width + 31))
    for kind, name, status, sec in rows:
        print(f"{kind:9s} {name:{width}s} {status:10s} {sec:8.1f}")
    failed = [r for r in rows if r[2] != "ok"]
    print(f"\n{len(rows) - len(failed)} ok, {len(failed)} failed; executed notebooks in {nb_dir}, HTML in {html_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
