"""The course's forgetting scenarios: one home for the data, the forget set and the original's recipe.

``scenarios.make(name, seed=0, fast=None) -> Scenario``; ``scenarios.available()`` lists the names with
their one-line descriptions. Every lecture and graded notebook takes its data and forget sets from here.

FAST mode is a **memorising benchmark**: scikit-learn's digits with fixed Gaussian pixel noise
(std :data:`PIXEL_NOISE`, one draw for the whole benchmark) and an MLP trained to 100% training
accuracy, so the original knows its training rows far better than unseen ones and there is something
to forget. Full mode is CIFAR-10 with ResNet-18 (the sources' setting, 002 App. C.2, 003 App. A.2).

===========  ===================================================================================
name         forget set
===========  ===================================================================================
random       :data:`RANDOM_FRACTION` of the training rows, uniformly at random (002 Sec. 5, 003)
class        every training row of class :data:`FORGET_CLASS` (class-wise forgetting, 002 Tab. 3)
noniid       half of the rows of classes :data:`NONIID_CLASSES` (003's non-IID forget sets)
mislabeled   :data:`RANDOM_FRACTION` of the rows, relabelled at random to another class: the original
             memorises the wrong labels and Retrain does not (the memorisation setting 003 builds on)
backdoor     :data:`BACKDOOR_FRACTION` of class :data:`BACKDOOR_SOURCE`, with a trigger patch and the
             label :data:`BACKDOOR_TARGET` (BadNets; 002 Sec. 6's backdoor cleanse)
===========  ===================================================================================

The seed draws the forget set, the relabelling and the models' initialisation and batch order; the
noisy data set is the same for every seed. Measured gaps (FAST, 3 seeds, ``benchmarks/scenarios.py``)
are in :data:`MEASURED`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from . import config, data as _data, models, train
from .validation import check_int, check_seeds

PIXEL_NOISE = 0.5
RANDOM_FRACTION = 0.1
FORGET_CLASS = 3
NONIID_CLASSES = (2, 5)
NONIID_FRACTION = 0.5
BACKDOOR_SOURCE, BACKDOOR_TARGET, BACKDOOR_FRACTION = 7, 1, 0.5

#: The original's (and Retrain's) recipe per mode: architecture and ``train.fit`` arguments.
RECIPES = {
    True: dict(dataset="digits", arch="mlp", arch_kw={}, train=dict(epochs=30, lr=0.05, batch_size=32)),
    False: dict(dataset="cifar10", arch="resnet18", arch_kw={},
                train=dict(epochs=60, lr=0.1, batch_size=256, augment=_data.random_crop_flip)),
}

#: Named variants of a recipe, chosen with ``make(name, seed, fast, recipe=...)`` ("default" is
#: :data:`RECIPES`). ``"deep"`` (lesson 7, localised unlearning): in FAST mode the same data and training
#: as the default but an MLP with three hidden layers of 128 units (four linear layers, 42,634
#: parameters), so that layers and units exist to localise in; full mode keeps ResNet-18 (already deep).
#: Measured for ``mislabeled`` in :data:`MEASURED_VARIANTS`.
RECIPE_VARIANTS = {
    "deep": {True: dict(RECIPES[True], arch_kw={"hidden": (128, 128, 128)}), False: RECIPES[False]},
}

DESCRIPTIONS = {
    "random": f"{RANDOM_FRACTION:.0%} of the training rows, drawn uniformly at random",
    "class": f"every training row of class {FORGET_CLASS}",
    "noniid": f"{NONIID_FRACTION:.0%} of the rows of classes {NONIID_CLASSES[0]} and {NONIID_CLASSES[1]}",
    "mislabeled": f"{RANDOM_FRACTION:.0%} of the training rows relabelled at random to another class "
                  "(the original memorises them, Retrain does not)",
    "backdoor": f"{BACKDOOR_FRACTION:.0%} of class {BACKDOOR_SOURCE} with a 2x2 trigger patch, labelled "
                f"{BACKDOOR_TARGET} (a backdoor to cleanse)",
}

#: FAST-mode measurements over seeds 0-2 (``python benchmarks/scenarios.py``): mean original and Retrain
#: accuracy on the forget set (with the labels the original trained on), and the seed noise (std).
#: Measured on 2026-12-05: every original reaches ~100% training accuracy and the Original-Retrain gap on
#: the forget set is 10-50x its seed noise on random, noniid and mislabeled.
MEASURED: dict[str, dict[str, float]] = {
    "random": {"original_forget_acc": 100.0, "retrain_forget_acc": 62.7, "gap": 37.3, "gap_std": 3.8,
               "original_train_acc": 100.0, "original_test_acc": 71.5, "retrain_test_acc": 71.3},
    "class": {"original_forget_acc": 100.0, "retrain_forget_acc": 0.0, "gap": 100.0, "gap_std": 0.0,
              "original_train_acc": 100.0, "original_test_acc": 71.5, "retrain_test_acc": 66.4},
    "noniid": {"original_forget_acc": 100.0, "retrain_forget_acc": 52.7, "gap": 47.3, "gap_std": 5.0,
               "original_train_acc": 100.0, "original_test_acc": 71.5, "retrain_test_acc": 71.3},
    "mislabeled": {"original_forget_acc": 95.8, "retrain_forget_acc": 3.5, "gap": 92.3, "gap_std": 1.9,
                   "original_train_acc": 99.6, "original_test_acc": 67.0, "retrain_test_acc": 71.3},
    "backdoor": {"original_forget_acc": 100.0, "retrain_forget_acc": 9.0, "gap": 91.0, "gap_std": 3.0,
                 "original_train_acc": 100.0, "original_test_acc": 71.2, "retrain_test_acc": 71.1},
}


#: FAST-mode measurements of the named recipe variants, keyed ``"scenario:recipe"`` (the quantities of
#: :data:`MEASURED`, computed as ``benchmarks/scenarios.py`` does, with ``recipe=``; seeds 0-2, measured on
#: 2026-12-05). The deep MLP memorises the wrong labels (99.5% vs Retrain's 4.2%: a gap of 95.3 points,
#: 50x its seed std of 1.9).
MEASURED_VARIANTS: dict[str, dict[str, float]] = {
    "mislabeled:deep": {"original_forget_acc": 99.5, "retrain_forget_acc": 4.2, "gap": 95.3, "gap_std": 1.9,
                        "retrain_forget_acc_std": 1.1, "original_train_acc": 100.0, "original_test_acc": 65.6,
                        "retrain_test_acc": 71.0},
}


def recipes() -> list[str]:
    """The recipe names ``make`` accepts: "default" and the keys of :data:`RECIPE_VARIANTS`."""
    return ["default", *RECIPE_VARIANTS]


def available() -> dict[str, str]:
    """The scenario names and their one-line descriptions."""
    return dict(DESCRIPTIONS)


@dataclass
class Scenario:
    """A forgetting scenario: ``data`` (the training set the original sees: relabelled or poisoned
    where the scenario says so), ``forget_idx`` (rows of ``data.X_train``), the original's recipe
    (``arch``, ``arch_kw``, ``train``), a one-line ``description``; ``clean_y_train`` holds the true
    labels (differs from ``data.y_train`` only for ``mislabeled`` and ``backdoor``), ``extras`` the
    scenario's own settings (the backdoor's classes and trigger size, the forgotten classes)."""

    name: str
    seed: int
    fast: bool
    data: _data.DataSplit
    forget_idx: torch.Tensor
    arch: str
    arch_kw: dict
    train: dict
    description: str
    clean_y_train: torch.Tensor
    extras: dict = field(default_factory=dict)
    recipe: str = "default"

    @property
    def retain_idx(self) -> torch.Tensor:
        return _data.retain_indices(len(self.data.y_train), self.forget_idx)

    @property
    def forget(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.X_train[self.forget_idx], self.data.y_train[self.forget_idx]

    @property
    def retain(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.retain_idx
        return self.data.X_train[r], self.data.y_train[r]

    @property
    def exclude_classes(self) -> list[int] | None:
        """Classes to leave out of TA (class-wise forgetting), for ``metrics.evaluate``."""
        return [FORGET_CLASS] if self.name == "class" else None

    def make_model(self, stream: int = 0) -> nn.Module:
        """A freshly initialised model of the recipe, seeded by the scenario's seed and ``stream``."""
        make: Callable[[], nn.Module] = lambda: models.make_model(self.arch, self.data.n_classes,   # noqa: E731
                                                                   self.data.input_shape, **self.arch_kw)
        return models.seeded(make, config.derive_seed(self.seed, 31, stream))

    def train_original(self, model: nn.Module | None = None) -> nn.Module:
        """The original: trained on the whole training set (in place if ``model`` is given)."""
        m = model if model is not None else self.make_model()
        train.fit(m, self.data.X_train, self.data.y_train, seed=config.derive_seed(self.seed, 32), **self.train)
        return m

    def train_retrain(self, model: nn.Module | None = None) -> nn.Module:
        """Retrain, the gold standard: the same recipe and initialisation on the retain set only."""
        m = model if model is not None else self.make_model()
        X, y = self.retain
        train.fit(m, X, y, seed=config.derive_seed(self.seed, 32), **self.train)
        return m

    def __repr__(self) -> str:
        return (f"Scenario({self.name!r}, seed={self.seed}, {'FAST' if self.fast else 'full'}: {self.data.name}, "
                f"{len(self.forget_idx)} of {len(self.data.y_train)} rows to forget, {self.arch})")


