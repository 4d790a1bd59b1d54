"""Parameter masks: everything that says *which weights may change*, in one place.

A mask is a ``dict`` ``{parameter name: bool tensor of the parameter's shape}``; ``True`` means
the entry may be updated, ``False`` that it stays as it is. A parameter missing from the mask is
frozen entirely. Every training loop of the course takes ``mask=`` (:func:`course_lib.train.sgd_steps`,
every unlearner of :mod:`course_lib.unlearn`) and restores the frozen entries after every step
(:func:`restore_masked`), so momentum and weight decay cannot move them.

What builds masks, one file each:

====================  =======================================================================
this file             the type and the operations: :func:`full`, :func:`restore_masked`,
                      :func:`apply`, :func:`density`, :func:`forget_gradients`
``salient.py``        :func:`saliency`: SalUn's weight-saliency mask (lesson 5)
``pruning.py``        :func:`omp`, :func:`synflow`, :func:`imp`: pruning masks (lesson 6)
``localization.py``   :func:`localize`: DEL and the other localisation strategies (lesson 7)
====================  =======================================================================
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

Mask = dict[str, torch.Tensor]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the parameters, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def full(model: nn.Module, value: bool = True) -> Mask:
    """A mask over every parameter of ``model``, all ``value``."""
    return {n: torch.full_like(p, bool(value), dtype=torch.bool) for n, p in model.named_parameters()}


def check(mask: Mask, model: nn.Module) -> Mask:
    """``mask`` validated against ``model``: known names, matching shapes, boolean tensors.
    Raises ValueError saying what is wrong."""
    if not isinstance(mask, dict):
        raise ValueError(f"a mask is a dict {{parameter name: bool tensor}}, got {type(mask).__name__}")
    params = dict(model.named_parameters())
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise ValueError(f"mask names parameters the model does not have: {unknown[:5]}; "
                         f"the model's parameters are {list(params)[:8]}...")
    for n, m in mask.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != params[n].shape:
            raise ValueError(f"mask[{n!r}] must be a bool tensor of shape {tuple(params[n].shape)}, got "
                             f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
    return mask


@torch.no_grad()
def restore_masked(model: nn.Module, mask: Mask, reference: dict[str, torch.Tensor]) -> None:
    """Put every parameter entry where ``mask`` is False back to its ``reference`` value.
    Parameters missing from ``mask`` are frozen entirely."""
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is None:
            p.copy_(reference[name])
        else:
            p.copy_(torch.where(m.to(p.device), p, reference[name]))


@torch.no_grad()
def apply(model: nn.Module, mask: Mask) -> nn.Module:
    """Zero the entries outside ``mask`` in place (pruning) and return ``model``. Parameters
    missing from the mask are left alone. (The pruners of :mod:`.pruning` return masks over every
    parameter, non-prunable ones all True, so the same mask can go to ``unlearn(..., mask=...)``.)"""
    check(mask, model)
    for name, p in model.named_parameters():
        if name in mask:
            p.mul_(mask[name].to(p.device, p.dtype))
    return model


def count(mask: Mask) -> int:
    """Number of ``True`` entries."""
    return int(sum(int(m.sum()) for m in mask.values()))


def size(mask: Mask) -> int:
    """Number of entries the mask covers."""
    return int(sum(m.numel() for m in mask.values()))


def density(mask: Mask, model: nn.Module | None = None) -> float:
    """Share of ``True`` entries: over the entries the mask covers, or over *all* parameters of
    ``model`` when it is given (a parameter missing from the mask counts as all False)."""
    total = size(mask) if model is None else sum(p.numel() for p in model.parameters())
    return count(mask) / total if total else 0.0


def per_layer(mask: Mask) -> dict[str, float]:
    """Share of ``True`` entries in each parameter, by name (for plots)."""
    return {n: float(m.float().mean()) for n, m in mask.items()}


def forget_gradients(model: nn.Module, forget: tuple[torch.Tensor, torch.Tensor], *,
                     batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy over the forget set at the current weights, by
    parameter name (float32, on the model's device). Summed over batches, then divided by the
    number of examples, so it equals the full-batch gradient; eval mode (batch norm uses its
    running statistics, dropout is off), the model is left as it was."""
    X, y = forget
    if not isinstance(X, torch.Tensor) or X.shape[0] == 0:
        raise ValueError("the forget set is empty: a gradient needs at least one example")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    try:
        for s in range(0, X.shape[0], batch_size):
            xb, yb = X[s:s + batch_size].to(dev), y[s:s + batch_size].to(dev)
            loss = F.cross_entropy(model(xb).float(), yb, reduction="sum")
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    total[n] += g
    finally:
        model.train(was_training)
    return {n: g / X.shape[0] for n, g in total.items()}


# The mask builders, one file per family (each file defines ``__all__``).
from .salient import *  # noqa: E402,F401,F403
from .pruning import *  # noqa: E402,F401,F403
from .localization import *  # noqa: E402,F401,F403
