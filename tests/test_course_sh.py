"""./course.sh as its users meet it: the student's `check` (the grader's sandboxed executor with the
release as the source), `lab` as root, and the help text."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COURSE_SH = ROOT / "course.sh"
ASSIGNMENT = "a00_metrics"  # the quickest graded notebook; any with at least three answered parts would do


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["COURSE_VENV"] = sys.prefix          # the environment these tests run in
    env["COURSE_NO_SETUP"] = "1"             # ... used as it is (no pip install)
    env.setdefault("COURSE_FAST", "1")
    env.update(extra)
    return env


def _parts(cells) -> list[str]:
    """The part ("## Part X ...") each cell belongs to."""
    part, out = "", []
    for c in cells:
        if c["cell_type"] == "markdown":
            m = re.search(r"^#{1,3}\s+Part\s+(\S+)", "".join(c["source"]), flags=re.M)
            part = m.group(1) if m else part
        out.append(part)
    return out


def half_done(name: str, dest: Path) -> tuple[Path, str, str]:
    """A student's copy of the release with every part answered from the solution except the
    last part (left as the stub) and the one before it (a wrong answer: functions return 0,
    values are None). Returns (notebook, blank part, broken part)."""
    release = ROOT / "assignments" / name / f"{name}.ipynb"
    nb = json.loads(release.read_text(encoding="utf-8"))
    sol = json.loads(next((ROOT / "solutions" / name).glob("*.ipynb")).read_text(encoding="utf-8"))
    by_id = {c["metadata"].get("nbgrader", {}).get("grade_id"): "".join(c["source"]) for c in sol["cells"]}
    parts = _parts(nb["cells"])
    answer = [(i, c) for i, c in enumerate(nb["cells"])
              if c["cell_type"] == "code" and c["metadata"].get("nbgrader", {}).get("solution")]
    answered_parts = sorted({parts[i] for i, _ in answer}, key=[parts[i] for i, _ in answer].index)
    assert len(answered_parts) >= 3, f"{name} needs three parts with answer cells for this test"
    blank, broken = answered_parts[-1], answered_parts[-2]
    for i, c in answer:
        if parts[i] == blank:
            continue
        src = by_id[c["metadata"]["nbgrader"]["grade_id"]]
        src = re.sub(r"[ \t]*### (BEGIN|END) SOLUTION[^\n]*\n?", "", src)
        if parts[i] == broken:
            fns = re.findall(r"^def (\w+)\(", src, flags=re.M)
            names = re.findall(r"^(\w+)\s*=", src, flags=re.M)
            src = "\n".join([f"def {f}(*args, **kwargs):\n    return 0\n" for f in fns] + [f"{v} = None" for v in names])
        c["source"] = src
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.ipynb"
    out.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return out, blank, broken


def _sections(out: str) -> dict[str, list[str]]:
    """check's output by part: the lines under each "Part X ..." heading."""
    lines = out.splitlines()
    heads = [i for i, ln in enumerate(lines) if re.match(r"^Part \S+", ln)]
    return {re.match(r"^Part (\S+)", lines[i]).group(1): lines[i + 1:j]
            for i, j in zip(heads, heads[1:] + [len(lines)])}


def _tags(lines: list[str]) -> list[str]:
    return [ln.split()[0] for ln in lines if ln.strip().startswith(("PASS", "FAIL", "TODO"))]


