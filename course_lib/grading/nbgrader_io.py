"""nbgrader's side of grading: scratch courses, nbgrader commands with a hang guard, the autograde
step that writes the sandboxed executor's results into nbgrader's notebook (so nbgrader's gradebook
and feedback are filled per part), feedback without hidden tests, and reading the gradebook back.

nbgrader keeps release, collection, gradebook and feedback; it never executes a student's code:
``nbgrader_config.py`` replaces its ``Execute`` step by :class:`ApplyResults`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nbgrader.plugins import ExportPlugin

from .. import config
from . import cells as C

#: Seconds an nbgrader command that runs no student code may take (a hang guard).
NBGRADER_TIMEOUT_S = 900
#: Environment variable naming the folder of executor results (``<student>.json``).
RESULTS_ENV = "COURSE_GRADING_RESULTS"


def env(fast: bool = True) -> dict:
    """The environment of nbgrader commands and graded notebooks."""
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")  # nbgrader calls alembic
    e["COURSE_FAST"] = "1" if fast else "0"
    e.setdefault("COURSE_QUIET", "1")
    e.setdefault("COURSE_HEADLESS", "1")
    return e


def run_nbgrader(args: list[str], cwd: Path, fast: bool = True, timeout: float = NBGRADER_TIMEOUT_S,
                 extra_env: dict | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` in ``cwd``; RuntimeError (with the log's end) if it fails or runs past ``timeout``."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env={**env(fast), **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode("utf-8", "replace")
        raise RuntimeError(f"`nbgrader {' '.join(args)}` ran past {timeout:.0f} s in {cwd}; its log ends:\n"
                           f"{(out or '')[-2000:]}") from None
    if log is not None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"\n===== nbgrader {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assignments(root: Path | None = None) -> list[str]:
    """Names of the graded assignments (folders of ``solutions/`` holding a notebook)."""
    root = Path(root or config.ROOT)
    return sorted(p.name for p in (root / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebook_name(course: Path, name: str) -> str:
    return next((Path(course) / "solutions" / name).glob("*.ipynb")).name


def scratch_course(root: Path, names: list[str]) -> Path:
    """A private copy of the course (config and the named sources) in a new temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix="course-grade-"))
    shutil.copy(root / "nbgrader_config.py", tmp / "nbgrader_config.py")
    for a in names:
        shutil.copytree(root / "solutions" / a, tmp / "solutions" / a,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return tmp


def add_release_files(release: Path, dest: Path) -> None:
    """The release's data files next to a submitted notebook (those the student lacks): the one
    place that copies them."""
    for f in Path(release).rglob("*"):
        if f.is_file() and f.suffix != ".ipynb":
            target = dest / f.relative_to(release)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)


def dedupe_cells(path: Path) -> int:
    """Drop the second and later copies of a cell whose nbgrader grade_id repeats (a copy-pasted answer
    cell: nbgrader refuses such a notebook; the executor uses the first copy too). Returns how many."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    seen, keep = set(), []
    for cell in nb.get("cells", []):
        gid = C.grade_id(cell)
        if gid and gid in seen:
            continue
        seen.add(gid)
        keep.append(cell)
    dropped = len(nb.get("cells", [])) - len(keep)
    if dropped:
        nb["cells"] = keep
        Path(path).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return dropped


# ----------------------------------------------------------------- results into nbgrader's notebook

def outputs_for(rec: dict) -> list[dict]:
    """nbformat outputs of one executed cell record (printed text, then the error if any)."""
    from nbformat.v4 import new_output
    outs = []
    if rec.get("stdout"):
        outs.append(new_output("stream", name="stdout", text=rec["stdout"]))
    if rec.get("error"):
        ename = "TestFailed" if rec.get("kind") == "test" else "Error"
        outs.append(new_output("error", ename=ename, evalue=rec["error"], traceback=[f"{ename}: {rec['error']}"]))
    return outs


def apply_results(nb, result: dict) -> None:
    """Write an executor result into an nbformat notebook, cell by grade_id; a test cell the result
    does not cover (the run stopped before it) gets an error saying why."""
    from nbformat.v4 import new_output
    by_id = {}
    for rec in result.get("cells", []):
        if rec.get("grade_id"):
            by_id.setdefault(rec["grade_id"], rec)
    why = result.get("note") or "the notebook could not be graded"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        gid = C.grade_id(cell)
        if gid in by_id:
            cell.outputs = outputs_for(by_id[gid])
        elif C.kind(cell) == "test":
            cell.outputs = [new_output("error", ename="NotRun", evalue=why, traceback=[f"NotRun: {why}"])]


def run_executor(source: Path, notebook: Path, folder: Path, out: Path, cell_s: float, total_s: float,
                 fast: bool = True, extra_env: dict | None = None) -> dict:
    """Run the sandboxed executor on one notebook in a fresh process (with a hang guard); its result.
    ``folder``'s files are copied into a private working folder for the student's code."""
    work = Path(tempfile.mkdtemp(prefix="course-sandbox-"))
    try:
        os.chmod(work, 0o755)
        wd = work / "work"
        shutil.copytree(folder, wd, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        cmd = [sys.executable, "-m", "course_lib.grading.executor", str(source), str(notebook), str(wd), str(out),
               "--cell-timeout", str(cell_s), "--total-timeout", str(total_s)]
        guard = total_s + 120
        try:
            proc = subprocess.run(cmd, env={**env(fast), **(extra_env or {})}, capture_output=True, text=True, timeout=guard,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
            failed = proc.returncode != 0 or not out.exists()
            tail = (proc.stdout + proc.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            failed, tail = True, f"the grader's process ran past {guard:.0f} s"
        if failed:
            res = {"status": "error", "note": f"grading failed: {tail.strip().splitlines()[-1] if tail.strip() else '?'}",
                   "cells": [], "score": 0.0, "max_score": sum(C.parts(C.load(source)).values()), "parts": {},
                   "seconds": 0.0, "log": tail}
            out.write_text(json.dumps(res), encoding="utf-8")
        return json.loads(out.read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def autograde_preprocessors() -> list:
    """nbgrader's autograde steps with ``Execute`` replaced by :class:`ApplyResults` (for
    ``nbgrader_config.py``)."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, LimitOutput, SaveAutoGrades

    return [ApplyResults, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades, AssignLatePenalties,
            CheckCellMetadata]


