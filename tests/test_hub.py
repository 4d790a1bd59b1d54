"""nbgrader's whole workflow against a real running JupyterHub (``./course.sh hub``'s, hub/).

The test starts the hub itself (``hub/hubctl.py``: three Unix users made for it, state in
``build/hub-test-*``), drives everything through the hub's REST API (tokens, servers) and the users'
own servers (nbgrader's server extensions: the formgrader's REST API for the instructor, the
Assignments API for the students; the Jupyter contents API for files; a terminal of the instructor's
lab for the grading command), plus one real browser login,
and removes the users and folders at the end:

instructor generates and releases a00_metrics -> two students fetch it -> one writes the solution, one
leaves it blank, both submit -> instructor collects, autogrades with the course's sandboxed executor
(``hub/autograde.py``: ``batch.execute_all``, then ``nbgrader autograde`` / ``generate_feedback`` reading its
results), releases feedback -> each student fetches their own feedback: full marks and zero; neither can read the other's
work or feedback (their servers refuse the other's token; their Unix accounts cannot read the other's
files nor list the exchange's inbox). The hub's gradebook exports to grades.csv with
``./course.sh grade``'s columns.

Runs only as root (the hub starts servers as other users) with jupyterhub installed and
configurable-http-proxy installed or node/npm to install it (into build/node, as ``./course.sh hub`` does); it takes 1-3 minutes on 2 cores:
``./course.sh test -m hub -s tests/test_hub.py`` prints the timings. Users, ports and state folder are
per test process, so pytest-xdist workers never collide.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
A = "a00_metrics"
COURSE_ID = "unlearning-course"
# Per test process (pytest-xdist workers may each start a hub): users, ports and state never collide.
_ID = os.getpid()
INSTRUCTOR, S1, S2 = f"ht{_ID}-instructor", f"ht{_ID}-student1", f"ht{_ID}-student2"
PASSWORD = "hubtest-shared-pw"

def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "hub" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


hubctl = _load("hubctl")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the hub starts every user's server as that Unix user (run the tests as root)"
    if importlib.util.find_spec("jupyterhub") is None:
        return "jupyterhub is not installed (pip install -e '.[dev]' installs pyproject.toml's packages)"
    try:
        hubctl.proxy_command(install=False)
    except hubctl.HubError:
        if shutil.which("node") is None or shutil.which("npm") is None:
            return ("configurable-http-proxy (npm) is not installed, nor node/npm to install it: install Node.js >= 20 "
                    "with npm (the test then installs the proxy into build/node, as ./course.sh hub does)")
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    for u in (INSTRUCTOR, S1, S2):
        if hubctl.user_exists(u):
            return f"the user {u} exists already (left by an interrupted run? userdel {u})"
    return None


WHY_NOT = _why_not()
skip = pytest.mark.skipif(WHY_NOT is not None, reason=f"hub test: {WHY_NOT}")


def _free_port() -> int:
    """A port P with P, P+1 and P+2 free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65000 and all(hubctl.port_free(q) for q in (p, p + 1, p + 2)):
            return p
    raise RuntimeError("no free ports")


class Hub:
    """The running hub: its URL, the admin token, one token per user and the timings."""

    def __init__(self, info: dict):
        self.info, self.url, self.admin = info, info["url"], info["token"]
        self.tokens: dict[str, str] = {}
        self.times: dict[str, float] = {"hub answering (s)": round(info["hub_s"], 1)}

    def token(self, user: str) -> str:
        if user not in self.tokens:
            st, data = hubctl.api(f"{self.url}/hub/api/users/{user}/tokens", self.admin, "POST",
                                  {"note": "tests/test_hub.py", "expires_in": 3600})
            assert st in (200, 201), (st, data)
            self.tokens[user] = data["token"]
        return self.tokens[user]

    def call(self, user: str, path: str, method: str = "GET", body: dict | None = None, as_user: str | None = None,
             timeout: float = 600):
        """``method /user/USER/PATH`` on USER's server, with AS_USER's token (default: USER's)."""
        return hubctl.api(f"{self.url}/user/{user}/{path}", self.token(as_user or user), method, body, timeout)

    def ok(self, user: str, path: str, method: str = "POST", body: dict | None = None):
        st, data = self.call(user, path, method, body)
        assert st == 200, (path, st, data)
        if isinstance(data, dict) and "success" in data:
            if not data["success"]:
                pytest.fail(f"{path} failed:\n{data.get('error') or ''}\n{data.get('log') or ''}\n{data.get('value') or ''}")
        return data

    def home(self, user: str) -> Path:
        return Path(self.info["state"]) / "home" / user


