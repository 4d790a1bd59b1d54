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
    report = sisa.unlearn([17, 256])          # an UnlearnReport: shards, samples, steps, seconds
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from .. import config, engine, models, train
from ..device import exact_numerics
from ..validation import NotFittedError, check_ids, check_int, check_number, check_sgd, check_xy
from . import costs, shard_training
from .base import ExactEstimator, UnlearnReport, clone
from .checkpoints import CheckpointStore, State, state_of
from .sharding import ASSIGN_STREAM, assign, check_shard_of, distribution_aware_shards, place

__all__ = ["SISA", "UnlearnReport", "NotFittedError", "assign", "distribution_aware_shards", "clone"]

Params = dict[str, torch.Tensor]

# Stream tags for config.derive_seed(seed, TAG, ...): one fixed length per tag.
_INIT, _ORDER, _ASSIGN = 1, 2, ASSIGN_STREAM     # random layers: shard_training._NOISE = 4


@dataclass
class _Data:
    """The training rows in id order plus one zero row at the end (the padding row)."""

    X: torch.Tensor             # [n + 1, ...] on the device
    y: torch.Tensor             # [n + 1]
    ids: torch.Tensor           # [n] sorted, CPU
    shard: torch.Tensor         # [n]
    slice: torch.Tensor         # [n]
    members: list[torch.Tensor]  # per shard: positions of its rows, ascending (= by id)

    @property
    def pad(self) -> int:
        return int(self.ids.numel())


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
        carried from slice to slice and saved in the checkpoints.
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

    Fitted attributes: ``ids_`` (sorted ids of the rows still trained on), ``shard_`` and
    ``slice_`` (their places, ``[n]``), ``n_classes_``, ``params_`` (``{name: [S, ...]}``, the
    current constituent models), ``fit_samples_``, ``fit_steps_``, ``fit_seconds_``, and
    ``requests_`` (the :class:`~course_lib.exact.base.UnlearnReport` of every unlearning request, in order).

    ``get_params`` / ``set_params`` / :func:`~course_lib.exact.base.clone` work as in scikit-learn
    (e.g. ``sisa.set_params(aggregation="mean")`` on a fitted model changes only how it predicts).
    """

    def __init__(self, n_shards: int, n_slices: int, make_model: Callable[[], nn.Module],
                 epochs_per_slice: int = 5, aggregation: str = "vote", seed: int = 0, *,
                 lr: float = 0.05, batch_size: int = 32, momentum: float = 0.9, weight_decay: float = 5e-4,
                 schedule: str = "cosine", shard_of=None, vectorize: bool | None = None, group_size: int = 8,
                 checkpoint_dir: str | Path | None = None, device: str | torch.device | None = None):
        check_int(n_shards, "n_shards", 1)
        check_int(n_slices, "n_slices", 1)
        check_int(epochs_per_slice, "epochs_per_slice", 1)
        check_int(seed, "seed", 0)
        check_int(batch_size, "batch_size", 1)
        check_int(group_size, "group_size", 1)
        if not callable(make_model):
            raise ValueError("make_model must be a zero-argument callable returning a fresh nn.Module")
        if aggregation not in ("vote", "mean"):
            raise ValueError(f"aggregation must be 'vote' or 'mean', got {aggregation!r}")
        check_sgd(epochs_per_slice, batch_size, lr, momentum, weight_decay, schedule)
        check_number(lr, "lr", 0.0, lo_open=True)
        if vectorize not in (None, True, False):
            raise ValueError(f"vectorize must be True, False or None (automatic), got {vectorize!r}")
        shard_of = check_shard_of(shard_of)
        self.n_shards, self.n_slices, self.make_model = n_shards, n_slices, make_model
        self.epochs_per_slice, self.aggregation, self.seed = epochs_per_slice, aggregation, seed
        self.lr, self.batch_size, self.momentum, self.weight_decay = lr, batch_size, momentum, weight_decay
        self.schedule, self.shard_of, self.vectorize, self.group_size = schedule, shard_of, vectorize, group_size
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._store = CheckpointStore(self.checkpoint_dir, self.device)

    # ------------------------------------------------------------------ fitting

    def fit(self, X: torch.Tensor, y: torch.Tensor, ids=None) -> "SISA":
        """Shard, slice and train every constituent model; returns self.

        ``X [N, ...]`` float inputs, ``y [N]`` int64 labels, ``ids [N]`` unique non-negative
        integer names of the rows (default ``0..N-1``; :meth:`unlearn` takes them). The fitted
        model depends only on the set of ``(id, row)`` pairs, not on their order.
        """
        train.check_xy(X, y, "training data")
        ids = check_ids(ids, X.shape[0])
        probe = models.seeded(self.make_model, config.derive_seed(self.seed, _INIT, 0))
        if not isinstance(probe, nn.Module):
            raise ValueError(f"make_model must return an nn.Module, got {type(probe).__name__}")
        has_buffers = any(True for _ in probe.buffers())
        random_layers = any(isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout)) for m in probe.modules())
        if self.vectorize and (has_buffers or random_layers):
            raise ValueError("vectorize=True needs a model without buffers (batch norm) and without random layers "
                             "(dropout): use vectorize=None or False")
        auto = not has_buffers and not random_layers and self.n_shards > 1 and self.device.type != "cpu"
        self._vectorized = auto if self.vectorize is None else self.vectorize
        with torch.no_grad():
            out = probe.eval()(X[:1].cpu())
        if out.ndim != 2:
            raise ValueError(f"make_model's module must return logits [B, C], got shape {tuple(out.shape)}")
        C = out.shape[1]
        if int(y.min()) < 0 or int(y.max()) >= C:
            raise ValueError(f"labels must lie in [0, {C}) for a model with {C} outputs; "
                             f"got {int(y.min())}..{int(y.max())}")
        self._base = copy.deepcopy(probe).to("meta")
        self._names = [n for n, _ in probe.named_parameters()]
        self.n_classes_ = C
        order = torch.argsort(ids)
        shard, slc = place(ids[order], self.seed, self.n_shards, self.n_slices, self.shard_of)
        data = self._make_data(X[order], y[order], ids[order], shard, slc)
        with train.Stopwatch() as sw:
            ckpts, samples, steps = self._train(data, {s: 0 for s in range(self.n_shards)}, {})
        if hasattr(self, "_ckpt"):
            self._store.delete(self._ckpt.values())
        self._data, self._ckpt = data, ckpts
        self._refresh_params()
        self.fit_samples_, self.fit_steps_, self.fit_seconds_ = samples, steps, sw.seconds
        self.requests_: list[UnlearnReport] = []
        self._removed: dict[int, int] = {}
        return self

    def _make_data(self, X, y, ids, shard, slc) -> _Data:
        pad_x = torch.zeros((1,) + tuple(X.shape[1:]), dtype=X.dtype)
        Xd = torch.cat([X.detach().cpu(), pad_x]).to(self.device)
        yd = torch.cat([y.cpu(), torch.zeros(1, dtype=torch.int64)]).to(self.device)
        members = [torch.nonzero(shard == s).flatten() for s in range(self.n_shards)]
        return _Data(Xd, yd, ids, shard, slc, members)

    def _plan(self, data: _Data, s: int, r: int) -> engine.Plan:
        """Shard ``s`` at slice ``r``: its rows with slice <= r, sorted by id, permuted per epoch
        (stream ``(seed, ORDER, s, r, epoch)``) and cut into even batches (:func:`engine.batch_plan`)."""
        pos = data.members[s]
        pos = pos[data.slice[pos] <= r]
        orders = []
        for e in range(self.epochs_per_slice if pos.numel() else 0):
            gen = torch.Generator().manual_seed(config.derive_seed(self.seed, _ORDER, s, r, e))
            orders.append(pos[torch.randperm(pos.numel(), generator=gen)])
        return engine.batch_plan(orders, self._batch, data.pad, self.lr, self.schedule)

    @property
    def _batch(self) -> int:
        """Rows per mini-batch of a plan: ``batch_size``, cut to ``config.SMOKE_BATCH`` in a smoke run
        (:func:`course_lib.config.smoke`; the vectorised path pads every batch to this size)."""
        return config.smoke_cap(self.batch_size, config.SMOKE_BATCH)

    def _init_state(self, s: int) -> State:
        m = models.seeded(self.make_model, config.derive_seed(self.seed, _INIT, s)).to(self.device)
        return state_of(m, {n: torch.zeros_like(p) for n, p in m.named_parameters()})

    def _train(self, data: _Data, start: dict[int, int], old: dict) -> tuple[dict, int, int]:
        """(Re-)train shards ``s`` from slice ``start[s]`` on; returns new checkpoints
        ``{(s, r): handle}`` (old ones untouched), samples and steps."""
        resume = {s: (self._store.load(old[(s, r - 1)]) if r > 0 else self._init_state(s)) for s, r in start.items()}
        ckpts, samples, steps = {}, 0, 0
        with exact_numerics(self.device):
            if self._vectorized:
                for group in engine.slot_groups(sorted(start), min(self.group_size, self.n_shards)):
                    n, t = shard_training.train_group(self, data, group, start, resume, ckpts)
                    samples, steps = samples + n, steps + t
            else:
                for s in sorted(start):
                    n, t = shard_training.train_one(self, data, s, start[s], resume[s], ckpts)
                    samples, steps = samples + n, steps + t
        return ckpts, samples, steps

    # ------------------------------------------------------------------ checkpoints and inference

    def checkpoint(self, shard: int, slice: int) -> State:
        """The state of ``M_shard`` saved after ``slice`` (a copy): ``{"params", "buffers",
        "momentum"}``, each ``{name: tensor}``. ``slice = n_slices - 1`` is the current model."""
        self._check_fitted()
        if not (0 <= shard < self.n_shards and 0 <= slice < self.n_slices):
            raise ValueError(f"need 0 <= shard < {self.n_shards} and 0 <= slice < {self.n_slices}, "
                             f"got {shard}, {slice}")
        return self._store.load(self._ckpt[(shard, slice)])

    def _refresh_params(self) -> None:
        last = [self._store.load(self._ckpt[(s, self.n_slices - 1)]) for s in range(self.n_shards)]
        self.params_ = {n: torch.stack([st["params"][n] for st in last]) for n in self._names}
        self._buffers = [st["buffers"] for st in last]

    # ------------------------------------------------------------------ inference

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError("this SISA model is not fitted yet: call fit(X, y) before using it")

    @property
    def active_shards_(self) -> list[int]:
        """Shards that hold at least one row; only these take part in the aggregation."""
        self._check_fitted()
        return [s for s in range(self.n_shards) if self._data.members[s].numel() > 0]

    @torch.no_grad()
    def shard_logits(self, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Logits of every constituent model, ``[S, N, C]`` float32 on the CPU (eval mode),
        empty shards included (they hold their initial weights)."""
        self._check_fitted()
        if not isinstance(X, torch.Tensor) or X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty tensor [N, ...], got {getattr(X, 'shape', type(X))}")
        outs = []
        with exact_numerics(self.device):
            if not self._vectorized:
                return torch.stack([train.predict_logits(self.shard_model(s), X, batch_size)
                                    for s in range(self.n_shards)])
            f = vmap(lambda p, x: functional_call(self._base, p, (x,)), in_dims=(0, None))
            for start in range(0, X.shape[0], batch_size):
                outs.append(f(self.params_, X[start:start + batch_size].to(self.device)).float().cpu())
        return torch.cat(outs, dim=1)

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, C]``: vote shares ("vote") or mean softmax ("mean") of the
        non-empty shards."""
        return self._aggregate(X)[0]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``[N]`` int64 (ties of the vote: larger mean probability, then lower index)."""
        return self._aggregate(X)[1]

    def _aggregate(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.shard_logits(X)[self.active_shards_]                            # [S', N, C]
        prob = torch.softmax(logits.double(), dim=-1)
        mean = prob.mean(0)
        if self.aggregation == "mean":
            return mean.float(), mean.argmax(1)
        votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0).double()       # [N, C]
        best = votes == votes.max(1, keepdim=True).values
        pred = torch.where(best, mean, torch.full_like(mean, -1.0)).argmax(1)
        return (votes / logits.shape[0]).float(), pred

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy in percent (0-100)."""
        check_xy(X, y, "evaluation data")
        return 100.0 * (self.predict(X) == y.cpu()).double().mean().item()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every constituent model's parameters and buffers, keyed ``"shard{s}.{name}"`` (copies)."""
        self._check_fitted()
        out = {}
        for s in range(self.n_shards):
            out.update({f"shard{s}.{n}": p[s].clone() for n, p in self.params_.items()})
            out.update({f"shard{s}.{n}": b.clone() for n, b in self._buffers[s].items()})
        return out

    def shard_model(self, s: int) -> nn.Module:
        """Constituent model ``M_s`` as an ordinary module (a copy), e.g. for the 1/S baseline."""
        self._check_fitted()
        if not 0 <= s < self.n_shards:
            raise ValueError(f"shard index must be in [0, {self.n_shards}), got {s}")
        m = copy.deepcopy(self._base).to_empty(device=self.device)
        m.load_state_dict({**{n: p[s].clone() for n, p in self.params_.items()}, **self._buffers[s]})
        return m.eval()

    @property
    def sizes_(self) -> torch.Tensor:
        """Rows per shard and slice, ``[S, R]`` int64."""
        self._check_fitted()
        flat = self._data.shard * self.n_slices + self._data.slice
        return torch.bincount(flat, minlength=self.n_shards * self.n_slices).view(self.n_shards, self.n_slices)

    @property
    def ids_(self) -> torch.Tensor:
        self._check_fitted()
        return self._data.ids.clone()

    @property
    def shard_(self) -> torch.Tensor:
        self._check_fitted()
        return self._data.shard.clone()

    @property
    def slice_(self) -> torch.Tensor:
        self._check_fitted()
        return self._data.slice.clone()

    # ------------------------------------------------------------------ unlearning

    def _validate_request(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted ids and their positions in the current data; ValueError for bad requests."""
        self._check_fitted()
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            ids = [int(ids)]
        ids = check_ids(ids, None, what="ids to unlearn")
        ids = torch.sort(ids).values
        pos = torch.searchsorted(self._data.ids, ids).clamp(max=max(self._data.ids.numel() - 1, 0))
        present = self._data.ids[pos] == ids
        if not present.all():
            missing = ids[~present].tolist()
            gone = [i for i in missing if i in self._removed]
            if gone:
                raise ValueError(f"ids {gone[:5]} were already unlearned (request #{self._removed[gone[0]]}); "
                                 f"nothing was changed")
            raise ValueError(f"ids {missing[:5]} are not in the training set; nothing was changed")
        if ids.numel() == self._data.ids.numel():
            raise ValueError("this request would remove every remaining row; nothing would be left to train on "
                             "(nothing was changed)")
        return ids, pos

    def _without(self, pos: torch.Tensor) -> _Data:
        keep = torch.ones(self._data.ids.numel() + 1, dtype=torch.bool)
        keep[pos] = False
        d = self._data
        n_keep = keep[:-1]
        return _Data(d.X[keep.to(self.device)], d.y[keep.to(self.device)], d.ids[n_keep],
                     d.shard[n_keep], d.slice[n_keep],
                     [torch.nonzero(d.shard[n_keep] == s).flatten() for s in range(self.n_shards)])

    def _cost(self, pos: torch.Tensor) -> dict:
        removed = torch.zeros(self._data.ids.numel(), dtype=torch.bool)
        removed[pos] = True
        return costs.sisa_request_cost(self._data.shard, self._data.slice, removed, n_slices=self.n_slices,
                                       epochs_per_slice=self.epochs_per_slice, batch_size=self.batch_size)

    def retrain_cost(self, ids) -> UnlearnReport:
        """What :meth:`unlearn` would re-train for these ids, without training or changing
        anything (``seconds`` is 0): a deterministic cost measure for plots and simulations
        (:func:`course_lib.exact.costs.sisa_request_cost`)."""
        ids, pos = self._validate_request(ids)
        c = self._cost(pos)
        return UnlearnReport(ids.tolist(), c["shards"], c["samples"], c["steps"], 0.0, unit="shard",
                             details={"from_slices": c["from_slices"], "rows": c["rows"]})

    def unlearn(self, ids) -> UnlearnReport:
        """Exactly remove the rows with these ids; returns an :class:`~course_lib.exact.base.UnlearnReport`.

        Each affected shard resumes from the checkpoint saved before its earliest affected slice
        (its initial weights for slice 0) and re-trains the remaining slices on what is left.
        Afterwards the model is bitwise the one ``fit`` gives on the retained rows with their ids.
        Duplicate, unknown or already-removed ids, and removing every row, raise ValueError and
        change nothing. The report is also appended to ``requests_``.
        """
        t0 = time.perf_counter()
        ids, pos = self._validate_request(ids)
        c = self._cost(pos)
        start = dict(zip(c["shards"], c["from_slices"]))
        data = self._without(pos)
        ckpts, samples, steps = self._train(data, start, self._ckpt)
        replaced = [self._ckpt[k] for k in ckpts]
        self._data = data
        self._ckpt.update(ckpts)
        self._store.delete(replaced)
        self._refresh_params()
        report = UnlearnReport(ids.tolist(), list(start), samples, steps, time.perf_counter() - t0, unit="shard",
                               details={"from_slices": list(start.values()), "rows": c["rows"]})
        self.requests_.append(report)
        for i in report.ids:
            self._removed[i] = len(self.requests_)
        return report

    def expected_cost(self, p, ids=None) -> float:
        """Expected samples re-trained when every row ``i`` independently asks for deletion with
        probability ``p[i]`` and all requests are served in one :meth:`unlearn` call
        (:func:`course_lib.exact.costs.sisa_expected_cost`). ``p [n]`` is aligned with ``ids``
        (default: ``ids_``, the current rows in id order)."""
        self._check_fitted()
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
