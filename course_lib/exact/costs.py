"""Cost models of exact unlearning as pure functions: the estimators and the lectures call the
same formulas (SISA, lesson 2; LegoNet, lesson 3).

Costs are counted in deterministic units first: *samples* (example-gradient evaluations, i.e.
epochs x rows) and SGD *steps*; wall-clock seconds are measured separately.

Every training cost takes the run's :class:`course_lib.config.Budget` (default: the session's,
:func:`course_lib.config.budget`), the same object the training loops apply, so that in a capped
(smoke) run the predicted cost equals the work the estimators then do.
"""
from __future__ import annotations

import math

import torch

from .. import config


def retrain_cost(n_rows: int, epochs: int, batch_size: int, budget: config.Budget | None = None) -> dict[str, int]:
    """Training one model from scratch on ``n_rows`` rows, as :func:`course_lib.engine.batch_plan`
    plans it: ``B = budget.cap_batch(batch_size)`` rows per batch, ``ceil(n / B)`` batches per
    epoch whose sizes differ by at most one; uncapped ``samples = epochs * n`` and ``steps = epochs
    * ceil(n / B)``. Under a step cap the run keeps its first ``budget.cap_steps(steps)`` steps and
    ``samples`` counts the rows of those steps."""
    budget = config.budget() if budget is None else budget
    n, epochs = int(n_rows), int(epochs)
    if n == 0 or epochs == 0:
        return {"samples": 0, "steps": 0}
    per_epoch = -(-n // budget.cap_batch(batch_size))
    planned = epochs * per_epoch
    steps = budget.cap_steps(planned)
    if steps == planned:
        return {"samples": epochs * n, "steps": steps}
    full, rest = divmod(steps, per_epoch)          # whole epochs, then the first `rest` batches of the next
    small = n // per_epoch                         # batch sizes: small + 1 for the first n % per_epoch batches
    return {"samples": full * n + rest * small + min(rest, n % per_epoch), "steps": steps}


def sisa_request_cost(shard: torch.Tensor, slc: torch.Tensor, removed: torch.Tensor, *, n_slices: int,
                      epochs_per_slice: int, batch_size: int, budget: config.Budget | None = None) -> dict:
    """What one SISA request re-trains.

    ``shard``, ``slc`` ``[n]``: the place of every current row; ``removed [n]`` (bool): the rows
    the request deletes. Each shard that loses a row restarts at the earliest slice ``r0`` that
    lost one and re-trains slices ``r0 .. R-1``; slice ``r`` trains ``epochs_per_slice`` epochs on
    the shard's remaining rows of slices ``0..r`` (each slice one run of :func:`retrain_cost`
    under ``budget``). Returns ``{"shards", "from_slices", "samples",
    "steps", "rows"}`` (``rows``: the re-trained shards' remaining rows).
    """
    start: dict[int, int] = {}
    for s, r in zip(shard[removed].tolist(), slc[removed].tolist()):
        start[s] = min(r, start.get(s, r))
    start = dict(sorted(start.items()))
    samples = steps = rows = 0
    for s, r0 in start.items():
        mine = ~removed & (shard == s)
        rows += int(mine.sum())
        for r in range(r0, n_slices):
            c = retrain_cost(int((mine & (slc <= r)).sum()), epochs_per_slice, batch_size, budget)
            samples, steps = samples + c["samples"], steps + c["steps"]
    return {"shards": list(start), "from_slices": list(start.values()), "samples": samples, "steps": steps,
            "rows": rows}


def sisa_fit_cost(shard: torch.Tensor, slc: torch.Tensor, *, n_shards: int, n_slices: int, epochs_per_slice: int,
                  batch_size: int, budget: config.Budget | None = None) -> dict[str, int]:
    """Fitting SISA from scratch: every shard trains every slice ``r`` on its rows of slices
    ``0..r`` (:func:`retrain_cost` under ``budget`` per slice). Returns ``{"samples", "steps"}``."""
    samples = steps = 0
    for s in range(n_shards):
        mine = shard == s
        for r in range(n_slices):
            c = retrain_cost(int((mine & (slc <= r)).sum()), epochs_per_slice, batch_size, budget)
            samples, steps = samples + c["samples"], steps + c["steps"]
    return {"samples": samples, "steps": steps}


def sisa_expected_cost(shard: torch.Tensor, slc: torch.Tensor, p: torch.Tensor, *, n_shards: int,
                       n_slices: int, epochs_per_slice: int) -> float:
    """Expected samples re-trained when row ``i`` asks for deletion independently with
    probability ``p[i]`` and all requests are served in one request.

    With ``U_{s,r}`` the rows of slices ``0..r`` of shard ``s`` and ``K_{s,r}`` the requests among
    them, slice ``r`` is re-trained iff ``K_{s,r} >= 1``, on ``|U_{s,r}| - K_{s,r}`` rows; since
    ``K 1[K >= 1] = K`` the expectation is exactly
    ``E * sum_{s,r} ( |U_{s,r}| (1 - prod_{i in U_{s,r}} (1 - p_i)) - sum_{i in U_{s,r}} p_i )``
    (the number of requests per shard is Poisson-binomial; source 001, "Adaptive Unlearning").
    """
    p = p.double().cpu()
    log_keep = torch.log1p(-p.clamp(max=1.0))
    total = 0.0
    for s in range(n_shards):
        mine = shard == s
        for r in range(n_slices):
            u = mine & (slc <= r)
            n = int(u.sum())
            if n:
                total += n * (1 - math.exp(float(log_keep[u].sum()))) - float(p[u].sum())
    return epochs_per_slice * total


def sisa_uniform_request_cost(n: float, n_shards: int, n_slices: int, epochs_per_slice: float) -> float:
    """Expected samples of one request for a uniformly random row when every shard holds
    ``n / S`` rows spread evenly over ``R`` slices: the row sits in slice ``r`` (1-based) with
    probability ``1/R`` and slices ``r..R`` are re-trained on ``r' n / (S R)`` rows each, so
    ``e (n / S) (R + 1)(2R + 1) / (6R)`` (large-shard limit: the removed row itself is ignored)."""
    R = n_slices
    return epochs_per_slice * (n / n_shards) * (R + 1) * (2 * R + 1) / (6 * R)


def legonet_cost(*, n_adapters: int, k: int, d: int, n_classes: int, adapter_params: int, adapter_flops: int,
                 encoder_params: int = 0, encoder_flops: int = 0) -> dict[str, int]:
    """LegoNet's size and inference cost per input, counted analytically (source 000, Sec. 3).

    FLOPs = the encoder once + ``n`` squared distances (``3d`` each) + ``k`` adapter forwards +
    the mean of ``k`` outputs (``k C``). Parameters = encoder + ``n`` adapters + ``n`` keys of size
    ``d``; re-trained per request (one row) = ``k`` adapters.
    """
    activation = 3 * d * n_adapters
    adapters = k * adapter_flops + k * n_classes
    return {"encoder_params": encoder_params, "adapter_params": adapter_params,
            "total_params": encoder_params + n_adapters * (adapter_params + d),
            "retrained_params_per_request": k * adapter_params,
            "encoder_flops": encoder_flops, "activation_flops": activation, "adapter_flops": adapters,
            "total_flops": encoder_flops + activation + adapters}


def legonet_request_cost(set_sizes: list[int], *, epochs: int, batch_size: int,
                         budget: config.Budget | None = None) -> dict[str, int]:
    """Re-training the affected adapters, whose remaining sets ``D_aj`` have ``set_sizes`` rows:
    each trains ``epochs`` epochs on its own set (:func:`retrain_cost` under ``budget``); also the
    cost of a fit, with every adapter's set."""
    costs = [retrain_cost(m, epochs, batch_size, budget) for m in set_sizes]
    return {"samples": sum(c["samples"] for c in costs), "steps": sum(c["steps"] for c in costs),
            "rows": int(sum(set_sizes))}
