"""environment.yml and pyproject.toml name the same packages (with the same bounds)."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {"jupyterlab", "torch", "torchvision", "matplotlib", "umap-learn", "ipywidgets", "nbgrader",
            "papermill", "scikit-learn", "tqdm", "opacus"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict[str, str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = proj["dependencies"] + proj["optional-dependencies"]["dev"]
    return {_name(s): s.replace(" ", "") for s in specs}


def _environment() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "- pip:")
    pip = [ln.strip()[2:] for ln in lines[start + 1:] if ln.strip().startswith("- ") and not ln.strip().startswith("- -e")]
    return {_name(s): s.replace(" ", "") for s in pip}


def test_same_packages_and_bounds():
    """Every package in one file is in the other, with the same version bounds."""
    py, env = _pyproject(), _environment()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    assert py == env


def test_course_packages_are_named():
    """The packages the course is built on are all declared."""
    assert REQUIRED <= set(_pyproject())


def test_environment_pins_python_311():
    """The conda environment uses Python 3.11."""
    assert "python=3.11" in (ROOT / "environment.yml").read_text()
