"""The fast GPU numerics of :func:`course_lib.train.fit`, :func:`~course_lib.train.predict_logits`
and :func:`~course_lib.train.features` on CUDA (the CPU keeps the plain loop, bit for bit).

Not a second training loop: :func:`course_lib.train.fit` runs the one loop,
:func:`course_lib.train.sgd_steps`, and takes from here what it needs to run it fast
(``train.fit(..., numerics=resolve_options(device, ...))``; on CUDA by default):

* :class:`FastOptions` / :func:`resolve_options`: bf16 autocast, channels-last memory format,
  optional ``torch.compile`` (``compile=True`` or a mode name, or ``COURSE_COMPILE=1`` /
  ``COURSE_COMPILE=<mode>``), each with the device's default;
* :func:`loss_closure`: the batch loss with the whole training set on the device (moved once;
  ``sgd_steps`` moves each epoch's batch order once, drawn on the CPU from the same seeded
  generator as always, so the batches are the same ones), random crop + flip on the device with
  a seeded device generator (:func:`course_lib.data.random_crop_flip_device`), bf16 and
  channels-last, and a compilation that falls back to eager mode with a warning if it fails;
* :func:`sgd_optimizer`: fused SGD on CUDA.

The running loss of ``sgd_steps`` stays on the device, so the host waits for the GPU once per
epoch. :func:`predict_fast` evaluates in the same way: inputs moved in large chunks, bf16,
channels-last, and one copy of the outputs back to the host at the end.

These numerics also run on the CPU (with ``bf16=False``, the default there): with the same seed
and no compile they take exactly the steps of the plain loop, which is how the tests check them.
``COURSE_FASTPATH=0`` sends CUDA runs back to the plain loop.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import config, data
from .params import eval_mode, model_device

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CHUNK_BYTES = 1 << 30  # evaluation moves inputs to the device in chunks of at most 1 GiB


def enabled(device: torch.device) -> bool:
    """True when ``train`` should take the fast path: a CUDA device and ``COURSE_FASTPATH`` not 0."""
    return torch.device(device).type == "cuda" and os.environ.get("COURSE_FASTPATH", "1").strip() != "0"


@dataclass(frozen=True)
class FastOptions:
    """Resolved numerics of the fast path."""

    bf16: bool
    channels_last: bool
    compile: str | None  # a torch.compile mode, or None for eager


def resolve_options(device: torch.device, bf16: bool | None = None, channels_last: bool | None = None,
                    compile: bool | str | None = None) -> FastOptions:
    """Fill in the defaults (bf16 and channels-last on CUDA only; compile from ``COURSE_COMPILE``)
    and refuse options that cannot work, saying how to fix them."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    for name, v in (("bf16", bf16), ("channels_last", channels_last)):
        if v is not None and not isinstance(v, bool):
            raise ValueError(f"{name} must be True, False or None (the device's default), got {v!r}")
    if bf16 is None:
        bf16 = cuda
    if bf16 and not cuda:
        raise ValueError(f"bf16 autocast is the CUDA fast path's numerics; on {device} pass bf16=False "
                         "(or leave it None) so the run stays in float32")
    if channels_last is None:
        channels_last = cuda
    if compile is None:
        env = os.environ.get("COURSE_COMPILE", "").strip()
        compile = False if env in ("", "0") else (True if env == "1" else env)
    if compile is True:
        mode = "default"
    elif compile is False:
        mode = None
    elif isinstance(compile, str) and compile in COMPILE_MODES:
        mode = compile
    else:
        raise ValueError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    return FastOptions(bool(bf16), bool(channels_last), mode)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _channels_last(model: nn.Module, X: torch.Tensor | None = None):
    """For a conv model: its weights (in place: the Parameter objects stay the same) and 4-D
    inputs in channels-last format. Other models are left alone. Values never change."""
    if not _has_conv(model):
        return X
    model.to(memory_format=torch.channels_last)
    if X is not None and X.ndim == 4:
        X = X.contiguous(memory_format=torch.channels_last)
    return X


def _augmenter(augment: Callable | None, device: torch.device, seed: int, channels_last: bool):
    """The batch augmentation and its generator. The course's crop + flip runs on the device
    with a device generator; any other ``augment(xb, generator)`` gets the CPU generator that the
    plain loop would have given it."""
    aug_seed = config.derive_seed(seed, 1)
    if augment is None:
        return None, None
    if augment is data.random_crop_flip or augment is data.random_crop_flip_device:
        gen = torch.Generator(device=device).manual_seed(aug_seed)
        return (lambda xb, g: data.random_crop_flip_device(xb, g, channels_last=channels_last)), gen
    if not callable(augment):
        raise ValueError(f"augment must be a callable augment(xb, generator) or None, got {type(augment).__name__}")
    return augment, torch.Generator().manual_seed(aug_seed)


