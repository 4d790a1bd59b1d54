import math

import numpy as np
import pytest
import torch

from course_lib import data, metrics


def test_accuracy_and_ua_by_hand():
    """3 of 4 right is 75%; UA is 100 minus forget accuracy; logits use the argmax."""
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 75.0
    assert metrics.unlearning_accuracy(np.array([1, 1]), np.array([1, 0])) == 50.0
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="shape"):
        metrics.accuracy([0, 1], [0, 1, 2])


def test_confidence_by_hand():
    """Equal logits give 1/C; (log 3, 0) gives 3/4."""
    c = metrics.confidence(torch.tensor([[0.0, 0.0, 0.0], [math.log(3), 0.0, -1e9]]), torch.tensor([2, 0]))
    assert torch.allclose(c, torch.tensor([1 / 3, 0.75]))
    with pytest.raises(ValueError, match="logits"):
        metrics.confidence(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_entropy_by_hand():
    """Uniform over four classes has entropy log 4; a one-hot-like output about 0."""
    e = metrics.entropy(torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]))
    assert e[0].item() == pytest.approx(math.log(4)) and e[1].item() < 1e-6


def test_mia_efficacy_separable_cases():
    """Forget examples that look like test data are called non-members, like retain data members."""
    rng = np.random.default_rng(0)
    r, t = rng.uniform(0.9, 1.0, 400), rng.uniform(0.0, 0.5, 100)
    assert metrics.mia_efficacy(r, t, rng.uniform(0.0, 0.5, 40)) == 100.0
    assert metrics.mia_efficacy(r, t, rng.uniform(0.9, 1.0, 40)) == 0.0
    half = np.concatenate([rng.uniform(0.0, 0.5, 10), rng.uniform(0.9, 1.0, 30)])
    assert metrics.mia_efficacy(r, t, half) == 25.0


def test_mia_efficacy_balances_the_classes(monkeypatch):
    """The SVC is fitted on equally many members (label 1) and non-members (label 0), the larger
    side subsampled without repetition, and the subsample depends on the seed."""
    from sklearn.svm import SVC

    seen = []
    fit = SVC.fit

    def spy(self, X, y, *a, **kw):
        seen.append((np.asarray(X).ravel().copy(), np.asarray(y).copy()))
        return fit(self, X, y, *a, **kw)

    monkeypatch.setattr(SVC, "fit", spy)
    rng = np.random.default_rng(1)
    r, t = rng.uniform(0.55, 1.0, 1000), rng.uniform(0.0, 0.45, 10)
    assert metrics.mia_efficacy(r, t, np.full(20, 0.3)) == 100.0
    X, y = seen[-1]
    assert y.tolist() == [1] * 10 + [0] * 10, "10 members then 10 non-members"
    assert set(X[:10]) <= set(r) and len(set(X[:10])) == 10 and sorted(X[10:]) == sorted(t)
    metrics.mia_efficacy(t, r, np.full(3, 0.3))  # now the non-members are the larger side
    X, y = seen[-1]
    assert (y == 1).sum() == (y == 0).sum() == 10 and set(X[10:]) <= set(r)
    metrics.mia_efficacy(r, t, np.full(3, 0.3), seed=5)
    assert set(seen[-1][0][:10]) != set(seen[0][0][:10]), "another seed, another subsample"


def test_mia_efficacy_hand_computed():
    """Members at 1, non-members at 0: forget examples at 0 are non-members, at 1 members."""
    assert metrics.mia_efficacy(np.ones(20), np.zeros(20), [0.0, 0.0, 1.0, 1.0]) == 50.0
    assert metrics.mia_efficacy(np.ones(20), np.zeros(20), [0.1, 0.0, 0.05]) == 100.0


