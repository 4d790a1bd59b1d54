"""SISA's two training paths (lesson 2), given the estimator's settings and a shard's plan.

* :func:`train_one`: one shard as an ordinary module (models with buffers, dropout, or
  ``vectorize=False``); random layers draw from a stream named by ``(seed, shard, slice)``.
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

Both save a checkpoint (parameters, buffers, momentum) after every slice through the estimator's
:class:`~course_lib.exact.checkpoints.CheckpointStore`.
"""
from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from .. import config, engine
from .checkpoints import State, state_of

_NOISE = 4   # stream tag of random layers: derive_seed(seed, _NOISE, shard, slice)


def train_one(est, data, s: int, r0: int, state: State, ckpts: dict) -> tuple[int, int]:
    """Train shard ``s`` of SISA ``est`` from slice ``r0`` on, as an ordinary module (models with buffers, or ``vectorize=False``)."""
    model = copy.deepcopy(est._base).to_empty(device=est.device)
    model.load_state_dict({**state["params"], **state["buffers"]})
    model.train()
    bufs = {n: b.clone() for n, b in state["momentum"].items()}
    params = dict(model.named_parameters())
    samples = steps = 0
    fork_on = [est.device.index or 0] if est.device.type == "cuda" else []
    for r in range(r0, est.n_slices):
        plan = est._plan(data, s, r)
        # random layers (dropout) draw from a stream named by (seed, shard, slice), never the global one
        with torch.random.fork_rng(devices=fork_on):
            torch.manual_seed(config.derive_seed(est.seed, _NOISE, s, r))
            for t in range(plan.steps):
                keep = plan.weights[t] > 0
                idx, w = plan.rows[t][keep].to(est.device), plan.weights[t][keep].to(est.device)
                loss = (F.cross_entropy(model(data.X[idx]).float(), data.y[idx], reduction="none") * w).sum()
                grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
                engine.sgd_update(params, bufs, grads, plan.lrs[t].item(), est.momentum, est.weight_decay,
                                  inplace=True)
        samples, steps = samples + plan.samples, steps + plan.steps
        ckpts[(s, r)] = est._store.save(s, r, state_of(model, bufs))
    return samples, steps

def train_group(est, data, group: list[int | None], start: dict[int, int], resume: dict[int, State],
            ckpts: dict) -> tuple[int, int]:
    """Shards of one group together on the engine; slot ``i`` holds shard ``group[i]`` (None: a
    zero dummy). A shard that starts at a later slice sits still (inactive) until then."""
    real = [s for s in group if s is not None]
    zero = {n: torch.zeros_like(p) for n, p in resume[real[0]]["params"].items()}
    P = {n: torch.stack([resume[s]["params"][n] if s is not None else zero[n] for s in group]) for n in est._names}
    M = {n: torch.stack([resume[s]["momentum"][n] if s is not None else zero[n] for s in group]) for n in est._names}
    grads = engine.vmap_ce_grads(est._base, data.X, data.y)
    samples = steps = 0
    for r in range(min(start[s] for s in real), est.n_slices):
        plans = [est._plan(data, s, r) if s is not None and r >= start[s] else engine.Plan.empty(est._batch)
                 for s in group]
        P, M = engine.train_slots(P, M, plans, grads, pad=data.pad, momentum=est.momentum,
                                  weight_decay=est.weight_decay, device=est.device)
        for i, s in enumerate(group):
            if s is not None and r >= start[s]:
                samples, steps = samples + plans[i].samples, steps + plans[i].steps
                ckpts[(s, r)] = est._store.save(s, r, {
                    "params": {n: P[n][i].clone() for n in est._names}, "buffers": {},
                    "momentum": {n: M[n][i].clone() for n in est._names}})
    return samples, steps
