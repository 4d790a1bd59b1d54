"""What every exact unlearner of the course shares: the protocol, the request check and the reports.

Protocol (ridge regression, SISA, LegoNet)::

    est = Estimator(...).fit(X, y, ids=None)     # returns self; fitted attributes end in "_"
    est.predict(X); est.predict_proba(X)          # (Ridge: predict only; it is a regression)
    report = est.unlearn(ids)                     # -> the estimator's UnlearnReport subclass
    fresh = clone(est).fit(X[keep], y[keep], ids=keep, **est.refit_kwargs())
    # `est` and `fresh` agree: bitwise (SISA, LegoNet) or up to float64 rounding (Ridge),
    # as the class attribute `exactness` says; tests/test_exact.py checks every estimator.

scikit-learn habits: ``__init__`` only stores its arguments (nothing is checked or built there),
``fit`` validates them and builds every piece of state, so ``set_params`` and :func:`clone` behave
exactly as construction; ``fit`` returns self, fitted attributes end in ``_``, and use before
``fit`` raises :class:`~course_lib.validation.NotFittedError`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from ..params import accuracy
from ..validation import NotFittedError, check_ids, check_xy


# ----------------------------------------------------------------------------- reports

@dataclass
class UnlearnReport:
    """What one ``unlearn`` request did (or, from a ``retrain_cost``, would do).

    ``ids``: the removed ids (sorted); ``retrained``: the units re-trained (sorted), named by
    ``unit``; ``samples``: example-gradient evaluations of the re-training (summed over the
    re-trained units and their epochs); ``steps``: optimizer steps; ``seconds``: wall clock of the
    request; ``details``: ``rows`` (the remaining rows of the re-trained units, each counted once
    per unit; also the property :attr:`rows`) and what only one estimator has (see the subclasses
    :class:`SISAReport`, :class:`LegoNetReport`, :class:`RidgeReport`).
    Fields and properties can also be read as ``report["samples"]``.
    """

    ids: list[int]
    retrained: list[int]
    samples: int
    steps: int
    seconds: float = 0.0
    unit: str = "unit"
    details: dict = field(default_factory=dict)

    @property
    def rows(self) -> int | None:
        """Remaining training rows of the re-trained units (each counted once per unit)."""
        return self.details.get("rows")

    def __getitem__(self, key: str):
        """Dictionary-style access, ``report["samples"]``, as for the graded notebooks' reports."""
        if key in self.__dataclass_fields__ or isinstance(getattr(type(self), key, None), property):
            return getattr(self, key)
        raise KeyError(f"{key!r}: a {type(self).__name__} has {', '.join(self.__dataclass_fields__)}")

    def _units(self) -> str:
        return f"{len(self.retrained)} {self.unit}(s)"

    def __str__(self) -> str:
        return (f"unlearned {len(self.ids)} row(s): re-trained {self._units()} on {self.samples} samples "
                f"({self.steps} steps) in {self.seconds * 1e3:.1f} ms")


@dataclass
class SISAReport(UnlearnReport):
    """A SISA request: ``shards`` (= ``retrained``) and ``from_slices``, the slice each re-trained
    shard restarted at (``details["from_slices"]``)."""

    unit: str = "shard"

    @property
    def shards(self) -> list[int]:
        return self.retrained

    @property
    def from_slices(self) -> list[int]:
        return self.details.get("from_slices", [])

    def _units(self) -> str:
        if not self.retrained:
            return "0 shard(s)"
        return "shard(s) " + ", ".join(f"{s} (from slice {r})" for s, r in zip(self.retrained, self.from_slices))


@dataclass
class LegoNetReport(UnlearnReport):
    """A LegoNet request: ``adapters`` (= ``retrained``) and ``key_sources``, the removed ids whose
    encodings seeded a key (``details["key_sources"]``; the keys stay, see LegoNet's docs)."""

    unit: str = "adapter"

    @property
    def adapters(self) -> list[int]:
        return self.retrained

    @property
    def key_sources(self) -> list[int]:
        return self.details.get("key_sources", [])


@dataclass
class RidgeReport(UnlearnReport):
    """A ridge-regression request: a closed-form downdate, nothing re-trained (``samples`` and
    ``steps`` are 0)."""

    unit: str = "row"


# ----------------------------------------------------------------------------- estimators

