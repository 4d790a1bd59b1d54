"""The scikit-learn side of the exact estimators (Ridge, SISA, LegoNet), proved on all three:
the constructor only stores, so ``set_params`` and ``clone`` of every parameter behave exactly as
construction (same bits after fit, same refusal at fit); one ``check_is_fitted``, one ``score``;
one request check with one message per error and ints accepted everywhere; a report type per
estimator; ``set_params(checkpoint_dir=d)`` persists SISA's checkpoints; and in a smoke run
every reported cost equals the work the training loops did."""
import numpy as np
import pytest
import torch
from torch import nn

from course_lib import config, engine, models
from course_lib.exact import base, costs, legonet, ridge, sisa
from course_lib.exact.adapters import LinearBank
from course_lib.params import accuracy
from course_lib.validation import NotFittedError

N, D, C = 60, 10, 4


def _data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g)
    return X, X[:, :C].argmax(1).long()


def _mlp():
    return models.MLP(D, C, hidden=(8,))


def _mlp_wide():
    return models.MLP(D, C, hidden=(12,))


def _encoder():
    torch.manual_seed(5)
    return legonet.FrozenEncoder(nn.Linear(D, 16), 16, use_features=False)


def _adapter(d, c):
    return nn.Sequential(nn.Linear(d, 6), nn.ReLU(), nn.Linear(6, c))


# Every constructor parameter: (a valid non-default value, an invalid value, what the message names).
BASE = {
    "ridge": (ridge.Ridge, dict(alpha=0.5)),
    "sisa": (sisa.SISA, dict(n_shards=3, n_slices=2, make_model=_mlp, epochs_per_slice=1, batch_size=16)),
    "legonet": (legonet.LegoNet, dict(encoder=None, n_adapters=6, k=2, epochs=2, batch_size=16)),
}
_TABLE = torch.arange(N) % 3
VALUES = {
    "ridge": {"alpha": (2.0, -1.0, "alpha"), "fit_intercept": (False, "yes", "fit_intercept")},
    "sisa": {
        "n_shards": (2, 0, "n_shards"), "n_slices": (3, 0, "n_slices"), "make_model": (_mlp_wide, 3, "make_model"),
        "epochs_per_slice": (2, 0, "epochs_per_slice"), "aggregation": ("mean", "median", "aggregation"),
        "seed": (1, -1, "seed"), "lr": (0.1, 0.0, "lr"), "batch_size": (8, 0, "batch_size"),
        "momentum": (0.5, 1.5, "momentum"), "weight_decay": (0.0, -1.0, "weight_decay"),
        "schedule": ("constant", "step", "schedule"), "shard_of": (_TABLE, [0.5, 1.0], "shard_of"),
        "vectorize": (True, "yes", "vectorize"), "group_size": (2, 0, "group_size"),
        "checkpoint_dir": ("CKPT", 3, "checkpoint_dir"), "device": ("cpu", "nope", "device"),
    },
    "legonet": {
        "encoder": (_encoder(), 3, "encoder"), "n_adapters": (8, 0, "n_adapters"), "k": (3, 7, "k"),
        "key_noise": (0.0, -0.1, "key_noise"), "make_adapter": (_adapter, 3, "make_adapter"),
        "epochs": (3, 0, "epochs"), "lr": (0.05, 0.0, "lr"), "batch_size": (8, 0, "batch_size"),
        "momentum": (0.5, 1.0, "momentum"), "weight_decay": (0.0, -1.0, "weight_decay"),
        "schedule": ("constant", "step", "schedule"), "n_classes": (5, 1, "n_classes"),
        "chunk_size": (4, 0, "chunk_size"), "seed": (1, -1, "seed"), "device": ("cpu", "nope", "device"),
        "encode_batch_size": (4, 0, "encode_batch_size"),
    },
}
CASES = [(name, p) for name in VALUES for p in VALUES[name]]


def _fit(est, X, y, ids=None):
    if isinstance(est, ridge.Ridge):
        return est.fit(X.numpy(), nn.functional.one_hot(y, C).double().numpy(), ids=ids)
    return est.fit(X, y, ids=ids)


