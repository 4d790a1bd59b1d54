"""Am I ready to hand in? Run a student's graded notebook as the grader will and say, part by part,
which visible tests pass, which fail (with the test's message) and which parts are still
``NotImplementedError``.

    ./course.sh check a02_sisa                     # assignments/a02_sisa/a02_sisa.ipynb
    ./course.sh check path/to/my/a02_sisa.ipynb    # any copy of it

The notebook runs top to bottom in a fresh kernel, in its own folder, through nbgrader's validator
(the code behind ``nbgrader validate``), so what it reports is what ``nbgrader validate`` reports,
plus the per-part view. The notebook file is not modified. Exit status: 0 when every visible test
passes, 1 otherwise, 2 when the notebook cannot be found. Hidden tests run only when graded.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def resolve(arg: str, root: Path = ROOT) -> Path:
    """A path to a notebook, or an assignment's name (its student version in ``assignments/``)."""
    p = Path(arg)
    if p.suffix == ".ipynb" and p.exists():
        return p.resolve()
    if p.is_dir() and len(list(p.glob("*.ipynb"))) == 1:
        return next(p.glob("*.ipynb")).resolve()
    folder = root / "assignments" / arg
    if folder.is_dir():
        nbs = sorted(folder.glob("*.ipynb"))
        if nbs:
            return (folder / f"{arg}.ipynb") if (folder / f"{arg}.ipynb").exists() else nbs[0]
    known = sorted(d.name for d in (root / "assignments").iterdir() if d.is_dir()) if (root / "assignments").exists() else []
    raise FileNotFoundError(f"{arg!r} is neither a notebook nor an assignment; assignments: {', '.join(known)}")


