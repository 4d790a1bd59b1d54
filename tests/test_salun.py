"""SalUn's saliency mask (course_lib/masks/salient.py), the salun method and compare_seeds."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_lib import config, data, masks, plots, train, unlearn


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))


def _xy(N=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, generator=g), torch.randint(0, 3, (N,), generator=g)


def _brute_grad(model, X, y):
    """Mean-CE gradient by plain autograd on the whole batch (eval mode)."""
    model.eval()
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5, 0.9, 1.0])
def test_saliency_selects_exactly_the_top_gradient_entries(fraction):
    """round(fraction * n) entries, equal to the top-|g| set found by sorting every entry by hand."""
    m, (X, y) = _tiny(), _xy()
    mask = masks.saliency(m, (X, y), fraction)
    g = _brute_grad(m, X, y)
    entries = sorted(((float(g[n].reshape(-1)[i].abs()), n, i) for n in g for i in range(g[n].numel())),
                     key=lambda t: -t[0])
    k = round(fraction * len(entries))
    assert masks.count(mask) == k
    want = {(n, i) for _, n, i in entries[:k]}
    got = {(n, i) for n in mask for i in torch.nonzero(mask[n].reshape(-1)).reshape(-1).tolist()}
    assert got == want


def test_saliency_breaks_ties_by_position_and_threshold_is_the_slides_gamma():
    """Equal |g| entries are taken in parameter order; threshold keeps |g| >= gamma exactly."""
    m = _tiny()
    grads = {n: torch.ones_like(p) for n, p in m.named_parameters()}
    grads["2.bias"] = torch.full_like(grads["2.bias"], 5.0)
    mask = masks.saliency(m, _xy(), 0.25, gradients=grads)  # 31 entries -> 8: the 3 biases, then the first 5 of 0.weight
    assert mask["2.bias"].all() and mask["0.weight"].reshape(-1)[:5].all()
    assert masks.count(mask) == 8 and not mask["0.weight"].reshape(-1)[5:].any()
    th = masks.saliency(m, _xy(), threshold=2.0, gradients=grads)
    assert masks.count(th) == 3 and th["2.bias"].all()
    every = masks.saliency(m, _xy(), threshold=1.0, gradients=grads)
    assert masks.count(every) == 31


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), True, "half"])
def test_saliency_refuses_a_bad_fraction(bad):
    """A fraction outside (0, 1] (or not a number) is a ValueError naming the argument."""
    with pytest.raises(ValueError, match="fraction"):
        masks.saliency(_tiny(), _xy(), bad)


def test_saliency_refuses_ambiguous_or_unknown_settings():
    """fraction and threshold together, a negative threshold, an unknown params set are refused."""
    with pytest.raises(ValueError, match="not both"):
        masks.saliency(_tiny(), _xy(), 0.5, threshold=0.1)
    with pytest.raises(ValueError, match="threshold"):
        masks.saliency(_tiny(), _xy(), threshold=-1.0)
    with pytest.raises(ValueError, match="params"):
        masks.saliency(_tiny(), _xy(), 0.5, params="biases")


def test_saliency_skips_frozen_parameters_and_honours_weights_only_and_within():
    """requires_grad=False tensors are never salient; params='weights' leaves 1-D tensors out;
    within restricts the candidates; the density is over the eligible entries."""
    m = _tiny()
    m[0].weight.requires_grad_(False)
    mask = masks.saliency(m, _xy(), 0.5)
    assert not mask["0.weight"].any() and masks.count(mask) == round(0.5 * (4 + 12 + 3))
    w = masks.saliency(_tiny(), _xy(), 0.5, params="weights")
    assert not w["0.bias"].any() and not w["2.bias"].any() and masks.count(w) == 12
    within = {"2.weight": torch.ones(3, 4, dtype=torch.bool)}
    r = masks.saliency(_tiny(), _xy(), 0.5, within=within)
    assert masks.count(r) == 6 and set(n for n, t in r.items() if t.any()) == {"2.weight"}


def test_random_mask_has_the_same_density_at_other_positions():
    """The ablation mask has exactly the saliency mask's count, differs in position, depends on the seed."""
    m, xy = _tiny(), _xy()
    s, r = masks.saliency(m, xy, 0.3), masks.random_mask(m, 0.3, seed=1)
    assert masks.count(r) == masks.count(s) == round(0.3 * 31)
    assert any(not torch.equal(s[n], r[n]) for n in s)
    assert all(torch.equal(a, b) for a, b in zip(r.values(), masks.random_mask(m, 0.3, seed=1).values()))
    assert any(not torch.equal(a, b) for a, b in zip(r.values(), masks.random_mask(m, 0.3, seed=2).values()))


