"""Second-order baselines (lessons 5, 6): Fisher forgetting (FF) and influence unlearning (IU).

Both are *one-shot* edits of the weights (no training loop): they accept the common
hyper-parameters (``epochs``, ``lr``, ...) like every method but ignore all of them except
``mask`` (entries outside the mask, and parameters missing from it, stay bitwise equal to the
model's; a pruned model stays pruned).

**Fisher forgetting** (``fisher``, alias ``ff``; 002 Sec. 2 "Fisher forgetting", after Golatkar
et al. 2020): add Gaussian noise whose variance is large where the retain set's Fisher
information is small, so what only the forget set needed is drowned while what the retain set
needs is kept. The source gives no formula beyond "zero mean, covariance from a root of the
Fisher information on D_r" (its numbers were lost in extraction), so the course follows the
public code of 002 (``unlearn/fisher.py``, ``fisher_new``) for the variance:

* Fisher diagonal ``F = mean_i sum_k p_k(x_i) (d log p_k(x_i) / d theta)^2`` (the *true* Fisher:
  labels drawn from the model's own prediction; :func:`course_lib.params.true_fisher_diagonal`), estimated as the public code does from gradients
  of 32-example batch means (``fisher_batch=32``, C backward passes per batch);
  ``fisher_batch=1`` gives the textbook per-example value (C backward passes per example).
* ``var = alpha * min(1 / (F + 1e-8), 1e3)`` (cap ``1e2`` for the classifier layer); for tensors
  of >= 2 dimensions the variance is averaged over dimension 1 (``row_mean=True``, as there); the
  classifier layer and every 1-D parameter (biases, norms) get 10x the variance, as there.
* Class-wise forgetting (``forget_classes``): the public code also sets the forgotten class's output
  rows to mean 0 and variance 1e-4 (then x10 as the classifier layer), Golatkar's head removal, which
  002 Sec. 5 notes changes the architecture. The course does the same when ``forget_classes`` is
  given (the tuned table passes it for class-wise forgetting; :data:`CLASS_ROW_VAR`). Without it FF
  never looks at which classes are forgotten, and noise alone leaves the class's output row working.

**Influence unlearning** (``influence``, alias ``iu``): 002 Prop. 1 with its weight
normalisation. Training is weighted ERM with weights ``1/N``; unlearning moves to weights
``w_i = 1/(N - N_f)`` on the retain set and ``0`` on the forget set, and the first-order change is
``Delta = H^{-1} sum_i (1/N - w_i) grad l_i = (N_f / N) H^{-1} (mean forget grad - mean retain grad)``
at ``theta_o``, ``H`` the Hessian of the mean training loss. The update is ``theta_o + alpha * Delta``.
The inverse-Hessian-vector product uses the WoodFisher approximation (002 Sec. 2, Singh &
Alistarh 2020): ``H ~ damping * I + (1/n) sum_j g_j g_j^T`` over per-example gradients of ``n``
training examples (``n_samples``, drawn from D = D_r + D_f, where the Hessian of Prop. 1 lives).
WoodFisher applies this inverse by ``n`` Sherman-Morrison updates; the course applies the same
inverse exactly in one ``n x n`` solve (Woodbury identity). ``curvature="hessian"`` uses the exact
(damped) Hessian instead, for tiny models (tests, exercises).

The public code (``unlearn/Wfisher.py``, the same in 002's and SalUn's repositories) computes the
same vector as Prop. 1, *with* the retain term: the forget gradients summed and divided by ``N``,
minus the retain gradients summed and scaled by ``N_f / (N N_r)``, i.e. ``(N_f / N)(mean forget grad
- mean retain grad)``. Its curvature comes from **per-example** gradients (batch size 1) of the
retain set in stored order (no shuffling), stopping after about ``N = 1000`` examples, applied by a
recursion of Sherman-Morrison form with the constant 1000 in the denominators and an implicit unit
damping; the recursion carries one running vector, seeded by the first example's gradient, where
WoodFisher has ``F^{-1} g_j``, so it approximates that inverse. Where the course differs: the
``n_samples`` curvature rows are drawn at random from D = D_r + D_f (where Prop. 1's Hessian lives,
not D_r alone), the damped inverse is applied exactly (Woodbury), and ``damping`` is explicit
(default 1e-2); ``alpha`` is tuned per scenario (``unlearn.tuned``). Older commits of 002's code fed
only the forget gradient through a recursion over 32-example batch gradients; the course follows the
current code's vector.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .. import config
from ..params import (Mask, check_mask, eval_mode, mean_loss_gradient, model_device, trainable,
                      true_fisher_diagonal)
from ..validation import check_int, check_number
from .registry import register

__all__ = ["per_example_gradients", "fisher_variance", "influence_vector",
           "woodfisher_solve", "CURVATURES"]

CURVATURES = ("woodfisher", "hessian")
#: Floats of per-example gradients held at once (chunks of examples are sized to fit).
_BUDGET = 50_000_000


def _chunk(model: nn.Module, per_example: int) -> int:
    d = sum(p.numel() for p in trainable(model).values())
    return max(1, _BUDGET // max(1, d * per_example))


def _functional(model: nn.Module):
    """``logits(params, x)`` for one example, on the model's buffers (eval mode)."""
    buffers = dict(model.named_buffers())

    def logits(params, x):
        return functional_call(model, (params, buffers), (x.unsqueeze(0),)).float()[0]

    return logits


