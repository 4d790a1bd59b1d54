"""Pick the accelerator, print a one-line banner, and set the numerics per device.

CPU: deterministic algorithms, so the same seed gives bit-identical weights.
CUDA: bf16 autocast and channels-last memory format for convolutional models.
"""
from __future__ import annotations

import contextlib
import os
import platform

import torch
from torch import nn

from . import config

# cuBLAS is only deterministic with a fixed workspace, which must be chosen before its first use:
# set it on import (harmless without a GPU) so that exact_numerics() can ask for deterministic kernels.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def get_device(name: str | None = None) -> torch.device:
    """Return ``torch.device(name)``, or the best available one (CUDA, then MPS, then CPU)."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is visible; use 'cpu' or 'auto'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available; use 'cpu' or 'auto'.")
    return device


def setup(seed: int = config.DEFAULT_SEED, device: str | None = None, fast: bool | None = None,
          verbose: bool = True) -> torch.device:
    """Seed everything, choose the device, set its numerics and print the banner.

    Call once at the top of a notebook: ``device = setup(SEED, fast=FAST)``.
    """
    config.seed_everything(seed)
    if fast is not None:
        config.set_fast(fast)  # progress bars and other defaults follow the notebook's FAST
    dev = get_device(device)
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if verbose:
        print(banner(dev, seed=seed, fast=config.fast_mode(fast)))
    return dev


def banner(device: torch.device, seed: int | None = None, fast: bool | None = None) -> str:
    """One line saying what runs where: torch version, device, threads, mode and seed."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        what = f"cuda:{idx} {torch.cuda.get_device_name(idx)} (bf16 autocast, channels_last)"
    elif device.type == "mps":
        what = "mps (Apple GPU)"
    else:
        what = f"cpu {platform.machine()} ({torch.get_num_threads()} threads, deterministic)"
    parts = [f"torch {torch.__version__}", f"device {what}"]
    if fast is not None:
        parts.append("FAST mode" if fast else "full mode")
    if seed is not None:
        parts.append(f"seed {seed}")
    return " | ".join(parts)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device``; on CUDA convolutional models also go channels-last."""
    device = torch.device(device)
    model = model.to(device)
    if device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


@contextlib.contextmanager
def exact_numerics(device: torch.device | str):
    """Numerics for code whose result must be bit-reproducible (SISA shards, LegoNet adapters).

    CPU: one thread, so the bits do not depend on the core count (and tiny tensors run faster).
    CUDA: deterministic algorithms, no TF32, no cuDNN autotuning. Settings are restored on exit.
    """
    device = torch.device(device)
    if device.type == "cpu":
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(old)
        return
    if device.type != "cuda":
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[4], saved[5]
