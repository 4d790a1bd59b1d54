"""Grade a whole class: a folder of submissions in, feedback HTML and a CSV of scores per part out.

    from course_lib.grading import batch
    graded = batch.grade("a02_sisa", "downloads/a02", "build/grades/a02_sisa")

The work is nbgrader's own, in scratch copies of the course (this repository is never touched):

1. :func:`collect`: ``nbgrader zip_collect`` with :class:`SubmissionCollector` turns a folder of
   ``<student>.ipynb`` / ``<student>.zip`` (the notebook perhaps renamed, perhaps in a subfolder) /
   anything else into nbgrader's ``submitted/<student>/<assignment>/<notebook>.ipynb`` layout, with
   nbgrader's ``timestamp.txt``. Every student gets a :class:`Submission` saying what was found:
   renamed, several files, late, corrupt, not a notebook, missing (from the roster).
2. :func:`grade`: the collected students are split into one chunk per worker; each chunk is graded
   in its own scratch course (nbgrader's SQLite gradebook takes one writer) by its own
   ``nbgrader autograde`` process, then ``nbgrader generate_feedback``; the scores per part are
   read from each gradebook by :class:`PartsExportPlugin`, an ``nbgrader export`` plugin (run in
   this process, which spares a start-up of nbgrader per worker). A cell that runs past the
   timeout is interrupted (nbgrader's ``Execute.timeout``); a student whose grading makes no
   progress for the timeout plus :data:`STARTUP_GRACE_S` is stopped (the whole process tree is
   killed) and the chunk goes on without them. Either way that student is reported "timed out"
   and scores 0.
3. The per-student records are written to ``OUT/grades.csv``; feedback to
   ``OUT/feedback/<student>.html``; nbgrader's logs to ``OUT/logs/``.

The course's real gradebook (``build/nbgrader/gradebook.db``) is not written.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from nbgrader.plugins import ExportPlugin, FileNameCollectorPlugin
from traitlets import Unicode

from .. import config, nbrun
from .roundtrip import _env, _scratch_course, assignments

#: Seconds a student's notebook may run by default (each cell, and the whole notebook up to
#: :data:`STARTUP_GRACE_S` more).
DEFAULT_TIMEOUT_S = 300
#: Allowance on top of the timeout for starting nbgrader and the kernel before a student is stopped.
STARTUP_GRACE_S = 60
_POLL_S = 0.5

# Statuses of a student. The first three mean there was nothing to grade (score 0).
CORRUPT, NOT_NOTEBOOK, MISSING = "corrupt", "not a notebook", "missing"
RENAMED, SEVERAL, LATE, NOT_ON_ROSTER = "renamed", "several files", "late", "not on roster"
TIMED_OUT, ERROR = "timed out", "error"
_NOT_GRADED = {CORRUPT, NOT_NOTEBOOK, MISSING}

_STUDENT_STARTS = re.compile(r"Creating/updating student with ID '([^']*)'")
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


@dataclass
class StudentResult:
    """One row of the class's grades: total and points per graded part (by ``grade_id``),
    the statuses (empty: ok), why, and the feedback file (None when there is none)."""

    student: str
    score: float
    max_score: float
    parts: dict[str, float]
    flags: list[str] = field(default_factory=list)
    note: str = ""
    feedback: Path | None = None
    seconds: float | None = None

    @property
    def status(self) -> str:
        """``"ok"`` or the statuses joined by commas, e.g. ``"renamed, late"``."""
        return ", ".join(self.flags) or "ok"


class ClassGrades(list):
    """The :class:`StudentResult` of every student (a list, sorted by student), with how the
    batch ran: ``workers``, ``seconds`` (wall clock, all included), ``ran`` (students whose
    notebook was executed), ``parts`` (max points by grade_id) and the files written."""

    def __init__(self, results, *, workers: int, seconds: float, ran: int, parts: dict, out_dir: Path):
        super().__init__(results)
        self.workers, self.seconds, self.ran, self.parts = workers, seconds, ran, parts
        self.out_dir, self.csv = Path(out_dir), Path(out_dir) / "grades.csv"

    @property
    def per_hour(self) -> float:
        """Students graded per hour (executed notebooks over the batch's whole wall time)."""
        return 3600.0 * self.ran / self.seconds if self.seconds > 0 else 0.0


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


def release_parts(release_nb: Path) -> dict[str, float]:
    """Max points of every graded cell of a notebook, by grade_id, in notebook order."""
    nb = json.loads(Path(release_nb).read_text(encoding="utf-8"))
    parts = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {}) or {}
        if meta.get("grade"):
            parts[meta["grade_id"]] = float(meta.get("points", 0))
    return parts


