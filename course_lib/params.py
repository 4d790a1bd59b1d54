"""Parameters as data: the one home of what every layer above does with a model's weights.

A leaf module (it imports only torch and :mod:`course_lib.validation`), so the training loops,
the mask builders, the unlearners and the exact estimators can all use it without import cycles.

=========================  ============================================================================
``Params``, ``Mask``       ``{parameter name: tensor}`` and ``{parameter name: bool tensor}`` (True =
                           the entry may change; a parameter missing from a mask is frozen)
:func:`snapshot`           a detached copy of the parameters, by name
:func:`restore_masked`     put every entry outside a mask back to a snapshot (after each SGD step, so
                           momentum and weight decay cannot move frozen weights)
:func:`check_mask`         a mask validated against a model (names, shapes, dtype)
:func:`eval_mode`          ``with eval_mode(model): ...``: eval mode inside, the old mode restored after
:func:`global_topk`        the ``k`` largest (or smallest) scores over all parameters at once, as a mask
:func:`trainable`          the parameters with ``requires_grad``, by name
:func:`mean_loss_gradient` gradient of the mean cross-entropy over a data set, batch by batch
:func:`empirical_fisher_diagonal`  mean squared gradient of batch-mean losses (labels given)
:func:`true_fisher_diagonal`       the Fisher information's diagonal under the model's own predictions
:func:`accuracy`           share (%) of predictions equal to the labels: the course's one accuracy
=========================  ============================================================================
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .validation import check_int

Params = dict[str, torch.Tensor]
Mask = dict[str, torch.Tensor]


def snapshot(model: nn.Module) -> Params:
    """A detached copy of the parameters, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def trainable(model: nn.Module) -> Params:
    """The parameters with ``requires_grad``, by name, in ``named_parameters`` order (the tensors
    themselves, not copies)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_mask(mask: Mask, model: nn.Module) -> Mask:
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
def restore_masked(model: nn.Module, mask: Mask, reference: Params) -> None:
    """Put every parameter entry where ``mask`` is False back to its ``reference`` value.
    Parameters missing from ``mask`` are frozen entirely."""
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is None:
            p.copy_(reference[name])
        else:
            p.copy_(torch.where(m.to(p.device), p, reference[name]))


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Eval mode (batch norm on running statistics, dropout off) inside the block; each model's
    previous mode is restored afterwards, also when the block raises."""
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(models, was):
            m.train(w)


def global_topk(scores: dict[str, torch.Tensor], k: int, *, largest: bool = True,
                allowed: Mask | None = None) -> Mask:
    """The ``k`` entries of largest (``largest=False``: smallest) score over all tensors of
    ``scores`` together, as a mask ``{name: bool tensor}`` shaped and placed like each score.

    Ties go to the earlier position (tensors in the dict's order, entries in row-major order), so
    the result never depends on the sorting algorithm. ``allowed`` (same names and shapes) limits
    the candidates; an entry it does not name is never chosen. ``k`` larger than the number of
    candidates chooses them all. Scores are compared in float64 on the CPU.
    """
    k = check_int(k, "k", 0)
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).double().cpu() for n in names]) if names \
        else torch.empty(0, dtype=torch.float64)
    if allowed is None:
        cand = torch.arange(flat.numel())
    else:
        ok = torch.cat([(allowed[n].reshape(-1).cpu() if n in allowed
                         else torch.zeros(scores[n].numel(), dtype=torch.bool)) for n in names]) if names \
            else torch.empty(0, dtype=torch.bool)
        cand = torch.nonzero(ok).squeeze(1)
    order = torch.sort(flat[cand], descending=largest, stable=True).indices
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[cand[order[:k]]] = True
    parts = torch.split(chosen, [scores[n].numel() for n in names])
    return {n: part.view(scores[n].shape).to(scores[n].device) for n, part in zip(names, parts)}


