"""The nbgrader round trip: generate the student release, check it is current, and autograde a few
submissions through the class pipeline (``autograde`` is ``batch.grade(..., workers=1)``)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .. import config
from .nbgrader_io import assignments, run_nbgrader, scratch_course


def generate_release(name: str, root: Path | None = None, out: Path | None = None) -> Path:
    """Generate the student version of ``name``. By default in place (``assignments/<name>``);
    with ``out`` in a scratch course whose release folder is copied to ``out``."""
    root = Path(root or config.ROOT)
    if out is None:
        run_nbgrader(["generate_assignment", name, "--force"], root)
        return root / "assignments" / name
    tmp = scratch_course(root, [name])
    try:
        run_nbgrader(["generate_assignment", name, "--force"], tmp)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp / "assignments" / name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _normalised(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return {"cells": [{k: c.get(k) for k in ("cell_type", "source", "metadata")} for c in nb["cells"]],
            "kernelspec": nb.get("metadata", {}).get("kernelspec")}


def release_is_current(name: str, root: Path | None = None) -> list[str]:
    """Regenerate ``name`` in a scratch folder and compare with the committed release.

    Returns a list of differences (empty when the committed ``assignments/<name>`` is current).
    """
    root = Path(root or config.ROOT)
    with tempfile.TemporaryDirectory() as d:
        fresh = generate_release(name, root, Path(d) / name)
        committed = root / "assignments" / name
        problems = []
        fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        old_files = {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()} if committed.exists() else set()
        for f in sorted(fresh_files ^ old_files):
            problems.append(f"{f}: only in the {'fresh' if f in fresh_files else 'committed'} release")
        for f in sorted(fresh_files & old_files):
            a, b = fresh / f, committed / f
            same = _normalised(a) == _normalised(b) if f.suffix == ".ipynb" else a.read_bytes() == b.read_bytes()
            if not same:
                problems.append(f"{f}: differs from a fresh `nbgrader generate_assignment {name}`")
    return problems


def autograde(name: str, submissions: dict[str, Path], root: Path | None = None, fast: bool = True,
              workers: int = 1, timeout: float | None = None) -> dict:
    """Autograde a few submissions of one assignment through the class pipeline (:func:`batch.grade`).

    ``submissions`` maps a student id to a notebook (copied under the assignment's notebook name)
    or to a folder (a student's whole submission, copied as it is). Returns the
    :class:`batch.StudentResult` by student; never raises for one student's broken notebook.
    """
    from . import batch

    root = Path(root or config.ROOT)
    nb_name = next((root / "solutions" / name).glob("*.ipynb")).name
    with tempfile.TemporaryDirectory(prefix="course-autograde-") as d:
        subs = Path(d) / "submissions"
        subs.mkdir()
        for student, nb in submissions.items():
            nb = Path(nb)
            if nb.is_dir():
                shutil.copytree(nb, subs / student)
            else:
                (subs / student).mkdir()
                shutil.copy(nb, subs / student / nb_name)
        graded = batch.grade(name, subs, Path(d) / "out", workers=workers, fast=fast, root=root,
                             **({"timeout": timeout} if timeout else {}))
        return {r.student: r for r in graded}


def check_round_trip(name: str, root: Path | None = None) -> dict:
    """Solution must score full marks, blank release zero. Returns the two reports."""
    root = Path(root or config.ROOT)
    sol = next((root / "solutions" / name).glob("*.ipynb"))
    blank = root / "assignments" / name / sol.name
    if not blank.exists():
        raise FileNotFoundError(f"{blank} is missing: run `nbgrader generate_assignment {name} --force`")
    return autograde(name, {"solution": sol, "blank": blank}, root)