def per_example_gradients(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *,
                          mask: Mask | None = None) -> torch.Tensor:
    """``[N, d]`` gradients of each example's cross-entropy at the current weights (eval mode,
    float32, on the model's device), flattened over the trainable parameters in
    ``named_parameters`` order; with ``mask``, only the masked-in coordinates (same order)."""
    params = {n: p.detach() for n, p in trainable(model).items()}
    logits = _functional(model)
    g_one = grad(lambda p, x, t: F.cross_entropy(logits(p, x).unsqueeze(0), t.unsqueeze(0)))
    dev = model_device(model)
    sel = _selector(model, mask)
    out = []
    with eval_mode(model):
        step = _chunk(model, 2)
        for s in range(0, X.shape[0], step):
            gs = vmap(g_one, in_dims=(None, 0, 0))(params, X[s:s + step].to(dev), y[s:s + step].to(dev))
            out.append(torch.cat([gs[n].reshape(gs[n].shape[0], -1) for n in params], 1)[:, sel])
    return torch.cat(out)


def _selector(model: nn.Module, mask: Mask | None) -> torch.Tensor:
    """Boolean ``[d]`` over the flattened trainable parameters: True where ``mask`` lets an entry move."""
    parts = []
    for n, p in trainable(model).items():
        if mask is None:
            parts.append(torch.ones(p.numel(), dtype=torch.bool, device=p.device))
        elif n in mask:
            parts.append(mask[n].reshape(-1).to(p.device))
        else:
            parts.append(torch.zeros(p.numel(), dtype=torch.bool, device=p.device))
    return torch.cat(parts)


def _is_head(model: nn.Module, name: str, p: torch.Tensor, n_classes: int) -> bool:
    if isinstance(getattr(model, "head", None), nn.Module):
        return name.startswith("head.")
    return p.shape[0] == n_classes  # the public code's rule, for models without ``.head``


def fisher_variance(model: nn.Module, fisher: dict[str, torch.Tensor], alpha: float, *, n_classes: int,
                    row_mean: bool = True) -> dict[str, torch.Tensor]:
    """FF's noise variance per entry from the Fisher diagonal (conventions of the public code,
    see the module docstring): ``alpha * min(1/(F + 1e-8), cap)``, ``cap`` 1e3 (1e2 for the
    classifier layer), averaged over dimension 1 of >= 2-D tensors when ``row_mean``, times 10
    for the classifier layer and for 1-D parameters."""
    params = dict(model.named_parameters())
    out = {}
    for n, f in fisher.items():
        head = _is_head(model, n, params[n], n_classes)
        var = (1.0 / (f + 1e-8)).clamp(max=1e2 if head else 1e3) * alpha
        if row_mean and var.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(var).clone()
        if head or var.ndim == 1:
            var = var * 10
        out[n] = var
    return out


