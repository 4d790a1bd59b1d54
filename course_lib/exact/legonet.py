"""LegoNet (Yu et al., AAAI 2023): a frozen encoder plus ``n`` keyed adapters, exact unlearning
by re-training only the ``k`` adapters a deleted example activated.

The architecture (source 000, "Architecture and Feedforward Calculation", Eq. 1-2):

* a **frozen encoder** ``En`` pre-trained on *external* data that is never subject to deletion
  (:func:`pretrain_encoder` on a public pool, or :func:`imagenet_encoder`);
* ``n`` adapters ``a_j``, each a small sub-model (default: one linear layer) with a fixed **key**
  ``K_j`` in the encoding space. Keys are the encodings of ``n`` uniformly sampled training rows
  plus a small random perturbation (Eq. 3), fixed after initialisation;
* an input activates its ``k`` **nearest keys** (L2 distance, Eq. 1); the prediction is the mean
  of the activated adapters' outputs (Eq. 2; here: of their softmax probabilities).

Adapter ``a_j`` is trained only on ``D_aj``, the training rows that activate it (Eq. 4).
Unlearning a row (Algorithm 1) finds its ``k`` activated adapters, removes the row from their
sets and re-trains exactly those adapters from a fresh initialisation. The result is *bitwise*
the model you get by fitting from scratch on the retained rows with the same keys::

    net = LegoNet(encoder, n_adapters=100, k=10, seed=0).fit(X, y)
    report = net.unlearn(forget_ids)             # re-trains <= k * len(forget_ids) adapters
    fresh = LegoNet(encoder, n_adapters=100, k=10, seed=0).fit(X[keep], y[keep], ids=keep,
                                                                 keys=net.keys_)
    # every adapter parameter and every prediction of `net` and `fresh` are torch.equal

How exactness is kept while training adapters *together* (vectorised, not one Python loop per
adapter): adapters are trained in chunks of ``G`` slots with fixed-size mini-batches (rows padded
with weight 0), and adapter ``j`` always sits in slot ``j % G``. Every tensor op then has the
same shape and the adapter the same memory position whatever else shares its chunk, so its
arithmetic is identical (batched GEMMs on the CPU can depend on the slot position for odd
sizes; we measured this, hence the fixed slot). Adapter ``j``'s initial weights and batch order
come from ``config.derive_seed(seed, j, ...)`` and its own set of ids (sorted, then permuted),
never from a shared random stream. An adapter with fewer steps than its chunk-mates is frozen
on the steps it does not have (parameters *and* momentum buffer), so momentum and weight decay
cannot move it.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from .. import config, models, train
from .sisa import NotFittedError  # sklearn's NotFittedError that is also a RuntimeError
from ..device import exact_numerics  # one CPU thread / deterministic CUDA kernels
from .sisa import _check_ids, _check_int  # shared validation

Params = dict[str, torch.Tensor]
MakeAdapter = Callable[[int, int], nn.Module]

# Stream names for derive_seed(seed, adapter, STREAM): independent random streams per adapter.
_INIT, _ORDER = 0, 1
_KEY_STREAM = 2**31 - 1  # derive_seed(seed, _KEY_STREAM): sampling of the key rows and noise


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
    train.check_xy(X_public, y_public, "public pre-training data")
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
def encode(encoder: nn.Module | None, X: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Encodings ``[N, d]`` (float32, CPU) of inputs ``X [N, ...]``; ``encoder=None``: ``X`` already
    holds encodings ``[N, d]``.

    A row's encoding must not depend on the rows encoded with it, or a refit on the retained
    rows would differ in the last bits: rows go through the encoder in batches of exactly
    ``batch_size`` (the last one padded with zeros), and on the CPU oneDNN (mkldnn) is switched
    off, because its convolutions were measured to change a row's output in the last bit when
    its batch-mates change (PyTorch's own kernels do not). Compute encodings once and reuse them
    (e.g. ``LegoNet(None, ...)`` on cached encodings).
    """
    if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty tensor [N, ...], got "
                         f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}")
    if encoder is None:
        if X.ndim != 2:
            raise ValueError(f"without an encoder X must already be encodings [N, d], got shape {tuple(X.shape)}")
        return X.detach().float().cpu()
    dev = train.model_device(encoder)
    was_training = encoder.training
    encoder.eval()
    outs = []
    mkldnn = torch.backends.mkldnn.enabled
    try:
        if dev.type == "cpu":
            torch.backends.mkldnn.enabled = False
        for start in range(0, X.shape[0], batch_size):
            xb = X[start:start + batch_size]
            m = xb.shape[0]
            if m < batch_size:
                xb = torch.cat([xb, xb.new_zeros((batch_size - m, *xb.shape[1:]))])
            outs.append(encoder(xb.to(dev)).float().flatten(1)[:m].cpu())
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        encoder.train(was_training)
    return torch.cat(outs)


