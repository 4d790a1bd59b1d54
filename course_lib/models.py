"""Models of the course. Each exposes ``features(x) -> [N, feature_dim]`` (the penultimate
representation, used for encoders and UMAP plots) and ``head`` (the last linear layer), with
``forward(x) = head(features(x))``.

* :class:`SmallCNN`: two conv layers and a hidden layer, for 8x8 digits (any image size works).
* :class:`ResNet18`: the CIFAR variant (3x3 stem, stride 1, no max-pool), 11.2 M parameters.
* :class:`MLP`: flattens its input.

:func:`make_model` builds one by name, :func:`seeded` draws it under a seed, and
:func:`reset_parameters` gives a copy with fresh weights for the same architecture, and
:func:`n_outputs` counts a model's outputs.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .params import eval_mode, model_device


class SmallCNN(nn.Module):
    """conv(3x3) - ReLU - conv(3x3) - ReLU - maxpool - [pool to 4x4] - linear - ReLU - head.

    Input ``[N, in_channels, H, W]``; logits ``[N, n_classes]``. No batch norm, so it works
    with ``torch.func.vmap`` and with opacus (DP-SGD) unchanged.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Flatten - [linear - ReLU] x len(hidden) - head. Input any shape ``[N, ...]``."""

    def __init__(self, in_features: int, n_classes: int = 10, hidden: tuple[int, ...] = (128,)):
        super().__init__()
        if not hidden:
            raise ValueError("hidden must name at least one layer width")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)
        self.feature_dim = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem with stride 1 and no max-pool, four stages of two
    basic blocks (64, 128, 256, 512 channels), global average pool, linear head."""

    def __init__(self, n_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(512, n_classes)
        self.feature_dim = 512

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHS = ("small_cnn", "resnet18", "mlp")


def make_model(arch: str, n_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Build a model by name for inputs of shape ``input_shape`` = ``(C, H, W)``."""
    if arch == "small_cnn":
        return SmallCNN(n_classes, in_channels=input_shape[0], **kwargs)
    if arch == "resnet18":
        return ResNet18(n_classes, in_channels=input_shape[0], **kwargs)
    if arch == "mlp":
        n_in = 1
        for d in input_shape:
            n_in *= d
        return MLP(n_in, n_classes, **kwargs)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Call ``make()`` with torch's CPU random stream seeded by ``seed``, leaving the global
    stream as it was: the same seed always gives the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def reset_parameters(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with fresh weights for its architecture, drawn under ``seed`` (every
    submodule's own ``reset_parameters``, in registration order). ``model`` itself is not changed;
    the same seed always gives the same weights (the Retrain oracle's and RFT's fresh start)."""

    def make():
        fresh = copy.deepcopy(model)
        for mod in fresh.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        return fresh

    return seeded(make, seed)


def n_outputs(model: nn.Module, X: torch.Tensor) -> int:
    """Number of outputs (classes) of ``model``, from one forward pass on ``X[:1]`` in eval mode
    (no gradient; batch-norm statistics untouched; the model's mode is kept)."""
    with eval_mode(model), torch.no_grad():
        return int(model(X[:1].to(model_device(model))).shape[1])


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
