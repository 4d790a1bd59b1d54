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
    report = net.unlearn(forget_ids)             # a LegoNetReport: <= k * len(forget_ids) adapters
    fresh = clone(net).fit(X[keep], y[keep], ids=keep, **net.refit_kwargs())   # keys=net.keys_
    # every adapter parameter and every prediction of `net` and `fresh` are torch.equal

How exactness is kept while training adapters *together* (vectorised on :mod:`course_lib.engine`,
not one Python loop per adapter): adapters are trained in chunks of ``G`` slots with fixed-size
mini-batches (rows padded with weight 0), and adapter ``j`` always sits in slot ``j % G``. Every tensor op then has the
same shape and the adapter the same memory position whatever else shares its chunk, so its
arithmetic is identical (batched GEMMs on the CPU can depend on the slot position for odd
sizes; we measured this, hence the fixed slot). Adapter ``j``'s initial weights and batch order
come from ``config.derive_seed(seed, j, ...)`` and its own set of ids (sorted, then permuted),
never from a shared random stream. An adapter with fewer steps than its chunk-mates is frozen
on the steps it does not have (parameters *and* momentum buffer), so momentum and weight decay
cannot move it.

Exactness also needs a row's *encoding* to be a function of the row alone (a refit re-encodes the
retained rows): :func:`~course_lib.exact.encoders.encode` encodes row by row by default
(``encode_batch_size=1``); with larger encoding batches only the cached encodings
(``encodings_``), on which unlearning runs, are exact.

Module layout: encoders in :mod:`course_lib.exact.encoders`, keys, activation and adapter banks
in :mod:`course_lib.exact.adapters`, cost formulas in :mod:`course_lib.exact.costs`.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from .. import config, engine, models, train
from ..device import exact_numerics  # one CPU thread / deterministic CUDA kernels
from ..params import Params, model_device
from ..validation import NotFittedError, check_ids, check_int, check_number, check_sgd, check_xy  # noqa: F401
from . import costs
from .adapters import Bank, LinearBank, members_of, nearest_keys, sample_keys
from .base import ExactEstimator, LegoNetReport, UnlearnReport, as_device, clone  # noqa: F401
from .encoders import (EncoderUnavailableError, FrozenEncoder, count_flops, encode, imagenet_encoder,  # noqa: F401
                       imagenet_network, pretrain_encoder)

MakeAdapter = Callable[[int, int], nn.Module]

# Stream names for derive_seed(seed, adapter, STREAM): independent random streams per adapter.
_INIT, _ORDER = 0, 1
_KEY_STREAM = 2**31 - 1  # derive_seed(seed, _KEY_STREAM): sampling of the key rows and noise


