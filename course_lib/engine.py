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

and :func:`train_slots`, the loop that combines them. What is minimised is not built in: the
caller passes ``grads(params, rows, weights) -> {name: [G, ...]}`` (cross-entropy for SISA and
LegoNet, NegGrad+'s loss, DP-SGD's clipped and noised sums, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import config
from .validation import check_schedule

Params = dict[str, torch.Tensor]


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


def batch_plan(orders: Sequence[torch.Tensor], batch_size: int, pad: int, lr: float, schedule: str) -> Plan:
    """A plan from one permutation of the model's rows per epoch (``orders[e]``, positions into
    the data). Each epoch is cut into ``ceil(m / B)`` batches whose sizes differ by at most one
    (no 1-row tail batch, which batch norm could not train on); the learning rate follows
    ``schedule`` over the plan's own steps."""
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
    if config.smoke():  # a smoke run's step cap (config.smoke): the plan's first steps
        T = config.SMOKE_STEPS
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


def train_slots(P: Params, M: Params, plans: Sequence[Plan], grads: GradFn, *, pad: int, momentum: float,
                weight_decay: float, device: torch.device) -> tuple[Params, Params]:
    """Run a group's plans together: at step ``t`` every active slot ``s`` takes one SGD step on
    ``grads(P, rows[:, t], weights[:, t])``. Returns the new ``(P, M)``."""
    rows, wts, lrs, active = (t.to(device) for t in pad_plans(plans, pad))
    P, M = dict(P), dict(M)
    for t in range(rows.shape[1]):
        g = grads(P, rows[:, t], wts[:, t])
        sgd_update(P, M, g, lrs[:, t], momentum, weight_decay, active[:, t])
    return P, M


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