class ExactEstimator:
    """Base class: ``get_params`` / ``set_params`` / :func:`clone` over the constructor's
    arguments, :meth:`check_is_fitted`, :meth:`score` (accuracy) and the one check of unlearning
    requests (:meth:`_check_request`).

    Subclasses store every constructor argument unchanged as an attribute of the same name and
    validate them in ``fit``; they define ``fit``, ``unlearn``, ``_fitted_attr`` (an attribute only
    a fitted estimator has) and ``_current_ids()`` (the sorted ids still trained on).
    """

    #: "bitwise" (unlearn == refit, every bit) or "rounding" (equal up to float64 rounding).
    exactness = "bitwise"
    #: an attribute that exists only after ``fit``
    _fitted_attr = "params_"

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = False) -> dict:
        """The constructor's arguments, by name (scikit-learn's convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "ExactEstimator":
        """Change constructor arguments in place; returns self. As in scikit-learn they are stored
        as given and checked by the next ``fit``. Fitted state is kept: change only what does not
        invalidate it (e.g. SISA's ``aggregation``), or ``fit`` again."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; "
                             f"its parameters are {self._param_names()}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def refit_kwargs(self) -> dict:
        """Extra ``fit`` arguments a refit on the retained rows needs to be comparable (e.g.
        LegoNet's keys); none by default."""
        return {}

    def check_is_fitted(self) -> None:
        """Raise :class:`~course_lib.validation.NotFittedError` unless ``fit`` has run."""
        if not hasattr(self, self._fitted_attr):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) before using it")

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy in percent (0-100) of :meth:`predict` on ``(X, y)``, as everywhere in the course."""
        check_xy(X, y, "evaluation data")
        return accuracy(self.predict(X), y)

    # ------------------------------------------------------------------ unlearning requests

    def _current_ids(self) -> torch.Tensor:
        """The ids still trained on, sorted, int64 on the CPU."""
        raise NotImplementedError

    def _check_request(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, pos)``: the requested ids sorted and their positions in :meth:`_current_ids`.

        One id (an int) or a 1-D list of them. Raises ValueError, changing nothing, for an empty
        request, non-integer, negative or duplicate ids, ids already unlearned, ids never trained
        on, and a request that would remove every remaining row.
        """
        self.check_is_fitted()
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            ids = [int(ids)]
        ids = torch.sort(check_ids(ids, None, what="ids to unlearn")).values
        current = self._current_ids()
        pos = torch.searchsorted(current, ids).clamp(max=max(current.numel() - 1, 0))
        present = current[pos] == ids
        if not present.all():
            missing = ids[~present].tolist()
            removed = self._removed
            gone = [i for i in missing if i in removed]
            if gone:
                which = "" if removed[gone[0]] is None else f" (request #{removed[gone[0]]})"
                raise ValueError(f"ids {gone[:5]} were already unlearned{which}; nothing was changed")
            raise ValueError(f"ids {missing[:5]} are not in the training set; nothing was changed")
        if ids.numel() == current.numel():
            raise ValueError("this request would remove every remaining row; nothing would be left to train on "
                             "(nothing was changed)")
        return ids, pos

    def _log(self, report: UnlearnReport) -> UnlearnReport:
        """Append ``report`` to ``requests_`` and remember its ids as unlearned by that request
        (``_removed``: id -> request number, or None when removed otherwise, e.g. ``Ridge.remove``)."""
        self.requests_.append(report)
        for i in report.ids:
            self._removed[i] = len(self.requests_)
        return report

    def _start_log(self) -> None:
        """A fresh request log (``fit`` calls it)."""
        self.requests_: list[UnlearnReport] = []
        self._removed: dict[int, int] = {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                         if not callable(v) and not hasattr(v, "parameters"))
        return f"{type(self).__name__}({args})"


def as_device(device) -> torch.device | None:
    """An estimator's ``device`` argument as a ``torch.device`` (None stays None); ValueError for
    anything torch cannot name."""
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be None, a torch.device or a name such as 'cpu' or 'cuda:0', "
                         f"got {device!r}") from None


def clone(estimator: ExactEstimator, **params) -> ExactEstimator:
    """A new, unfitted estimator with the same constructor arguments (and ``params`` changed)."""
    if not hasattr(estimator, "get_params"):
        raise ValueError(f"clone needs an estimator with get_params, got {type(estimator).__name__}")
    return type(estimator)(**{**estimator.get_params(), **params})
