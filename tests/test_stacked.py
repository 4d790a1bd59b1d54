"""Stacked training: each model of the stack equals the same model trained alone (same seed),
NegGrad+ and DP-SGD steps behave as specified, and bad arguments are refused."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from course_lib import config, dp, models, stacked, train
from course_lib.unlearn.baselines import neggrad_plus_population



def _data(n=96, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, :classes].argmax(1)).long()
    return X, y


def make():
    return models.MLP(12, 3, hidden=(16,))


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_init_is_seeded_and_independent_of_the_stack():
    s1 = stacked.StackedModels(make, [3, 4, 5])
    s2 = stacked.StackedModels(make, [4])
    ref = models.seeded(make, 4)
    for p, q, r in zip(s1.model(1).parameters(), s2.model(0).parameters(), ref.parameters()):
        assert torch.equal(p, r) and torch.equal(q, r)


def test_each_model_matches_a_single_training_with_its_seed():
    X, y = _data()
    hp = dict(epochs=3, lr=0.05, batch_size=16, momentum=0.9, weight_decay=5e-4)
    stack = stacked.StackedModels(make, [7, 8, 9]).fit(X, y, **hp)
    for i, s in enumerate([7, 8, 9]):
        alone = models.seeded(make, s)
        train.fit(alone, X, y, seed=s, **hp)
        assert _max_diff(stack.model(i), alone) < 1e-5
        torch.testing.assert_close(stack.predict_logits(X)[i], train.predict_logits(alone, X), atol=1e-5, rtol=0)
    assert stack.log.steps == 3 * 6 and len(stack.log.losses) == 3


def test_models_differ_and_shapes():
    X, y = _data()
    stack = stacked.StackedModels(make, range(4)).fit(X, y, epochs=2, batch_size=32)
    logits = stack.predict_logits(X)
    assert logits.shape == (4, 96, 3) and logits.dtype == torch.float32
    assert not torch.equal(logits[0], logits[1])
    acc = stack.accuracy(X, y)
    assert acc.shape == (4,) and np.all((0 <= acc) & (acc <= 100))


def test_from_module_and_copy_start_from_given_weights():
    X, y = _data()
    base = models.seeded(make, 0)
    stack = stacked.StackedModels.from_module(base, [1, 2])
    for i in range(2):
        assert _max_diff(stack.model(i), base) == 0
    stack.fit(X, y, epochs=1, batch_size=16, lr=0.05)
    assert _max_diff(stack.model(0), stack.model(1)) > 0          # batch order differs
    twin = stack.copy(seeds=[5, 6])
    assert twin.seeds == [5, 6] and _max_diff(twin.model(1), stack.model(1)) == 0
    twin.fit(X, y, epochs=1, batch_size=16)
    assert _max_diff(twin.model(1), stack.model(1)) > 0           # the copy is independent
    sub = stack.subset([1])
    assert len(sub) == 1 and _max_diff(sub.model(0), stack.model(1)) == 0


def test_neggrad_plus_step_matches_the_formula():
    X, y = _data()
    Xf, yf = X[:10], y[:10]
    alpha, lr = 0.7, 0.1
    stack = stacked.StackedModels(make, [11])
    m = stack.model(0)
    neggrad_plus_population(stack, (X[10:], y[10:]), (Xf, yf), alpha=alpha, epochs=1, batch_size=86, lr=lr,
                            momentum=0.0, weight_decay=0.0, schedule="constant")
    # one step on the whole retain set and a forget batch of the whole (shuffled) forget set
    loss = alpha * F.cross_entropy(m(X[10:]), y[10:]) - (1 - alpha) * F.cross_entropy(m(Xf), yf)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    with torch.no_grad():
        for p, g in zip(m.parameters(), grads):
            p -= lr * g
    assert _max_diff(stack.model(0), m) < 1e-6
    assert stack.log.losses[0] == pytest.approx(loss.item(), abs=1e-5)


def test_gradient_ascent_lowers_forget_confidence():
    X, y = _data()
    stack = stacked.StackedModels(make, range(3)).fit(X, y, epochs=5, batch_size=16)
    before = stack.predict_logits(X[:10]).log_softmax(-1).gather(-1, y[:10].expand(3, 10)[..., None]).mean()
    ng = neggrad_plus_population(stack.copy(), (X[10:], y[10:]), (X[:10], y[:10]), alpha=0.5, epochs=3,
                                 batch_size=16, lr=0.02)
    after = ng.predict_logits(X[:10]).log_softmax(-1).gather(-1, y[:10].expand(3, 10)[..., None]).mean()
    assert after < before


def test_dp_fast_path_equals_generic_path_and_records_privacy(monkeypatch):
    X, y = _data()
    a = stacked.StackedModels(make, [1, 2])
    b = a.copy()
    dp.fit_stacked(a, X, y, noise_multiplier=1.0, clip_norm=0.5, epochs=2, batch_size=16, lr=0.1)
    monkeypatch.setattr(dp, "_linear_layers", lambda base: None)      # force vmap(vmap(grad))
    dp.fit_stacked(b, X, y, noise_multiplier=1.0, clip_norm=0.5, epochs=2, batch_size=16, lr=0.1)
    for k in a.params:
        torch.testing.assert_close(a.params[k], b.params[k], atol=1e-5, rtol=0)
    assert a.privacy.steps == 12 and a.privacy.sample_rate == pytest.approx(1 / 6)
    eps = a.privacy.epsilon(1e-5)
    assert 0 < eps < float("inf")


def test_dp_without_noise_and_huge_clip_is_plain_sgd_on_poisson_batches():
    # with sigma = 0 and no clipping, the update is sum of per-example grads / (q n): check one step
    X, y = _data(n=40)
    stack = stacked.StackedModels(make, [3])
    m = stack.model(0)
    dp.fit_stacked(stack, X, y, noise_multiplier=0.0, clip_norm=1e6, epochs=1, batch_size=40, lr=0.1, momentum=0.0)
    # batch_size = n -> q = 1: every example is drawn, the update is the mean gradient
    loss = F.cross_entropy(m(X), y)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    with torch.no_grad():
        for p, g in zip(m.parameters(), grads):
            p -= 0.1 * g
    assert _max_diff(stack.model(0), m) < 1e-6


def test_bad_arguments():
    X, y = _data()
    with pytest.raises(ValueError, match="distinct"):
        stacked.StackedModels(make, [1, 1])
    with pytest.raises(ValueError, match="at least one"):
        stacked.StackedModels(make, [])
    with pytest.raises(ValueError, match="integers"):
        stacked.StackedModels(make, [1.5])
    with pytest.raises(ValueError, match="buffers"):
        stacked.StackedModels(lambda: models.ResNet18(10), [0])
    s = stacked.StackedModels(make, [0, 1])
    with pytest.raises(ValueError, match="alpha"):
        neggrad_plus_population(s, (X, y), (X, y), alpha=1.5)
    with pytest.raises(ValueError):
        s.fit(X, y.float())
    with pytest.raises(ValueError):
        s.fit(X, y, epochs=-1)
    with pytest.raises(ValueError, match="schedule"):
        s.fit(X, y, schedule="step")
    with pytest.raises(ValueError):
        dp.fit_stacked(s, X, y, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="2 seeds"):
        s.copy(seeds=[1, 2, 3])
    with pytest.raises(ValueError):
        s.model(5)
    with pytest.raises(ValueError):
        s.predict_logits(torch.zeros(0, 12))


@pytest.mark.parametrize("path", ["ghost-norm", "vmap"])
def test_dp_clips_each_example_by_hand(path, monkeypatch):
    """One DP-SGD step with q = 1, no noise and a small clip: the update is the mean of the
    per-example gradients, each scaled to norm at most clip_norm (computed here one by one)."""
    if path == "vmap":
        monkeypatch.setattr(dp, "_linear_layers", lambda base: None)
    X, y = _data(n=24)
    stack = stacked.StackedModels(make, [7])
    m = stack.model(0)
    clip, lr = 0.05, 0.5
    dp.fit_stacked(stack, X, y, noise_multiplier=0.0, clip_norm=clip, epochs=1, batch_size=24, lr=lr, momentum=0.0)
    total = [torch.zeros_like(p) for p in m.parameters()]
    for i in range(24):
        g = torch.autograd.grad(F.cross_entropy(m(X[i:i + 1]), y[i:i + 1]), list(m.parameters()))
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g))
        assert norm > clip, "the test needs gradients larger than the clip"
        for t, v in zip(total, g):
            t += v * min(1.0, clip / (norm.item() + 1e-6))
    with torch.no_grad():
        for p, t in zip(m.parameters(), total):
            p -= lr * t / 24
    assert _max_diff(stack.model(0), m) < 1e-6


def test_dp_noise_has_the_calibrated_scale():
    """The Gaussian noise added per coordinate is noise_multiplier * clip_norm / (q n) before the
    learning rate: one step of two runs that differ only in sigma differs by exactly that noise,
    which has mean 0 and variance 1 once rescaled."""
    X, y = _data(n=40)
    sigma, clip, lr = 2.0, 0.5, 0.1
    seeds = list(range(8))
    runs = {s: dp.fit_stacked(stacked.StackedModels(make, seeds), X, y, noise_multiplier=s, clip_norm=clip, epochs=1,
                                                          batch_size=40, lr=lr, momentum=0.0)
            for s in (sigma, 0.0)}                      # batch_size = n: q = 1, one step, q n = 40
    z = torch.cat([((runs[sigma].params[k] - runs[0.0].params[k]) * 40 / (-lr * sigma * clip)).flatten()
                   for k in runs[sigma].params])
    assert z.numel() > 1500
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1.0) < 0.07
