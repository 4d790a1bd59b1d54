"""Synthetic submissions for the grading regression suite (``tests/test_grading_suite.py``).

One module per assignment, ``tests/grading_cases/<assignment>.py``, defining ``CASES``: a list of
:class:`Case`. Each case is a notebook made from the assignment's *solution* (``base="solution"``)
or its blank *release* (``base="release"``) with the source of some cells replaced, then
autograded end to end with nbgrader; the suite asserts its score.

    Case("solution")                                             # full marks
    Case("blank", base="release", score=0)
    Case("cheat: interactivity", edits={"part_a_answer": SOL_A + "\\nget_ipython().ast_node_interactivity = 'all'"},
         at_most=0, parts={"part_a_tests": 0})
    Case("bug: wrong slice", edits={"part_b_answer": "..."}, score=8)

``timeout`` (seconds per cell) marks a denial-of-service case (an infinite loop, a fork bomb): the suite
grades such cases in a batch of their own with that limit. ``cheats.py`` generates one cheat of every
kind for every assignment (see its doc).

``edits`` maps an nbgrader ``grade_id`` (of an answer cell: ``solution: true`` in its nbgrader
metadata) to the cell's new source. ``score`` is the exact expected total (``None``: full marks
when ``at_most`` is also None); ``at_most`` an upper bound (cheats); ``parts`` expected points of
individual graded test cells by ``grade_id``; ``files`` extra files (name -> text) submitted next to
the notebook (e.g. a helper module). ``solution_of(assignment, grade_id)`` returns the
solution's source of a cell, to build "solution plus one line" cheats.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    name: str
    base: str = "solution"
    edits: dict[str, str] = field(default_factory=dict)
    score: float | None = None
    at_most: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)   # extra files submitted next to the notebook
    timeout: float | None = None                          # seconds per cell (DoS cases: graded apart)


def solution_of(assignment: str, grade_id: str) -> str:
    """The source of the cell with ``grade_id`` in the solution notebook of ``assignment``."""
    nb_path = next((ROOT / "solutions" / assignment).glob("*.ipynb"))
    for cell in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return "".join(cell["source"])
    raise KeyError(f"{assignment} has no cell with grade_id {grade_id!r}")


def stub(assignment: str, grade_id: str) -> str:
    """The blank release's source of an answer cell (the stub a student starts from)."""
    nb_path = next((ROOT / "assignments" / assignment).glob("*.ipynb"))
    for cell in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return "".join(cell["source"])
    raise KeyError(f"{assignment} has no cell with grade_id {grade_id!r}")