#: Variance of the forgotten classes' output rows after zeroing (``forget_classes``): 002's public code
#: (after Golatkar et al.'s) sets their mean to 0 and their variance to 1e-4, then scales the output
#: layer's variance by 10.
CLASS_ROW_VAR = 1e-3


@register("fisher", aliases=("ff",), alpha=1e-7, row_mean=True, fisher_batch=32, fisher_samples=None,
          forget_classes=None)
def _fisher(model, retain, forget, *, valid, seed, mask, alpha, row_mean, fisher_batch, fisher_samples,
            forget_classes, **common):
    """Fisher forgetting: theta_o + N(0, diag(var)), var from the retain set's Fisher diagonal.

    ``forget_classes`` (class-wise forgetting; a list of class indices): as 002's public code does, the
    output rows of those classes are set to N(0, CLASS_ROW_VAR) instead (every parameter whose first
    dimension is the number of classes, the public code's rule: the output layer's weight and bias), so
    the model can no longer predict them. Other entries are bitwise those of plain FF with the same seed.
    """
    alpha = check_number(alpha, "alpha", 0.0)
    Xr = retain[0]
    # a uniform subsample of D_r (full mode: the Fisher costs C backward passes per example); the session's
    # budget (a smoke run) caps it at one batch of rows like IU's curvature sample
    n = Xr.shape[0] if fisher_samples is None else check_int(fisher_samples, "fisher_samples", 1)
    n = config.budget().cap_batch(n)
    if n < Xr.shape[0]:
        g = torch.Generator().manual_seed(config.derive_seed(seed, 6))
        Xr = Xr[torch.randperm(Xr.shape[0], generator=g)[:n]]
    if mask is not None:
        check_mask(mask, model)
    fisher = true_fisher_diagonal(model, Xr, batch_size=fisher_batch)
    with torch.no_grad():
        C = int(_functional(model)({n: p.detach() for n, p in trainable(model).items()},
                                   Xr[0].to(model_device(model))).shape[0])
    var = fisher_variance(model, fisher, alpha, n_classes=C, row_mean=row_mean)
    gen = torch.Generator().manual_seed(config.derive_seed(seed, 7))
    with torch.no_grad():
        for n, p in trainable(model).items():
            noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype) * var[n].sqrt().to(p.dtype)
            _masked_add(p, noise, mask, n)
    if forget_classes is not None:
        _zero_class_rows(model, forget_classes, C, mask, config.derive_seed(seed, 8))
    return model


def _zero_class_rows(model: nn.Module, classes, n_classes: int, mask: Mask | None, seed: int) -> None:
    """Set the output rows of ``classes`` to N(0, CLASS_ROW_VAR) in every parameter whose first dimension
    is ``n_classes`` (002's public code), where ``mask`` allows."""
    classes = [classes] if isinstance(classes, int) else list(classes)
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n_classes]
    if not classes or bad:
        raise ValueError(f"forget_classes must be class indices in [0, {n_classes}), got {classes!r}")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.tensor(sorted(set(classes)))
    with torch.no_grad():
        for n, p in trainable(model).items():
            if p.ndim >= 1 and p.shape[0] == n_classes:
                new = p.detach().clone()
                new[rows] = (torch.randn(new[rows].shape, generator=gen) * CLASS_ROW_VAR ** 0.5).to(p.device, p.dtype)
                _masked_add(p, new - p, mask, n)


def _masked_add(p: torch.Tensor, delta: torch.Tensor, mask: Mask | None, name: str) -> None:
    """``p += delta`` where ``mask`` allows it; other entries are not touched (bitwise)."""
    if mask is None:
        p.add_(delta)
    elif name in mask:
        p.copy_(torch.where(mask[name].to(p.device), p + delta, p))