# ----------------------------------------------------------------------------- keys and activation

def sample_keys(E: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys by Monte-Carlo sampling (Eq. 3): ``K_j = E[r_j] + xi_j``.

    ``E [N, d]``: training encodings. ``n`` rows ``r`` are drawn uniformly without replacement;
    ``xi_j ~ N(0, (noise * s)^2 I)`` where ``s`` is the root-mean-square per-coordinate standard
    deviation of ``E`` (so ``noise`` is relative to the spread of the encodings; 0 = exact
    encodings). Returns ``(keys [n, d] float32, rows [n] int64)``.
    """
    N = E.shape[0]
    if not 1 <= n <= N:
        raise ValueError(f"cannot sample {n} keys from {N} training rows: need 1 <= n_adapters <= {N}")
    rows = torch.randperm(N, generator=generator)[:n]
    scale = E.double().var(dim=0, unbiased=False).mean().sqrt().float() if N > 1 else torch.tensor(1.0)
    xi = torch.randn(n, E.shape[1], generator=generator) * (float(noise) * scale)
    return E[rows].cpu().float() + xi, rows


def nearest_keys(E: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[N, k]`` of the ``k`` keys nearest to each encoding (nearest first).

    ``E [N, d]``, ``keys [n, d]``. Squared L2 distances in float64; ties go to the lower index.
    """
    if E.ndim != 2 or keys.ndim != 2 or E.shape[1] != keys.shape[1]:
        raise ValueError(f"need encodings [N, d] and keys [n, d] with the same d; got {tuple(E.shape)} "
                         f"and {tuple(keys.shape)}")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must be between 1 and the number of keys ({keys.shape[0]}), got {k}")
    Kd = keys.to(E.device, torch.float64)
    budget = 2**19 if E.device.type == "cpu" else 2**26     # CPU: keep the [chunk, n, d] difference in cache
    rows_per_chunk = max(1, budget // (keys.shape[0] * keys.shape[1]))
    out = []
    with exact_numerics(E.device):
        for start in range(0, E.shape[0], rows_per_chunk):
            e = E[start:start + rows_per_chunk].to(torch.float64)
            d2 = ((e[:, None, :] - Kd[None]) ** 2).sum(-1)  # [chunk, n]
            out.append(torch.sort(d2, dim=1, stable=True).indices[:, :k])
    return torch.cat(out)


# ----------------------------------------------------------------------------- adapter banks

class _Bank:
    """Stacked adapters: parameters as ``{name: [S, ...]}`` with a leading slot axis."""

    def __init__(self, make: Callable[[], nn.Module]):
        self._make = make
        self.make = lambda: models.seeded(make, 0)  # never touches the global random stream
        self.base = self.make().to("meta")

    def init(self, seeds: list[int | None], device: torch.device) -> Params:
        """Parameters for slots; slot ``i`` is built under ``seeds[i]``, or zeros for a dummy (None)."""
        mods = [models.seeded(self._make, s) if s is not None else None for s in seeds]
        template = next((m for m in mods if m is not None), None)
        if template is None:
            raise ValueError("a chunk needs at least one real adapter")
        mods = [m if m is not None else _zeros_like(template) for m in mods]
        params, _ = stack_module_state(mods)
        return {n: p.detach().to(device) for n, p in params.items()}

    def grads(self, params: Params, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Params:
        """Per-slot gradient of ``sum_b w[s, b] * CE(M_s(X[s, b]), y[s, b])``; ``X [S, B, d]``.

        One vmapped forward over the slots and one backward of the summed loss: slots share no
        parameters, so each slot's gradient is exactly that of its own loss."""
        with torch.enable_grad():
            P = {n: p.detach().requires_grad_() for n, p in params.items()}
            out = self.logits(P, X)                                               # [S, B, C]
            loss = (F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none") * w.flatten()).sum()
            return dict(zip(P, torch.autograd.grad(loss, list(P.values()))))

    def logits(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        """Slot ``s`` applied to ``X[s]``: ``X [S, B, d]`` -> ``[S, B, C]``."""
        return vmap(lambda p, x: functional_call(self.base, p, (x,)))(params, X)

    def activated_logits(self, params: Params, E: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Outputs ``[r, k, C]`` of the adapters ``act [r, k]`` on their rows ``E [r, d]``: the ``k``
        adapters' parameters are gathered per row and applied with one vmapped call."""
        r, k = act.shape
        pairs = {n: p[act.flatten()] for n, p in params.items()}
        return self.logits(pairs, E.repeat_interleave(k, 0)[:, None, :])[:, 0].view(r, k, -1)

    def chunk_rows(self, params: Params, k: int) -> int:
        """Rows per prediction chunk, so that the gathered parameters stay near 64 MB."""
        per_adapter = sum(p[0].numel() for p in params.values())
        return max(1, min(1024, 2**24 // (k * per_adapter)))


class _LinearBank(_Bank):
    """The default adapter, ``nn.Linear(d, C)``, with hand-written batched forward and gradient
    (two ``bmm`` per step instead of a ``vmap`` trace: several times faster on a CPU)."""

    def grads(self, params: Params, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Params:
        p = torch.softmax(self.logits(params, X), dim=-1)
        g = (p - F.one_hot(y, p.shape[-1]).to(p.dtype)) * w[..., None]       # dL/dlogits [S, B, C]
        return {"weight": torch.bmm(g.transpose(1, 2), X), "bias": g.sum(1)}

    def logits(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(params["bias"][:, None, :], X, params["weight"].transpose(1, 2))

    def activated_logits(self, params: Params, E: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """All ``n`` adapters in one matrix product, then the ``k`` activated ones picked: ``n / k``
        times the arithmetic of the source's count (:meth:`LegoNet.cost`), but one GEMM instead of
        gathering ``k`` weight matrices per row, which is several times faster on a CPU."""
        n, C, d = params["weight"].shape
        every = torch.addmm(params["bias"].reshape(-1), E, params["weight"].reshape(n * C, d).T).view(-1, n, C)
        return every.gather(1, act[:, :, None].expand(-1, -1, C))

    def chunk_rows(self, params: Params, k: int) -> int:
        n, C, _ = params["weight"].shape
        return max(1, min(4096, 2**22 // (n * C)))


def _zeros_like(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    return m


# ----------------------------------------------------------------------------- the model

@dataclass
class UnlearnReport:
    """What one :meth:`LegoNet.unlearn` request did.

    ``ids``: the removed ids; ``adapters``: the re-trained adapters (sorted); ``samples``: rows
    used to re-train them (sum of their remaining ``|D_aj|``); ``steps``: SGD steps summed over
    those adapters; ``seconds``: wall clock of the whole request; ``key_sources``: removed ids
    whose encodings seeded a key (the key keeps a noisy copy of them; see the lecture).
    """

    ids: list[int]
    adapters: list[int]
    samples: int
    steps: int
    seconds: float
    key_sources: list[int] = field(default_factory=list)

    def __getitem__(self, key: str):
        """Dictionary-style access, ``report["seconds"]``, as for SISA's reports."""
        if key not in self.__dataclass_fields__:
            raise KeyError(f"{key!r}: a report has {', '.join(self.__dataclass_fields__)}")
        return getattr(self, key)

    def __str__(self) -> str:
        return (f"unlearned {len(self.ids)} row(s): re-trained {len(self.adapters)} adapter(s) on "
                f"{self.samples} samples ({self.steps} steps) in {self.seconds * 1e3:.1f} ms")


class LegoNet:
    """Fixed encoder + ``n_adapters`` keyed adapters, ``k`` of them active per input.

    Parameters
    ----------
    encoder : frozen module mapping inputs ``[N, ...]`` to encodings ``[N, d]``, or None when the
        inputs already are encodings (e.g. cached with :func:`encode`).
    n_adapters : number of adapters ``n`` (at most the number of training rows when keys are sampled).
    k : adapters activated per input, ``1 <= k <= n``.
    key_noise : standard deviation of the key perturbation relative to the spread of the
        encodings (see :func:`sample_keys`); 0 gives keys equal to training encodings.
    make_adapter : ``make_adapter(d, n_classes) -> nn.Module`` (or a zero-argument factory) for a
        module mapping ``[B, d]`` to logits ``[B, n_classes]``, without buffers; trained with
        ``torch.func`` (stacked parameters, ``vmap``). None: a linear layer (the source's choice).
    epochs, lr, batch_size, momentum, weight_decay, schedule : SGD for each adapter on its own
        set ``D_aj`` (cross-entropy; schedule "cosine" or "constant" over the adapter's own steps).
    n_classes : number of classes; None: ``max(y) + 1`` at fit. Give it when a whole class with
        the largest label may be deleted, so that a refit on the retained data has the same shape.
    chunk_size : adapters trained together (slots ``G``); part of the arithmetic, so changing it
        changes the bits (not the maths) of the result.
    seed : all randomness (keys, each adapter's init and batch order) derives from it.
    device : where adapters train; None: the encoder's device (CPU without an encoder).

    Fitted attributes: ``keys_ [n, d]``, ``key_rows_`` (ids whose encodings seeded the keys, or
    None when keys were given), ``members_`` (list of ``n`` sorted id tensors, ``D_aj``),
    ``ids_`` (the ids still in the training set, sorted), ``n_classes_``, ``params_``
    (``{name: [n, ...]}`` stacked adapter parameters), ``fit_seconds_`` (of which
    ``encode_seconds_`` went to the encoder), ``requests_`` (every :class:`UnlearnReport`, in order).
    """

    def __init__(self, encoder: nn.Module | None, n_adapters: int = 100, k: int = 10, key_noise: float = 0.05,
                 make_adapter: MakeAdapter | None = None, epochs: int = 20, *, lr: float = 0.1,
                 batch_size: int = 32, momentum: float = 0.9, weight_decay: float = 5e-4,
                 schedule: str = "cosine", n_classes: int | None = None, chunk_size: int = 16,
                 seed: int = 0, device: torch.device | str | None = None):
        _check_int(n_adapters, "n_adapters", 1)
        _check_int(k, "k", 1)
        if k > n_adapters:
            raise ValueError(f"k={k} adapters cannot be activated out of n_adapters={n_adapters}: need k <= n_adapters")
        if not (isinstance(key_noise, (int, float)) and math.isfinite(key_noise) and key_noise >= 0):
            raise ValueError(f"key_noise must be a finite number >= 0, got {key_noise!r}")
        if make_adapter is not None and not callable(make_adapter):
            raise ValueError("make_adapter must be a callable make_adapter(d, n_classes) -> nn.Module, or None")
        _check_int(epochs, "epochs", 1)
        _check_int(batch_size, "batch_size", 1)
        _check_int(chunk_size, "chunk_size", 1)
        _check_int(seed, "seed", 0)
        if n_classes is not None:
            _check_int(n_classes, "n_classes", 2)
        if not lr > 0 or not 0 <= momentum < 1 or not weight_decay >= 0:
            raise ValueError(f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {lr}, {momentum}, {weight_decay}")
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        self.encoder, self.n_adapters, self.k, self.key_noise = encoder, n_adapters, k, float(key_noise)
        self.make_adapter, self.epochs, self.lr, self.batch_size = make_adapter, epochs, lr, batch_size
        self.momentum, self.weight_decay, self.schedule = momentum, weight_decay, schedule
        self.n_classes, self.chunk_size, self.seed = n_classes, chunk_size, seed
        self.device = torch.device(device) if device is not None else (
            train.model_device(encoder) if encoder is not None else torch.device("cpu"))

    # ------------------------------------------------------------------ fitting

    def fit(self, X: torch.Tensor, y: torch.Tensor, ids=None, keys: torch.Tensor | None = None) -> "LegoNet":
        """Encode ``X [N, ...]`` once, set the keys, record each ``D_aj`` and train all adapters.

        ``y [N]`` int64 labels; ``ids [N]`` unique integer ids of the rows (default
        ``0..N-1``; :meth:`unlearn` takes them); ``keys [n_adapters, d]`` fixed keys to use
        instead of sampling (e.g. ``old.keys_`` to refit on retained data). The fitted model
        does not depend on the order of the rows, only on which (id, row) pairs are given.
        """
        train.check_xy(X, y, "training data")
        N = X.shape[0]
        ids = _check_ids(ids, N)
        if int(y.min()) < 0:
            raise ValueError("labels must be non-negative class indices")
        self.n_classes_ = int(y.max()) + 1 if self.n_classes is None else self.n_classes
        if int(y.max()) >= self.n_classes_:
            raise ValueError(f"labels go up to {int(y.max())} but n_classes={self.n_classes_}")
        order = torch.argsort(ids)
        for attr in ("params_", "keys_", "members_"):   # a failed refit leaves an unfitted model
            self.__dict__.pop(attr, None)
        with train.Stopwatch() as sw:
            E = encode(self.encoder, X[order]).to(self.device)
        self.encode_seconds_ = sw.seconds
        d = E.shape[1]
        if keys is not None:
            keys = torch.as_tensor(keys)
            if keys.shape != (self.n_adapters, d) or not keys.dtype.is_floating_point \
                    or not torch.isfinite(keys).all():
                raise ValueError(f"keys must be finite floats of shape [n_adapters, d] = "
                                 f"{(self.n_adapters, d)}, got {tuple(keys.shape)} {keys.dtype}")
        elif self.n_adapters > N:
            raise ValueError(f"n_adapters={self.n_adapters} keys cannot be sampled from {N} training rows: "
                             f"use at most {N} adapters, or pass keys")
        with train.Stopwatch() as sw:
            self.ids_, self._E, self._y = ids[order], E, y[order].to(self.device)
            if keys is None:
                gen = torch.Generator().manual_seed(config.derive_seed(self.seed, _KEY_STREAM))
                keys, rows = sample_keys(E.cpu(), self.n_adapters, self.key_noise, gen)
                self.key_rows_ = self.ids_[rows]
            else:
                self.key_rows_ = None
            keys = keys.detach().float().cpu().clone()
            act = nearest_keys(E, keys, self.k).cpu()                               # [N, k]
            self.members_ = _members(act, self.ids_, self.n_adapters)
            self._bank = self._make_bank(d)
            self._params = None
            self._train_adapters(list(range(self.n_adapters)))
            self.keys_, self.params_, self.requests_ = keys, self._params, []
        self.fit_seconds_ = self.encode_seconds_ + sw.seconds
        return self

    def _make_bank(self, d: int) -> _Bank:
        C = self.n_classes_
        if self.make_adapter is None:
            return _LinearBank(lambda: nn.Linear(d, C))
        make = _zero_arg(self.make_adapter, d, C)
        probe = models.seeded(make, 0)
        if not isinstance(probe, nn.Module) or any(True for _ in probe.buffers()):
            raise ValueError("make_adapter must return an nn.Module without buffers (no batch norm)")
        return _Bank(make)

    def _plan(self, adapters: list[int]) -> list[list[int | None]]:
        """Chunks of ``G`` slots; adapter ``j`` always sits in slot ``j % G``; empty slots None."""
        G = min(self.chunk_size, self.n_adapters)
        by_slot: dict[int, list[int]] = {}
        for j in sorted(adapters):
            by_slot.setdefault(j % G, []).append(j)
        depth = max((len(v) for v in by_slot.values()), default=0)
        return [[by_slot[s][c] if c < len(by_slot.get(s, [])) else None for s in range(G)] for c in range(depth)]

    def _schedule(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapter ``j``'s rows per step ``[T, B]`` (positions into the cache, -1 = padding) and
        per-row loss weights ``[T, B]`` (1 / rows in the batch, 0 for padding)."""
        B = self.batch_size
        pos = torch.searchsorted(self.ids_, self.members_[j])                  # sorted by id
        m = pos.numel()
        if m == 0:
            return torch.empty(0, B, dtype=torch.long), torch.empty(0, B)
        spe = -(-m // B)
        gen = torch.Generator().manual_seed(config.derive_seed(self.seed, j, _ORDER))
        rows = torch.full((self.epochs, spe * B), -1, dtype=torch.long)
        for e in range(self.epochs):
            rows[e, :m] = pos[torch.randperm(m, generator=gen)]
        rows = rows.view(-1, B)
        valid = rows >= 0
        w = valid.float() / valid.sum(1, keepdim=True).float()
        return rows, w

    def _lr(self, T: int) -> torch.Tensor:
        t = np.arange(T, dtype=np.float64)
        lr = self.lr * 0.5 * (1 + np.cos(np.pi * t / T)) if self.schedule == "cosine" else np.full(T, self.lr)
        return torch.from_numpy(lr).float()

    def _train_adapters(self, adapters: list[int]) -> int:
        """(Re-)train ``adapters`` from their fresh initialisation; returns SGD steps taken."""
        with exact_numerics(self.device):
            return sum(self._train_chunk(chunk) for chunk in self._plan(adapters))

    def _train_chunk(self, chunk: list[int | None]) -> int:
        G, B, dev = len(chunk), self.batch_size, self.device
        params = self._bank.init([config.derive_seed(self.seed, j, _INIT) if j is not None else None
                                  for j in chunk], dev)
        plans = [self._schedule(j) if j is not None else (torch.empty(0, B, dtype=torch.long), torch.empty(0, B))
                 for j in chunk]
        Ts = [r.shape[0] for r, _ in plans]
        T = max(Ts)
        rows = torch.zeros(G, T, B, dtype=torch.long)
        wts = torch.zeros(G, T, B)
        lrs = torch.zeros(G, T)
        for s, ((r, w), Tj) in enumerate(zip(plans, Ts)):
            if Tj:
                rows[s, :Tj], wts[s, :Tj], lrs[s, :Tj] = r.clamp(min=0), w, self._lr(Tj)
        active = torch.arange(T)[None, :] < torch.tensor(Ts)[:, None]            # [G, T]
        rows, wts, lrs, active = rows.to(dev), wts.to(dev), lrs.to(dev), active.to(dev)
        bufs = {n: torch.zeros_like(p) for n, p in params.items()}
        mu, wd = self.momentum, self.weight_decay
        with torch.no_grad():
            for t in range(T):
                idx = rows[:, t]                                                   # [G, B]
                grads = self._bank.grads(params, self._E[idx], self._y[idx], wts[:, t])
                for n, p in params.items():
                    shape = (G,) + (1,) * (p.ndim - 1)
                    on, lr = active[:, t].view(shape), lrs[:, t].view(shape)
                    buf = bufs[n] * mu + (grads[n] + p * wd)
                    bufs[n] = torch.where(on, buf, bufs[n])
                    params[n] = torch.where(on, p - lr * buf, p)
        self._store(chunk, params)
        return sum(Ts)

    def _store(self, chunk: list[int | None], params: Params) -> None:
        slots = [s for s, j in enumerate(chunk) if j is not None]
        where = torch.tensor([chunk[s] for s in slots], device=self.device)
        if self._params is None:
            self._params = {n: torch.zeros((self.n_adapters,) + p.shape[1:], dtype=p.dtype, device=p.device)
                            for n, p in params.items()}
        for n, p in params.items():
            self._params[n][where] = p[torch.tensor(slots, device=self.device)]

    # ------------------------------------------------------------------ inference

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError("this LegoNet is not fitted yet: call fit(X, y) first")

    def activate(self, X: torch.Tensor) -> torch.Tensor:
        """Indices ``[N, k]`` of the adapters each input activates, nearest key first."""
        self._check_fitted()
        return nearest_keys(encode(self.encoder, X), self.keys_, self.k)

    @torch.no_grad()
    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Mean of the ``k`` activated adapters' softmax outputs (Eq. 2): ``[N, n_classes]`` on the CPU."""
        self._check_fitted()
        E = encode(self.encoder, X)
        act = nearest_keys(E, self.keys_, self.k)                                  # [N, k]
        rows = self._bank.chunk_rows(self.params_, self.k)
        out = []
        with exact_numerics(self.device):
            for start in range(0, E.shape[0], rows):
                logits = self._bank.activated_logits(self.params_, E[start:start + rows].to(self.device),
                                                     act[start:start + rows].to(self.device))  # [r, k, C]
                out.append(torch.softmax(logits.float(), -1).mean(1).cpu())
        return torch.cat(out)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``[N]`` (int64): the argmax of :meth:`predict_proba`."""
        return self.predict_proba(X).argmax(1)

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy in percent (0-100), as everywhere in the course."""
        train.check_xy(X, y, "evaluation data")
        return 100.0 * (self.predict(X) == y.cpu()).double().mean().item()

    # ------------------------------------------------------------------ unlearning

    def unlearn(self, ids) -> UnlearnReport:
        """Exactly remove the rows with these ids (Algorithm 1); returns an :class:`UnlearnReport`.

        The removed rows' encodings find their ``k`` activated adapters; the rows leave those
        adapters' sets ``D_aj`` (and the model's cache) and only those adapters are re-trained
        from their fresh initialisation. Unknown or already removed ids raise ValueError and
        change nothing.
        """
        self._check_fitted()
        with train.Stopwatch() as sw:
            ids = _check_ids(ids, None, what="ids to unlearn")
            present = torch.isin(ids, self.ids_)
            if not present.all():
                raise ValueError(f"ids {ids[~present][:5].tolist()} are not in the training set (unknown or "
                                 f"already unlearned); nothing was changed")
            pos = torch.searchsorted(self.ids_, ids)
            keep = ~torch.isin(self.ids_, ids)
            if not keep.any():
                raise ValueError("this request would remove every remaining row; nothing would be left to "
                                 "train on (nothing was changed)")
            left = self._y[keep.to(self.device)]
            if self.n_classes is None and int(left.max()) + 1 != self.n_classes_:
                raise ValueError(f"this request removes every row of class {self.n_classes_ - 1}, the largest "
                                 f"label: a refit on the rest would have fewer outputs, so no unlearning could "
                                 f"equal it. Construct the model with n_classes={self.n_classes_} (nothing was "
                                 f"changed)")
            act = nearest_keys(self._E[pos.to(self.device)], self.keys_, self.k).cpu()   # Algorithm 1, line 1-2
            affected = torch.unique(act).tolist()
            for j in affected:
                gone = torch.isin(self.members_[j], ids)
                if int(gone.sum()) != int((act == j).any(1).sum()):
                    raise RuntimeError(f"internal error: the records of adapter {j} disagree with its activation")
                self.members_[j] = self.members_[j][~gone]
            self.ids_ = self.ids_[keep]
            self._E, self._y = self._E[keep.to(self.device)], self._y[keep.to(self.device)]
            self._params = {n: p.clone() for n, p in self.params_.items()}  # earlier views stay valid
            steps = self._train_adapters(affected)
            self.params_ = self._params
        key_sources = [] if self.key_rows_ is None else \
            sorted(self.key_rows_[torch.isin(self.key_rows_, ids)].tolist())
        report = UnlearnReport(ids=sorted(ids.tolist()), adapters=affected,
                               samples=int(sum(self.members_[j].numel() for j in affected)),
                               steps=steps, seconds=sw.seconds, key_sources=key_sources)
        self.requests_.append(report)
        return report

    # ------------------------------------------------------------------ diagnostics

    @property
    def sizes_(self) -> torch.Tensor:
        """``|D_aj|`` for every adapter, ``[n]`` int64."""
        self._check_fitted()
        return torch.tensor([m.numel() for m in self.members_])

    def adapter(self, j: int) -> nn.Module:
        """Adapter ``j`` as a stand-alone module (a copy), e.g. to inspect or compare it."""
        self._check_fitted()
        if not 0 <= j < self.n_adapters:
            raise ValueError(f"adapter index must be in [0, {self.n_adapters}), got {j}")
        m = self._bank.make()
        m.load_state_dict({n: p[j].detach().cpu() for n, p in self.params_.items()})
        return m

    def cost(self, input_shape: tuple[int, ...] | None = None) -> dict[str, int]:
        """Parameters and inference FLOPs per input, counted analytically.

        FLOPs = encoder forward once (``torch.utils.flop_counter``, 2 per multiply-add; needs
        ``input_shape`` = one input's shape, e.g. ``(1, 8, 8)``) + ``n`` squared distances
        (``3d`` each) + ``k`` adapter forwards + the mean of ``k`` outputs. Parameters =
        encoder + ``n`` adapters + ``n`` keys of size ``d``; "retrained per request" = ``k``
        adapters.
        """
        self._check_fitted()
        d, C = self.keys_.shape[1], self.n_classes_
        adapter_params = sum(p[0].numel() for p in self.params_.values())
        adapter_flops = count_flops(self._bank.make(), (d,))
        enc_params = 0 if self.encoder is None else sum(p.numel() for p in self.encoder.parameters())
        enc_flops = 0 if (self.encoder is None or input_shape is None) else count_flops(self.encoder, input_shape)
        return {"encoder_params": enc_params, "adapter_params": adapter_params,
                "total_params": enc_params + self.n_adapters * (adapter_params + d),
                "retrained_params_per_request": self.k * adapter_params,
                "encoder_flops": enc_flops, "activation_flops": 3 * d * self.n_adapters,
                "adapter_flops": self.k * adapter_flops + self.k * C,
                "total_flops": enc_flops + 3 * d * self.n_adapters + self.k * (adapter_flops + C)}

    def __repr__(self) -> str:
        return (f"LegoNet(n_adapters={self.n_adapters}, k={self.k}, key_noise={self.key_noise}, "
                f"epochs={self.epochs}, seed={self.seed})")


def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input of ``input_shape`` (2 per multiply-add; counts
    matrix products and convolutions, as ``torch.utils.flop_counter`` does)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(module.parameters(), None)
    x = torch.zeros((1, *input_shape), device=p.device if p is not None else "cpu")
    was_training = module.training
    module.eval()                                   # batch norm cannot run training mode on one input
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- helpers

def _members(act: torch.Tensor, ids: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``D_aj`` for every adapter from the activation table ``act [N, k]`` of rows with ``ids``."""
    k = act.shape[1]
    flat_adapter = act.flatten()
    flat_id = ids.repeat_interleave(k)
    order = torch.argsort(flat_adapter, stable=True)  # rows come sorted by id and stay so per adapter
    counts = torch.bincount(flat_adapter, minlength=n).tolist()
    return [m.clone() for m in torch.split(flat_id[order], counts)]


def _zero_arg(make_adapter: Callable, d: int, C: int) -> Callable[[], nn.Module]:
    """``make_adapter(d, C)``, or ``make_adapter()`` for a factory that takes no arguments."""
    try:
        inspect.signature(make_adapter).bind(d, C)
        return lambda: make_adapter(d, C)
    except TypeError:
        try:
            inspect.signature(make_adapter).bind()
        except TypeError:
            raise ValueError("make_adapter must take (d, n_classes) or no arguments") from None
        return make_adapter
    except ValueError:  # no signature available (some builtins): assume (d, C)
        return lambda: make_adapter(d, C)
