"""Exact unlearning for a linear model: ridge regression with closed-form removal.

Ridge regression minimises ``||X w - Y||^2 + alpha ||w||^2``; its solution
``w = A^-1 b`` with ``A = X^T X + alpha I`` and ``b = X^T Y`` depends on the data only
through the sums ``A`` and ``b``. Removing rows ``X_f, Y_f`` subtracts their share:
``A' = A - X_f^T X_f``, ``b' = b - X_f^T Y_f``, and the Woodbury identity updates the
inverse with one ``k x k`` solve (Sherman-Morrison for ``k = 1``)::

    (A - U^T U)^-1 = A^-1 + A^-1 U^T (I_k - U A^-1 U^T)^-1 U A^-1        (U = X_f, k x d)

No retained row is touched, the cost is ``O(k d^2 + k^3)`` instead of ``O(n d^2 + d^3)``,
and the result equals refitting on the retained rows up to float64 rounding: exact
unlearning, because ridge has one optimum and no randomness.

Everything is float64 (numpy). The intercept, if fitted, is an extra all-ones column that
is not penalised.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..validation import NotFittedError, check_ids, check_indices, check_number  # noqa: F401
from .base import ExactEstimator, RidgeReport, UnlearnReport  # noqa: F401


def woodbury_downdate(A_inv: np.ndarray, U: np.ndarray) -> np.ndarray:
    """``(A - U^T U)^-1`` from ``A^-1`` ``[d, d]`` (symmetric) and the removed rows ``U`` ``[k, d]``.

    Solves one ``k x k`` system. Raises ValueError when ``A - U^T U`` is singular (or nearly:
    a row with leverage ``u^T A^-1 u`` of 1 cannot be removed).
    """
    A_inv = np.asarray(A_inv, dtype=np.float64)
    U = np.atleast_2d(np.asarray(U, dtype=np.float64))
    d = A_inv.shape[0]
    if A_inv.shape != (d, d) or U.ndim != 2 or U.shape[1] != d:
        raise ValueError(f"need A_inv [d, d] and U [k, d]; got {A_inv.shape} and {U.shape}")
    AU = A_inv @ U.T                                  # [d, k]
    S = np.eye(U.shape[0]) - U @ AU                   # [k, k], I - U A^-1 U^T (the capacitance)
    S = (S + S.T) / 2
    eig_min = np.linalg.eigvalsh(S).min() if S.size else 1.0
    if not np.isfinite(eig_min) or eig_min <= 1e-12:
        raise ValueError("removing these rows leaves a singular system (leverage ~ 1): the "
                         "remaining data cannot determine the weights; use alpha > 0")
    out = A_inv + AU @ np.linalg.solve(S, AU.T)
    return (out + out.T) / 2


class Ridge(ExactEstimator):
    """Ridge regression that can forget training rows exactly.

    >>> m = Ridge(alpha=1.0).fit(X, Y)       # X [n, d], Y [n] or [n, t]
    >>> m.remove([3, 17])                    # rows of the X given to fit
    >>> m.predict(X_new)                     # [m] or [m, t]; equals Ridge(1.0).fit(X_kept, Y_kept)

    The course's exact-unlearning protocol (:mod:`course_lib.exact.base`) works too:
    ``fit(X, Y, ids=...)`` names the rows and ``unlearn(ids)`` forgets rows by id and returns an
    :class:`~course_lib.exact.base.RidgeReport`. Equality with a refit holds up to float64
    rounding (``exactness = "rounding"``), not bitwise: the downdate and a fresh inverse round
    differently.

    Attributes after ``fit``: ``coef_`` ``[d]`` or ``[d, t]``, ``intercept_`` (scalar or ``[t]``),
    ``ids_`` (the ids of the rows given to fit), ``removed_`` bool ``[n]`` (rows forgotten so far),
    ``n_active_`` (rows still in the model), ``requests_`` (the report of every ``unlearn``).
    As in scikit-learn the constructor only stores its arguments; ``fit`` checks them.
    """

    exactness = "rounding"
    _fitted_attr = "A_inv_"

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True):
        self.alpha, self.fit_intercept = alpha, fit_intercept

    # -- helpers ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_number(self.alpha, "alpha", 0.0)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False, got {self.fit_intercept!r}")

    def _design(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D [n, d], got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        if self._intercept:
            X = np.hstack([X, np.ones((X.shape[0], 1))])
        return X

    def _penalty(self, d: int) -> np.ndarray:
        p = np.full(d, float(self.alpha))
        if self._intercept:
            p[-1] = 0.0
        return np.diag(p)

    def _update_coef(self) -> None:
        w = self.w_ = self.A_inv_ @ self.b_
        if self._intercept:
            self.coef_, self.intercept_ = w[:-1], w[-1]
        else:
            self.coef_ = w
            self.intercept_ = np.zeros(w.shape[1:]) if w.ndim == 2 else 0.0

    # -- public API ------------------------------------------------------------------------
    def fit(self, X, Y, ids=None) -> "Ridge":
        """Fit on ``X`` ``[n, d]`` and targets ``Y`` ``[n]`` or ``[n, t]`` (e.g. one-hot labels);
        ``ids [n]`` (default ``0..n-1``) name the rows for :meth:`unlearn`."""
        self._check_params()
        self._intercept = bool(self.fit_intercept)
        Z = self._design(X)
        self.ids_ = check_ids(ids, Z.shape[0]).numpy()
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim not in (1, 2) or Y.shape[0] != Z.shape[0]:
            raise ValueError(f"Y must be [n] or [n, t] with n = {Z.shape[0]} rows, got shape {Y.shape}")
        if Z.shape[0] == 0:
            raise ValueError("cannot fit on an empty data set")
        if not np.all(np.isfinite(Y)):
            raise ValueError("Y contains NaN or infinite values")
        A = Z.T @ Z + self._penalty(Z.shape[1])
        try:
            self.A_inv_ = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            raise ValueError("X^T X + alpha I is singular: use alpha > 0 or drop constant columns") from None
        self.A_inv_ = (self.A_inv_ + self.A_inv_.T) / 2
        self.b_ = Z.T @ Y
        self.X_, self.Y_ = Z, Y
        self.removed_ = np.zeros(Z.shape[0], dtype=bool)
        self._update_coef()
        self._start_log()
        return self

    def remove(self, idx) -> "Ridge":
        """Forget the training rows ``idx`` (indices into the ``X`` given to :meth:`fit`) exactly,
        by a Woodbury downdate of ``A^-1`` and ``b``. Raises ValueError for empty, duplicate,
        out-of-range or already-removed indices, or if no row would remain."""
        self.check_is_fitted()
        n = self.X_.shape[0]
        idx = check_indices(idx, n, "rows to remove").numpy()
        again = idx[self.removed_[idx]]
        if again.size:
            raise ValueError(f"rows {again[:5].tolist()} were already removed")
        if self.removed_.sum() + idx.size >= n:
            raise ValueError("removing these rows would leave no training data")
        U = self.X_[idx]
        self.A_inv_ = woodbury_downdate(self.A_inv_, U)
        self.b_ = self.b_ - U.T @ self.Y_[idx]
        self.removed_[idx] = True
        for i in self.ids_[idx].tolist():
            self._removed.setdefault(i, None)
        self._update_coef()
        return self

    def _current_ids(self) -> torch.Tensor:
        return torch.from_numpy(np.sort(self.ids_[~self.removed_]))

    def unlearn(self, ids) -> RidgeReport:
        """Forget the rows with these ids (one int or a list, as given to :meth:`fit`) exactly;
        returns a :class:`~course_lib.exact.base.RidgeReport` (no model is re-trained: ``samples``
        and ``steps`` are 0). Bad requests raise ValueError and change nothing."""
        t0 = time.perf_counter()
        ids = self._check_request(ids)[0].numpy()
        order = np.argsort(self.ids_, kind="stable")
        self.remove(order[np.searchsorted(self.ids_[order], ids)])
        return self._log(RidgeReport(ids.tolist(), [], 0, 0, time.perf_counter() - t0))

    @property
    def n_active_(self) -> int:
        self.check_is_fitted()
        return int((~self.removed_).sum())

    def predict(self, X) -> np.ndarray:
        """Predictions ``[m]`` or ``[m, t]`` for ``X`` ``[m, d]``."""
        self.check_is_fitted()
        Z = self._design(X)
        if Z.shape[1] != self.A_inv_.shape[0]:
            raise ValueError(f"X has {Z.shape[1] - self._intercept} features; the model was fitted "
                             f"on {self.A_inv_.shape[0] - self._intercept}")
        return Z @ self.w_

    def score(self, X, Y) -> float:
        """Coefficient of determination R^2 (averaged over outputs), as in scikit-learn."""
        Y = np.asarray(Y, dtype=np.float64)
        P = self.predict(X)
        if P.shape != Y.shape:
            raise ValueError(f"Y has shape {Y.shape}, predictions {P.shape}")
        ss_res = ((Y - P) ** 2).sum(0)
        ss_tot = ((Y - Y.mean(0)) ** 2).sum(0)
        return float(np.mean(1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)))
