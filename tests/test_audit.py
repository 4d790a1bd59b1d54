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
    assert audit.final_score(0.0, 1, 1, 1, 1) == 0.0          # reachable under the competition's rule
    for bad in [(-0.1, 1, 1, 1, 1), (1.5, 1, 1, 1, 1), (0.5, 1, 0, 1, 1), (0.5, np.nan, 1, 1, 1)]:
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


# ------------------------------------------------------------------ the competition's estimator
D = 1e-5


def _f32_eps(fpr: float, fnr: float):
    """One attack's ε as the competition computes it (float32 rates and logs); None when it
    discards the attack (a rate is 0, or neither formula is defined)."""
    if fpr == 0 or fnr == 0:
        return math.inf if fpr == fnr == 0 else None
    keep, x, y = np.float32(1 - D), np.float32(fpr), np.float32(fnr)
    vals = [float(np.log(keep - p) - np.log(q)) for p, q in ((x, y), (y, x)) if keep - p > 0]
    return max(vals + [0.0]) if vals else None


def _competition_dense(u: np.ndarray, r: np.ndarray) -> float:
    """The competition's rule restated densely for one example: every attack of its grid as a
    boolean [models, attacks] matrix, each attack's ε in a Python loop (slow, independent)."""
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    dp, dn = np.ptp(pos), np.ptp(neg)
    if max(dp, dn) > 0 and min(dp, dn) / max(dp, dn) < 0.01:
        return 50.0
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    t = torch.linspace(float(lo), float(hi), int(math.ceil((hi - lo) * 100))).double().numpy()
    hit_p, hit_n = [pos[:, None] >= t], [neg[:, None] >= t]
    pk, wd = (neg, pos) if dp >= dn else (pos, neg)
    w = min(dp, dn)
    r0, r1 = pk.min() + w - 2.0, pk.max() + 2.0
    right = np.linspace(r0, r1, int(math.ceil((r1 - r0) * 100)))
    L = np.concatenate([np.linspace(x - w - 2.0, x - w + 2.0, 400) for x in right])
    R = np.repeat(right, 400)
    hit_p.append((L <= pk[:, None]) & (pk[:, None] <= R))
    hit_n.append((L <= wd[:, None]) & (wd[:, None] <= R))
    tp = np.concatenate([h.sum(0) for h in hit_p])
    fp = np.concatenate([h.sum(0) for h in hit_n])
    n = len(u)
    eps = [_f32_eps(b / n, (n - a) / n) for a, b in set(zip(tp.tolist(), fp.tolist()))]
    eps = [e for e in eps if e is not None]
    return min(max(eps), 50.0) if eps else 0.0


def _comp(a, b, **kw):
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[:, None]
    return audit.epsilon_per_example(a, b, D, estimator="competition", **kw)[0]


def _plain(a, b):
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[:, None]
    return audit.epsilon_per_example(a, b, D, confidence=None)[0]


def test_competition_interval_attack_beats_every_single_threshold():
    """(i) "score in [l, r] => narrower population" finds what no one-threshold attack can."""
    narrow, wide = [-1, 0, 0.5, 1], [-5, 0.25, 4, 5]
    # [-1, 0.5] holds 3 of 4 narrow and 1 of 4 wide: FPR = FNR = 1/4, ε = log((3/4 - δ) / (1/4))
    assert _comp(narrow, wide) == _f32_eps(0.25, 0.25) == pytest.approx(math.log(3 - 4 * D), abs=1e-6)
    # the course's best single threshold, "score > 1 => wide" (FPR 0, FNR 1/2), only reaches log 2
    assert _plain(narrow, wide) == pytest.approx(math.log(2 * (1 - D)), abs=1e-12)


def test_competition_attacks_one_direction_only():
    """(ii) "score >= t => larger median" only: the reverse attack the course also runs is ignored."""
    a, b = [-16, -11, -1, 4.5, 6, 19], [-8, -2, 1, 2, 15, 32]      # medians 1.75 > 1.5: a is positive
    # "score >= 10 => b" (the reverse): FPR = 1/6 (a's 19), FNR = 4/6: ε = log((2/6 - δ) / (1/6))
    assert _plain(a, b) == pytest.approx(math.log(2 - 6 * D), abs=1e-12)
    # the same threshold forward ("=> a") has FPR = 2/6, FNR = 5/6: nothing; its best is FPR 1/2, FNR 1/3
    assert _comp(a, b) == _f32_eps(1 / 2, 1 / 3) == pytest.approx(math.log(1.5 - 3 * D), abs=1e-6)
    assert _comp(b, a) == _comp(a, b)          # which one is "unlearned" matters only for equal medians


def test_competition_discards_attacks_with_a_zero_rate():
    """(iii) an attack with FPR = 0 is dropped, where the course clamps it to 1/N."""
    a, b = [0, 1, 2, 3], [2.5, 4, 5, 6]
    # t in (3, 4]: no a above (FPR 0), one b below (FNR 1/4): course log((1 - δ) / (1/4)), competition drops it
    assert _plain(a, b) == pytest.approx(math.log(4 * (1 - D)), abs=1e-12)
    # competition's best: t in (2.5, 3], FPR = FNR = 1/4
    assert _comp(a, b) == _f32_eps(0.25, 0.25)


