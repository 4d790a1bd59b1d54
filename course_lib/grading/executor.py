"""The trusted side of grading: run a submission with its answer cells in the sandbox and the tests
here, in a process that never executes student code.

    python -m course_lib.grading.executor SOURCE SUBMISSION WORKDIR OUT.json [--cell-timeout S] [--total-timeout S]

``SOURCE`` is the instructor's notebook (``solutions/<a>/<a>.ipynb`` when grading, the release
for ``./course.sh check``): its given cells and test cells are the ones that run, whatever the
submission holds in their place. The submission contributes only its answer cells (and cells the
student added), which run in the sandbox (``sandbox.py``). Every name an answer cell binds appears
here as plain data (a number, a string, an array, a tensor, a model rebuilt from its weights) or,
for a function, as a :class:`Remote` that calls it across the boundary with plain data. A name the
instructor's cells bind is never replaced by the student's.

Each test cell runs its visible part, then its hidden part; it passes when neither raises. The
result (``OUT.json``) holds, per cell, what nbgrader's notebook shows (printed text, an error with
the test's message: never a hidden test's code, message or reference value), and per test cell
its grade_id, points and message; the run's status (``ok``, ``timed out``, ``crashed``); ``record``: the
plain dict a test cell bound to ``__course_record__`` (via JSON; never an answer cell's), else None.
Source metadata ``course.private_data: true`` hides the course's data from the sandbox (``sandbox.py``).
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import json
import shutil
import sys
import time
import traceback
import types
from pathlib import Path

from . import cells as C
from .cells import names_read as _names_read, plan, strip_magics as _strip_magics  # noqa: F401 - plan is public here too
from . import codec
from .sandbox import Limits, Sandbox, SandboxError

_PRINT_LIMIT = 20_000


class StudentError(Exception):
    """Marks an exception raised by the student's code (re-raised here as a built-in type)."""