@pytest.fixture(scope="module")
def split(digits):
    f = data.forget_class(digits.y_train, 3)
    r = data.retain_indices(len(digits.y_train), f)
    return (digits.X_train[r], digits.y_train[r]), (digits.X_train[f], digits.y_train[f])


@pytest.mark.parametrize("random_mask", [False, True])
def test_salun_leaves_non_salient_weights_bitwise_unchanged(trained, split, random_mask):
    """With momentum 0.9 and weight decay, every entry outside the mask keeps theta_o's exact bits;
    most salient entries move."""
    res = unlearn.unlearn("salun", trained, *split, epochs=1, fraction=0.2, momentum=0.9, weight_decay=5e-3,
                          random_mask=random_mask)
    m_s = (masks.random_mask(trained, 0.2, seed=config.derive_seed(0, 8)) if random_mask
           else masks.saliency(trained, split[1], 0.2))
    new = dict(res.model.named_parameters())
    for n, p in trained.named_parameters():
        assert torch.equal(new[n][~m_s[n]].view(torch.int32), p[~m_s[n]].detach().view(torch.int32)), n
    moved = sum(int((new[n][m_s[n]] != p[m_s[n]]).sum()) for n, p in trained.named_parameters())
    assert moved > 0.9 * masks.count(m_s)


def test_salun_forgets_the_class_and_matches_random_label_at_full_density(trained, split):
    """Class-wise: SalUn drives the forgotten class's accuracy down and keeps the retain set; with
    fraction=1 it is Random Label exactly (same relabelling, same batches)."""
    res = unlearn.unlearn("salun", trained, *split, epochs=2, fraction=0.5)
    assert train.accuracy(trained, *split[1]) > 95
    assert train.accuracy(res.model, *split[1]) < 30 and train.accuracy(res.model, *split[0]) > 85
    full = unlearn.unlearn("salun", trained, *split, epochs=1, fraction=1.0)
    rl = unlearn.unlearn("rl", trained, *split, epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(full.model.parameters(), rl.model.parameters()))


def test_salun_refuses_random_mask_with_threshold(trained, split):
    """The ablation needs a fraction; a threshold is refused."""
    with pytest.raises(ValueError, match="random_mask"):
        unlearn.unlearn("salun", trained, *split, epochs=1, threshold=0.01, random_mask=True)


def test_compare_seeds_mean_and_std_by_hand(digits, trained, monkeypatch):
    """compare_seeds: one compare per seed, mean and sample std per metric by hand, per-seed disparity."""
    calls = []
    real = unlearn.compare

    def fake(model, d, idx, methods, *, hp, exclude_classes, seed, original):
        calls.append(seed)
        import pandas as pd
        rows = {"Retrain": dict(UA=10.0 + seed, RA=90.0), "ga": dict(UA=20.0 + 3 * seed, RA=80.0)}
        df = pd.DataFrame.from_dict(rows, orient="index")
        df["Disparity avg"] = [0.0, abs(10 + 2 * seed) / 2 + 5]
        return df, {"Retrain": seed, "ga": seed}

    monkeypatch.setattr(unlearn, "compare", fake)
    out = unlearn.compare_seeds(trained, digits, torch.arange(5), ["retrain", "ga"], seeds=[0, 1, 2])
    assert calls == [0, 1, 2]
    assert out.mean.loc["ga", "UA"] == pytest.approx(23.0) and out.std.loc["ga", "UA"] == pytest.approx(3.0)
    assert out.std.loc["Retrain", "RA"] == 0 and out.mean.loc["ga", "Disparity avg"] == pytest.approx(11.0)
    assert out.formatted().loc["ga", "UA"] == "23.0 ± 3.0" and out.models == {"Retrain": 0, "ga": 0}
    monkeypatch.setattr(unlearn, "compare", real)
    with pytest.raises(ValueError, match="distinct"):
        unlearn.compare_seeds(trained, digits, torch.arange(5), ["ga"], seeds=[1, 1])


def test_compare_seeds_runs_real_methods_with_callables(digits, trained):
    """With a forget-set builder per seed, each seed's table is compare's; the plot accepts the result."""
    out = unlearn.compare_seeds(trained, digits, lambda s: data.forget_random(digits.y_train, 0.1, seed=s),
                                ["retrain", "ga"], seeds=[0, 1], hp={"retrain": dict(epochs=1), "ga": dict(epochs=1)})
    assert list(out.mean.index) == ["Original", "Retrain", "ga"] and set(out.runs) == {0, 1}
    np.testing.assert_allclose(out.mean.loc["ga", "UA"], np.mean([out.runs[s].loc["ga", "UA"] for s in (0, 1)]))
    fig = plots.gap_with_error_bars(out.mean, out.std)
    assert len(fig.axes[0].patches) == 2 * 4
