"""Train many small models at once: stacked parameters, ``torch.func.functional_call`` + ``vmap``.

An unlearning *definition* is a statement about the distribution of models over the
training randomness (initialisation, batch order), so checking it needs populations of
models: N retrained, N unlearned. :class:`StackedModels` holds N copies of one architecture
as tensors with a leading model axis ``[N, ...]`` and trains them together, one vectorised
step for all N. For MLPs this is several times faster than N separate trainings (measured on 2
CPU cores, digits, 5 epochs: 2.8x for 8 models, 5.1x for 32) and about 12x for DP-SGD against a
loop of opacus runs; for small CNNs on a CPU the vectorised convolutions are not faster than a
loop (``python benchmarks/bench_stacked.py --dp`` and ``--arch small_cnn`` measure them).

Model ``i`` is built under ``seeds[i]`` (:func:`course_lib.models.seeded`) and visits the
data in the order drawn from a generator seeded with ``seeds[i]``, exactly as
``train.fit(seeded(make, s), X, y, seed=s)`` would; its weights match that single training
up to float rounding (tested), and do not depend on which other models share the stack.

    originals = StackedModels(make, seeds=range(32)).fit(X, y, epochs=20)          # A(D)
    retrained = StackedModels(make, seeds=range(100, 132)).fit(X_r, y_r, epochs=20)  # A(D \\ D_f)
    finetuned = originals.copy(seeds=range(200, 232)).fit(X_r, y_r, epochs=5, lr=0.02)
    neggradp  = originals.copy(seeds=range(300, 332)).fit(X_r, y_r, forget=(X_f, y_f), alpha=0.95,
                                                          epochs=5, lr=0.02)
    logits = retrained.predict_logits(X_f)          # [32, n_forget, n_classes]

:meth:`StackedModels.fit_dp` trains the same stack with DP-SGD (per-example clipping,
Gaussian noise, Poisson sampling), so the ε-audit can be run on private models too; the
privacy spent comes from opacus' accountant (:func:`course_lib.dp.epsilon_spent`).

Models with buffers (batch norm) are refused: use :class:`~course_lib.models.MLP` or
:class:`~course_lib.models.SmallCNN`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap
from torch.nn import functional as F

from . import config
from .models import seeded
from .train import Stopwatch, TrainLog, check_xy, progress

Params = dict[str, torch.Tensor]


@dataclass
class PrivacyRecord:
    """What DP-SGD did, for the accountant. ``noise_multiplier``, ``sample_rate`` and ``clip_norm``
    are those of the first DP phase; ``history`` lists every phase as ``(noise, rate, steps)``."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    clip_norm: float
    history: list = field(default_factory=list)

    def epsilon(self, delta: float = 1e-5, accountant: str = "rdp") -> float:
        """ε spent at ``delta`` by every model of the stack (opacus' accountant)."""
        from .dp import epsilon_spent

        return epsilon_spent(self.history, delta=delta, accountant=accountant)


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(f"seeds must be integers, got {[s for s in seeds if not isinstance(s, (int, np.integer))][:5]}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed (one model per seed)")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {[s for s in seeds if s < 0][:5]}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct: two models with one seed would be identical copies")
    return seeds