def _noisy(ds: _data.DataSplit) -> _data.DataSplit:
    g = torch.Generator().manual_seed(config.derive_seed(0, 99))          # one draw for the whole benchmark
    noisy = lambda X: X + PIXEL_NOISE * torch.randn(X.shape, generator=g)  # noqa: E731
    return _data.DataSplit(f"{ds.name} + pixel noise {PIXEL_NOISE}", noisy(ds.X_train), ds.y_train.clone(),
                           noisy(ds.X_test), ds.y_test.clone(), list(ds.classes))


_CACHE: dict[bool, _data.DataSplit] = {}


def base_data(fast: bool | None = None) -> _data.DataSplit:
    """The benchmark's data set (cached per process): noisy digits in FAST mode, CIFAR-10 otherwise."""
    fast = config.fast_mode(fast)
    if fast not in _CACHE:
        ds = _data.load(RECIPES[fast]["dataset"])
        _CACHE[fast] = _noisy(ds) if fast else ds
    return _CACHE[fast]


def make(name: str, seed: int = 0, fast: bool | None = None, recipe: str = "default") -> Scenario:
    """The scenario ``name`` (see :func:`available`) drawn with ``seed``, in FAST or full mode; ``recipe``
    names the original's recipe ("default": :data:`RECIPES`; others: :data:`RECIPE_VARIANTS`). The data
    and the forget set do not depend on the recipe."""
    if recipe != "default" and recipe not in RECIPE_VARIANTS:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(recipes())}")
    if name not in DESCRIPTIONS:
        raise ValueError(f"unknown scenario {name!r}; available: {', '.join(DESCRIPTIONS)}")
    seed = check_int(seed, "seed", 0)
    fast = config.fast_mode(fast)
    base = base_data(fast)
    recipe_name, recipe = recipe, (RECIPES[fast] if recipe == "default" else RECIPE_VARIANTS[recipe][fast])
    y = base.y_train
    s = config.derive_seed(seed, 30)
    ds, extras = base, {}
    if name == "random":
        idx = _data.forget_random(y, RANDOM_FRACTION, seed=s)
    elif name == "class":
        idx = _data.forget_class(y, FORGET_CLASS)
        extras["classes"] = [FORGET_CLASS]
    elif name == "noniid":
        idx = _data.forget_noniid(y, list(NONIID_CLASSES), NONIID_FRACTION, seed=s)
        extras["classes"] = list(NONIID_CLASSES)
    elif name == "mislabeled":
        idx = _data.forget_random(y, RANDOM_FRACTION, seed=s)
        g = torch.Generator().manual_seed(config.derive_seed(seed, 33))
        shift = torch.randint(1, base.n_classes, (len(idx),), generator=g)   # never the true class
        y_new = y.clone()
        y_new[idx] = (y[idx] + shift) % base.n_classes
        ds = _data.DataSplit(f"{base.name}, {len(idx)} rows mislabeled", base.X_train, y_new, base.X_test,
                             base.y_test, list(base.classes))
    else:  # backdoor
        Xp, yp, idx = _data.backdoor(base.X_train, y, BACKDOOR_SOURCE, BACKDOOR_TARGET, BACKDOOR_FRACTION, seed=s)
        ds = _data.DataSplit(f"{base.name}, {len(idx)} rows backdoored", Xp, yp, base.X_test, base.y_test,
                             list(base.classes))
        extras.update(source=BACKDOOR_SOURCE, target=BACKDOOR_TARGET, trigger_size=2)
    return Scenario(name, seed, fast, ds, idx, recipe["arch"], dict(recipe["arch_kw"]), dict(recipe["train"]),
                    DESCRIPTIONS[name], y.clone(), extras, recipe_name)


