"""Build the course: execute every notebook with papermill, regenerate assignments, write the site.

    python scripts/build_course.py                 # FAST on a CPU, full mode on a GPU
    python scripts/build_course.py --fast          # force FAST
    python scripts/build_course.py --full          # force full mode (GPU, CIFAR-10)
    python scripts/build_course.py --only 00_unlearning_basics a00_metrics

Outputs: build/notebooks/*.ipynb (executed), assignments/ (regenerated from solutions/), the course
site build/html/ (index.html, every executed lecture, every student assignment, index.png when
Chromium is installed), build/instructor/*.html (executed solutions: NOT for students), and a
table of notebooks with status and seconds (also kept in build/build_table.json, so that a build
with --only updates its rows and keeps the others). Exits 1 if any step failed.

The build never hangs: every notebook runs in a child process (course_lib/nbrun.py) with a per-cell
timeout (COURSE_CELL_TIMEOUT seconds; FAST default 300) and a whole-notebook timeout
(COURSE_NOTEBOOK_TIMEOUT; FAST default 900), after which the child and its kernel are killed. A notebook
whose kernel died or timed out is run once more: "ok (retried)" in the table when the second run
passes, else "FAILED: timeout after N s in cell K (first line)"; the build goes on and exits 1.
Explorers run headless (COURSE_HEADLESS=1: the static view, no live widgets). A lecture over 60 s gets
its slowest cells printed.

The log shows the table and real problems only: the kernels run on IPC sockets in a private folder
(on POSIX), so ipykernel's "Kernel is running over TCP without encryption" warning does not apply.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import course_site  # noqa: E402
from course_lib import config, grading, nbrun  # noqa: E402


def notebooks(root: Path = ROOT) -> list[tuple[str, Path]]:
    lectures = sorted((root / "notebooks").glob("*.ipynb"))
    solutions = sorted((root / "solutions").glob("*/*.ipynb"))
    return [("lecture", p) for p in lectures] + [("solution", p) for p in solutions]


def execute(kind: str, path: Path, fast: bool, out_dir: Path) -> Path:
    """Execute one notebook (see :func:`run_one`); raises RuntimeError with the status when it fails."""
    res = run_one(kind, path, fast, out_dir)
    if not res.ok:
        raise RuntimeError(f"{path.name}: {res.status}\n{res.error[-1500:]}")
    return res.output


def run_one(kind: str, path: Path, fast: bool, out_dir: Path) -> nbrun.RunResult:
    """Execute one notebook into ``out_dir`` through :func:`course_lib.nbrun.execute`: a child process
    with a per-cell timeout (``COURSE_CELL_TIMEOUT``), a whole-notebook timeout
    (``COURSE_NOTEBOOK_TIMEOUT``), one retry of a run whose kernel died or timed out, and headless
    explorers (``COURSE_HEADLESS=1``). Graded notebooks take no parameters: they read ``COURSE_FAST``."""
    out = Path(out_dir) / path.name
    return nbrun.execute(path, out, parameters={"FAST": fast} if kind == "lecture" else {}, cwd=path.parent,
                         env={"COURSE_FAST": "1" if fast else "0"}, fast=fast)


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def to_html(nb_path: Path, out: Path, html_root: Path) -> Path:
    return course_site.export_html(nb_path, out, html_root)


def _load_table(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """The build table after this build: this build's rows replace the same (kind, notebook)."""
    fresh = {(r["kind"], r["notebook"]) for r in new}
    kept = [r for r in old if (r["kind"], r["notebook"]) not in fresh]
    order = {"lecture": 0, "solution": 1, "release": 2, "site": 3}
    return sorted(kept + new, key=lambda r: (order.get(r["kind"], 9), r["notebook"]))


