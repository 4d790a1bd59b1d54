"""Start and stop the course's local JupyterHub (what ``./course.sh hub`` runs).

    ./course.sh hub [--port 8000] [--ip 127.0.0.1]   start it (as root), print the address, the users,
                                                     the password and how long it took to answer
    ./course.sh hub --stop                           stop it, delete the demo users it created and
                                                     its state folder (build/hub/)

The hub runs in the background (``build/hub/hub.log``); its configuration is
``hub/jupyterhub_config.py``. As root it creates the demo users that do not exist yet (``instructor``,
``student1``, ``student2``; override with ``--instructors`` / ``--students``), with their homes in
``build/hub/home/``, and deletes them again on ``--stop``. It refuses, saying why, when it is not root,
when the proxy (``configurable-http-proxy``, an npm package) is missing and cannot be installed, and
when a port it needs is busy.

The tests (``tests/test_hub.py``) import :func:`start` and :func:`stop`.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_DIR = ROOT / "build" / "node"          # configurable-http-proxy installed by npm (kept by --stop)
DEFAULT_STATE = ROOT / "build" / "hub"
PROXY_PACKAGE = "configurable-http-proxy@^5"


class HubError(RuntimeError):
    """The hub cannot start here; the message says why and what to do."""


# ----------------------------------------------------------------- checks

def venv() -> Path:
    v = Path(os.environ.get("COURSE_VENV", ROOT / ".venv"))
    return v if v.is_absolute() else ROOT / v


def proxy_command(install: bool = True) -> str:
    """The ``configurable-http-proxy`` executable: on PATH, else in build/node (installed there by npm
    when ``install`` and npm is present); HubError when there is none."""
    found = shutil.which("configurable-http-proxy")
    local = NODE_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
    if found:
        return found
    if local.exists():
        return str(local)
    if not shutil.which("node") or not shutil.which("npm"):
        raise HubError("the hub's proxy, configurable-http-proxy, is a Node.js program and node/npm are not "
                       "installed: install Node.js >= 20 with npm (Debian: apt-get install nodejs npm), then run "
                       "this again (it runs `npm install --prefix build/node configurable-http-proxy`)")
    if not install:
        raise HubError("configurable-http-proxy is not installed (npm install --prefix build/node configurable-http-proxy)")
    print(f"== installing {PROXY_PACKAGE} (npm) into {NODE_DIR.relative_to(ROOT)} ==", flush=True)
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", PROXY_PACKAGE],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not local.exists():
        raise HubError(f"`npm install {PROXY_PACKAGE}` failed (no network? node older than 20?):\n"
                       f"{(proc.stdout + proc.stderr)[-1500:]}")
    return str(local)


def port_free(port: int, ip: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def preflight(port: int, ip: str) -> str:
    """Refuse (HubError) where the hub cannot run; returns the proxy's executable."""
    if os.geteuid() != 0:
        raise HubError("the course's hub starts every user's server as that user's Unix account, which needs "
                       "root: run `sudo ./course.sh hub` (it creates the demo users instructor, student1, "
                       "student2). Without root, use `./course.sh lab` (one user), or see docs/admin.md for "
                       "a hub run by an administrator (sudospawner, Kubernetes)")
    if not (venv() / "bin" / "jupyterhub-singleuser").exists():
        raise HubError(f"jupyterhub is not installed in {venv()}: run ./course.sh once (it installs pyproject.toml's "
                       "packages, jupyterhub among them)")
    for p in (port, port + 1, port + 2):
        if not port_free(p, ip if p == port else "127.0.0.1"):
            raise HubError(f"port {p} is busy (the hub needs {port} for users, {port + 1} for its API and {port + 2} "
                           f"for the proxy's API): stop what uses it, `./course.sh hub --stop`, or pick "
                           f"another with --port")
    for tool in ("useradd", "userdel", "runuser"):
        if not shutil.which(tool):
            raise HubError(f"{tool} is missing (Debian package passwd / util-linux): the hub creates its demo users with it")
    return proxy_command()


# ----------------------------------------------------------------- the servers' Python

def _runs_as_nobody(python: Path) -> bool:
    """Whether an unprivileged user can run ``python`` and import the course's packages."""
    proc = subprocess.run(["runuser", "-u", "nobody", "--", str(python), "-c", "import course_lib, jupyterhub"],
                          capture_output=True, cwd="/")
    return proc.returncode == 0