@pytest.fixture(scope="module")
def hub():
    state = ROOT / "build" / f"hub-test-{os.getpid()}"
    try:
        hubctl.proxy_command()          # npm installs it into build/node when missing (a fresh clone in CI)
    except hubctl.HubError as err:
        pytest.skip(f"hub test: {err}")
    info = hubctl.start(port=_free_port(), state=state, instructors=(INSTRUCTOR,), students=(S1, S2),
                        password=PASSWORD)
    h = Hub(info)
    try:
        yield h
    finally:
        done = hubctl.stop(state)
        print("\nhub stopped:", "; ".join(done))
        left = [u for u in (INSTRUCTOR, S1, S2) if hubctl.user_exists(u)]
        assert not left, f"users left behind: {left}"
        assert not state.exists(), f"{state} left behind"


def _as(user: str, *cmd: str) -> subprocess.CompletedProcess:
    """A command run as USER (a read attempt of that Unix account)."""
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, timeout=60, cwd="/")


def run_in_terminal(hub: Hub, user: str, command: str, timeout: float = 900) -> tuple[int, str]:
    """Run COMMAND in a new terminal of USER's server (the Jupyter terminals API: a shell as that user,
    in the course's environment); its exit status and what the terminal showed."""
    import asyncio
    import re

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    st, term = hub.call(user, "api/terminals", "POST", {})
    assert st == 200, term
    marker = "__HUB_TEST_DONE__"

    async def talk() -> tuple[int, str]:
        url = hub.url.replace("http://", "ws://", 1) + f"/user/{user}/terminals/websocket/{term['name']}"
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {hub.token(user)}"}))
        await ws.write_message(json.dumps(["stdin", f"{command}; echo {marker}$?{marker}\r"]))
        out, deadline = "", time.monotonic() + timeout
        try:
            while True:
                msg = await asyncio.wait_for(ws.read_message(), max(1.0, deadline - time.monotonic()))
                if msg is None:
                    return -1, out
                kind, *rest = json.loads(msg)
                if kind == "stdout":
                    out += rest[0]
                    m = re.search(marker + r"(\d+)" + marker, out)
                    if m:
                        return int(m.group(1)), out
        finally:
            ws.close()

    try:
        return asyncio.run(talk())
    finally:
        hub.call(user, f"api/terminals/{term['name']}", "DELETE")


def _assignment(listing, name: str = A) -> list[dict]:
    """The entries of NAME in the Assignments API's answer (``{"success", "value": [...]}``)."""
    if isinstance(listing, dict):
        listing = listing.get("value", [])
    return [a for a in listing if a["assignment_id"] == name]


