"""Pruning masks (lesson 6; source 002, Sec. 3-4 and App. C.2): one-shot magnitude pruning (OMP),
SynFlow (data-free, at initialisation) and iterative magnitude pruning with rewinding (IMP).

What is prunable: the ``weight`` of every ``nn.Conv1d/2d/3d`` and ``nn.Linear``, ranked *globally*
across layers, **the classifier head included**. This departs from 002's public code, which prunes
the weights of ``nn.Conv2d`` layers only and leaves the final linear classifier dense. The course
prunes linear weights too because its FAST model is an MLP (no conv layer at all: a conv-only rule
would prune nothing); on ResNet-18 the head is 5,120 of about 11.2 M prunable weights, so
including it barely changes a global ranking there. To follow the public code exactly, build the
mask yourself: rank the conv weights only and keep ``mask["head.weight"]`` all ``True``. Left out,
and always trainable: biases and the affine parameters of normalisation layers (BatchNorm, LayerNorm,
GroupNorm). They are about 1% of a ResNet-18, and zeroing a bias or a norm scale removes a whole
channel's offset or output rather than one connection, which is not what weight sparsity means in
002 (its public code leaves them dense too). A module of any other kind that owns parameters (an embedding, an RNN, a custom
``nn.Parameter``) is refused with a clear error rather than silently skipped.

A pruning mask is an ordinary training mask of :mod:`course_lib.masks`: it covers *every*
parameter, ``False`` on the pruned weights and ``True`` everywhere else (so biases and norm
layers keep training). :func:`course_lib.masks.apply` zeros the pruned weights; every training
loop of the course restores the masked entries after each step, so a pruned model stays exactly
pruned through (re)training and through every unlearner (``unlearn(..., mask=mask)``).

Ties in the global ranking are broken by position (flattened parameter order), so the number of
pruned weights is always exactly ``round(sparsity * n)``, ``n`` the number of prunable weights.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .. import config, train
from ..params import Mask, global_topk, model_device, snapshot
from ..validation import check_int, check_number, check_sgd, check_xy
from .ops import apply

__all__ = ["prunable", "sparsity", "omp", "synflow", "imp", "imp_trace", "ImpTrace", "train_sparse"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_KEPT = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def prunable(model: nn.Module) -> list[str]:
    """Names of the prunable parameters of ``model`` (conv and linear weights), in order.

    Raises ValueError if a module of another kind owns parameters (what to do with it would be a
    guess), or if the model has nothing to prune."""
    names, bad = [], []
    for mod_name, mod in model.named_modules():
        own = [n for n, _ in mod.named_parameters(recurse=False)]
        if not own:
            continue
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, _PRUNABLE):
            names.append(prefix + "weight")
        elif not isinstance(mod, _KEPT):
            bad.append(f"{mod_name or '<model>'} ({type(mod).__name__}: {', '.join(own)})")
    if bad:
        raise ValueError(f"cannot prune modules of unknown type {bad}: only Conv1d/2d/3d and Linear weights are "
                         "prunable, and BatchNorm/LayerNorm/GroupNorm are kept; wrap other layers in those, or "
                         "build the mask yourself")
    if not names:
        raise ValueError("the model has no conv or linear weights to prune")
    return names


def _check_sparsity(s) -> float:
    try:
        return check_number(s, "sparsity", 0, 1, hi_open=True)
    except ValueError as err:
        raise ValueError(f"{err}: sparsity is the share of prunable weights to remove (e.g. 0.9 for 90%; "
                         "1.0 would remove every weight)") from None


def sparsity(mask: Mask, model: nn.Module) -> float:
    """Share of the prunable weights of ``model`` that ``mask`` prunes (False entries)."""
    names = prunable(model)
    n = sum(mask[k].numel() for k in names if k in mask)
    pruned = sum(int((~mask[k]).sum()) for k in names if k in mask)
    return pruned / n if n else 0.0


def _global_mask(model: nn.Module, scores: dict[str, torch.Tensor], n_prune: int) -> Mask:
    """Prune the ``n_prune`` lowest-scoring prunable weights (ties: first position first), keep
    every other parameter. ``scores`` has one tensor per prunable parameter."""
    pruned = global_topk(scores, n_prune, largest=False)
    return {k: (~pruned[k]).to(p.device) if k in pruned else torch.ones_like(p, dtype=torch.bool)
            for k, p in model.named_parameters()}   # the model's parameter order


def _n_prune(model: nn.Module, s: float) -> tuple[list[str], int]:
    names = prunable(model)
    params = dict(model.named_parameters())
    n = sum(params[k].numel() for k in names)
    return names, int(round(s * n))


def omp(model: nn.Module, sparsity: float) -> Mask:
    """One-shot global magnitude pruning (002, Sec. 3): prune the ``round(sparsity * n)`` prunable
    weights of smallest ``|theta|`` across all layers at once; the kept weights are exactly the
    largest magnitudes. Apply to the *trained* model. The model is not changed."""
    s = _check_sparsity(sparsity)
    names, k = _n_prune(model, s)
    params = dict(model.named_parameters())
    return _global_mask(model, {n: params[n].detach().abs() for n in names}, k)


@torch.no_grad()
def _linearise(model: nn.Module) -> nn.Module:
    """A float64 copy with every parameter replaced by its absolute value, in eval mode, with
    normalisation statistics reset (mean 0, variance 1), so it depends on the weights only."""
    lin = copy.deepcopy(model).double().cpu()
    for mod in lin.modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats:
            mod.reset_running_stats()
    for p in lin.parameters():
        p.abs_()
    return lin.eval()


def synflow(model: nn.Module, sparsity: float, input_shape: tuple[int, ...], iterations: int = 100) -> Mask:
    """SynFlow (Tanaka et al. 2020; 002, Sec. 4): data-free iterative pruning at initialisation.

    On a linearised copy (``|theta|``, float64, eval mode, normalisation statistics reset) the
    objective ``R = 1^T f(1)`` is the network's output for an all-ones input of ``input_shape``
    (no data at all); the score of a weight is ``|theta * dR/dtheta|`` (its synaptic flow). Over
    ``iterations`` rounds the density shrinks exponentially, ``(1 - sparsity)^(k / iterations)``,
    and each round prunes the lowest scores globally, re-scoring the masked network; pruned weights
    stay pruned. Call it on the model *at initialisation* (it never looks at data, so it cannot
    depend on the forget set: 002's criterion 1). The model is not changed.
    """
    s = _check_sparsity(sparsity)
    iterations = config.budget().cap_iterations(check_int(iterations, "iterations", lo=1))
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape is the shape of one input without the batch axis, e.g. (1, 8, 8); got {input_shape!r}")
    names, k_final = _n_prune(model, s)
    lin = _linearise(model)
    lparams = dict(lin.named_parameters())
    abs_w = {n: lparams[n].detach().clone() for n in names}
    ones = torch.ones((1,) + shape, dtype=torch.float64)
    n_total = sum(abs_w[n].numel() for n in names)
    mask = {n: torch.ones_like(abs_w[n], dtype=torch.bool) for n in names}
    for it in range(1, iterations + 1):
        with torch.no_grad():
            for n in names:
                lparams[n].copy_(abs_w[n] * mask[n])
        lin.zero_grad(set_to_none=True)
        R = lin(ones).sum()
        R.backward()
        scores = {}
        for n in names:
            g = lparams[n].grad if lparams[n].grad is not None else torch.zeros_like(lparams[n])
            sc = (lparams[n] * g).detach().abs()
            scores[n] = torch.where(mask[n], sc, torch.full_like(sc, -1.0))   # pruned ones stay pruned
        k = k_final if it == iterations else int(round(n_total * (1 - (1 - s) ** (it / iterations))))
        new = _global_mask(lin, scores, k)
        mask = {n: new[n] for n in names}
    params = dict(model.named_parameters())
    out = {k: (mask[k].to(p.device) if k in mask else torch.ones_like(p, dtype=torch.bool)) for k, p in params.items()}
    return out


def train_sparse(model: nn.Module, mask: Mask, X: torch.Tensor, y: torch.Tensor, **fit_kw) -> nn.Module:
    """(Re)train the sparse network ``model ⊙ mask`` on ``(X, y)``: a copy of ``model`` with the
    pruned weights zeroed, trained by :func:`course_lib.train.fit` with ``mask`` (so they stay
    zero). ``fit_kw`` go to ``fit`` (epochs, lr, seed, ...). Returns the trained copy."""
    sparse = apply(copy.deepcopy(model), mask)
    train.fit(sparse, X, y, mask=mask, **fit_kw)
    return sparse


@dataclass
class ImpTrace:
    """What :func:`imp_trace` did: the final mask and trained sparse model, the masks after each
    round, the rewind weights (after ``rewind_epoch`` epochs of dense training), the weights each
    round started from and ended with (``starts``, ``states``), and the cost in training samples
    (example-gradient evaluations, counted as the loops ran them: a capped run reports what it did)."""

    mask: Mask
    model: nn.Module
    masks: list[Mask] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] = field(default_factory=dict)
    starts: list[dict[str, torch.Tensor]] = field(default_factory=list)
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)
    samples: int = 0


def _train_ce(model: nn.Module, X, y, *, epochs, batch_size, lr, momentum, weight_decay, seed, schedule, mask,
              snapshot_after_epoch: int | None = None) -> tuple[dict[str, torch.Tensor] | None, int]:
    """Cross-entropy SGD (train.sgd_steps). Returns the weights after ``snapshot_after_epoch`` epochs
    if asked (taken inside the run, so momentum and the schedule are those of one run; the end of a
    run that stopped earlier) and the number of training rows the run processed (its cost)."""
    dev = model_device(model)
    Xd, yd = X.to(dev), y.to(dev)
    spe = train.steps_per_epoch(X.shape[0], batch_size)
    state = {"step": 0, "snap": None, "rows": 0}
    target = None if snapshot_after_epoch is None else snapshot_after_epoch * spe

    def loss(idx):
        if state["step"] == target:
            state["snap"] = snapshot(model)
        state["step"] += 1
        state["rows"] += idx.numel()
        idx = idx.to(dev)
        return F.cross_entropy(model(Xd[idx]).float(), yd[idx])

    log = train.sgd_steps(model, X.shape[0], loss, epochs=epochs, batch_size=batch_size, lr=lr,
                          momentum=momentum, weight_decay=weight_decay, seed=seed, schedule=schedule, mask=mask,
                          desc="imp")
    if target is not None and log.steps <= target:   # the run took no step after that point: its end is it
        state["snap"] = snapshot(model)
    return state["snap"], state["rows"]


def imp_trace(model: nn.Module, X: torch.Tensor, y: torch.Tensor, sparsity: float, *, rounds: int = 3,
              epochs: int = 10, rewind_epoch: int = 1, lr: float = 0.05, batch_size: int = 64,
              momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0,
              schedule: str = "cosine") -> ImpTrace:
    """Iterative magnitude pruning with weight rewinding (Frankle et al. 2020; 002, Sec. 4, App. C.2).

    1. train ``model`` (its initial weights, a copy) densely for ``epochs`` epochs on ``(X, y)``,
       keeping the weights reached after ``rewind_epoch`` epochs;
    2. ``rounds`` times: prune the smallest-magnitude surviving weights globally so that the
       density after round ``r`` is ``(1 - sparsity)^(r / rounds)`` (exactly ``round(sparsity * n)``
       pruned at the end), rewind the surviving weights to the rewind weights, and train the
       masked network for the remaining ``epochs - rewind_epoch`` epochs.

    The expensive reference: ``epochs + rounds * (epochs - rewind_epoch)`` passes over the data,
    all of it including any future forget set. Round ``r`` draws its batch order from
    ``derive_seed(seed, 7, r)``; the rewind weights come from the dense run with ``seed``.
    """
    s = _check_sparsity(sparsity)
    check_xy(X, y, "training data")
    rounds = config.budget().cap_iterations(check_int(rounds, "rounds", lo=1))
    epochs = check_int(epochs, "epochs", lo=1)
    rewind_epoch = check_int(rewind_epoch, "rewind_epoch", lo=0)
    if rewind_epoch >= epochs:
        raise ValueError(f"rewind_epoch must be below epochs ({epochs}): rewinding to the end would not retrain; "
                         f"got {rewind_epoch}")
    check_sgd(epochs, batch_size, lr, momentum, weight_decay, schedule)
    sgd = dict(batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule)
    names, k_final = _n_prune(model, s)
    work = copy.deepcopy(model)
    rewind, rows = _train_ce(work, X, y, epochs=epochs, seed=seed, mask=None, snapshot_after_epoch=rewind_epoch,
                             **sgd)
    n_total = sum(rewind[n].numel() for n in names)
    trace = ImpTrace(mask={}, model=work, rewind_state=rewind, samples=rows)
    mask = None
    for r in range(1, rounds + 1):
        params = dict(work.named_parameters())
        k = k_final if r == rounds else int(round(n_total * (1 - (1 - s) ** (r / rounds))))
        scores = {n: torch.where(mask[n], params[n].detach().abs(), torch.full_like(params[n], -1.0))
                  if mask is not None else params[n].detach().abs() for n in names}
        mask = _global_mask(work, scores, k)
        with torch.no_grad():
            for n, p in work.named_parameters():
                p.copy_(rewind[n] * mask[n].to(p.dtype))
        trace.starts.append(snapshot(work))
        _, rows = _train_ce(work, X, y, epochs=epochs - rewind_epoch, seed=config.derive_seed(seed, 7, r), mask=mask,
                            **sgd)
        trace.samples += rows
        trace.masks.append(mask)
        trace.states.append({n: t.detach().clone() for n, t in work.state_dict().items()})
    trace.mask = mask
    return trace


def imp(model: nn.Module, X: torch.Tensor, y: torch.Tensor, sparsity: float, **kw) -> Mask:
    """The mask of :func:`imp_trace` (same arguments): IMP with rewinding, trained on ``(X, y)``."""
    return imp_trace(model, X, y, sparsity, **kw).mask