def _relocated_python(base: Path, dest: Path, ver: str) -> Path:
    """A copy of the Python installation ``base`` at ``dest`` that any user can run: its files hard-linked
    (no space, about a second), its executable a real copy whose library search path (an absolute
    RUNPATH such as pyenv's ``/root/.pyenv/versions/3.11.7/lib``) is rewritten to ``$ORIGIN/../lib``."""
    subprocess.run(["cp", "-al", str(base), str(dest)], check=True)
    exe = dest / "bin" / f"python{ver}"
    data = exe.read_bytes()
    old = (str(base) + "/lib").encode()
    if old + b"\0" in data:
        data = data.replace(old + b"\0", b"$ORIGIN/../lib".ljust(len(old), b"\0") + b"\0")
    exe.unlink()                      # a hard link to the original: never write through it
    exe.write_bytes(data)
    os.chmod(exe, 0o755)
    return exe


def server_env(state: Path) -> Path:
    """The environment the users' servers run: the course's (``.venv``) when any user can run its Python;
    else (a virtual environment made from a Python under /root, mode 0700, as pyenv's is) a *bridge*
    in STATE/env: the same packages and the same Python, hard-linked into the state folder (no copy,
    a few seconds; see :func:`_relocated_python`). HubError when that fails too."""
    v = venv()
    if _runs_as_nobody(v / "bin" / "python"):
        return v
    info = subprocess.run([str(v / "bin" / "python"), "-c",
                           "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    ver, base = info[0].strip(), Path(info[1].strip()).resolve()
    fix = (f"make the course's environment with a Python every user can run, e.g. COURSE_PYTHON=/usr/bin/python{ver} "
           f"COURSE_VENV=/opt/unlearning-venv ./course.sh hub")
    env = state / "env"
    for d in (env, state / "python"):
        shutil.rmtree(d, ignore_errors=True)
    try:
        python = _relocated_python(base, state / "python", ver)
    except (OSError, subprocess.CalledProcessError) as err:
        raise HubError(f"the users cannot run the course's Python ({base} is in a folder only root can enter) and "
                       f"it could not be linked into {state} ({err}): {fix}") from None
    env.mkdir(parents=True)
    for sub in ("lib", "share", "etc", "include"):
        if (v / sub).is_dir():
            subprocess.run(["cp", "-al", str(v / sub), str(env / sub)], check=True)
    (env / "lib64").symlink_to("lib")
    (env / "bin").mkdir()
    for name in ("python", "python3", f"python{ver}"):
        (env / "bin" / name).symlink_to(python)
    (env / "pyvenv.cfg").write_text(f"home = {python.parent}\ninclude-system-site-packages = false\n"
                                    f"version = {ver}\n")
    shebang = f"#!{v / 'bin' / 'python'}"
    for f in (v / "bin").iterdir():        # console scripts (jupyter, nbgrader, ...) pointed at the bridge
        if f.is_file() and not f.is_symlink():
            head = f.read_bytes()[:200]
            if head.startswith(shebang.encode()):
                text = f.read_text()
                (env / "bin" / f.name).write_text(f"#!{env / 'bin' / 'python'}" + text[len(shebang):])
                os.chmod(env / "bin" / f.name, 0o755)
    if not _runs_as_nobody(env / "bin" / "python"):
        raise HubError(f"the bridge environment {env} (the course's packages and Python, linked into the state "
                       f"folder) does not import the course as another user: {fix}")
    return env


# ----------------------------------------------------------------- users

def user_exists(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def create_users(names: list[str], state: Path) -> list[str]:
    """Create the users that do not exist (home in STATE/home/NAME); the names created are appended to
    STATE/users-created, which --stop reads."""
    created = []
    (state / "home").mkdir(parents=True, exist_ok=True)
    os.chmod(state / "home", 0o755)
    for name in names:
        if user_exists(name):
            continue
        subprocess.run(["useradd", "--create-home", "--home-dir", str(state / "home" / name), "--shell", "/bin/bash",
                        "--user-group", name], check=True, capture_output=True)
        os.chmod(state / "home" / name, 0o700)     # private from the start, not only after the first login
        created.append(name)
        with open(state / "users-created", "a") as fh:
            fh.write(name + "\n")
    return created


def _kill_leftovers(name: str) -> None:
    """Kill, one by one, the processes still running as a demo user this hub created (a server the hub
    could not stop): userdel refuses a user with processes."""
    import psutil
    import pwd
    uid = pwd.getpwnam(name).pw_uid
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real == uid:
                p.kill()
        except psutil.Error:
            pass


def delete_users(state: Path) -> list[str]:
    f = state / "users-created"
    names = f.read_text().split() if f.exists() else []
    for name in names:
        if user_exists(name):
            _kill_leftovers(name)
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)
    return names


# ----------------------------------------------------------------- the REST API

def api(url: str, token: str, method: str = "GET", body: dict | None = None, timeout: float = 30):
    """JSON from the hub's or a user's REST API (``Authorization: token``); (status, data)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_for(fn, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            out = fn()
            if out:
                return out
        except (OSError, urllib.error.URLError):
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise HubError(f"the hub exited ({proc.returncode}) before {what}; {log} ends:\n{tail}")
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise HubError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"; {log} ends:\n{tail}" if tail else ""))


def start_server(base: str, token: str, user: str, timeout: float = 240) -> float:
    """Start ``user``'s server through the hub's API and wait until its JupyterLab page answers;
    the seconds it took."""
    t0 = time.monotonic()
    status, data = api(f"{base}/hub/api/users/{user}/server", token, "POST", {})
    if status not in (201, 202, 400):   # 400: already running
        raise HubError(f"starting {user}'s server: HTTP {status} {data}")

    def lab_answers():
        _, u = api(f"{base}/hub/api/users/{user}", token)
        if not (isinstance(u, dict) and u.get("servers", {}).get("", {}).get("ready")):
            return False
        st, _ = api(f"{base}/user/{user}/api/status", token)
        return st == 200 and _get(f"{base}/user/{user}/lab", token) == 200

    wait_for(lab_answers, timeout, f"{user}'s JupyterLab")
    return time.monotonic() - t0


def _get(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


# ----------------------------------------------------------------- start / stop

def start(port: int = 8000, ip: str = "127.0.0.1", state: Path = DEFAULT_STATE,
          instructors: tuple[str, ...] = ("instructor",), students: tuple[str, ...] = ("student1", "student2"),
          open_lab: str | None = None, password: str | None = None) -> dict:
    """Start the hub in the background; returns ``{"url", "token", "password", "pid", "users", "created",
    "hub_s", "lab_s", "state"}`` (``lab_s``: seconds from the call until ``open_lab``'s JupyterLab
    answered, when asked)."""
    t0 = time.monotonic()
    state = Path(state).resolve()
    if password is not None and len(password) < 8:
        raise HubError("the shared password must have at least 8 characters")
    if (state / "jupyterhub.pid").exists() and _alive(int((state / "jupyterhub.pid").read_text() or 0)):
        raise HubError(f"a hub is already running from {state} (pid {(state / 'jupyterhub.pid').read_text()}): "
                       "`./course.sh hub --stop` first")
    proxy = preflight(port, ip)
    try:
        return _start(t0, proxy, port, ip, state, instructors, students, open_lab, password)
    except BaseException:
        stop(state)                   # undo what this start did: processes, users, state folder
        raise


def _start(t0, proxy, port, ip, state, instructors, students, open_lab, password) -> dict:
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)
    created = create_users([*instructors, *students], state)
    t_env = time.monotonic()
    senv = server_env(state)
    env_s = time.monotonic() - t_env
    token = secrets.token_hex(32)
    (state / "admin-token").write_text(token)
    os.chmod(state / "admin-token", 0o600)
    pw_file = state / "password"
    if password is None:
        password = pw_file.read_text().strip() if pw_file.exists() else secrets.token_urlsafe(9)

    pw_file.write_text(password + "\n")
    os.chmod(pw_file, 0o600)
    env = {**os.environ, "COURSE_ROOT": str(ROOT), "COURSE_VENV": str(venv()), "COURSE_HUB_STATE": str(state),
           "COURSE_HUB_IP": ip, "COURSE_HUB_PORT": str(port), "COURSE_HUB_INSTRUCTORS": ",".join(instructors),
           "COURSE_HUB_STUDENTS": ",".join(students), "COURSE_HUB_PASSWORD": password, "COURSE_HUB_PROXY": proxy,
           "COURSE_HUB_SERVER_ENV": str(senv),
           "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{venv() / 'bin'}:{Path(proxy).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    log = state / "hub.log"
    log.touch(mode=0o600)
    with open(log, "ab") as fh:
        proc = subprocess.Popen([str(venv() / "bin" / "jupyterhub"), "-f", str(HERE / "jupyterhub_config.py")],
                                cwd=state, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (state / "hubctl.json").write_text(json.dumps({"pid": proc.pid, "port": port, "ip": ip}))
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else ip
    base = f"http://{host}:{port}"
    wait_for(lambda: api(f"{base}/hub/api/", token)[0] == 200, 120, "the hub's API to answer", proc, log)
    info = {"url": base, "token": token, "password": password, "pid": proc.pid,
            "users": {"instructors": list(instructors), "students": list(students)}, "created": created,
            "hub_s": time.monotonic() - t0, "lab_s": None, "state": str(state),
            "server_env": str(senv), "env_s": env_s}
    if open_lab:
        start_server(base, token, open_lab)
        info["lab_s"] = time.monotonic() - t0
    return info


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _ours(pid: int) -> bool:
    """Whether ``pid`` is still this hub's process (JupyterHub or its proxy), not a reused number."""
    import psutil
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return "jupyterhub" in cmd or "configurable-http-proxy" in cmd


def stop(state: Path = DEFAULT_STATE, keep_state: bool = False) -> list[str]:
    """Stop the hub (its users' servers and the proxy with it), delete the users it created and (unless
    ``keep_state``) the state folder. Returns what was done, in words."""
    state = Path(state).resolve()
    done = []
    meta = state / "hubctl.json"
    pids = []
    if meta.exists():
        pids.append(json.loads(meta.read_text())["pid"])
    for f in ("jupyterhub.pid", "proxy.pid"):
        if (state / f).exists():
            try:
                pids.append(int((state / f).read_text().strip()))
            except ValueError:
                pass
    for pid in dict.fromkeys(pids):
        if _alive(pid) and _ours(pid):
            os.kill(pid, signal.SIGTERM)
            t0 = time.monotonic()
            while _alive(pid) and time.monotonic() - t0 < 30:
                time.sleep(0.2)
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            done.append(f"stopped process {pid}")
    users = delete_users(state)
    if users:
        done.append(f"deleted users {', '.join(users)}")
    if not keep_state and state.exists():
        shutil.rmtree(state, ignore_errors=True)
        done.append(f"removed {state}")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./course.sh hub", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000, help="port the users open (default 8000; the hub also uses "
                                                           "PORT+1 and PORT+2 on 127.0.0.1)")
    ap.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for a class "
                                                      "on this machine's network: change the demo password first)")
    ap.add_argument("--instructors", default="instructor", help="comma-separated (default: instructor)")
    ap.add_argument("--students", default="student1,student2", help="comma-separated (default: student1,student2)")
    ap.add_argument("--password", help="the demo authenticator's shared password (default: a random one, kept in "
                                       "build/hub/password)")
    ap.add_argument("--no-lab-check", action="store_true", help="do not start a student's server to time it")
    ap.add_argument("--stop", action="store_true", help="stop the hub, delete its demo users and build/hub/")
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stop:
        if os.geteuid() != 0:
            print("./course.sh hub --stop: needs root (the hub and its users were started as root)", file=sys.stderr)
            return 2
        done = stop(args.state)
        print("\n".join(done) if done else f"no hub was running from {args.state}")
        return 0
    instructors = tuple(u for u in args.instructors.split(",") if u)
    students = tuple(u for u in args.students.split(",") if u)
    t0 = time.monotonic()
    try:
        info = start(args.port, args.ip, args.state, instructors, students,
                     None if args.no_lab_check else students[0], args.password)
    except HubError as err:
        print(f"./course.sh hub: {err}", file=sys.stderr)
        return 2
    print(f"The course's JupyterHub is running: {info['url']}/  (log: {Path(info['state']) / 'hub.log'})")
    print(f"  hub answering after {info['hub_s']:.1f} s", end="")
    if info["server_env"] != str(venv()):
        print(f" (of which {info['env_s']:.1f} s linking the users' environment into {info['server_env']}: the "
              f"course's Python is in a folder only root can enter)", end="")
    if info["lab_s"] is not None:
        print(f"; {students[0]}'s JupyterLab answering after {info['lab_s']:.1f} s (from the command)", end="")
    print()
    print(f"  log in as {', '.join(instructors)} (instructor: nbgrader's formgrader) or {', '.join(students)} "
          f"(students: the Assignments tab), password: {info['password']}")
    if info["created"]:
        print(f"  created the Unix users {', '.join(info['created'])} (homes in {Path(info['state']) / 'home'}; "
              "deleted by --stop)")
    print(f"  stop it: ./course.sh hub --stop   (total {time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
