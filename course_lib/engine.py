"""One engine for training many small models at once (populations for the ε audit, DP-SGD
stacks, SISA shards, LegoNet adapters).

The models share one architecture; their parameters are stacked along a leading *slot* axis
(``{name: [G, ...]}``) and every step runs once for all slots (``torch.func.vmap`` or
hand-written batched products). Five pieces, each written once:

* :func:`lr_factor` / :func:`lr_schedule`: the learning-rate schedule (cosine annealing to 0 over
  a run's steps, or constant), also used by :func:`course_lib.train.sgd_steps`;
* :func:`slot_groups`: which model sits in which slot; model ``j`` always sits in slot
  ``j % G`` (on a CPU the slot position alone was measured to change the last bits of batched
  matrix products, so a fixed slot keeps a model's arithmetic independent of its group-mates);
* :class:`Plan` / :func:`batch_plan`: one model's mini-batches as rows of fixed width ``B``,
  padded with a padding row of loss weight 0, and its learning rate per step;
* :func:`pad_plans`: a group's plans as ``[G, T, B]`` tensors plus the ``[G, T]`` *active* mask
  (a model with fewer steps than its group-mates sits still on the steps it does not have);
* :func:`sgd_update`: SGD with momentum and weight decay (PyTorch's formula
  ``buf = momentum * buf + grad + wd * w; w -= lr * buf``) for all slots, optionally only where
  a slot is active (its parameters *and* its momentum then stay bitwise unchanged);

and :func:`run_steps`, the step loop of every stack (``grads_of_step(t, P)``, then one
:func:`sgd_update`), which :func:`train_slots` (a group's plans) and
:meth:`course_lib.stacked.StackedModels.run` (populations, DP-SGD stacks) both run on. What is
minimised is not built in: the caller passes ``grads(params, rows, weights) -> {name: [G, ...]}``
(cross-entropy for SISA and LegoNet, NegGrad+'s loss, DP-SGD's clipped and noised sums, ...).

The run's work is capped only by the session's :func:`course_lib.config.budget` (a smoke run's
step cap applies in :func:`batch_plan`; :attr:`Plan.steps` and :attr:`Plan.samples` report what
is left), and the bookkeeping every training loop shares lives here too: :func:`progress` (the
progress bar), :class:`Stopwatch` and :class:`TrainLog` (the single-model loop,
:func:`course_lib.train.sgd_steps`, is the other loop of the course).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import config
from .params import Params
from .validation import check_schedule


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
    """What a training loop did: mean loss per epoch, steps taken, wall-clock seconds."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def lr_factor(step: int, total: int, schedule: str) -> float:
    """The learning-rate multiplier at ``step`` of ``total``: ``(1 + cos(pi step / total)) / 2``
    (cosine, from 1 down towards 0) or 1 (constant)."""
    if schedule == "constant":
        return 1.0
    check_schedule(schedule)
    return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def lr_schedule(lr: float, steps: int, schedule: str) -> torch.Tensor:
    """The learning rate of every step of a run of ``steps`` steps, ``[steps]`` float32."""
    check_schedule(schedule)
    t = np.arange(steps, dtype=np.float64)
    f = 0.5 * (1 + np.cos(np.pi * t / max(steps, 1))) if schedule == "cosine" else np.ones(steps)
    return torch.from_numpy(lr * f).float()


def slot_groups(items: Sequence[int], G: int) -> list[list[int | None]]:
    """Groups of ``G`` slots holding ``items`` (non-negative ints); item ``j`` always sits in slot
    ``j % G``; free slots are None."""
    by_slot: dict[int, list[int]] = {}
    for j in sorted(items):
        by_slot.setdefault(j % G, []).append(j)
    depth = max((len(v) for v in by_slot.values()), default=0)
    return [[by_slot[i][c] if c < len(by_slot.get(i, [])) else None for i in range(G)] for c in range(depth)]


