"""LegoNet's keys, activation and adapter banks (lesson 3).

Keys by Monte-Carlo sampling of training encodings (source 000, Eq. 3), the ``k`` nearest keys
of an input (Eq. 1), and *banks*: ``n`` adapters stored as stacked parameters ``{name: [n, ...]}``
that train together on :mod:`course_lib.engine` (one slot per adapter).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.func import stack_module_state
from torch.nn import functional as F

from .. import engine, models
from ..device import exact_numerics
from ..params import Params



def sample_keys(E: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys by Monte-Carlo sampling (Eq. 3): ``K_j = E[r_j] + xi_j``.

    ``E [N, d]``: training encodings. ``n`` rows ``r`` are drawn uniformly without replacement;
    ``xi_j ~ N(0, (noise * s)^2 I)`` where ``s`` is the root-mean-square per-coordinate standard
    deviation of ``E`` (so ``noise`` is relative to the spread of the encodings; 0 = exact
    encodings). Returns ``(keys [n, d] float32, rows [n] int64)``.
    """
    N = E.shape[0]
    if not 1 <= n <= N:
        raise ValueError(f"cannot sample {n} keys from {N} training rows: need 1 <= n_adapters <= {N}")
    rows = torch.randperm(N, generator=generator)[:n]
    scale = E.double().var(dim=0, unbiased=False).mean().sqrt().float() if N > 1 else torch.tensor(1.0)
    xi = torch.randn(n, E.shape[1], generator=generator) * (float(noise) * scale)
    return E[rows].cpu().float() + xi, rows


def nearest_keys(E: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[N, k]`` of the ``k`` keys nearest to each encoding (nearest first).

    ``E [N, d]``, ``keys [n, d]``. Squared L2 distances in float64; ties go to the lower index.
    """
    if E.ndim != 2 or keys.ndim != 2 or E.shape[1] != keys.shape[1]:
        raise ValueError(f"need encodings [N, d] and keys [n, d] with the same d; got {tuple(E.shape)} "
                         f"and {tuple(keys.shape)}")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must be between 1 and the number of keys ({keys.shape[0]}), got {k}")
    Kd = keys.to(E.device, torch.float64)
    budget = 2**19 if E.device.type == "cpu" else 2**26     # CPU: keep the [chunk, n, d] difference in cache
    rows_per_chunk = max(1, budget // (keys.shape[0] * keys.shape[1]))
    out = []
    with exact_numerics(E.device):
        for start in range(0, E.shape[0], rows_per_chunk):
            e = E[start:start + rows_per_chunk].to(torch.float64)
            d2 = ((e[:, None, :] - Kd[None]) ** 2).sum(-1)  # [chunk, n]
            out.append(torch.sort(d2, dim=1, stable=True).indices[:, :k])
    return torch.cat(out)


class Bank:
    """Stacked adapters: parameters as ``{name: [S, ...]}`` with a leading slot axis."""

    def __init__(self, make: Callable[[], nn.Module]):
        self._make = make
        self.make = lambda: models.seeded(make, 0)  # never touches the global random stream
        self.base = self.make().to("meta")

    def init(self, seeds: list[int | None], device: torch.device) -> Params:
        """Parameters for slots; slot ``i`` is built under ``seeds[i]``, or zeros for a dummy (None)."""
        mods = [models.seeded(self._make, s) if s is not None else None for s in seeds]
        template = next((m for m in mods if m is not None), None)
        if template is None:
            raise ValueError("a chunk needs at least one real adapter")
        mods = [m if m is not None else _zeros_like(template) for m in mods]
        params, _ = stack_module_state(mods)
        return {n: p.detach().to(device) for n, p in params.items()}

    def grads(self, params: Params, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Params:
        """Per-slot gradient of ``sum_b w[s, b] * CE(M_s(X[s, b]), y[s, b])``; ``X [S, B, d]``."""
        return engine.ce_grads(self.logits, params, X, y, w)

    def logits(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        """Slot ``s`` applied to ``X[s]``: ``X [S, B, d]`` -> ``[S, B, C]``."""
        return engine.stacked_forward(self.base)(params, X)

    def activated_logits(self, params: Params, E: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Outputs ``[r, k, C]`` of the adapters ``act [r, k]`` on their rows ``E [r, d]``: the ``k``
        adapters' parameters are gathered per row and applied with one vmapped call."""
        r, k = act.shape
        pairs = {n: p[act.flatten()] for n, p in params.items()}
        return self.logits(pairs, E.repeat_interleave(k, 0)[:, None, :])[:, 0].view(r, k, -1)

    def chunk_rows(self, params: Params, k: int) -> int:
        """Rows per prediction chunk, so that the gathered parameters stay near 64 MB."""
        per_adapter = sum(p[0].numel() for p in params.values())
        return max(1, min(1024, 2**24 // (k * per_adapter)))


class LinearBank(Bank):
    """The default adapter, ``nn.Linear(d, C)``, with hand-written batched forward and gradient
    (two ``bmm`` per step instead of a ``vmap`` trace: several times faster on a CPU)."""

    def grads(self, params: Params, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Params:
        p = torch.softmax(self.logits(params, X), dim=-1)
        g = (p - F.one_hot(y, p.shape[-1]).to(p.dtype)) * w[..., None]       # dL/dlogits [S, B, C]
        return {"weight": torch.bmm(g.transpose(1, 2), X), "bias": g.sum(1)}

    def logits(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(params["bias"][:, None, :], X, params["weight"].transpose(1, 2))

    def activated_logits(self, params: Params, E: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """All ``n`` adapters in one matrix product, then the ``k`` activated ones picked: ``n / k``
        times the arithmetic of the source's count (:meth:`LegoNet.cost`), but one GEMM instead of
        gathering ``k`` weight matrices per row, which is several times faster on a CPU."""
        n, C, d = params["weight"].shape
        every = torch.addmm(params["bias"].reshape(-1), E, params["weight"].reshape(n * C, d).T).view(-1, n, C)
        return every.gather(1, act[:, :, None].expand(-1, -1, C))

    def chunk_rows(self, params: Params, k: int) -> int:
        n, C, _ = params["weight"].shape
        return max(1, min(4096, 2**22 // (n * C)))


def _zeros_like(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    return m


def members_of(act: torch.Tensor, ids: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``D_aj`` for every adapter from the activation table ``act [N, k]`` of rows with ``ids``."""
    k = act.shape[1]
    flat_adapter = act.flatten()
    flat_id = ids.repeat_interleave(k)
    order = torch.argsort(flat_adapter, stable=True)  # rows come sorted by id and stay so per adapter
    counts = torch.bincount(flat_adapter, minlength=n).tolist()
    return [m.clone() for m in torch.split(flat_id[order], counts)]