def _batch_gradients(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int, reduction: str):
    """``(name, gradient)`` pairs of the cross-entropy (``reduction`` over each batch) of ``X``, ``y``
    taken ``batch_size`` rows at a time, in order, in eval mode (the model's mode is kept), one list
    per batch."""
    if not isinstance(X, torch.Tensor) or X.shape[0] == 0:
        raise ValueError("the data set is empty: a gradient needs at least one example")
    batch_size = check_int(batch_size, "batch_size", 1)
    dev = model_device(model)
    params = trainable(model)
    with eval_mode(model):
        for s in range(0, X.shape[0], batch_size):
            loss = F.cross_entropy(model(X[s:s + batch_size].to(dev)).float(), y[s:s + batch_size].to(dev),
                                   reduction=reduction)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            yield [(n, g) for n, g in zip(params, grads) if g is not None]


def mean_loss_gradient(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *,
                       batch_size: int = 256) -> Params:
    """Gradient of the mean cross-entropy over ``data = (X, y)`` at the current weights, by
    parameter name (float32, on the model's device): per-batch sums added up and divided by the
    number of examples, so it equals the full-batch gradient. Eval mode; the model's mode is kept."""
    X, y = data
    total = {n: torch.zeros_like(p) for n, p in trainable(model).items()}
    for grads in _batch_gradients(model, X, y, batch_size, "sum"):
        for n, g in grads:
            total[n] += g
    return {n: g / X.shape[0] for n, g in total.items()}


def empirical_fisher_diagonal(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *,
                              batch_size: int) -> Params:
    """The *empirical* Fisher diagonal as SSD's public code estimates it: the mean over mini-batches
    (in order) of the squared gradient of each batch's mean cross-entropy with the given labels
    ``y``. Eval mode; the model's mode is kept."""
    total = {n: torch.zeros_like(p) for n, p in trainable(model).items()}
    n_batches = 0
    for grads in _batch_gradients(model, X, y, batch_size, "mean"):
        for n, g in grads:
            total[n] += g.detach() ** 2
        n_batches += 1
    return {n: t / n_batches for n, t in total.items()}


def true_fisher_diagonal(model: nn.Module, X: torch.Tensor, *, batch_size: int = 1) -> Params:
    """The diagonal of the *true* Fisher information at the current weights, by parameter name
    (eval mode; the model's mode is kept). No labels: the expectation is over the model's own
    prediction.

    ``batch_size=1``: the textbook ``mean_i sum_k p_k(x_i) (d log p_k(x_i) / d theta)^2``.
    ``batch_size=b > 1``: Fisher forgetting's public estimate, per batch of ``b`` rows
    ``sum_k mean_batch(p_k) (d mean_batch CE(., k) / d theta)^2``, averaged over batches. Squaring
    a batch mean shrinks the estimate (roughly by ``b`` where per-example gradients are
    uncorrelated); it needs ``C`` backward passes per batch instead of per example.
    """
    if not isinstance(X, torch.Tensor) or X.shape[0] == 0:
        raise ValueError("the Fisher information needs at least one example")
    b = check_int(batch_size, "batch_size", 1)
    params = trainable(model)
    dev = model_device(model)
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n_batches = 0
    with eval_mode(model):
        for s in range(0, X.shape[0], b):
            out = model(X[s:s + b].to(dev)).float()
            logp = F.log_softmax(out, 1)
            prob = logp.detach().exp().mean(0)
            for k in range(out.shape[1]):
                gs = torch.autograd.grad(-logp[:, k].mean(), list(params.values()), retain_graph=True,
                                         allow_unused=True)
                for (n, _), g in zip(params.items(), gs):
                    if g is not None:
                        total[n] += prob[k] * g.float() ** 2
            n_batches += 1
    return {n: t / n_batches for n, t in total.items()}


def accuracy(pred, y) -> float:
    """Share (%) of ``pred`` ``[N]`` equal to ``y`` ``[N]``; ``pred`` may also be logits ``[N, C]``
    (tensors, arrays or lists). The course's one accuracy: ``metrics.accuracy`` is this function and
    ``train.accuracy(model, X, y)`` applies it to a model's predictions."""
    def as_numpy(v, name):
        arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return arr

    p, t = as_numpy(pred, "pred"), as_numpy(y, "y")
    if t.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {t.shape}")
    if p.ndim == 2:
        p = p.argmax(1)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and labels {t.shape} differ in shape")
    if t.size == 0:
        raise ValueError("y is empty: the accuracy of an empty set is undefined")
    return 100.0 * float(np.mean(p == t))