def test_mia_inputs_validated():
    """Empty, 2-D or NaN features are refused."""
    with pytest.raises(ValueError, match="empty"):
        metrics.mia_efficacy([], [0.1], [0.2])
    with pytest.raises(ValueError, match="1-D"):
        metrics.mia_efficacy(np.zeros((3, 2)), [0.1], [0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.mia_efficacy([0.1, float("nan")], [0.1, 0.2], [0.2])


def test_mia_privacy_chance_and_separable():
    """Same distribution for members and non-members: about 50%; separable: 100%."""
    rng = np.random.default_rng(2)
    same = metrics.mia_privacy(rng.uniform(size=2000), rng.uniform(size=2000))
    assert 40 < same < 60
    assert metrics.mia_privacy(rng.uniform(0.9, 1, 200), rng.uniform(0, 0.1, 200)) == 100.0
    with pytest.raises(ValueError, match="at least 4"):
        metrics.mia_privacy([0.5, 0.6], [0.1, 0.2])


def test_disparity_and_table_by_hand():
    """Disparity is the mean absolute gap over UA, MIA-Efficacy, RA, TA."""
    ref = {"UA": 10.0, "MIA-Efficacy": 20.0, "RA": 90.0, "TA": 80.0, "RTE (s)": 5.0}
    row = {"UA": 12.0, "MIA-Efficacy": 14.0, "RA": 91.0, "TA": 79.0, "RTE (s)": 1.0}
    assert metrics.disparity_average(row, ref) == pytest.approx((2 + 6 + 1 + 1) / 4)
    df = metrics.table({"Retrain": ref, "FT": row})
    assert df.loc["Retrain", "Disparity avg"] == 0 and df.loc["FT", "Disparity avg"] == 2.5
    with pytest.raises(ValueError, match="reference row"):
        metrics.table({"FT": row})
    with pytest.raises(ValueError, match="lack"):
        metrics.disparity_average({"UA": 1.0}, ref)


class Constant(torch.nn.Module):
    """Always predicts class c with confidence softmax([1, 0, ...])."""

    def __init__(self, c, k=10):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.c, self.k = c, k

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k) + 0 * self.p
        out[:, self.c] = 1.0
        return out


def test_evaluate_constant_model_by_hand(digits):
    """For a model that always says 3: UA, RA and TA follow from class frequencies."""
    f = data.forget_class(digits.y_train, 3)
    row = metrics.evaluate(Constant(3), digits, f, seconds=1.5)
    r = data.retain_indices(len(digits.y_train), f)
    assert row["UA"] == 0.0  # every forget example is a 3 and is predicted 3
    assert row["RA"] == 0.0  # no retain example is a 3
    assert row["TA"] == pytest.approx(100 * (digits.y_test == 3).double().mean().item())
    assert row["RTE (s)"] == 1.5
    assert set(row) == {"UA", "MIA-Efficacy", "RA", "TA", "MIA-Privacy", "RTE (s)"}
    row2 = metrics.evaluate(Constant(3), digits, f, exclude_classes=[3])
    assert row2["TA"] == 0.0 and math.isnan(row2["RTE (s)"])
    assert len(r) + len(f) == len(digits.y_train)


def test_evaluate_on_trained_model(digits, trained):
    """A model trained on everything: UA about 0 on a random forget set, RA about 100."""
    f = data.forget_random(digits.y_train, 0.1)
    row = metrics.evaluate(trained, digits, f)
    assert row["UA"] < 3 and row["RA"] > 97 and row["TA"] > 93
    assert 0 <= row["MIA-Efficacy"] <= 100


def test_evaluate_feeds_the_attacks_the_right_sets(digits, trained, monkeypatch):
    """MIA-Efficacy gets (retain, test, forget) confidences and MIA-Privacy (retain, test), in that order."""
    calls = {}
    monkeypatch.setattr(metrics, "mia_efficacy", lambda *a, **k: calls.setdefault("eff", a) and 1.0)
    monkeypatch.setattr(metrics, "mia_privacy", lambda *a, **k: calls.setdefault("priv", a) and 2.0)
    f = data.forget_random(digits.y_train, 0.1)
    r = data.retain_indices(len(digits.y_train), f)
    row = metrics.evaluate(trained, digits, f)
    assert row["MIA-Efficacy"] == 1.0 and row["MIA-Privacy"] == 2.0
    conf_tr = metrics.confidence(metrics.predict_logits(trained, digits.X_train), digits.y_train)
    conf_te = metrics.confidence(metrics.predict_logits(trained, digits.X_test), digits.y_test)
    for got, want in zip(calls["eff"], (conf_tr[r], conf_te, conf_tr[f])):
        assert torch.equal(got, want)
    for got, want in zip(calls["priv"], (conf_tr[r], conf_te)):
        assert torch.equal(got, want)


def test_evaluate_refuses_diverged_models(digits):
    """NaN logits mean the method diverged; the error says so."""
    class Nan(Constant):
        def forward(self, x):
            return super().forward(x) * float("nan")
    with pytest.raises(ValueError, match="diverged"):
        metrics.evaluate(Nan(0), digits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="every test example"):
        metrics.evaluate(Constant(0), digits, torch.tensor([0]), exclude_classes=list(range(10)))
