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
    neggradp  = neggrad_plus_population(originals.copy(seeds=range(300, 332)), (X_r, y_r), (X_f, y_f),
                                        alpha=0.95, epochs=5, lr=0.02)      # course_lib.unlearn.baselines
    logits = retrained.predict_logits(X_f)          # [32, n_forget, n_classes]

The stack trains on :mod:`course_lib.engine`, the course's loop for stacks of models
(:func:`~course_lib.engine.run_steps`, its SGD step and schedule, capped by the session's
:func:`course_lib.config.budget`). What is minimised is not built in: :meth:`StackedModels.train` takes a loss closure ``loss(params, rows) -> [N]`` (one
loss per model), :meth:`StackedModels.fit` is cross-entropy, NegGrad+ passes its own loss
(:func:`course_lib.unlearn.baselines.neggrad_plus_population`), and DP-SGD its own clipped and
noised gradients through :meth:`StackedModels.run` (:func:`course_lib.dp.fit_stacked`).

Models with buffers (batch norm) are refused: use :class:`~course_lib.models.MLP` or
:class:`~course_lib.models.SmallCNN`.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from . import config, engine
from .engine import Stopwatch, TrainLog
from .models import seeded
from .params import Params
from .params import accuracy as _accuracy
from .validation import check_seeds, check_sgd, check_xy