# ----------------------------------------------------------------------------- trained models, over seeds

_ORIGINALS: dict[tuple, nn.Module] = {}
_RETRAINED: dict[tuple, nn.Module] = {}


def _digest(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def recipe_key(sc: Scenario) -> tuple:
    """What the original depends on: the training data (its labels, and the pixels for a poisoned set),
    the seed and the recipe. ``random``, ``class`` and ``noniid`` share one original per seed."""
    X = sc.data.X_train
    pixels = _digest(X.flatten()[:: max(1, X.numel() // 100_000)])      # a strided sample: cheap on CIFAR
    return (sc.fast, sc.seed, sc.data.name, _digest(sc.data.y_train), pixels, sc.arch,
            repr(sorted(sc.arch_kw.items())), repr(sorted((k, repr(v)) for k, v in sc.train.items())), config.smoke())


def trained(name: str | Scenario, seed: int = 0, fast: bool | None = None) -> tuple[Scenario, nn.Module, nn.Module]:
    """``(scenario, original, retrained)`` of scenario ``name`` with ``seed``, trained once per process and
    cached (a lecture that asks twice pays once). ``name`` may be a :class:`Scenario` (e.g. one whose
    recipe or forget set was changed with ``dataclasses.replace``). The original is cached by what it
    depends on (data, seed, recipe), so scenarios on the same data share it; Retrain also by the forget
    set. Do not train the returned models in place: ``unlearn.unlearn`` works on a copy."""
    sc = name if isinstance(name, Scenario) else make(name, seed=seed, fast=fast)
    key = recipe_key(sc)
    if key not in _ORIGINALS:
        _ORIGINALS[key] = sc.train_original()
    rkey = key + (_digest(torch.sort(sc.forget_idx.long()).values),)
    if rkey not in _RETRAINED:
        _RETRAINED[rkey] = sc.train_retrain()
    return sc, _ORIGINALS[key], _RETRAINED[rkey]


def compare(name: str | Callable[[int], Scenario], methods: Sequence[str], *, seeds: Sequence[int] = (0, 1, 2),
            fast: bool | None = None, hp: Mapping[str, Mapping] | None = None, tuned_for: str | None = None,
            mia_feature: str = "confidence", original: str | None = "Original"):
    """Every method of ``methods`` on scenario ``name`` over ``seeds``, judged against that seed's Retrain.

    Per seed: the scenario is drawn (:func:`make`; or ``name(seed)`` when ``name`` is a callable returning a
    :class:`Scenario`), its original and Retrain are trained (:func:`trained`, cached), each method runs on
    a copy of the original with the course's tuned setting (``unlearn.tuned(method, tuned_for or name)``)
    unless ``hp[method]`` gives one, and every model is evaluated by :func:`metrics.evaluate` (TA without
    the forgotten class for class-wise forgetting). Returns a :class:`course_lib.unlearn.SeedComparison`:
    ``mean``/``std`` tables, ``runs`` (one table per seed, rows ``Original``, ``Retrain`` and the
    methods), ``models`` of the first seed, and ``per_seed(row, metric)`` for the claims helper."""
    from . import metrics, unlearn

    seeds = check_seeds(list(seeds))
    methods = list(methods)
    for m in methods:
        unlearn.resolve(m)
    hp = dict(hp or {})
    unknown = sorted(set(hp) - set(methods))
    if unknown:
        raise ValueError(f"hyper-parameters given for {unknown}, which are not among the methods {methods}")
    if not callable(name) and name not in DESCRIPTIONS:
        raise ValueError(f"unknown scenario {name!r}; available: {', '.join(DESCRIPTIONS)}")
    table_name = tuned_for or (name if isinstance(name, str) else None)
    settings = {}
    for m in methods:
        if m in hp:
            settings[m] = dict(hp[m])
        elif table_name is None:
            raise ValueError(f"no setting for {m}: pass hp={{{m!r}: {{...}}}} or tuned_for=<scenario name>")
        else:
            settings[m] = unlearn.tuned(m, table_name, fast)
    runs, first, scs = {}, None, {}
    for s in train.progress(seeds, desc=f"seeds ({name if isinstance(name, str) else 'scenario'})", total=len(seeds)):
        sc = name(s) if callable(name) else make(name, seed=s, fast=fast)
        sc, orig, retr = trained(sc)
        ev = lambda model, sec=None: metrics.evaluate(model, sc.data, sc.forget_idx, seconds=sec,   # noqa: E731
                                                       exclude_classes=sc.exclude_classes, seed=s,
                                                       mia_feature=mia_feature)
        rows, models_ = {}, {}
        if original:
            rows[original], models_[original] = ev(orig), orig
        rows["Retrain"], models_["Retrain"] = ev(retr), retr
        for m in methods:
            res = unlearn.unlearn(m, orig, sc.retain, sc.forget, seed=s, **settings[m])
            rows[m], models_[m] = ev(res.model, res.seconds), res.model
        runs[s] = metrics.table(rows, reference="Retrain")
        scs[s] = sc
        first = models_ if first is None else first
    return unlearn.SeedComparison.from_runs(runs, first, settings=settings, scenarios=scs)
