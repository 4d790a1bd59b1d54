"""SISA: unlearning is bitwise identical to fitting from scratch on the retained rows (several
seeds, forget sets in the first and the last slice, vectorised and one-by-one training, disk
checkpoints, empty shards), the layout depends on (seed, id) only, the cost report counts what
was re-trained, aggregation follows its documented rules, and bad input is refused."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import data, models
from course_lib.exact import sisa
from course_lib.exact.sisa import SISA


# Odd sizes on purpose (hidden 13, batch 7): CPU kernels take their edge paths there.
def mlp():
    return models.MLP(64, 10, hidden=(13,))


def dropout_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 10))


def tiny_cnn():
    return models.SmallCNN(10, 1, width=4, feature_dim=8)


def bn_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 10))


HP = dict(epochs_per_slice=2, batch_size=7, lr=0.05)


@pytest.fixture(scope="module")
def small(digits):
    """300 digits rows and 100 test rows."""
    return digits.X_train[:300], digits.y_train[:300], digits.X_test[:100]


def _assert_same(a: SISA, b: SISA, X_test: torch.Tensor) -> None:
    """Every parameter, checkpoint, layout and prediction of ``a`` and ``b`` is torch.equal."""
    assert torch.equal(a.ids_, b.ids_) and torch.equal(a.shard_, b.shard_) and torch.equal(a.slice_, b.slice_)
    assert a.params_.keys() == b.params_.keys()
    for n in a.params_:
        assert torch.equal(a.params_[n], b.params_[n]), f"parameter {n} differs"
    for s in range(a.n_shards):
        for r in range(a.n_slices):
            ca, cb = a.checkpoint(s, r), b.checkpoint(s, r)
            for part in ("params", "buffers", "momentum"):
                assert ca[part].keys() == cb[part].keys()
                for n in ca[part]:
                    assert torch.equal(ca[part][n], cb[part][n]), f"checkpoint ({s}, {r}) {part} {n} differs"
    assert a.active_shards_ == b.active_shards_
    assert torch.equal(a.shard_logits(X_test), b.shard_logits(X_test))
    assert torch.equal(a.predict_proba(X_test), b.predict_proba(X_test))
    assert torch.equal(a.predict(X_test), b.predict(X_test))


def _forget_in_slice(model: SISA, r: int, k: int, seed: int) -> torch.Tensor:
    """``k`` ids of slice ``r``, spread over shards."""
    cand = model.ids_[model.slice_ == r]
    g = torch.Generator().manual_seed(seed)
    return cand[torch.randperm(cand.numel(), generator=g)[:k]]


def _scratch(kw: dict, X, y, forget) -> SISA:
    keep = data.retain_indices(len(y), forget)
    return SISA(**kw).fit(X[keep], y[keep], ids=keep)


# ----------------------------------------------------------------------------- layout

def test_assign_depends_only_on_seed_and_id():
    ids = torch.arange(5000)
    shard, slc = sisa.assign(ids, seed=3, n_shards=7, n_slices=4)
    sub = torch.tensor([4999, 17, 2500, 0])
    s2, r2 = sisa.assign(sub, seed=3, n_shards=7, n_slices=4)
    assert torch.equal(s2, shard[sub]) and torch.equal(r2, slc[sub])
    assert shard.min() >= 0 and shard.max() == 6 and slc.min() >= 0 and slc.max() == 3
    counts = torch.bincount(shard * 4 + slc, minlength=28).double()
    assert (counts - 5000 / 28).abs().max() < 5 * math.sqrt(5000 / 28), "hash layout far from uniform"
    assert not torch.equal(sisa.assign(ids, 4, 7, 4)[0], shard), "the seed must change the layout"


def test_fit_ignores_row_order(small):
    X, y, Xt = small
    kw = dict(n_shards=3, n_slices=2, make_model=mlp, seed=1, **HP)
    a = SISA(**kw).fit(X, y)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    b = SISA(**kw).fit(X[perm], y[perm], ids=perm)
    _assert_same(a, b, Xt)


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorised", "one-by-one"])
@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("where", ["first", "last", "mixed"])
def test_unlearn_is_bitwise_fit_from_scratch(small, seed, where, vectorize):
    """5 shards and 3 slices; vectorised in groups of 3, so shards change group-mates."""
    X, y, Xt = small
    kw = dict(n_shards=5, n_slices=3, make_model=mlp, seed=seed, group_size=3, vectorize=vectorize, **HP)
    model = SISA(**kw).fit(X, y)
    if where == "first":
        forget = _forget_in_slice(model, 0, 2, seed)
    elif where == "last":
        forget = _forget_in_slice(model, 2, 2, seed)
    else:
        forget = torch.cat([_forget_in_slice(model, r, 3, seed + r) for r in range(3)])
    report = model.unlearn(forget)
    assert report.ids == sorted(forget.tolist())
    _assert_same(model, _scratch(kw, X, y, forget), Xt)


@pytest.mark.parametrize("make,vectorize", [(tiny_cnn, True), (mlp, False), (bn_mlp, None)],
                         ids=["cnn-vectorised", "mlp-one-by-one", "batchnorm-one-by-one"])
def test_unlearn_exact_for_other_models_and_paths(small, make, vectorize):
    X, y, Xt = small
    kw = dict(n_shards=4, n_slices=2, make_model=make, seed=2, vectorize=vectorize, group_size=3, **HP)
    model = SISA(**kw).fit(X, y)
    assert model._vectorized == (vectorize is True)
    forget = torch.cat([_forget_in_slice(model, 0, 1, 0), _forget_in_slice(model, 1, 2, 1)])
    model.unlearn(forget)
    _assert_same(model, _scratch(kw, X, y, forget), Xt)


def test_dropout_draws_from_named_streams_not_the_global_one(small):
    """A model with dropout: unlearning is still a refit, whatever the global random state did in
    between, and the vectorised path (which cannot name per-shard streams) refuses it."""
    X, y, Xt = small
    kw = dict(n_shards=3, n_slices=2, make_model=dropout_mlp, seed=4, **HP)
    torch.manual_seed(123)
    model = SISA(**kw).fit(X, y)
    assert not model._vectorized
    forget = torch.cat([_forget_in_slice(model, 0, 1, 0), _forget_in_slice(model, 1, 2, 1)])
    torch.manual_seed(999)
    model.unlearn(forget)
    torch.rand(17)
    _assert_same(model, _scratch(kw, X, y, forget), Xt)
    with pytest.raises(ValueError, match="dropout"):
        SISA(**{**kw, "vectorize": True}).fit(X, y)


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorised", "one-by-one"])
def test_exact_with_sparse_shuffled_ids_and_mean_aggregation(small, vectorize):
    """Ids far from 0..n-1, rows given in shuffled order, softmax-mean aggregation: still a refit."""
    X, y, Xt = small
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    ids = perm * 1000 + 7
    kw = dict(n_shards=4, n_slices=3, make_model=mlp, seed=6, aggregation="mean", vectorize=vectorize,
              group_size=3, **HP)
    model = SISA(**kw).fit(X[perm], y[perm], ids=ids)
    forget = torch.tensor([int(ids[5]), int(ids[77]), int(ids[250])])
    model.unlearn(forget)
    keep = ~torch.isin(ids, forget)
    fresh = SISA(**kw).fit(X[perm][keep], y[perm][keep], ids=ids[keep])
    _assert_same(model, fresh, Xt)
    proba = model.predict_proba(Xt)
    assert torch.allclose(proba.sum(1), torch.ones(len(Xt)), atol=1e-5)


def test_sequence_of_requests_equals_one_refit(small):
    X, y, Xt = small
    kw = dict(n_shards=3, n_slices=3, make_model=mlp, seed=5, vectorize=True, **HP)
    model = SISA(**kw).fit(X, y)
    requests = [torch.tensor([4]), torch.tensor([250, 11, 99]), torch.tensor([0])]
    for req in requests:
        model.unlearn(req)
    assert len(model.requests_) == 3 and model.requests_[1].ids == [11, 99, 250]
    _assert_same(model, _scratch(kw, X, y, torch.cat(requests)), Xt)


def test_shard_trained_alone_equals_shard_in_full_group(small):
    """The vectorisation claim itself: re-training one shard with dummies as group-mates gives the
    bits it got beside the real shards."""
    X, y, _ = small
    model = SISA(6, 2, mlp, seed=0, group_size=4, vectorize=True, **HP).fit(X, y)
    for s in (1, 5):
        ckpts, _, _ = model._retrain(model._data, {s: 0})
        for r in range(2):
            full = model.checkpoint(s, r)
            for n in full["params"]:
                assert torch.equal(ckpts[(s, r)]["params"][n], full["params"][n])
                assert torch.equal(ckpts[(s, r)]["momentum"][n], full["momentum"][n])


def test_resume_keeps_earlier_checkpoints(small):
    """Removing a row of slice 2 re-trains only slices 2.. of its shard; everything else is the
    very same checkpoint object as before."""
    X, y, _ = small
    model = SISA(3, 4, mlp, seed=0, **HP).fit(X, y)
    before = dict(model._ckpt)
    (victim,) = _forget_in_slice(model, 2, 1, 0).tolist()
    s = int(model.shard_[model.ids_ == victim])
    report = model.unlearn([victim])
    assert report.shards == [s] and report.from_slices == [2]
    for (sh, r), c in model._ckpt.items():
        assert (c is before[(sh, r)]) == (sh != s or r < 2), (sh, r)


def test_checkpoints_on_disk_are_exact_and_tidy(small, tmp_path):
    X, y, Xt = small
    kw = dict(n_shards=3, n_slices=2, make_model=mlp, seed=4, **HP)
    disk = SISA(checkpoint_dir=tmp_path, **kw).fit(X, y)
    assert len(list(tmp_path.glob("*.pt"))) == 6
    forget = _forget_in_slice(disk, 0, 2, 0)
    disk.unlearn(forget)
    assert len(list(tmp_path.glob("*.pt"))) == 6, "replaced checkpoints must be deleted"
    _assert_same(disk, _scratch(kw, X, y, forget), Xt)


# ----------------------------------------------------------------------------- empty shards

@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorised", "one-by-one"])
def test_empty_shard_is_left_out_and_exact(small, vectorize):
    X, y, Xt = small
    table = torch.zeros(300, dtype=torch.long)
    table[1::2] = 1
    table[[10, 20]] = 2                                       # shard 2 holds two rows only
    kw = dict(n_shards=3, n_slices=2, make_model=mlp, seed=0, shard_of=table, vectorize=vectorize, **HP)
    model = SISA(**kw).fit(X, y)
    assert model.active_shards_ == [0, 1, 2]
    report = model.unlearn([10, 20])
    assert report.shards == [2] and report.samples == 0 and report.steps == 0
    assert model.active_shards_ == [0, 1]
    fresh = _scratch(kw, X, y, torch.tensor([10, 20]))
    _assert_same(model, fresh, Xt)
    init = models.seeded(mlp, sisa.config.derive_seed(0, 1, 2))      # untrained: initial weights
    for n, p in init.named_parameters():
        assert torch.equal(model.params_[n][2], p.detach())
    # the empty shard has no say: the prediction is that of shards 0 and 1 alone
    votes = model.shard_logits(Xt)[[0, 1]].argmax(-1)
    shares = torch.nn.functional.one_hot(votes, 10).sum(0).float() / 2
    assert torch.equal(model.predict_proba(Xt), shares)


def test_default_path_on_the_cpu(small):
    """On the CPU shards train one by one unless vectorize=True (see the class docstring)."""
    X, y, _ = small
    assert SISA(3, 1, mlp, **HP).fit(X, y)._vectorized is False
    assert SISA(1, 1, mlp, vectorize=True, **HP).fit(X, y)._vectorized is True


def test_callable_shard_of(small):
    X, y, Xt = small
    model = SISA(2, 1, mlp, seed=0, shard_of=lambda ids: ids % 2, **HP).fit(X, y)
    assert torch.equal(model.shard_, model.ids_ % 2)


# ----------------------------------------------------------------------------- cost

def test_report_counts_retrained_samples(small):
    X, y, _ = small
    E = HP["epochs_per_slice"]
    model = SISA(4, 3, mlp, seed=3, **HP).fit(X, y)
    sizes = model.sizes_
    assert sizes.sum() == 300
    assert model.fit_samples_ == E * int(sum(sizes[s, :r + 1].sum() for s in range(4) for r in range(3)))
    forget = torch.cat([_forget_in_slice(model, 1, 2, 0), _forget_in_slice(model, 2, 1, 1)])
    where = {i: (int(model.shard_[model.ids_ == i]), int(model.slice_[model.ids_ == i])) for i in forget.tolist()}
    start = {}
    for s, r in where.values():
        start[s] = min(r, start.get(s, r))
    after = sizes.clone()
    for s, r in where.values():
        after[s, r] -= 1
    expect = E * sum(int(after[s, :r + 1].sum()) for s, r0 in start.items() for r in range(r0, 3))
    planned = model.retrain_cost(forget)
    report = model.unlearn(forget)
    assert report.shards == sorted(start) and report.from_slices == [start[s] for s in sorted(start)]
    assert report.samples == planned.samples == expect
    assert report.steps == planned.steps > 0 and report.seconds > 0
    assert torch.equal(model.sizes_, after)


def test_expected_cost_formula(small):
    X, y, _ = small
    model = SISA(3, 2, mlp, seed=0, **HP).fit(X, y)
    n = model.ids_.numel()
    assert model.expected_cost(torch.zeros(n)) == 0.0
    p = torch.zeros(n)
    p[17] = 1.0                                              # certain deletion of one row
    assert math.isclose(model.expected_cost(p), model.retrain_cost([int(model.ids_[17])]).samples, abs_tol=1e-6)
    assert math.isclose(model.expected_cost(torch.ones(n)), 0.0, abs_tol=1e-6)   # everything goes: nothing to re-train
    g = torch.Generator().manual_seed(0)
    p = torch.rand(n, generator=g) * 0.02
    sims = []
    for _ in range(400):
        hit = model.ids_[torch.rand(n, generator=g) < p]
        sims.append(model.retrain_cost(hit).samples if hit.numel() else 0)
    sims = np.array(sims, dtype=float)
    assert abs(sims.mean() - model.expected_cost(p)) < 4 * sims.std() / math.sqrt(len(sims)) + 1e-9
    sub = model.ids_[:5]
    assert math.isclose(model.expected_cost(torch.full((5,), 0.5), ids=sub),
                        model.expected_cost(torch.cat([torch.full((5,), 0.5), torch.zeros(n - 5)])))


def test_distribution_aware_shards():
    p = torch.tensor([0.1, 0.9, 0.0, 0.5, 0.3, 0.2, 0.8])
    out = sisa.distribution_aware_shards(p, 3)
    # descending p: rows 1, 6, 3 | 4, 5 | 0, 2  (sizes 3, 2, 2)
    assert out.tolist() == [2, 0, 2, 0, 1, 1, 0]
    out = sisa.distribution_aware_shards(p, 2, sizes=[1, 6])
    assert out.tolist() == [1, 0, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="sizes"):
        sisa.distribution_aware_shards(p, 2, sizes=[3, 3])
    with pytest.raises(ValueError, match="probabilities"):
        sisa.distribution_aware_shards(p * 2, 2)


# ----------------------------------------------------------------------------- aggregation

def _fake_logits(model: SISA, logits: torch.Tensor) -> None:
    model.shard_logits = lambda X, batch_size=1024: logits        # instance attribute wins


def test_vote_and_mean_by_hand(small):
    X, y, _ = small
    model = SISA(3, 1, lambda: models.MLP(64, 3, hidden=(4,)), seed=0, epochs_per_slice=1).fit(X, y % 3)
    L = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 1.0]],       # shard 0 votes 0, 2
                      [[0.0, 5.0, 0.0], [0.0, 1.0, 0.0]],       # shard 1 votes 1, 1
                      [[0.0, 0.0, 9.0], [3.0, 0.0, 0.0]]])      # shard 2 votes 2, 0
    _fake_logits(model, L)
    proba = model.predict_proba(torch.zeros(2, 1, 8, 8))
    assert torch.allclose(proba, torch.tensor([[1, 1, 1], [1, 1, 1]]) / 3.0)
    # three-way ties: the larger mean softmax probability wins (class 2 has logit 9 in row 0)
    mean = torch.softmax(L.double(), -1).mean(0)
    assert model.predict(torch.zeros(2, 1, 8, 8)).tolist() == mean.argmax(1).tolist() == [2, 0]
    L2 = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 7.0]]])
    _fake_logits(model, L2)
    assert model.predict(torch.zeros(1, 1, 8, 8)).tolist() == [0], "a majority beats a confident minority"
    model.aggregation = "mean"
    assert model.predict(torch.zeros(1, 1, 8, 8)).tolist() == [1], "the mean follows the confident model"
    assert torch.allclose(model.predict_proba(torch.zeros(1, 1, 8, 8)), torch.softmax(L2, -1).mean(0))


def test_learns_something(digits):
    model = SISA(3, 2, lambda: models.MLP(64, 10, hidden=(32,)), epochs_per_slice=4, seed=0).fit(
        digits.X_train, digits.y_train)
    assert model.score(digits.X_test, digits.y_test) > 85
    assert 0 < model.shard_model(0).head.weight.abs().sum()


# ----------------------------------------------------------------------------- errors

def test_errors_before_fit(small):
    from sklearn.exceptions import NotFittedError

    X, _, _ = small
    model = SISA(2, 2, mlp)
    for call in (lambda: model.unlearn([0]), lambda: model.predict(X), lambda: model.retrain_cost([0]),
                 lambda: model.state_dict()):
        with pytest.raises(NotFittedError, match="fit"):
            call()
    assert issubclass(sisa.NotFittedError, (ValueError, RuntimeError))


def test_state_dict_and_report_access(small):
    X, y, _ = small
    model = SISA(2, 2, bn_mlp, seed=0, **HP).fit(X, y)
    sd = model.state_dict()
    assert "shard1.2.running_mean" in sd and torch.equal(sd["shard0.1.weight"], model.params_["1.weight"][0])
    report = model.unlearn(int(model.ids_[0]))
    assert report["samples"] == report.samples and report["shards"] == report.shards
    with pytest.raises(KeyError):
        report["nope"]


def test_bad_requests_change_nothing(small):
    X, y, Xt = small
    model = SISA(3, 2, mlp, seed=0, **HP).fit(X, y)
    model.unlearn([5, 6])
    snapshot = {n: p.clone() for n, p in model.params_.items()}
    ids_before = model.ids_
    bad = {
        "duplicates": [7, 7],
        "already unlearned": [5],
        "not in the training set": [300],
        "non-negative": [-1],
        "integers": [1.5],
        "every remaining row": model.ids_.tolist(),
    }
    for msg, req in bad.items():
        with pytest.raises(ValueError, match=msg):
            model.unlearn(req)
    with pytest.raises(ValueError, match="empty|non-empty"):
        model.unlearn([])
    assert torch.equal(model.ids_, ids_before) and len(model.requests_) == 1
    assert all(torch.equal(snapshot[n], model.params_[n]) for n in snapshot)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(n_shards=0), "n_shards"), (dict(n_slices=0), "n_slices"), (dict(n_shards=True), "n_shards"),
    (dict(epochs_per_slice=0), "epochs_per_slice"), (dict(aggregation="median"), "aggregation"),
    (dict(schedule="step"), "schedule"), (dict(seed=-1), "seed"), (dict(make_model=3), "make_model"),
    (dict(lr=0.0), "lr"), (dict(vectorize="yes"), "vectorize"), (dict(shard_of=[0.5, 1.0]), "shard_of"),
])
def test_bad_arguments(small, kwargs, msg):
    """Bad constructor arguments are refused by fit (the constructor only stores them)."""
    X, y, _ = small
    args = dict(n_shards=2, n_slices=2, make_model=mlp)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        SISA(**args).fit(X, y)


def test_bad_fit_input(small):
    X, y, _ = small
    model = SISA(2, 1, mlp, **HP)
    with pytest.raises(ValueError, match="X must be"):
        model.fit(X, y[:-1])
    with pytest.raises(ValueError, match="int64"):
        model.fit(X, y.float())
    with pytest.raises(ValueError, match="duplicates"):
        model.fit(X[:3], y[:3], ids=[0, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        model.fit(X[:3], y[:3], ids=[0, -1, 2])
    with pytest.raises(ValueError, match="one id per row"):
        model.fit(X[:3], y[:3], ids=[0, 1])
    with pytest.raises(ValueError, match="labels"):
        model.fit(X[:3], torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="buffers"):
        SISA(2, 1, bn_mlp, vectorize=True).fit(X, y)
    with pytest.raises(ValueError, match="shard_of"):
        SISA(2, 1, mlp, shard_of=lambda ids: ids % 3).fit(X, y)
