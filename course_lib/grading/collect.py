"""Collect a folder of submissions into nbgrader's layout, with a status per student.

``nbgrader zip_collect`` with :class:`SubmissionCollector` turns a folder of ``<student>.ipynb`` /
``<student>.zip`` (the notebook perhaps renamed, perhaps in a subfolder) / anything else into
nbgrader's ``submitted/<student>/<assignment>/<notebook>.ipynb`` layout, with nbgrader's
``timestamp.txt``. Every student gets a :class:`Submission` saying what was found: renamed, several
files, late, corrupt, not a notebook, missing (from the roster), another assignment's notebook.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from nbgrader.plugins import FileNameCollectorPlugin
from traitlets import Unicode

from .. import config
from . import cells as C
from . import nbgrader_io

# Statuses of a student. The first three mean there was nothing to grade (score 0).
CORRUPT, NOT_NOTEBOOK, MISSING = "corrupt", "not a notebook", "missing"
RENAMED, SEVERAL, LATE, NOT_ON_ROSTER = "renamed", "several files", "late", "not on roster"
TIMED_OUT, CRASHED, ERROR, WRONG = "timed out", "crashed", "error", "wrong assignment"
_NOT_GRADED = {CORRUPT, NOT_NOTEBOOK, MISSING, WRONG}

_UNSAFE = re.compile(r"[^\w.@+-]+")


# ----------------------------------------------------------------- records

@dataclass
class Submission:
    """What :func:`collect` found for one student: ``flags`` (statuses such as ``"renamed"``),
    ``notes`` (why, in words), the entry of the submissions folder and the hand-in time (UTC)."""

    student: str
    source: str = ""
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timestamp: datetime | None = None
    path: Path | None = None

    @property
    def graded(self) -> bool:
        """True when there is a notebook to grade."""
        return not _NOT_GRADED & set(self.flags)

    def flag(self, status: str, note: str = "") -> None:
        """Add a status (once) and its explanation."""
        if status not in self.flags:
            self.flags.append(status)
        if note:
            self.notes.append(note)


# ----------------------------------------------------------------- small helpers

def student_id(entry: str, is_dir: bool) -> str:
    """The student id of an entry of the submissions folder: a file's name without its extension,
    a folder's (or an extracted zip's) name; characters other than letters, digits and ``_.@+-``
    (spaces, for instance) become ``_``."""
    base = entry if is_dir or "." not in entry[1:] else entry.rsplit(".", 1)[0]
    return _UNSAFE.sub("_", base).strip("._") or "_"


def _ignored(rel: Path) -> bool:
    """Hidden files, checkpoints and macOS zip debris are never submissions."""
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.parts)


def parse_due(text: str) -> datetime:
    """A due date as UTC without zone: ISO-like text, local time unless it names a zone
    (``2025-03-01 23:59``, ``2025-03-01T23:59+01:00``)."""
    from dateutil import parser

    try:
        when = parser.parse(text)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a date and time: {text!r} (e.g. 2025-03-01 23:59)") from exc
    return when.astimezone(timezone.utc).replace(tzinfo=None)


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    text = " ".join(f"{v} {u}" for v, u in ((days, "d"), (hours, "h"), (mins, "min")) if v)
    return text or f"{seconds:.0f} s"


def _notebook_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable notebook (None when it is one)."""
    import nbformat

    try:
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({str(exc)[:80]})"
    try:
        nbformat.validate(nbformat.reads(json.dumps(nb), as_version=4))
    except Exception as exc:  # noqa: BLE001 - nbformat raises several kinds
        return f"not a valid notebook ({' '.join(str(exc).split())[:80]})"
    return None


