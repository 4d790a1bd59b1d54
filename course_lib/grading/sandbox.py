"""Start the student's side of grading in a sandbox and talk to it.

``Sandbox(workdir, limits)`` starts ``python -m course_lib.grading.sandbox_server`` so that it

* sees a file system made of the system's programs and libraries, the Python environment, a copy
  of the course library in which the functions the assignment asks students to write are stubs
  (``forbid.filtered_copy``: the reference code is neither on its disk nor in its memory), and
  the ``data/`` folder, all read-only, plus ``workdir`` (the student's own
  folder, writable) and an empty ``/tmp``: not the solutions, the gradebook, the hidden tests, the
  course's other folders or other students' work;
* has no network, its own process and IPC namespaces (it cannot see or signal the grader), and runs
  as an unprivileged user of its own when the grader runs as root;
* has limits on memory (address space), CPU time, processes, file size, and its printed output.

``Sandbox(..., private_data=True)`` (an assignment whose source notebook has the metadata
``course.private_data: true``, e.g. the capstone challenge, whose originals' training data must stay out
of the student's reach) also hides the course's data: ``data/`` (``config.DATA_DIR``: CIFAR-10 and the
rest) is not bound, and scikit-learn's bundled data sets (the installed package's ``sklearn/datasets/data``,
found by :func:`private_paths` without importing scikit-learn) are covered by an empty read-only tmpfs, so
``load_digits()`` fails there. ``build/`` (the course's caches) is never bound, whatever the setting. In
mode ``none`` nothing can be hidden: the executor says so in the run's notes.

It uses bubblewrap (``bwrap``, Debian package ``bubblewrap``; ``course.sh`` installs it where it
can). Where bwrap is missing or cannot create namespaces, ``COURSE_SANDBOX=none`` runs the same
process without namespaces (resource limits and, as root, the unprivileged user still apply) and
says so in every report: fine for a student's own ``./course.sh check``, not for grading a class.
``COURSE_SANDBOX=bwrap`` makes bwrap mandatory (an error if it does not work).

The channel is a socket pair (its descriptor number is the server's argument); the student's prints go to fd 1/2, drained and
capped by the grader, so they can never be mistaken for a reply.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import config
from . import codec


@dataclass
class Limits:
    """What one student's code may use: wall seconds per request and in all, resident memory (a
    memory cgroup where the machine allows one) and address space (``RLIMIT_AS``), CPU seconds,
    processes and threads (a pids cgroup: ``RLIMIT_NPROC`` is also set, but under bubblewrap as root
    the sandbox's uid maps to root outside, which the kernel exempts), bytes per written file,
    printed bytes kept."""

    cell_s: float = 300.0
    total_s: float = 900.0
    memory: int = 4 * 2**30          # resident memory (the memory cgroup)
    address_space: int = 16 * 2**30  # virtual memory (RLIMIT_AS): torch alone maps ~3.3 GiB
    cpu_s: int = 3600
    nproc: int = 256
    fsize: int = 256 * 2**20
    output: int = 64 * 1024


#: Seconds the sandbox may take to start (not counted against the student's limits).
STARTUP_S = 120


class SandboxError(RuntimeError):
    """The sandbox is gone: it ran past a limit, crashed, or broke the protocol. ``reason`` says which."""

    def __init__(self, reason: str, kind: str = "crashed"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


_BWRAP_OK: dict = {}


def bwrap_works() -> bool:
    """Whether bubblewrap is installed and can create the namespaces the sandbox needs (cached)."""
    if "ok" not in _BWRAP_OK:
        exe = shutil.which("bwrap")
        ok = False
        if exe:
            try:
                ok = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                                    capture_output=True, timeout=30).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
        _BWRAP_OK["ok"] = ok
    return _BWRAP_OK["ok"]


def mode() -> str:
    """``"bwrap"`` or ``"none"`` (see the module's doc); raises if bwrap is required and missing."""
    want = os.environ.get("COURSE_SANDBOX", "auto").strip().lower() or "auto"
    if want not in ("auto", "bwrap", "none"):
        raise ValueError(f"COURSE_SANDBOX={want!r}: use auto, bwrap or none")
    if want == "none":
        return "none"
    if bwrap_works():
        return "bwrap"
    if want == "bwrap":
        raise RuntimeError("COURSE_SANDBOX=bwrap but bubblewrap is missing or cannot create namespaces here: "
                           "install it (`apt-get install bubblewrap`) or run where user namespaces are allowed")
    return "none"


def _sandbox_uid() -> int:
    """An unprivileged uid of this grading run's own (so process limits are per student)."""
    return 61000 + os.getpid() % 3000


def _env(limits: Limits) -> dict:
    keep = {k: os.environ[k] for k in ("COURSE_FAST", "COURSE_SMOKE", "COURSE_QUIET", "COURSE_HEADLESS", "LANG",
                                       "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CI")
            if k in os.environ}
    return {**keep, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp", "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1", "NUMBA_CACHE_DIR": "/tmp/numba", "MPLCONFIGDIR": "/tmp/mpl",
            "COURSE_HEADLESS": "1", "COURSE_IN_SANDBOX": "1", "PYTHONHASHSEED": "0",
            "TQDM_DISABLE": "1", "NUMBA_NUM_THREADS": keep.get("OMP_NUM_THREADS", "1")}


def private_paths() -> list[Path]:
    """The folders ``private_data`` covers besides ``config.DATA_DIR``: scikit-learn's bundled data sets
    (``sklearn/datasets/data``, as found and as resolved), located without importing scikit-learn."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return []
    found: list[Path] = []
    for loc in (spec.submodule_search_locations or []) if spec else []:
        d = Path(loc) / "datasets" / "data"
        for p in (d, d.resolve()):
            if p.is_dir() and p not in found:
                found.append(p)
    return found


def _bwrap_args(workdir: Path, library: Path | None = None, private_data: bool = False) -> list[str]:
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--proc", "/proc", "--dev", "/dev", "--size", str(512 * 2**20), "--tmpfs", "/tmp"]
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/alternatives", "/etc/ld.so.cache",
              "/etc/ssl", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf"):
        args += ["--ro-bind-try", d, d]
    prefix = Path(sys.prefix).resolve()
    base = Path(sys.base_prefix).resolve()
    for d in {prefix, base, Path(sys.executable).parent.resolve()}:
        args += ["--ro-bind-try", str(d), str(d)]
    if Path(sys.prefix) != prefix:
        args += ["--ro-bind-try", str(prefix), sys.prefix]
    root = config.ROOT
    args += ["--ro-bind", str(library or root / "course_lib"), str(root / "course_lib")]
    for d in ([] if private_data else [config.DATA_DIR]) + [root / "build" / "numba-cache"]:
        if Path(d).exists():
            args += ["--ro-bind", str(d), str(d)]
    for d in (private_paths() if private_data else ()):       # an empty, read-only folder in its place
        args += ["--tmpfs", str(d), "--remount-ro", str(d)]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    return args


def _make_cgroups(limits: Limits) -> list[Path]:
    """Control groups that cap the number of processes (a fork bomb) and the memory of one sandbox,
    where the machine lets the grader create them (cgroup v1 ``pids``/``memory`` or v2); else []."""
    name = f"course-sandbox-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    made = []
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists():
        want = {"pids.max": str(limits.nproc), "memory.max": str(limits.memory)}
        bases = [v2]
    else:
        own = {}
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, ctrl, path = line.split(":", 2)
                own[ctrl] = path
        except OSError:
            return []
        bases = [Path("/sys/fs/cgroup/pids") / own.get("pids", "/").lstrip("/"),
                 Path("/sys/fs/cgroup/memory") / own.get("memory", "/").lstrip("/")]
        want = {"pids.max": str(limits.nproc), "memory.limit_in_bytes": str(limits.memory)}
    for base in bases:
        try:
            cg = base / name
            cg.mkdir()
        except OSError:
            continue
        for key, val in want.items():
            if (cg / key).exists():
                try:
                    (cg / key).write_text(val)
                except OSError:
                    pass
        made.append(cg)
    return made


def _remove_cgroup(cg: Path) -> None:
    for _ in range(50):
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            try:
                for pid in (cg / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
            time.sleep(0.1)


class Sandbox:
    """One student's sandboxed process and its channel. Use as a context manager."""

    def __init__(self, workdir: Path, limits: Limits | None = None, sandbox: str | None = None,
                 forbidden: list[str] | tuple = (), private_data: bool = False):
        self.workdir, self.limits = Path(workdir).resolve(), limits or Limits()
        self.forbidden, self.private_data = list(forbidden), bool(private_data)
        self.mode = sandbox or mode()
        self.proc: subprocess.Popen | None = None
        self.dead: SandboxError | None = None
        self.output = bytearray()
        self.started = time.monotonic()

    # --------------------------------------------------------------- life
    def _preexec(self):
        lim = self.limits
        for res, val in ((resource.RLIMIT_AS, lim.address_space), (resource.RLIMIT_CPU, lim.cpu_s),
                         (resource.RLIMIT_FSIZE, lim.fsize), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NPROC, lim.nproc)):
            try:
                resource.setrlimit(res, (val, val))
            except (ValueError, OSError):
                pass
        os.setsid()
        for cg in self.cgroups:                 # before exec: every process it starts stays inside
            try:
                (cg / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def start(self) -> "Sandbox":
        import tempfile
        from . import forbid
        self._libdir = Path(tempfile.mkdtemp(prefix="course-lib-"))
        os.chmod(self._libdir, 0o755)
        library = self._libdir / "course_lib"
        self.stubbed = forbid.filtered_copy(config.ROOT / "course_lib", self.forbidden, library)
        parent, child = socket.socketpair()
        self.sock = parent
        cmd = [sys.executable, "-m", "course_lib.grading.sandbox_server", str(child.fileno())]
        if self.mode == "bwrap":
            env = _env(self.limits)
            setenv = [a for k, v in env.items() for a in ("--setenv", k, v)]
            cmd = _bwrap_args(self.workdir, library, self.private_data) + setenv + cmd
        else:
            env = {**_env(self.limits), "PYTHONPATH": str(self._libdir)}
        if self.mode == "bwrap" and os.geteuid() == 0:
            # bwrap (as root) makes the binds, then runs the student's code as an unprivileged uid of a
            # user namespace of its own: no capabilities, nothing to signal, read-only binds
            uid = str(_sandbox_uid())
            cmd = cmd[:1] + ["--unshare-user", "--uid", uid, "--gid", uid] + cmd[1:]
            os.chmod(self.workdir, 0o777)
            for p in self.workdir.rglob("*"):
                os.chmod(p, 0o777 if p.is_dir() else 0o666)
        self.cgroups = _make_cgroups(self.limits)
        os.set_inheritable(child.fileno(), True)
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     pass_fds=(child.fileno(),), preexec_fn=self._preexec)
        child.close()      # bwrap and setpriv pass inherited descriptors through unchanged
        threading.Thread(target=self._drain, daemon=True).start()
        # start-up (bwrap, Python, IPython) has its own budget: the limits count from the "ready" frame
        deadline = time.monotonic() + STARTUP_S
        try:
            hello = codec.read_frame(lambda n: self._read_exact(n, deadline))
        except (TimeoutError, EOFError, OSError, codec.Malformed) as exc:
            out = bytes(self.output[:2000]).decode("utf-8", "replace")
            self._die(f"the sandbox did not start ({type(exc).__name__}; {self._exit_text()}): {out}", "crashed")
        if not (isinstance(hello, dict) and hello.get("ready")):
            self._die("the sandbox did not start (no ready frame)", "crashed")
        self.started = time.monotonic()
        return self

    def _drain(self) -> None:
        """Keep the first ``limits.output`` bytes of what the student's code printed at fd level."""
        while True:
            chunk = self.proc.stdout.read1(65536) if self.proc and self.proc.stdout else b""
            if not chunk:
                return
            room = self.limits.output - len(self.output)
            if room > 0:
                self.output += chunk[:room]

    def close(self) -> None:
        """Stop the process tree (namespace and all)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        for cg in getattr(self, "cgroups", []):
            _remove_cgroup(cg)
        if getattr(self, "_libdir", None) is not None:
            shutil.rmtree(self._libdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --------------------------------------------------------------- requests
    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise EOFError from None
                continue
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def send(self, req: dict) -> None:
        """Send a request (plain data). Raises :class:`SandboxError` if the sandbox is gone."""
        if self.dead is not None:
            raise self.dead
        try:
            self.sock.settimeout(self.limits.cell_s)
            self.sock.sendall(codec.dumps(req))
        except OSError as exc:
            self._die(f"the sandbox stopped ({self._exit_text()}: {exc})", "crashed")

    def receive(self, what: str = "your code") -> dict:
        """The reply to the last request, within the per-request and total limits."""
        if self.dead is not None:
            raise self.dead
        left_total = self.limits.total_s - (time.monotonic() - self.started)
        limit = min(self.limits.cell_s, max(left_total, 0.0))
        deadline = time.monotonic() + limit
        try:
            reply = codec.read_frame(lambda n: self._read_exact(n, deadline))
        except TimeoutError:
            total = left_total <= self.limits.cell_s
            self._die(f"{what} ran past {'the whole notebook' if total else 'the'} limit of "
                      f"{self.limits.total_s if total else self.limits.cell_s:g} s and was stopped", "timed out")
        except (EOFError, OSError):
            self._die(f"{what} ended the sandboxed process ({self._exit_text()})", "crashed")
        except codec.Malformed as exc:
            self._die(f"{what} broke the grader's channel ({exc})", "crashed")
        if not isinstance(reply, dict):
            self._die(f"{what} broke the grader's channel (not a reply)", "crashed")
        return reply

    def request(self, req: dict, what: str = "your code") -> dict:
        self.send(req)
        return self.receive(what)

    def _exit_text(self) -> str:
        code = self.proc.poll() if self.proc else None
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        if code in (137, 9):
            return "killed (out of memory?)"
        return f"exit status {code}"

    def _die(self, reason: str, kind: str):
        self.dead = SandboxError(reason, kind)
        self.close()
        raise self.dead
