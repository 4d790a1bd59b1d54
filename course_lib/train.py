"""Training and evaluation loops: mini-batch SGD with momentum and a cosine schedule.

Determinism: batch order comes from a ``torch.Generator`` seeded with ``seed``; combined
with :func:`course_lib.models.seeded` for the initial weights, the same seed gives
bit-identical weights on the CPU.

Masked training: pass ``mask`` (``{parameter name: bool tensor}``, True = may change; see
:mod:`course_lib.masks`) and the parameters outside the mask are restored after every step, so
momentum and weight decay cannot move "frozen" weights. Many small models trained at once
(populations, SISA shards, LegoNet adapters) use :mod:`course_lib.engine` instead.

On CUDA, :func:`fit`, :func:`predict_logits` and :func:`features` take the fast path of
:mod:`course_lib.fastpath` (whole data set on the device, on-device crop + flip, bf16,
channels-last, optional ``torch.compile``); on the CPU they run the plain loop below.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from . import config, fastpath
from .device import autocast
from .engine import lr_factor
from .masks import Mask, restore_masked, snapshot
from .validation import check_sgd, check_xy


def progress(iterable: Iterable, desc: str = "", total: int | None = None, enabled: bool | None = None, **kw):
    """A ``tqdm.auto`` progress bar, quiet in CI and FAST mode, refreshed at most every 3 s
    (papermill copes badly with many small updates)."""
    from tqdm.auto import tqdm

    disable = not (config.show_progress() if enabled is None else enabled)
    return tqdm(iterable, desc=desc, total=total, disable=disable, mininterval=3.0, leave=False, **kw)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall clock, CUDA synchronised)."""

    def __enter__(self) -> "Stopwatch":
        _sync()
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        _sync()
        self.seconds = time.perf_counter() - self._t0


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class TrainLog:
    """What :func:`fit` did: mean loss per epoch, steps taken, wall-clock seconds."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Mini-batches per epoch of :func:`sgd_steps` (a loss closure that tracks epochs needs it):
    ``ceil(n_rows / batch_size)``, with the batch cut to ``config.SMOKE_BATCH`` in a smoke run."""
    return -(-int(n_rows) // config.smoke_cap(batch_size, config.SMOKE_BATCH))


def sgd_steps(model: nn.Module, n_rows: int, loss_of_batch: Callable[[torch.Tensor], torch.Tensor], *,
              epochs: int, batch_size: int, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
              seed: int = 0, schedule: str = "cosine", mask: Mask | None = None,
              desc: str = "train") -> TrainLog:
    """The one optimisation loop of the course.

    Each epoch visits ``range(n_rows)`` in an order drawn from a generator seeded with
    ``seed``, in mini-batches of ``batch_size`` row indices; ``loss_of_batch(idx)`` returns the
    scalar loss of one batch. SGD with momentum and weight decay, learning rate constant or
    cosine-annealed to 0 over all steps.
    """
    check_sgd(epochs, batch_size, lr, momentum, weight_decay, schedule)
    log = TrainLog()
    if epochs == 0 or n_rows == 0:
        return log
    batch_size = config.smoke_cap(batch_size, config.SMOKE_BATCH)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    total = epochs * steps_per_epoch(n_rows, batch_size)
    stop = config.smoke_cap(total, config.SMOKE_STEPS)  # a smoke run's step cap (config.smoke)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, schedule))
    reference = snapshot(model) if mask is not None else None
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with Stopwatch() as sw:
        for _ in progress(range(epochs), desc=desc, total=epochs):
            order = torch.randperm(n_rows, generator=gen)
            running = torch.zeros(())  # follows the loss to its device: one host sync per epoch
            for start in range(0, n_rows, batch_size):
                if log.steps == stop:
                    break
                idx = order[start:start + batch_size]
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
                log.steps += 1
            log.losses.append(float(running) / n_rows)
            if log.steps == stop:
                break
    log.seconds = sw.seconds
    return log


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, lr: float = 0.05,
        batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0,
        schedule: str = "cosine", augment: Callable | None = None, mask: Mask | None = None,
        desc: str = "train") -> TrainLog:
    """Train ``model`` in place with cross-entropy on ``X`` ``[N, ...]``, ``y`` ``[N]``.

    The data move to the model's device once. ``augment(xb, generator)`` may transform each
    batch (e.g. :func:`course_lib.data.random_crop_flip`). Returns a :class:`TrainLog`.
    On CUDA this is :func:`course_lib.fastpath.fit_fast` (same batches and schedule).
    """
    check_xy(X, y, "training data")
    dev = model_device(model)
    if fastpath.enabled(dev):
        return fastpath.fit_fast(model, X, y, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                                 weight_decay=weight_decay, seed=seed, schedule=schedule, augment=augment,
                                 mask=mask, desc=desc)
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

    return sgd_steps(model, X.shape[0], loss_of_batch, epochs=epochs, batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, seed=seed, schedule=schedule,
                     mask=mask, desc=desc)


@torch.no_grad()
def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``[N, n_classes]`` (float32, on the CPU), in eval mode, in batches."""
    dev = model_device(model)
    if fastpath.enabled(dev):
        return fastpath.predict_fast(model, X, batch_size, what="logits")
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, X.shape[0], batch_size):
        with autocast(dev):
            outs.append(model(X[start:start + batch_size].to(dev)).float().cpu())
    model.train(was_training)
    if not outs:
        raise ValueError("cannot predict on an empty input")
    return torch.cat(outs)


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent (0-100); in a smoke run on the first ``config.SMOKE_EVAL_ROWS`` rows
    (evaluating ResNet-18 on the CPU dominates a smoke run)."""
    check_xy(X, y, "evaluation data")
    n = config.smoke_cap(len(y), config.SMOKE_EVAL_ROWS)
    return 100.0 * (predict_logits(model, X[:n]).argmax(1) == y[:n].cpu()).double().mean().item()


@torch.no_grad()
def features(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Penultimate features ``[N, model.feature_dim]`` (float32, on the CPU), eval mode."""
    dev = model_device(model)
    if fastpath.enabled(dev):
        return fastpath.predict_fast(model, X, batch_size, what="features")
    was_training = model.training
    model.eval()
    out = torch.cat([model.features(X[s:s + batch_size].to(dev)).float().cpu()
                     for s in range(0, X.shape[0], batch_size)])
    model.train(was_training)
    return out
