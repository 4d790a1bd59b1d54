"""Execute a notebook so that nothing can hang: the one runner of the build, the tests and the scripts.

Each execution runs papermill in a **child process** with

* a per-cell timeout (``COURSE_CELL_TIMEOUT`` seconds, else :func:`cell_timeout`'s default for the
  mode), enforced by nbclient inside the child, and
* a whole-notebook timeout (``COURSE_NOTEBOOK_TIMEOUT`` seconds, else :func:`notebook_timeout`'s
  default), enforced from outside: past it the child and its kernel (its whole process tree) are
  killed, whatever state their event loops are in. This is the guard against nbclient's intermittent
  hang on cells that create ipywidgets (jupyter/nbclient#312, nteract/papermill#723), where the kernel
  and papermill both wait for a message that never comes.

A notebook whose kernel died or that timed out is run once more (``retries=1``); a second success is
reported ``ok (retried)``. A timeout is reported ``FAILED: timeout after N s in cell K (first line)``,
where K counts the cells of the *source* notebook from 1 (papermill's injected-parameters cell is not
counted), so an instructor finds it in JupyterLab.

Headless: the child sets ``COURSE_HEADLESS=1`` unless told otherwise, so that
:func:`course_lib.plots.explorer` draws its static view and never builds live widgets.

Command line (used by the build's child processes, also handy by hand)::

    python -m course_lib.nbrun NOTEBOOK OUT [-p NAME VALUE ...] [--cwd DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Defaults in seconds, per mode: (per cell, whole notebook). FAST notebooks take well under a minute;
#: a smoke run (COURSE_SMOKE=1) a few minutes on one CPU thread; full mode hours on a GPU.
DEFAULT_TIMEOUTS = {"fast": (300, 900), "smoke": (900, 2400), "full": (4 * 3600, 12 * 3600)}
#: A lecture over this many seconds gets its slowest cells printed by the build.
SLOW_NOTEBOOK_S = 60.0


def _mode(fast: bool | None, environ=None) -> str:
    from . import config

    environ = os.environ if environ is None else environ
    if str(environ.get("COURSE_SMOKE", "")).strip().lower() in config._TRUE:
        return "smoke"
    if fast is None and str(environ.get("COURSE_FAST", "")).strip():
        fast = str(environ["COURSE_FAST"]).strip().lower() in config._TRUE
    return "fast" if config.fast_mode(fast) else "full"


def _env_seconds(name: str, environ=None) -> int | None:
    raw = str((os.environ if environ is None else environ).get(name, "")).strip()
    if not raw:
        return None
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds (e.g. {name}=300)") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a positive number of seconds")
    return value


def cell_timeout(fast: bool | None = None, environ=None) -> int:
    """Seconds one cell may run: ``COURSE_CELL_TIMEOUT``, else the mode's default (``environ``: the
    environment to read, ``os.environ`` by default)."""
    return _env_seconds("COURSE_CELL_TIMEOUT", environ) or DEFAULT_TIMEOUTS[_mode(fast, environ)][0]


def notebook_timeout(fast: bool | None = None, environ=None) -> int:
    """Seconds a whole notebook may run: ``COURSE_NOTEBOOK_TIMEOUT``, else the mode's default (at least
    the per-cell limit)."""
    return (_env_seconds("COURSE_NOTEBOOK_TIMEOUT", environ)
            or max(DEFAULT_TIMEOUTS[_mode(fast, environ)][1], cell_timeout(fast, environ)))


@dataclass
class CellTime:
    """One executed code cell: its number in the source notebook (from 1), seconds, first line."""

    cell: int
    seconds: float
    first_line: str


@dataclass
class RunResult:
    """What :func:`execute` did with one notebook."""

    notebook: str
    output: Path
    status: str                      # "ok", "ok (retried)" or "FAILED: ..."
    seconds: float                   # wall time of all attempts
    attempts: int = 1
    failed_cell: int | None = None   # number in the source notebook (from 1)
    error: str = ""                  # the error's last lines, for the log
    cells: list[CellTime] = field(default_factory=list)
    log: str = ""                    # what the child process printed (warnings, papermill's messages)

    @property
    def ok(self) -> bool:
        return self.status.startswith("ok")

    def slowest(self, n: int = 5) -> list[CellTime]:
        return sorted(self.cells, key=lambda c: -c.seconds)[:n]


# ----------------------------------------------------------------------------- reading an executed copy

def _read(out: Path) -> dict | None:
    try:
        return json.loads(Path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _numbered(nb: dict) -> list[tuple[int, dict]]:
    """(number in the source notebook from 1, cell) for every cell papermill did not inject."""
    out, k = [], 0
    for c in nb.get("cells", []):
        if {"injected-parameters", "papermill-error-cell-tag"} & set(c.get("metadata", {}).get("tags", [])):
            continue
        k += 1
        out.append((k, c))
    return out


def _first_line(cell: dict) -> str:
    src = "".join(cell.get("source", ""))
    line = next((ln.strip() for ln in src.splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def cell_times(out: Path) -> list[CellTime]:
    """Seconds of every executed code cell of an executed copy (papermill's cell metadata)."""
    nb = _read(out) or {}
    times = []
    for k, c in _numbered(nb):
        d = c.get("metadata", {}).get("papermill", {}).get("duration")
        if c.get("cell_type") == "code" and d is not None:
            times.append(CellTime(k, float(d), _first_line(c)))
    return times


def running_cell(out: Path) -> tuple[int | None, str]:
    """The cell where an executed copy stopped: the one papermill marked running or failed, else the
    last one it started (nbclient's per-cell timeout marks the cell it stopped as completed)."""
    cells = _numbered(_read(out) or {})
    for status in ("running", "failed"):
        for k, c in cells:
            if c.get("metadata", {}).get("papermill", {}).get("status") == status:
                return k, _first_line(c)
    started = [(k, c) for k, c in cells if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return (started[-1][0], _first_line(started[-1][1])) if started else (None, "")


# ----------------------------------------------------------------------------- the child process

def kernel_config(sock_dir: str):
    """The kernel talks over IPC sockets in ``sock_dir`` (POSIX), not TCP: no port races between
    parallel runs, and no "running over TCP without encryption" warning in the log."""
    from traitlets.config import Config

    c = Config()
    if os.name == "posix":
        c.KernelManager.transport = "ipc"
        c.KernelManager.ip = os.path.join(sock_dir, "kernel")
    return c


def _child(path: str, out: str, parameters: dict, cwd: str | None, cell_s: int, kernel: str, report: str) -> int:
    """Run papermill once; write {"kind": ok|timeout|dead|error, "error": ...} to ``report``."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    kind, err = "ok", ""
    try:
        with tempfile.TemporaryDirectory(prefix="course-kernel-") as sock:
            pm.execute_notebook(path, out, parameters=parameters, cwd=cwd, progress_bar=False, kernel_name=kernel,
                                execution_timeout=cell_s, config=kernel_config(sock))
    except CellTimeoutError as exc:
        kind, err = "timeout", str(exc)
    except pm.PapermillExecutionError as exc:
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback[-3:]))
        kind, err = "error", f"{exc.ename}: {exc.evalue}\n{tb}"
    except DeadKernelError as exc:
        kind, err = "dead", f"DeadKernelError: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        kind, err = ("dead", f"DeadKernelError: {exc}") if "DeadKernel" in type(exc).__name__ \
            else ("error", f"{type(exc).__name__}: {exc}")
    Path(report).write_text(json.dumps({"kind": kind, "error": err[-4000:]}), encoding="utf-8")
    return 0 if kind == "ok" else 1


# ----------------------------------------------------------------------------- the parent

def kill_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process below it (its kernel runs in a session of its own)."""
    family = []
    try:
        import psutil

        family = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or the process already gone
        pass
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in family:
        with contextlib.suppress(Exception):
            p.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


def _attempt(path: Path, out: Path, parameters: dict, cwd: Path | None, env: dict, cell_s: int, nb_s: int,
             kernel: str) -> tuple[str, str, int | None, str]:
    """One child run: (kind, error, failed cell, child's log) with kind ok | timeout | dead | error."""
    with tempfile.TemporaryDirectory(prefix="course-nbrun-") as d:
        report = Path(d) / "report.json"
        cmd = [sys.executable, "-m", "course_lib.nbrun", str(path), str(out), "--params", json.dumps(parameters),
               "--cell-timeout", str(cell_s), "--kernel", kernel, "--report", str(report)]
        if cwd is not None:
            cmd += ["--cwd", str(cwd)]
        log = Path(d) / "child.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=str(_package_root()))
            try:
                proc.wait(timeout=nb_s)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                k, line = running_cell(out)
                where = f" in cell {k} ({line})" if k else " before any cell started (kernel start-up)"
                return "timeout", f"timeout after {nb_s} s{where}", k, _text(log)
        printed = _text(log)
        if report.exists():
            rep = json.loads(report.read_text(encoding="utf-8"))
        else:
            rep = {"kind": "dead", "error": f"the runner exited with code {proc.returncode} without a report:\n"
                                            f"{printed[-2000:]}"}
    k, line = running_cell(out)
    if rep["kind"] == "timeout":
        where = f" in cell {k} ({line})" if k else ""
        return "timeout", f"timeout after {cell_s} s{where}", k, printed
    return rep["kind"], rep["error"], (k if rep["kind"] != "ok" else None), printed


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _package_root() -> Path:
    return Path(__file__).resolve().parent.parent


def execute(path, out, *, parameters: dict | None = None, cwd=None, env: dict | None = None,
            cell_timeout_s: int | None = None, notebook_timeout_s: int | None = None, retries: int = 1,
            headless: bool = True, kernel: str = "python3", fast: bool | None = None) -> RunResult:
    """Execute ``path`` into ``out`` with papermill in a child process; never hangs, never raises for
    the notebook's own errors (they are in the result's ``status``).

    ``env`` updates the child's environment (``os.environ`` otherwise). A run whose kernel died or that
    timed out is tried ``retries`` more times; an ordinary error (an exception in a cell) is not.
    ``headless`` sets ``COURSE_HEADLESS=1`` for the child unless ``env`` sets it.
    """
    path, out = Path(path).resolve(), Path(out).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no notebook {path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ)
    child_env.update(env or {})
    if headless:
        child_env.setdefault("COURSE_HEADLESS", "1")
    pkg = str(_package_root())
    child_env["PYTHONPATH"] = pkg + (os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    cell_s = int(cell_timeout_s or cell_timeout(fast, child_env))
    nb_s = int(notebook_timeout_s or notebook_timeout(fast, child_env))
    t0 = time.perf_counter()
    attempts, kind, error, cell, logs = 0, "error", "", None, []
    while attempts <= retries:
        attempts += 1
        kind, error, cell, printed = _attempt(path, out, parameters or {}, Path(cwd) if cwd else None, child_env, cell_s,
                                     nb_s, kernel)
        if printed.strip():
            logs.append(printed if attempts == 1 else f"[try {attempts}]\n{printed}")
        if kind in ("ok", "error"):
            break
    seconds = time.perf_counter() - t0
    if kind == "ok":
        status = "ok" if attempts == 1 else "ok (retried)"
    elif kind == "timeout":
        status = "FAILED: " + error
    else:
        name = "DeadKernelError" if kind == "dead" else error.split(":")[0].split("\n")[0].strip() or "error"
        status = f"FAILED: {name}" + (f" in cell {cell}" if cell else "")
    if attempts > 1 and kind != "ok":
        status += f" (after {attempts} tries)"
    return RunResult(path.name, out, status, seconds, attempts, cell, error, cell_times(out), "\n".join(logs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook")
    ap.add_argument("out")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a papermill parameter (VALUE is read as JSON when it parses, else as a string)")
    ap.add_argument("--params", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cwd", default=None)
    ap.add_argument("--cell-timeout", type=int, default=None)
    ap.add_argument("--kernel", default="python3")
    ap.add_argument("--report", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    params = json.loads(args.params) if args.params else {}
    for name, raw in args.parameter:
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    if args.report:   # the child of execute()
        return _child(args.notebook, args.out, params, args.cwd, args.cell_timeout or cell_timeout(),
                      args.kernel, args.report)
    res = execute(args.notebook, args.out, parameters=params, cwd=args.cwd, cell_timeout_s=args.cell_timeout)
    print(f"{res.notebook}: {res.status} ({res.seconds:.1f} s, {res.attempts} tries)")
    if not res.ok and res.error:
        print(res.error[-2000:], file=sys.stderr)
    for c in res.slowest(5):
        print(f"  cell {c.cell:3d} {c.seconds:7.1f} s  {c.first_line}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