@pytest.mark.hub
@skip
def test_release_fetch_submit_collect_grade_feedback(hub):
    body = {"assignment_id": A, "course_id": COURSE_ID}
    t0 = time.monotonic()
    for u in (INSTRUCTOR, S1, S2):
        hub.times[f"{u}'s server and lab (s)"] = round(hubctl.start_server(hub.url, hub.admin, u), 1)
    hub.times["three servers started (s)"] = round(time.monotonic() - t0, 1)

    """The whole workflow through the hub's and the users' REST APIs, a terminal and a browser (module doc)."""
    # the roles: the instructor has the formgrader, a student does not
    assert hub.call(INSTRUCTOR, "formgrader/api/status")[0] == 200
    assert hub.call(S1, "formgrader/api/status")[0] == 404

    # instructor: generate (fills the gradebook) and release through the formgrader's REST API
    t_release = time.monotonic()
    hub.ok(INSTRUCTOR, f"formgrader/api/assignment/{A}/assign")
    hub.ok(INSTRUCTOR, f"formgrader/api/assignment/{A}/release")

    # students: the Assignments list shows it released; fetch it
    for s in (S1, S2):
        listing = hub.ok(s, f"assignments?course_id={COURSE_ID}", "GET")
        assert [a["status"] for a in _assignment(listing)] == ["released"], listing
        listing = hub.ok(s, "assignments/fetch", "POST", body)
        assert "fetched" in [a["status"] for a in _assignment(listing)], listing
        st, folder = hub.call(s, f"api/contents/{A}")
        assert st == 200 and f"{A}.ipynb" in [f["name"] for f in folder["content"]], folder

    # student 1 writes the instructor's solution into the fetched notebook; student 2 leaves it blank
    solution = json.loads((ROOT / "solutions" / A / f"{A}.ipynb").read_text(encoding="utf-8"))
    st, saved = hub.call(S1, f"api/contents/{A}/{A}.ipynb", "PUT",
                         {"type": "notebook", "format": "json", "content": solution})
    assert st == 200, saved
    for s in (S1, S2):
        listing = hub.ok(s, "assignments/submit", "POST", body)
        assert any(a["status"] == "submitted" for a in _assignment(listing)), listing

    # nobody lists the exchange's inbox but its owner, the instructor
    inbound = Path(hub.info["state"]) / "exchange" / COURSE_ID / "inbound"
    assert _as(S2, "ls", str(inbound)).returncode != 0
    assert len(list(inbound.iterdir())) == 2

    # instructor: collect (formgrader), then in a terminal of the instructor's lab the course's grading:
    # the sandboxed executor, nbgrader autograde and generate_feedback (hub/autograde.py); release feedback
    hub.ok(INSTRUCTOR, f"formgrader/api/assignment/{A}/collect")
    rc, out = run_in_terminal(hub, INSTRUCTOR, "python -c 'from course_lib.grading import sandbox; print(\"SANDBOX\", sandbox.mode())'")
    assert rc == 0, out
    if shutil.which("bwrap"):
        assert "SANDBOX bwrap" in out, out   # the instructor's grading runs students' code in bubblewrap
    t_grade = time.monotonic()
    rc, out = run_in_terminal(hub, INSTRUCTOR, f"COURSE_QUIET=1 python {ROOT / 'hub' / 'autograde.py'} {A}")
    assert rc == 0, out[-4000:]
    hub.times["autograde, two students, sandboxed (s)"] = round(time.monotonic() - t_grade, 1)
    # the formgrader's own Autograde button (nbgrader's autograde in the instructor's server; the course's
    # Execute step runs the sandbox itself) agrees for the blank submission
    t_button = time.monotonic()
    hub.ok(INSTRUCTOR, f"formgrader/api/submission/{A}/{S2}/autograde")
    hub.ok(INSTRUCTOR, f"formgrader/api/assignment/{A}/generate_feedback")
    extra = time.monotonic() - t_button
    hub.times["formgrader's Autograde button, blank submission, and feedback again (s)"] = round(extra, 1)
    hub.ok(INSTRUCTOR, f"formgrader/api/assignment/{A}/release_feedback")

    # the gradebook, through the formgrader: full marks and zero
    st, subs = hub.call(INSTRUCTOR, f"formgrader/api/submissions/{A}")
    assert st == 200, subs
    by = {r["student"]: r for r in subs}
    assert by[S1]["score"] == by[S1]["max_score"] > 0, by[S1]
    assert by[S2]["score"] == 0, by[S2]

    # students fetch their own feedback
    fb = {}
    for s in (S1, S2):
        hub.ok(s, "assignments/fetch_feedback", "POST", body)
        st, top = hub.call(s, f"api/contents/{A}/feedback")
        assert st == 200 and top["content"], (s, top)
        stamp = top["content"][0]["name"]
        st, page = hub.call(s, f"api/contents/{A}/feedback/{quote(stamp)}/{A}.html")
        assert st == 200, page
        fb[s] = (page["content"], hub.home(s) / A / "feedback" / stamp / f"{A}.html")
    hub.times["round trip release -> feedback fetched (s), without the button's extra run"] = round(
        time.monotonic() - t_release - extra, 1)
    max_score = by[S1]["max_score"]
    assert f"{max_score:g} / {max_score:g}" in fb[S1][0].replace("\n", " ") or f"Score: {max_score:g}" in fb[S1][0]
    assert "BEGIN HIDDEN TESTS" not in fb[S1][0] and "BEGIN HIDDEN TESTS" not in fb[S2][0]

    # neither reads the other's work or feedback: not through the hub (the other's server refuses the
    # token), not as Unix users (homes are private; the exchange's feedback folder cannot be listed)
    for me, other in ((S1, S2), (S2, S1)):
        st, _ = hub.call(other, f"api/contents/{A}/{A}.ipynb", as_user=me)
        assert st in (403, 404) or st >= 300, st
        assert _as(me, "cat", str(fb[other][1])).returncode != 0
        assert _as(me, "cat", str(hub.home(other) / A / f"{A}.ipynb")).returncode != 0
        assert _as(me, "ls", str(hub.home(INSTRUCTOR) / COURSE_ID / "build" / "nbgrader")).returncode != 0
        assert _as(me, "cat", str(fb[me][1])).returncode == 0
    assert _as(S1, "ls", str(Path(hub.info["state"]) / "exchange" / COURSE_ID / "feedback")).returncode != 0

    # the hub's gradebook to grades.csv, the columns of ./course.sh grade
    out = Path(hub.info["state"]) / "grades"
    proc = subprocess.run([sys.executable, str(ROOT / "hub" / "export_grades.py"), A, "--course",
                           str(hub.home(INSTRUCTOR) / COURSE_ID), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "grades.csv", encoding="utf-8")))
    header = next(csv.reader(open(out / "grades.csv", encoding="utf-8")))
    assert header[:3] == ["student", "total", "max"] and header[-2:] == ["status", "note"]
    got = {r["student"]: r for r in rows}
    assert float(got[S1]["total"]) == max_score and float(got[S2]["total"]) == 0
    assert got[S1]["status"] == got[S2]["status"] == "ok"
    # one step in a real browser: a student logs in and the lab opens with the lectures
    why = _browser_unavailable()
    if why is None:
        hub.times["browser: login -> lab with lectures (s)"] = round(browser_login(hub, S2), 1)
    else:
        hub.times["browser step skipped"] = why
    print("\nhub timings:", json.dumps(hub.times, indent=1))


