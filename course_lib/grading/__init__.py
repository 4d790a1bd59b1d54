"""Grading helpers (one package, three files): friendly assertions for visible tests in graded notebooks, and the
nbgrader round trip (generate the student release, autograde a solution and a blank copy).

Course layout (see ``nbgrader_config.py``): ``solutions/<a>/<a>.ipynb`` is the nbgrader
*source*, ``assignments/<a>/<a>.ipynb`` the generated *release* that students receive.

* this file: friendly assertions for visible tests;
* ``owncode.py``: :func:`assert_own_code`;
* ``integrity.py``: the kernel check, the static scan of answer cells and the nbgrader preprocessors;
* ``roundtrip.py``: releases, autograding in a scratch course, the round-trip check.
"""
from __future__ import annotations


import numpy as np
import torch

# ----------------------------------------------------------------- assertions for students

def _arr(x) -> np.ndarray:
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



from .owncode import assert_own_code  # noqa: E402,F401
from .integrity import (SENTINEL, autograde_preprocessors, check_kernel, protected_names,  # noqa: E402,F401
                        scan_cell)
from .roundtrip import (GradeReport, _nbgrader, assignments, autograde, check_round_trip,  # noqa: E402,F401
                        generate_release, release_is_current)