def kernel_config(sock_dir: str):
    """Traitlets config for the run: the kernel on IPC sockets in a private folder (the build's, from
    course_lib.nbrun) and nbgrader's per-cell timeout (COURSE_CELL_TIMEOUT, else the mode's default)."""
    from course_lib import nbrun

    c = nbrun.kernel_config(sock_dir)
    c.Execute.timeout = nbrun.cell_timeout()
    return c


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _errors(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _stderr(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")


def _one_line(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def report(nb) -> tuple[list[dict], list[str]]:
    """Per test cell of an executed notebook: part, label, points, status ("pass", "fail", "todo")
    and message. Also the notes (e.g. an answer cell that failed outside any test)."""
    from nbgrader import utils

    part, part_todo, rows, notes = "(before any part)", {}, [], []
    todo_cells: dict[str, list[str]] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#{1,3}\s+(Part\s+\S+.*)$", cell.source, flags=re.M)
            if m:
                part = m.group(1).strip()
            continue
        if cell.cell_type != "code":
            continue
        meta = _meta(cell)
        errs = _errors(cell)
        if meta.get("solution") and not meta.get("grade"):
            if any(e.get("ename") == "NotImplementedError" for e in errs):
                todo_cells.setdefault(part, []).append(meta.get("grade_id", "?"))
            elif errs:
                notes.append(f"{part}: your answer cell `{meta.get('grade_id', '?')}` raised "
                             f"{errs[0].get('ename')}: {_one_line(errs[0].get('evalue', ''))}")
            continue
        if not utils.is_grade(cell):
            if errs and not meta:
                notes.append(f"{part}: a cell raised {errs[0].get('ename')}: {_one_line(errs[0].get('evalue', ''))}")
            continue
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        label = first.lstrip("# ").strip() if first.startswith("#") else meta.get("grade_id", "?")
        label = re.sub(r"^Part\s+", "", label)
        score, max_score = utils.determine_grade(cell)
        row = {"part": part, "label": label, "grade_id": meta.get("grade_id", "?"), "points": max_score}
        if score is None:
            row.update(status="manual", message="graded by hand (no automatic test)")
        elif score >= max_score:
            row.update(status="pass", message="")
        elif part in todo_cells:
            row.update(status="todo", message=f"still raises NotImplementedError (answer cell "
                                              f"{', '.join(todo_cells[part])})")
        elif errs:
            e = errs[0]
            msg = f"{e.get('ename')}: {_one_line(e.get('evalue', ''))}"
            if e.get("ename") == "NotImplementedError":
                msg += " (it uses an answer of an earlier part that is not written yet)"
            row.update(status="fail", message=msg)
        elif _stderr(cell):
            row.update(status="fail", message="the test cell wrote to stderr (a test cell that prints a "
                                              f"warning or error scores 0): {_one_line(_stderr(cell))}")
        else:
            row.update(status="fail", message="partial credit only")
        rows.append(row)
    return rows, notes


def check(path: Path, stream=sys.stdout) -> int:
    """Run ``path`` through nbgrader's validator and print the per-part report. Returns 0 when every
    visible test passes."""
    from nbgrader.validator import Validator

    class _Keep(Validator):
        executed = None

        def _preprocess(self, nb):
            nb = super()._preprocess(nb)
            self.executed = nb
            return nb

    from course_lib import config

    path = Path(path).resolve()
    mode = "FAST" if config.fast_mode() else "full"
    print(f"Checking {path} in a fresh kernel ({mode} mode; set COURSE_FAST=0 or 1 to choose) ...", file=stream,
          flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-check-") as sock_dir:
        v = _Keep(config=kernel_config(sock_dir))
        results = v.validate(str(path))
    seconds = time.perf_counter() - t0
    if results.get("type_changed"):
        print("\nThe type of some nbgrader cells changed (e.g. a code cell made markdown). Restore them: "
              "the grader cannot grade this notebook.", file=stream)
        for c in results["type_changed"]:
            print(f"  {c['old_type']} -> {c['new_type']}: {_one_line(c['source'], 100)}", file=stream)
        return 1
    rows, notes = report(v.executed)
    print(f"ran in {seconds:.0f} s\n", file=stream)
    tag = {"pass": "PASS", "fail": "FAIL", "todo": "TODO", "manual": "HAND"}
    last = None
    for r in rows:
        if r["part"] != last:
            print(r["part"], file=stream)
            last = r["part"]
        pts = f"{r['points']:g} pt" + ("s" if r["points"] != 1 else "")
        print(f"  {tag[r['status']]}  {r['label']} ({pts})", file=stream)
        if r["message"]:
            print(f"        {r['message']}", file=stream)
    for n in notes:
        print(f"  note: {n}", file=stream)
    if results.get("changed"):
        print(f"\nWARNING: you changed {len(results['changed'])} test or read-only cell(s); the grader uses the "
              "original cells, so your result there may differ. Copy them back from the release.", file=stream)
    rows = [r for r in rows if r["status"] != "manual"]
    n_pass = sum(r["status"] == "pass" for r in rows)
    n_fail = sum(r["status"] == "fail" for r in rows)
    n_todo = sum(r["status"] == "todo" for r in rows)
    failed = results.get("failed", [])
    verdict = "passes" if not failed and not results.get("changed") else f"fails on {len(failed)} cell(s)"
    print(f"\nnbgrader validate: {verdict}.", file=stream)
    print(f"Visible tests: {n_pass} pass, {n_fail} fail, {n_todo} not done (of {len(rows)}). "
          f"{'Ready to hand in' if n_pass == len(rows) and not results.get('changed') else 'Not ready yet'}; "
          "hidden tests run when your notebook is graded.", file=stream)
    return 0 if n_pass == len(rows) and not failed and not results.get("changed") else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", help="an assignment's name (e.g. a02_sisa) or a path to a notebook")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("COURSE_HEADLESS", "1")   # the kernel inherits it: explorers draw static views
    try:
        path = resolve(args.notebook)
    except FileNotFoundError as exc:
        print(f"course.sh check: {exc}", file=sys.stderr)
        return 2
    return check(path)


if __name__ == "__main__":
    sys.exit(main())