def _zip_problem(path: Path) -> str | None:
    """Why the zip at ``path`` cannot be extracted (None when it can)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        return f"not a readable zip file ({exc})"
    return f"damaged zip file (member {bad})" if bad else None


def _contents(path: Path, limit: int = 5) -> str:
    """A few file names inside a zip or folder, for a message."""
    if path.is_dir():
        names = [str(p.relative_to(path)) for p in sorted(path.rglob("*")) if p.is_file()]
    else:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
    names = [n for n in names if not _ignored(Path(n))]
    more = f", ... ({len(names)} files)" if len(names) > limit else ""
    return (", ".join(names[:limit]) + more) if names else "nothing"


# ----------------------------------------------------------------- nbgrader plugins

class SubmissionCollector(FileNameCollectorPlugin):
    """Collector plugin for ``nbgrader zip_collect`` (``--ZipCollectApp.collector_plugin=``).

    The student id is the first path component under the extracted folder (a notebook's name
    without ``.ipynb``, an extracted zip's or a folder's name). Of a student's notebooks the one
    named like the assignment's is collected (else the first), under the assignment's name. Each
    decision is appended to ``report`` as a JSON line: the file, whether it was renamed, the
    other notebooks, a problem (an unreadable notebook is reported, not collected) and the hand-in
    time: ``timestamp.txt`` in the student's zip or folder (nbgrader's convention, UTC unless it
    names a zone), else the modification time of the entry in the archive folder.
    """

    notebook = Unicode("", help="The assignment's notebook name, e.g. a02_sisa.ipynb").tag(config=True)
    report = Unicode("", help="File to which each decision is appended (JSON lines)").tag(config=True)
    extracted_dir = Unicode("", help="zip_collect's extracted folder").tag(config=True)
    archive_dir = Unicode("", help="zip_collect's archive folder").tag(config=True)

    def collect(self, submitted_file: str) -> dict | None:
        """nbgrader's hook: ``{student_id, file_id, timestamp}`` for the file to collect, else None."""
        extracted = Path(self.extracted_dir).resolve()
        path = Path(submitted_file).resolve()
        rel = path.relative_to(extracted)
        if _ignored(rel) or path.suffix != ".ipynb":
            return None
        top = extracted / rel.parts[0]
        chosen, others = self._choose(top)
        if path != chosen:
            return None
        student = student_id(rel.parts[0], top.is_dir())
        stamp = self._timestamp(top)
        record = {"student": student, "file": str(rel), "renamed": top.is_dir() and path.name != self.notebook,
                  "others": [str(p.relative_to(extracted)) for p in others],
                  "problem": _notebook_problem(path), "timestamp": stamp.isoformat() if stamp else None}
        with open(self.report, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if record["problem"]:
            return None
        info = {"student_id": student, "file_id": self.notebook}
        return {**info, "timestamp": record["timestamp"]} if stamp else info

    def _choose(self, top: Path) -> tuple[Path | None, list[Path]]:
        """The notebook to grade of one student's entry, and the others."""
        if top.is_file():
            return top, []
        found = [p for p in sorted(top.rglob("*.ipynb")) if p.is_file() and not _ignored(p.relative_to(top))]
        found.sort(key=lambda p: (p.name != self.notebook, len(p.parts), str(p)))
        return (found[0], found[1:]) if found else (None, [])

    def _timestamp(self, top: Path) -> datetime | None:
        """Hand-in time (UTC, no zone) of one student's entry."""
        from nbgrader.utils import parse_utc

        stamps = sorted(top.rglob("timestamp.txt")) if top.is_dir() else []
        if stamps:
            try:
                return parse_utc(stamps[0].read_text(encoding="utf-8").strip())
            except (ValueError, OverflowError):
                self.log.warning("Unreadable %s", stamps[0])
        archive = Path(self.archive_dir)
        for entry in (archive / top.name, archive / (top.name + ".zip")):
            if entry.exists():
                return datetime.fromtimestamp(entry.stat().st_mtime, timezone.utc).replace(tzinfo=None)
        return None


# ----------------------------------------------------------------- collecting

def _entries(folder: Path) -> dict[str, list[Path]]:
    """The entries of the submissions folder by student id (hidden files skipped)."""
    by_student: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if not _ignored(Path(entry.name)):
            by_student.setdefault(student_id(entry.name, entry.is_dir()), []).append(entry)
    return by_student


def _stage(sub: Submission, entries: list[Path], archive: Path) -> None:
    """Copy a student's newest entry into zip_collect's archive folder (a damaged zip is flagged
    corrupt instead)."""
    entries = sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)
    entry = entries[0]
    sub.source, sub.path = entry.name, entry
    if sub.student not in (entry.name, entry.name.rsplit(".", 1)[0]):
        sub.notes.append(f"id {sub.student!r} made from {entry.name!r}")
    if len(entries) > 1:
        sub.flag(SEVERAL, f"graded {entry.name}, the newest; ignored {', '.join(p.name for p in entries[1:])}")
    if entry.is_dir():
        shutil.copytree(entry, archive / entry.name)
    elif entry.suffix.lower() == ".zip":
        problem = _zip_problem(entry)
        if problem:
            sub.flag(CORRUPT, f"{entry.name}: {problem}")
            return
        shutil.copy2(entry, archive / (entry.stem + ".zip"))
    else:
        shutil.copy2(entry, archive / entry.name)


def _zip_collect(name: str, course: Path, nb_name: str, log: Path | None) -> dict[str, dict]:
    """Run ``nbgrader zip_collect`` with :class:`SubmissionCollector`; its decisions by student."""
    base = course / "downloaded" / name
    report = base / "collected.jsonl"
    report.write_text("", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", "zip_collect", name, "--force",
         "--ZipCollectApp.collector_plugin=course_lib.grading.collect.SubmissionCollector",
         "--ExtractorPlugin.zip_ext=.zip", f"--SubmissionCollector.notebook={nb_name}",
         f"--SubmissionCollector.report={report}", f"--SubmissionCollector.extracted_dir={base / 'extracted'}",
         f"--SubmissionCollector.archive_dir={base / 'archive'}"],
        cwd=course, env=nbgrader_io.env(), capture_output=True, text=True, timeout=900)   # a hang guard: no student code runs here
    if log is not None:
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"`nbgrader zip_collect {name}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    records = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines() if line]
    return {r["student"]: r for r in records}