class StackedModels:
    """``N`` models of one architecture, one per seed, trained together.

    ``make``: a no-argument callable building the model (e.g. ``lambda: MLP(64, 10)``);
    ``seeds``: one distinct non-negative integer per model; ``device``: where the stack lives
    (default CPU). ``params`` holds ``{name: [N, ...]}`` tensors.
    """

    def __init__(self, make: Callable[[], nn.Module], seeds: Sequence[int], device: str | torch.device = "cpu"):
        self.seeds = check_seeds(seeds)
        self.device = torch.device(device)
        modules = [seeded(make, s) for s in self.seeds]
        if any(True for _ in modules[0].buffers()):
            raise ValueError("the model has buffers (batch norm?): stacked training supports models "
                             "without buffers, e.g. MLP or SmallCNN")
        params, _ = stack_module_state(modules)
        self.params: Params = {k: v.detach().to(self.device) for k, v in params.items()}
        self._base = copy.deepcopy(modules[0]).to("meta")
        self.privacy = None          # a course_lib.dp.PrivacyRecord after DP-SGD

    @classmethod
    def from_module(cls, model: nn.Module, seeds: Sequence[int], device: str | torch.device = "cpu") -> "StackedModels":
        """``len(seeds)`` identical copies of ``model``: the seeds only set the batch order of
        later training (e.g. N unlearning runs from one original model, or to isolate the
        randomness of the data order from that of the initialisation)."""
        seeds = check_seeds(seeds)
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
        new.seeds = check_seeds(self.seeds if seeds is None else seeds)
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
        new.seeds = check_seeds([self.seeds[i] for i in idx])
        new.params = {k: v[idx].clone() for k, v in self.params.items()}
        return new

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as an ordinary ``nn.Module`` (a copy), e.g. for :func:`course_lib.metrics.evaluate`."""
        if not -len(self) <= i < len(self):
            raise ValueError(f"model index {i} out of range for {len(self)} models")
        m = copy.deepcopy(self._base).to_empty(device=self.device)
        m.load_state_dict({k: v[i].clone() for k, v in self.params.items()})
        return m

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """One model's logits from its parameters ``params`` (a dict of name -> tensor, e.g. one slice of
        :attr:`params`): the functional forward pass to ``vmap`` over the stack in a custom loss."""
        return functional_call(self._base, params, (x,))

    _forward = forward   # the name the library's own loops use

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
        return np.array([_accuracy(p, y.cpu()) for p in pred])      # the course's one accuracy, per model

    # ----------------------------------------------------------------------- training
    def orders(self, n_rows: int, gens: list[torch.Generator]) -> torch.Tensor:
        """One random permutation of ``range(n_rows)`` per model, ``[N, n_rows]``."""
        return torch.stack([torch.randperm(n_rows, generator=g) for g in gens])

    def run(self, grads_of_step: Callable[[Params], tuple[Params, torch.Tensor]], *, epochs: int,
            steps_per_epoch: int, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
            schedule: str = "cosine", desc: str = "stacked") -> "StackedModels":
        """Every training of the stack: ``epochs * steps_per_epoch`` SGD steps on the engine's loop
        (:func:`course_lib.engine.run_steps`, learning rate per :func:`course_lib.engine.lr_factor`),
        capped by the session's budget (:func:`course_lib.config.budget`).
        ``grads_of_step(params) -> (grads {name: [N, ...]}, value)`` computes one step's
        gradients; ``value`` (a scalar tensor) is averaged per epoch into ``self.log.losses``."""
        check_sgd(epochs, 1, lr, momentum, weight_decay, schedule)
        total = epochs * steps_per_epoch
        stop = config.budget().cap_steps(total)
        lrs = [lr * engine.lr_factor(t, total, schedule) for t in range(stop)]
        M = {k: torch.zeros_like(v) for k, v in self.params.items()}
        values = []

        def step(t: int, P: Params) -> Params:
            grads, value = grads_of_step(P)
            values.append(value.detach())          # summed per epoch afterwards: no GPU sync per step
            return grads

        self.log = TrainLog()
        with Stopwatch() as sw:
            engine.run_steps(self.params, M, lrs, step, momentum=momentum, weight_decay=weight_decay,
                             desc=desc if stop else None)
        self.log.losses = _epoch_means(values, epochs, steps_per_epoch)
        self.log.steps, self.log.seconds = stop, sw.seconds
        return self

    def train(self, loss: Callable[[Params, torch.Tensor], torch.Tensor], n_rows: int, *, epochs: int = 20,
              lr: float = 0.05, batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 5e-4,
              schedule: str = "cosine", desc: str = "stacked") -> "StackedModels":
        """Mini-batch SGD on a loss closure, as :func:`course_lib.train.sgd_steps` for one model:
        each epoch every model visits ``range(n_rows)`` in its own order (a generator seeded with
        its seed) in batches of ``batch_size``; ``loss(params, rows [N, B]) -> [N]`` (one loss per
        model, ``params`` the stacked parameters). ``self.log.losses``: mean loss per epoch."""
        check_sgd(epochs, batch_size, lr, momentum, weight_decay, schedule)
        batch_size = config.budget().cap_batch(batch_size)  # the session's batch cap, as train.sgd_steps
        gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        spe = -(-n_rows // batch_size)
        state = {"order": None, "t": spe}

        def step(params: Params):
            if state["t"] == spe:
                state["order"], state["t"] = self.orders(n_rows, gens).to(self.device), 0
            rows = state["order"][:, state["t"] * batch_size:(state["t"] + 1) * batch_size]
            state["t"] += 1
            with torch.enable_grad():
                P = {k: v.detach().requires_grad_() for k, v in params.items()}
                losses = loss(P, rows)
                grads = torch.autograd.grad(losses.sum(), list(P.values()))
            return dict(zip(P, grads)), losses.detach().mean() * rows.shape[1] * spe / n_rows

        return self.run(step, epochs=epochs, steps_per_epoch=spe, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, schedule=schedule, desc=desc)

    def ce_loss(self, X: torch.Tensor, y: torch.Tensor) -> Callable[[Params, torch.Tensor], torch.Tensor]:
        """The loss closure of cross-entropy on ``X``, ``y`` (moved to the stack's device once)."""
        check_xy(X, y, "training data")
        Xd, yd = X.to(self.device), y.to(self.device)
        per_model = vmap(lambda p, xb, yb: F.cross_entropy(self._forward(p, xb).float(), yb))
        return lambda params, rows: per_model(params, Xd[rows], yd[rows])

    def fit(self, X: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, lr: float = 0.05, batch_size: int = 64,
            momentum: float = 0.9, weight_decay: float = 5e-4, schedule: str = "cosine",
            desc: str = "stacked") -> "StackedModels":
        """Train all models in place with cross-entropy on ``X [n, ...]``, ``y [n]``; returns self.
        Same optimiser as :func:`course_lib.train.fit` (momentum, weight decay, cosine or
        constant learning rate per step)."""
        return self.train(self.ce_loss(X, y), X.shape[0], epochs=epochs, lr=lr, batch_size=batch_size,
                          momentum=momentum, weight_decay=weight_decay, schedule=schedule, desc=desc)


def _epoch_means(values: list[torch.Tensor], epochs: int, steps_per_epoch: int) -> list[float]:
    """The per-epoch means of :meth:`StackedModels.run`'s step values (each summed over the steps an
    epoch took, divided by ``steps_per_epoch``), for every epoch that took a step (at least one
    when ``epochs > 0``)."""
    spe = max(steps_per_epoch, 1)
    n = min(epochs, max(1, -(-len(values) // spe)))
    out = []
    for e in range(n):
        running = 0.0
        for v in values[e * spe:(e + 1) * spe]:
            running = running + v
        out.append(float(running) / spe)
    return out
