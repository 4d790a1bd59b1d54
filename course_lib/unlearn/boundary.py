"""Boundary unlearning (lesson 4): Boundary Shrink (``bs``) and Boundary Expanding (``be``).

Source 001, slides "Boundary Unlearning (1)-(2)", "Boundary Shrink (1)-(2)", "Boundary Expanding"
(Chen et al., *Boundary Unlearning*, CVPR 2023). Both methods move the *decision boundary* of the
original model :math:`\\theta_o` by fine-tuning it on the forget set :math:`D_f` alone, and both are
defined for **class-wise** forgetting only (the slides call this a limitation):

* **Boundary Shrink**: a neighbour search :math:`x' = x + \\epsilon\\,\\mathrm{sign}(\\nabla_x
  \\mathcal{L}(x, y; \\theta_o))` (FGSM; ``steps > 1`` gives PGD in the :math:`\\ell_\\infty` ball),
  the *nearest but incorrect* label :math:`y_{nbi} = \\arg\\max_{k \\ne y} f_{\\theta_o}^k(x')`
  (:func:`neighbour_labels`), then fine-tuning on :math:`(x, y_{nbi})`.
* **Boundary Expanding**: the last linear layer gets one extra *shadow* output (:func:`widen_head`),
  the model is fine-tuned on :math:`(x, y_{shadow})`, then the shadow neuron is removed
  (:func:`narrow_head`): the model keeps its original outputs and head shape.

Where the course differs from the public code of the paper (see ``shared/sources/README.md``):

* the label excludes the true class, as "nearest but incorrect" on the slides says; the public code
  takes the plain argmax on :math:`x'`, which *is* :math:`y` whenever the step does not cross the
  boundary (``exclude_true=False`` reproduces that);
* the labels are computed once from the frozen original model in eval mode; the public code
  recomputes them per batch from the same frozen model, which gives the same labels without
  augmentation;
* the bound is in **pixel units** ([0, 1] pixels, as in the public code, whose inputs are not
  standardised): on standardised inputs (CIFAR-10 in full mode) pass ``pixel_std``, the per-channel
  standard deviation the inputs were divided by (``data.pixel_std(name)``), and the radius becomes
  ``bound / std`` per channel in the inputs' units (about 4x larger than ``bound`` on CIFAR-10). The
  perturbed inputs are not clamped to the pixel range nor rounded to 1/255 (some copies of the code do
  this);
* batch-norm layers stay in eval mode while fine-tuning (``freeze_norm=True``): every batch holds one
  class only, and its statistics would otherwise overwrite the running statistics of all classes
  (the public code trains in train mode; ``freeze_norm=False`` reproduces that). Models without
  batch norm (the course's SmallCNN) are unaffected.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .. import config
from ..device import autocast
from ..models import n_outputs, seeded
from ..params import eval_mode, model_device
from ..train import sgd_steps
from ..validation import check_int, check_number, check_xy
from .registry import register

__all__ = ["neighbour_search", "neighbour_labels", "check_classwise", "last_linear", "widen_head",
           "narrow_head"]


# ----------------------------------------------------------------------------- Boundary Shrink

def _radius(bound: float, pixel_std, X: torch.Tensor) -> torch.Tensor | float:
    """The search radius in the inputs' units: ``bound`` (pixel units) over the per-channel std."""
    if pixel_std is None:
        return bound
    std = torch.as_tensor(pixel_std, dtype=torch.float32).flatten()
    if not torch.all(torch.isfinite(std)) or not torch.all(std > 0):
        raise ValueError(f"pixel_std must be positive numbers (one, or one per channel), got {pixel_std!r}")
    if std.numel() == 1:
        return bound / float(std)
    if X.dim() < 2 or X.shape[1] != std.numel():
        raise ValueError(f"pixel_std has {std.numel()} values but the inputs have "
                         f"{X.shape[1] if X.dim() > 1 else 'no'} channels; give one value per channel")
    return (bound / std).view(1, -1, *([1] * (X.dim() - 2)))