def _raise_student(err: dict, what: str):
    cls = getattr(builtins, str(err.get("ename", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    shown = err.get("type") or cls.__name__
    msg = f"{err.get('evalue', '')}"
    try:
        exc = cls(msg)
    except Exception:  # noqa: BLE001 - exception classes with other signatures
        exc = RuntimeError(msg)
    exc._course_student = f"{shown} in your {what}: {msg}"[:1500]
    raise exc


class Remote:
    """A student's function or object, called across the boundary."""

    __slots__ = ("_runner", "_target", "_label")

    def __init__(self, runner: "Runner", target: dict, label: str):
        self._runner, self._target, self._label = runner, target, label

    def __call__(self, *args, **kwargs):
        return self._runner.call(self, args, kwargs)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._runner.getattr(self, attr)

    def __repr__(self):
        return f"<student's {self._label}>"


class Runner:
    """One submission: the sandbox, the trusted namespace, and the record of every cell."""

    def __init__(self, sandbox: Sandbox, forbidden: list[str]):
        self.sb, self.forbidden = sandbox, forbidden
        self.ns: dict = {"__name__": "__main__", "__builtins__": builtins}
        # built-in names and every name the given and test cells bind keep the trusted value here
        self.trusted_names: set[str] = set(self.ns) | set(dir(builtins))
        self.given_classes: set[str] = set()
        self.forbid_done = False
        self._given_failed = False
        self.cells: list[dict] = []
        self.notes: list[str] = []

    # --------------------------------------------------------------- values across the boundary
    def _trusted_class(self, name: str):
        module, _, qual = name.partition(":")
        if module == "__main__":
            cls = self.ns.get(qual) if qual in self.given_classes else None
            return cls if isinstance(cls, type) else None
        if not (module.startswith("torch.nn") or module.startswith("course_lib.")) or module.startswith(
                "course_lib.grading"):
            return None
        import importlib
        try:
            obj = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            return None
        if not isinstance(obj, type):
            return None
        import torch
        if module.startswith("torch.nn") and not issubclass(obj, torch.nn.Module):
            return None
        return obj

    def _travels(self, cls) -> bool:
        import torch
        mod = cls.__module__ or ""
        return (mod.startswith("torch.nn") and issubclass(cls, torch.nn.Module)) or (
            mod.startswith("course_lib.") and not mod.startswith("course_lib.grading")) or (
            mod == "__main__" and cls.__qualname__ in self.given_classes)

    def encode(self, value):
        def handle(obj):
            if isinstance(obj, Remote) and "handle" in obj._target:
                return {"$handle": obj._target["handle"]}
            raise codec.Unencodable(f"{type(obj).__qualname__} cannot be passed to the student's code")
        return codec.encode(value, self._travels, handle=handle)

    def decode(self, plain, label: str):
        return codec.decode(plain, self._trusted_class,
                            handle=lambda spec: Remote(self, {"handle": int(spec["$handle"])},
                                                       f"{spec.get('type', 'object')} returned by {label}"))

    def _reply(self, reply: dict, label: str):
        if not reply.get("ok"):
            _raise_student(reply.get("error") or {}, label)
        return reply

    def call(self, remote: Remote, args, kwargs):
        plain_args = [self.encode(a) for a in args]
        plain_kwargs = {str(k): self.encode(v) for k, v in kwargs.items()}
        reply = self._reply(self.sb.request({"op": "call", "target": remote._target, "args": plain_args,
                                             "kwargs": plain_kwargs}, remote._label), remote._label)
        every = list(args) + list(kwargs.values())
        for obj, new in zip(every, reply.get("sync") or []):
            if new is not None:
                try:
                    _sync(obj, self.decode(new, remote._label))
                except Exception as exc:  # noqa: BLE001 - a hostile or broken reply
                    raise RuntimeError(f"what your {remote._label} did to its arguments could not be read back "
                                       f"({type(exc).__name__})") from None
        value = reply.get("value")
        try:
            if isinstance(value, dict) and "$arg" in value:
                return every[int(value["$arg"])]
            return self.decode(value, remote._label)
        except Exception as exc:  # noqa: BLE001 - a hostile or broken reply
            raise RuntimeError(f"the value your {remote._label} returned could not be read ({type(exc).__name__})") \
                from None

    def getattr(self, remote: Remote, attr: str):
        reply = self._reply(self.sb.request({"op": "getattr", "target": remote._target, "attr": attr},
                                            remote._label), remote._label)
        try:
            return self.decode(reply.get("value"), f"{remote._label}.{attr}")
        except Exception as exc:  # noqa: BLE001 - a hostile or broken reply
            raise RuntimeError(f"{remote._label}.{attr} could not be read ({type(exc).__name__})") from None

    # --------------------------------------------------------------- cells
    def _exec_here(self, code: str, label: str) -> tuple[str, BaseException | None]:
        out = io.StringIO()
        err = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                exec(compile(code, f"<{label}>", "exec"), self.ns)   # noqa: S102 - the instructor's code
            except BaseException as exc:  # noqa: BLE001 - recorded as the cell's error
                err = exc
        return out.getvalue()[:_PRINT_LIMIT], err

    def given(self, cell: dict) -> None:
        """The instructor's cell runs on both sides (the student's cells may use what it defines). In
        parallel when it does not call the student's code, else the sandbox's run first."""
        text = C.source(cell)
        label = C.grade_id(cell) or "given cell"
        parallel = not (_names_read(text) & {k for k, v in self.ns.items() if isinstance(v, Remote)})
        sent, self._given_failed = False, False
        try:
            self.sb.send({"op": "exec", "source": text, "given": True})
            sent = True
            if not parallel:
                self._given_reply(label)
        except SandboxError:
            pass
        before = {k: id(v) for k, v in self.ns.items()}
        printed, err = self._exec_here(_strip_magics(text), label)
        bound = self._bind_trusted(before)
        if sent and parallel:
            try:
                self._given_reply(label)
            except SandboxError:
                pass
        if self._given_failed:
            self._ship(bound, label)
        self.cells.append({"grade_id": C.grade_id(cell), "kind": "given", "stdout": printed,
                           "error": _error_text(err) if err else None})

    def _given_reply(self, label: str) -> None:
        reply = self.sb.receive(f"the given cell {label}")
        self._given_failed = not reply.get("ok")
        if self._given_failed:
            e = reply.get("error") or {}
            self.notes.append(f"given cell {label} did not run completely in the sandbox "
                              f"({e.get('type', 'Error')}: {str(e.get('evalue', ''))[:200]}); its values were sent there")

    def _ship(self, names: list[str], label: str) -> None:
        """A given cell failed in the sandbox (it needs library code the sandbox lacks): send the values
        it computed here (plain data; functions and classes were defined there statement by statement)."""
        values = {}
        for k in names:
            v = self.ns.get(k)
            if isinstance(v, (Remote, types.FunctionType, types.BuiltinFunctionType, type, types.ModuleType)):
                continue
            try:
                values[k] = self.encode(v)
            except Exception:  # noqa: BLE001 - Unencodable or a value that cannot be read: not sent
                continue
        try:
            reply = self.sb.request({"op": "bind", "values": values}, f"the given cell {label}")
            if reply.get("failed"):
                self.notes.append(f"given cell {label}: the sandbox could not rebuild {', '.join(reply['failed'])}")
        except SandboxError:
            pass

    def _bind_trusted(self, before: dict) -> list[str]:
        bound = []
        for k, v in self.ns.items():
            if before.get(k) != id(v):
                bound.append(k)
                self.trusted_names.add(k)
                if isinstance(v, type) and getattr(v, "__module__", None) == "__main__":
                    self.given_classes.add(k)
        return bound

    @property
    def dead_reason(self):
        return self.sb.dead.reason if self.sb.dead else None

    def answer(self, cell: dict) -> None:
        gid = C.grade_id(cell) or "a cell you added"
        rec = {"grade_id": C.grade_id(cell), "kind": "answer", "stdout": "", "error": None}
        self.cells.append(rec)
        try:
            if not self.forbid_done and self.forbidden:
                self.forbid_done = True
                self.sb.request({"op": "forbid", "names": self.forbidden}, "the grader's set-up")
            reply = self.sb.request({"op": "exec", "source": C.source(cell), "answer": True}, f"answer cell {gid}")
        except SandboxError as exc:
            rec["error"] = exc.reason
            return
        rec["stdout"] = (str(reply.get("stdout", "")) + str(reply.get("stderr", "")))[:_PRINT_LIMIT]
        if not reply.get("ok"):
            e = reply.get("error") or {}
            rec["error"] = f"{e.get('type', 'Error')}: {e.get('evalue', '')}"[:1500]
        for name, desc in (reply.get("names") or {}).items():
            name = str(name)
            if not name.isidentifier() or name.startswith("__"):
                continue
            if name in self.trusted_names:
                if not hasattr(builtins, name):
                    self.notes.append(f"answer cell {gid} rebinds {name}, which the given or test cells define: the "
                                      "tests keep their value")
                continue
            if isinstance(desc, dict) and "value" in desc:
                try:
                    self.ns[name] = self.decode(desc["value"], name)
                except Exception as exc:  # noqa: BLE001 - whatever the sandbox sent, this side goes on
                    self.notes.append(f"{name} could not be read: {type(exc).__name__}")
            else:
                self.ns[name] = Remote(self, {"name": name}, f"function {name}" if desc.get("callable") else name)

    def run_cells(self, cells: list[dict], points: dict[str, float]) -> None:
        """Every cell of a :func:`plan` in order: given cells on both sides, answers in the sandbox,
        tests here (``points`` by grade_id)."""
        for cell in cells:
            k = C.kind(cell)
            if k == "given":
                self.given(cell)
            elif k == "answer":
                self.answer(cell)
            elif k == "test":
                self.test(cell, points.get(C.grade_id(cell), 0.0))

    def test(self, cell: dict, points: float) -> None:
        visible, hidden = C.split_hidden(C.source(cell))
        gid = C.grade_id(cell)
        before = {k: id(v) for k, v in self.ns.items()}
        printed, err = self._exec_here(visible, f"test {gid}")
        message, hidden_failed = None, False
        if err is None and hidden.strip():
            more, err = self._exec_here(hidden, f"test {gid}")
            printed += more
            hidden_failed = err is not None
        if err is not None:
            message = _test_message(err, hidden_failed, self.dead_reason)
            if isinstance(err, NameError) and self.dead_reason:
                message = f"Not run: your code stopped earlier ({self.dead_reason})."
        for k, v in self.ns.items():         # what a test cell binds (an imported helper) is the tests' own
            if before.get(k) != id(v) and not isinstance(v, Remote):
                self.trusted_names.add(k)
        self.cells.append({"grade_id": gid, "kind": "test", "points": points, "passed": err is None,
                           "stdout": printed, "error": message})


def _sync(obj, new) -> None:
    """Give ``obj`` the state the student's call left in its copy ``new`` (in-place changes)."""
    import numpy as np
    import torch
    if isinstance(obj, torch.Generator) and isinstance(new, torch.Generator):
        obj.set_state(new.get_state())
    elif isinstance(obj, torch.Tensor) and isinstance(new, torch.Tensor):
        with torch.no_grad():
            if obj.shape == new.shape and obj.dtype == new.dtype:
                obj.copy_(new)
            else:
                obj.data = new
    elif isinstance(obj, np.ndarray) and isinstance(new, np.ndarray) and obj.shape == new.shape:
        obj[...] = new
    elif isinstance(obj, list) and isinstance(new, list):
        obj[:] = new
    elif isinstance(obj, dict) and isinstance(new, dict):
        obj.clear()
        obj.update(new)
    elif type(obj) is type(new) and hasattr(obj, "__dict__"):
        obj.__dict__.clear()
        obj.__dict__.update(new.__dict__)


def _error_text(err: BaseException) -> str:
    if isinstance(err, SandboxError):
        return f"Your code could not be run: {err.reason}."
    if getattr(err, "_course_student", None):
        return err._course_student
    return "".join(traceback.format_exception_only(type(err), err)).strip()[-1500:]


def _test_message(err: BaseException, hidden: bool, dead: str | None) -> str:
    """What the student is told about a failed test: the visible test's message; for a hidden test
    only that it failed (and the student's own error message, if their code raised)."""
    if isinstance(err, SandboxError):
        return f"Your code could not be run: {err.reason}."
    student = getattr(err, "_course_student", None)
    if student and hidden:     # only the exception's type: its text could carry a hidden test's inputs
        return (f"A hidden test failed: your code raised {type(err).__name__}. The hidden tests check the same "
                "specification on other inputs; re-read the part's specification.")
    if student:
        return f"The test failed: {student}"
    if hidden:
        return (f"A hidden test failed ({type(err).__name__}). The hidden tests check the same specification on "
                "other inputs; re-read the part's specification.")
    text = str(err).strip()[:2000]
    return f"{type(err).__name__}: {text}" if text else f"{type(err).__name__} (the test failed)"


def run(source: Path, submission: Path, workdir: Path, limits: Limits | None = None,
        sandbox: str | None = None) -> dict:
    """Grade one submission; the result as plain data (see the module's doc)."""
    t0 = time.monotonic()
    source_nb = C.load(source)
    course = (source_nb.get("metadata", {}) or {}).get("course", {}) or {}
    forbidden, private = list(course.get("forbidden", [])), bool(course.get("private_data", False))
    try:
        submission_nb = C.load(submission)
    except (OSError, ValueError) as exc:
        return {"status": "error", "note": f"the submission is not a readable notebook ({exc})", "cells": [],
                "seconds": 0.0}
    points = C.parts(source_nb)
    with Sandbox(workdir, limits, sandbox, forbidden, private_data=private) as sb:
        runner = Runner(sb, forbidden)
        runner.notes += ["private data is reachable: no sandbox"] if private and sb.mode != "bwrap" else []
        runner.run_cells(plan(source_nb, submission_nb), points)
        status = "ok" if sb.dead is None else sb.dead.kind
        reason = sb.dead.reason if sb.dead else ""
        raw = bytes(sb.output[:4000]).decode("utf-8", "replace")
        mode = sb.mode
    tests = [c for c in runner.cells if c["kind"] == "test"]
    rec = runner.ns.get("__course_record__")       # only the trusted cells can bind it (see Runner.answer)
    try:
        record = json.loads(json.dumps(rec)) if isinstance(rec, dict) else None
    except (TypeError, ValueError, RecursionError):
        record = None
    if record is None and rec is not None:
        runner.notes.append(f"__course_record__ is not a plain dict ({type(rec).__name__}): not recorded")
    return {"status": status, "note": reason, "notes": runner.notes, "sandbox": mode, "cells": runner.cells,
            "score": sum(c["points"] for c in tests if c["passed"]), "max_score": sum(points.values()),
            "parts": {c["grade_id"]: (c["points"] if c["passed"] else 0.0) for c in tests}, "record": record,
            "seconds": round(time.monotonic() - t0, 2), "sandbox_output": raw}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("submission")
    p.add_argument("workdir")
    p.add_argument("out")
    p.add_argument("--cell-timeout", type=float, default=Limits.cell_s)
    p.add_argument("--total-timeout", type=float, default=Limits.total_s)
    a = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    res = run(Path(a.source), Path(a.submission), Path(a.workdir),
              Limits(cell_s=a.cell_timeout, total_s=a.total_timeout))
    Path(a.out).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