def _state(est, X):
    """Everything a fitted estimator computed, as tensors."""
    if isinstance(est, ridge.Ridge):
        return {"w": torch.from_numpy(est.w_), "pred": torch.from_numpy(est.predict(X.numpy()))}
    out = dict(est.state_dict() if isinstance(est, sisa.SISA) else est.params_)
    if isinstance(est, legonet.LegoNet):
        out["keys"] = est.keys_
    out["proba"] = est.predict_proba(X)
    return out


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _value(v, tmp_path):
    return str(tmp_path / "ckpt") if v == "CKPT" else v


def test_every_parameter_is_accounted_for():
    """The table above names every constructor parameter of every estimator."""
    for name, (cls, _) in BASE.items():
        assert set(VALUES[name]) == set(cls._param_names()), name


@pytest.mark.parametrize("name,param", CASES)
def test_set_params_then_fit_equals_construction(name, param, tmp_path):
    """For every parameter: built with v, or built with the default then set_params(v), or cloned,
    the three fit to the same bits."""
    cls, kw = BASE[name]
    v = _value(VALUES[name][param][0], tmp_path)
    X, y = _data()
    built = cls(**{**kw, param: v})
    later = cls(**kw).set_params(**{param: v})
    assert getattr(later, param) is v and built.get_params().keys() == later.get_params().keys()
    a, b = _fit(built, X, y), _fit(later, X, y)
    c = _fit(base.clone(built), X, y)
    _assert_bitwise(_state(a, X), _state(b, X))
    _assert_bitwise(_state(a, X), _state(c, X))


@pytest.mark.parametrize("name,param", CASES)
def test_an_invalid_value_is_refused_at_fit_the_same_way(name, param):
    """The constructor and set_params only store; fit refuses the value with one message."""
    cls, kw = BASE[name]
    _, bad, word = VALUES[name][param]
    X, y = _data()
    built = cls(**{**kw, param: bad})                    # no error here
    later = cls(**kw).set_params(**{param: bad})
    with pytest.raises(ValueError, match=word) as e1:
        _fit(built, X, y)
    with pytest.raises(ValueError, match=word) as e2:
        _fit(later, X, y)
    assert str(e1.value) == str(e2.value)
    assert not hasattr(built, built._fitted_attr) and not hasattr(later, later._fitted_attr)


def test_set_params_checkpoint_dir_then_fit_persists_checkpoints(tmp_path):
    """The store is built by fit from the current parameters: files appear in the folder."""
    X, y = _data()
    d = tmp_path / "ckpts"
    m = sisa.SISA(3, 2, _mlp, 1, batch_size=16).set_params(checkpoint_dir=d).fit(X, y)
    files = sorted(d.glob("*.pt"))
    assert len(files) == 3 * 2
    m.unlearn(int(m.ids_[0]))
    assert len(sorted(d.glob("*.pt"))) == 6                 # replaced checkpoints are deleted
    memory = sisa.SISA(3, 2, _mlp, 1, batch_size=16).fit(X, y)
    memory.unlearn(int(memory.ids_[0]))
    _assert_bitwise(_state(m, X), _state(memory, X))


# ----------------------------------------------------------------------------- fitted state

def _fitted(name):
    cls, kw = BASE[name]
    X, y = _data()
    return _fit(cls(**kw), X, y)


@pytest.mark.parametrize("name", list(BASE))
def test_check_is_fitted_names_the_estimator(name):
    cls, kw = BASE[name]
    est = cls(**kw)
    with pytest.raises(NotFittedError, match=f"this {cls.__name__} is not fitted yet"):
        est.check_is_fitted()
    with pytest.raises(NotFittedError, match=cls.__name__):
        est.unlearn([0])
    _fitted(name).check_is_fitted()


@pytest.mark.parametrize("name", ["sisa", "legonet"])
def test_score_is_the_course_accuracy(name):
    est = _fitted(name)
    X, y = _data(seed=1)
    assert est.score(X, y) == accuracy(est.predict(X), y)


def test_ridge_keeps_its_regression_score():
    est = _fitted("ridge")
    X, y = _data(seed=1)
    Y = nn.functional.one_hot(y, C).double().numpy()
    assert est.score(X.numpy(), Y) <= 1.0 and type(est).score is not base.ExactEstimator.score