@pytest.mark.nbgrader
def test_check_reports_pass_fail_and_not_done_per_part(tmp_path):
    """`./course.sh check` on a half-done notebook: earlier parts PASS, the wrong part FAILs with the
    test's message, the untouched part is TODO, the sandbox is named, and the exit status is 1."""
    nb, blank, broken = half_done(ASSIGNMENT, tmp_path / "student")
    before = nb.read_bytes()
    proc = subprocess.run(["bash", str(COURSE_SH), "check", str(nb)], env=_env(), capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout
    print(out, proc.stderr[-3000:])
    assert proc.returncode == 1, proc.stderr[-3000:]
    section = _sections(out)
    assert _tags(section[broken]) and set(_tags(section[broken])) == {"FAIL"}, section[broken]
    assert any("AssertionError" in ln for ln in section[broken]), "a failure says why (the test's message)"
    assert _tags(section[blank]) and set(_tags(section[blank])) == {"TODO"}, section[blank]
    assert any("stub" in ln for ln in section[blank])
    others = [k for k in section if k not in (blank, broken)]
    assert others and all(set(_tags(section[k])) == {"PASS"} for k in others), out
    assert re.search(r"sandbox: (bwrap|none)", out)
    assert "Not ready yet" in out and "Traceback" not in out + proc.stderr
    assert nb.read_bytes() == before, "check must not modify the student's notebook"


@pytest.mark.nbgrader
def test_check_of_the_untouched_release_is_all_todo():
    """The release as handed out (found by the assignment's name): every part is TODO, Part A too."""
    proc = subprocess.run(["bash", str(COURSE_SH), "check", ASSIGNMENT], env=_env(), capture_output=True,
                          text=True, timeout=900)
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 1, proc.stderr[-3000:]
    section = _sections(proc.stdout)
    assert "A" in section and all(set(_tags(lines)) == {"TODO"} for lines in section.values()), proc.stdout
    assert "0 pass, 0 fail" in proc.stdout


def test_check_refuses_an_unknown_assignment_or_notebook(tmp_path):
    """A name that is neither an assignment nor a notebook, or a notebook of no assignment: exit 2,
    with the list of assignments."""
    proc = subprocess.run(["bash", str(COURSE_SH), "check", "a99_nothing"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "a99_nothing" in proc.stderr and "assignments:" in proc.stderr
    other = tmp_path / "notes.ipynb"
    other.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")
    proc = subprocess.run(["bash", str(COURSE_SH), "check", str(other)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and ASSIGNMENT in proc.stderr, proc.stderr


def test_help_lists_every_command():
    """`./course.sh help` shows every command the case statement accepts, and the sandbox note."""
    proc = subprocess.run(["bash", str(COURSE_SH), "help"], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for cmd in ("build", "test", "lab", "check", "grade"):
        assert re.search(rf"^#?\s*\./course\.sh {cmd}\b", proc.stdout, flags=re.M), cmd
    assert "bubblewrap" in proc.stdout


def _fake_env(tmp_path: Path) -> Path:
    """A COURSE_VENV whose `jupyter` only prints the arguments it was given."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "jupyter").write_text('#!/bin/sh\necho "jupyter $*"\n')
    (venv / "bin" / "jupyter").chmod(0o755)
    return venv


def test_lab_passes_allow_root_exactly_when_root(tmp_path):
    """`./course.sh lab` adds --allow-root when run by root and not otherwise, and passes the user's
    arguments on."""
    venv = _fake_env(tmp_path)
    proc = subprocess.run(["bash", str(COURSE_SH), "lab", "--no-browser"], env=_env(COURSE_VENV=str(venv)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    assert args[:2] == ["jupyter", "lab"] and "--no-browser" in args
    assert ("--allow-root" in args) == (os.geteuid() == 0)


def test_a_broken_bubblewrap_is_reported_never_fatal(tmp_path):
    """Where bubblewrap cannot create namespaces (here a stand-in `bwrap` that fails), course.sh says
    that grading falls back to COURSE_SANDBOX=none and goes on (exit 0)."""
    venv = _fake_env(tmp_path)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    env = _env(COURSE_VENV=str(venv), PATH=f"{fake}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(COURSE_SH), "lab", "--no-browser"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "COURSE_SANDBOX=none" in proc.stderr and "jupyter lab" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_lab_server_answers_with_nbgrader_extensions(tmp_path):
    """`./course.sh lab --no-browser` (as root in CI and containers) starts a server that answers
    /api/status and serves nbgrader's formgrader and assignment list."""
    port, token = _free_port(), "course-test-token"
    log = tmp_path / "lab.log"
    env = _env(JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", str(COURSE_SH), "lab", "--no-browser", f"--port={port}",
                                 "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                                 "--ServerApp.ip=127.0.0.1"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
    try:
        base, status = f"http://127.0.0.1:{port}", None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                code, body = _get(f"{base}/api/status?token={token}")
                if code == 200:
                    status = json.loads(body)
                    break
            except OSError:
                pass
            time.sleep(1)
        assert status is not None, f"no answer from the server; its log:\n{log.read_text()[-3000:]}"
        assert "started" in status
        assert _get(f"{base}/formgrader?token={token}")[0] == 200, log.read_text()[-3000:]
        code, body = _get(f"{base}/assignments?course_id=unlearning-course&token={token}")
        assert code == 200, log.read_text()[-3000:]
        assert "Running as root is not recommended" not in log.read_text()
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
