"""SalUn's weight-saliency mask (lesson 5; source 001 "Weight Saliency Map", 003 Sec. 4 "SalLoc").

``m_s = 1(|grad_theta l_f(theta; D_f)| at theta_o >= gamma)`` with ``l_f`` the mean cross-entropy
over the forget set (001 "Forgetting Loss"). The slides threshold at a hard ``gamma``; SalUn's
public code (and 003's SalLoc) keep a fixed *share* of the weights instead, ranking ``|g|``
globally across layers. :func:`saliency` does both:

* ``fraction`` (default 0.5, the public code's published runs): exactly
  ``round(fraction * n)`` entries of the ``n`` eligible ones are selected, the largest ``|g|``
  first; ties are broken by position (the first entry in ``named_parameters`` order, then
  row-major, wins), so the mask is a deterministic function of the gradient.
* ``threshold`` (the slides' ``gamma``): every eligible entry with ``|g| >= gamma``. The gradient
  here is the *mean* over the forget set (the public code sums over batches of the negated loss,
  so its ``gamma`` values are not comparable; the sign does not matter for ``|g|``).

Eligible entries (``params``): ``"all"`` (default, as the public code: weights, biases and
normalisation parameters alike) or ``"weights"`` (tensors of >= 2 dimensions only). Parameters
with ``requires_grad=False`` are never eligible. ``within`` (a mask, e.g. a pruning mask)
restricts the eligible entries further. Every parameter of the model appears in the returned
mask (ineligible ones all False), so :func:`course_lib.masks.density` and ``per_layer`` see the
whole model.
"""
from __future__ import annotations

import torch
from torch import nn

from ..params import Mask, check_mask, global_topk, mean_loss_gradient
from ..validation import check_number

__all__ = ["saliency", "random_mask", "eligible", "PARAMS"]

PARAMS = ("all", "weights")


def eligible(model: nn.Module, params: str = "all", within: dict | None = None) -> dict[str, torch.Tensor]:
    """Which entries a saliency (or random) mask may select, as a mask over every parameter."""
    if params not in PARAMS:
        raise ValueError(f"params must be one of {PARAMS} (which parameters may be salient), got {params!r}")
    if within is not None:
        check_mask(within, model)
    out = {}
    for n, p in model.named_parameters():
        ok = p.requires_grad and (params == "all" or p.ndim >= 2)
        m = torch.full(p.shape, ok, dtype=torch.bool, device=p.device)
        if within is not None:
            m &= within[n].to(p.device) if n in within else torch.zeros_like(m)
        out[n] = m
    return out


def _top(scores: dict[str, torch.Tensor], allowed: Mask, k: int) -> Mask:
    """The ``k`` allowed entries of largest score (ties: earliest position), as a mask placed like ``allowed``."""
    chosen = global_topk(scores, k, allowed=allowed)
    return {n: chosen[n].to(allowed[n].device) for n in allowed}


def _count(fraction, n: int) -> int:
    f = check_number(fraction, "fraction", 0.0, 1.0, lo_open=True)
    return int(round(f * n))


def saliency(model: nn.Module, forget: tuple[torch.Tensor, torch.Tensor], fraction: float | None = None, *,
             threshold: float | None = None, params: str = "all", within: dict | None = None,
             gradients: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """SalUn's mask: the entries where the forget loss's gradient at the current weights is largest.

    ``fraction`` in (0, 1] (default 0.5 when no ``threshold``): keep exactly
    ``round(fraction * n)`` of the ``n`` eligible entries, by ``|g|`` ranked globally across
    layers. ``threshold`` (the slides' ``gamma``, >= 0) instead keeps every eligible entry with
    ``|g| >= threshold``; give one of the two. ``gradients`` (by name) skips the gradient
    computation (e.g. to reuse one gradient for a sweep over ``fraction``). See the module
    docstring for ``params`` and ``within``.
    """
    if threshold is not None and fraction is not None:
        raise ValueError("give either fraction (a share of the weights) or threshold (the slides' gamma), not both")
    allowed = eligible(model, params, within)
    g = mean_loss_gradient(model, forget) if gradients is None else gradients
    scores = {n: (g[n].abs() if n in g else torch.zeros_like(allowed[n], dtype=torch.float32)) for n in allowed}
    if threshold is not None:
        gamma = check_number(threshold, "threshold", 0.0)
        return {n: allowed[n] & (scores[n].to(allowed[n].device) >= gamma) for n in allowed}
    n_ok = int(sum(int(m.sum()) for m in allowed.values()))
    return _top(scores, allowed, _count(0.5 if fraction is None else fraction, n_ok))


def random_mask(model: nn.Module, fraction: float = 0.5, *, seed: int = 0, params: str = "all",
                within: dict | None = None) -> dict[str, torch.Tensor]:
    """The slides' ablation: as many entries as :func:`saliency` with the same ``fraction``,
    ``params`` and ``within`` would select, at uniformly random eligible positions."""
    allowed = eligible(model, params, within)
    n_ok = int(sum(int(m.sum()) for m in allowed.values()))
    k = _count(fraction, n_ok)
    g = torch.Generator().manual_seed(int(seed))
    scores = {n: torch.rand(m.shape, generator=g, dtype=torch.float64) for n, m in allowed.items()}
    return _top(scores, allowed, k)
