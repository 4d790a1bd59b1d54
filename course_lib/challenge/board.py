"""The class leaderboard: rows, CSV, figure and page (see :mod:`course_lib.challenge`)."""
from __future__ import annotations

import csv
import hashlib
import html
import math
from pathlib import Path
from typing import Mapping

from .protocol import Split
from .scoring import Result, baselines


# ------------------------------------------------------------------------------------ tables, board

COLUMNS = ["rank", "name", "kind", "F", "RA_u/RA_r", "TA_u/TA_r", "final score", "seconds", "status"]


def leaderboard_rows(students: Mapping[str, dict], baseline_results: Mapping[str, Result | dict]) -> list[dict]:
    """The leaderboard: one row per student (``students``: name -> :meth:`Result.record`) and per baseline,
    ranked by final score (refused and unscored rows last, without a rank)."""
    rows = []
    for kind, group in (("student", students), ("baseline", baseline_results)):
        for who, rec in group.items():
            rec = rec.record() if isinstance(rec, Result) else dict(rec or {})
            val = lambda k: rec.get(k) if isinstance(rec.get(k), (int, float)) else float("nan")  # noqa: E731
            rows.append({"name": who, "kind": kind, "F": val("F"), "RA_u/RA_r": val("ra_ratio"),
                         "TA_u/TA_r": val("ta_ratio"), "final score": val("final"), "seconds": val("seconds"),
                         "status": rec.get("status") or "not scored"})
    ok = [r for r in rows if math.isfinite(r["final score"]) and r["status"] != "over budget"]
    ok.sort(key=lambda r: (-r["final score"], r["kind"] != "baseline", r["name"]))
    rest = sorted((r for r in rows if r not in ok), key=lambda r: (r["kind"], r["name"]))
    for i, r in enumerate(ok, 1):
        r["rank"] = i
    for r in rest:
        r["rank"] = ""
    return ok + rest


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def write_leaderboard(rows: list[dict], out_dir: Path, *, title: str = "a08_challenge", pseudonyms: bool = True) -> dict:
    """Write ``leaderboard.csv`` (every column, real names), ``leaderboard.png`` (final score per student,
    baselines as lines) and ``feedback/leaderboard.html`` (for the class: students under pseudonyms, a
    salted hash of their id with a secret kept in ``out_dir/.pseudonym-salt``, unless ``pseudonyms=False``)
    into ``out_dir``; the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "leaderboard.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_fmt(r[c], 4) if c not in ("rank", "seconds") else
                        (_fmt(r[c], 1) if c == "seconds" else r[c]) for c in COLUMNS])
    salt_file = out_dir / ".pseudonym-salt"          # one secret per class: ids cannot be hashed to find a row
    if not salt_file.exists():
        import secrets
        salt_file.write_text(secrets.token_hex(16), encoding="utf-8")
    salt = salt_file.read_text(encoding="utf-8").strip()
    alias = {r["name"]: (f"student {hashlib.sha256((salt + r['name']).encode()).hexdigest()[:6]}"
                         if pseudonyms and r["kind"] == "student" else r["name"]) for r in rows}
    png = out_dir / "leaderboard.png"
    _figure(rows, alias, png, title)
    fb = out_dir / "feedback"
    fb.mkdir(parents=True, exist_ok=True)
    page = fb / "leaderboard.html"
    import base64
    img = base64.b64encode(png.read_bytes()).decode()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(alias[r['name']] if c == 'name' else _fmt(r[c]))}</td>"
                                    for c in COLUMNS) + "</tr>" for r in rows)
    page.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)} leaderboard</title>"
                    f"<h1>{html.escape(title)}: leaderboard</h1><p>Final score = F &times; (RA<sub>u</sub>/RA<sub>r</sub>)"
                    f" &times; (TA<sub>u</sub>/TA<sub>r</sub>) on the grading split; baselines in the same table."
                    f"{' Students appear under pseudonyms.' if pseudonyms else ''}</p>"
                    f"<img alt='final score per student, baselines as lines' src='data:image/png;base64,{img}'>"
                    f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>", encoding="utf-8")
    return {"csv": csv_path, "png": png, "html": page}


def _figure(rows: list[dict], alias: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    studs = [r for r in rows if r["kind"] == "student"]
    base = [r for r in rows if r["kind"] == "baseline" and math.isfinite(r["final score"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(studs) + 3), 4))
    vals = [r["final score"] if math.isfinite(r["final score"]) and r["status"] != "over budget" else 0.0
            for r in studs]
    ax.bar(range(len(studs)), vals, color=["tab:gray" if r["status"] != "ok" else "tab:blue" for r in studs])
    ax.set_xticks(range(len(studs)), [alias[r["name"]] for r in studs], rotation=60, ha="right", fontsize=8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(base):
        ax.axhline(r["final score"], ls="--", lw=1, color=colors[(k + 1) % len(colors)], label=r["name"])
    ax.set_ylabel("final score (grading split)")
    ax.set_title(f"{title}: students (bars; grey: refused or partly failed) and baselines (lines)")
    if base:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------- grading a class

#: The key under which a graded notebook's tests leave their record for the class leaderboard.
RECORD_KEY = "challenge"


def class_record(result: Result, split: Split) -> dict:
    """What a graded notebook's test cells leave for the leaderboard (as ``__course_record__``): the
    student's result and the baselines' on the same split, as plain data."""
    split = split.resolved()
    return {RECORD_KEY: result.record(), "split": split.name, "n_models": split.n_models,
            "baselines": {k: r.record() for k, r in baselines(split).items()}}


def class_leaderboard(results, out_dir: Path, *, title: str = "a08_challenge", pseudonyms: bool = True):
    """The leaderboard of a graded class (``results``: rows with ``.student``, ``.record`` as left by
    :func:`class_record`, ``.status``): writes ``leaderboard.csv``, ``leaderboard.png`` and
    ``feedback/leaderboard.html`` in ``out_dir`` (:func:`write_leaderboard`) and returns
    ``(rows, paths)``; None when no student left a record (not a challenge)."""
    results = list(results)
    recs = {r.student: r.record for r in results if isinstance(getattr(r, "record", None), dict)
            and RECORD_KEY in r.record}
    if not recs:
        return None
    base = next(iter(recs.values())).get("baselines") or {}
    students = {}
    for r in results:
        rec = recs.get(r.student)
        students[r.student] = dict(rec[RECORD_KEY]) if rec else {"status": f"not scored ({r.status})"}
    rows = leaderboard_rows(students, base)
    return rows, write_leaderboard(rows, out_dir, title=title, pseudonyms=pseudonyms)


def format_rows(rows: list[dict]) -> str:
    """The leaderboard as a text table (for the terminal)."""
    heads = COLUMNS
    body = [[str(r["rank"]), r["name"], r["kind"], *(_fmt(r[c]) for c in ("F", "RA_u/RA_r", "TA_u/TA_r",
                                                                        "final score")),
             _fmt(r["seconds"], 1), r["status"]] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(heads, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths]), *(line(b) for b in body)])