class StackedModels:
    """``N`` models of one architecture, one per seed, trained together.

    ``make``: a no-argument callable building the model (e.g. ``lambda: MLP(64, 10)``);
    ``seeds``: one distinct non-negative integer per model; ``device``: where the stack lives
    (default CPU). ``params`` holds ``{name: [N, ...]}`` tensors.
    """

    def __init__(self, make: Callable[[], nn.Module], seeds: Sequence[int], device: str | torch.device = "cpu"):
        self.seeds = _check_seeds(seeds)
        self.device = torch.device(device)
        modules = [seeded(make, s) for s in self.seeds]
        if any(True for _ in modules[0].buffers()):
            raise ValueError("the model has buffers (batch norm?): stacked training supports models "
                             "without buffers, e.g. MLP or SmallCNN")
        params, _ = stack_module_state(modules)
        self.params: Params = {k: v.detach().to(self.device) for k, v in params.items()}
        self._base = copy.deepcopy(modules[0]).to("meta")
        self.privacy: PrivacyRecord | None = None

    @classmethod
    def from_module(cls, model: nn.Module, seeds: Sequence[int], device: str | torch.device = "cpu") -> "StackedModels":
        """``len(seeds)`` identical copies of ``model``: the seeds only set the batch order of
        later training (e.g. N unlearning runs from one original model, or to isolate the
        randomness of the data order from that of the initialisation)."""
        seeds = _check_seeds(seeds)
        return cls(lambda: copy.deepcopy(model), seeds, device)

    # ----------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self.seeds)

    def __repr__(self) -> str:
        n = sum(v[0].numel() for v in self.params.values())
        return f"StackedModels({len(self)} x {type(self._base).__name__}, {n} parameters each)"

    def copy(self, seeds: Sequence[int] | None = None) -> "StackedModels":
        """A copy with the same weights (e.g. to fine-tune the originals); ``seeds`` (same count)
        set the batch order of later training, default the current ones."""
        new = object.__new__(StackedModels)
        new.seeds = _check_seeds(self.seeds if seeds is None else seeds)
        if len(new.seeds) != len(self):
            raise ValueError(f"copy needs {len(self)} seeds (one per model), got {len(new.seeds)}")
        new.device = self.device
        new.params = {k: v.clone() for k, v in self.params.items()}
        new._base = self._base
        new.privacy = copy.deepcopy(self.privacy)
        return new

    def subset(self, idx: Sequence[int]) -> "StackedModels":
        """The models at positions ``idx`` as a new stack."""
        idx = [int(i) for i in idx]
        if not idx or min(idx) < -len(self) or max(idx) >= len(self):
            raise ValueError(f"positions must lie in [0, {len(self)}), got {idx[:5]}")
        new = self.copy()
        new.seeds = _check_seeds([self.seeds[i] for i in idx])
        new.params = {k: v[idx].clone() for k, v in self.params.items()}
        return new

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as an ordinary ``nn.Module`` (a copy), e.g. for :func:`course_lib.metrics.evaluate`."""
        if not -len(self) <= i < len(self):
            raise ValueError(f"model index {i} out of range for {len(self)} models")
        m = copy.deepcopy(self._base).to_empty(device=self.device)
        m.load_state_dict({k: v[i].clone() for k, v in self.params.items()})
        return m

    def _forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._base, params, (x,))

    @torch.no_grad()
    def predict_logits(self, X: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """Logits ``[N, n, n_classes]`` (float32, CPU) of every model on ``X`` ``[n, ...]``."""
        if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty tensor [n, ...], got {getattr(X, 'shape', type(X))}")
        f = vmap(self._forward, in_dims=(0, None))
        outs = [f(self.params, X[s:s + batch_size].to(self.device)).float().cpu()
                for s in range(0, X.shape[0], batch_size)]
        return torch.cat(outs, dim=1)

    def accuracy(self, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Top-1 accuracy (%) of every model: ``[N]``."""
        check_xy(X, y, "evaluation data")
        pred = self.predict_logits(X).argmax(-1)
        return 100.0 * (pred == y.cpu()[None]).double().mean(1).numpy()

    # ----------------------------------------------------------------------- training
    def _orders(self, n_rows: int, gens: list[torch.Generator]) -> torch.Tensor:
        return torch.stack([torch.randperm(n_rows, generator=g) for g in gens])      # [N, n_rows]

    def _sgd_step(self, grads: Params, bufs: Params, lr: float, momentum: float, weight_decay: float) -> None:
        # torch.optim.SGD semantics: g += wd * p; buf = momentum * buf + g (buf = g at first step); p -= lr * buf
        with torch.no_grad():
            for k, p in self.params.items():
                g = grads[k] + weight_decay * p if weight_decay else grads[k]
                if momentum:
                    if k in bufs:
                        bufs[k].mul_(momentum).add_(g)
                    else:
                        bufs[k] = g.clone()
                    g = bufs[k]
                p.sub_(lr * g)

    @staticmethod
    def _check_hp(epochs: int, batch_size: int, lr: float, schedule: str) -> None:
        if epochs < 0 or batch_size < 1 or lr < 0:
            raise ValueError(f"need epochs >= 0, batch_size >= 1, lr >= 0; got {epochs}, {batch_size}, {lr}")
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")

    @staticmethod
    def _lr_at(step: int, total: int, lr: float, schedule: str) -> float:
        return lr if schedule == "constant" else lr * (1 + math.cos(math.pi * step / total)) / 2

    def fit(self, X: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, lr: float = 0.05, batch_size: int = 64,
            momentum: float = 0.9, weight_decay: float = 5e-4, schedule: str = "cosine",
            forget: tuple[torch.Tensor, torch.Tensor] | None = None, alpha: float = 1.0,
            desc: str = "stacked") -> "StackedModels":
        """Train all models in place with mini-batch SGD on ``X`` ``[n, ...]``, ``y`` ``[n]``; returns self.

        Same optimiser as :func:`course_lib.train.fit` (momentum, weight decay, cosine or
        constant learning rate per step). With ``forget=(X_f, y_f)`` every step minimises
        NegGrad+'s ``alpha * CE(retain batch) - (1 - alpha) * CE(forget batch)``, the forget
        batches cycling through the forget set in each model's own shuffled order (as
        :mod:`course_lib.unlearn` does). ``self.log`` gets the mean loss per epoch over models.
        """
        check_xy(X, y, "training data")
        self._check_hp(epochs, batch_size, lr, schedule)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if forget is not None:
            check_xy(*forget, "forget set")
        n, dev = X.shape[0], self.device
        Xd, yd = X.to(dev), y.to(dev)
        gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        if forget is not None:
            Xf, yf = forget[0].to(dev), forget[1].to(dev)
            fgens = [torch.Generator().manual_seed(config.derive_seed(s, 2)) for s in self.seeds]
            fstate = {"order": self._orders(Xf.shape[0], fgens), "pos": 0}

        def forget_batch() -> torch.Tensor:
            if fstate["pos"] >= Xf.shape[0]:
                fstate["order"], fstate["pos"] = self._orders(Xf.shape[0], fgens), 0
            idx = fstate["order"][:, fstate["pos"]:fstate["pos"] + batch_size]
            fstate["pos"] += batch_size
            return idx.to(dev)

        def ce(params: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(self._forward(params, xb).float(), yb)

        per_model_ce = vmap(ce)
        steps_per_epoch = -(-n // batch_size)
        total, step, bufs = epochs * steps_per_epoch, 0, {}
        self.log = TrainLog()
        for k in self.params:
            self.params[k].requires_grad_(True)
        with Stopwatch() as sw:
            for _ in progress(range(epochs), desc=desc, total=epochs):
                order = self._orders(n, gens).to(dev)
                running = 0.0
                for start in range(0, n, batch_size):
                    idx = order[:, start:start + batch_size]                          # [N, B]
                    loss = per_model_ce(self.params, Xd[idx], yd[idx])               # [N]
                    if forget is not None:
                        fidx = forget_batch()
                        loss = alpha * loss - (1 - alpha) * per_model_ce(self.params, Xf[fidx], yf[fidx])
                    grads = torch.autograd.grad(loss.sum(), list(self.params.values()))
                    self._sgd_step(dict(zip(self.params, grads)), bufs, self._lr_at(step, total, lr, schedule),
                                   momentum, weight_decay)
                    step += 1
                    running = running + loss.detach().mean() * idx.shape[1]     # no GPU sync per step
                self.log.losses.append(float(running) / n)
        for k in self.params:
            self.params[k].requires_grad_(False)
        self.log.steps, self.log.seconds = step, sw.seconds
        return self

    def fit_dp(self, X: torch.Tensor, y: torch.Tensor, *, noise_multiplier: float, clip_norm: float = 1.0,
               epochs: int = 10, lr: float = 0.1, batch_size: int = 64, momentum: float = 0.9,
               weight_decay: float = 0.0, schedule: str = "constant", desc: str = "stacked DP-SGD") -> "StackedModels":
        """Train all models in place with DP-SGD; returns self.

        Per step, each model draws its own Poisson batch (every row independently with
        probability ``q = 1 / ceil(n / batch_size)``, as opacus' ``DPDataLoader``), clips each
        example's gradient to norm ``clip_norm``, sums, adds ``N(0, (noise_multiplier *
        clip_norm)^2)`` noise per coordinate and divides by the expected batch size ``q n``.
        ``self.privacy`` records the steps for the accountant: ``self.privacy.epsilon(delta)``.
        ``self.log.losses`` holds the mean per-example gradient norm (before clipping) per epoch.

        MLPs take a fast path (per-example gradient norms from layer inputs and output
        gradients, never stored); other models use ``vmap(vmap(grad))``, which stores every
        example's gradient and is much slower.
        """
        check_xy(X, y, "training data")
        self._check_hp(epochs, batch_size, lr, schedule)
        if not (noise_multiplier >= 0 and clip_norm > 0):
            raise ValueError(f"need noise_multiplier >= 0 and clip_norm > 0, got {noise_multiplier}, {clip_norm}")
        N, n, dev = len(self), X.shape[0], self.device
        Xd, yd = X.to(dev), y.to(dev)
        steps_per_epoch = -(-n // batch_size)
        q = 1.0 / steps_per_epoch
        gens = [torch.Generator().manual_seed(config.derive_seed(s, 3)) for s in self.seeds]

        clipped_sum = self._clipped_sum_linear if _linear_layers(self._base) else self._clipped_sum_vmap
        total, step, bufs = epochs * steps_per_epoch, 0, {}
        self.log = TrainLog()
        with Stopwatch() as sw:
            for _ in progress(range(epochs), desc=desc, total=epochs):
                running = 0.0
                for _ in range(steps_per_epoch):
                    counts = [int(torch.binomial(torch.tensor(float(n)), torch.tensor(q), generator=g)) for g in gens]
                    width = max(max(counts), 1)
                    idx = torch.zeros(N, width, dtype=torch.long)
                    mask = torch.zeros(N, width)
                    for i, (g, c) in enumerate(zip(gens, counts)):
                        idx[i, :c] = torch.randperm(n, generator=g)[:c]
                        mask[i, :c] = 1.0
                    idx, mask = idx.to(dev), mask.to(dev)
                    summed, norms = clipped_sum(Xd[idx], yd[idx], mask, clip_norm)
                    grads = {}
                    for k, p in self.params.items():
                        noise = torch.stack([torch.randn(p.shape[1:], generator=gg) for gg in gens]).to(dev)
                        grads[k] = (summed[k] + noise_multiplier * clip_norm * noise) / (q * n)
                    self._sgd_step(grads, bufs, self._lr_at(step, total, lr, schedule), momentum, weight_decay)
                    step += 1
                    running = running + (norms * mask).sum() / mask.sum().clamp(min=1)
                self.log.losses.append(float(running) / steps_per_epoch)   # mean per-example gradient norm
        self.log.steps, self.log.seconds = step, sw.seconds
        rec = self.privacy if self.privacy is not None else PrivacyRecord(noise_multiplier, q, 0, clip_norm)
        rec.history.append((float(noise_multiplier), q, step))
        rec.steps += step
        self.privacy = rec
        return self

    def _clipped_sum_vmap(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, clip_norm: float):
        """Generic path: per-example gradients ``[N, B, ...]`` by ``vmap(vmap(grad))``, clipped and summed."""

        def ce_one(params: Params, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(self._forward(params, x[None]).float(), t[None])

        g_ex = vmap(vmap(grad(ce_one), in_dims=(None, 0, 0)))(self.params, xb, yb)
        norms = torch.sqrt(sum(v.flatten(2).pow(2).sum(-1) for v in g_ex.values()))         # [N, B]
        scale = torch.clamp(clip_norm / (norms + 1e-6), max=1.0) * mask
        return {k: torch.einsum("nb,nb...->n...", scale, v) for k, v in g_ex.items()}, norms

    def _clipped_sum_linear(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, clip_norm: float):
        """Fast path for stacks of linear layers (MLP): an example's weight gradient is the outer
        product of its output gradient and its input, so its norm is ``|delta| * |a|`` and the
        per-example gradients never need to be stored (the "ghost norm" trick of DP libraries)."""
        layers = _linear_layers(self._base)
        with torch.enable_grad():
            a = xb.flatten(2)                                                                 # [N, B, in]
            inputs, pre = [], []
            for i, (w, b) in enumerate(layers):
                inputs.append(a)
                z = torch.baddbmm(self.params[b].unsqueeze(1), a, self.params[w].transpose(1, 2))
                if not z.requires_grad:          # first layer: a leaf to differentiate against
                    z.requires_grad_(True)
                pre.append(z)
                a = torch.relu(z) if i < len(layers) - 1 else z
            loss = F.cross_entropy(a.flatten(0, 1), yb.flatten(), reduction="sum")
            deltas = torch.autograd.grad(loss, pre)                                          # per-example
        inputs = [x.detach() for x in inputs]
        sq = sum(d.pow(2).sum(-1) * (x.pow(2).sum(-1) + 1.0) for d, x in zip(deltas, inputs))
        norms = torch.sqrt(sq)                                                                # [N, B]
        scale = (torch.clamp(clip_norm / (norms + 1e-6), max=1.0) * mask).unsqueeze(-1)
        out = {}
        for (w, b), d, x in zip(layers, deltas, inputs):
            out[w] = torch.einsum("nbo,nbi->noi", scale * d, x)
            out[b] = (scale * d).sum(1)
        return out, norms


def _linear_layers(base: nn.Module) -> list[tuple[str, str]] | None:
    """``[(weight name, bias name), ...]`` if ``base`` is an MLP of the course (Flatten, then
    Linear/ReLU pairs, then a Linear head), else None."""
    from .models import MLP

    if not isinstance(base, MLP):
        return None
    names = []
    for name, mod in base.named_modules():
        if isinstance(mod, nn.Linear):
            if mod.bias is None:
                return None
            names.append((f"{name}.weight", f"{name}.bias"))
        elif not isinstance(mod, (nn.Sequential, nn.Flatten, nn.ReLU, MLP)):
            return None
    return names