def _notebook_name(course: Path, name: str) -> str:
    return next((Path(course) / "solutions" / name).glob("*.ipynb")).name


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


class PartsExportPlugin(ExportPlugin):
    """Exporter for ``nbgrader export --exporter=course_lib.grading.batch.PartsExportPlugin
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


def export_parts(course: Path, dest: Path) -> None:
    """What ``nbgrader export --exporter=course_lib.grading.batch.PartsExportPlugin --to DEST``
    does in ``course``, in this process (no nbgrader start-up)."""
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + str(Path(course) / "build" / "nbgrader" / "gradebook.db")) as gb:
        PartsExportPlugin(to=str(dest)).export(gb)


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
         "--ZipCollectApp.collector_plugin=course_lib.grading.batch.SubmissionCollector",
         "--ExtractorPlugin.zip_ext=.zip", f"--SubmissionCollector.notebook={nb_name}",
         f"--SubmissionCollector.report={report}", f"--SubmissionCollector.extracted_dir={base / 'extracted'}",
         f"--SubmissionCollector.archive_dir={base / 'archive'}"],
        cwd=course, env=_env(), capture_output=True, text=True, timeout=900)   # a hang guard: no student code runs here
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


def _add_release_files(course: Path, name: str, students: list[str]) -> None:
    """Data files of the release travel with every collected notebook (those the student lacks)."""
    release = course / "assignments" / name
    extra = [p for p in release.rglob("*") if p.is_file() and p.suffix != ".ipynb"]
    for student in students:
        dest = course / "build" / "nbgrader" / "submitted" / student / name
        for f in extra:
            target = dest / f.relative_to(release)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)


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
    nb_name = _notebook_name(course, name)
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
    _check_roster(subs, students)
    _check_late(subs, due)
    return dict(sorted(subs.items()))


# ----------------------------------------------------------------- grading one chunk

_kill_tree = nbrun.kill_tree   # kill a process and its kernels (one home: course_lib/nbrun.py)


@dataclass
class _Chunk:
    """The students one worker grades, in its own scratch course, and what happened."""

    name: str
    students: list[str]
    course: Path
    log: Path
    timeout: float
    env: dict
    started: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    finished: int = 0
    error: str = ""
    feedback_error: str = ""
    proc: subprocess.Popen | None = None

    def run(self) -> None:
        """Autograde, export the scores, write feedback; a failure is recorded, never raised."""
        try:
            while self._autograde_once():
                pass
            export_parts(self.course, self.course / "parts.json")
        except Exception as exc:  # noqa: BLE001 - reported for this chunk's students
            self.error = f"{type(exc).__name__}: {exc}"
            return
        finally:
            self.finished = len(self.students)
        try:
            self._nbgrader_step(["generate_feedback", self.name])
        except Exception as exc:  # noqa: BLE001 - the scores stand without feedback
            self.feedback_error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        """Kill the running nbgrader (and its kernel)."""
        if self.proc is not None and self.proc.poll() is None:
            _kill_tree(self.proc)

    def _launch(self, args: list[str]) -> subprocess.Popen:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"\n===== {time.strftime('%H:%M:%S')} nbgrader {' '.join(args)}\n")
            fh.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=self.course, env=self.env,
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def _autograde_once(self) -> bool:
        """One ``nbgrader autograde`` over the students not yet graded or stopped. Returns True
        when a stalled student was stopped and others are still to grade (run again for them)."""
        args = ["autograde", self.name, f"--Execute.timeout={max(1, round(self.timeout))}"]
        if self.stopped:
            args.append("--CourseDirectory.student_id_exclude=" + ",".join(self.stopped))
        offset = self.log.stat().st_size if self.log.exists() else 0
        proc = self._launch(args)
        current, since, pending = None, time.monotonic(), ""
        with open(self.log, encoding="utf-8", errors="replace") as reader:
            reader.seek(offset)
            while proc.poll() is None:
                time.sleep(_POLL_S)
                lines, _, pending = (pending + reader.read()).rpartition("\n")
                for student in _STUDENT_STARTS.findall(lines):
                    current, since = self._start(student, current)
                if time.monotonic() - since > self.timeout + STARTUP_GRACE_S:
                    return self._stall(proc, current, since)
        self._end(current)
        self.finished = len(self.students)
        return False

    def _start(self, student: str, previous: str | None) -> tuple[str, float]:
        now = time.monotonic()
        self._end(previous)
        self.started[student] = now
        self.finished = len(self.started) - 1
        return student, now

    def _end(self, student: str | None) -> None:
        if student is not None and student not in self.seconds:
            self.seconds[student] = time.monotonic() - self.started[student]

    def _stall(self, proc: subprocess.Popen, current: str | None, since: float) -> bool:
        """Stop a grading that made no progress: the student in progress is timed out."""
        _kill_tree(proc)
        waited = time.monotonic() - since
        if current is None:
            raise RuntimeError(f"nbgrader autograde graded nobody in {waited:.0f} s")
        self._end(current)
        self.stopped[current] = (f"stopped after {waited:.0f} s (limit: {self.timeout:g} s + "
                                 f"{STARTUP_GRACE_S} s to start)")
        shutil.rmtree(self.course / "build" / "nbgrader" / "autograded" / current, ignore_errors=True)
        self.finished = len(self.started)
        return bool(set(self.students) - set(self.started))

    def _nbgrader_step(self, args: list[str]) -> None:
        """Run a short nbgrader command, with a wall-clock guard."""
        proc = self._launch(args)
        try:
            proc.wait(timeout=STARTUP_GRACE_S * 5 + 5 * len(self.students))
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise RuntimeError(f"`nbgrader {args[0]}` did not finish") from None
        if proc.returncode != 0:
            raise RuntimeError(f"`nbgrader {args[0]}` failed (see {self.log.name})")

    def parts(self) -> dict:
        """The export: scores by student (empty when export did not run)."""
        path = self.course / "parts.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def log_of(self, student: str) -> str:
        """nbgrader's log while it graded ``student`` (from their start to the next student's)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        pieces = _STUDENT_STARTS.split(text)
        return "\n".join(pieces[i + 1] for i in range(1, len(pieces) - 1, 2) if pieces[i] == student)

    def log_problems(self, student: str) -> str:
        """nbgrader's error lines about ``student``, in one line."""
        lines = [ln.split("]", 1)[-1].strip() for ln in self.log_of(student).splitlines() if "| ERROR]" in ln]
        return "; ".join(dict.fromkeys(lines))[:500]


