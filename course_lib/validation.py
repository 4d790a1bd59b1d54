"""Input checks shared by the whole library: one place, one wording.

Every public function of the course validates what it is given with these helpers and raises
``ValueError`` saying what was wrong and how to fix it (scikit-learn's habit). Estimators used
before ``fit`` raise :class:`NotFittedError`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

SCHEDULES = ("cosine", "constant")


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """An estimator is used before ``fit``. A scikit-learn ``NotFittedError`` (hence also a
    ``ValueError`` and an ``AttributeError``) and a ``RuntimeError``, so any of the usual
    ``except`` clauses catches it."""


def check_xy(X: torch.Tensor, y: torch.Tensor, what: str = "data") -> None:
    """Raise ValueError unless ``X`` is ``[N, ...]`` and ``y`` is an int64 ``[N]``, ``N >= 1``."""
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{what}: X and y must be torch tensors, got {type(X).__name__}, {type(y).__name__}")
    if y.ndim != 1 or X.ndim < 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: X must be [N, ...] and y [N]; got X {tuple(X.shape)}, y {tuple(y.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    if y.dtype != torch.int64:
        raise ValueError(f"{what}: labels must be int64 class indices, got {y.dtype}")


def check_int(v, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` as an int; ValueError unless it is an integer (not a bool) in ``[lo, hi]``."""
    ok = not isinstance(v, bool) and isinstance(v, (int, np.integer))
    if not ok or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" >= {lo}" if hi is None else f" in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer{rng if lo is not None else ''}, got {v!r}")
    return int(v)


def check_number(v, name: str, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``v`` as a float; ValueError unless it is a finite real number within the given bounds
    (closed unless ``lo_open`` / ``hi_open``)."""
    ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))
    if ok:
        f = float(v)
        ok = (lo is None or (f > lo if lo_open else f >= lo)) and (hi is None or (f < hi if hi_open else f <= hi))
    if not ok and lo is not None and hi is not None and lo_open and hi_open:
        raise ValueError(f"{name} must lie strictly between {lo:g} and {hi:g}, got {v!r}")
    if not ok:
        left = "" if lo is None else ("(" if lo_open else "[") + f"{lo}"
        right = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
        where = f" in {left or '(-inf'}, {right or 'inf)'}"
        raise ValueError(f"{name} must be a finite number{where}, got {v!r}")
    return float(v)


def check_fraction(fraction, name: str = "fraction") -> float:
    """A share strictly between 0 and 1."""
    return check_number(fraction, name, 0.0, 1.0, lo_open=True, hi_open=True)


def check_delta(delta) -> float:
    """The δ of (ε, δ)-guarantees: strictly between 0 and 1."""
    return check_number(delta, "delta", 0.0, 1.0, lo_open=True, hi_open=True)


def check_schedule(schedule: str) -> str:
    """A learning-rate schedule name (see :func:`course_lib.engine.lr_schedule`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {schedule!r}")
    return schedule


def check_sgd(epochs, batch_size, lr, momentum: float = 0.0, weight_decay: float = 0.0,
              schedule: str = "cosine") -> None:
    """The settings of every SGD loop of the course: ``epochs >= 0``, ``batch_size >= 1``,
    ``lr >= 0``, ``0 <= momentum < 1``, ``weight_decay >= 0`` and a known schedule."""
    if not (check_int(epochs, "epochs", 0) >= 0 and check_int(batch_size, "batch_size", 1) >= 1):
        raise AssertionError  # unreachable: the checks raise
    check_number(lr, "lr", 0.0)
    check_number(momentum, "momentum", 0.0, 1.0, hi_open=True)
    check_number(weight_decay, "weight_decay", 0.0)
    check_schedule(schedule)


def check_ids(ids, n: int | None = None, what: str = "ids") -> torch.Tensor:
    """Unique non-negative integer ids as an int64 CPU tensor (in the order given); ``None``
    gives ``arange(n)``. ``n`` (when given) is the number of rows the ids must name."""
    if ids is None:
        if n is None:
            raise ValueError(f"{what} must be given")
        return torch.arange(n)
    try:
        t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(np.asarray(ids))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{what} must be a 1-D list of integers, got {type(ids).__name__}: {exc}") from None
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{what} must be a non-empty 1-D list of integers, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what} must be integers, got dtype {t.dtype}")
    t = t.long().cpu()
    if n is not None and t.numel() != n:
        raise ValueError(f"{what} must have one id per row: {t.numel()} ids for {n} rows")
    if int(t.min()) < 0:
        raise ValueError(f"{what} must be non-negative, got {t[t < 0][:5].tolist()}")
    s = torch.sort(t).values
    dup = s[1:][s[1:] == s[:-1]]
    if dup.numel():
        raise ValueError(f"{what} has duplicates: {torch.unique(dup)[:5].tolist()}")
    return t


def check_indices(idx, n: int, what: str = "forget set") -> torch.Tensor:
    """Indices into a set of ``n`` rows, sorted, int64: ValueError for an empty set,
    non-integers, duplicates, or indices outside ``[0, n)``."""
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    if t.ndim == 1 and t.numel() and not (t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex()):
        t = t.long()
        bad = t[(t < 0) | (t >= n)]
        if bad.numel():
            raise ValueError(f"{what} has indices outside [0, {n}): {bad[:5].tolist()}")
    t = check_ids(t, None, what=what)
    bad = t[t >= n]
    if bad.numel():
        raise ValueError(f"{what} has indices outside [0, {n}): {bad[:5].tolist()}")
    return torch.sort(t).values


def check_seeds(seeds) -> list[int]:
    """Distinct non-negative integer seeds, at least one."""
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
    if bad:
        raise ValueError(f"seeds must be integers, got {bad[:5]}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed (one model per seed)")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {[s for s in seeds if s < 0][:5]}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct: two models with one seed would be identical copies")
    return seeds
