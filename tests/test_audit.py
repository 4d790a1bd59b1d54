"""The empirical ε audit: per-example ε from threshold attacks, forgetting quality, final score,
logit-scaled confidence. Values are checked against hand-computed cases and properties."""
import math

import numpy as np
import pytest
import torch

from course_lib import audit


def _brute_force(a: np.ndarray, b: np.ndarray, delta: float) -> float:
    """Plain estimate for one example, written out threshold by threshold."""
    n = len(a)
    best = 0.0
    for t in np.concatenate([[-np.inf], np.unique(np.concatenate([a, b]))]):
        for pos, neg in ((a, b), (b, a)):                       # attack "score > t => pos"
            fpr, fnr = np.mean(neg > t), np.mean(pos <= t)
            for x, y in ((fpr, fnr), (fnr, fpr)):
                if 1 - delta - x > 0:
                    best = max(best, math.log((1 - delta - x) / max(y, 1 / n)))
    return best


# ------------------------------------------------------------------ epsilon_per_example
def test_plain_estimate_matches_hand_computed_case():
    # a = {0, 1, 2, 3}, b = {1.5, 2.5, 4, 5}: the best attack is "score > 2 => b", with
    # one a above (3) and one b below (1.5): log((1 - δ - 1/4) / (1/4)) = log(3 - 4δ)
    a = np.array([[0.0], [1.0], [2.0], [3.0]])
    b = np.array([[1.5], [2.5], [4.0], [5.0]])
    eps = audit.epsilon_per_example(a, b, delta=1e-5, confidence=None)
    assert eps.shape == (1,)
    assert eps[0] == pytest.approx(math.log(3 - 4e-5), abs=1e-12)
    # one overlap already reaches the cap log(4 (1 - δ)): a zero count is clamped to 1/4
    b2 = np.array([[2.5], [4.0], [5.0], [6.0]])
    assert audit.epsilon_per_example(a, b2, confidence=None)[0] == pytest.approx(math.log(4 * (1 - 1e-5)))


def test_plain_estimate_matches_brute_force_on_random_problems():
    rng = np.random.default_rng(1)
    for n in (2, 5, 16):
        a = rng.normal(size=(n, 7))
        b = rng.normal(loc=rng.uniform(-2, 2), size=(n, 7)).round(1)   # ties too
        got = audit.epsilon_per_example(a, b, delta=1e-3, confidence=None)
        want = [_brute_force(a[:, j], b[:, j], 1e-3) for j in range(7)]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_identical_samples_give_zero_and_same_distribution_near_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 200))
    assert np.all(audit.epsilon_per_example(a, a.copy()) == 0)
    assert np.all(audit.epsilon_per_example(a, a.copy(), confidence=None) == 0)
    b = rng.normal(size=(32, 200))
    eps = audit.epsilon_per_example(a, b)
    assert eps.mean() < 0.1 and np.median(eps) == 0
    # the plain estimate is biased upwards: about 1.4 for identical distributions
    assert 1.0 < audit.epsilon_per_example(a, b, confidence=None).mean() < 1.8


def test_grows_with_separation_symmetric_and_capped():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(64, 300))
    b = rng.normal(size=(64, 300))
    means = []
    for shift in (0.0, 0.5, 1.0, 2.0, 4.0):
        eps = audit.epsilon_per_example(a, b + shift)
        np.testing.assert_array_equal(eps, audit.epsilon_per_example(b + shift, a))
        means.append(eps.mean())
    assert all(x < y for x, y in zip(means, means[1:])), means
    cap = audit.epsilon_cap(64)
    far = audit.epsilon_per_example(a, b + 100)
    np.testing.assert_allclose(far, cap)
    assert np.all(np.isfinite(far))
    # shifting or rescaling both populations together changes nothing (only ranks matter)
    np.testing.assert_array_equal(audit.epsilon_per_example(2 * a + 3, 2 * (b + 1) + 3),
                                  audit.epsilon_per_example(a, b + 1))


def test_caps_and_resolution():
    assert audit.epsilon_cap(32, confidence=None) == pytest.approx(math.log(32 * (1 - 1e-5)))
    assert audit.epsilon_cap(32) == pytest.approx(2.3214, abs=1e-3)
    assert audit.epsilon_cap(32) < audit.epsilon_cap(256) < audit.epsilon_cap(256, confidence=None)
    a = np.zeros((8, 3))
    b = np.ones((8, 3))
    np.testing.assert_allclose(audit.epsilon_per_example(a, b, confidence=None), math.log(8 * (1 - 1e-5)))


def test_accepts_tensors_and_returns_float64():
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    eps = audit.epsilon_per_example(a, b)
    assert isinstance(eps, np.ndarray) and eps.dtype == np.float64 and eps.shape == (5,)


@pytest.mark.parametrize("a, b, match", [
    (np.zeros(5), np.zeros(5), "2-D"),
    (np.zeros((3, 4)), np.zeros((3, 5)), "same shape"),
    (np.zeros((1, 4)), np.zeros((1, 4)), "n_models >= 2"),
    (np.zeros((3, 0)), np.zeros((3, 0)), "no examples"),
    (np.full((3, 2), np.nan), np.zeros((3, 2)), "NaN"),
    (np.full((3, 2), np.inf), np.zeros((3, 2)), "infinite"),
    (np.array([["a", "b"], ["c", "d"]]), np.zeros((2, 2)), "numeric"),
])
def test_bad_inputs_raise(a, b, match):
    with pytest.raises(ValueError, match=match):
        audit.epsilon_per_example(a, b)


@pytest.mark.parametrize("kw", [dict(delta=0.0), dict(delta=1.0), dict(delta=-1e-5), dict(confidence=0.3),
                                dict(confidence=1.0)])
