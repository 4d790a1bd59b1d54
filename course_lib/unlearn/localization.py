"""Localised unlearning (lesson 7): Reset + Finetune, DEL and SSD (source 003).

* ``rft`` (Reset + Finetune, 003 Sec. 4): the entries opened by ``mask`` are copied from a fresh
  random initialisation of the architecture (drawn under ``seed``), then only they and the whole
  classifier layer are fine-tuned on the retain set with cross-entropy. Every other parameter stays
  bitwise as it was (batch-norm *running statistics* are buffers and keep updating in training).
  ``mask=None`` resets and trains everything (a retrain from scratch with the fine-tuning budget).
* ``del`` (003 Sec. 5.2): ``masks.localize(model, forget, "del", budget, top_fraction=...)``, then RFT.
* ``ssd`` (Selective Synaptic Dampening; Foster et al., AAAI 2024, compared in 003 Tables 2-4):
  no training. Diagonal Fisher importances ``I_D`` (training set = retain + forget) and ``I_f``
  (forget set), each the mean over mini-batches of the squared gradient of the batch's mean
  cross-entropy (:func:`course_lib.params.empirical_fisher_diagonal`); every parameter with ``I_f > alpha * I_D`` is multiplied by
  ``min(lam * I_D / I_f, 1)``. ``mask`` (optional) restricts the dampening. The registry defaults
  alpha = 10, lambda = 1 are Foster et al.'s defaults, not values 003 states (our copy of 003 does not
  give the ones it used).

Settings: lessons take them from the tuned table, ``unlearn.tuned("rft" | "del" | "ssd", scenario)``
(FAST rows tuned by ``benchmarks/tune_methods.py`` for the recipe variants, e.g. ``mislabeled:deep``;
full mode: RFT / DEL at 003 App. A.2's learning rate 0.015). The registry defaults below are only
fallbacks.
"""
from __future__ import annotations

import torch

from .. import config
from ..masks.localization import classifier_names, localize
from ..masks.ops import full
from ..models import reset_parameters
from ..params import check_mask, empirical_fisher_diagonal
from ..train import fit
from ..validation import check_number
from .registry import register


@torch.no_grad()
def reset_masked(model, mask, seed: int):
    """Copy the entries opened by ``mask`` from a fresh initialisation drawn under ``seed`` (in place)."""
    fresh = dict(reset_parameters(model, seed).named_parameters())
    for n, p in model.named_parameters():
        if n in mask:
            p.copy_(torch.where(mask[n].to(p.device), fresh[n].to(p.device, p.dtype), p))
    return model


def rft_mask(model, mask):
    """RFT's training mask: ``mask`` plus every entry of the classifier layer."""
    head = set(classifier_names(model))
    out = {n: m.clone() for n, m in mask.items()}
    for n, p in model.named_parameters():
        if n in head:
            out[n] = torch.ones_like(p, dtype=torch.bool)
    return out


def _rft(model, retain, seed, mask, hp):
    mask = full(model) if mask is None else check_mask(mask, model)
    reset_masked(model, mask, config.derive_seed(seed, 7))
    fit(model, *retain, seed=seed, mask=rft_mask(model, mask), desc="reset + finetune", **hp)
    return model


@register("rft", epochs=5, lr=0.02, augment=None)
def _rft_method(model, retain, forget, *, valid, seed, mask, **hp):
    return _rft(model, retain, seed, mask, hp)


@register("del", epochs=5, lr=0.02, augment=None, budget=0.3, top_fraction=0.1)
def _del(model, retain, forget, *, valid, seed, mask, budget, top_fraction, **hp):
    if mask is not None:
        raise ValueError("del localises its own mask (budget=, top_fraction=); to reset and fine-tune a "
                         "mask of your own use unlearn('rft', ..., mask=m)")
    m = localize(model, forget, "del", budget, top_fraction=top_fraction)
    return _rft(model, retain, seed, m, hp)


@register("ssd", epochs=0, alpha=10.0, lam=1.0)
def _ssd(model, retain, forget, *, valid, seed, mask, alpha, lam, batch_size, **hp):
    alpha = check_number(alpha, "ssd's alpha", 0.0, lo_open=True)
    lam = check_number(lam, "ssd's lam", 0.0, lo_open=True)
    if mask is not None:
        check_mask(mask, model)
    X = torch.cat([retain[0], forget[0]])
    y = torch.cat([retain[1].cpu(), forget[1].cpu()])
    imp_d = empirical_fisher_diagonal(model, X, y, batch_size=batch_size)
    imp_f = empirical_fisher_diagonal(model, *forget, batch_size=batch_size)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n not in imp_d:
                continue
            sel = imp_f[n] > alpha * imp_d[n]
            if mask is not None:
                sel &= mask[n].to(p.device) if n in mask else torch.zeros_like(sel)
            beta = torch.clamp(lam * imp_d[n] / imp_f[n].clamp_min(1e-30), max=1.0)
            p.mul_(torch.where(sel, beta, torch.ones_like(beta)).to(p.dtype))
    return model