def _apply(sub: Submission, record: dict | None, nb_name: str) -> None:
    """Turn zip_collect's decision for one student into statuses."""
    if record is None:
        inside = sub.path.is_dir() or sub.path.suffix.lower() == ".zip"
        sub.flag(NOT_NOTEBOOK, f"{sub.source} holds no notebook (.ipynb); it holds {_contents(sub.path)}"
                 if inside else f"{sub.source} is not a notebook (.ipynb) nor a zip holding one")
        return
    if record["problem"]:
        sub.flag(CORRUPT, f"{record['file']}: {record['problem']}")
        return
    if record["renamed"]:
        sub.flag(RENAMED, f"graded {record['file']} as {nb_name}")
    if record["others"]:
        sub.flag(SEVERAL, f"graded {record['file']}; ignored {', '.join(record['others'])}")
    if record["timestamp"]:
        sub.timestamp = datetime.fromisoformat(record["timestamp"])


def _check_roster(subs: dict[str, Submission], roster: list[str] | None) -> None:
    """Students on the roster without a file are missing; files of others are flagged."""
    if not roster:
        return
    for student in roster:
        if student not in subs:
            subs[student] = Submission(student, flags=[MISSING], notes=["no file in the submissions folder"])
    for student, sub in subs.items():
        if student not in roster:
            sub.flag(NOT_ON_ROSTER, "graded, but the id is not on the roster")


def _check_late(subs: dict[str, Submission], due: datetime | None) -> None:
    """Flag graded submissions handed in after ``due`` (UTC, no zone)."""
    if due is None:
        return
    for sub in subs.values():
        if sub.graded and sub.timestamp is not None and sub.timestamp > due:
            sub.flag(LATE, f"late by {_duration((sub.timestamp - due).total_seconds())} "
                           f"(handed in {sub.timestamp:%Y-%m-%d %H:%M} UTC)")


def _check_assignment(name: str, course: Path, subs: dict[str, Submission], nb_name: str, root: Path) -> None:
    """A notebook without the assignment's answer cells is another assignment's (or no graded
    notebook at all): flagged, not graded."""
    ids = lambda path: {C.grade_id(c) for c in C.load(path)["cells"]           # noqa: E731
                        if C.meta(c) and C.kind(c) in ("answer", "test")}
    want = ids(Path(course) / "solutions" / name / nb_name)
    for student, sub in subs.items():
        if not sub.graded:
            continue
        path = Path(course) / "build" / "nbgrader" / "submitted" / student / name / nb_name
        try:
            have = ids(path)
        except (OSError, ValueError):
            continue
        if have & want:
            continue
        other = [a for a in nbgrader_io.assignments(root) if a != name
                 and have & ids(next((Path(root) / "solutions" / a).glob("*.ipynb")))]
        sub.flag(WRONG, f"this is the notebook of {other[0]}, not {name}" if other
                 else f"this notebook has none of {name}'s cells (was a different notebook handed in?)")
        shutil.rmtree(path.parent.parent, ignore_errors=True)


def collect(name: str, submissions_dir: Path, course: Path, students: list[str] | None = None,
            due: datetime | None = None, log: Path | None = None) -> dict[str, Submission]:
    """Collect a folder of submissions into ``course``'s ``build/nbgrader/submitted/`` with
    ``nbgrader zip_collect``.

    ``course`` is a scratch course folder (its ``nbgrader_config.py`` and ``solutions/<name>``).
    ``submissions_dir`` holds one entry per student: ``<id>.ipynb``, ``<id>.zip`` (the notebook
    anywhere inside, perhaps renamed, perhaps with a ``timestamp.txt``), a folder ``<id>/``, or
    anything else (reported). ``students``: the roster (ids without a file are "missing");
    ``due``: UTC without zone (see :func:`parse_due`). Returns a :class:`Submission` per student.
    """
    course, folder = Path(course), Path(submissions_dir)
    nb_name = nbgrader_io.notebook_name(course, name)
    archive = course / "downloaded" / name / "archive"
    shutil.rmtree(course / "downloaded" / name, ignore_errors=True)
    archive.mkdir(parents=True)
    subs = {}
    for student, entries in _entries(folder).items():
        subs[student] = Submission(student)
        _stage(subs[student], entries, archive)
    records = _zip_collect(name, course, nb_name, log)
    for student, sub in subs.items():
        if sub.graded:
            _apply(sub, records.get(student), nb_name)
    _check_assignment(name, course, subs, nb_name, config.ROOT)
    _check_roster(subs, students)
    _check_late(subs, due)
    return dict(sorted(subs.items()))


