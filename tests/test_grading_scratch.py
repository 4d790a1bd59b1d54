"""Scratch courses cannot collide: grading runs side by side (as the suite's pytest workers, a TA's
`./course.sh grade` and `check` do) each own a fresh scratch course (``tempfile.mkdtemp``), create and
remove it themselves, and every gradebook opens. This runs the class pipeline (``grading.autograde``:
collect, the sandboxed executor, nbgrader autograde) twice at once on a tiny assignment."""
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib import grading

ROOT = Path(__file__).resolve().parent.parent
NAME = "a99_tiny"


def _meta(**kw):
    base = {"grade": False, "locked": False, "schema_version": 3, "solution": False, "task": False}
    return {"nbgrader": {**base, **kw}}


def tiny_course(root: Path) -> Path:
    """A course with one assignment: a solution cell and a 1-point test cell."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "solutions" / NAME).mkdir(parents=True)
    nb = new_notebook(cells=[
        new_markdown_cell("# Tiny\n\nPart A (1 point)", metadata=_meta(grade_id="intro", locked=True)),
        new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                      metadata=_meta(grade_id="part_a", solution=True)),
        new_code_cell("assert double(2) == 4", metadata=_meta(grade_id="test_a", grade=True, locked=True, points=1)),
    ])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "solutions" / NAME / f"{NAME}.ipynb")
    grading.generate_release(NAME, root)
    return root


@pytest.mark.nbgrader
def test_parallel_grading_runs_each_own_their_scratch_course(tmp_path, monkeypatch):
    """Two autograde runs at once: every gradebook opens, every score is right, and each
    run removes exactly its own scratch course (the scratch folder is empty afterwards)."""
    root = tiny_course(tmp_path / "course")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sol = root / "solutions" / NAME / f"{NAME}.ipynb"
    blank = root / "assignments" / NAME / f"{NAME}.ipynb"

    def one(k):
        return k, grading.autograde(NAME, {f"sol{k}": sol, f"blank{k}": blank}, root)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(2)))
    for k, reps in results:
        assert reps[f"sol{k}"].score == 1 and reps[f"sol{k}"].max_score == 1, reps
        assert reps[f"blank{k}"].score == 0, reps
    assert not list(scratch.iterdir()), f"scratch courses left behind: {list(scratch.iterdir())}"