def neighbour_search(model: nn.Module, X: torch.Tensor, y: torch.Tensor, bound: float, *, steps: int = 1,
                     batch_size: int = 256, pixel_std=None) -> torch.Tensor:
    """Perturbed inputs ``X'`` ``[N, ...]`` with ``|X' - X|_inf <= bound``, from ``model`` in eval mode.

    ``bound`` is in pixel units; ``pixel_std`` (``None``: the inputs are pixels) is the per-channel
    standard deviation the inputs were standardised with, so the radius is ``bound / pixel_std`` in the
    inputs' units (``data.pixel_std(name)`` gives it for each data set).

    ``steps=1``: one FGSM step, ``X + bound * sign(grad_X CE)`` (source 001, "Boundary Shrink (2)");
    ``steps > 1``: PGD, ``steps`` signed steps of ``2.5 * bound / steps`` each projected back onto the
    ``bound`` ball around ``X`` (the public code's optional variant). The model's weights and
    gradients are not touched. Returns a float tensor on ``X``'s device.
    """
    check_xy(X, y, "neighbour search")
    bound = check_number(bound, "bound (the neighbour-search radius epsilon)", 0.0, lo_open=True)
    steps = check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    dev = model_device(model)
    radius = _radius(bound, pixel_std, X)
    if isinstance(radius, torch.Tensor):
        radius = radius.to(dev)
    alpha = radius if steps == 1 else 2.5 * radius / steps
    out = []
    with eval_mode(model):
        for s in range(0, X.shape[0], batch_size):
            x0 = X[s:s + batch_size].to(dev).float()
            yb = y[s:s + batch_size].to(dev)
            x = x0.clone()
            for _ in range(steps):
                x.requires_grad_(True)
                with autocast(dev):
                    loss = F.cross_entropy(model(x).float(), yb, reduction="sum")
                (g,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = x0 + (x + alpha * g.sign() - x0).clamp(-radius, radius)
            out.append(x.detach().to(X.device))
    return torch.cat(out)


@torch.no_grad()
def _labels_on(model: nn.Module, X_adv: torch.Tensor, y: torch.Tensor, exclude_true: bool,
               batch_size: int) -> torch.Tensor:
    dev = model_device(model)
    labels = []
    with eval_mode(model):
        for s in range(0, X_adv.shape[0], batch_size):
            with autocast(dev):
                logits = model(X_adv[s:s + batch_size].to(dev)).float()
            if exclude_true:
                logits = logits.scatter(1, y[s:s + batch_size].to(dev).view(-1, 1), float("-inf"))
            labels.append(logits.argmax(1).cpu())
    return torch.cat(labels)


def neighbour_labels(model: nn.Module, X: torch.Tensor, y: torch.Tensor, bound: float, *, steps: int = 1,
                     exclude_true: bool = True, batch_size: int = 256, pixel_std=None) -> torch.Tensor:
    """The *nearest but incorrect* labels of Boundary Shrink: ``LongTensor [N]`` on the CPU.

    Perturb each input with :func:`neighbour_search` (bound ``bound`` in pixel units, ``steps`` FGSM/PGD
    steps, ``pixel_std`` as there) and
    take ``model``'s most likely class on the perturbed input **among the classes other than its
    label** ``y`` (so the result never equals ``y``). ``exclude_true=False`` takes the plain argmax,
    as the public code does (then the label is ``y`` wherever the step did not cross the boundary).
    """
    X_adv = neighbour_search(model, X, y, bound, steps=steps, batch_size=batch_size, pixel_std=pixel_std)
    n_out = n_outputs(model, X)
    if exclude_true and n_out < 2:
        raise ValueError("nearest-but-incorrect labels need a model with at least two outputs")
    if int(y.min()) < 0 or int(y.max()) >= n_out:
        raise ValueError(f"labels must lie in [0, {n_out}) for a model with {n_out} outputs, "
                         f"got {int(y.min())}..{int(y.max())}")
    return _labels_on(model, X_adv, y.cpu(), exclude_true, batch_size)


# ----------------------------------------------------------------------------- shared pieces

def check_classwise(retain_y: torch.Tensor, forget_y: torch.Tensor) -> list[int]:
    """The forgotten classes, after checking that the forget set holds *whole* classes: no label of
    the forget set may occur in the retain set. Raises ValueError otherwise."""
    classes = torch.unique(forget_y.cpu())
    shared = torch.isin(retain_y.cpu(), classes)
    if shared.any():
        left = torch.unique(retain_y.cpu()[shared]).tolist()
        raise ValueError(
            f"boundary unlearning is defined for class-wise forgetting only (source 001 calls this a "
            f"limitation): the forget set must hold every example of its classes, but the retain set "
            f"still has {int(shared.sum())} examples of class(es) {left}. Build the forget set with "
            f"data.forget_class(y, c), or pass allow_partial=True to run the method anyway.")
    return classes.tolist()


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _fine_tune(model: nn.Module, X: torch.Tensor, targets: torch.Tensor, *, seed: int, freeze_norm: bool,
               desc: str, **hp) -> None:
    """Cross-entropy fine-tuning of ``model`` on ``(X, targets)`` with :func:`train.sgd_steps`."""
    dev = model_device(model)
    Xd, td = X.to(dev), targets.to(dev)
    norms = _norm_layers(model) if freeze_norm else []

    def loss(idx):
        for m in norms:  # sgd_steps put the model in train mode: keep the running statistics as they are
            m.eval()
        idx = idx.to(dev)
        with autocast(dev):
            return F.cross_entropy(model(Xd[idx]).float(), td[idx])

    sgd_steps(model, Xd.shape[0], loss, seed=seed, desc=desc, **hp)


@register("boundary_shrink", aliases=("bs",), epochs=10, lr=3e-4, momentum=0.9, weight_decay=0.0,
          schedule="constant", bound=0.1, steps=1, exclude_true=True, freeze_norm=True, allow_partial=False,
          pixel_std=None)
def _boundary_shrink(model, retain, forget, *, valid, seed, bound, steps, exclude_true, freeze_norm,
                     allow_partial, pixel_std, **hp):
    if not allow_partial:
        check_classwise(retain[1], forget[1])
    y_nbi = neighbour_labels(model, forget[0], forget[1], bound, steps=steps, exclude_true=exclude_true,
                             pixel_std=pixel_std)
    _fine_tune(model, forget[0], y_nbi, seed=seed, freeze_norm=freeze_norm, desc="boundary shrink", **hp)
    return model


# ----------------------------------------------------------------------------- Boundary Expanding

def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """``(attribute name, layer)`` of the model's last linear layer: ``model.head`` (course models)
    or ``model.fc`` (torchvision ResNets). Raises ValueError for a model without one."""
    for name in ("head", "fc"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return name, layer
    found = {n: type(getattr(model, n)).__name__ for n in ("head", "fc") if hasattr(model, n)}
    raise ValueError(
        f"Boundary Expanding needs the model's last layer as an nn.Linear attribute `head` (course "
        f"models) or `fc` (torchvision ResNets); this {type(model).__name__} has "
        f"{found or 'neither'}. Wrap the model so that forward(x) = head(features(x)) with an nn.Linear head.")


@torch.no_grad()
def widen_head(model: nn.Module, n_extra: int = 1, *, seed: int = 0) -> int:
    """Give the last linear layer ``n_extra`` more outputs, in place. The old rows (weights and
    biases) are copied unchanged, so the old logits stay exactly as they were; the new rows get
    ``nn.Linear``'s default initialisation drawn under ``seed``. Returns the index of the first new
    output (the old number of outputs)."""
    n_extra = check_int(n_extra, "n_extra", 1)
    name, old = last_linear(model)
    K = old.out_features
    new = seeded(lambda: nn.Linear(old.in_features, K + n_extra, bias=old.bias is not None), seed)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    new.weight[:K] = old.weight
    if old.bias is not None:
        new.bias[:K] = old.bias
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    setattr(model, name, new)
    return K


@torch.no_grad()
def narrow_head(model: nn.Module, n_outputs: int) -> nn.Module:
    """Keep only the first ``n_outputs`` outputs of the last linear layer (in place; the kept rows
    are copied unchanged, so their logits are exactly the wider model's). Returns ``model``."""
    name, old = last_linear(model)
    n_outputs = check_int(n_outputs, "n_outputs", 1, old.out_features)
    new = nn.Linear(old.in_features, n_outputs, bias=old.bias is not None).to(device=old.weight.device,
                                                                           dtype=old.weight.dtype)
    new.weight.copy_(old.weight[:n_outputs])
    if old.bias is not None:
        new.bias.copy_(old.bias[:n_outputs])
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    setattr(model, name, new)
    return model


def _widened_mask(mask, model: nn.Module, name: str, K: int):
    """Extend the head's entries of a mask by the shadow row (which may always change)."""
    if mask is None:
        return None
    out = dict(mask)
    for pname, p in getattr(model, name).named_parameters():
        key = f"{name}.{pname}"
        if key in out:
            extra = torch.ones((p.shape[0] - K,) + tuple(p.shape[1:]), dtype=torch.bool, device=out[key].device)
            out[key] = torch.cat([out[key], extra])
    return out


@register("boundary_expand", aliases=("be",), epochs=10, lr=3e-4, batch_size=32, momentum=0.9,
          weight_decay=0.0, schedule="constant", freeze_norm=True, allow_partial=False)
def _boundary_expand(model, retain, forget, *, valid, seed, freeze_norm, allow_partial, mask, **hp):
    if not allow_partial:
        check_classwise(retain[1], forget[1])
    name, _ = last_linear(model)
    K = widen_head(model, 1, seed=config.derive_seed(seed, 5))
    shadow = torch.full_like(forget[1].cpu(), K)
    _fine_tune(model, forget[0], shadow, seed=seed, freeze_norm=freeze_norm, desc="boundary expand",
               mask=_widened_mask(mask, model, name, K), **hp)
    return narrow_head(model, K)