def _cell_timeout(notebook: Path) -> str | None:
    """The grade_id (or number) of the first cell nbgrader interrupted for running too long."""
    if not notebook.exists():
        return None
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if any(o.get("ename") == "CellTimeoutError" for o in cell.get("outputs", [])):
            return (cell.get("metadata", {}).get("nbgrader", {}) or {}).get("grade_id") or f"#{i}"
    return None


# ----------------------------------------------------------------- the whole class

def worker_count(workers: int | None, students: int) -> int:
    """Workers to use: ``workers`` (default: one per core), at most one per student, at least 1."""
    return max(1, min(workers or os.cpu_count() or 1, students))


def _worker_env(fast: bool, workers: int) -> dict:
    """The graded notebooks' environment: FAST or full, CPU threads shared between the workers."""
    env = _env(fast)
    share = str(max(1, (os.cpu_count() or 1) // workers))
    # every thread pool a notebook can start (torch/OpenMP, OpenBLAS, MKL, numba): idle workers of an
    # oversubscribed pool spin and slow the neighbouring students' kernels
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, share)
    return env


def _worker_course(base: Path, name: str, students: list[str], k: int) -> Path:
    """A copy of the collected scratch course holding only ``students``' submissions."""
    course = Path(tempfile.mkdtemp(prefix=f"course-grade-w{k}-"))
    shutil.copytree(base, course, dirs_exist_ok=True, ignore=shutil.ignore_patterns("downloaded", "submitted"))
    for s in students:
        src = base / "build" / "nbgrader" / "submitted" / s
        shutil.copytree(src, course / "build" / "nbgrader" / "submitted" / s)
    _add_release_files(course, name, students)
    return course


def _show_bar() -> bool:
    """The progress bar is drawn unless in CI or with ``COURSE_QUIET=1``."""
    return not (config.in_ci() or os.environ.get("COURSE_QUIET", "").strip().lower() in {"1", "true", "yes", "on"})


def _run_chunks(chunks: list[_Chunk], name: str) -> None:
    """Run every chunk in its own thread (each drives its own nbgrader processes) with one
    progress bar over the students; Ctrl-C stops them all."""
    from tqdm.auto import tqdm

    if not chunks:
        return
    threads = [threading.Thread(target=c.run, daemon=True) for c in chunks]
    for t in threads:
        t.start()
    total = sum(len(c.students) for c in chunks)
    with tqdm(total=total, desc=f"grading {name}", unit="student", disable=not _show_bar(),
              file=sys.stderr) as bar:
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(_POLL_S)
                if sum(c.finished for c in chunks) > bar.n:
                    bar.update(sum(c.finished for c in chunks) - bar.n)
        except KeyboardInterrupt:
            for c in chunks:
                c.stop()
            raise
        bar.update(total - bar.n)


def _result(sub: Submission, chunk: _Chunk | None, parts_max: dict, exported: dict, nb_name: str,
            out_dir: Path) -> StudentResult:
    """The grade row of one student."""
    zero = {g: 0.0 for g in parts_max}
    total = sum(parts_max.values())
    res = StudentResult(sub.student, 0.0, total, dict(zero), list(sub.flags), "; ".join(sub.notes))
    if chunk is None:
        return res
    res.seconds = chunk.seconds.get(sub.student)
    done = chunk.course / "build" / "nbgrader" / "autograded" / sub.student / chunk.name / nb_name
    looped = _timed_out(chunk, sub.student, done)
    data = exported.get(sub.student)
    if looped:
        problem = (TIMED_OUT, f"{looped}; a notebook must run top to bottom within the limit (score 0)")
    elif chunk.error:
        problem = (ERROR, f"grading failed: {chunk.error}")
    elif data is None or not done.exists():
        problem = (ERROR, chunk.log_problems(sub.student) or "nbgrader produced no graded notebook")
    else:
        res.score, res.max_score = data["score"], data["max_score"] or total
        res.parts.update(data["parts"])
        res.feedback = _copy_feedback(chunk, sub.student, nb_name, out_dir)
        if res.feedback is None:
            res.note = "; ".join(n for n in (res.note, f"no feedback ({chunk.feedback_error or 'see logs'})") if n)
        return res
    res.flags.append(problem[0])
    res.note = "; ".join(n for n in (res.note, problem[1]) if n)
    return res


def _timed_out(chunk: _Chunk, student: str, done: Path) -> str:
    """Why ``student`` timed out ("" when they did not): stopped by the guard, a cell interrupted
    by nbgrader, or a kernel that could not be interrupted."""
    if student in chunk.stopped:
        return chunk.stopped[student]
    cell = _cell_timeout(done)
    if cell:
        return f"cell {cell} ran past {chunk.timeout:g} s and was interrupted"
    if any(w in chunk.log_of(student) for w in ("unresponsive", "CellTimeoutError")):
        return f"a cell ran past {chunk.timeout:g} s and the kernel could not be interrupted"
    return ""


def _copy_feedback(chunk: _Chunk, student: str, nb_name: str, out_dir: Path) -> Path | None:
    src = chunk.course / "build" / "nbgrader" / "feedback" / student / chunk.name / (Path(nb_name).stem + ".html")
    if not src.exists():
        return None
    dest = out_dir / "feedback" / f"{student}.html"
    shutil.copy(src, dest)
    return dest


def write_csv(path: Path, results: list[StudentResult], parts: dict[str, float]) -> None:
    """``student, total, max, <one column per graded part>, status, note``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "total", "max", *parts, "status", "note"])
        for r in results:
            w.writerow([r.student, f"{r.score:g}", f"{r.max_score:g}", *(f"{r.parts.get(g, 0.0):g}" for g in parts),
                        r.status, r.note])


def _fresh_out(out_dir: Path) -> None:
    """Empty the outputs of a previous run (feedback, logs, grades.csv); keep anything else."""
    for sub in ("feedback", "logs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)
    (out_dir / "grades.csv").unlink(missing_ok=True)


def _collect_while_releasing(name: str, submissions_dir: Path, base: Path, students: list[str] | None,
                             due: datetime | None, logs: Path) -> dict[str, Submission]:
    """:func:`collect` into ``base`` while ``nbgrader generate_assignment`` runs there."""
    release = _start_release(name, base, logs / "generate.log")
    try:
        subs = collect(name, submissions_dir, base, students, due, logs / "collect.log")
    except BaseException:
        release[0].kill()
        release[0].wait()
        raise
    _finish_release(release, name)
    return subs


def _make_chunks(name: str, base: Path, todo: list[str], n: int, timeout: float, env: dict,
                 logs: Path) -> list[_Chunk]:
    """Deal the students to ``n`` workers, each with its own copy of the collected course."""
    chunks = []
    for k in range(n if todo else 0):
        mine = todo[k::n]
        chunks.append(_Chunk(name, mine, _worker_course(base, name, mine, k), logs / f"worker{k}.log", timeout, env))
    return chunks


def _start_release(name: str, course: Path, log: Path) -> tuple[subprocess.Popen, Path]:
    """Start ``nbgrader generate_assignment`` in ``course`` (it also enters the assignment into
    the gradebook that every worker's course copies)."""
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force"],
                                cwd=course, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    return proc, log


def _finish_release(release: tuple[subprocess.Popen, Path], name: str) -> None:
    proc, log = release
    if proc.wait() != 0:
        raise RuntimeError(f"`nbgrader generate_assignment {name}` failed:\n{log.read_text(encoding='utf-8')[-3000:]}")


def check_arguments(name: str, submissions_dir: Path, root: Path | None = None) -> None:
    """Raise ValueError for an unknown assignment (listing the known ones) and
    FileNotFoundError for a submissions folder that is not there."""
    known = assignments(root)
    if name not in known:
        raise ValueError(f"unknown assignment {name!r}; assignments: {', '.join(known)}")
    if not Path(submissions_dir).is_dir():
        raise FileNotFoundError(f"no submissions folder {str(submissions_dir)!r}")


def grade(name: str, submissions_dir: Path, out_dir: Path, workers: int | None = None,
          timeout: float = DEFAULT_TIMEOUT_S, fast: bool = True, due: datetime | None = None,
          students: list[str] | None = None, root: Path | None = None) -> ClassGrades:
    """Collect, autograde in parallel, write feedback and ``grades.csv``; see the module's doc.

    ``workers``: parallel nbgrader processes (default: one per core); ``timeout``: seconds a
    student's notebook may run (a longer cell is interrupted; a student making no progress for
    ``timeout + STARTUP_GRACE_S`` is stopped; either way "timed out", score 0); ``fast``: graded
    notebooks run with ``COURSE_FAST=1``; ``due`` and ``students``: see :func:`collect`.
    Returns every student's :class:`StudentResult` (one student's problem never stops the others).
    """
    t0 = time.perf_counter()
    root, out_dir = Path(root or config.ROOT), Path(out_dir)
    check_arguments(name, submissions_dir, root)
    _fresh_out(out_dir)
    scratch = [_scratch_course(root, [name])]
    try:
        base = scratch[0]
        subs = _collect_while_releasing(name, submissions_dir, base, students, due, out_dir / "logs")
        nb_name = _notebook_name(base, name)
        parts_max = release_parts(base / "assignments" / name / nb_name)
        todo = [s for s, sub in subs.items() if sub.graded]
        n = worker_count(workers, len(todo))
        chunks = _make_chunks(name, base, todo, n, timeout, _worker_env(fast, n), out_dir / "logs")
        scratch += [c.course for c in chunks]
        _run_chunks(chunks, name)
        owner = {s: c for c in chunks for s in c.students}
        exported = {s: d for c in chunks for s, d in c.parts().items()}
        results = [_result(sub, owner.get(s), parts_max, exported, nb_name, out_dir) for s, sub in subs.items()]
        write_csv(out_dir / "grades.csv", results, parts_max)
    finally:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)
    return ClassGrades(results, workers=n, seconds=time.perf_counter() - t0, ran=len(todo), parts=parts_max,
                       out_dir=out_dir)
