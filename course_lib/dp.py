"""Differential privacy with DP-SGD: a thin wrapper around opacus.

ε-differential privacy (source 001, "Relationship to DP") bounds, for every training set D
and every example z, the ratio ``Pr(A(D) in T) / Pr(A(D \\ z) in T)`` by ``e^ε``. That is
the ε-approximate unlearning inequality with the *do-nothing* unlearner ``U(D, z, A(D)) =
A(D)``: a DP model has already "unlearned" any single example, with no work at deletion
time, and the price is paid in accuracy at training time. (With δ > 0 the guarantee is
(ε, δ); deleting k examples at once costs more, by group privacy.)

DP-SGD clips every example's gradient to norm ``clip_norm``, adds Gaussian noise of standard
deviation ``noise_multiplier * clip_norm`` to the summed gradient, and samples each batch by
Poisson sampling; opacus' accountant turns (noise multiplier, sample rate, steps) into ε at
a chosen δ.

    res = train_dp(MLP(64, 10), X, y, target_epsilon=2.0, delta=1e-5, epochs=10)
    res.model, res.epsilon, res.noise_multiplier

:func:`train_dp` runs opacus' Poisson batches and DPOptimizer on the course's one loop for a
single model, :func:`course_lib.train.sgd_steps`. :func:`fit_stacked` trains a whole population
(:class:`course_lib.stacked.StackedModels`) with DP-SGD at once, on the stack's loop
(:meth:`~course_lib.stacked.StackedModels.run`, i.e. :func:`course_lib.engine.run_steps`), so the
ε audit of lesson 1 can be run on private models too.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import grad, vmap
from torch.nn import functional as F

from . import config
from .params import Params, model_device
from .train import TrainLog, sgd_steps
from .validation import check_delta, check_int, check_number, check_sgd, check_xy

ACCOUNTANTS = ("rdp", "prv", "gdp")


def _check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
    return accountant


def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str = "rdp") -> float:
    """The noise multiplier that makes ``steps`` DP-SGD steps at Poisson ``sample_rate`` cost
    ``target_epsilon`` at ``delta`` (opacus' ``get_noise_multiplier``)."""
    from opacus.accountants.utils import get_noise_multiplier

    check_number(target_epsilon, "target_epsilon", 0.0, lo_open=True)
    check_number(sample_rate, "sample_rate", 0.0, 1.0, lo_open=True)
    check_int(steps, "steps", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # "optimal order is the largest alpha" and the like
        return float(get_noise_multiplier(target_epsilon=float(target_epsilon), target_delta=check_delta(delta),
                                          sample_rate=float(sample_rate), steps=int(steps),
                                          accountant=_check_accountant(accountant)))


def epsilon_spent(history: list[tuple[float, float, int]], delta: float = 1e-5, accountant: str = "rdp") -> float:
    """ε at ``delta`` after the DP-SGD phases in ``history``: ``[(noise_multiplier, sample_rate, steps), ...]``."""
    from opacus.accountants import create_accountant

    if not history:
        raise ValueError("history is empty: no DP-SGD step was taken")
    acc = create_accountant(_check_accountant(accountant))
    acc.history = [(float(s), float(q), int(k)) for s, q, k in history]
    if any(s <= 0 for s, _, _ in acc.history):
        return float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=check_delta(delta)))


@dataclass
class DPResult:
    """A model trained with DP-SGD, the privacy it spent (ε at δ) and how."""

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    seconds: float
    log: TrainLog


