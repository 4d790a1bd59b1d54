"""The challenge's splits and populations: data, originals, Retrain and the reference, trained once
and cached with a checksum (see :mod:`course_lib.challenge`)."""
from __future__ import annotations

import fcntl
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import config, scenarios, train
from ..engine import progress
from ..validation import check_int

N_MODELS = {True: 32, False: 32}
#: Models per population in a smoke run (``COURSE_SMOKE=1``): the code path only, no meaningful score.
SMOKE_N = 3
#: Share of the held-out rows handed to the submission as ``val`` (the rest is the test set).
VAL_SHARE = 1 / 3
#: The audit's δ, as in the competition.
DELTA = 1e-5
_CACHE_VERSION = 1
_POPULATIONS: dict[tuple, "Populations"] = {}

XY = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------------------- splits

@dataclass(frozen=True)
class Split:
    """A challenge split: ``name`` (shown in tables), the ``scenario`` of :mod:`course_lib.scenarios`, its
    ``seed`` (forget set, models' seeds), ``n_models`` per population (None: :data:`N_MODELS`, capped to
    :data:`SMOKE_N` in a smoke run) and ``fast`` (None: the course's mode)."""

    name: str
    scenario: str = "random"
    seed: int = 1
    n_models: int | None = None
    fast: bool | None = None

    def resolved(self) -> "Split":
        """The same split with ``fast`` and ``n_models`` filled in (and validated)."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a split needs a non-empty name, got {self.name!r}")
        if self.scenario not in scenarios.available():
            raise ValueError(f"unknown scenario {self.scenario!r}; available: {', '.join(scenarios.available())}")
        check_int(self.seed, "seed", 0)
        fast = config.fast_mode(self.fast)
        n = N_MODELS[fast] if self.n_models is None else check_int(self.n_models, "n_models", 3)
        if config.smoke():
            n = min(n, SMOKE_N)
        return replace(self, fast=fast, n_models=n)


#: The public development split: students score themselves on it. The grading split is another
#: forget set and seed, kept in the instructor's notebook only.
PUBLIC = Split("public", "random", seed=1)


def epsilon_resolution(n_models: int) -> dict:
    """What an audit with ``n_models`` per population can resolve under the competition's rule: the
    largest finite ε (``log(n - 1)``; otherwise 50), the number of buckets of ``F`` and the credit of
    the last bucket."""
    n = check_int(n_models, "n_models", 3)
    buckets = 2 * math.ceil(math.log(n - 1))
    return {"n_models": n, "max_finite_epsilon": math.log(n - 1), "buckets": buckets,
            "smallest_credit": 2.0 ** -(buckets - 1)}


# ------------------------------------------------------------------------------------ populations

@dataclass
class Populations:
    """Everything the scorer needs for one split: the data (``retain``, ``forget``, ``val`` handed to a
    submission; ``test`` kept back), the three populations as stacked state dicts ``{key: [N, ...]}``
    (``originals``, ``retrained``, ``reference``), how to build the architecture (``arch``,
    ``arch_kw``, ``n_classes``, ``input_shape``), the seconds of one Retrain measured at build
    (``retrain_seconds``) and the cache file's ``checksum``."""

    split: Split
    retain: XY
    forget: XY
    val: XY
    test: XY
    originals: dict[str, torch.Tensor]
    retrained: dict[str, torch.Tensor]
    reference: dict[str, torch.Tensor]
    arch: str
    arch_kw: dict
    n_classes: int
    input_shape: tuple
    train: dict
    retrain_seconds: float
    checksum: str = ""
    path: Path | None = None

    @property
    def n_models(self) -> int:
        return int(self.split.n_models)

    def make_model(self) -> nn.Module:
        from .. import models
        return models.make_model(self.arch, self.n_classes, self.input_shape, **self.arch_kw)

    def model(self, i: int, population: str = "originals") -> nn.Module:
        """Model ``i`` of ``population`` ("originals", "retrained" or "reference"), in eval mode."""
        stack = {"originals": self.originals, "retrained": self.retrained, "reference": self.reference}.get(population)
        if stack is None:
            raise ValueError(f"population must be 'originals', 'retrained' or 'reference', got {population!r}")
        if not 0 <= int(i) < self.n_models:
            raise ValueError(f"model index {i} out of range for {self.n_models} models")
        m = self.make_model()
        m.load_state_dict({k: v[int(i)].clone() for k, v in stack.items()})
        return m.eval()


