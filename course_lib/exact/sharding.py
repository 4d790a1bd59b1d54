"""Where SISA puts a row: shard and slice as a function of ``(seed, id)`` alone, and
distribution-aware sharding (source 001, "SISA Training", "Adaptive Unlearning").

A row's place must not depend on how many rows there are or which others exist, so that a
refit on the retained ids puts every remaining row where it was: that is what makes SISA's
unlearning *bitwise* equal to training from scratch without the removed rows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import config
from ..validation import check_ids, check_int

#: Stream tag of the hash key, ``config.derive_seed(seed, ASSIGN_STREAM)`` (shared with SISA's other streams).
ASSIGN_STREAM = 3
_ASSIGN = ASSIGN_STREAM


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised over uint64 (wrap-around arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_ids(ids: torch.Tensor, seed: int) -> np.ndarray:
    """A keyed 64-bit hash of every id, ``[n]`` uint64: a function of ``(seed, id)`` alone."""
    key = np.uint64(config.derive_seed(seed, _ASSIGN))
    x = ids.cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        return _splitmix64(key + (x + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))


def assign(ids, seed: int, n_shards: int, n_slices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shard and slice of every id: ``(shard [n], slice [n])`` int64.

    ``h = splitmix64(key + (id + 1) * 0x9E3779B97F4A7C15)`` with ``key = derive_seed(seed, 3)``;
    ``shard = h % n_shards`` and ``slice = (h // n_shards) % n_slices``. A row's place depends
    on ``(seed, id)`` only, not on how many rows there are or which others exist, so a refit on
    the retained ids puts every remaining row where it was.
    """
    check_int(n_shards, "n_shards", 1)
    check_int(n_slices, "n_slices", 1)
    h = _hash_ids(check_ids(ids, None), seed)
    shard = (h % np.uint64(n_shards)).astype(np.int64)
    slc = ((h // np.uint64(n_shards)) % np.uint64(n_slices)).astype(np.int64)
    return torch.from_numpy(shard), torch.from_numpy(slc)


def distribution_aware_shards(p, n_shards: int, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Distribution-aware sharding (source 001, "Adaptive Unlearning"): shard of every row ``[n]``.

    ``p [n]``: each row's (known or estimated) probability of a deletion request. Rows are
    sorted by decreasing ``p`` (ties by position) and fill shard 0, then 1, ... with ``sizes[s]``
    rows each (default: equal sizes, the first ``n % n_shards`` shards one row larger). The
    likely-deleted rows thus share a few shards, and the other shards seldom get a request:
    shards stay large (accuracy) while fewer shards are hit (cost). Pass the result as
    ``SISA(shard_of=table)`` with ``table[id] = shard``.
    """
    check_int(n_shards, "n_shards", 1)
    p = torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p, dtype=torch.float64)
    if p.ndim != 1 or p.numel() < n_shards:
        raise ValueError(f"p must be 1-D with at least n_shards={n_shards} entries, got shape {tuple(p.shape)}")
    if not torch.all((p >= 0) & (p <= 1)):
        raise ValueError("p holds probabilities: every entry must lie in [0, 1]")
    n = p.numel()
    if sizes is None:
        sizes = [n // n_shards + (s < n % n_shards) for s in range(n_shards)]
    sizes = [int(v) for v in sizes]
    if len(sizes) != n_shards or sum(sizes) != n or min(sizes) < 1:
        raise ValueError(f"sizes must be {n_shards} positive counts summing to {n}, got {sizes}")
    order = torch.argsort(-p, stable=True)
    out = torch.empty(n, dtype=torch.int64)
    out[order] = torch.repeat_interleave(torch.arange(n_shards), torch.tensor(sizes))
    return out


def check_shard_of(shard_of):
    """SISA's ``shard_of``: None, a callable ``ids [n] -> shards [n]``, or a 1-D integer table
    (``table[id] = shard``), returned as an int64 tensor."""
    if shard_of is None or callable(shard_of):
        return shard_of
    table = torch.as_tensor(np.asarray(shard_of) if not isinstance(shard_of, torch.Tensor) else shard_of)
    if table.ndim != 1 or table.dtype.is_floating_point or table.dtype == torch.bool:
        raise ValueError("shard_of must be a callable or a 1-D integer table (table[id] = shard)")
    return table.long()


def place(ids: torch.Tensor, seed: int, n_shards: int, n_slices: int, shard_of=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shard and slice of every id: :func:`assign`'s hash, with the shard replaced by a fixed
    assignment ``shard_of`` (see :func:`check_shard_of`) when one is given. Slices always come
    from the hash."""
    shard, slc = assign(ids, seed, n_shards, n_slices)
    if shard_of is None:
        return shard, slc
    if isinstance(shard_of, torch.Tensor):
        if int(ids.max()) >= shard_of.numel():
            raise ValueError(f"shard_of has {shard_of.numel()} entries but ids go up to {int(ids.max())}")
        shard = shard_of[ids]
    else:
        shard = torch.as_tensor(shard_of(ids.clone()))
        if shard.shape != ids.shape or shard.dtype.is_floating_point:
            raise ValueError(f"shard_of(ids) must return one integer shard per id, got {tuple(shard.shape)}")
        shard = shard.long().cpu()
    bad = (shard < 0) | (shard >= n_shards)
    if bad.any():
        raise ValueError(f"shard_of gives shards outside [0, {n_shards}): {torch.unique(shard[bad])[:5].tolist()}")
    return shard, slc
