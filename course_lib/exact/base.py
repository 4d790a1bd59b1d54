"""What every exact unlearner of the course shares: one report type and one protocol.

Protocol (ridge regression, SISA, LegoNet)::

    est = Estimator(...).fit(X, y, ids=None)     # returns self; fitted attributes end in "_"
    est.predict(X); est.predict_proba(X)          # (Ridge: predict only; it is a regression)
    report = est.unlearn(ids)                     # -> UnlearnReport
    fresh = clone(est).fit(X[keep], y[keep], ids=keep, **est.refit_kwargs())
    # `est` and `fresh` agree: bitwise (SISA, LegoNet) or up to float64 rounding (Ridge),
    # as the class attribute `exactness` says; tests/test_exact.py checks every estimator.

scikit-learn habits: ``get_params()`` / ``set_params(**kw)`` / :func:`clone` over the
constructor's arguments, ``fit`` returns self, fitted attributes end in ``_``, and use before
``fit`` raises :class:`~course_lib.validation.NotFittedError`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field


@dataclass
class UnlearnReport:
    """What one ``unlearn`` request did (or, from a ``retrain_cost``, would do).

    ``ids``: the removed ids (sorted); ``retrained``: the units re-trained (sorted shard numbers
    for SISA, adapter numbers for LegoNet, empty for ridge regression), named by ``unit``;
    ``samples``: example-gradient evaluations of the re-training (epochs x rows, summed over the
    re-trained units and their epochs); ``steps``: optimizer steps; ``seconds``: wall clock of
    the request; ``details``: ``rows`` (the remaining rows of the re-trained units, each counted once
    per unit; also the property :attr:`rows`) and what only one estimator has (SISA: ``from_slices``,
    the slice each re-trained shard restarted at; LegoNet: ``key_sources``, removed ids whose
    encodings seeded a key).
    """

    ids: list[int]
    retrained: list[int]
    samples: int
    steps: int
    seconds: float = 0.0
    unit: str = "shard"
    details: dict = field(default_factory=dict)

    # Names the lectures use for the two estimators' units (read-only views of the fields above).
    @property
    def shards(self) -> list[int]:
        return self.retrained

    @property
    def adapters(self) -> list[int]:
        return self.retrained

    @property
    def from_slices(self) -> list[int]:
        return self.details.get("from_slices", [])

    @property
    def key_sources(self) -> list[int]:
        return self.details.get("key_sources", [])

    @property
    def rows(self) -> int | None:
        """Remaining training rows of the re-trained units (each counted once per unit)."""
        return self.details.get("rows")

    def __getitem__(self, key: str):
        """Dictionary-style access, ``report["samples"]``, as for the graded notebooks' reports."""
        if key in self.__dataclass_fields__ or key in ("shards", "adapters", "from_slices", "key_sources", "rows"):
            return getattr(self, key)
        raise KeyError(f"{key!r}: a report has {', '.join(self.__dataclass_fields__)}")

    def __str__(self) -> str:
        units = f"{len(self.retrained)} {self.unit}(s)"
        if self.unit == "shard" and self.from_slices:
            units = "shard(s) " + ", ".join(f"{s} (from slice {r})" for s, r in zip(self.retrained, self.from_slices))
        return (f"unlearned {len(self.ids)} row(s): re-trained {units} on {self.samples} samples "
                f"({self.steps} steps) in {self.seconds * 1e3:.1f} ms")


class ExactEstimator:
    """Base class: ``get_params`` / ``set_params`` / ``clone`` over the constructor's arguments.

    Subclasses store every constructor argument as an attribute of the same name (possibly
    normalised, e.g. a path as ``Path``) and define ``fit``, ``unlearn`` and ``refit_kwargs``.
    """

    #: "bitwise" (unlearn == refit, every bit) or "rounding" (equal up to float64 rounding).
    exactness = "bitwise"

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = False) -> dict:
        """The constructor's arguments, by name (scikit-learn's convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "ExactEstimator":
        """Change constructor arguments in place (validated as the constructor would); returns
        self. Fitted state is kept: change only what does not invalidate it (e.g. SISA's
        ``aggregation``), or ``fit`` again."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; "
                             f"its parameters are {self._param_names()}")
        checked = type(self)(**{**self.get_params(), **params})
        for name in params:
            setattr(self, name, getattr(checked, name))
        return self

    def refit_kwargs(self) -> dict:
        """Extra ``fit`` arguments a refit on the retained rows needs to be comparable (e.g.
        LegoNet's keys); none by default."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                         if not callable(v) and not hasattr(v, "parameters"))
        return f"{type(self).__name__}({args})"


def clone(estimator: ExactEstimator, **params) -> ExactEstimator:
    """A new, unfitted estimator with the same constructor arguments (and ``params`` changed)."""
    if not hasattr(estimator, "get_params"):
        raise ValueError(f"clone needs an estimator with get_params, got {type(estimator).__name__}")
    return type(estimator)(**{**estimator.get_params(), **params})
