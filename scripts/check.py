"""Am I ready to hand in? Run a student's graded notebook exactly as the grader does and say, part by
part, which visible tests pass, which fail (with the test's message) and which parts are not done.

    ./course.sh check a02_sisa                     # assignments/a02_sisa/a02_sisa.ipynb
    ./course.sh check path/to/my/a02_sisa.ipynb    # any copy of it

The notebook goes through the grader's own executor (``course_lib.grading.executor``): your answer
cells run in the grader's sandbox, the given cells and the test cells are the release's (whatever
your copy holds in their place), and the tests run apart from your code. The only difference from
grading is the source: here the release (``assignments/<a>/<a>.ipynb``, found from the notebook's
cells), so only the visible tests run; hidden tests run when your notebook is graded. A visible
test that PASSes here passes when graded. A part is TODO while its answer cell is still the
release's stub (or your function still raises the stub's ``NotImplementedError``).

The notebook file is not modified. Exit status: 0 when every visible test passes, 1 otherwise, 2
when the notebook (or its assignment) cannot be found. Time limits: COURSE_CELL_TIMEOUT seconds per
cell (the grader's default, 300), three times that for the whole notebook.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PART = re.compile(r"^#{1,3}\s+(Part\s+\S+.*)$", re.M)
_STUB_RAISE = re.compile(r"NotImplementedError in your function (\w+):\s*$")
#: The student's folder is copied next to the notebook when it is at most this big (files, bytes).
_MAX_FILES, _MAX_BYTES = 200, 200 * 2**20


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
    raise FileNotFoundError(f"{arg!r} is neither a notebook nor an assignment; assignments: {', '.join(_known(root))}")


def _known(root: Path) -> list[str]:
    rel = root / "assignments"
    return sorted(d.name for d in rel.iterdir() if d.is_dir()) if rel.exists() else []


def _graded_ids(nb: dict) -> set[str]:
    """grade_ids of the answer and test cells (the ones that say which assignment a notebook is)."""
    from course_lib.grading import cells as C

    return {C.grade_id(c) for c in nb.get("cells", []) if C.grade_id(c) and C.kind(c) in ("answer", "test")}


def find_release(notebook: Path, root: Path = ROOT) -> Path:
    """The release notebook ``notebook`` is a copy of: the assignment sharing most of its graded
    cells (its name breaks ties). FileNotFoundError when none shares any."""
    from course_lib.grading import cells as C

    try:
        mine = _graded_ids(C.load(notebook))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"{notebook} is not a readable notebook ({exc})") from None
    best, best_key = None, (0, False)
    for name in _known(root):
        rel = root / "assignments" / name / f"{name}.ipynb"
        if not rel.exists():
            continue
        shared = len(mine & _graded_ids(C.load(rel)))
        key = (shared, name in (notebook.stem, notebook.parent.name))
        if shared and key > best_key:
            best, best_key = rel, key
    if best is None:
        raise FileNotFoundError(f"{notebook} has none of the graded cells of any assignment "
                                f"({', '.join(_known(root))}); is it a copy of a release?")
    return best


def _one_line(text: str, width: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _same(a: str, b: str) -> bool:
    norm = lambda s: "\n".join(ln.rstrip() for ln in s.strip().splitlines())  # noqa: E731
    return norm(a) == norm(b)


def _work_folder(notebook: Path, release_dir: Path, dest: Path) -> list[str]:
    """The folder the student's code runs in: the files next to the notebook (when the folder is
    small) and the release's data files, as when graded. Returns notes."""
    from course_lib.grading import nbgrader_io

    notes = []
    folder = notebook.parent
    files = []
    for p in folder.rglob("*"):
        if len(files) > _MAX_FILES:
            break
        if p.is_file() and p.suffix != ".ipynb" and ".ipynb_checkpoints" not in p.parts:
            files.append(p)
    if len(files) > _MAX_FILES or sum(p.stat().st_size for p in files) > _MAX_BYTES:
        notes.append(f"the files next to your notebook were not copied ({folder} is large): the grader has only "
                     "what you hand in")
    else:
        for p in files:
            target = dest / p.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, target)
    nbgrader_io.add_release_files(release_dir, dest)
    return notes


