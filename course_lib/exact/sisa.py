"""SISA training (Bourtoule et al., 2021; source 001, "SISA Training"): Sharded, Isolated,
Sliced and Aggregated models, with *exact* unlearning by partial re-training.

* **Sharded**: the training rows are split into ``S`` disjoint shards ``D_s``.
* **Isolated**: shard ``s`` trains its own constituent model ``M_s`` on ``D_s`` only.
* **Sliced**: each shard is split further into ``R`` slices ``D_{s,1..R}``. ``M_s`` is trained
  incrementally: at slice ``r`` it trains on the union ``D_{s,1} u ... u D_{s,r}`` for
  ``epochs_per_slice`` epochs, and its state is saved after every slice (a checkpoint).
* **Aggregated**: the prediction combines the constituent models (majority vote or mean of
  the softmax probabilities).

Unlearning a row of slice ``r`` of shard ``s`` re-trains ``M_s`` alone, from the state saved
before slice ``r`` (source 001, "SISA: Unlearning Guarantee"); every other model is untouched::

    sisa = SISA(n_shards=5, n_slices=3, make_model=make, epochs_per_slice=4, seed=0).fit(X, y)
    report = sisa.unlearn([17, 256])          # a SISAReport: shards, from_slices, samples, steps, seconds
    keep = data.retain_indices(len(y), torch.tensor([17, 256]))
    fresh = clone(sisa).fit(X[keep], y[keep], ids=keep)
    # every parameter and every prediction of `sisa` and `fresh` are torch.equal

**Why the result is bitwise exact.** Everything a shard model's arithmetic depends on is a
function of the seed, the shard and slice numbers and the *set of ids* in the shard, never of
``N``, of the row order or of the other shards:

* a row's shard and slice come from a keyed hash of ``(seed, id)`` (:func:`~course_lib.exact.sharding.assign`),
  or from a fixed table/callable ``shard_of(id)`` (distribution-aware sharding);
* random streams are named with :func:`course_lib.config.derive_seed`: initial weights
  ``derive_seed(seed, 1, shard)``, batch order ``derive_seed(seed, 2, shard, slice, epoch)``
  (the rows of the slice's union sorted by id, then permuted), the hash key ``derive_seed(seed, 3)``,
  and random layers such as dropout ``derive_seed(seed, 4, shard, slice)`` (the global stream is
  left alone).
  Each stream tag has a fixed number of parts: numpy's ``SeedSequence`` pads with zeros, so
  ``(seed, s)`` and ``(seed, s, 0, 0)`` would otherwise be the same stream;
* the learning-rate schedule restarts in every slice and depends only on the slice's step count;
* a checkpoint holds the parameters, the buffers *and* the SGD momentum, so resuming from it
  continues exactly as training straight through would have.

**Vectorised training** (``vectorize=True``): see :mod:`course_lib.exact.shard_training`.

**Empty shards.** A shard without rows (left empty by removals, or never filled) keeps its
initial weights and is **left out of the aggregation**; an empty slice adds no training steps.
Both rules hold identically after unlearning and when fitting from scratch.

CPU only is tested here. On CUDA the same code runs under :func:`course_lib.device.exact_numerics`
(deterministic kernels, no TF32; ``course_lib.device`` sets ``CUBLAS_WORKSPACE_CONFIG`` on import);
SISA trains in float32 without autocast.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from .. import config, models, train
from ..device import exact_numerics
from ..validation import NotFittedError, check_ids, check_int, check_number, check_sgd, check_xy
from . import costs
from .base import ExactEstimator, SISAReport, UnlearnReport, as_device, clone
from .checkpoints import CheckpointStore, State, state_of
from .shard_training import ShardData, Setup, train_shards
from .sharding import ASSIGN_STREAM, assign, check_shard_of, distribution_aware_shards, place

__all__ = ["SISA", "SISAReport", "UnlearnReport", "NotFittedError", "assign", "distribution_aware_shards", "clone"]

# Stream tags for config.derive_seed(seed, TAG, ...): one fixed length per tag.
_INIT, _ASSIGN = 1, ASSIGN_STREAM     # batch order 2 and random layers 4: see shard_training
_AGGREGATIONS = ("vote", "mean")


class SISA(ExactEstimator):
    """An ensemble of ``n_shards`` constituent models with exact unlearning by partial re-training.

    Parameters
    ----------
    n_shards : ``S >= 1`` disjoint shards, one constituent model each.
    n_slices : ``R >= 1`` slices per shard; checkpoints after every slice.
    make_model : zero-argument callable returning a fresh ``nn.Module`` mapping inputs
        ``[B, ...]`` to logits ``[B, C]``; it is called under ``derive_seed(seed, 1, shard)``.
    epochs_per_slice : epochs at slice ``r`` over the union of slices ``1..r`` (integer >= 1).
        Training a shard of ``n`` rows then costs ``epochs * n * (R + 1) / 2`` samples in
        expectation; the SISA paper keeps the total fixed by using ``2 E / (R + 1)`` epochs per slice.
    aggregation : "vote" (majority vote of the shard predictions; ``predict_proba`` gives the
        vote shares; ties go to the class with the larger mean softmax probability, then to the
        lower class index) or "mean" (mean of the shards' softmax probabilities).
    seed : every random choice derives from it (see the module docstring).
    lr, batch_size, momentum, weight_decay : SGD with momentum and weight decay (PyTorch's
        formula ``buf = momentum * buf + grad + wd * w; w -= lr * buf``); the momentum buffer is
        carried from slice to slice and saved in the checkpoints. A smoke run's budget
        (:func:`course_lib.config.budget`) caps the batch size and the steps of every slice.
    schedule : "cosine" (annealed to 0 within every slice, restarting at the next) or "constant".
    shard_of : None (hash of ``(seed, id)``), or a fixed assignment: an integer table indexed by
        id (``table[id]`` is the shard) or a callable mapping ids ``[n]`` to shards ``[n]``. It
        must depend on the id only (e.g. :func:`distribution_aware_shards`). Slices always come
        from the hash.
    vectorize : train ``group_size`` shards at once with ``vmap`` (models without buffers only).
        None: vectorise on an accelerator, train one shard after the other on the CPU. Measured
        on 2 CPU cores (``benchmarks/bench_sisa.py``): vectorising makes fitting an MLP 1.4-2x
        faster at S >= 5 and a small CNN no faster, while every request then re-trains a whole
        group of ``group_size`` slots (dummies included), 2.5-5x slower than one shard alone.
        Pass True to fit many configurations quickly. The group size is part of the arithmetic:
        changing it changes the bits (not the maths) of the result.
    group_size : shards per vectorised group (default 8; capped at ``n_shards``).
    checkpoint_dir : None keeps checkpoints in memory; a folder stores them as ``.pt`` files
        (one per shard and slice), e.g. for models too large to keep ``S * R`` copies in RAM.
    device : where the models train and predict (default CPU).

    As in scikit-learn the constructor only stores its arguments; ``fit`` checks them and builds
    everything from them (the checkpoint store included), so ``set_params`` then ``fit`` is the
    same as constructing with those values.

    Fitted attributes: ``ids_`` (sorted ids of the rows still trained on), ``shard_`` and
    ``slice_`` (their places, ``[n]``), ``n_classes_``, ``device_``, ``params_`` (``{name: [S, ...]}``,
    the current constituent models), ``fit_samples_``, ``fit_steps_``, ``fit_seconds_``, and
    ``requests_`` (the :class:`~course_lib.exact.base.SISAReport` of every unlearning request, in order).

    ``get_params`` / ``set_params`` / :func:`~course_lib.exact.base.clone` work as in scikit-learn
    (e.g. ``sisa.set_params(aggregation="mean")`` on a fitted model changes only how it predicts).
    """

    def __init__(self, n_shards: int, n_slices: int, make_model: Callable[[], nn.Module],
                 epochs_per_slice: int = 5, aggregation: str = "vote", seed: int = 0, *,
                 lr: float = 0.05, batch_size: int = 32, momentum: float = 0.9, weight_decay: float = 5e-4,
                 schedule: str = "cosine", shard_of=None, vectorize: bool | None = None, group_size: int = 8,
                 checkpoint_dir: str | Path | None = None, device: str | torch.device | None = None):
        self.n_shards, self.n_slices, self.make_model = n_shards, n_slices, make_model
        self.epochs_per_slice, self.aggregation, self.seed = epochs_per_slice, aggregation, seed
        self.lr, self.batch_size, self.momentum, self.weight_decay = lr, batch_size, momentum, weight_decay
        self.schedule, self.shard_of, self.vectorize, self.group_size = schedule, shard_of, vectorize, group_size
        self.checkpoint_dir, self.device = checkpoint_dir, device

    # ------------------------------------------------------------------ fitting

    def _check_params(self):
        """Validate the constructor's arguments; returns the ``shard_of`` table or callable."""
        check_int(self.n_shards, "n_shards", 1)
        check_int(self.n_slices, "n_slices", 1)
        check_int(self.epochs_per_slice, "epochs_per_slice", 1)
        check_int(self.seed, "seed", 0)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.group_size, "group_size", 1)
        if not callable(self.make_model):
            raise ValueError("make_model must be a zero-argument callable returning a fresh nn.Module")
        _check_aggregation(self.aggregation)
        check_sgd(self.epochs_per_slice, self.batch_size, self.lr, self.momentum, self.weight_decay, self.schedule)
        check_number(self.lr, "lr", 0.0, lo_open=True)
        if self.vectorize not in (None, True, False):
            raise ValueError(f"vectorize must be True, False or None (automatic), got {self.vectorize!r}")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, Path)):
            raise ValueError(f"checkpoint_dir must be None or a folder path, got {self.checkpoint_dir!r}")
        as_device(self.device)
        return check_shard_of(self.shard_of)

    def fit(self, X: torch.Tensor, y: torch.Tensor, ids=None) -> "SISA":
        """Shard, slice and train every constituent model; returns self.

        ``X [N, ...]`` float inputs, ``y [N]`` int64 labels, ``ids [N]`` unique non-negative
        integer names of the rows (default ``0..N-1``; :meth:`unlearn` takes them). The fitted
        model depends only on the set of ``(id, row)`` pairs, not on their order.
        """
        shard_of = self._check_params()
        check_xy(X, y, "training data")
        ids = check_ids(ids, X.shape[0])
        device = as_device(self.device) or torch.device("cpu")
        probe = models.seeded(self.make_model, config.derive_seed(self.seed, _INIT, 0))
        if not isinstance(probe, nn.Module):
            raise ValueError(f"make_model must return an nn.Module, got {type(probe).__name__}")
        has_buffers = any(True for _ in probe.buffers())
        random_layers = any(isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout)) for m in probe.modules())
        if self.vectorize and (has_buffers or random_layers):
            raise ValueError("vectorize=True needs a model without buffers (batch norm) and without random layers "
                             "(dropout): use vectorize=None or False")
        auto = not has_buffers and not random_layers and self.n_shards > 1 and device.type != "cpu"
        vectorized = auto if self.vectorize is None else self.vectorize
        with torch.no_grad():
            out = probe.eval()(X[:1].cpu())
        if out.ndim != 2:
            raise ValueError(f"make_model's module must return logits [B, C], got shape {tuple(out.shape)}")
        C = out.shape[1]
        if int(y.min()) < 0 or int(y.max()) >= C:
            raise ValueError(f"labels must lie in [0, {C}) for a model with {C} outputs; "
                             f"got {int(y.min())}..{int(y.max())}")
        order = torch.argsort(ids)
        shard, slc = place(ids[order], self.seed, self.n_shards, self.n_slices, shard_of)
        data = ShardData.build(X[order], y[order], ids[order], shard, slc, self.n_shards, device)
        budget = config.budget()
        setup = Setup(copy.deepcopy(probe).to("meta"), [n for n, _ in probe.named_parameters()], device,
                      self.seed, self.n_slices, self.epochs_per_slice, budget.cap_batch(self.batch_size),
                      self.lr, self.schedule, self.momentum, self.weight_decay,
                      CheckpointStore(self.checkpoint_dir, device), budget)
        old = getattr(self, "_ckpt", {})
        with train.Stopwatch() as sw:
            ckpts, samples, steps = train_shards(
                setup, data, {s: 0 for s in range(self.n_shards)},
                {s: self._init_state(s, device) for s in range(self.n_shards)},
                vectorized=vectorized, group_size=min(self.group_size, self.n_shards))
        CheckpointStore.delete(old.values())
        self._setup, self._vectorized, self._data, self._ckpt = setup, vectorized, data, ckpts
        self._group_size = min(self.group_size, self.n_shards)
        self.n_classes_, self.device_ = C, device
        self._refresh_params()
        self.fit_samples_, self.fit_steps_, self.fit_seconds_ = samples, steps, sw.seconds
        self._start_log()
        return self

    def _init_state(self, s: int, device: torch.device) -> State:
        m = models.seeded(self.make_model, config.derive_seed(self.seed, _INIT, s)).to(device)
        return state_of(m, {n: torch.zeros_like(p) for n, p in m.named_parameters()})

    def _retrain(self, data: ShardData, start: dict[int, int]) -> tuple[dict, int, int]:
        """Re-train shards ``s`` from slice ``start[s]`` on, resuming from the checkpoints."""
        st = self._setup
        resume = {s: (st.store.load(self._ckpt[(s, r - 1)]) if r > 0 else self._init_state(s, st.device))
                  for s, r in start.items()}
        return train_shards(st, data, start, resume, vectorized=self._vectorized, group_size=self._group_size)

    # ------------------------------------------------------------------ checkpoints and inference

    def checkpoint(self, shard: int, slice: int) -> State:
        """The state of ``M_shard`` saved after ``slice`` (a copy): ``{"params", "buffers",
        "momentum"}``, each ``{name: tensor}``. ``slice = n_slices - 1`` is the current model."""
        self.check_is_fitted()
        if not (0 <= shard < self.n_shards and 0 <= slice < self.n_slices):
            raise ValueError(f"need 0 <= shard < {self.n_shards} and 0 <= slice < {self.n_slices}, "
                             f"got {shard}, {slice}")
        return self._setup.store.load(self._ckpt[(shard, slice)])

    def _refresh_params(self) -> None:
        st = self._setup
        last = [st.store.load(self._ckpt[(s, self.n_slices - 1)]) for s in range(self.n_shards)]
        self.params_ = {n: torch.stack([c["params"][n] for c in last]) for n in st.names}
        self._buffers = [c["buffers"] for c in last]

    @property
    def active_shards_(self) -> list[int]:
        """Shards that hold at least one row; only these take part in the aggregation."""
        self.check_is_fitted()
        return [s for s in range(self.n_shards) if self._data.members[s].numel() > 0]

    @torch.no_grad()
    def shard_logits(self, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Logits of every constituent model, ``[S, N, C]`` float32 on the CPU (eval mode),
        empty shards included (they hold their initial weights)."""
        self.check_is_fitted()
        if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty tensor [N, ...], got {getattr(X, 'shape', type(X))}")
        outs = []
        with exact_numerics(self.device_):
            if not self._vectorized:
                return torch.stack([train.predict_logits(self.shard_model(s), X, batch_size)
                                    for s in range(self.n_shards)])
            f = vmap(lambda p, x: functional_call(self._setup.base, p, (x,)), in_dims=(0, None))
            for start in range(0, X.shape[0], batch_size):
                outs.append(f(self.params_, X[start:start + batch_size].to(self.device_)).float().cpu())
        return torch.cat(outs, dim=1)

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, C]``: vote shares ("vote") or mean softmax ("mean") of the
        non-empty shards."""
        return self._aggregate(X)[0]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``[N]`` int64 (ties of the vote: larger mean probability, then lower index)."""
        return self._aggregate(X)[1]

    def _aggregate(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_aggregation(self.aggregation)      # may have been changed by set_params since fit
        logits = self.shard_logits(X)[self.active_shards_]                            # [S', N, C]
        prob = torch.softmax(logits.double(), dim=-1)
        mean = prob.mean(0)
        if self.aggregation == "mean":
            return mean.float(), mean.argmax(1)
        votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0).double()       # [N, C]
        best = votes == votes.max(1, keepdim=True).values
        pred = torch.where(best, mean, torch.full_like(mean, -1.0)).argmax(1)
        return (votes / logits.shape[0]).float(), pred

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every constituent model's parameters and buffers, keyed ``"shard{s}.{name}"`` (copies)."""
        self.check_is_fitted()
        out = {}
        for s in range(self.n_shards):
            out.update({f"shard{s}.{n}": p[s].clone() for n, p in self.params_.items()})
            out.update({f"shard{s}.{n}": b.clone() for n, b in self._buffers[s].items()})
        return out

    def shard_model(self, s: int) -> nn.Module:
        """Constituent model ``M_s`` as an ordinary module (a copy), e.g. for the 1/S baseline."""
        self.check_is_fitted()
        if not 0 <= s < self.n_shards:
            raise ValueError(f"shard index must be in [0, {self.n_shards}), got {s}")
        m = copy.deepcopy(self._setup.base).to_empty(device=self.device_)
        m.load_state_dict({**{n: p[s].clone() for n, p in self.params_.items()}, **self._buffers[s]})
        return m.eval()

    @property
    def sizes_(self) -> torch.Tensor:
        """Rows per shard and slice, ``[S, R]`` int64."""
        self.check_is_fitted()
        flat = self._data.shard * self.n_slices + self._data.slice
        return torch.bincount(flat, minlength=self.n_shards * self.n_slices).view(self.n_shards, self.n_slices)

    @property
    def ids_(self) -> torch.Tensor:
        self.check_is_fitted()
        return self._data.ids.clone()

    @property
    def shard_(self) -> torch.Tensor:
        self.check_is_fitted()
        return self._data.shard.clone()

    @property
    def slice_(self) -> torch.Tensor:
        self.check_is_fitted()
        return self._data.slice.clone()

    # ------------------------------------------------------------------ unlearning

    def _current_ids(self) -> torch.Tensor:
        return self._data.ids

    def _cost(self, pos: torch.Tensor) -> dict:
        removed = torch.zeros(self._data.ids.numel(), dtype=torch.bool)
        removed[pos] = True
        st = self._setup
        return costs.sisa_request_cost(self._data.shard, self._data.slice, removed, n_slices=self.n_slices,
                                       epochs_per_slice=st.epochs_per_slice, batch_size=st.batch, budget=st.budget)

    def retrain_cost(self, ids) -> SISAReport:
        """What :meth:`unlearn` would re-train for these ids, without training or changing
        anything (``seconds`` is 0): a deterministic cost measure for plots and simulations
        (:func:`course_lib.exact.costs.sisa_request_cost`, under the fit's budget)."""
        ids, pos = self._check_request(ids)
        c = self._cost(pos)
        return SISAReport(ids.tolist(), c["shards"], c["samples"], c["steps"], 0.0,
                          details={"from_slices": c["from_slices"], "rows": c["rows"]})

    def unlearn(self, ids) -> SISAReport:
        """Exactly remove the rows with these ids (one int or a list); returns a
        :class:`~course_lib.exact.base.SISAReport`.

        Each affected shard resumes from the checkpoint saved before its earliest affected slice
        (its initial weights for slice 0) and re-trains the remaining slices on what is left.
        Afterwards the model is bitwise the one ``fit`` gives on the retained rows with their ids.
        Duplicate, unknown or already-removed ids, and removing every row, raise ValueError and
        change nothing. The report is also appended to ``requests_``.
        """
        t0 = time.perf_counter()
        ids, pos = self._check_request(ids)
        c = self._cost(pos)
        start = dict(zip(c["shards"], c["from_slices"]))
        data = self._data.without(pos)
        ckpts, samples, steps = self._retrain(data, start)
        replaced = [self._ckpt[k] for k in ckpts]
        self._data = data
        self._ckpt.update(ckpts)
        CheckpointStore.delete(replaced)
        self._refresh_params()
        return self._log(SISAReport(ids.tolist(), list(start), samples, steps, time.perf_counter() - t0,
                                    details={"from_slices": list(start.values()), "rows": c["rows"]}))

    def expected_cost(self, p, ids=None) -> float:
        """Expected samples re-trained when every row ``i`` independently asks for deletion with
        probability ``p[i]`` and all requests are served in one :meth:`unlearn` call
        (:func:`course_lib.exact.costs.sisa_expected_cost`). ``p [n]`` is aligned with ``ids``
        (default: ``ids_``, the current rows in id order)."""
        self.check_is_fitted()
        p = torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p, dtype=torch.float64).cpu()
        if ids is None:
            if p.shape != self._data.ids.shape:
                raise ValueError(f"p must have one probability per current row ({self._data.ids.numel()}), "
                                 f"got shape {tuple(p.shape)}")
            q = p
        else:
            ids = check_ids(ids, p.numel(), what="ids")
            if p.ndim != 1:
                raise ValueError("p must be 1-D, aligned with ids")
            q = torch.zeros(self._data.ids.numel(), dtype=torch.float64)
            pos = torch.searchsorted(self._data.ids, ids).clamp(max=self._data.ids.numel() - 1)
            if not torch.equal(self._data.ids[pos], ids):
                raise ValueError("every id in ids must be a current training row")
            q[pos] = p
        if not torch.all((q >= 0) & (q <= 1)):
            raise ValueError("p holds probabilities: every entry must lie in [0, 1]")
        return costs.sisa_expected_cost(self._data.shard, self._data.slice, q, n_shards=self.n_shards,
                                        n_slices=self.n_slices, epochs_per_slice=self.epochs_per_slice)


def _check_aggregation(aggregation) -> None:
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation must be 'vote' or 'mean', got {aggregation!r}")