def build_site(root: Path, build_dir: Path, rows: list[dict], mode: str, browser: bool = True) -> dict:
    """Write the site into ``build_dir/html``: MathJax, every student release in ``root/assignments``,
    the index; then (when Chromium is installed) open it in a headless browser with the network
    off and keep a screenshot of the index. Returns a build-table row for the site."""
    t0 = time.perf_counter()
    html_dir = Path(build_dir) / "html"
    html_dir.mkdir(parents=True, exist_ok=True)
    problems = []
    course_site.copy_mathjax(html_dir)
    course_site.copy_mathjax(Path(build_dir) / "instructor")    # the executed solutions' formulas, offline too
    for release in sorted(p for p in (Path(root) / "assignments").glob("*") if p.is_dir()):
        if any(release.glob("*.ipynb")):
            try:
                course_site.export_release(release, html_dir)
            except Exception as exc:  # noqa: BLE001  (report it in the table)
                problems.append(f"{release.name}: {type(exc).__name__}: {exc}")
    site_row = {"kind": "site", "notebook": "build/html/index.html", "status": "ok", "seconds": 0.0,
                "mode": mode, "date": _dt.date.today().isoformat()}
    course_site.write_index(html_dir, course_site.lessons(root), rows + [site_row], mode=mode)
    note = ""
    if browser:
        why = course_site.browser_unavailable()
        if why:
            note = f"browser check skipped: {why}"
        else:
            rep = course_site.check_site(html_dir, screenshot=html_dir / "index.png")
            problems += rep.problems
            note = (f"opened {len(rep.pages)} pages in headless Chromium ({rep.links} links, {rep.images} figures, "
                    f"network off) in {rep.seconds:.1f} s; screenshot {html_dir / 'index.png'}")
    site_row["status"] = "ok" if not problems else f"FAILED: {len(problems)} problems"
    site_row["seconds"] = time.perf_counter() - t0
    # write the index again so that its own row is complete
    course_site.write_index(html_dir, course_site.lessons(root), rows + [site_row], mode=mode)
    site_row["problems"], site_row["note"] = problems, note
    return site_row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="force FAST mode")
    mode.add_argument("--full", action="store_true", help="force full mode (needs a GPU and CIFAR-10)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebook stems to run (default: all)")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML rendering and the site")
    ap.add_argument("--no-release", action="store_true", help="do not regenerate assignments/")
    args = ap.parse_args(argv)

    fast = True if args.fast else False if args.full else config.fast_mode()
    mode_name = ("FAST" if fast else "full") + (" (smoke run)" if config.smoke() else "")
    build_dir = config.BUILD_DIR
    nb_dir, html_dir, instructor_dir = build_dir / "notebooks", build_dir / "html", build_dir / "instructor"
    for d in (nb_dir, html_dir, instructor_dir):
        d.mkdir(parents=True, exist_ok=True)
    todo = [(k, p) for k, p in notebooks() if not args.only or p.stem in args.only]
    if args.only and len(todo) < len(args.only):
        known = ", ".join(p.stem for _, p in notebooks())
        print(f"unknown notebook in --only {args.only}; known: {known}", file=sys.stderr)
        return 2
    print(f"building {len(todo)} notebooks in {mode_name} mode into {build_dir}")

    rows: list[dict] = []
    today = _dt.date.today().isoformat()

    def row(kind, name, status, sec):
        rows.append({"kind": kind, "notebook": name, "status": status, "seconds": sec, "mode": mode_name,
                     "date": today})

    slow = []
    for kind, path in todo:
        res = run_one(kind, path, fast, nb_dir)
        status = res.status
        if res.log.strip():   # warnings the notebook's process printed deserve a look
            print("\n".join(f"  | {ln}" for ln in res.log.strip().splitlines()[-40:]), file=sys.stderr)
        if res.ok and not args.no_html:
            try:
                # executed solutions hold the answers and hidden tests: outside the student site
                target = (html_dir if kind == "lecture" else instructor_dir) / f"{res.output.stem}.html"
                to_html(res.output, target, target.parent)
            except Exception as exc:  # noqa: BLE001  (keep building the others; report at the end)
                status = f"FAILED: HTML export: {type(exc).__name__}: {exc}"[:200]
        elif not res.ok:
            print(f"  {path.name}: {res.error.strip()[-1200:]}", file=sys.stderr)
        row(kind, _rel(path), status, res.seconds)
        print(f"  {rows[-1]['notebook']:55s} {status:10s} {rows[-1]['seconds']:6.1f} s", flush=True)
        if kind == "lecture" and res.seconds > nbrun.SLOW_NOTEBOOK_S:
            slow.append((rows[-1]["notebook"], res))

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
            row("release", f"assignments/{name}/", status, time.perf_counter() - t0)

    table_file = build_dir / "build_table.json"
    all_rows = merge_rows(_load_table(table_file), rows)
    if not args.no_html:
        site = build_site(ROOT, build_dir, [r for r in all_rows if r["kind"] != "site"], mode_name)
        for p in site.pop("problems"):
            print(f"  site: {p}", file=sys.stderr)
        note = site.pop("note")
        rows.append(site)
        all_rows = merge_rows(all_rows, [site])
    table_file.write_text(json.dumps(all_rows, indent=1))

    width = max(len(r["notebook"]) for r in rows) if rows else 10
    sw = max([10] + [len(r["status"]) for r in rows])
    print(f"\n{'kind':9s} {'notebook':{width}s} {'status':{sw}s} {'seconds':>8s}")
    print("-" * (width + sw + 21))
    for r in rows:
        print(f"{r['kind']:9s} {r['notebook']:{width}s} {r['status']:{sw}s} {r['seconds']:8.1f}")
    for name, res in slow:
        print(f"\n{name} took {res.seconds:.0f} s (over {nbrun.SLOW_NOTEBOOK_S:.0f} s); its slowest cells:")
        for c in res.slowest(5):
            print(f"  cell {c.cell:3d} {c.seconds:7.1f} s  {c.first_line}")
    failed = [r for r in rows if not r["status"].startswith("ok")]
    print(f"\n{len(rows) - len(failed)} ok, {len(failed)} failed; executed notebooks in {nb_dir}, "
          f"executed solutions (instructors only) in {instructor_dir}")
    if not args.no_html:
        print(f"course site: {html_dir / 'index.html'}" + (f" ({note})" if note else ""))
        print(f"instructors' page (solutions, build table, problems; not for students): "
              f"{instructor_dir / 'index.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
