"""Operations on masks that the builders and the lessons share: build an all-True (or all-False) mask,
zero what a mask prunes, count and measure a mask. The mask type itself, :func:`snapshot`,
:func:`restore_masked` and the validation live one layer down, in :mod:`course_lib.params`, so the
training loops can use them without importing the builders."""
from __future__ import annotations

import torch
from torch import nn

from ..params import Mask, check_mask

__all__ = ["full", "apply", "count", "size", "density", "per_layer"]


def full(model: nn.Module, value: bool = True) -> Mask:
    """A mask over every parameter of ``model``, all ``value``."""
    return {n: torch.full_like(p, bool(value), dtype=torch.bool) for n, p in model.named_parameters()}


@torch.no_grad()
def apply(model: nn.Module, mask: Mask) -> nn.Module:
    """Zero the entries outside ``mask`` in place (pruning) and return ``model``. Parameters
    missing from the mask are left alone. (The pruners of :mod:`.pruning` return masks over every
    parameter, non-prunable ones all True, so the same mask can go to ``unlearn(..., mask=...)``.)"""
    check_mask(mask, model)
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