class LegoNet(ExactEstimator):
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
        A smoke run's budget (:func:`course_lib.config.budget`) caps the batch size and the steps.
    n_classes : number of classes; None: ``max(y) + 1`` at fit. Give it when a whole class with
        the largest label may be deleted, so that a refit on the retained data has the same shape.
    chunk_size : adapters trained together (slots ``G``); part of the arithmetic, so changing it
        changes the bits (not the maths) of the result.
    seed : all randomness (keys, each adapter's init and batch order) derives from it.
    device : where adapters train; None: the encoder's device (CPU without an encoder).
    encode_batch_size : rows per encoder forward (see :func:`~course_lib.exact.encoders.encode`):
        1 (default) makes every encoding a function of its row alone, so a refit on raw inputs
        reproduces the cached encodings bitwise; larger is faster, exact on ``encodings_`` only.

    As in scikit-learn the constructor only stores its arguments; ``fit`` checks them.

    Fitted attributes: ``keys_ [n, d]``, ``key_rows_`` (ids whose encodings seeded the keys, or
    None when keys were given), ``members_`` (list of ``n`` sorted id tensors, ``D_aj``),
    ``ids_`` (the ids still in the training set, sorted), ``n_classes_``, ``device_``, ``params_``
    (``{name: [n, ...]}`` stacked adapter parameters), ``fit_samples_``, ``fit_steps_``,
    ``fit_seconds_`` (of which ``encode_seconds_`` went to the encoder), ``encodings_`` (``[N, d]``,
    the cached encodings of ``ids_``), ``requests_`` (every :class:`~course_lib.exact.base.LegoNetReport`,
    in order).
    """

    def __init__(self, encoder: nn.Module | None, n_adapters: int = 100, k: int = 10, key_noise: float = 0.05,
                 make_adapter: MakeAdapter | None = None, epochs: int = 20, *, lr: float = 0.1,
                 batch_size: int = 32, momentum: float = 0.9, weight_decay: float = 5e-4,
                 schedule: str = "cosine", n_classes: int | None = None, chunk_size: int = 16,
                 seed: int = 0, device: torch.device | str | None = None, encode_batch_size: int = 1):
        self.encoder, self.n_adapters, self.k, self.key_noise = encoder, n_adapters, k, key_noise
        self.make_adapter, self.epochs, self.lr, self.batch_size = make_adapter, epochs, lr, batch_size
        self.momentum, self.weight_decay, self.schedule = momentum, weight_decay, schedule
        self.n_classes, self.chunk_size, self.seed = n_classes, chunk_size, seed
        self.device, self.encode_batch_size = device, encode_batch_size

    # ------------------------------------------------------------------ fitting

    def _check_params(self) -> None:
        """Validate the constructor's arguments (ValueError saying which and why)."""
        if self.encoder is not None and not isinstance(self.encoder, nn.Module):
            raise ValueError(f"encoder must be an nn.Module or None, got {type(self.encoder).__name__}")
        check_int(self.n_adapters, "n_adapters", 1)
        check_int(self.k, "k", 1)
        if self.k > self.n_adapters:
            raise ValueError(f"k={self.k} adapters cannot be activated out of n_adapters={self.n_adapters}: "
                             f"need k <= n_adapters")
        check_number(self.key_noise, "key_noise", 0.0)
        if self.make_adapter is not None and not callable(self.make_adapter):
            raise ValueError("make_adapter must be a callable make_adapter(d, n_classes) -> nn.Module, or None")
        check_int(self.epochs, "epochs", 1)
        check_int(self.chunk_size, "chunk_size", 1)
        check_int(self.seed, "seed", 0)
        if self.n_classes is not None:
            check_int(self.n_classes, "n_classes", 2)
        check_sgd(self.epochs, self.batch_size, self.lr, self.momentum, self.weight_decay, self.schedule)
        check_number(self.lr, "lr", 0.0, lo_open=True)
        check_int(self.encode_batch_size, "encode_batch_size", 1)
        as_device(self.device)

    def fit(self, X: torch.Tensor, y: torch.Tensor, ids=None, keys: torch.Tensor | None = None) -> "LegoNet":
        """Encode ``X [N, ...]`` once, set the keys, record each ``D_aj`` and train all adapters.

        ``y [N]`` int64 labels; ``ids [N]`` unique integer ids of the rows (default
        ``0..N-1``; :meth:`unlearn` takes them); ``keys [n_adapters, d]`` fixed keys to use
        instead of sampling (e.g. ``old.keys_`` to refit on retained data). The fitted model
        does not depend on the order of the rows, only on which (id, row) pairs are given.
        """
        self._check_params()
        check_xy(X, y, "training data")
        N = X.shape[0]
        ids = check_ids(ids, N)
        if int(y.min()) < 0:
            raise ValueError("labels must be non-negative class indices")
        n_classes = int(y.max()) + 1 if self.n_classes is None else self.n_classes
        if int(y.max()) >= n_classes:
            raise ValueError(f"labels go up to {int(y.max())} but n_classes={n_classes}")
        order = torch.argsort(ids)
        for attr in ("params_", "keys_", "members_"):   # a failed refit leaves an unfitted model
            self.__dict__.pop(attr, None)
        self.n_classes_ = n_classes
        self.device_ = as_device(self.device) or (
            model_device(self.encoder) if self.encoder is not None else torch.device("cpu"))
        self._budget = config.budget()
        with train.Stopwatch() as sw:
            E = encode(self.encoder, X[order], self.encode_batch_size).to(self.device_)
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
            self.ids_, self._E, self._y = ids[order], E, y[order].to(self.device_)
            if keys is None:
                gen = torch.Generator().manual_seed(config.derive_seed(self.seed, _KEY_STREAM))
                keys, rows = sample_keys(E.cpu(), self.n_adapters, float(self.key_noise), gen)
                self.key_rows_ = self.ids_[rows]
            else:
                self.key_rows_ = None
            keys = keys.detach().float().cpu().clone()
            act = nearest_keys(E, keys, self.k).cpu()                               # [N, k]
            self.members_ = members_of(act, self.ids_, self.n_adapters)
            self._bank = self._make_bank(d)
            self._params = None
            self.fit_samples_, self.fit_steps_ = self._train_adapters(list(range(self.n_adapters)))
            self.keys_, self.params_ = keys, self._params
            self._start_log()
        self.fit_seconds_ = self.encode_seconds_ + sw.seconds
        return self

    def _make_bank(self, d: int) -> Bank:
        C = self.n_classes_
        if self.make_adapter is None:
            return LinearBank(lambda: nn.Linear(d, C))
        make = _zero_arg(self.make_adapter, d, C)
        probe = models.seeded(make, 0)
        if not isinstance(probe, nn.Module) or any(True for _ in probe.buffers()):
            raise ValueError("make_adapter must return an nn.Module without buffers (no batch norm)")
        return Bank(make)

    def refit_kwargs(self) -> dict:
        """A refit on the retained rows must use the same keys: ``{"keys": keys_}``."""
        self.check_is_fitted()
        return {"keys": self.keys_}

    @property
    def _batch(self) -> int:
        """Rows per mini-batch: ``batch_size`` under the fit's budget (smoke runs cap it)."""
        return self._budget.cap_batch(self.batch_size)

    def _plan(self, j: int) -> engine.Plan:
        """Adapter ``j``'s run: its rows (sorted by id), permuted every epoch by the stream
        ``(seed, j, ORDER)``, in even batches (:func:`course_lib.engine.batch_plan`)."""
        pos = torch.searchsorted(self.ids_, self.members_[j])
        gen = torch.Generator().manual_seed(config.derive_seed(self.seed, j, _ORDER))
        orders = [pos[torch.randperm(pos.numel(), generator=gen)] for _ in range(self.epochs if pos.numel() else 0)]
        return engine.batch_plan(orders, self._batch, self._pad, self.lr, self.schedule, self._budget)

    def _train_adapters(self, adapters: list[int]) -> tuple[int, int]:
        """(Re-)train ``adapters`` from their fresh initialisation; returns the samples and SGD
        steps their plans took (what the engine ran)."""
        G = min(self.chunk_size, self.n_adapters)
        E = torch.cat([self._E, self._E.new_zeros(1, self._E.shape[1])])          # + the padding row
        y = torch.cat([self._y, self._y.new_zeros(1)])
        self._pad = self._E.shape[0]
        grads = lambda P, rows, w: self._bank.grads(P, E[rows], y[rows], w)       # noqa: E731
        samples = steps = 0
        with exact_numerics(self.device_):
            for chunk in engine.slot_groups(adapters, G):
                P = self._bank.init([config.derive_seed(self.seed, j, _INIT) if j is not None else None
                                     for j in chunk], self.device_)
                M = {n: torch.zeros_like(p) for n, p in P.items()}
                plans = [self._plan(j) if j is not None else engine.Plan.empty(self._batch) for j in chunk]
                P, _ = engine.train_slots(P, M, plans, grads, pad=self._pad, momentum=self.momentum,
                                          weight_decay=self.weight_decay, device=self.device_)
                self._put(chunk, P)
                samples += sum(p.samples for p in plans)
                steps += sum(p.steps for p in plans)
        return samples, steps

    def _put(self, chunk: list[int | None], params: Params) -> None:
        """Copy the real slots of a trained chunk into the stacked parameters of all adapters."""
        slots = [s for s, j in enumerate(chunk) if j is not None]
        where = torch.tensor([chunk[s] for s in slots], device=self.device_)
        if self._params is None:
            self._params = {n: torch.zeros((self.n_adapters,) + p.shape[1:], dtype=p.dtype, device=p.device)
                            for n, p in params.items()}
        for n, p in params.items():
            self._params[n][where] = p[torch.tensor(slots, device=self.device_)]

    # ------------------------------------------------------------------ inference

    def activate(self, X: torch.Tensor) -> torch.Tensor:
        """Indices ``[N, k]`` of the adapters each input activates, nearest key first."""
        self.check_is_fitted()
        return nearest_keys(encode(self.encoder, X, self.encode_batch_size), self.keys_, self.k)

    @torch.no_grad()
    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Mean of the ``k`` activated adapters' softmax outputs (Eq. 2): ``[N, n_classes]`` on the CPU."""
        self.check_is_fitted()
        E = encode(self.encoder, X, self.encode_batch_size)
        act = nearest_keys(E, self.keys_, self.k)                                  # [N, k]
        rows = self._bank.chunk_rows(self.params_, self.k)
        out = []
        with exact_numerics(self.device_):
            for start in range(0, E.shape[0], rows):
                logits = self._bank.activated_logits(self.params_, E[start:start + rows].to(self.device_),
                                                     act[start:start + rows].to(self.device_))  # [r, k, C]
                out.append(torch.softmax(logits.float(), -1).mean(1).cpu())
        return torch.cat(out)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``[N]`` (int64): the argmax of :meth:`predict_proba`."""
        return self.predict_proba(X).argmax(1)

    # ------------------------------------------------------------------ unlearning

    def _current_ids(self) -> torch.Tensor:
        return self.ids_

    def _request(self, ids) -> tuple[torch.Tensor, torch.Tensor, list[int], list[torch.Tensor]]:
        """A checked request: ``(ids, keep, affected, members)``, the rows kept (bool ``[N]``), the
        adapters the removed rows activate (Algorithm 1, lines 1-2) and their remaining sets.
        Changes nothing."""
        ids, pos = self._check_request(ids)
        keep = torch.ones(self.ids_.numel(), dtype=torch.bool)
        keep[pos] = False
        left = self._y[keep.to(self.device_)]
        if self.n_classes is None and int(left.max()) + 1 != self.n_classes_:
            raise ValueError(f"this request removes every row of class {self.n_classes_ - 1}, the largest "
                             f"label: a refit on the rest would have fewer outputs, so no unlearning could "
                             f"equal it. Construct the model with n_classes={self.n_classes_} (nothing was "
                             f"changed)")
        act = nearest_keys(self._E[pos.to(self.device_)], self.keys_, self.k).cpu()
        affected = torch.unique(act).tolist()
        members = []
        for j in affected:
            gone = torch.isin(self.members_[j], ids)
            if int(gone.sum()) != int((act == j).any(1).sum()):
                raise RuntimeError(f"internal error: the records of adapter {j} disagree with its activation")
            members.append(self.members_[j][~gone])
        return ids, keep, affected, members

    def _report(self, ids: torch.Tensor, affected: list[int], samples: int, steps: int, seconds: float,
                rows: int) -> LegoNetReport:
        key_sources = [] if self.key_rows_ is None else \
            sorted(self.key_rows_[torch.isin(self.key_rows_, ids)].tolist())
        return LegoNetReport(ids.tolist(), affected, samples, steps, seconds,
                             details={"key_sources": key_sources, "rows": rows})

    def retrain_cost(self, ids) -> LegoNetReport:
        """What :meth:`unlearn` would re-train for these ids, without training or changing anything
        (``seconds`` is 0): :func:`course_lib.exact.costs.legonet_request_cost` under the fit's budget."""
        ids, _, affected, members = self._request(ids)
        c = costs.legonet_request_cost([m.numel() for m in members], epochs=self.epochs,
                                       batch_size=self.batch_size, budget=self._budget)
        return self._report(ids, affected, c["samples"], c["steps"], 0.0, c["rows"])

    def unlearn(self, ids) -> LegoNetReport:
        """Exactly remove the rows with these ids (one int or a list; Algorithm 1); returns a
        :class:`~course_lib.exact.base.LegoNetReport` (``samples``, ``steps``: what the re-trained
        adapters' runs took).

        The removed rows' encodings find their ``k`` activated adapters; the rows leave those
        adapters' sets ``D_aj`` (and the model's cache) and only those adapters are re-trained
        from their fresh initialisation. Unknown, duplicate or already removed ids, and removing
        every row, raise ValueError and change nothing.
        """
        with train.Stopwatch() as sw:
            ids, keep, affected, members = self._request(ids)
            for j, m in zip(affected, members):
                self.members_[j] = m
            self.ids_ = self.ids_[keep]
            self._E, self._y = self._E[keep.to(self.device_)], self._y[keep.to(self.device_)]
            self._params = {n: p.clone() for n, p in self.params_.items()}  # earlier views stay valid
            samples, steps = self._train_adapters(affected)
            self.params_ = self._params
        return self._log(self._report(ids, affected, samples, steps, sw.seconds, sum(m.numel() for m in members)))

    # ------------------------------------------------------------------ diagnostics

    @property
    def sizes_(self) -> torch.Tensor:
        """``|D_aj|`` for every adapter, ``[n]`` int64."""
        self.check_is_fitted()
        return torch.tensor([m.numel() for m in self.members_])

    def adapter(self, j: int) -> nn.Module:
        """Adapter ``j`` as a stand-alone module (a copy), e.g. to inspect or compare it."""
        self.check_is_fitted()
        if not 0 <= j < self.n_adapters:
            raise ValueError(f"adapter index must be in [0, {self.n_adapters}), got {j}")
        m = self._bank.make()
        m.load_state_dict({n: p[j].detach().cpu() for n, p in self.params_.items()})
        return m

    def cost(self, input_shape: tuple[int, ...] | None = None) -> dict[str, int]:
        """Parameters and inference FLOPs per input (:func:`course_lib.exact.costs.legonet_cost`);
        the encoder's FLOPs need ``input_shape``, one input's shape, e.g. ``(1, 8, 8)``."""
        self.check_is_fitted()
        enc = self.encoder
        return costs.legonet_cost(
            n_adapters=self.n_adapters, k=self.k, d=self.keys_.shape[1], n_classes=self.n_classes_,
            adapter_params=sum(p[0].numel() for p in self.params_.values()),
            adapter_flops=count_flops(self._bank.make(), (self.keys_.shape[1],)),
            encoder_params=0 if enc is None else sum(p.numel() for p in enc.parameters()),
            encoder_flops=0 if (enc is None or input_shape is None) else count_flops(enc, input_shape))

    @property
    def encodings_(self) -> torch.Tensor:
        """The cached encodings of the current rows ``[N, d]`` (in the order of ``ids_``)."""
        self.check_is_fitted()
        return self._E.cpu().clone()


# ----------------------------------------------------------------------------- helpers

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