def report(release_nb: dict, submission_nb: dict, result: dict) -> tuple[list[dict], list[str]]:
    """Per test cell of the release: part, label, points, status ("pass", "fail", "todo", "manual")
    and message; and the notes (an answer cell that raised, a changed test cell, ...)."""
    from course_lib.grading import cells as C

    sub_cells: dict[str, dict] = {}
    for c in submission_nb.get("cells", []):
        if C.grade_id(c):
            sub_cells.setdefault(C.grade_id(c), c)
    records = {r["grade_id"]: r for r in result.get("cells", []) if r.get("grade_id")}
    points = C.parts(release_nb)
    part, rows, notes = "(before any part)", [], []
    answers: dict[str, list[tuple[str, str]]] = {}     # part -> [(grade_id, state)] state: todo/missing/done
    defined: dict[str, set[str]] = {}                  # part -> function names its answer cells define
    changed = []
    for cell in release_nb["cells"]:
        if cell.get("cell_type") == "markdown":
            m = _PART.search(C.source(cell))
            part = m.group(1).strip() if m else part
        k, gid = C.kind(cell), C.grade_id(cell)
        if k == "manual":
            rows.append({"part": part, "label": gid, "grade_id": gid, "points": points.get(gid, 0.0),
                         "status": "manual", "message": "graded by hand (no automatic test)"})
            continue
        if cell.get("cell_type") != "code" or not gid:
            continue
        mine = sub_cells.get(gid)
        if k == "answer":
            if mine is None or mine.get("cell_type") != "code":
                state = "missing"
            elif _same(C.source(mine), C.source(cell)):
                state = "todo"
            else:
                state = "done"
                rec = records.get(gid) or {}
                err = rec.get("error") or ""
                if re.match(r"NotImplementedError:?\s*$", err):
                    state = "todo"
                elif err:
                    notes.append(f"{part}: your answer cell `{gid}` raised {_one_line(err)}")
            answers.setdefault(part, []).append((gid, state))
            src = C.source(mine) if mine is not None else ""
            defined.setdefault(part, set()).update(re.findall(r"^\s*def\s+(\w+)\s*\(", src, flags=re.M))
            continue
        if mine is not None and not _same(C.source(mine), C.source(cell)):
            changed.append(gid)
        if k != "test":
            continue
        rec = records.get(gid)
        first = C.source(cell).strip().splitlines()[0] if C.source(cell).strip() else ""
        label = first.lstrip("# ").strip() if first.startswith("#") else gid
        label = _one_line(re.sub(r"^Part\s+\S+?:\s*", "", label), 100)
        row = {"part": part, "label": label, "grade_id": gid, "points": points.get(gid, 0.0)}
        rows.append(row)
        if rec is not None and rec.get("passed"):
            row.update(status="pass", message="")
            continue
        err = (rec or {}).get("error") or ""
        mine_answers = answers.get(part, [])
        missing = [g for g, s in mine_answers if s == "missing"]
        todo = [g for g, s in mine_answers if s == "todo"]
        stub = _STUB_RAISE.search(err)
        if rec is None:
            row.update(status="fail", message=f"not run: {result.get('note') or 'the check stopped before it'}")
        elif missing:
            row.update(status="fail", message=f"your notebook has no answer cell `{', '.join(missing)}` (deleted?), "
                                              "so it runs empty: copy the cell back from the release")
        elif todo:
            row.update(status="todo", message=f"not done yet: answer cell `{', '.join(todo)}` is still the "
                                              "release's stub (NotImplementedError)")
        elif stub and stub.group(1) in defined.get(part, set()):
            row.update(status="todo", message=f"not done yet: your function {stub.group(1)} raises "
                                              "NotImplementedError (it is still the stub, or it calls a function "
                                              "that is)")
        elif stub:
            row.update(status="fail", message=f"{_one_line(err)} (it uses {stub.group(1)}, the answer of an "
                                              "earlier part, which is not written yet)")
        else:
            row.update(status="fail", message=_one_line(err) or "the test failed")
    for rec in result.get("cells", []):
        if rec.get("kind") == "answer" and not rec.get("grade_id") and rec.get("error"):
            notes.append(f"a cell you added raised {_one_line(rec['error'])}")
    for n in result.get("notes", []):
        m = re.match(r"given cell (\S+) failed in the sandbox:\s*(.*)$", str(n), flags=re.S)
        if m:
            n = (f"the given cell `{m.group(1)}` failed when run with your answers"
                 + (f": {m.group(2)}" if m.group(2).strip() else " (it uses the parts that are not done yet?)"))
        notes.append(_one_line(n))
    if changed:
        notes.append(f"you changed {len(changed)} test or given cell(s) ({', '.join(changed)}): the grader runs "
                     "the release's cells in their place (as this check did), whatever your copy holds")
    return rows, notes


