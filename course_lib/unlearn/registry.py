"""The registry of unlearning methods and the one call that runs any of them, :func:`unlearn`.

A method family (``baselines.py``, ``boundary.py``, ...) registers each method with
``@register(name, **defaults)``; this module imports none of them, so the families and the package
import it without cycles. :mod:`course_lib.unlearn` imports this module first, then every family.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..engine import Stopwatch
from ..validation import check_xy

XY = tuple[torch.Tensor, torch.Tensor]

#: Hyper-parameters every method accepts (a method's own defaults override these values).
COMMON = dict(epochs=5, lr=0.01, batch_size=64, momentum=0.9, weight_decay=5e-4, schedule="cosine", mask=None)
_REGISTRY: dict[str, tuple[Callable, dict]] = {}
_ALIASES: dict[str, str] = {}


@dataclass
class UnlearnResult:
    """The unlearned model, the wall-clock seconds it took (RTE) and the settings used."""

    model: nn.Module
    seconds: float
    method: str
    params: dict = field(default_factory=dict)


def register(name: str, *, aliases: tuple[str, ...] = (), **defaults):
    """Decorator adding an unlearner ``fn(model, retain, forget, *, valid, seed, **hp)`` to the
    registry under ``name`` (and ``aliases``), with its default hyper-parameters."""

    def deco(fn):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"an unlearning method named {name!r} is already registered")
        _REGISTRY[name] = (fn, {**COMMON, **defaults})
        for a in aliases:
            _ALIASES[a] = name
        return fn

    return deco


def available() -> list[str]:
    """Names of the registered methods."""
    return sorted(_REGISTRY)


def defaults(method: str) -> dict:
    """Default hyper-parameters of ``method``."""
    return dict(_REGISTRY[resolve(method)][1])


def resolve(method: str) -> str:
    """The registered name of ``method`` (a name or an alias); ValueError listing the known ones."""
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
    name = resolve(method)
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
