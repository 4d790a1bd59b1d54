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


# --- attack features (MIA variants of sources 002 and 003) -------------------------------

HAND_LOGITS = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, math.log(3), 0.0], [100.0, 0.0, 0.0]])
HAND_Y = torch.tensor([1, 1, 0])  # wrong, right, right


def test_attack_features_by_hand():
    """Softmax rows (1/2, 1/4, 1/4), (1/5, 3/5, 1/5), (~1, ~0, ~0) give the hand-computed
    true-class and max confidences, entropies and correctness bits."""
    f = {k: metrics.attack_features(HAND_LOGITS, HAND_Y, k) for k in metrics.ATTACK_FEATURES}
    np.testing.assert_allclose(f["confidence"], [1 / 4, 3 / 5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(f["max_confidence"], [1 / 2, 3 / 5, 1.0], rtol=1e-6)
    h1 = -(2 * 0.2 * math.log(0.2) + 0.6 * math.log(0.6))
    np.testing.assert_allclose(f["entropy"], [1.5 * math.log(2), h1, 0.0], rtol=1e-6, atol=1e-30)
    assert f["correctness"].tolist() == [0.0, 1.0, 1.0]
    for v in f.values():
        assert v.dtype == np.float64 and v.shape == (3,)
    assert np.array_equal(metrics.attack_features(HAND_LOGITS, HAND_Y), f["confidence"]), "default"
    same = metrics.attack_features(HAND_LOGITS.numpy(), HAND_Y.numpy(), "max_confidence")
    assert np.array_equal(same, f["max_confidence"]), "numpy inputs give the same values"


def test_correctness_is_a_zero_one_argmax_match():
    """Correctness is exactly 0 or 1 and equals argmax == label on random logits."""
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(500, 7, generator=g), torch.randint(0, 7, (500,), generator=g)
    c = metrics.attack_features(logits, y, "correctness")
    assert set(np.unique(c)) == {0.0, 1.0}
    assert np.array_equal(c, (logits.argmax(1) == y).numpy().astype(np.float64))


def test_unknown_or_misshaped_feature_requests_are_refused():
    """An unknown feature name is refused with the list of known ones; bad shapes and NaN too."""
    known = r"\['confidence', 'max_confidence', 'entropy', 'correctness'\]"
    with pytest.raises(ValueError, match="unknown MIA feature 'loss'; choose one of " + known):
        metrics.attack_features(HAND_LOGITS, HAND_Y, "loss")
    with pytest.raises(ValueError, match="logits"):
        metrics.attack_features(HAND_LOGITS[0], HAND_Y, "entropy")
    with pytest.raises(ValueError, match="NaN"):
        metrics.attack_features(HAND_LOGITS * float("nan"), HAND_Y, "max_confidence")


def test_constant_feature_attack_is_a_coin_flip():
    """If every fitted feature is equal the SVC cannot learn: both MIAs report 50%, whatever
    the forget features (libsvm alone would call everything a member: 0%)."""
    assert metrics.mia_efficacy(np.ones(10), np.ones(30), [1.0, 0.0, 1.0]) == 50.0
    assert metrics.mia_efficacy(np.zeros(10), np.zeros(10), [0.0]) == 50.0
    assert metrics.mia_privacy(np.ones(8), np.ones(12)) == 50.0
    # constant on one side only is informative and still fitted
    assert metrics.mia_efficacy(np.ones(20), np.zeros(20), [0.0, 1.0]) == 50.0
    assert metrics.mia_efficacy(np.ones(20), np.zeros(20), [0.0, 0.0]) == 100.0


def test_correctness_attack_calls_wrong_forget_predictions_non_members():
    """Retain all right, test 15 right and 5 wrong: the attack learns wrong = non-member, so
    MIA-Efficacy is the share of wrong forget predictions (3 of 5)."""
    test = np.r_[np.ones(15), np.zeros(5)]
    assert metrics.mia_efficacy(np.ones(50), test, [1.0, 1.0, 0.0, 0.0, 0.0]) == 60.0


def test_evaluate_default_feature_is_the_old_true_class_confidence_attack(digits, trained):
    """evaluate() without mia_feature equals mia_feature="confidence" and the attacks run by
    hand on metrics.confidence, bit for bit."""
    f = data.forget_random(digits.y_train, 0.1, seed=3)
    r = data.retain_indices(len(digits.y_train), f)
    row = metrics.evaluate(trained, digits, f, seed=4, seconds=2.0)
    assert row == metrics.evaluate(trained, digits, f, seed=4, seconds=2.0, mia_feature="confidence")
    c_tr = metrics.confidence(metrics.predict_logits(trained, digits.X_train), digits.y_train)
    c_te = metrics.confidence(metrics.predict_logits(trained, digits.X_test), digits.y_test)
    assert row["MIA-Efficacy"] == metrics.mia_efficacy(c_tr[r], c_te, c_tr[f], 4)
    assert row["MIA-Privacy"] == metrics.mia_privacy(c_tr[r], c_te, 4)


@pytest.mark.parametrize("feature", ["max_confidence", "entropy", "correctness"])
def test_evaluate_feeds_each_feature_to_both_attacks(digits, trained, monkeypatch, feature):
    """With mia_feature set, MIA-Efficacy gets that feature of (retain, test, forget) and
    MIA-Privacy of (retain, test); the other metrics do not change."""
    f = data.forget_random(digits.y_train, 0.1)
    r = data.retain_indices(len(digits.y_train), f)
    base = metrics.evaluate(trained, digits, f)
    calls = {}
    monkeypatch.setattr(metrics, "mia_efficacy", lambda *a, **k: calls.setdefault("eff", a) and 1.0)
    monkeypatch.setattr(metrics, "mia_privacy", lambda *a, **k: calls.setdefault("priv", a) and 2.0)
    row = metrics.evaluate(trained, digits, f, mia_feature=feature)
    assert {k: row[k] for k in ("UA", "RA", "TA")} == {k: base[k] for k in ("UA", "RA", "TA")}
    ft = metrics.attack_features(metrics.predict_logits(trained, digits.X_train), digits.y_train, feature)
    fe = metrics.attack_features(metrics.predict_logits(trained, digits.X_test), digits.y_test, feature)
    for got, want in zip(calls["eff"][:3] + calls["priv"][:2], (ft[r], fe, ft[f], ft[r], fe)):
        assert np.array_equal(np.asarray(got, dtype=np.float64), want)


def test_evaluate_with_correctness_feature_on_a_trained_model(digits, trained):
    """Forget = every wrongly predicted training row plus 30 right ones: the retain set is all
    right, the test set is not, so the correctness attack calls exactly the wrong forget
    predictions non-members and its MIA-Efficacy equals UA (> 0)."""
    wrong = metrics.predict_logits(trained, digits.X_train).argmax(1) != digits.y_train
    assert wrong.any(), "precondition: the model makes some training mistakes"
    f = torch.cat([torch.nonzero(wrong).ravel(), torch.nonzero(~wrong).ravel()[:30]])
    wrong_test = metrics.predict_logits(trained, digits.X_test).argmax(1) != digits.y_test
    assert wrong_test.any(), "precondition: the model makes some test mistakes"
    row = metrics.evaluate(trained, digits, f, mia_feature="correctness")
    assert row["UA"] > 0 and row["RA"] == 100.0
    assert row["MIA-Efficacy"] == pytest.approx(row["UA"])
    for feature in metrics.ATTACK_FEATURES:
        row = metrics.evaluate(trained, digits, f, mia_feature=feature)
        assert 0 <= row["MIA-Efficacy"] <= 100 and 0 <= row["MIA-Privacy"] <= 100


def test_evaluate_constant_features_give_coin_flip_attacks(digits):
    """A model with one fixed output has the same max confidence and entropy everywhere:
    both attacks are coin flips (50%); its true-class confidence still separates classes."""
    f = data.forget_class(digits.y_train, 3)
    for feature in ("max_confidence", "entropy"):
        row = metrics.evaluate(Constant(3), digits, f, mia_feature=feature)
        assert row["MIA-Efficacy"] == 50.0 and row["MIA-Privacy"] == 50.0, feature


def test_evaluate_refuses_unknown_feature_before_running_the_model(digits):
    """An unknown mia_feature is reported as such, even for a model that would diverge."""
    class Nan(Constant):
        def forward(self, x):
            return super().forward(x) * float("nan")
    with pytest.raises(ValueError, match=r"unknown MIA feature 'Confidence'; choose one of \['confidence'"):
        metrics.evaluate(Nan(0), digits, torch.tensor([0, 1]), mia_feature="Confidence")