@pytest.mark.parametrize("a, b", [([0, 1, 2, 3], [10, 11, 12, 13]),         # perfectly separated
                                  ([5, 5, 5, 5], [0, 1, 2, 3]),             # collapsed unlearned population
                                  ([0, 0.001, 0.002, 0.003], [-1, 0, 1, 2]),  # range 0.1% of the other's
                                  ([-1, 1, 1, -1], [-9, 9, 4, -4]),          # separated by an interval only
                                  ([5, 5, 5, 5], [6, 6, 6, 6])])
def test_competition_flags_separated_or_collapsed_with_fifty_and_zero_credit(a, b):
    """(iv) ε = 50 and zero credit, where the course's plain estimate stays finite and earns credit."""
    assert _comp(a, b) == audit.COMPETITION_EPSILON == 50
    assert audit.forgetting_quality(np.array([50.0]), 4, estimator="competition") == 0.0
    eps = audit.epsilon_per_example(np.tile(np.asarray(a, float)[:, None], 3), np.tile(np.asarray(b, float)[:, None], 3),
                                    estimator="competition")
    assert audit.forgetting_quality(eps, 4, estimator="competition") == 0.0
    plain = _plain(a, b)
    assert plain <= math.log(4) and audit.forgetting_quality(np.array([plain]), 4) > 0


def test_competition_edge_cases_and_range_ratio_boundary():
    """Range ratio 3% is not flagged; identical constant populations (the competition's code stops
    there with an assertion error) read 0."""
    assert _comp([0, 0.03, 0.06, 0.09], [-1, 0, 1, 2]) == _f32_eps(0.25, 0.25)
    assert _comp([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0


def test_competition_matches_dense_restatement_on_random_problems():
    """The vectorised estimator equals the attack-by-attack restatement, bit for bit."""
    rng = np.random.default_rng(11)
    for n in (4, 7, 16):
        for scale in (0.05, 1.0, 4.0):
            a = scale * rng.normal(size=(n, 3))
            b = scale * rng.normal(loc=rng.uniform(-1, 1), size=(n, 3)).round(1)
            got = audit.epsilon_per_example(a, b, estimator="competition")
            want = [_competition_dense(a[:, j], b[:, j]) for j in range(3)]
            assert got.tolist() == want, (n, scale)


def test_identical_populations_competition_vs_course_plain_n32():
    """N = 32, identical unit-variance populations: F about 0.18 (competition) vs 0.22 (course plain)."""
    rng = np.random.default_rng(2024)
    a, b = rng.normal(size=(32, 300)), rng.normal(size=(32, 300))
    f_comp = audit.forgetting_quality(audit.epsilon_per_example(a, b, estimator="competition"), 32,
                                      estimator="competition")
    f_plain = audit.forgetting_quality(audit.epsilon_per_example(a, b, confidence=None), 32)
    f_bound = audit.forgetting_quality(audit.epsilon_per_example(a, b), 32)
    assert 0.15 < f_comp < 0.21 and 0.19 < f_plain < 0.25 and f_comp < f_plain, (f_comp, f_plain)
    assert f_bound > 0.95


def test_competition_buckets_give_zero_credit_beyond_ceil_log_n_minus_1():
    """Buckets of 0.5 up to ceil(log(N - 1)) (4 for N = 32, 7 for N = 512), zero credit beyond."""
    fq = lambda e, n: audit.forgetting_quality(np.array(e, float), n, estimator="competition")
    assert fq([0.0, 0.49, 0.5, 1.2], 32) == pytest.approx((1 + 1 + 0.5 + 0.25) / 4)
    assert fq([3.99], 32) == 2.0 ** -7 and fq([4.0], 32) == 0.0 and fq([50.0], 32) == 0.0
    assert fq([6.99], 512) == 2.0 ** -13 and fq([7.0], 512) == 0.0
    assert fq([0.0], 2) == 0.0                                     # log(1) = 0: no bucket at all
    # the course's rule on the same values: capped last bucket, never zero
    assert audit.forgetting_quality(np.array([4.0]), 32) == 2 / 2 ** 7


def test_competition_bad_inputs():
    """Unknown estimators, a confidence asked of the competition, 50 under the course's buckets."""
    x, y = np.zeros((4, 2)), np.ones((4, 2))
    with pytest.raises(ValueError, match="'course', 'competition'"):
        audit.epsilon_per_example(x, y, estimator="kaggle")
    with pytest.raises(ValueError, match="no confidence"):
        audit.epsilon_per_example(x, y, estimator="competition", confidence=0.99)
    np.testing.assert_array_equal(audit.epsilon_per_example(x, y, estimator="competition", confidence=None),
                                  audit.epsilon_per_example(x, y, estimator="competition"))
    with pytest.raises(ValueError, match="'course', 'competition'"):
        audit.forgetting_quality(np.zeros(3), 32, estimator=None)
    with pytest.raises(ValueError, match="width 0.5"):
        audit.forgetting_quality(np.zeros(3), 32, bin_width=1.0, estimator="competition")
    with pytest.raises(ValueError, match="estimator='competition'"):
        audit.forgetting_quality(np.array([0.1, 50.0]), 32)
    with pytest.raises(ValueError, match="delta"):
        audit.epsilon_per_example(x, y, 0.0, estimator="competition")
