"""Exact unlearning for ridge regression: the Woodbury downdate equals refitting on the retained
rows to float64 precision, on random problems, one row or many, in any order."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge as SkRidge

from course_lib.exact.ridge import Ridge, woodbury_downdate


def _problem(rng, n=80, d=6, t=None):
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d)
    w = rng.normal(size=(d,) if t is None else (d, t))
    Y = X @ w + 0.3 * rng.normal(size=(n,) if t is None else (n, t)) + 1.5
    return X, Y


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_removal_equals_refit_on_random_problems(seed, fit_intercept):
    rng = np.random.default_rng(seed)
    X, Y = _problem(rng, t=None if seed % 2 else 3)
    alpha = float(rng.uniform(0.01, 5))
    forget = rng.choice(len(X), size=int(rng.integers(1, 20)), replace=False)
    keep = np.setdiff1d(np.arange(len(X)), forget)
    m = Ridge(alpha, fit_intercept).fit(X, Y).remove(forget)
    r = Ridge(alpha, fit_intercept).fit(X[keep], Y[keep])
    np.testing.assert_allclose(m.coef_, r.coef_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(m.intercept_, r.intercept_, rtol=1e-9, atol=1e-11)
    X_new = rng.normal(size=(10, X.shape[1]))
    np.testing.assert_allclose(m.predict(X_new), r.predict(X_new), rtol=1e-9, atol=1e-11)
    assert m.n_active_ == len(keep) and m.removed_.sum() == len(forget)


def test_one_row_at_a_time_equals_all_at_once():
    rng = np.random.default_rng(7)
    X, Y = _problem(rng)
    forget = [3, 17, 42, 5]
    seq = Ridge(1.0).fit(X, Y)
    for i in forget:
        seq.remove([i])                          # Sherman-Morrison, k = 1
    batch = Ridge(1.0).fit(X, Y).remove(forget)  # Woodbury, k = 4
    np.testing.assert_allclose(seq.coef_, batch.coef_, rtol=1e-10, atol=1e-12)


def test_matches_scikit_learn():
    rng = np.random.default_rng(3)
    X, Y = _problem(rng)
    ours = Ridge(2.0).fit(X, Y)
    sk = SkRidge(alpha=2.0).fit(X, Y)
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-8)
    assert ours.intercept_ == pytest.approx(sk.intercept_, rel=1e-8)
    assert ours.score(X, Y) == pytest.approx(sk.score(X, Y), rel=1e-10)


def test_woodbury_downdate_on_a_hand_computed_case():
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    u = np.array([[1.0, 1.0]])
    np.testing.assert_allclose(woodbury_downdate(np.linalg.inv(A), u), np.linalg.inv(A - u.T @ u), atol=1e-14)
    # A - u^T u = [[3, 0], [0, 2]] -> inverse diag(1/3, 1/2)
    np.testing.assert_allclose(woodbury_downdate(np.linalg.inv(A), u), np.diag([1 / 3, 1 / 2]), atol=1e-14)


def test_removal_does_not_touch_retained_rows():
    rng = np.random.default_rng(4)
    X, Y = _problem(rng)
    m = Ridge(1.0).fit(X, Y)
    m.X_[10:] = np.nan                            # retained rows are never read by remove
    m.remove([0, 1, 2])
    assert np.all(np.isfinite(m.coef_))


def test_bad_removals_and_inputs():
    rng = np.random.default_rng(5)
    X, Y = _problem(rng, n=10)
    m = Ridge(1.0).fit(X, Y)
    with pytest.raises(ValueError, match="empty"):
        m.remove([])
    with pytest.raises(ValueError, match="outside"):
        m.remove([10])
    with pytest.raises(ValueError, match="duplicate"):
        m.remove([1, 1])
    m.remove([2])
    with pytest.raises(ValueError, match="already removed"):
        m.remove([2, 3])
    with pytest.raises(ValueError, match="no training data"):
        m.remove([i for i in range(10) if i != 2])
    with pytest.raises(ValueError, match="not fitted"):
        Ridge().remove([0])
    with pytest.raises(ValueError, match="alpha"):
        Ridge(alpha=-1).fit(X, Y)
    with pytest.raises(ValueError, match="rows"):
        Ridge().fit(X, Y[:5])
    with pytest.raises(ValueError, match="2-D"):
        Ridge().fit(X[0], Y)
    with pytest.raises(ValueError, match="NaN"):
        Ridge().fit(np.full_like(X, np.nan), Y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :3])
    # without regularisation, removing a row whose leverage is 1 leaves a singular system
    Xs = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="singular"):
        Ridge(alpha=0.0, fit_intercept=False).fit(Xs, np.ones(3)).remove([0])
