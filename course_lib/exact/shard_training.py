"""SISA's training (lesson 2): the data a fitted SISA trains on, its fixed settings, and two paths.

* :class:`ShardData`: the rows in id order with their places, plus one zero padding row;
* :class:`Setup`: what training needs from the estimator, fixed when it is fitted (the model's
  skeleton, the SGD settings, the run's :class:`~course_lib.config.Budget`, the checkpoint store);
  SISA passes it explicitly, so nothing here reads the estimator's private state;
* :func:`train_one`: one shard as an ordinary module (models with buffers, dropout, or
  ``vectorize=False``); random layers draw from a stream named by ``(seed, shard, slice)``;
* :func:`train_group`: a group of shards together on :mod:`course_lib.engine` (stacked
  parameters, fixed slots, padded plans); a shard starting at a later slice sits still until then.

**Vectorised training** (``vectorize=True``; the default on accelerators). Models without
buffers (MLP, SmallCNN) train ``group_size`` shards at a time on :mod:`course_lib.engine`
(stacked parameters, ``vmap``; the same engine trains LegoNet's adapters). To keep one shard's arithmetic independent of its group-mates, every
tensor has a fixed shape whatever the shards hold: mini-batches always have ``batch_size`` rows
(padding rows are zeros with loss weight 0), shard ``s`` always sits in slot ``s % group_size``
(we measured that the slot position alone changes the last bits of CPU batched matrix products),
empty slots hold zero dummies, and a shard with fewer steps than its group-mates is frozen
(parameters and momentum) on the steps it does not have. The tests check that a shard re-trained
alone is bitwise the same shard trained in the full group. The price: a request re-trains a whole
group. On the CPU shards therefore train one after the other by default, as ordinary modules
(always so for models with buffers, e.g. batch norm). Both paths are exact, but their bits differ
from each other (by float rounding), so compare like with like.

Both save a checkpoint (parameters, buffers, momentum) after every slice through the setup's
:class:`~course_lib.exact.checkpoints.CheckpointStore`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import config, engine
from ..device import exact_numerics
from .checkpoints import CheckpointStore, State, state_of

# Stream tags of config.derive_seed(seed, TAG, ...) used here (SISA's others: init 1, hash 3).
_ORDER, _NOISE = 2, 4


@dataclass
class ShardData:
    """The training rows in id order plus one zero row at the end (the padding row)."""

    X: torch.Tensor             # [n + 1, ...] on the device
    y: torch.Tensor             # [n + 1]
    ids: torch.Tensor           # [n] sorted, CPU
    shard: torch.Tensor         # [n]
    slice: torch.Tensor         # [n]
    members: list[torch.Tensor]  # per shard: positions of its rows, ascending (= by id)

    @property
    def pad(self) -> int:
        return int(self.ids.numel())

    @classmethod
    def build(cls, X, y, ids, shard, slc, n_shards: int, device: torch.device) -> "ShardData":
        """From rows already sorted by id and their places."""
        Xd = torch.cat([X.detach().cpu(), torch.zeros((1,) + tuple(X.shape[1:]), dtype=X.dtype)]).to(device)
        yd = torch.cat([y.cpu(), torch.zeros(1, dtype=torch.int64)]).to(device)
        return cls(Xd, yd, ids, shard, slc, [torch.nonzero(shard == s).flatten() for s in range(n_shards)])

    def without(self, pos: torch.Tensor) -> "ShardData":
        """The same data without the rows at positions ``pos``."""
        keep = torch.ones(self.ids.numel() + 1, dtype=torch.bool)
        keep[pos] = False
        rows, on = keep[:-1], keep.to(self.X.device)
        shard = self.shard[rows]
        return ShardData(self.X[on], self.y[on], self.ids[rows], shard, self.slice[rows],
                         [torch.nonzero(shard == s).flatten() for s in range(len(self.members))])


@dataclass(frozen=True)
class Setup:
    """What SISA's training needs, fixed at ``fit``: ``base`` (the model's skeleton on the meta
    device) and its parameter ``names``, the SGD settings, ``batch`` (rows per mini-batch after the
    ``budget``'s cap) and the checkpoint ``store``."""

    base: nn.Module
    names: list[str]
    device: torch.device
    seed: int
    n_slices: int
    epochs_per_slice: int
    batch: int
    lr: float
    schedule: str
    momentum: float
    weight_decay: float
    store: CheckpointStore
    budget: config.Budget

    def plan(self, data: ShardData, s: int, r: int) -> engine.Plan:
        """Shard ``s`` at slice ``r``: its rows with slice <= r, sorted by id, permuted per epoch
        (stream ``(seed, ORDER, s, r, epoch)``) and cut into even batches (:func:`engine.batch_plan`)."""
        pos = data.members[s]
        pos = pos[data.slice[pos] <= r]
        orders = []
        for e in range(self.epochs_per_slice if pos.numel() else 0):
            gen = torch.Generator().manual_seed(config.derive_seed(self.seed, _ORDER, s, r, e))
            orders.append(pos[torch.randperm(pos.numel(), generator=gen)])
        return engine.batch_plan(orders, self.batch, data.pad, self.lr, self.schedule, self.budget)


def train_shards(setup: Setup, data: ShardData, start: dict[int, int], resume: dict[int, State], *,
                 vectorized: bool, group_size: int) -> tuple[dict, int, int]:
    """(Re-)train shards ``s`` from slice ``start[s]`` on, from the states ``resume[s]``; returns the
    new checkpoints ``{(s, r): handle}``, the samples and the steps taken."""
    ckpts, samples, steps = {}, 0, 0
    with exact_numerics(setup.device):
        if vectorized:
            for group in engine.slot_groups(sorted(start), group_size):
                n, t = train_group(setup, data, group, start, resume, ckpts)
                samples, steps = samples + n, steps + t
        else:
            for s in sorted(start):
                n, t = train_one(setup, data, s, start[s], resume[s], ckpts)
                samples, steps = samples + n, steps + t
    return ckpts, samples, steps


def train_one(setup: Setup, data: ShardData, s: int, r0: int, state: State, ckpts: dict) -> tuple[int, int]:
    """Train shard ``s`` from slice ``r0`` on, as an ordinary module (models with buffers, or ``vectorize=False``)."""
    dev = setup.device
    model = copy.deepcopy(setup.base).to_empty(device=dev)
    model.load_state_dict({**state["params"], **state["buffers"]})
    model.train()
    bufs = {n: b.clone() for n, b in state["momentum"].items()}
    params = dict(model.named_parameters())
    samples = steps = 0
    fork_on = [dev.index or 0] if dev.type == "cuda" else []
    for r in range(r0, setup.n_slices):
        plan = setup.plan(data, s, r)
        # random layers (dropout) draw from a stream named by (seed, shard, slice), never the global one
        with torch.random.fork_rng(devices=fork_on):
            torch.manual_seed(config.derive_seed(setup.seed, _NOISE, s, r))
            def grads_of_step(t: int, P: dict) -> dict:
                keep = plan.weights[t] > 0
                idx, w = plan.rows[t][keep].to(dev), plan.weights[t][keep].to(dev)
                loss = (F.cross_entropy(model(data.X[idx]).float(), data.y[idx], reduction="none") * w).sum()
                return dict(zip(P, torch.autograd.grad(loss, list(P.values()))))

            engine.run_steps(params, bufs, plan.lrs.tolist(), grads_of_step, momentum=setup.momentum,
                             weight_decay=setup.weight_decay, inplace=True)
        samples, steps = samples + plan.samples, steps + plan.steps
        ckpts[(s, r)] = setup.store.save(s, r, state_of(model, bufs))
    return samples, steps


def train_group(setup: Setup, data: ShardData, group: list[int | None], start: dict[int, int],
                resume: dict[int, State], ckpts: dict) -> tuple[int, int]:
    """Shards of one group together on the engine; slot ``i`` holds shard ``group[i]`` (None: a
    zero dummy). A shard that starts at a later slice sits still (inactive) until then."""
    real = [s for s in group if s is not None]
    names = setup.names
    zero = {n: torch.zeros_like(p) for n, p in resume[real[0]]["params"].items()}
    P = {n: torch.stack([resume[s]["params"][n] if s is not None else zero[n] for s in group]) for n in names}
    M = {n: torch.stack([resume[s]["momentum"][n] if s is not None else zero[n] for s in group]) for n in names}
    grads = engine.vmap_ce_grads(setup.base, data.X, data.y)
    samples = steps = 0
    for r in range(min(start[s] for s in real), setup.n_slices):
        plans = [setup.plan(data, s, r) if s is not None and r >= start[s] else engine.Plan.empty(setup.batch)
                 for s in group]
        P, M = engine.train_slots(P, M, plans, grads, pad=data.pad, momentum=setup.momentum,
                                  weight_decay=setup.weight_decay, device=setup.device)
        for i, s in enumerate(group):
            if s is not None and r >= start[s]:
                samples, steps = samples + plans[i].samples, steps + plans[i].steps
                ckpts[(s, r)] = setup.store.save(s, r, {
                    "params": {n: P[n][i].clone() for n in names}, "buffers": {},
                    "momentum": {n: M[n][i].clone() for n in names}})
    return samples, steps