def train_dp(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, target_epsilon: float | None = None,
             noise_multiplier: float | None = None, delta: float = 1e-5, epochs: int = 10, lr: float = 0.1,
             batch_size: int = 64, clip_norm: float = 1.0, momentum: float = 0.9, seed: int = 0,
             accountant: str = "rdp") -> DPResult:
    """Train a copy of ``model`` (no batch norm) with DP-SGD on ``X`` ``[n, ...]``, ``y`` ``[n]``.

    Give exactly one of ``target_epsilon`` (the noise is calibrated so that ``epochs`` epochs
    cost that ε at ``delta``) or ``noise_multiplier``. Poisson sampling with rate
    ``batch_size / n``; SGD with momentum (post-processing, no extra privacy cost). ``seed``
    fixes the batch sampling and the noise, so a run can be repeated; this is *not*
    cryptographically secure noise (opacus' ``secure_mode`` would be). Training runs on the
    device of ``model``; the original model is left untouched. Returns a :class:`DPResult`.
    """
    from opacus import PrivacyEngine

    check_xy(X, y, "training data")
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ValueError("give exactly one of target_epsilon or noise_multiplier")
    check_int(epochs, "epochs", 1)
    check_sgd(epochs, batch_size, lr, momentum, 0.0, "constant")
    check_number(clip_norm, "clip_norm", 0.0, lo_open=True)
    if noise_multiplier is not None:
        check_number(noise_multiplier, "noise_multiplier", 0.0)
    if target_epsilon is not None:
        check_number(target_epsilon, "target_epsilon", 0.0, lo_open=True)
    delta = check_delta(delta)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("DP-SGD needs per-example gradients, which batch norm mixes: use a model "
                         "without batch norm (SmallCNN, MLP) or replace it by GroupNorm")
    work = copy.deepcopy(model)
    work.train()
    dev = model_device(work)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    # a loader of row indices: opacus turns it into Poisson batches, train.sgd_steps runs them
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(X.shape[0])),
                                         batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.SGD(work.parameters(), lr=lr, momentum=momentum)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # opacus warns about its non-secure RNG and hooks
        engine = PrivacyEngine(accountant=_check_accountant(accountant))
        if target_epsilon is not None:
            gsm, opt, dl = engine.make_private_with_epsilon(
                module=work, optimizer=opt, data_loader=loader, target_epsilon=float(target_epsilon),
                target_delta=delta, epochs=epochs, max_grad_norm=clip_norm, noise_generator=noise_gen)
        else:
            gsm, opt, dl = engine.make_private(
                module=work, optimizer=opt, data_loader=loader, noise_multiplier=float(noise_multiplier),
                max_grad_norm=clip_norm, noise_generator=noise_gen)
        Xd, yd = X.to(dev), y.to(dev)
        loss_fn = nn.CrossEntropyLoss()

        def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
            idx = idx.to(dev)
            return loss_fn(gsm(Xd[idx]), yd[idx])

        # opacus built the DPOptimizer over work's parameters with this lr and momentum (no decay)
        log = sgd_steps(work, X.shape[0], loss_of_batch, epochs=epochs, batch_size=batch_size, lr=lr,
                        momentum=momentum, weight_decay=0.0, seed=seed, schedule="constant",
                        desc="DP-SGD", optimizer=lambda params, **hp: opt, batches=_IndexBatches(dl))
        eps = float(engine.get_epsilon(delta)) if opt.noise_multiplier > 0 else float("inf")
    out = copy.deepcopy(model)
    out.load_state_dict({k: v.detach().clone() for k, v in work.state_dict().items()})
    out.eval()
    return DPResult(out, eps, delta, float(opt.noise_multiplier), float(dl.sample_rate), log.steps, log.seconds, log)