def _split_key(split: Split) -> str:
    sc = scenarios.make(split.scenario, seed=split.seed, fast=split.fast)
    parts = [_CACHE_VERSION, split.scenario, split.seed, split.n_models, split.fast, config.smoke(), VAL_SHARE,
             sc.arch, sorted(sc.arch_kw.items()), sorted((k, repr(v)) for k, v in sc.train.items()),
             scenarios.recipe_key(sc), hashlib.sha1(sc.forget_idx.numpy().tobytes()).hexdigest(), torch.__version__]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def cache_dir() -> Path:
    """Where populations and baseline tables are cached (``COURSE_CHALLENGE_CACHE`` or ``build/challenge``)."""
    return Path(os.environ.get("COURSE_CHALLENGE_CACHE", config.ROOT / "build" / "challenge"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Lock:
    """An exclusive file lock (two grading workers asking for the same split build it once)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _load_checked(path: Path) -> dict | None:
    meta = path.with_suffix(".sha256")
    if not (path.exists() and meta.exists()):
        return None
    want = meta.read_text(encoding="utf-8").split()[0] if meta.read_text(encoding="utf-8").strip() else ""
    got = _sha256(path)
    if got != want:
        import warnings
        warnings.warn(f"{path.name}: checksum {got[:12]} does not match the recorded {want[:12]}; rebuilding it",
                      stacklevel=3)
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    blob["_checksum"] = got
    return blob


def _save_checked(path: Path, blob: dict) -> str:
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    digest = _sha256(tmp)
    os.replace(tmp, path)
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def _data(split: Split):
    sc = scenarios.make(split.scenario, seed=split.seed, fast=split.fast)
    ds = sc.data
    g = torch.Generator().manual_seed(config.derive_seed(split.seed, 41))
    perm = torch.randperm(len(ds.y_test), generator=g)
    n_val = int(round(VAL_SHARE * len(perm)))
    val, test = perm[:n_val], perm[n_val:]
    return sc, sc.retain, sc.forget, (ds.X_test[val], ds.y_test[val]), (ds.X_test[test], ds.y_test[test])


def _train_population(sc, X, y, seeds: list[int], desc: str) -> tuple[dict[str, torch.Tensor], float | None]:
    """Train one model per seed on (X, y) with the scenario's recipe: the stacked state dicts, and the
    seconds per model when trained one at a time (None when trained together on the engine)."""
    from .. import models, stacked
    make = lambda: models.make_model(sc.arch, sc.data.n_classes, sc.data.input_shape, **sc.arch_kw)  # noqa: E731
    probe = make()
    if not any(True for _ in probe.buffers()):
        st = stacked.StackedModels(make, seeds)
        kw = {k: v for k, v in sc.train.items() if k in ("epochs", "lr", "batch_size", "momentum", "weight_decay",
                                                          "schedule")}
        st.fit(X, y, desc=desc, **kw)
        return {k: v.detach().clone() for k, v in st.params.items()}, None
    states = []
    t0 = time.perf_counter()
    for s in progress(seeds, desc=desc):       # batch norm: one model at a time
        m = models.seeded(make, s)
        train.fit(m, X, y, seed=s, **sc.train)
        states.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})
    return {k: torch.stack([st[k] for st in states]) for k in states[0]}, (time.perf_counter() - t0) / len(seeds)


def _time_retrain(sc, retain: XY, seed: int, repeats: int = 3) -> float:
    """Seconds of one Retrain of the recipe on ``retain`` (``train.fit``, one model) on this machine now:
    the median of ``repeats`` timings after one untimed warm-up epoch."""
    warm = sc.make_model(stream=7)
    train.fit(warm, *retain, seed=seed, **{**sc.train, "epochs": 1})
    times = []
    for k in range(repeats):
        m = sc.make_model(stream=7 + k)
        t0 = time.perf_counter()
        train.fit(m, *retain, seed=seed + k, **sc.train)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def populations(split: Split = PUBLIC) -> Populations:
    """The populations of ``split``: from this process's memory, else from the cache (checksum
    verified), else trained now (vectorised where the architecture allows) and cached."""
    if os.environ.get("COURSE_IN_SANDBOX") == "1":
        raise RuntimeError("the challenge's populations are not available while your notebook is graded: the "
                           "grader scores your unlearning function itself, on the grading split")
    split = split.resolved()
    key = _split_key(split)
    if key in _POPULATIONS:
        return _POPULATIONS[key]
    path = cache_dir() / f"populations-{split.name}-{key}.pt"
    with _Lock(path.with_suffix(".lock")):
        blob = _load_checked(path)
        if blob is None:
            sc, retain, forget, val, test = _data(split)
            n = split.n_models
            seeds = {p: [config.derive_seed(split.seed, 40 + j, i) for i in range(n)]
                     for j, p in enumerate(("originals", "retrained", "reference"))}
            with torch.random.fork_rng(devices=[]):
                blob = {"key": key, "split": asdict(split)}
                for p, (X, y) in (("originals", (sc.data.X_train, sc.data.y_train)), ("retrained", retain),
                                  ("reference", retain)):
                    blob[p], per_model = _train_population(sc, X, y, seeds[p], f"{split.name}: {n} {p}")
                # one Retrain's seconds: the reference's own timing where trained one at a time (ResNet-18),
                # else timed here (the engine trains a population at once)
                blob["retrain_seconds"] = per_model if per_model is not None else \
                    _time_retrain(sc, retain, seeds["reference"][0])
            _save_checked(path, blob)
            blob = _load_checked(path)
    sc, retain, forget, val, test = _data(split)
    pops = Populations(split, retain, forget, val, test, blob["originals"], blob["retrained"], blob["reference"],
                       sc.arch, dict(sc.arch_kw), sc.data.n_classes, tuple(sc.data.input_shape), dict(sc.train),
                       float(blob["retrain_seconds"]), blob["_checksum"], path)
    _POPULATIONS[key] = pops
    return pops


def public_task(split: Split = PUBLIC, i: int = 0) -> tuple[nn.Module, XY, XY, XY]:
    """``(net, retain, forget, val)`` for developing a submission: original ``i`` of ``split`` (a copy, in
    train mode) and the three data sets a submission receives. Nothing else of the split is returned."""
    pops = populations(split)
    return (pops.model(i, "originals").train(), tuple(t.clone() for t in pops.retain),
            tuple(t.clone() for t in pops.forget), tuple(t.clone() for t in pops.val))


def retrain_seconds_now(pops: Populations) -> float:
    """One Retrain's seconds for the budget: timed now on this machine (FAST mode: the median of three
    after a warm-up), or the build's timing (full mode, where one Retrain is a ResNet-18 training)."""
    if not pops.split.fast:
        return pops.retrain_seconds
    sc = scenarios.make(pops.split.scenario, seed=pops.split.seed, fast=True)
    return _time_retrain(sc, pops.retain, config.derive_seed(pops.split.seed, 43))


