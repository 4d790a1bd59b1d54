"""Grading helpers: friendly assertions for visible tests in graded notebooks, and the
nbgrader round trip (generate the student release, autograde a solution and a blank copy).

Course layout (see ``nbgrader_config.py``): ``solutions/<a>/<a>.ipynb`` is the nbgrader
*source*, ``assignments/<a>/<a>.ipynb`` the generated *release* that students receive.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import config


# ----------------------------------------------------------------- assertions for students

def _arr(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_shape(x, shape: tuple, name: str = "result") -> None:
    """Fail with a helpful message unless ``x`` has exactly ``shape``."""
    got = tuple(_arr(x).shape)
    if got != tuple(shape):
        raise AssertionError(f"{name} should have shape {tuple(shape)}, but has shape {got}. "
                             f"Check which axis you reduce over and whether you keep the batch axis.")


def assert_close(actual, expected, name: str = "result", atol: float = 1e-6, rtol: float = 1e-6,
                 hint: str = "") -> None:
    """Fail with the largest discrepancy (and a hint) unless ``actual`` ~= ``expected``."""
    a, e = _arr(actual).astype(np.float64), _arr(expected).astype(np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{name} should have shape {e.shape}, but has shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{name} contains NaN or infinite values. {hint}".strip())
    if not np.allclose(a, e, atol=atol, rtol=rtol):
        i = np.unravel_index(np.argmax(np.abs(a - e)), a.shape) if a.ndim else ()
        raise AssertionError(f"{name} is off: at index {tuple(int(j) for j in i)} you give {float(a[i]):.6g}, "
                             f"expected {float(e[i]):.6g} (tolerance {atol}). {hint}".strip())


def _code_names(code) -> set[str]:
    """Every global, attribute and imported name a code object (and the code nested in it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def assert_own_code(fn, forbidden: tuple[str, ...], name: str | None = None) -> None:
    """Fail unless ``fn`` does its work itself: it may not use (call, import or reach through a
    global) anything from the modules ``forbidden``, e.g. ``("course_lib.audit",)`` when the
    student is to write what that module already implements. Hidden tests call it."""
    label = name or getattr(fn, "__name__", "your function")
    code = getattr(fn, "__code__", None)
    if code is None:
        raise AssertionError(f"{label} must be a plain Python function")
    env = dict(getattr(fn, "__globals__", {}))
    for var, cell in zip(code.co_freevars, fn.__closure__ or ()):   # names from enclosing functions
        try:
            env[var] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    used = _code_names(code) | set(code.co_freevars)
    for word in sorted(used):
        obj = env.get(word)
        mod = getattr(obj, "__name__", "") if isinstance(obj, type(np)) else getattr(obj, "__module__", "") or ""
        hits = [f for f in forbidden if word == f or word.startswith(f + ".") or mod == f or mod.startswith(f + ".")]
        if hits:
            raise AssertionError(f"{label} uses {word!r} from {hits[0]}: write this part yourself "
                                 f"instead of calling the course library's reference")


# ----------------------------------------------------------------- the nbgrader round trip

def assignments(root: Path | None = None) -> list[str]:
    """Names of the graded assignments (folders of ``solutions/``)."""
    root = Path(root or config.ROOT)
    return sorted(p.name for p in (root / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _env(fast: bool = True) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # nbgrader calls alembic
    env["COURSE_FAST"] = "1" if fast else "0"
    env.setdefault("COURSE_QUIET", "1")
    return env


def _nbgrader(args: list[str], cwd: Path, fast: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(fast), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _scratch_course(root: Path, names: list[str]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="course-grade-"))
    shutil.copy(root / "nbgrader_config.py", tmp / "nbgrader_config.py")
    for a in names:
        shutil.copytree(root / "solutions" / a, tmp / "solutions" / a,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return tmp


def generate_release(name: str, root: Path | None = None, out: Path | None = None) -> Path:
    """Generate the student version of ``name``. By default in place (``assignments/<name>``);
    with ``out`` in a scratch course whose release folder is copied to ``out``."""
    root = Path(root or config.ROOT)
    if out is None:
        _nbgrader(["generate_assignment", name, "--force"], root)
        return root / "assignments" / name
    tmp = _scratch_course(root, [name])
    try:
        _nbgrader(["generate_assignment", name, "--force"], tmp)
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


@dataclass
class GradeReport:
    """Score of one submission of one assignment."""

    assignment: str
    student: str
    score: float
    max_score: float


def autograde(name: str, submissions: dict[str, Path], root: Path | None = None,
              fast: bool = True) -> dict[str, GradeReport]:
    """Autograde notebooks as nbgrader would, in a scratch course.

    ``submissions`` maps a student id to a notebook (e.g. ``{"solution": solutions/a/a.ipynb,
    "blank": assignments/a/a.ipynb}``). Returns the score of each.
    """
    from nbgrader.api import Gradebook

    root = Path(root or config.ROOT)
    tmp = _scratch_course(root, [name])
    try:
        _nbgrader(["generate_assignment", name, "--force"], tmp)
        nb_name = next((tmp / "solutions" / name).glob("*.ipynb")).name
        for student, nb in submissions.items():
            dest = tmp / "build" / "nbgrader" / "submitted" / student / name
            shutil.copytree(tmp / "assignments" / name, dest)  # data files travel with the release
            shutil.copy(nb, dest / nb_name)
        _nbgrader(["autograde", name, "--force"], tmp, fast=fast)
        db = "sqlite:///" + str(tmp / "build" / "nbgrader" / "gradebook.db")
        out = {}
        with Gradebook(db) as gb:
            for student in submissions:
                sub = gb.find_submission(name, student)
                out[student] = GradeReport(name, student, float(sub.score), float(sub.max_score))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_round_trip(name: str, root: Path | None = None) -> dict[str, GradeReport]:
    """Solution must score full marks, blank release zero. Returns the two reports."""
    root = Path(root or config.ROOT)
    sol = next((root / "solutions" / name).glob("*.ipynb"))
    blank = root / "assignments" / name / sol.name
    if not blank.exists():
        raise FileNotFoundError(f"{blank} is missing: run `nbgrader generate_assignment {name} --force`")
    return autograde(name, {"solution": sol, "blank": blank}, root)