def test_bad_delta_or_confidence_raise(kw):
    with pytest.raises(ValueError):
        audit.epsilon_per_example(np.zeros((3, 2)), np.ones((3, 2)), **kw)


# ------------------------------------------------------------------ forgetting quality
def test_forgetting_quality_buckets():
    assert audit.forgetting_quality(np.zeros(10), 32) == 1.0
    # 0.49 -> bin 1 (credit 1), 0.5 -> bin 2 (1/2), 1.2 -> bin 3 (1/4)
    assert audit.forgetting_quality(np.array([0.49, 0.5, 1.2]), 32) == pytest.approx((1 + 0.5 + 0.25) / 3)
    # the last bin is set by the resolution log(n_models): 512 models -> 13 bins as in the competition
    assert audit.forgetting_quality(np.array([100.0]), 512) == pytest.approx(2 / 2 ** 13)
    assert audit.forgetting_quality(np.array([np.inf]), 32) == pytest.approx(2 / 2 ** 7)
    eps = np.array([0.1, 0.7, 1.9])
    assert audit.forgetting_quality(eps + 0.5, 32) < audit.forgetting_quality(eps, 32)


@pytest.mark.parametrize("eps, n, match", [
    (np.zeros((2, 2)), 32, "1-D"), (np.array([]), 32, "1-D"), (np.array([-0.1]), 32, ">= 0"),
    (np.array([np.nan]), 32, "NaN"), (np.zeros(3), 1, "n_models"), (np.zeros(3), 2.5, "n_models"),
])
def test_forgetting_quality_bad_inputs(eps, n, match):
    with pytest.raises(ValueError, match=match):
        audit.forgetting_quality(eps, n)


def test_final_score():
    assert audit.final_score(0.5, 90, 100, 80, 100) == pytest.approx(0.5 * 0.9 * 0.8)
    assert audit.final_score(1.0, 0.95, 0.95, 0.9, 0.9) == pytest.approx(1.0)
    for bad in [(0.0, 1, 1, 1, 1), (1.5, 1, 1, 1, 1), (0.5, 1, 0, 1, 1), (0.5, np.nan, 1, 1, 1)]:
        with pytest.raises(ValueError):
            audit.final_score(*bad)


# ------------------------------------------------------------------ logit-scaled confidence
def test_logit_scaled_confidence_matches_definition_and_stays_finite():
    torch.manual_seed(0)
    z = torch.randn(3, 6, 10)
    y = torch.randint(0, 10, (6,))
    got = audit.logit_scaled_confidence(z, y)
    p = torch.softmax(z.double(), -1)
    py = p.gather(-1, y.expand(3, 6).unsqueeze(-1)).squeeze(-1)
    want = py.log() - (p.sum(-1) - py).log()
    assert got.shape == (3, 6)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # a very confident logit: p_y rounds to 1, yet the score is exact (= margin for 2 classes)
    big = torch.tensor([[60.0, 0.0]])
    assert audit.logit_scaled_confidence(big, torch.tensor([0])).item() == pytest.approx(60.0)


@pytest.mark.parametrize("logits, y", [(torch.zeros(5), torch.zeros(5, dtype=torch.long)),
                                       (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)),
                                       (torch.zeros(4, 3), torch.full((4,), 3)),
                                       (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))])
def test_logit_scaled_confidence_bad_inputs(logits, y):
    with pytest.raises(ValueError):
        audit.logit_scaled_confidence(logits, y)


def test_too_few_models_for_the_bound_warn_and_read_zero():
    a, b = np.zeros((4, 3)), np.ones((4, 3))
    assert audit.epsilon_cap(4) == 0.0 and audit.epsilon_cap(5) > 0
    with pytest.warns(UserWarning, match="always 0"):
        assert np.all(audit.epsilon_per_example(a, b) == 0)
    # the plain estimate still reports the separation, up to its cap log(4 (1 - δ))
    np.testing.assert_allclose(audit.epsilon_per_example(a, b, confidence=None), math.log(4 * (1 - 1e-5)))


def test_audit_on_trained_models_retrain_vs_retrain_and_do_nothing(digits):
    """The headline of lecture 01 on real models: a second retrained population is indistinguishable
    from the first (F about 1), the original models ("do nothing") clearly are not."""
    from course_lib import config, data, models, stacked

    n = 24
    forget = data.forget_random(digits.y_train, 0.1, seed=0)
    keep = data.retain_indices(len(digits.y_train), forget)
    make = lambda: models.MLP(64, 10, hidden=(64,))
    hp = dict(epochs=12, lr=0.05, batch_size=64)
    seeds = lambda k: [config.derive_seed(k, i) for i in range(n)]
    X_f, y_f = digits.X_train[forget], digits.y_train[forget]
    phi = {}
    for name, k, rows in (("original", 1, torch.arange(len(digits.y_train))), ("A", 2, keep), ("B", 3, keep)):
        pop = stacked.StackedModels(make, seeds(k)).fit(digits.X_train[rows], digits.y_train[rows], **hp)
        phi[name] = audit.logit_scaled_confidence(pop.predict_logits(X_f), y_f).numpy()
    eps_b = audit.epsilon_per_example(phi["B"], phi["A"])
    eps_o = audit.epsilon_per_example(phi["original"], phi["A"])
    f_b, f_o = audit.forgetting_quality(eps_b, n), audit.forgetting_quality(eps_o, n)
    assert f_b >= 0.9, f"retrain vs retrain should be indistinguishable, F = {f_b:.3f}"
    assert f_o < f_b - 0.2 and eps_o.mean() > eps_b.mean() + 0.3, (f_o, f_b, eps_o.mean(), eps_b.mean())