# ----------------------------------------------------------------------------- requests

def _message(est, request):
    with pytest.raises(ValueError) as e:
        est.unlearn(request)
    return str(e.value)


def test_one_request_check_with_one_message_per_error():
    """The same bad request gets the same message from every estimator, and changes nothing."""
    ests = {name: _fitted(name) for name in BASE}
    for est in ests.values():
        report = est.unlearn(5)                                   # an int id works everywhere
        assert report.ids == [5] and len(est.requests_) == 1
    bad = {"duplicates": [7, 7], "not in the training set": [10_000], "already unlearned": [5],
           "every remaining row": [i for i in range(N) if i != 5], "non-empty": [], "integers": [1.5]}
    for word, request in bad.items():
        messages = {name: _message(est, request) for name, est in ests.items()}
        assert len(set(messages.values())) == 1, messages
        assert word in next(iter(messages.values()))
    for est in ests.values():
        assert len(est.requests_) == 1 and est.check_is_fitted() is None
    assert ests["sisa"].ids_.numel() == ests["legonet"].ids_.numel() == N - 1 == ests["ridge"].n_active_


def test_retrain_cost_checks_requests_like_unlearn():
    for name in ("sisa", "legonet"):
        est = _fitted(name)
        est.unlearn([3])
        with pytest.raises(ValueError, match="already unlearned"):
            est.retrain_cost([3])
        assert est.retrain_cost(4).ids == [4]


# ----------------------------------------------------------------------------- reports

def test_a_report_type_per_estimator():
    reports = {name: _fitted(name).unlearn([2, 9]) for name in BASE}
    s, lg, r = reports["sisa"], reports["legonet"], reports["ridge"]
    assert type(s) is base.SISAReport and type(lg) is base.LegoNetReport and type(r) is base.RidgeReport
    assert all(isinstance(x, base.UnlearnReport) for x in reports.values())
    assert s.shards == s.retrained and len(s.from_slices) == len(s.shards) and not hasattr(s, "adapters")
    assert lg.adapters == lg.retrained and isinstance(lg.key_sources, list) and not hasattr(lg, "shards")
    assert not hasattr(r, "shards") and not hasattr(r, "adapters") and r.retrained == [] and r.samples == 0
    assert s["shards"] == s.shards and s["from_slices"] == s.from_slices and lg["adapters"] == lg.adapters
    assert s["samples"] == s.samples and r["ids"] == [2, 9] and s.details["from_slices"] == s.from_slices
    with pytest.raises(KeyError):
        r["shards"]
    assert "from slice" in str(s) and "adapter(s)" in str(lg) and "0 row(s)" in str(r)


# ----------------------------------------------------------------------------- costs under a budget

class _Counter:
    """Counts what the training loops do: SGD steps per slot and example-gradient rows."""

    def __init__(self, monkeypatch):
        self.steps = self.samples = 0
        update = engine.sgd_update

        def sgd_update(P, M, grads, lr, momentum, weight_decay, active=None, *, inplace=False):
            self.steps += 1 if active is None else int(active.sum())
            return update(P, M, grads, lr, momentum, weight_decay, active, inplace=inplace)

        monkeypatch.setattr(engine, "sgd_update", sgd_update)
        vmap_grads, bank_grads = engine.vmap_ce_grads, LinearBank.grads

        def vmap_ce_grads(base_, X, y):
            g = vmap_grads(base_, X, y)
            return lambda P, rows, w: (self._rows(w), g(P, rows, w))[1]

        monkeypatch.setattr(engine, "vmap_ce_grads", vmap_ce_grads)
        monkeypatch.setattr(LinearBank, "grads", lambda bank, P, X, y, w: (self._rows(w), bank_grads(bank, P, X, y, w))[1])

    def _rows(self, w):
        self.samples += int((w > 0).sum())

    def take(self):
        out = (self.samples, self.steps)
        self.samples = self.steps = 0
        return out


