"""Fisher forgetting and influence unlearning (course_lib/unlearn/second_order.py), on tiny
models where every quantity can be computed by hand."""
import numpy as np
import pytest
import torch
from torch import nn

from course_lib import params, unlearn
from course_lib.unlearn import second_order as so


def _logreg(d=4, C=3, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, C)


def _toy(N=40, d=4, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    return X, y


def _probs(model, X):
    with torch.no_grad():
        return torch.softmax(model(X), 1).double().numpy()


def _aug(X):
    """Inputs with a constant 1 appended (the bias as a weight column)."""
    return np.hstack([X.double().numpy(), np.ones((X.shape[0], 1))])


def _flat_wb(W, b):
    """Weight [C, d] and bias [C] in the order (class, feature; bias last) of the hand formulas."""
    return np.hstack([np.asarray(W, float), np.asarray(b, float)[:, None]]).ravel()


def _mean_grad(model, X, y):
    """Hand gradient of the mean cross-entropy of a linear softmax model: mean (p - e_y) x~^T."""
    P = _probs(model, X)
    P[np.arange(len(y)), y.numpy()] -= 1
    return (P[:, :, None] * _aug(X)[:, None, :]).mean(0).ravel()


def _hand_hessian(model, X):
    """Hand Hessian of the mean cross-entropy: mean_i (diag(p) - p p^T) kron x~ x~^T."""
    P, A = _probs(model, X), _aug(X)
    C, D = P.shape[1], A.shape[1]
    H = np.zeros((C * D, C * D))
    for p, a in zip(P, A):
        H += np.kron(np.diag(p) - np.outer(p, p), np.outer(a, a))
    return H / len(P)


def _update(before, after):
    return _flat_wb((after.weight - before.weight).detach(), (after.bias - before.bias).detach())


def test_fisher_diagonal_matches_the_softmax_closed_form():
    """For a linear softmax model the per-example Fisher diagonal is mean_i p_ic (1 - p_ic) x_ij^2
    (weights) and mean_i p_ic (1 - p_ic) (biases)."""
    m, (X, _) = _logreg(), _toy()
    F = params.true_fisher_diagonal(m, X, batch_size=1)
    P = _probs(m, X)
    q = P * (1 - P)
    np.testing.assert_allclose(F["weight"].double().numpy(), (q.T @ X.double().numpy() ** 2) / len(X), rtol=1e-4)
    np.testing.assert_allclose(F["bias"].double().numpy(), q.mean(0), rtol=1e-4)


def test_fisher_diagonal_of_batch_means_matches_the_public_code_estimate():
    """batch_size=b squares the gradient of each batch's mean loss, weighted by the batch's mean p_k."""
    m, (X, _) = _logreg(), _toy(N=12)
    F = params.true_fisher_diagonal(m, X, batch_size=4)
    P, A = _probs(m, X), _aug(X)
    est = np.zeros((3, 5))
    for s in range(0, 12, 4):
        Pb, Ab = P[s:s + 4], A[s:s + 4]
        for k in range(3):
            e = np.zeros(3)
            e[k] = 1
            gk = ((Pb - e)[:, :, None] * Ab[:, None, :]).mean(0)  # gradient of mean CE with label k
            est += Pb[:, k].mean() * gk ** 2
    est /= 3
    np.testing.assert_allclose(_flat_wb(F["weight"].double(), F["bias"].double()), est.ravel(), rtol=1e-4)


def test_fisher_variance_by_hand():
    """Variance = alpha * min(1/(F + 1e-8), cap), row-averaged over dim 1, x10 for the head and 1-D tensors."""
    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
    fisher = {"0.weight": torch.tensor([[1.0, 0.5], [0.25, 1e-9], [2.0, 2.0]]), "0.bias": torch.tensor([1.0, 4.0, 1e-9]),
              "2.weight": torch.full((4, 3), 1e-9), "2.bias": torch.full((4,), 0.5)}
    var = so.fisher_variance(m, fisher, 1e-3, n_classes=4)
    np.testing.assert_allclose(var["0.weight"].numpy(), 1e-3 * np.array([[1.5] * 2, [502.] * 2, [0.5] * 2]), rtol=1e-5)
    np.testing.assert_allclose(var["0.bias"].numpy(), 1e-2 * np.array([1.0, 0.25, 1e3]), rtol=1e-5)
    np.testing.assert_allclose(var["2.weight"].numpy(), np.full((4, 3), 1e-3 * 1e2 * 10), rtol=1e-5)
    np.testing.assert_allclose(var["2.bias"].numpy(), np.full(4, 1e-3 * 2 * 10), rtol=1e-5)
    flat = so.fisher_variance(m, fisher, 1e-3, n_classes=4, row_mean=False)
    assert flat["0.weight"][0, 1] == pytest.approx(2e-3)


def test_fisher_forgetting_noise_scale_follows_the_fisher_diagonal():
    """FF adds noise whose z-scores against sqrt(var from the retain set's Fisher) are standard normal,
    so low-Fisher entries move more."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3))
    X, y = _toy(N=60, d=6)
    alpha = 1e-4
    res = unlearn.unlearn("ff", m, (X[:50], y[:50]), (X[50:], y[50:]), alpha=alpha, fisher_batch=1, row_mean=False)
    fisher = params.true_fisher_diagonal(m, X[:50], batch_size=1)
    var = so.fisher_variance(m, fisher, alpha, n_classes=3, row_mean=False)
    z = torch.cat([((pu - p) / var[n].sqrt()).reshape(-1).detach()
                   for (n, p), pu in zip(m.named_parameters(), res.model.parameters())])
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.05
    moved = (res.model[0].weight - m[0].weight).abs().detach().reshape(-1)
    v = var["0.weight"].reshape(-1)
    for part in (v < v.median(), v >= v.median()):  # E|N(0, var)| = sqrt(2 var / pi) in each half
        assert float(moved[part].mean() / (2 * v[part] / np.pi).sqrt().mean()) == pytest.approx(1, abs=0.2)
    assert moved[v >= v.median()].mean() > 1.3 * moved[v < v.median()].mean()


def test_influence_step_equals_the_damped_newton_step():
    """curvature='hessian': IU's update is (H + damping I)^{-1} (N_f/N)(g_f - g_r) with H, g computed by hand."""
    m, (X, y) = _logreg(), _toy()
    R, Fg = (X[:30], y[:30]), (X[30:], y[30:])
    res = unlearn.unlearn("iu", m, R, Fg, curvature="hessian", damping=1e-3, alpha=1.0)
    v = (10 / 40) * (_mean_grad(m, *Fg) - _mean_grad(m, *R))
    want = np.linalg.solve(_hand_hessian(m, X) + 1e-3 * np.eye(15), v)
    np.testing.assert_allclose(_update(m, res.model), want, rtol=1e-3, atol=1e-6)
    half = unlearn.unlearn("iu", m, R, Fg, curvature="hessian", damping=1e-3, alpha=0.5)
    np.testing.assert_allclose(_update(m, half.model), want / 2, rtol=1e-3, atol=1e-6)


def test_influence_woodfisher_step_by_hand():
    """curvature='woodfisher' with every example: the update is (damping I + G^T G / N)^{-1} v,
    G the hand per-example gradients (p_i - e_yi) x~_i^T."""
    m, (X, y) = _logreg(), _toy()
    R, Fg = (X[:30], y[:30]), (X[30:], y[30:])
    res = unlearn.unlearn("iu", m, R, Fg, damping=0.05, n_samples=40)
    Xall, yall = torch.cat([R[0], Fg[0]]), torch.cat([R[1], Fg[1]])
    P = _probs(m, Xall)
    P[np.arange(40), yall.numpy()] -= 1
    G = (P[:, :, None] * _aug(Xall)[:, None, :]).reshape(40, -1)
    v = (10 / 40) * (_mean_grad(m, *Fg) - _mean_grad(m, *R))
    want = np.linalg.solve(0.05 * np.eye(15) + G.T @ G / 40, v)
    np.testing.assert_allclose(_update(m, res.model), want, rtol=1e-3, atol=1e-6)


def test_woodbury_solve_equals_the_dense_inverse():
    """woodfisher_solve agrees with inverting damping I + G^T G / n densely (n < d and n > d)."""
    g = torch.Generator().manual_seed(1)
    for n, d in ((5, 12), (20, 6)):
        G, v = torch.randn(n, d, generator=g), torch.randn(d, generator=g)
        Gn = G.double().numpy()
        want = np.linalg.solve(0.1 * np.eye(d) + Gn.T @ Gn / n, v.double().numpy())
        np.testing.assert_allclose(so.woodfisher_solve(G, v, 0.1).double().numpy(), want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="damping"):
        so.woodfisher_solve(G, v, 0.0)


def test_influence_moves_a_regularised_logistic_regression_towards_retraining():
    """On an L2-regularised (convex) problem trained to optimum, IU with the exact Hessian and
    damping = the L2 coefficient lands far closer to the retrained optimum than the original is."""
    X, y = _toy(N=80, d=3)
    lam = 0.05

    def fit(Xt, yt):
        m = _logreg(3)
        opt = torch.optim.LBFGS(m.parameters(), lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(Xt), yt) + lam / 2 * sum((p ** 2).sum() for p in m.parameters())
            loss.backward()
            return loss

        opt.step(closure)
        return m

    orig, retr = fit(X, y), fit(X[:70], y[:70])
    iu = unlearn.unlearn("iu", orig, (X[:70], y[:70]), (X[70:], y[70:]), curvature="hessian", damping=lam).model
    dist = lambda a, b: float(sum(((p - q) ** 2).sum() for p, q in zip(a.parameters(), b.parameters())).detach() ** 0.5)
    assert dist(iu, retr) < 0.2 * dist(orig, retr)


@pytest.mark.parametrize("method,hp", [("ff", dict(alpha=1e-3)), ("iu", dict()), ("iu", dict(curvature="hessian"))])
def test_second_order_methods_honour_the_mask(method, hp):
    """Entries outside the mask, and parameters missing from it, stay bitwise equal; masked-in entries move."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        m[0].weight[:, 0] = -0.0  # a "pruned" column, signed zeros included
    X, y = _toy(N=30)
    mask = {"0.weight": torch.zeros(8, 4, dtype=torch.bool), "2.weight": torch.ones(3, 8, dtype=torch.bool)}
    mask["0.weight"][:, 1:] = True
    res = unlearn.unlearn(method, m, (X[:20], y[:20]), (X[20:], y[20:]), mask=mask, **hp)
    new = dict(res.model.named_parameters())
    for n, p in m.named_parameters():
        frozen = ~mask[n] if n in mask else torch.ones_like(p, dtype=torch.bool)
        assert torch.equal(new[n][frozen].view(torch.int32), p[frozen].detach().view(torch.int32)), n
        if n in mask:
            assert (new[n][mask[n]] != p[mask[n]]).float().mean() > 0.9, n


def test_second_order_methods_refuse_bad_settings():
    """Unknown curvature, non-positive damping and negative alpha are refused with the reason."""
    m, (X, y) = _logreg(), _toy()
    R, Fg = (X[:30], y[:30]), (X[30:], y[30:])
    with pytest.raises(ValueError, match="curvature"):
        unlearn.unlearn("iu", m, R, Fg, curvature="newton")
    with pytest.raises(ValueError, match="damping"):
        unlearn.unlearn("iu", m, R, Fg, damping=0)
    with pytest.raises(ValueError, match="alpha"):
        unlearn.unlearn("ff", m, R, Fg, alpha=-1.0)
    with pytest.raises(ValueError, match="curvature='woodfisher'"):
        unlearn.unlearn("iu", nn.Linear(100, 60), (torch.randn(5, 100), torch.zeros(5, dtype=torch.long)),
                        (torch.randn(2, 100), torch.ones(2, dtype=torch.long)), curvature="hessian")
    assert unlearn.defaults("ff")["alpha"] > 0 and "fisher" in unlearn.available() and "influence" in unlearn.available()


def test_fisher_forget_classes_zeroes_only_the_output_rows_of_those_classes():
    """FF with forget_classes=[2] (002's public code for class-wise forgetting): the head's row 2 (weight
    and bias) is N(0, 1e-3), every other entry is bitwise plain FF's with the same seed. A class outside
    the model is refused."""
    import torch
    from torch import nn

    from course_lib import unlearn
    from course_lib.unlearn import second_order

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(60, 1, 2, 2, generator=g), torch.arange(60) % 3
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    plain = unlearn.unlearn("fisher", net, (X, y), (X[:6], y[:6]), seed=1, alpha=1e-6).model
    zeroed = unlearn.unlearn("fisher", net, (X, y), (X[:6], y[:6]), seed=1, alpha=1e-6, forget_classes=[2]).model
    for (n, a), (_, b) in zip(plain.named_parameters(), zeroed.named_parameters()):
        if n.startswith("3."):
            keep = torch.ones(3, dtype=torch.bool)
            keep[2] = False
            assert torch.equal(a[keep], b[keep]), n
            assert b[2].abs().max() < 10 * second_order.CLASS_ROW_VAR ** 0.5, n
        else:
            assert torch.equal(a, b), n
    with pytest.raises(ValueError, match="forget_classes"):
        unlearn.unlearn("fisher", net, (X, y), (X[:6], y[:6]), forget_classes=[7])
