"""The notebook runner cannot hang: a cell past the per-cell timeout, a notebook past the whole-notebook
timeout and a dying kernel each end in a status that names the cell; the build goes on and exits 1."""
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib import nbrun

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, *sources: str, parameters: str | None = "X = 1") -> Path:
    cells = [new_markdown_cell("# a test notebook")]
    if parameters is not None:
        cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_cell_past_the_cell_timeout_fails_with_its_number_and_seconds(tmp_path):
    """A cell that sleeps past the per-cell limit: FAILED: timeout after 2 s in cell 3 (its first line);
    tried twice (one retry), then given up; the injected parameters cell is not counted."""
    nb = _notebook(tmp_path / "sleepy.ipynb", "print('before')", "import time; time.sleep(60)")
    res = nbrun.execute(nb, tmp_path / "out" / "sleepy.ipynb", parameters={"X": 2}, cell_timeout_s=2)
    assert res.status == "FAILED: timeout after 2 s in cell 4 (import time; time.sleep(60)) (after 2 tries)", res.status
    assert res.attempts == 2 and res.failed_cell == 4 and not res.ok
    assert res.seconds < 60


def test_a_notebook_past_its_whole_timeout_is_killed_with_its_kernel(tmp_path):
    """Cells each under the per-cell limit, but the notebook past its total: the child and its kernel are
    killed (the kernel's pid is gone) and the cell that was running is named."""
    import psutil

    pid_file = tmp_path / "kernel.pid"
    nb = _notebook(tmp_path / "long.ipynb", f"import os; open({str(pid_file)!r}, 'w').write(str(os.getpid()))",
                   *["import time; time.sleep(1)"] * 90)
    # 20 s: a kernel on a loaded 2-core machine can take over 5 s to start (CI once saw no cell begin in 5 s)
    res = nbrun.execute(nb, tmp_path / "long_out.ipynb", cell_timeout_s=60, notebook_timeout_s=20, retries=0)
    assert res.status.startswith("FAILED: timeout after 20 s in cell "), res.status
    assert res.failed_cell is not None and res.failed_cell >= 4
    assert res.seconds < 60
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_notebook_whose_kernel_never_starts_in_time_says_so(tmp_path):
    """A whole-notebook limit shorter than a kernel's start-up: the status says no cell had started."""
    nb = _notebook(tmp_path / "short.ipynb", "print('never')")
    res = nbrun.execute(nb, tmp_path / "short_out.ipynb", cell_timeout_s=60, notebook_timeout_s=1, retries=0)
    assert res.status == "FAILED: timeout after 1 s before any cell started (kernel start-up)", res.status
    assert res.failed_cell is None


def test_a_kernel_that_dies_once_is_retried(tmp_path):
    """A kernel that dies on the first run (and not on the second) gives 'ok (retried)'."""
    marker = tmp_path / "died-once"
    nb = _notebook(tmp_path / "flaky.ipynb",
                   f"import os, pathlib\nm = pathlib.Path({str(marker)!r})\nif not m.exists():\n    m.touch(); os._exit(1)",
                   "print('fine')")
    res = nbrun.execute(nb, tmp_path / "flaky_out.ipynb", cell_timeout_s=60)
    assert res.status == "ok (retried)" and res.attempts == 2, (res.status, res.error)


def test_an_error_in_a_cell_is_reported_once_with_its_cell(tmp_path):
    """An ordinary exception is not retried: FAILED: ZeroDivisionError in cell 2."""
    nb = _notebook(tmp_path / "err.ipynb", "1 / 0", parameters=None)
    res = nbrun.execute(nb, tmp_path / "err_out.ipynb", cell_timeout_s=60)
    assert res.status == "FAILED: ZeroDivisionError in cell 2" and res.attempts == 1
    assert "division by zero" in res.error