def _browser_unavailable() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed"
    if shutil.which("chromium") is None:
        return "Chromium is not installed (Debian: apt-get install chromium)"
    return None


def browser_login(hub: Hub, user: str) -> float:
    """A real browser (headless Chromium): the hub's login page, the shared password, the user's
    JupyterLab showing the lectures folder; the seconds it took."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            t0 = time.monotonic()
            page.goto(f"{hub.url}/hub/login", timeout=60_000)
            page.fill("#username_input", user)
            page.fill("#password_input", PASSWORD)
            page.click("#login_submit")
            page.wait_for_url(f"**/user/{user}/lab**", timeout=240_000)
            page.wait_for_selector(".jp-DirListing-item >> text=lectures", timeout=240_000)
            return time.monotonic() - t0
        finally:
            browser.close()


# ----------------------------------------------------------------- refusals (no root or hub needed)

def test_refuses_without_root(monkeypatch):
    """Not root: a clear refusal that says what to run instead, before anything is created."""
    monkeypatch.setattr(hubctl.os, "geteuid", lambda: 1000)
    with pytest.raises(hubctl.HubError, match="needs root"):
        hubctl.preflight(_free_port(), "127.0.0.1")


def test_refuses_a_busy_port(monkeypatch):
    """A port the hub needs (P, P+1, P+2) is taken: the refusal names it."""
    monkeypatch.setattr(hubctl.os, "geteuid", lambda: 0)
    port = _free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port + 1))
        s.listen()
        with pytest.raises(hubctl.HubError, match=f"port {port + 1} is busy"):
            hubctl.preflight(port, "127.0.0.1")


def test_refuses_without_node_for_the_proxy(monkeypatch, tmp_path):
    """No configurable-http-proxy and no node/npm to install it: the refusal says how to get them."""
    monkeypatch.setattr(hubctl, "NODE_DIR", tmp_path / "node")
    monkeypatch.setattr(hubctl.shutil, "which", lambda name: None)
    with pytest.raises(hubctl.HubError, match="node/npm are not installed"):
        hubctl.proxy_command()


def test_course_sh_hub_refuses_without_root_and_lists_hub_in_help():
    """`./course.sh hub` as a user other than root refuses (exit 2) before touching the environment;
    `./course.sh help` lists the hub command."""
    helptext = subprocess.run(["bash", str(ROOT / "course.sh"), "help"], capture_output=True, text=True, timeout=60)
    assert "./course.sh hub" in helptext.stdout
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root to run the command as another user")
    proc = subprocess.run(["runuser", "-u", "nobody", "--", "env", "COURSE_NO_SETUP=1", "bash",
                           str(ROOT / "course.sh"), "hub"], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 2 and "needs root" in proc.stderr, proc.stderr


def test_image_and_kubernetes_files_are_consistent():
    """hub/Dockerfile copies folders that exist and installs hub/etc; hub/z2jh-config.yaml parses, uses
    the image's exchange path and the measured memory sizes; the first-start script is executable."""
    import re

    import yaml

    docker = (ROOT / "hub" / "Dockerfile").read_text(encoding="utf-8")
    for src in re.findall(r"^COPY --chown=\S+ (.+) /opt/unlearning-course/", docker, flags=re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"hub/Dockerfile copies {item}, which is not in the repository"
    assert "/srv/nbgrader/exchange" in docker and "hub/etc" in docker
    values = yaml.safe_load((ROOT / "hub" / "z2jh-config.yaml").read_text(encoding="utf-8"))
    mounts = values["singleuser"]["storage"]["extraVolumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/srv/nbgrader/exchange"]
    assert values["singleuser"]["memory"] == {"guarantee": "1.5G", "limit": "3G"}
    assert "prepare_home.sh" in " ".join(values["singleuser"]["cmd"])
    assert os.access(ROOT / "hub" / "prepare_home.sh", os.X_OK)
    for f in ("common/jupyter_server_config.py", "student/jupyter_server_config.py",
              "student/labconfig/page_config.json"):
        assert (ROOT / "hub" / "etc" / f).exists(), f
    json.loads((ROOT / "hub" / "etc" / "student" / "labconfig" / "page_config.json").read_text())
