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
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .train import Stopwatch, TrainLog, check_xy, model_device

ACCOUNTANTS = ("rdp", "prv", "gdp")


def _check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
    return accountant


def _check_delta(delta: float) -> float:
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    return float(delta)


def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str = "rdp") -> float:
    """The noise multiplier that makes ``steps`` DP-SGD steps at Poisson ``sample_rate`` cost
    ``target_epsilon`` at ``delta`` (opacus' ``get_noise_multiplier``)."""
    from opacus.accountants.utils import get_noise_multiplier

    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon!r}")
    if not 0.0 < sample_rate <= 1.0 or steps < 1:
        raise ValueError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate}, {steps}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # "optimal order is the largest alpha" and the like
        return float(get_noise_multiplier(target_epsilon=float(target_epsilon), target_delta=_check_delta(delta),
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
        return float(acc.get_epsilon(delta=_check_delta(delta)))


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
    if epochs < 1 or batch_size < 1 or lr < 0 or clip_norm <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr >= 0, clip_norm > 0; "
                         f"got {epochs}, {batch_size}, {lr}, {clip_norm}")
    if noise_multiplier is not None and noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    delta = _check_delta(delta)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("DP-SGD needs per-example gradients, which batch norm mixes: use a model "
                         "without batch norm (SmallCNN, MLP) or replace it by GroupNorm")
    work = copy.deepcopy(model)
    work.train()
    dev = model_device(work)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X.to(dev), y.to(dev)),
                                         batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.SGD(work.parameters(), lr=lr, momentum=momentum)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # opacus warns about its non-secure RNG and hooks
        engine = PrivacyEngine(accountant=_check_accountant(accountant))
        if target_epsilon is not None:
            if not target_epsilon > 0:
                raise ValueError(f"target_epsilon must be > 0, got {target_epsilon!r}")
            gsm, opt, dl = engine.make_private_with_epsilon(
                module=work, optimizer=opt, data_loader=loader, target_epsilon=float(target_epsilon),
                target_delta=delta, epochs=epochs, max_grad_norm=clip_norm, noise_generator=noise_gen)
        else:
            gsm, opt, dl = engine.make_private(
                module=work, optimizer=opt, data_loader=loader, noise_multiplier=float(noise_multiplier),
                max_grad_norm=clip_norm, noise_generator=noise_gen)
        loss_fn = nn.CrossEntropyLoss()
        log = TrainLog()
        with Stopwatch() as sw:
            for _ in range(epochs):
                total, count = 0.0, 0
                for xb, yb in dl:
                    if xb.shape[0] == 0:       # Poisson sampling can draw an empty batch
                        continue
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(gsm(xb), yb)
                    loss.backward()
                    opt.step()
                    total += float(loss) * xb.shape[0]
                    count += xb.shape[0]
                    log.steps += 1
                log.losses.append(total / max(count, 1))
        log.seconds = sw.seconds
        eps = float(engine.get_epsilon(delta)) if opt.noise_multiplier > 0 else float("inf")
    out = copy.deepcopy(model)
    out.load_state_dict({k: v.detach().clone() for k, v in work.state_dict().items()})
    out.eval()
    return DPResult(out, eps, delta, float(opt.noise_multiplier), float(dl.sample_rate), log.steps, sw.seconds, log)