@dataclass
class Plan:
    """One model's training run: ``rows [T, B]`` (positions into the data; padding points at the
    padding row), ``weights [T, B]`` (1 / real rows in the batch, 0 for padding), ``lrs [T]``, and
    ``samples`` (real rows summed over the steps: example-gradient evaluations)."""

    rows: torch.Tensor
    weights: torch.Tensor
    lrs: torch.Tensor
    samples: int

    @property
    def steps(self) -> int:
        return int(self.rows.shape[0])

    @staticmethod
    def empty(batch_size: int) -> "Plan":
        return Plan(torch.empty(0, batch_size, dtype=torch.long), torch.empty(0, batch_size), torch.empty(0), 0)


def batch_plan(orders: Sequence[torch.Tensor], batch_size: int, pad: int, lr: float, schedule: str,
               budget: config.Budget | None = None) -> Plan:
    """A plan from one permutation of the model's rows per epoch (``orders[e]``, positions into
    the data). Each epoch is cut into ``ceil(m / B)`` batches whose sizes differ by at most one
    (no 1-row tail batch, which batch norm could not train on); the learning rate follows
    ``schedule`` over the plan's own steps. Under a step cap (``budget``, default the session's
    :func:`course_lib.config.budget`; an estimator passes the one it fixed at ``fit``) the plan keeps
    its first steps, and ``samples`` counts the real rows of those."""
    B, E = batch_size, len(orders)
    m = int(orders[0].numel()) if E else 0
    if m == 0 or E == 0:
        return Plan.empty(B)
    spe = -(-m // B)
    fill = m // spe + (torch.arange(spe) < m % spe)                               # rows per batch
    valid = (torch.arange(B)[None, :] < fill[:, None]).repeat(E, 1)               # [E * spe, B]
    rows = torch.full((E * spe, B), pad, dtype=torch.long)
    rows[valid] = torch.cat([o.long().cpu() for o in orders])
    weights = valid.float() / valid.sum(1, keepdim=True).float()
    lrs = lr_schedule(lr, rows.shape[0], schedule)
    T = (config.budget() if budget is None else budget).cap_steps(rows.shape[0])  # the plan's first T steps
    if T < rows.shape[0]:
        return Plan(rows[:T], weights[:T], lrs[:T], int(valid[:T].sum()))
    return Plan(rows, weights, lrs, E * m)


def pad_plans(plans: Sequence[Plan], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A group's plans as ``rows [G, T, B]``, ``weights [G, T, B]``, ``lrs [G, T]`` and
    ``active [G, T]`` (bool), ``T`` the longest plan."""
    G, B = len(plans), plans[0].rows.shape[1]
    Ts = [p.steps for p in plans]
    T = max(Ts, default=0)
    rows = torch.full((G, T, B), pad, dtype=torch.long)
    wts = torch.zeros(G, T, B)
    lrs = torch.zeros(G, T)
    for i, (p, Ti) in enumerate(zip(plans, Ts)):
        if Ti:
            rows[i, :Ti], wts[i, :Ti], lrs[i, :Ti] = p.rows, p.weights, p.lrs
    active = torch.arange(T)[None, :] < torch.tensor(Ts)[:, None]
    return rows, wts, lrs, active


@torch.no_grad()
def sgd_update(P: Params, M: Params, grads: Params, lr, momentum: float, weight_decay: float,
               active: torch.Tensor | None = None, *, inplace: bool = False) -> None:
    """One SGD step for every slot, in the dicts ``P`` (parameters ``[G, ...]``) and ``M`` (momentum
    buffers, zeros before the first step). ``lr`` is a number or a ``[G]`` tensor; ``active [G]``
    (bool) leaves the inactive slots' parameters and momentum untouched. ``inplace=True`` updates
    the tensors themselves (e.g. a module's parameters, no slot axis, no ``active``) instead of
    replacing the dict entries; the arithmetic is the same."""
    if inplace:
        for n, p in P.items():
            g = grads[n] + p * weight_decay if weight_decay else grads[n]
            buf = M[n].mul_(momentum).add_(g) if momentum else M[n].copy_(g)
            p.sub_(lr * buf)
        return
    for n, p in P.items():
        shape = (p.shape[0],) + (1,) * (p.ndim - 1)
        g = grads[n] + p * weight_decay if weight_decay else grads[n]
        buf = M[n] * momentum + g if momentum else g
        step_lr = lr.view(shape) if isinstance(lr, torch.Tensor) else lr
        if active is None:
            M[n], P[n] = buf, p - step_lr * buf
        else:
            on = active.view(shape)
            M[n] = torch.where(on, buf, M[n])
            P[n] = torch.where(on, p - step_lr * buf, p)


GradFn = Callable[[Params, torch.Tensor, torch.Tensor], Params]


def run_steps(P: Params, M: Params, lrs, grads_of_step: Callable[[int, Params], Params], *, momentum: float,
              weight_decay: float, active: torch.Tensor | None = None, desc: str | None = None,
              inplace: bool = False) -> tuple[Params, Params]:
    """The step loop of every stack: for ``t`` in ``range(T)``, ``grads_of_step(t, P)`` gives the
    gradients ``{name: [G, ...]}`` at the current parameters and :func:`sgd_update` takes the step.

    ``lrs``: a ``[G, T]`` tensor (one rate per slot and step) or a sequence of ``T`` numbers (the
    same rate for every slot); ``active [G, T]`` (bool, optional) marks the steps each slot has.
    ``P`` and ``M`` are updated in place (their entries are replaced, step by step, so a closure
    that reads ``P`` always sees the current parameters) and returned. ``desc`` shows a progress bar.
    ``inplace=True`` updates the tensors themselves instead (one module's parameters, no slot axis,
    no ``active``): SISA's shards with buffers train this way, on the same loop.
    """
    if inplace and active is not None:
        raise ValueError("inplace=True updates one module's own tensors: it takes no active mask")
    per_slot = isinstance(lrs, torch.Tensor) and lrs.ndim == 2
    T = lrs.shape[1] if per_slot else len(lrs)
    steps = range(T) if desc is None else progress(range(T), desc=desc, total=T)
    for t in steps:
        g = grads_of_step(t, P)
        lr = lrs[:, t] if per_slot else float(lrs[t])
        sgd_update(P, M, g, lr, momentum, weight_decay, None if active is None else active[:, t], inplace=inplace)
    return P, M


def train_slots(P: Params, M: Params, plans: Sequence[Plan], grads: GradFn, *, pad: int, momentum: float,
                weight_decay: float, device: torch.device) -> tuple[Params, Params]:
    """Run a group's plans together on :func:`run_steps`: at step ``t`` every active slot ``s``
    takes one SGD step on ``grads(P, rows[:, t], weights[:, t])``. Returns the new ``(P, M)``
    (the dicts given are left alone)."""
    rows, wts, lrs, active = (t.to(device) for t in pad_plans(plans, pad))
    return run_steps(dict(P), dict(M), lrs, lambda t, Pt: grads(Pt, rows[:, t], wts[:, t]),
                     momentum=momentum, weight_decay=weight_decay, active=active)


def ce_grads(forward: Callable, P: Params, xb: torch.Tensor, yb: torch.Tensor, w: torch.Tensor) -> Params:
    """Per-slot gradient of ``sum_b w[s, b] * CE(forward(P)[s, b], yb[s, b])`` for inputs
    ``xb [G, B, ...]``: one forward over the slots and one backward of the summed loss (slots share
    no parameters, so each slot's gradient is exactly that of its own loss)."""
    from torch.nn import functional as F

    with torch.enable_grad():
        Pg = {n: p.detach().requires_grad_() for n, p in P.items()}
        out = forward(Pg, xb)                                                          # [G, B, C]
        loss = (F.cross_entropy(out.float().flatten(0, 1), yb.flatten(), reduction="none") * w.flatten()).sum()
        return dict(zip(Pg, torch.autograd.grad(loss, list(Pg.values()))))


def stacked_forward(base: torch.nn.Module) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """``forward(P, xb)``: slot ``s`` of the stacked parameters ``P`` applied to ``xb[s]``
    (``base`` gives the architecture; it may live on the meta device)."""
    from torch.func import functional_call, vmap

    return vmap(lambda p, x: functional_call(base, p, (x,)))


def vmap_ce_grads(base: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> GradFn:
    """The :data:`GradFn` of weighted cross-entropy for a stack of ``base``-shaped models whose
    slot ``s`` trains on rows ``X[rows[s]]``, ``y[rows[s]]``."""
    forward = stacked_forward(base)
    return lambda P, rows, w: ce_grads(forward, P, X[rows], y[rows], w)
