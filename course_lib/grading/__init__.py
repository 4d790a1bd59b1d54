"""Grading: student code in a sandboxed process, tests in a trusted one, nbgrader for the rest.

Course layout (see ``nbgrader_config.py``): ``solutions/<a>/<a>.ipynb`` is the nbgrader *source*
(instructor version with hidden tests; its metadata ``course.forbidden`` lists the library code the
assignment asks students to write), ``assignments/<a>/<a>.ipynb`` the generated *release*.

Layers, bottom up (no module imports one above it):

* ``cells.py``: a cell's nbgrader metadata, kinds, hidden test regions, points, part names;
* ``codec.py``: plain data across the boundary (no pickle, no code);
* ``sandbox_server.py`` (runs inside the sandbox) and ``forbid.py``: the student's side;
* ``sandbox.py``: starts that side under bubblewrap with limits, talks to it;
* ``executor.py``: the trusted side: given and test cells here, answer cells there;
* ``nbgrader_io.py``: nbgrader commands, its ``Execute`` step replaced by the executor's results,
  feedback without hidden tests, the gradebook read back;
* ``collect.py`` (submissions into nbgrader's layout), ``similarity.py`` (copies flagged for a human);
* ``batch.py``: a class, ``roundtrip.py``: releases and ``autograde`` (= ``batch.grade`` with one worker);
* this file: friendly assertions used by test cells (they run in the trusted process).
"""
from __future__ import annotations


import numpy as np

# ----------------------------------------------------------------- assertions for students

def _arr(x) -> np.ndarray:
    import torch
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_shape(x, shape: tuple, name: str = "result") -> None:
    """Fail with a helpful message unless ``x`` has exactly ``shape``."""
    got = tuple(_arr(x).shape)
    if got != tuple(shape):
        raise AssertionError(f"{name} should have shape {tuple(shape)}, but has shape {got}. "
                             f"Check which axis you reduce over and whether you keep the batch axis.")


def assert_close(actual, expected, name: str = "result", atol: float = 1e-6, rtol: float = 1e-6,
                 hint: str = "") -> None:
    """Fail with the largest discrepancy (and a hint) unless ``actual`` ~= ``expected``."""
    a, e = _arr(actual).astype(np.float64), _arr(expected).astype(np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{name} should have shape {e.shape}, but has shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{name} contains NaN or infinite values. {hint}".strip())
    if not np.allclose(a, e, atol=atol, rtol=rtol):
        i = np.unravel_index(np.argmax(np.abs(a - e)), a.shape) if a.ndim else ()
        raise AssertionError(f"{name} is off: at index {tuple(int(j) for j in i)} you give {float(a[i]):.6g}, "
                             f"expected {float(e[i]):.6g} (tolerance {atol}). {hint}".strip())


def assert_raises(exc_type, fn, *args, **kwargs) -> None:
    """Fail unless ``fn(*args, **kwargs)`` raises ``exc_type`` (a test helper that does not rely on
    ``raise AssertionError`` inside a ``try``, whose name an answer cell could have rebound)."""
    try:
        fn(*args, **kwargs)
    except exc_type:
        return
    except Exception as err:  # noqa: BLE001 - the message says what was raised instead
        raise AssertionError(f"expected {exc_type.__name__}, but {type(err).__name__} was raised: {err}") from None
    raise AssertionError(f"expected {exc_type.__name__}, but nothing was raised")



# The pipeline is imported on first use (PEP 562): the sandboxed side and the executor load only the
# small modules they need, not nbgrader.
_LAZY = {"StudentResult": "batch", "grade": "batch", "GradeReport": "batch", "assignments": "nbgrader_io",
         "autograde": "roundtrip", "check_round_trip": "roundtrip", "generate_release": "roundtrip",
         "release_is_current": "roundtrip"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        mod = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(mod, "StudentResult" if name == "GradeReport" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