def check(path: Path, stream=sys.stdout, root: Path = ROOT) -> int:
    """Run ``path`` through the grader's executor with its release as the source and print the
    per-part report. Returns 0 when every visible test passes, 1 otherwise, 2 when no release fits."""
    from course_lib import config
    from course_lib.grading import batch, nbgrader_io, sandbox
    from course_lib.grading import cells as C

    path = Path(path).resolve()
    try:
        release = find_release(path, root)
    except FileNotFoundError as exc:
        print(f"course.sh check: {exc}", file=sys.stderr)
        return 2
    try:
        mode = sandbox.mode()
    except (RuntimeError, ValueError) as exc:
        print(f"course.sh check: {exc}", file=sys.stderr)
        return 2
    fast = config.fast_mode()
    cell_s = float(os.environ.get("COURSE_CELL_TIMEOUT") or batch.DEFAULT_TIMEOUT_S)
    total_s = cell_s * batch.TOTAL_FACTOR
    print(f"Checking {path}\n  as the grader runs it, against the release {release.relative_to(root)} "
          f"({'FAST' if fast else 'full'} mode; set COURSE_FAST=0 or 1 to choose; sandbox: {mode}) ...",
          file=stream, flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-check-") as d:
        work = Path(d) / "work"
        work.mkdir()
        notes = _work_folder(path, release.parent, work)
        result = nbgrader_io.run_executor(release, path, work, Path(d) / "result.json", cell_s, total_s, fast)
    seconds = time.perf_counter() - t0
    try:
        submission = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        submission = {"cells": []}
    rows, more = report(C.load(release), submission, result)
    notes += more
    ran_in = result.get("sandbox", mode)
    print(f"ran in {seconds:.0f} s; sandbox: {ran_in}" + (
        " (bubblewrap is not available here: your code ran without isolation, which is fine for checking "
        "your own notebook)" if ran_in == "none" else " (your code ran isolated, as when graded)") + "\n",
        file=stream)
    if result.get("status", "ok") != "ok":
        print(f"Your notebook did not run to the end ({result.get('status')}): {result.get('note', '')}\n",
              file=stream)
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
    auto = [r for r in rows if r["status"] != "manual"]
    n_pass = sum(r["status"] == "pass" for r in auto)
    n_fail = sum(r["status"] == "fail" for r in auto)
    n_todo = sum(r["status"] == "todo" for r in auto)
    ready = n_pass == len(auto) and result.get("status", "ok") == "ok"
    print(f"\nVisible tests: {n_pass} pass, {n_fail} fail, {n_todo} not done (of {len(auto)}). "
          f"{'Ready to hand in' if ready else 'Not ready yet'}; hidden tests run when your notebook is graded.",
          file=stream)
    return 0 if ready else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./course.sh check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", help="an assignment's name (e.g. a02_sisa) or a path to a notebook")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("COURSE_HEADLESS", "1")   # explorers draw static views
    try:
        path = resolve(args.notebook)
    except FileNotFoundError as exc:
        print(f"course.sh check: {exc}", file=sys.stderr)
        return 2
    return check(path)


if __name__ == "__main__":
    sys.exit(main())