class _IndexBatches:
    """opacus' Poisson batches of row indices as :func:`course_lib.train.sgd_steps` takes them:
    ``len`` batches per epoch, each an int64 index tensor (possibly empty)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield batch[0] if len(batch) else torch.empty(0, dtype=torch.long)


# ----------------------------------------------------------------------------- populations

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
        return epsilon_spent(self.history, delta=delta, accountant=accountant)


def fit_stacked(stack, X: torch.Tensor, y: torch.Tensor, *, noise_multiplier: float, clip_norm: float = 1.0,
                epochs: int = 10, lr: float = 0.1, batch_size: int = 64, momentum: float = 0.9,
                weight_decay: float = 0.0, schedule: str = "constant", desc: str = "stacked DP-SGD"):
    """Train every model of ``stack`` (a :class:`~course_lib.stacked.StackedModels`) in place
    with DP-SGD; returns the stack.

    Per step, each model draws its own Poisson batch (every row independently with
    probability ``q = 1 / ceil(n / batch_size)``, as opacus' ``DPDataLoader``), clips each
    example's gradient to norm ``clip_norm``, sums, adds ``N(0, (noise_multiplier *
    clip_norm)^2)`` noise per coordinate and divides by the expected batch size ``q n``.
    ``stack.privacy`` records the steps for the accountant: ``stack.privacy.epsilon(delta)``.
    ``stack.log.losses`` holds the mean per-example gradient norm (before clipping) per epoch.

    MLPs take a fast path (per-example gradient norms from layer inputs and output
    gradients, never stored); other models use ``vmap(vmap(grad))``, which stores every
    example's gradient and is much slower.
    """
    check_xy(X, y, "training data")
    check_sgd(epochs, batch_size, lr, momentum, weight_decay, schedule)
    check_number(noise_multiplier, "noise_multiplier", 0.0)
    check_number(clip_norm, "clip_norm", 0.0, lo_open=True)
    N, n, dev = len(stack), X.shape[0], stack.device
    Xd, yd = X.to(dev), y.to(dev)
    steps_per_epoch = -(-n // batch_size)
    q = 1.0 / steps_per_epoch
    gens = [torch.Generator().manual_seed(config.derive_seed(s, 3)) for s in stack.seeds]
    layers = _linear_layers(stack._base)
    clipped_sum = (lambda *a: _clipped_sum_linear(stack, layers, *a)) if layers else (lambda *a: _clipped_sum_vmap(stack, *a))

    def step(params):
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
        for k, p in params.items():
            noise = torch.stack([torch.randn(p.shape[1:], generator=gg) for gg in gens]).to(dev)
            grads[k] = (summed[k] + noise_multiplier * clip_norm * noise) / (q * n)
        return grads, (norms * mask).sum() / mask.sum().clamp(min=1)   # mean per-example gradient norm

    stack.run(step, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr, momentum=momentum,
              weight_decay=weight_decay, schedule=schedule, desc=desc)
    rec = stack.privacy if stack.privacy is not None else PrivacyRecord(noise_multiplier, q, 0, clip_norm)
    rec.history.append((float(noise_multiplier), q, stack.log.steps))
    rec.steps += stack.log.steps
    stack.privacy = rec
    return stack


def _clipped_sum_vmap(stack, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, clip_norm: float):
    """Generic path: per-example gradients ``[N, B, ...]`` by ``vmap(vmap(grad))``, clipped and summed."""

    def ce_one(params: Params, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(stack._forward(params, x[None]).float(), t[None])

    g_ex = vmap(vmap(grad(ce_one), in_dims=(None, 0, 0)))(stack.params, xb, yb)
    norms = torch.sqrt(sum(v.flatten(2).pow(2).sum(-1) for v in g_ex.values()))         # [N, B]
    scale = torch.clamp(clip_norm / (norms + 1e-6), max=1.0) * mask
    return {k: torch.einsum("nb,nb...->n...", scale, v) for k, v in g_ex.items()}, norms

def _clipped_sum_linear(stack, layers, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, clip_norm: float):
    """Fast path for stacks of linear layers (MLP): an example's weight gradient is the outer
    product of its output gradient and its input, so its norm is ``|delta| * |a|`` and the
    per-example gradients never need to be stored (the "ghost norm" trick of DP libraries)."""
    with torch.enable_grad():
        a = xb.flatten(2)                                                                 # [N, B, in]
        inputs, pre = [], []
        for i, (w, b) in enumerate(layers):
            inputs.append(a)
            z = torch.baddbmm(stack.params[b].unsqueeze(1), a, stack.params[w].transpose(1, 2))
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
