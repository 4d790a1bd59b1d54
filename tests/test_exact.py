"""The exact-unlearning protocol, proved once for every exact estimator of the course: after
``unlearn(ids)`` the estimator equals ``clone(est).fit`` on the retained rows (bitwise, or up to
float64 rounding where the class says so), also after several requests with shuffled,
non-contiguous ids; plus the protocol's common behaviour (get_params/clone, reports, errors)."""
import numpy as np
import pytest
import torch
from torch import nn

from course_lib import config, models
from course_lib.exact import base, costs, legonet, ridge, sisa
from course_lib.validation import NotFittedError


def _data(n=150, d=10, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = X[:, :classes].argmax(1).long()
    return X, y


class _LinearEncoder(nn.Module):
    """A small encoder with a Linear layer: the case where a row's output could depend on its
    position in a batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 16))

    def forward(self, x):
        return self.net(x)


def _mlp():
    return models.MLP(10, 4, hidden=(16,))


def _conv():
    return models.SmallCNN(4, in_channels=1)


ESTIMATORS = {
    "ridge": lambda: ridge.Ridge(alpha=0.5),
    "sisa-loop": lambda: sisa.SISA(3, 2, _mlp, 2, seed=0, batch_size=16, vectorize=False),
    "sisa-vectorised": lambda: sisa.SISA(3, 2, _mlp, 2, seed=0, batch_size=16, vectorize=True, group_size=2),
    "legonet-linear-encoder": lambda: legonet.LegoNet(legonet.FrozenEncoder(_LinearEncoder(), 16, use_features=False),
                                                      n_adapters=12, k=3, epochs=2, batch_size=16, n_classes=4),
    "legonet-cached": lambda: legonet.LegoNet(None, n_adapters=12, k=3, epochs=2, batch_size=16, n_classes=4),
}


def _predictions(est, X):
    if isinstance(est, ridge.Ridge):
        return torch.from_numpy(est.predict(X.numpy()))
    return est.predict_proba(X)


def _state(est):
    if isinstance(est, ridge.Ridge):
        return {"w": torch.from_numpy(est.w_)}
    if isinstance(est, sisa.SISA):
        return est.state_dict()
    return dict(est.params_)


def _assert_same(a, b, X, exactness):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        if exactness == "bitwise":
            assert torch.equal(sa[k], sb[k]), f"{k} differs from the refit"
        else:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-9, atol=1e-9)
    pa, pb = _predictions(a, X), _predictions(b, X)
    assert torch.equal(pa, pb) if exactness == "bitwise" else torch.allclose(pa, pb, rtol=1e-9, atol=1e-9)


def _fit(est, X, y, ids):
    if isinstance(est, ridge.Ridge):
        return est.fit(X.numpy(), torch.nn.functional.one_hot(y, 4).double().numpy(), ids=ids)
    return est.fit(X, y, ids=ids)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_unlearn_equals_refit_on_the_retained_rows(name):
    """Two requests in a row with shuffled, sparse ids (early rows included): the unlearned model
    equals a fresh fit on what is left, by the class's own standard of exactness."""
    X, y = _data()
    ids = torch.randperm(1000, generator=torch.Generator().manual_seed(2))[:X.shape[0]] * 3 + 7
    est = _fit(ESTIMATORS[name](), X, y, ids)
    first, second = ids[[0, 1, 2, 40]], ids[[5, 77]]          # the earliest rows go first
    r1, r2 = est.unlearn(first), est.unlearn(second)
    assert isinstance(r1, base.UnlearnReport) and r1.ids == sorted(first.tolist()) and r2.ids == sorted(second.tolist())
    keep = ~torch.isin(ids, torch.cat([first, second]))
    fresh = _fit(base.clone(est), X[keep], y[keep], ids[keep]) if not est.refit_kwargs() else \
        base.clone(est).fit(X[keep], y[keep], ids=ids[keep], **est.refit_kwargs())
    _assert_same(est, fresh, X, type(est).exactness)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
@pytest.mark.parametrize("encoder", ["linear", "conv"])
def test_legonet_encodings_do_not_depend_on_batch_mates(encoder, batch_size):
    """Removing early rows from a set larger than one encoding batch leaves every other row's
    encoding bitwise unchanged, for Linear and conv encoders and several batch sizes."""
    if encoder == "linear":
        enc, X = legonet.FrozenEncoder(_LinearEncoder(), 16, use_features=False), _data(n=150)[0]
    else:
        torch.manual_seed(3)
        enc = legonet.FrozenEncoder(_conv(), _conv().feature_dim)
        X = torch.randn(150, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    full = legonet.encode(enc, X, batch_size=1)
    later = legonet.encode(enc, X[3:], batch_size=1)
    assert torch.equal(full[3:], later)
    if batch_size > 1:  # batched encodings are only guaranteed on the cache; they must still be close
        torch.testing.assert_close(legonet.encode(enc, X, batch_size=batch_size), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sisa-loop", "legonet-cached", "ridge"])
def test_get_params_set_params_and_clone(name):
    """get_params names every constructor argument; clone is unfitted with equal parameters;
    set_params stores (fit validates) and keeps the fitted state; unknown parameters are refused."""
    est = ESTIMATORS[name]()
    params = est.get_params()
    c = base.clone(est)
    assert c is not est and c.get_params().keys() == params.keys()
    with pytest.raises(NotFittedError):
        c.unlearn([0])
    with pytest.raises(ValueError, match="has no parameter"):
        est.set_params(not_a_parameter=1)


def test_set_params_changes_how_a_fitted_sisa_predicts():
    """SISA's aggregation can be switched on a fitted model without refitting; as in
    scikit-learn set_params only stores, and a bad value is refused where it is used."""
    X, y = _data()
    m = sisa.SISA(3, 1, _mlp, 1, seed=0, batch_size=16).fit(X, y)
    vote = m.predict_proba(X)
    mean = m.set_params(aggregation="mean").predict_proba(X)
    assert m.aggregation == "mean" and not torch.equal(vote, mean)
    with pytest.raises(ValueError, match="aggregation"):
        m.set_params(aggregation="median").predict_proba(X)
    with pytest.raises(ValueError, match="aggregation"):
        base.clone(m).fit(X, y)
    assert torch.equal(m.set_params(aggregation="mean").predict_proba(X), mean)


def test_report_samples_are_epochs_times_rows_for_both_estimators():
    """One unit for both estimators: samples = epochs x remaining rows of the re-trained units."""
    X, y = _data()
    lego = legonet.LegoNet(None, n_adapters=12, k=3, epochs=3, batch_size=16, n_classes=4).fit(X, y)
    r = lego.unlearn([5])
    assert r.unit == "adapter" and r.samples == 3 * int(sum(lego.sizes_[j] for j in r.retrained))
    s = sisa.SISA(3, 1, _mlp, 4, seed=0, batch_size=16).fit(X, y)
    shard = int(s.shard_[s.ids_ == 5])
    r = s.unlearn([5])
    assert r.unit == "shard" and r.retrained == [shard] and r.samples == 4 * int((s.shard_ == shard).sum())


def test_sisa_cost_model_matches_what_unlearn_did():
    """The pure cost function predicts the samples and steps a real request then takes."""
    X, y = _data()
    s = sisa.SISA(3, 3, _mlp, 2, seed=0, batch_size=16).fit(X, y)
    planned = s.retrain_cost([4, 9, 130])
    done = s.unlearn([4, 9, 130])
    assert (planned.samples, planned.steps, planned.retrained, planned.from_slices) == \
        (done.samples, done.steps, done.retrained, done.from_slices)


def test_uniform_request_cost_formula_against_brute_force():
    """e n (R+1)(2R+1)/(6R) for one uniformly random row equals the average over rows of the
    per-request cost on an evenly sliced shard (large-shard limit, removed row ignored)."""
    S, R, e, per_slice = 1, 4, 3, 50
    shard = torch.zeros(R * per_slice, dtype=torch.long)
    slc = torch.arange(R).repeat_interleave(per_slice)
    total = 0
    for i in range(shard.numel()):
        removed = torch.zeros_like(shard, dtype=torch.bool)
        removed[i] = True
        c = costs.sisa_request_cost(shard, slc, removed, n_slices=R, epochs_per_slice=e, batch_size=8,
                                    budget=config.UNCAPPED)   # the formula is for an uncapped run
        total += c["samples"] + e * (R - int(slc[i]))      # add the removed row back: the formula's limit
    assert total / shard.numel() == pytest.approx(costs.sisa_uniform_request_cost(R * per_slice, S, R, e))


def test_ridge_unlearn_by_id_refuses_unknown_ids():
    """Ridge's unlearn takes ids and refuses unknown ones without changing anything."""
    X, y = _data()
    m = _fit(ridge.Ridge(alpha=1.0), X, y, None)
    w = m.w_.copy()
    with pytest.raises(ValueError, match="not in the training set"):
        m.unlearn([10_000])
    assert np.array_equal(w, m.w_)