def feedback_preprocessors() -> list:
    """nbgrader's feedback steps plus :class:`HideTests` (no hidden test reaches a student)."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades
    return [GetGrades, HideTests, CSSHTMLHeaderPreprocessor]


def _preprocessor_base():
    from nbgrader.preprocessors import NbGraderPreprocessor
    return NbGraderPreprocessor


class ApplyResults(_preprocessor_base()):
    """nbgrader's ``Execute`` step, done by the sandboxed executor: the result for this student is
    read from ``$COURSE_GRADING_RESULTS/<student>.json`` when the course's grading pipeline made
    it, else computed now (a plain ``nbgrader autograde`` by hand goes through the sandbox too)."""

    @property
    def coursedir(self):
        """The course folder of the converter running this step (nbgrader gives it to converters, not to
        their preprocessors: walk up the parents), else one read from the configuration."""
        obj = self.parent
        while obj is not None and not hasattr(obj, "coursedir"):
            obj = getattr(obj, "parent", None)
        if obj is None:
            from nbgrader.coursedir import CourseDirectory
            return CourseDirectory(config=self.config)
        return obj.coursedir

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        student, name = info.get("student"), info.get("assignment")
        folder = Path(resources.get("metadata", {}).get("path") or ".")
        results = os.environ.get(RESULTS_ENV)
        path = Path(results) / f"{student}.json" if results else None
        if path is not None and path.exists():
            result = json.loads(path.read_text(encoding="utf-8"))
        else:
            root = Path(self.coursedir.root)
            source = root / self.coursedir.source_directory / name / (info.get("notebook", name) + ".ipynb")
            with tempfile.TemporaryDirectory() as d:
                sub = Path(d) / "submission.ipynb"
                import nbformat
                nbformat.write(nb, str(sub))
                cell_s = float(os.environ.get("COURSE_CELL_TIMEOUT", 300))
                result = run_executor(source, sub, folder, Path(d) / "result.json", cell_s, cell_s * 3)
        apply_results(nb, result)
        return nb, resources


class HideTests(_preprocessor_base()):
    """Feedback shows a test cell's visible code, its score and its message: the hidden region is
    replaced by one comment (nbgrader's feedback would otherwise show it whole)."""

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            if cell.cell_type == "code" and C.HIDDEN_BEGIN in cell.source:
                visible, _ = C.split_hidden(cell.source)
                cell.source = visible.rstrip() + "\n# (hidden tests run when graded; they are not shown)"
        return nb, resources


# ----------------------------------------------------------------- the gradebook

class PartsExportPlugin(ExportPlugin):
    """Exporter for ``nbgrader export --exporter=course_lib.grading.nbgrader_io.PartsExportPlugin
    --to FILE.json``: every submission's total, max and points per graded cell, as JSON
    ``{student: {"assignment", "score", "max_score", "parts": {grade_id: points}, "timestamp"}}``."""

    def export(self, gradebook) -> None:
        """nbgrader's hook: write the JSON file."""
        out = {}
        for assignment in gradebook.assignments:
            if self.assignment and assignment.name not in self.assignment:
                continue
            for sub in assignment.submissions:
                out[sub.student.id] = {
                    "assignment": assignment.name, "score": float(sub.score), "max_score": float(sub.max_score),
                    "parts": {g.name: float(g.score) for nb in sub.notebooks for g in nb.grades},
                    "timestamp": str(sub.timestamp or "")}
        Path(self.to or "parts.json").write_text(json.dumps(out, indent=1), encoding="utf-8")


def export_parts(course: Path) -> dict:
    """The gradebook of ``course`` as :class:`PartsExportPlugin` writes it (read in this process)."""
    from nbgrader.api import Gradebook

    db = Path(course) / "build" / "nbgrader" / "gradebook.db"
    with tempfile.TemporaryDirectory() as d, Gradebook("sqlite:///" + str(db)) as gb:
        PartsExportPlugin(to=str(Path(d) / "p.json")).export(gb)
        return json.loads((Path(d) / "p.json").read_text(encoding="utf-8"))