class _CountingMLP(models.MLP):
    """Counts the rows of every forward in training mode (the one-shard-at-a-time path)."""

    seen = 0

    def forward(self, x):
        if self.training:
            type(self).seen += x.shape[0]
        return super().forward(x)


def _counting_mlp():
    return _CountingMLP(D, C, hidden=(8,))


@pytest.mark.parametrize("vectorize", [False, True])
def test_sisa_reported_costs_equal_the_work_done_in_a_smoke_run(monkeypatch, vectorize):
    """COURSE_SMOKE=1 caps the batch and the steps; retrain_cost, unlearn's report, fit_steps_ /
    fit_samples_ and the steps (and rows) the loops actually took all agree."""
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert config.budget() == config.SMOKE
    count = _Counter(monkeypatch)
    X, y = _data(n=120)
    _CountingMLP.seen = 0
    m = sisa.SISA(2, 2, _counting_mlp, 3, batch_size=40, vectorize=vectorize, group_size=2).fit(X, y)
    fit = costs.sisa_fit_cost(m.shard_, m.slice_, n_shards=2, n_slices=2, epochs_per_slice=3, batch_size=40)
    samples, steps = count.take()
    if not vectorize:
        samples, _CountingMLP.seen = _CountingMLP.seen, 0
    assert (m.fit_samples_, m.fit_steps_) == (fit["samples"], fit["steps"]) == (samples, steps)
    uncapped = costs.sisa_fit_cost(m.shard_, m.slice_, n_shards=2, n_slices=2, epochs_per_slice=3,
                                   batch_size=40, budget=config.UNCAPPED)
    assert fit["steps"] < uncapped["steps"] and fit["samples"] < uncapped["samples"]   # the cap did bite
    for request in ([int(m.ids_[0])], m.ids_[[3, 50, 90]].tolist()):
        planned = m.retrain_cost(request)
        done = m.unlearn(request)
        samples, steps = count.take()
        if not vectorize:
            samples, _CountingMLP.seen = _CountingMLP.seen, 0
        assert (planned.samples, planned.steps, planned.shards, planned.from_slices) == \
            (done.samples, done.steps, done.shards, done.from_slices)
        assert (done.samples, done.steps) == (samples, steps)


def test_legonet_reported_costs_equal_the_work_done_in_a_smoke_run(monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    count = _Counter(monkeypatch)
    X, y = _data(n=120)
    net = legonet.LegoNet(None, n_adapters=6, k=2, epochs=3, batch_size=40).fit(X, y)
    fit = costs.legonet_request_cost(net.sizes_.tolist(), epochs=3, batch_size=40)
    assert (net.fit_samples_, net.fit_steps_) == (fit["samples"], fit["steps"]) == count.take()
    uncapped = costs.legonet_request_cost(net.sizes_.tolist(), epochs=3, batch_size=40, budget=config.UNCAPPED)
    assert fit["steps"] < uncapped["steps"]
    for request in ([0], [5, 17, 99]):
        planned = net.retrain_cost(request)
        done = net.unlearn(request)
        assert (planned.samples, planned.steps, planned.adapters, planned.rows) == \
            (done.samples, done.steps, done.adapters, done.rows)
        assert (done.samples, done.steps) == count.take()


def test_retrain_cost_under_a_step_cap_counts_the_rows_of_the_first_steps(monkeypatch):
    """The closed form against batch_plan itself: 23 rows in batches of at most 5 (5 batches of
    5, 5, 5, 4, 4 rows) for 3 epochs, capped at 7 steps, 9 steps, or not at all."""
    orders = [torch.arange(23)] * 3
    for cap in (7, 9, None):
        budget = config.Budget(steps=cap, batch=5)
        monkeypatch.setattr(config, "budget", lambda b=budget: b)
        plan = engine.batch_plan(orders, 5, 23, 0.1, "constant")
        assert costs.retrain_cost(23, 3, 5, budget) == {"samples": plan.samples, "steps": plan.steps}
        assert plan.steps == (cap or 15)
    assert costs.retrain_cost(0, 3, 5) == {"samples": 0, "steps": 0}
    assert np.isclose(costs.retrain_cost(23, 3, 8, config.UNCAPPED)["samples"], 69)