def sgd_optimizer(device: torch.device) -> Callable[..., torch.optim.Optimizer]:
    """The optimiser factory ``make(params, lr=, momentum=, weight_decay=)`` that
    :func:`course_lib.train.sgd_steps` takes: fused SGD on CUDA (multi-tensor SGD where fused
    kernels are missing), the plain loop's ``torch.optim.SGD`` elsewhere, so the CPU bits agree."""
    device = torch.device(device)

    def make(params: list[torch.Tensor], **hp) -> torch.optim.Optimizer:
        if device.type == "cuda":
            try:
                return torch.optim.SGD(params, fused=True, **hp)
            except (RuntimeError, TypeError, ValueError):  # older torch or unsupported dtype
                return torch.optim.SGD(params, foreach=True, **hp)
        return torch.optim.SGD(params, **hp)

    return make


def loss_closure(model: nn.Module, X: torch.Tensor, y: torch.Tensor, options: FastOptions, *, seed: int = 0,
                 augment: Callable | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The cross-entropy ``loss_of_batch(idx)`` of :func:`course_lib.train.sgd_steps` with this
    module's numerics: ``X`` and ``y`` moved to the model's device once (channels-last for a conv
    model when ``options.channels_last``), ``idx`` expected on that device (``sgd_steps(...,
    index_device=...)`` moves each epoch's order once), crop + flip on the device, bf16 autocast
    when ``options.bf16``, and the model compiled when ``options.compile`` names a mode. A
    compilation that fails on the first batch warns and falls back to eager mode."""
    dev = model_device(model)
    Xd, yd = X.to(dev), y.to(dev)
    if options.channels_last:
        Xd = _channels_last(model, Xd)
    layout = torch.channels_last if options.channels_last and Xd.ndim == 4 and _has_conv(model) else None
    aug, aug_gen = _augmenter(augment, dev, seed, layout is not None)
    loss_fn = nn.CrossEntropyLoss()
    state = {"net": model if options.compile is None else torch.compile(model, mode=options.compile), "tried": False}

    def forward(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with _autocast(dev, options.bf16):
            return loss_fn(net(xb).float(), yb)

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        xb, yb = Xd[idx], yd[idx]
        if aug is not None:
            xb = aug(xb, aug_gen)
        if layout is not None:
            xb = xb.contiguous(memory_format=layout)
        if state["net"] is model or state["tried"]:
            return forward(state["net"], xb, yb)
        state["tried"] = True       # the compiled module is tried on the first batch only
        try:
            return forward(state["net"], xb, yb)
        except Exception as exc:  # noqa: BLE001  (any compiler failure: carry on eagerly)
            warnings.warn(f"torch.compile(mode={options.compile!r}) failed ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); training continues in eager mode", RuntimeWarning)
            state["net"] = model
            return forward(model, xb, yb)

    return loss_of_batch


@torch.no_grad()
def predict_fast(model: nn.Module, X: torch.Tensor, batch_size: int = 1024, *, what: str = "logits",
                 bf16: bool | None = None, channels_last: bool | None = None) -> torch.Tensor:
    """Logits (``what="logits"``) or penultimate features (``what="features"``) ``[N, ...]``,
    float32 on the CPU, eval mode: inputs go to the device in chunks of up to 1 GiB, the batches
    run in bf16 / channels-last, and the outputs come back to the host in one copy."""
    if what not in ("logits", "features"):
        raise ValueError(f"what must be 'logits' or 'features', got {what!r}")
    if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[0] == 0:
        raise ValueError("cannot predict on an empty input" if isinstance(X, torch.Tensor) and X.shape[0] == 0
                         else f"X must be a [N, ...] tensor, got {getattr(X, 'shape', type(X).__name__)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = model_device(model)
    opts = resolve_options(dev, bf16, channels_last, False)
    conv = opts.channels_last and _has_conv(model)
    if conv:
        _channels_last(model)
    fn = model if what == "logits" else model.features
    row_bytes = max(1, X[0].numel() * X.element_size())
    chunk = max(batch_size, (_CHUNK_BYTES // row_bytes) // batch_size * batch_size)
    outs = []
    with eval_mode(model):
        for c in range(0, X.shape[0], chunk):
            Xc = X[c:c + chunk].to(dev, non_blocking=True)
            if conv and Xc.ndim == 4:
                Xc = Xc.contiguous(memory_format=torch.channels_last)
            for s in range(0, Xc.shape[0], batch_size):
                with _autocast(dev, opts.bf16):
                    outs.append(fn(Xc[s:s + batch_size]))
    return torch.cat(outs).float().cpu()
