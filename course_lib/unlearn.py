"""Approximate unlearners (and the Retrain oracle) behind one signature.

    result = unlearn("neggrad+", model, retain=(X_r, y_r), forget=(X_f, y_f), seed=0, epochs=5)
    result.model, result.seconds

Every method works on a copy: the original model is never changed. Each accepts the common
hyper-parameters ``epochs``, ``lr``, ``batch_size``, ``momentum``, ``weight_decay``,
``seed`` and ``mask`` (``{parameter name: bool tensor}``; entries outside the mask are
restored after every step, so momentum and weight decay cannot move them), plus its own:

==============  =============================================================================
``retrain``     the oracle: re-initialise (seeded) and train on the retain set only
``finetune``    FT: continue training on the retain set for a few epochs
``neggrad``     GA / NegGrad: gradient *ascent* on the forget set (alias ``ga``)
``neggrad+``    NegGrad+: ``alpha * CE(retain) - (1 - alpha) * CE(forget)`` per step
``random_label``  train on the retain set together with the forget set relabelled at random
                (each forget example gets a label different from its own, drawn once)
``l1_sparse``   FT plus ``gamma_t * ||theta||_1``; ``l1_schedule`` = ``constant``,
                ``growing`` (``gamma_t = 2 t / T * gamma``) or ``decaying``
                (``gamma_t = (2 - 2 t / T) * gamma``), t the epoch, T the number of epochs (002, Sec. 5.1)
==============  =============================================================================
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import config
from .device import autocast
from .models import seeded
from .train import Mask, Stopwatch, check_xy, fit, model_device, sgd_steps

XY = tuple[torch.Tensor, torch.Tensor]

COMMON = dict(epochs=5, lr=0.01, batch_size=64, momentum=0.9, weight_decay=5e-4, mask=None)
_REGISTRY: dict[str, tuple[Callable, dict]] = {}
_ALIASES = {"ga": "neggrad", "ft": "finetune", "rl": "random_label", "l1": "l1_sparse"}


@dataclass
class UnlearnResult:
    """The unlearned model, the wall-clock seconds it took (RTE) and the settings used."""

    model: nn.Module
    seconds: float
    method: str
    params: dict = field(default_factory=dict)


def register(name: str, **defaults):
    """Decorator adding an unlearner ``fn(model, retain, forget, *, seed, **hp)`` to the registry."""

    def deco(fn):
        _REGISTRY[name] = (fn, {**COMMON, **defaults})
        return fn

    return deco


def available() -> list[str]:
    """Names of the registered methods."""
    return sorted(_REGISTRY)


def defaults(method: str) -> dict:
    """Default hyper-parameters of ``method``."""
    return dict(_REGISTRY[_resolve(method)][1])


def _resolve(method: str) -> str:
    name = _ALIASES.get(method, method)
    if name not in _REGISTRY:
        raise ValueError(f"unknown unlearning method {method!r}; known methods: {', '.join(available())} "
                         f"(aliases: {', '.join(f'{a}={b}' for a, b in _ALIASES.items())})")
    return name


def unlearn(method: str, model: nn.Module, retain: XY, forget: XY, *, valid: XY | None = None,
            seed: int = 0, **hp) -> UnlearnResult:
    """Run an unlearning method on a copy of ``model``.

    ``retain`` and ``forget`` are ``(X [N, ...], y [N])`` pairs; ``valid`` (optional) a held-out
    pair, validated and handed to every method for those that select settings or stop early on
    held-out data (none of the six baselines here needs it; later lessons' methods may). Unknown
    hyper-parameters raise ValueError listing the known ones.
    """
    name = _resolve(method)
    fn, base = _REGISTRY[name]
    unknown = sorted(set(hp) - set(base))
    if unknown:
        raise ValueError(f"{name} does not take {unknown}; its hyper-parameters are {sorted(base)}")
    check_xy(*retain, "retain set")
    check_xy(*forget, "forget set")
    if valid is not None:
        check_xy(*valid, "validation set")
    settings = {**base, **hp}
    work = copy.deepcopy(model)
    with Stopwatch() as sw:
        out = fn(work, retain, forget, valid=valid, seed=seed, **settings)
    return UnlearnResult(out, sw.seconds, name, {k: v for k, v in settings.items() if k != "mask"})


def _sgd(model: nn.Module, n_rows: int, loss_of_batch, *, seed: int, epochs: int, lr: float, batch_size: int,
         momentum: float, weight_decay: float, mask: Mask | None, desc: str):
    return sgd_steps(model, n_rows, loss_of_batch, epochs=epochs, batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, seed=seed, mask=mask, desc=desc)


def _reset(model: nn.Module, seed: int) -> nn.Module:
    """Fresh weights for ``model``'s architecture, drawn under ``seed``."""

    def make():
        m = copy.deepcopy(model)
        for mod in m.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        return m

    return seeded(make, seed)


@register("retrain", epochs=20, lr=0.05, augment=None)
def _retrain(model, retain, forget, *, valid, seed, mask, **hp):
    fresh = _reset(model, config.derive_seed(seed, 0))
    fit(fresh, *retain, seed=seed, mask=mask, desc="retrain", **hp)
    return fresh


@register("finetune", epochs=5, lr=0.02, augment=None)
def _finetune(model, retain, forget, *, valid, seed, mask, **hp):
    fit(model, *retain, seed=seed, mask=mask, desc="finetune", **hp)
    return model


@register("neggrad", epochs=3, lr=0.002)
def _neggrad(model, retain, forget, *, valid, seed, **hp):
    dev = model_device(model)
    Xf, yf = forget[0].to(dev), forget[1].to(dev)

    def loss(idx):
        idx = idx.to(dev)
        with autocast(dev):
            return -F.cross_entropy(model(Xf[idx]).float(), yf[idx])

    _sgd(model, Xf.shape[0], loss, seed=seed, desc="neggrad", **hp)
    return model


@register("neggrad+", epochs=5, lr=0.02, alpha=0.95)
def _neggrad_plus(model, retain, forget, *, valid, seed, alpha, **hp):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    dev = model_device(model)
    Xr, yr = retain[0].to(dev), retain[1].to(dev)
    Xf, yf = forget[0].to(dev), forget[1].to(dev)
    gen = torch.Generator().manual_seed(config.derive_seed(seed, 2))
    state = {"order": torch.randperm(Xf.shape[0], generator=gen), "pos": 0}
    bs = hp["batch_size"]

    def next_forget() -> torch.Tensor:  # cycle through the forget set in its own shuffled order
        if state["pos"] >= Xf.shape[0]:
            state["order"], state["pos"] = torch.randperm(Xf.shape[0], generator=gen), 0
        idx = state["order"][state["pos"]:state["pos"] + bs]
        state["pos"] += bs
        return idx.to(dev)

    def loss(idx):
        idx, fidx = idx.to(dev), next_forget()
        with autocast(dev):
            lr_ = F.cross_entropy(model(Xr[idx]).float(), yr[idx])
            lf_ = F.cross_entropy(model(Xf[fidx]).float(), yf[fidx])
        return alpha * lr_ - (1 - alpha) * lf_

    _sgd(model, Xr.shape[0], loss, seed=seed, desc="neggrad+", **hp)
    return model


def random_other_labels(y: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """For each label in ``y`` ``[N]``, a label drawn uniformly from the *other* classes."""
    if n_classes < 2:
        raise ValueError("random relabelling needs at least two classes")
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, n_classes, y.shape, generator=g)
    return (y.cpu() + shift) % n_classes


def _n_classes(model: nn.Module, X: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(X[:1].to(model_device(model))).shape[1])


@register("random_label", epochs=5, lr=0.02, augment=None)
def _random_label(model, retain, forget, *, valid, seed, mask, **hp):
    y_rand = random_other_labels(forget[1], _n_classes(model, forget[0]), config.derive_seed(seed, 3))
    X = torch.cat([retain[0], forget[0]])
    y = torch.cat([retain[1].cpu(), y_rand])
    fit(model, X, y, seed=seed, mask=mask, desc="random label", **hp)
    return model


L1_SCHEDULES = ("constant", "growing", "decaying")


def l1_weight(gamma: float, schedule: str, epoch: int, epochs: int) -> float:
    """The l1 coefficient at ``epoch`` (0-based) of ``epochs``: constant, linearly growing
    (2 t / T) gamma or linearly decaying (2 - 2 t / T) gamma; both ramps average to gamma."""
    if schedule not in L1_SCHEDULES:
        raise ValueError(f"unknown l1 schedule {schedule!r}; choose one of {', '.join(L1_SCHEDULES)}")
    if schedule == "constant":
        return gamma
    t = epoch / max(epochs, 1)
    return gamma * (2 * t if schedule == "growing" else 2 - 2 * t)


@register("l1_sparse", epochs=5, lr=0.02, gamma=5e-5, l1_schedule="decaying")
def _l1_sparse(model, retain, forget, *, valid, seed, gamma, l1_schedule, **hp):
    l1_weight(gamma, l1_schedule, 0, 1)  # validate the schedule name early
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    dev = model_device(model)
    Xr, yr = retain[0].to(dev), retain[1].to(dev)
    steps_per_epoch = -(-Xr.shape[0] // hp["batch_size"])
    step = {"n": 0}
    params = [p for p in model.parameters() if p.requires_grad]

    def loss(idx):
        epoch = step["n"] // steps_per_epoch
        step["n"] += 1
        idx = idx.to(dev)
        with autocast(dev):
            ce = F.cross_entropy(model(Xr[idx]).float(), yr[idx])
        l1 = sum(p.abs().sum() for p in params)
        return ce + l1_weight(gamma, l1_schedule, epoch, hp["epochs"]) * l1

    _sgd(model, Xr.shape[0], loss, seed=seed, desc="l1-sparse", **hp)
    return model


def compare(model: nn.Module, data, forget_idx: torch.Tensor, methods: list[str] | None = None, *,
            hp: dict[str, dict] | None = None, exclude_classes: list[int] | None = None, seed: int = 0,
            original: str | None = "Original"):
    """Run several methods on one forget set and evaluate each (see :func:`metrics.evaluate`).

    ``data``: a :class:`course_lib.data.DataSplit`; ``forget_idx`` indexes its training set;
    ``hp`` maps a method name to its hyper-parameters. Returns ``(table, models)``: a
    DataFrame with one row per method (named as given, the oracle as ``Retrain``, the model
    before unlearning as ``original``) and the unlearned models by the same names.
    """
    from . import data as _data
    from . import metrics
    from .train import progress

    methods = list(methods or available())
    for m in methods:
        _resolve(m)
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
        name = "Retrain" if _resolve(m) == "retrain" else m
        rows[name] = metrics.evaluate(res.model, data, forget_idx, seconds=res.seconds,
                                      exclude_classes=exclude_classes, seed=seed)
        models[name] = res.model
    return metrics.table(rows, reference="Retrain" if "Retrain" in rows else None), models
