"""The baseline unlearners of lessons 0 and 1 (and the Retrain oracle), registered in
:mod:`course_lib.unlearn`. Each is a ~15-line loss closure handed to :func:`course_lib.train.sgd_steps`.

Sources: Retrain, FT, GA/NegGrad and l1-sparse as in 002 (Sec. 5, App. C.2); NegGrad+ and Random
Label as in 003 (Sec. 3, A.2). Learning-rate schedules per method follow 003 A.2: NegGrad and
NegGrad+ run with a constant rate, FT, Random Label and l1-sparse with a cosine schedule (every
method accepts ``schedule=`` to override).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .. import config
from ..device import autocast
from ..models import n_outputs, reset_parameters
from ..params import Mask, model_device, restore_masked, snapshot
from ..train import fit, sgd_steps, steps_per_epoch
from ..validation import check_int, check_number
from .registry import register


def _sgd(model: nn.Module, n_rows: int, loss_of_batch, *, seed: int, epochs: int, lr: float, batch_size: int,
         momentum: float, weight_decay: float, schedule: str, mask: Mask | None, desc: str):
    return sgd_steps(model, n_rows, loss_of_batch, epochs=epochs, batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, seed=seed, schedule=schedule, mask=mask,
                     desc=desc)


@register("retrain", epochs=20, lr=0.05, augment=None)
def _retrain(model, retain, forget, *, valid, seed, mask, **hp):
    fresh = reset_parameters(model, config.derive_seed(seed, 0))
    if mask is not None:   # entries outside the mask keep the given model's values (a pruned model stays pruned)
        restore_masked(fresh, mask, snapshot(model))
    fit(fresh, *retain, seed=seed, mask=mask, desc="retrain", **hp)
    return fresh


@register("finetune", aliases=("ft",), epochs=5, lr=0.02, augment=None)
def _finetune(model, retain, forget, *, valid, seed, mask, **hp):
    fit(model, *retain, seed=seed, mask=mask, desc="finetune", **hp)
    return model


@register("neggrad", aliases=("ga",), epochs=3, lr=0.002, schedule="constant")
def _neggrad(model, retain, forget, *, valid, seed, **hp):
    dev = model_device(model)
    Xf, yf = forget[0].to(dev), forget[1].to(dev)

    def loss(idx):
        idx = idx.to(dev)
        with autocast(dev):
            return -F.cross_entropy(model(Xf[idx]).float(), yf[idx])

    _sgd(model, Xf.shape[0], loss, seed=seed, desc="neggrad", **hp)
    return model


@register("neggrad+", epochs=5, lr=0.01, alpha=0.95, schedule="constant")
def _neggrad_plus(model, retain, forget, *, valid, seed, alpha, **hp):
    alpha = check_number(alpha, "alpha", 0.0, 1.0)
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


def relabel_and_finetune(model: nn.Module, retain, forget, *, seed: int, mask: Mask | None,
                         desc: str = "random label", **hp) -> nn.Module:
    """Random Label's loop, in place: fine-tune on the retain set plus the forget set relabelled
    once to other classes (stream ``derive_seed(seed, 3)``), entries outside ``mask`` frozen.
    ``hp`` go to :func:`course_lib.train.fit`. Shared by ``random_label`` and ``salun``, which
    differ only in the mask."""
    y_rand = random_other_labels(forget[1], n_outputs(model, forget[0]), config.derive_seed(seed, 3))
    X = torch.cat([retain[0], forget[0]])
    y = torch.cat([retain[1].cpu(), y_rand])
    fit(model, X, y, seed=seed, mask=mask, desc=desc, **hp)
    return model


@register("random_label", aliases=("rl",), epochs=5, lr=0.02, augment=None)
def _random_label(model, retain, forget, *, valid, seed, mask, **hp):
    return relabel_and_finetune(model, retain, forget, seed=seed, mask=mask, **hp)


L1_SCHEDULES = ("constant", "growing", "decaying")


def l1_weight(gamma: float, schedule: str, epoch: int, epochs: int) -> float:
    """The l1 coefficient in ``epoch`` (0-based) of ``epochs`` (002, Sec. 5.1): ``constant``
    ``gamma``; linearly ``growing`` ``2 (t / T) gamma``; linearly ``decaying`` ``(2 - 2 t / T) gamma``.

    002 writes the ramps with "t the epoch index" without fixing where in the epoch ``t`` sits.
    With 0-based ``t`` the growing ramp applies no penalty in the first epoch and averages
    ``gamma (T - 1) / T``; with 1-based ``t`` the decaying one ends at 0 and averages ``gamma (T - 1) / T``.
    The course evaluates the ramp at the middle of the epoch, ``t = epoch + 1/2``, so both ramps
    average exactly ``gamma`` over the ``T`` epochs (a fair comparison with ``constant``) and
    every epoch has a penalty.
    """
    if schedule not in L1_SCHEDULES:
        raise ValueError(f"unknown l1 schedule {schedule!r}; choose one of {', '.join(L1_SCHEDULES)}")
    epochs = check_int(epochs, "epochs", 1)
    epoch = check_int(epoch, "epoch (0-based, below epochs)", 0, epochs - 1)
    if schedule == "constant":
        return gamma
    t = (epoch + 0.5) / epochs
    return gamma * (2 * t if schedule == "growing" else 2 - 2 * t)


@register("l1_sparse", aliases=("l1",), epochs=5, lr=0.02, gamma=5e-5, l1_schedule="decaying")
def _l1_sparse(model, retain, forget, *, valid, seed, gamma, l1_schedule, **hp):
    l1_weight(gamma, l1_schedule, 0, 1)  # validate the schedule name early
    gamma = check_number(gamma, "gamma", 0.0)
    dev = model_device(model)
    Xr, yr = retain[0].to(dev), retain[1].to(dev)
    spe = steps_per_epoch(Xr.shape[0], hp["batch_size"])
    step = {"n": 0}
    params = [p for p in model.parameters() if p.requires_grad]

    def loss(idx):
        epoch = step["n"] // spe
        step["n"] += 1
        idx = idx.to(dev)
        with autocast(dev):
            ce = F.cross_entropy(model(Xr[idx]).float(), yr[idx])
        l1 = sum(p.abs().sum() for p in params)
        return ce + l1_weight(gamma, l1_schedule, epoch, hp["epochs"]) * l1

    _sgd(model, Xr.shape[0], loss, seed=seed, desc="l1-sparse", **hp)
    return model




def neggrad_plus_population(stack, retain, forget, *, alpha: float = 0.95, epochs: int = 5, lr: float = 0.02,
                            batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 5e-4,
                            schedule: str = "constant", desc: str = "stacked neggrad+"):
    """NegGrad+ on every model of a population (:class:`course_lib.stacked.StackedModels`) at
    once, in place; returns the stack. Per step each model minimises
    ``alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)``, the forget batches cycling
    through the forget set in each model's own shuffled order (stream ``derive_seed(seed, 2)``), as
    the single-model ``neggrad+`` does."""
    from torch.func import vmap

    alpha = check_number(alpha, "alpha", 0.0, 1.0)
    dev = stack.device
    ce_retain = stack.ce_loss(*retain)
    Xf, yf = forget[0].to(dev), forget[1].to(dev)
    fgens = [torch.Generator().manual_seed(config.derive_seed(s, 2)) for s in stack.seeds]
    state = {"order": stack.orders(Xf.shape[0], fgens), "pos": 0}
    per_model = vmap(lambda p, xb, yb: F.cross_entropy(stack._forward(p, xb).float(), yb))

    def loss(params, rows):
        if state["pos"] >= Xf.shape[0]:
            state["order"], state["pos"] = stack.orders(Xf.shape[0], fgens), 0
        fidx = state["order"][:, state["pos"]:state["pos"] + batch_size].to(dev)
        state["pos"] += batch_size
        return alpha * ce_retain(params, rows) - (1 - alpha) * per_model(params, Xf[fidx], yf[fidx])

    return stack.train(loss, retain[0].shape[0], epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                       weight_decay=weight_decay, schedule=schedule, desc=desc)