def influence_vector(model: nn.Module, retain, forget, *, mask: Mask | None = None) -> torch.Tensor:
    """Prop. 1's ``sum_i (1/N - w_i) grad l_i(theta_o) = (N_f/N) (mean forget grad - mean retain
    grad)``, flattened like :func:`per_example_gradients` (masked coordinates only)."""
    gf, gr = mean_loss_gradient(model, forget), mean_loss_gradient(model, retain)
    Nf, Nr = forget[0].shape[0], retain[0].shape[0]
    names = list(trainable(model))
    v = torch.cat([(gf[n] - gr[n]).reshape(-1) for n in names]) * (Nf / (Nf + Nr))
    return v[_selector(model, mask)]


def woodfisher_solve(G: torch.Tensor, v: torch.Tensor, damping: float) -> torch.Tensor:
    """``(damping I + G^T G / n)^{-1} v`` for ``G`` ``[n, d]``, exactly, by the Woodbury identity
    ``(1/damping) (v - G^T (n damping I + G G^T)^{-1} G v)`` (an ``n x n`` solve in float64)."""
    damping = check_number(damping, "damping", 0.0, lo_open=True)
    n = G.shape[0]
    Gd, vd = G.double(), v.double()
    K = Gd @ Gd.T + n * damping * torch.eye(n, dtype=torch.float64, device=G.device)
    return ((vd - Gd.T @ torch.linalg.solve(K, Gd @ vd)) / damping).to(v.dtype)


def _exact_hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    params = {n: p.detach() for n, p in trainable(model).items()}
    flat0 = torch.cat([p.reshape(-1) for p in params.values()])
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]
    buffers = dict(model.named_buffers())
    dev = flat0.device

    def loss(sub):
        flat = flat0.clone()
        flat[sel] = sub
        ps, at = {}, 0
        for n, shape, k in shapes:
            ps[n] = flat[at:at + k].reshape(shape)
            at += k
        return F.cross_entropy(functional_call(model, (ps, buffers), (X.to(dev),)).float(), y.to(dev))

    with eval_mode(model), warnings.catch_warnings():  # torch.func's forward mode warns about torch.jit
        warnings.simplefilter("ignore", FutureWarning)
        return torch.func.hessian(loss)(flat0[sel])


@register("influence", aliases=("iu",), alpha=1.0, damping=1e-2, n_samples=512, curvature="woodfisher")
def _influence(model, retain, forget, *, valid, seed, mask, alpha, damping, n_samples, curvature, **common):
    """Influence unlearning: theta_o + alpha (H + damping I)^{-1} (N_f/N)(g_f - g_r) (002 Prop. 1)."""
    alpha = check_number(alpha, "alpha")
    damping = check_number(damping, "damping", 0.0, lo_open=True)
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {CURVATURES}, got {curvature!r}")
    if mask is not None:
        check_mask(mask, model)
    sel = _selector(model, mask)
    d = int(sel.sum())
    if d == 0:
        return model
    X = torch.cat([retain[0], forget[0]])
    y = torch.cat([retain[1].cpu(), forget[1].cpu()])
    v = influence_vector(model, retain, forget, mask=mask)
    if curvature == "hessian":
        if d > 5000:
            raise ValueError(f"curvature='hessian' builds a {d} x {d} matrix; use it for tiny models "
                             f"(at most 5000 free parameters) or use curvature='woodfisher'")
        H = _exact_hessian(model, X, y, sel).double()
        step = torch.linalg.solve(H + damping * torch.eye(d, dtype=torch.float64, device=H.device),
                                  v.double()).to(v.dtype)
    else:
        n = config.budget().cap_batch(check_int(n_samples, "n_samples", 1))  # n x d floats in memory
        rows = torch.arange(X.shape[0])
        if n < X.shape[0]:
            g = torch.Generator().manual_seed(config.derive_seed(seed, 5))
            rows = torch.randperm(X.shape[0], generator=g)[:n]
        G = per_example_gradients(model, X[rows], y[rows], mask=mask)
        step = woodfisher_solve(G, v, damping)
    with torch.no_grad():
        flat = torch.zeros(sel.shape[0], dtype=step.dtype, device=step.device)
        flat[sel] = alpha * step
        at = 0
        for n, p in trainable(model).items():
            k = p.numel()
            upd = flat[at:at + k].reshape(p.shape).to(p.dtype)
            at += k
            _masked_add(p, upd, mask, n)
    return model
