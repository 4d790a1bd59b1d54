"""Every notebook executes under papermill in FAST mode (papermill stops at the first error),
and the committed notebooks are clean (no outputs; lecture notebooks have a parameters cell)."""
import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*/*.ipynb"))
RELEASES = sorted((ROOT / "assignments").glob("*/*.ipynb"))
ALL = LECTURES + SOLUTIONS + RELEASES


def _id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def test_there_are_notebooks():
    """The course has lecture notebooks and graded notebooks."""
    assert LECTURES and SOLUTIONS


@pytest.mark.parametrize("path", ALL, ids=_id)
def test_committed_without_outputs(path):
    """Notebooks are committed without outputs or execution counts."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"cells {dirty} of {_id(path)} have outputs: clear them before committing"


@pytest.mark.parametrize("path", LECTURES, ids=_id)
def test_lecture_has_parameters_cell(path):
    """The first code cell is tagged 'parameters' and defines FAST and SEED."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "parameters" in first.get("metadata", {}).get("tags", []), "first code cell must be tagged 'parameters'"
    src = "".join(first["source"])
    assert "FAST" in src and "SEED" in src
    text = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in text and "## Exercises" in text


@pytest.mark.notebook
@pytest.mark.parametrize("path", LECTURES + SOLUTIONS, ids=_id)
def test_executes_in_fast_mode(path, tmp_path):
    """The notebook runs top to bottom in FAST mode, headless, as the build runs it (course_lib.nbrun:
    a child process, per-cell and whole-notebook timeouts, one retry of a dead or stalled kernel).
    A hang fails with the cell and the seconds; speed belongs in the build table, not in an assertion."""
    from course_lib import nbrun

    params = {"FAST": True} if path in LECTURES else {}
    res = nbrun.execute(path, tmp_path / path.name, parameters=params, cwd=path.parent, env={"COURSE_FAST": "1"},
                        fast=True)
    keep = os.environ.get("COURSE_EXECUTED_DIR")      # keep the executed notebooks (e.g. to tally claims)
    if keep and res.output.exists():
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(res.output, Path(keep) / path.name)
    print(f"{_id(path)}: {res.status} in {res.seconds:.1f} s; slowest cells: "
          + ", ".join(f"{c.cell}: {c.seconds:.1f} s" for c in res.slowest(3)))
    assert res.ok, f"{_id(path)}: {res.status}\n{res.error[-3000:]}"
    if path in LECTURES:     # every lecture judges its claims over seeds and displays the bundle
        from course_lib import claims

        records = claims.read(tmp_path / path.name)
        assert records, f"{_id(path)} displays no claims bundle ({claims.MIMETYPE})"
        assert {r["lecture"] for r in records} == {path.stem}, "a lecture's claims name the lecture"
        problems = claims.check(records)
        assert not problems, f"{_id(path)}: " + "; ".join(problems)
