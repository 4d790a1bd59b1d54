"""Frozen encoders for LegoNet (lesson 3): pre-trained on data that is never deleted, then fixed.

:func:`encode` maps inputs to encodings so that a row's encoding is a function of that row
alone (see its docstring): LegoNet's bitwise exactness rests on it.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import models, train
from ..device import exact_numerics
from ..params import eval_mode, model_device
from ..validation import check_xy


class EncoderUnavailableError(RuntimeError):
    """Pre-trained encoder weights could not be loaded (e.g. offline and not cached)."""


# ----------------------------------------------------------------------------- encoders

class FrozenEncoder(nn.Module):
    """A feature extractor with every parameter frozen and always in eval mode.

    ``forward(x)`` maps inputs ``[N, ...]`` to encodings ``[N, feature_dim]``. Wraps either a
    course model (its ``features``) or any module returning the features directly.
    """

    def __init__(self, module: nn.Module, feature_dim: int, use_features: bool = True):
        super().__init__()
        self.module = module
        self.feature_dim = int(feature_dim)
        self._use_features = use_features
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":  # frozen: stays in eval mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.features(x) if self._use_features else self.module(x)


def pretrain_encoder(X_public: torch.Tensor, y_public: torch.Tensor, n_classes: int | None = None, *,
                     arch: str = "small_cnn", epochs: int = 30, lr: float = 0.05, batch_size: int = 64,
                     seed: int = 0, device: torch.device | str | None = None, augment=None,
                     **model_kwargs) -> FrozenEncoder:
    """Pre-train a course model on a *public* pool and return its frozen feature extractor.

    ``X_public [M, C, H, W]``, ``y_public [M]``: data that is never subject to deletion, kept
    disjoint from the private training set (see :func:`course_lib.data.holdout`). The model's
    classification head is discarded. The returned encoder maps ``[N, C, H, W]`` to
    ``[N, feature_dim]``; ``encoder.pretrain_log`` holds the training log.
    """
    check_xy(X_public, y_public, "public pre-training data")
    n_classes = int(y_public.max()) + 1 if n_classes is None else int(n_classes)
    model = models.seeded(lambda: models.make_model(arch, n_classes, tuple(X_public.shape[1:]), **model_kwargs),
                          seed)
    if device is not None:
        model = model.to(device)
    log = train.fit(model, X_public, y_public, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    augment=augment, desc="pre-train encoder")
    encoder = FrozenEncoder(model, model.feature_dim)
    encoder.pretrain_log = log
    return encoder


def _imagenet_resnet(arch: str, weights: str) -> nn.Module:
    """A torchvision ResNet with ImageNet weights, or :class:`EncoderUnavailableError` saying what to do."""
    import torchvision

    if not arch.startswith("resnet"):
        raise ValueError(f"arch must be a torchvision ResNet such as 'resnet18' or 'resnet34', got {arch!r}")
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except Exception as exc:  # URLError, socket errors, hash mismatch, unknown weights name
        raise EncoderUnavailableError(
            f"could not load the ImageNet weights of torchvision's {arch} ({type(exc).__name__}: {exc}). "
            f"On a machine with internet run `python -c \"import torchvision; "
            f"torchvision.models.get_model('{arch}', weights='{weights}')\"` once; the weights land in "
            f"torch's hub cache ($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints), "
            f"which you can copy to this machine. Offline, pre-train the encoder on a public pool "
            f"instead: pretrain_encoder(X_public, y_public) with data.holdout(...).") from exc


def _resized(net: nn.Module, input_size: int | None) -> nn.Module:
    if input_size is None:
        return net
    return nn.Sequential(nn.Upsample(size=(input_size, input_size), mode="bilinear", align_corners=False), net)


def imagenet_encoder(arch: str = "resnet34", input_size: int | None = 224,
                     weights: str = "DEFAULT") -> FrozenEncoder:
    """The source's encoder: a torchvision ResNet pre-trained on ImageNet, head removed, frozen.

    Inputs ``[N, 3, H, W]`` are resized to ``input_size`` (None: kept) and mapped to
    ``[N, 512]`` (ResNet-18/34) or ``[N, 2048]`` (ResNet-50). The weights come from torch's hub
    cache or are downloaded; if neither works, :class:`EncoderUnavailableError` says what to do.
    """
    net = _imagenet_resnet(arch, weights)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return FrozenEncoder(_resized(net, input_size), feature_dim, use_features=False)


def imagenet_network(n_classes: int, arch: str = "resnet34", input_size: int | None = 224,
                     weights: str = "DEFAULT") -> nn.Module:
    """The source's baselines' network: the same ImageNet ResNet, trainable, with a fresh
    ``Linear(feature_dim, n_classes)`` head (initialised from the global random stream, so call it
    under :func:`course_lib.models.seeded`). Maps ``[N, 3, H, W]`` to logits ``[N, n_classes]``.
    RNC and SISA fine-tune it end to end, while LegoNet freezes its body (:func:`imagenet_encoder`)."""
    if not (isinstance(n_classes, int) and n_classes >= 2):
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    net = _imagenet_resnet(arch, weights)
    net.fc = nn.Linear(net.fc.in_features, n_classes)
    return _resized(net, input_size)


@torch.no_grad()
def encode(encoder: nn.Module | None, X: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """Encodings ``[N, d]`` (float32, CPU) of inputs ``X [N, ...]``; ``encoder=None``: ``X`` already
    holds encodings ``[N, d]``.

    LegoNet's exactness needs a row's encoding to be a function of the row alone: a refit on the
    retained rows re-encodes them, and any last-bit difference changes the adapters. A batched
    forward does not guarantee this: a Linear or convolution layer's output for a row can depend
    on the row's *position* in its batch (the matrix-product blocking), so removing earlier rows
    shifts every later row and changes its last bits (measured here; oneDNN's convolutions also
    depend on the batch-mates). ``batch_size=1`` (the default) therefore encodes every row on its
    own: one forward per row, on the CPU without oneDNN, under :func:`~course_lib.device.exact_numerics`.
    Larger batches are faster (a GPU in full mode) but only *cached* encodings are then exact:
    LegoNet keeps them (``encodings_``) and unlearns on them.
    """
    if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty tensor [N, ...], got "
                         f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if encoder is None:
        if X.ndim != 2:
            raise ValueError(f"without an encoder X must already be encodings [N, d], got shape {tuple(X.shape)}")
        return X.detach().float().cpu()
    dev = model_device(encoder)
    outs = []
    mkldnn = torch.backends.mkldnn.enabled
    try:
        if dev.type == "cpu":
            torch.backends.mkldnn.enabled = False
        with exact_numerics(dev), eval_mode(encoder):
            for start in range(0, X.shape[0], batch_size):
                xb = X[start:start + batch_size]
                m = xb.shape[0]
                if m < batch_size:            # a fixed shape for every batch: pad the last one
                    xb = torch.cat([xb, xb.new_zeros((batch_size - m, *xb.shape[1:]))])
                outs.append(encoder(xb.to(dev)).float().flatten(1)[:m].cpu())
    finally:
        torch.backends.mkldnn.enabled = mkldnn
    return torch.cat(outs)


def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input of ``input_shape`` (2 per multiply-add; counts
    matrix products and convolutions, as ``torch.utils.flop_counter`` does)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(module.parameters(), None)
    x = torch.zeros((1, *input_shape), device=p.device if p is not None else "cpu")
    # eval mode: batch norm cannot run training mode on one input
    with eval_mode(module), torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())