def test_timeouts_come_from_the_environment_and_bad_values_are_refused(monkeypatch):
    """COURSE_CELL_TIMEOUT / COURSE_NOTEBOOK_TIMEOUT set the limits; a non-number says how to fix it."""
    monkeypatch.setenv("COURSE_CELL_TIMEOUT", "7")
    monkeypatch.delenv("COURSE_NOTEBOOK_TIMEOUT", raising=False)
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    assert nbrun.cell_timeout(fast=True) == 7
    assert nbrun.notebook_timeout(fast=True) == nbrun.DEFAULT_TIMEOUTS["fast"][1]
    monkeypatch.setenv("COURSE_CELL_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="COURSE_CELL_TIMEOUT=300"):
        nbrun.cell_timeout()
    monkeypatch.setenv("COURSE_CELL_TIMEOUT", "5000")
    assert nbrun.notebook_timeout(fast=True) == 5000       # never below the per-cell limit


def _build_course():
    spec = importlib.util.spec_from_file_location("build_course", ROOT / "scripts" / "build_course.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_course", mod)
    spec.loader.exec_module(mod)
    return mod


def test_the_build_reports_a_timeout_goes_on_and_exits_1(tmp_path, monkeypatch, capsys):
    """`./course.sh build` with a notebook that sleeps past COURSE_CELL_TIMEOUT: its row says
    FAILED: timeout after N s in cell K, the next notebook still builds, the exit code is 1."""
    from course_lib import config

    bc = _build_course()
    sleepy = _notebook(tmp_path / "10_sleepy.ipynb", "FAST, SEED = True, 0\nimport time; time.sleep(120)",
                       parameters="FAST = None\nSEED = 0")
    fine = _notebook(tmp_path / "11_fine.ipynb", "print(FAST)", parameters="FAST = None\nSEED = 0")
    monkeypatch.setattr(bc, "notebooks", lambda root=None: [("lecture", sleepy), ("lecture", fine)])
    monkeypatch.setattr(config, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setenv("COURSE_CELL_TIMEOUT", "3")
    code = bc.main(["--fast", "--no-html", "--no-release"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED: timeout after 3 s in cell 3 (FAST, SEED = True, 0) (after 2 tries)" in out, out
    assert any(ln.startswith("lecture") and "11_fine.ipynb" in ln and " ok " in ln for ln in out.splitlines()), out


def test_the_mode_of_the_child_environment_picks_the_default_limits(monkeypatch):
    """A smoke run's environment (COURSE_SMOKE=1) gets the smoke limits, FAST the FAST ones, even when
    only the child's environment says so."""
    for k in ("COURSE_CELL_TIMEOUT", "COURSE_NOTEBOOK_TIMEOUT", "COURSE_SMOKE"):
        monkeypatch.delenv(k, raising=False)
    assert nbrun.cell_timeout(False, {"COURSE_SMOKE": "1"}) == nbrun.DEFAULT_TIMEOUTS["smoke"][0]
    assert nbrun.notebook_timeout(None, {"COURSE_FAST": "1"}) == nbrun.DEFAULT_TIMEOUTS["fast"][1]
    assert nbrun.cell_timeout(False, {}) == nbrun.DEFAULT_TIMEOUTS["full"][0]


def test_the_build_names_the_slowest_cells_of_a_slow_lecture(tmp_path, monkeypatch, capsys):
    """A lecture over the slow-notebook threshold (lowered to 0 s here) gets its slowest cells printed,
    each with its number, seconds and first line."""
    from course_lib import config

    bc = _build_course()
    nb = _notebook(tmp_path / "12_slowish.ipynb", "import time; time.sleep(0.5)", "x = 1",
                   parameters="FAST = None\nSEED = 0")
    monkeypatch.setattr(bc, "notebooks", lambda root=None: [("lecture", nb)])
    monkeypatch.setattr(config, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(nbrun, "SLOW_NOTEBOOK_S", 0.0)
    assert bc.main(["--fast", "--no-html", "--no-release"]) == 0
    out = capsys.readouterr().out
    assert "12_slowish.ipynb took" in out and "its slowest cells:" in out, out
    first = out.split("its slowest cells:")[1].strip().splitlines()[0]
    assert first.startswith("cell   3") and first.endswith("import time; time.sleep(0.5)"), first
