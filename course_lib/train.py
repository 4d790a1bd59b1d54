"""The training loop for one model: mini-batch SGD with momentum and a cosine schedule.

:func:`sgd_steps` is the one loop that trains a single model (:func:`fit` and every unlearning
method that minimises a loss closure run on it); many small models trained at once (populations,
SISA shards, LegoNet adapters, DP-SGD stacks) run on the other loop, :mod:`course_lib.engine`.

Determinism: batch order comes from a ``torch.Generator`` seeded with ``seed``; combined
with :func:`course_lib.models.seeded` for the initial weights, the same seed gives
bit-identical weights on the CPU.

Masked training: pass ``mask`` (``{parameter name: bool tensor}``, True = may change; see
:mod:`course_lib.params`) and the parameters outside the mask are restored after every step, so
momentum and weight decay cannot move "frozen" weights.

Numerics: on CUDA, :func:`fit` builds its batch loss and optimiser with :mod:`course_lib.fastpath`
(whole data set on the device, on-device crop + flip, bf16, channels-last, optional
``torch.compile``, fused SGD) and runs the same :func:`sgd_steps`; on the CPU it runs the plain
numerics. :func:`predict_logits` and :func:`features` evaluate likewise. A smoke run's caps come
from :func:`course_lib.config.budget` and are applied in :func:`sgd_steps` only.

``progress``, ``Stopwatch`` and ``TrainLog`` live in :mod:`course_lib.engine`; ``Mask``,
``snapshot``, ``restore_masked`` and ``model_device`` in :mod:`course_lib.params` (re-exported
here).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from . import config, fastpath
from .device import autocast
from .engine import Stopwatch, TrainLog, lr_factor, progress
from .params import Mask, eval_mode, model_device, restore_masked, snapshot
from .params import accuracy as _accuracy
from .validation import check_sgd, check_xy

__all__ = ["Stopwatch", "TrainLog", "progress", "Mask", "snapshot", "restore_masked", "model_device",
           "steps_per_epoch", "sgd_steps", "fit", "predict_logits", "features", "accuracy"]


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Mini-batches per epoch of :func:`sgd_steps` (a loss closure that tracks epochs needs it):
    ``ceil(n_rows / batch_size)``, the batch cut by the session's budget (:func:`course_lib.config.budget`)."""
    return -(-int(n_rows) // config.budget().cap_batch(batch_size))


def sgd_steps(model: nn.Module, n_rows: int, loss_of_batch: Callable[[torch.Tensor], torch.Tensor], *,
              epochs: int, batch_size: int, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
              seed: int = 0, schedule: str = "cosine", mask: Mask | None = None, desc: str = "train",
              optimizer: Callable[..., torch.optim.Optimizer] | None = None,
              batches: Iterable[torch.Tensor] | None = None,
              index_device: torch.device | str | None = None) -> TrainLog:
    """The one optimisation loop for a single model.

    Each epoch visits ``range(n_rows)`` in an order drawn from a generator seeded with
    ``seed``, in mini-batches of ``batch_size`` row indices (on ``index_device``, default the CPU:
    each epoch's order is moved there once); ``loss_of_batch(idx)`` returns the scalar loss of one
    batch. SGD with momentum and weight decay, learning rate constant or cosine-annealed to 0 over
    all steps. ``log.losses[e]``: the mean batch loss of epoch ``e``, weighted by batch rows.

    ``optimizer``: a factory ``make(params, lr=, momentum=, weight_decay=)`` (default
    ``torch.optim.SGD``; e.g. :func:`course_lib.fastpath.sgd_optimizer`, or one returning opacus'
    DPOptimizer). ``batches``: instead of the seeded permutation, a re-iterable sized collection
    of index tensors (``len`` batches per epoch; e.g. opacus' Poisson batches); an empty batch is
    skipped. The session's budget (:func:`course_lib.config.budget`) caps the batch size (seeded
    batches only) and the number of steps.
    """
    check_sgd(epochs, batch_size, lr, momentum, weight_decay, schedule)
    log = TrainLog()
    if epochs == 0 or n_rows == 0:
        return log
    budget = config.budget()
    batch_size = budget.cap_batch(batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (optimizer or torch.optim.SGD)(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    per_epoch = len(batches) if batches is not None else -(-int(n_rows) // batch_size)
    total = epochs * per_epoch
    stop = budget.cap_steps(total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, schedule))
    reference = snapshot(model) if mask is not None else None
    if mask is not None:
        dev = model_device(model)
        mask = {k: m.to(dev) for k, m in mask.items()}  # moved once, not at every step
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with Stopwatch() as sw:
        for _ in progress(range(epochs), desc=desc, total=epochs):
            epoch = _seeded_batches(n_rows, batch_size, gen, index_device) if batches is None else batches
            running, rows = torch.zeros(()), 0  # the loss follows its device: one host sync per epoch
            for idx in epoch:
                if log.steps == stop:
                    break
                if idx.numel() == 0:
                    continue
                loss = loss_of_batch(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if mask is not None:
                    restore_masked(model, mask, reference)
                contribution = loss.detach().float() * idx.numel()
                running = running.to(contribution.device)
                running += contribution
                rows += idx.numel()
                log.steps += 1
            log.losses.append(float(running) / max(rows, 1))
            if log.steps == stop:
                break
    log.seconds = sw.seconds
    return log


def _seeded_batches(n_rows: int, batch_size: int, gen: torch.Generator, device) -> Iterable[torch.Tensor]:
    """One epoch of :func:`sgd_steps`: a permutation drawn from ``gen`` (on the CPU), moved to
    ``device`` once, cut into batches of ``batch_size``."""
    order = torch.randperm(n_rows, generator=gen)
    if device is not None:
        order = order.to(device, non_blocking=True)
    return (order[start:start + batch_size] for start in range(0, n_rows, batch_size))


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, lr: float = 0.05,
        batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0,
        schedule: str = "cosine", augment: Callable | None = None, mask: Mask | None = None,
        desc: str = "train", numerics: fastpath.FastOptions | None = None) -> TrainLog:
    """Train ``model`` in place with cross-entropy on ``X`` ``[N, ...]``, ``y`` ``[N]``.

    The data move to the model's device once. ``augment(xb, generator)`` may transform each
    batch (e.g. :func:`course_lib.data.random_crop_flip`). Returns a :class:`TrainLog`.

    ``numerics``: the fast path's options (:func:`course_lib.fastpath.resolve_options`), used on
    any device when given; ``None`` takes them on CUDA (unless ``COURSE_FASTPATH=0``) and the plain
    numerics elsewhere. Either way the loop is :func:`sgd_steps`, with the same batches and schedule.
    """
    check_xy(X, y, "training data")
    check_sgd(epochs, batch_size, lr, momentum, weight_decay, schedule)
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a callable augment(xb, generator) or None, got {type(augment).__name__}")
    dev = model_device(model)
    if numerics is None and fastpath.enabled(dev):
        numerics = fastpath.resolve_options(dev)
    if numerics is not None:
        loss_of_batch = fastpath.loss_closure(model, X, y, numerics, seed=seed, augment=augment)
        extra = dict(optimizer=fastpath.sgd_optimizer(dev), index_device=dev)
    else:
        loss_of_batch, extra = _plain_loss(model, X, y, seed=seed, augment=augment), {}
    return sgd_steps(model, X.shape[0], loss_of_batch, epochs=epochs, batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, seed=seed, schedule=schedule,
                     mask=mask, desc=desc, **extra)


def _plain_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, seed: int,
                augment: Callable | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plain numerics' cross-entropy of a batch of (CPU) row indices; ``augment`` draws from a
    CPU generator seeded with ``derive_seed(seed, 1)``."""
    dev = model_device(model)
    Xd, yd = X.to(dev), y.to(dev)
    aug_gen = torch.Generator().manual_seed(config.derive_seed(seed, 1))
    loss_fn = nn.CrossEntropyLoss()

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(dev)
        xb = Xd[idx]
        if augment is not None:
            xb = augment(xb, aug_gen)
        with autocast(dev):
            return loss_fn(model(xb).float(), yd[idx])

    return loss_of_batch


@torch.no_grad()
def _predict(model: nn.Module, X: torch.Tensor, batch_size: int, what: str) -> torch.Tensor:
    """``model(X)`` (``what="logits"``) or ``model.features(X)`` in batches, eval mode, float32 on the CPU."""
    dev = model_device(model)
    if fastpath.enabled(dev):
        return fastpath.predict_fast(model, X, batch_size, what=what)
    fn = model if what == "logits" else model.features
    outs = []
    with eval_mode(model):
        for start in range(0, X.shape[0], batch_size):
            with autocast(dev):
                outs.append(fn(X[start:start + batch_size].to(dev)).float().cpu())
    if not outs:
        raise ValueError("cannot predict on an empty input")
    return torch.cat(outs)


def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``[N, n_classes]`` (float32, on the CPU), in eval mode, in batches."""
    return _predict(model, X, batch_size, "logits")


def features(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Penultimate features ``[N, model.feature_dim]`` (float32, on the CPU), eval mode."""
    return _predict(model, X, batch_size, "features")


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent (0-100) of ``model`` on ``X``, ``y``: :func:`course_lib.params.accuracy`
    of its predicted classes. The session's budget may cap the rows evaluated (a smoke run predicts on
    the first ``eval_rows``: evaluating ResNet-18 on the CPU dominates a smoke run)."""
    check_xy(X, y, "evaluation data")
    n = config.budget().cap_eval_rows(len(y))
    return _accuracy(predict_logits(model, X[:n]).argmax(1), y[:n].cpu())
