"""Copies flagged for a human, never zeroed: how close each answer cell is to the instructor's
solution of that cell and to the course library's reference code that the assignment forbids.

Code is compared as a sequence of tokens with names, strings and numbers abstracted (renaming
variables does not hide a copy; comments and blank lines do not count), by difflib's ratio. A
cell scoring at least :data:`THRESHOLD` on at least :data:`MIN_TOKENS` tokens is flagged in
``similarity.csv`` and in the student's note.
"""
from __future__ import annotations

import csv
import difflib
import importlib
import inspect
import io
import keyword
import tokenize
from pathlib import Path

from . import cells as C

THRESHOLD = 0.9
MIN_TOKENS = 40


def tokens(code: str) -> list[str]:
    """The code's token sequence with identifiers, strings and numbers abstracted."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
                continue
            if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
                out.append("N")
            elif tok.type == tokenize.STRING:
                out.append("S")
            elif tok.type == tokenize.NUMBER:
                out.append("0")
            else:
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return code.split()
    return out


def ratio(a: list[str], b: list[str]) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a and b else 0.0


def _library_sources(forbidden: list[str]) -> dict[str, list[str]]:
    out = {}
    for name in forbidden:
        try:
            obj = importlib.import_module(name)
        except ImportError:
            mod, _, attr = name.rpartition(".")
            try:
                obj = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError):
                continue
        members = [obj] if not inspect.ismodule(obj) else [v for _, v in inspect.getmembers(obj, inspect.isfunction)
                                                            if v.__module__ == obj.__name__]
        for f in members:
            try:
                out[f"{f.__module__}.{f.__qualname__}"] = tokens(inspect.getsource(f))
            except (OSError, TypeError):
                pass
    return out


def report(course: Path, name: str, nb_name: str, students: list[str], out_csv: Path) -> dict[str, str]:
    """Write ``out_csv`` (student, cell, closest reference, similarity) for every flagged cell; the
    flags as a note per student."""
    source = C.load(Path(course) / "solutions" / name / nb_name)
    solution = {C.grade_id(c): tokens(C.source(c)) for c in source["cells"] if C.kind(c) == "answer" and C.meta(c)}
    forbidden = list(((source.get("metadata", {}) or {}).get("course", {}) or {}).get("forbidden", []))
    library = _library_sources(forbidden)
    rows, notes = [], {}
    for s in students:
        path = Path(course) / "build" / "nbgrader" / "submitted" / s / name / nb_name
        try:
            nb = C.load(path)
        except (OSError, ValueError):
            continue
        for cell in nb.get("cells", []):
            gid = C.grade_id(cell)
            if gid not in solution or cell.get("cell_type") != "code":
                continue
            mine = tokens(C.source(cell))
            if len(mine) < MIN_TOKENS:
                continue
            best = [(ratio(mine, solution[gid]), "the instructor's solution")]
            best += [(ratio(mine, t), f"course library {k}") for k, t in library.items()]
            score, what = max(best)
            if score >= THRESHOLD:
                rows.append([s, gid, what, f"{score:.2f}"])
                notes.setdefault(s, []).append(f"{gid} {score:.0%} like {what}")
    with open(out_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "cell", "closest to", "similarity"])
        w.writerows(rows)
    return {s: "for a human to look at: " + ", ".join(v) for s, v in notes.items()}
