"""Unlearning methods behind one signature: the registry, :func:`unlearn` and :func:`compare`.

    result = unlearn("neggrad+", model, retain=(X_r, y_r), forget=(X_f, y_f), seed=0, epochs=5)
    result.model, result.seconds

Every method works on a copy: the original model is never changed. Each accepts the common
hyper-parameters ``epochs``, ``lr``, ``batch_size``, ``momentum``, ``weight_decay``,
``schedule`` (``"cosine"`` or ``"constant"``, per step), ``seed`` and ``mask``
(``{parameter name: bool tensor}``, see :mod:`course_lib.masks`; entries outside the mask are
restored after every step, so momentum and weight decay cannot move them), plus its own.
Unknown hyper-parameters are refused with the list of known ones.

One file per method family (a newcomer finds any method in one obvious place):

======================  ======================================================================
``registry.py``         :func:`register`, :func:`unlearn`, ``COMMON``, :class:`UnlearnResult`
                        (imports no family; every family imports it)
``baselines.py``        ``retrain`` (the oracle), ``finetune`` (FT), ``neggrad`` (GA),
                        ``neggrad+``, ``random_label``, ``l1_sparse`` (lessons 0, 1, 6)
``boundary.py``         ``boundary_shrink`` (``bs``), ``boundary_expand`` (``be``) (lesson 4)
``salun.py``            ``salun``: saliency-masked Random Label (lesson 5)
``second_order.py``     ``fisher`` (FF), ``influence`` (IU) (lessons 5, 6)
``localization.py``     ``rft`` (reset + finetune), ``del``, ``ssd`` (lesson 7)
``tuning.py``           ``tuned(method, scenario)``: the one table of settings (``tuned.json``,
                        written by ``benchmarks/tune_methods.py``)
======================  ======================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .registry import COMMON, XY, UnlearnResult, available, defaults, register, resolve, unlearn
# The method families register themselves on import (one file per family), after the registry.
from . import baselines, boundary, localization, salun, second_order  # noqa: E402,F401,I001
from .tuning import tuned

__all__ = ["unlearn", "register", "available", "defaults", "resolve", "COMMON", "XY", "UnlearnResult", "compare",
           "compare_seeds", "SeedComparison", "tuned", "baselines", "boundary", "localization", "salun",
           "second_order"]


def compare(model: nn.Module, data, forget_idx: torch.Tensor, methods: list[str] | None = None, *,
            hp: dict[str, dict] | None = None, exclude_classes: list[int] | None = None, seed: int = 0,
            original: str | None = "Original"):
    """Run several methods on one forget set and evaluate each (see :func:`metrics.evaluate`).

    ``data``: a :class:`course_lib.data.DataSplit`; ``forget_idx`` indexes its training set;
    ``hp`` maps a method name to its hyper-parameters. Returns ``(table, models)``: a
    DataFrame with one row per method (named as given, the oracle as ``Retrain``, the model
    before unlearning as ``original``) and the unlearned models by the same names.
    """
    from .. import data as _data
    from .. import metrics
    from ..engine import progress

    methods = list(methods or available())
    for m in methods:
        resolve(m)
    hp = hp or {}
    unknown = sorted(set(hp) - set(methods))
    if unknown:
        raise ValueError(f"hyper-parameters given for {unknown}, which are not among the methods {methods}")
    N = data.X_train.shape[0]
    forget_idx = _data.check_indices(forget_idx, N)
    retain_idx = _data.retain_indices(N, forget_idx)
    retain = (data.X_train[retain_idx], data.y_train[retain_idx])
    forget = (data.X_train[forget_idx], data.y_train[forget_idx])
    rows, models = {}, {}
    if original:
        rows[original] = metrics.evaluate(model, data, forget_idx, exclude_classes=exclude_classes, seed=seed)
        models[original] = model
    for m in progress(methods, desc="methods", total=len(methods)):
        res = unlearn(m, model, retain, forget, seed=seed, **hp.get(m, {}))
        name = "Retrain" if resolve(m) == "retrain" else m
        rows[name] = metrics.evaluate(res.model, data, forget_idx, seconds=res.seconds,
                                      exclude_classes=exclude_classes, seed=seed)
        models[name] = res.model
    return metrics.table(rows, reference="Retrain" if "Retrain" in rows else None), models


@dataclass
class SeedComparison:
    """What :func:`compare_seeds` and ``scenarios.compare`` return: per-metric ``mean`` and ``std`` over
    seeds (DataFrames shaped like :func:`compare`'s table, so they feed ``metrics``/``plots`` as they are),
    every seed's table (``runs``), the models of the first seed (``models``), the settings each method ran
    with (``settings``) and, from ``scenarios.compare``, each seed's scenario (``scenarios``)."""

    mean: object
    std: object
    runs: dict
    models: dict
    settings: dict = field(default_factory=dict)
    scenarios: dict = field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: dict, models: dict, **kw) -> "SeedComparison":
        """Mean and sample std (ddof = 1; 0 for one seed) per method and metric of per-seed tables."""
        import pandas as pd

        seeds = list(runs)
        stacked = pd.concat(runs.values(), keys=seeds, names=["seed", "method"])
        grouped = stacked.groupby(level="method", sort=False)
        order = list(runs[seeds[0]].index)
        std = grouped.std(ddof=1).reindex(order).fillna(0.0)  # one seed: no spread to show
        return cls(grouped.mean().reindex(order), std, runs, models, **kw)

    @property
    def seeds(self) -> list[int]:
        return list(self.runs)

    def per_seed(self, row: str, metric: str):
        """One value per seed (float64 array, in :attr:`seeds` order) of ``metric`` for ``row``."""
        import numpy as np

        for s, t in self.runs.items():
            if row not in t.index or metric not in t.columns:
                raise KeyError(f"seed {s}: no {metric!r} for {row!r}; rows {list(t.index)}, metrics {list(t.columns)}")
        return np.array([float(t.loc[row, metric]) for t in self.runs.values()], dtype=np.float64)

    def formatted(self, digits: int = 1):
        """The table as ``"mean ± std"`` strings (for display)."""
        import pandas as pd

        return pd.DataFrame({c: [f"{a:.{digits}f} ± {b:.{digits}f}" for a, b in zip(self.mean[c], self.std[c])]
                             for c in self.mean.columns}, index=self.mean.index)


def compare_seeds(model, data, forget_idx, methods: list[str] | None = None, *, seeds=(0, 1, 2),
                  hp: dict[str, dict] | None = None, exclude_classes: list[int] | None = None,
                  original: str | None = "Original") -> SeedComparison:
    """:func:`compare` repeated over ``seeds``; a fair comparison reports mean ± std per metric.

    ``model`` and ``forget_idx`` are either fixed or callables ``seed -> model`` /
    ``seed -> indices`` (a fresh original model and a fresh random forget set per seed make the
    spread include those sources of noise). Every method gets the same seeds. The disparity
    average is computed per seed against that seed's Retrain, then averaged; ``RTE (s)`` is the
    mean wall-clock time. ``std`` is the sample standard deviation (ddof = 1; 0 for one seed).
    """
    from ..validation import check_seeds

    seeds = check_seeds(list(seeds))
    runs, first = {}, None
    for s in seeds:
        m = model(s) if callable(model) and not isinstance(model, nn.Module) else model
        idx = forget_idx(s) if callable(forget_idx) else forget_idx
        table, models = compare(m, data, idx, methods, hp=hp, exclude_classes=exclude_classes, seed=s,
                                original=original)
        runs[s] = table
        first = models if first is None else first
    return SeedComparison.from_runs(runs, first)
