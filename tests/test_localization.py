"""Localisation strategies (masks.localize), Reset + Finetune, DEL and SSD (lesson 7, source 003)."""
import math

import pytest
import torch
from torch import nn

from course_lib import masks, models, train, unlearn
from course_lib.masks import localization as L

STRATS = ("deepest", "shallowest", "salloc", "del", "critmem", "random")


class ConvBN(nn.Module):
    """conv-BN-ReLU-conv(bias)-pool-linear-head: conv + batch-norm units, a plain conv, linear units."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.c2(x))
        x = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.head(torch.relu(self.fc(x)))


def tiny():
    return models.seeded(ConvBN, 0)


def data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def total(model):
    return sum(p.numel() for p in model.parameters())


def test_units_group_conv_with_its_batch_norm_and_linear_neurons():
    """A conv's unit holds its weight slice and the following batch norm's entries; linear units hold weight row + bias."""
    m = tiny()
    got = {l.name: (l.kind, l.params, l.n_units, l.unit_size) for l in L.layers(m)}
    assert got["c1"] == ("conv", ("c1.weight", "bn1.weight", "bn1.bias"), 4, 9 + 2)
    assert got["c2"] == ("conv", ("c2.weight", "c2.bias"), 3, 4 * 9 + 1)
    assert got["fc"] == ("linear", ("fc.weight", "fc.bias"), 5, 12 + 1)
    assert got["head"] == ("linear", ("head.weight", "head.bias"), 3, 5 + 1)
    assert sum(l.size for l in L.layers(m)) == total(m)


def test_resnet18_units_cover_every_parameter_once():
    """In the course's ResNet-18 every parameter belongs to exactly one unit layer, and each BN follows its conv."""
    m = models.ResNet18(10, 3)
    ls = L.layers(m)
    assert sum(l.size for l in ls) == total(m)
    assert all(l.kind in ("conv", "linear") for l in ls)
    assert len(ls) == 21 and ls[0].params == ("stem.0.weight", "stem.1.weight", "stem.1.bias")


@pytest.mark.parametrize("strategy", STRATS)
def test_budget_zero_gives_empty_and_one_gives_everything(strategy):
    """Budget 0 opens nothing; budget 1 opens every parameter (CritMem: every unit it ever resets, at most)."""
    m, F = tiny(), data()
    assert masks.count(masks.localize(m, F, strategy, 0.0)) == 0
    full = masks.localize(m, F, strategy, 1.0)
    masks.check(full, m)
    if strategy == "critmem":
        picks, _ = L.critmem_channels(m, F)
        opened = {(j, u) for ex in picks for j, u in ex}
        sizes = [l.unit_size for l in L.layers(m)]
        assert masks.count(full) == sum(sizes[j] for j, _ in opened)
    else:
        assert masks.count(full) == total(m)


@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("budget", [0.03, 0.2, 0.55])
def test_budget_is_respected_and_deterministic(strategy, budget):
    """No strategy opens more than floor(budget * P) parameters, and the same call gives the same mask."""
    m, F = tiny(), data()
    a = masks.localize(m, F, strategy, budget, seed=3)
    b = masks.localize(m, F, strategy, budget, seed=3)
    assert masks.count(a) <= math.floor(budget * total(m))
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("strategy", ["del", "deepest", "shallowest", "critmem", "random"])
def test_unit_strategies_open_whole_units(strategy):
    """Channel-level strategies open each unit (weight slice, bias, BN entries) entirely or not at all."""
    m, F = tiny(), data()
    mk = masks.localize(m, F, strategy, 0.4)
    for all_in, any_in in L.units_of_mask(m, mk):
        assert torch.equal(all_in, any_in)


def _brute_del(model, F, budget, top_fraction=0.1):
    """DEL by loops: per unit, list its |w*g| scores, average the top k, greedy prefix over sorted units."""
    model.eval()
    loss = nn.functional.cross_entropy(model(F[0]), F[1])
    params = dict(model.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    units = []
    for layer in L.layers(model):
        for u in range(layer.n_units):
            vals = []
            for n in layer.params:
                vals += (params[n][u] * grads[n][u]).abs().flatten().tolist()
            k = max(1, int(top_fraction * len(vals)))
            units.append((sum(sorted(vals, reverse=True)[:k]) / k, layer.params, u, len(vals)))
    units.sort(key=lambda t: -t[0])
    allowed, used, mask = math.floor(budget * total(model)), 0, {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    for _, names, u, size in units:
        if used + size > allowed:
            break
        used += size
        for n in names:
            mask[n][u] = True
    return mask, used, units


@pytest.mark.parametrize("budget", [0.05, 0.3, 0.8])
def test_del_matches_brute_force_and_no_further_unit_fits(budget):
    """DEL's mask equals a loop-by-loop computation of Sec. 5.2, and the next unit in order would overflow the budget."""
    m, F = tiny(), data()
    ref, used, units = _brute_del(tiny(), F, budget)
    got = masks.localize(m, F, "del", budget)
    assert all(torch.equal(got[n], ref[n]) for n in ref)
    assert masks.count(got) == used
    chosen = sum(1 for (_, names, u, _) in units if bool(ref[names[0]][u].flatten()[0]))
    if chosen < len(units):
        assert used + units[chosen][3] > math.floor(budget * total(m))


def test_salloc_is_top_gradient_magnitudes():
    """SalLoc keeps exactly floor(budget * P) entries, none with a smaller |g| than any entry left out."""
    m, F = tiny(), data()
    mk = masks.localize(m, F, "salloc", 0.25)
    g = masks.forget_gradients(m, F)
    kept = torch.cat([g[n].abs()[mk[n]] for n in g])
    left = torch.cat([g[n].abs()[~mk[n]] for n in g])
    assert masks.count(mk) == math.floor(0.25 * total(m))
    assert kept.min() >= left.max()


def test_deepest_and_shallowest_take_whole_layers_from_each_end():
    """Deepest opens the head first, Shallowest the first conv first, each as many whole layers as fit."""
    m, F = tiny(), data()
    sizes = [l.size for l in L.layers(m)]
    b = (sizes[-1] + sizes[-2] + 1) / total(m)
    deep = masks.localize(m, F, "deepest", b)
    assert deep["head.weight"].all() and deep["fc.weight"].all() and not deep["c2.weight"].any()
    b = (sizes[0] + 1) / total(m)
    shallow = masks.localize(m, F, "shallowest", b)
    assert shallow["c1.weight"].all() and shallow["bn1.bias"].all() and not shallow["c2.weight"].any()


def test_random_control_copies_per_layer_counts():
    """The random mask opens as many units per layer as its reference (and as many entries per tensor for SalLoc)."""
    m, F = tiny(), data()
    ref = masks.localize(m, F, "del", 0.4)
    rnd = masks.localize(m, F, "random", 0.0, reference=ref, seed=1)
    for (a, _), (b, _) in zip(L.units_of_mask(m, ref), L.units_of_mask(m, rnd)):
        assert int(a.sum()) == int(b.sum())
    sal = masks.localize(m, F, "salloc", 0.3)
    rnd2 = masks.localize(m, F, "random", 0.0, reference=sal, seed=1)
    assert all(int(sal[n].sum()) == int(rnd2[n].sum()) for n in sal)
    other = masks.localize(m, F, "random", 0.0, reference=sal, seed=2)
    assert any(not torch.equal(rnd2[n], other[n]) for n in sal)


def test_table1_grid_options_change_the_mask():
    """criterion and granularity options select Table 1's four corners: del with grad x parameter equals salloc."""
    m, F = tiny(), data()
    a = masks.localize(m, F, "del", 0.2, criterion="grad", granularity="parameter")
    b = masks.localize(m, F, "salloc", 0.2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    c = masks.localize(m, F, "salloc", 0.2, criterion="weighted_grad", granularity="channel")
    d = masks.localize(m, F, "del", 0.2)
    assert all(torch.equal(c[n], d[n]) for n in c)


def test_critmem_flips_every_example_it_reports():
    """Zeroing an example's CritMem channels makes the model misclassify that example."""
    m, F = tiny(), data(8)
    picks, info = L.critmem_channels(m, F)
    n_picks = sum(len(p) for p in picks)
    assert n_picks <= info["gradient_evaluations"] <= n_picks + len(picks)
    structure = L.layers(m)
    n_cand = sum(l.n_units for l in structure[:-1])             # every unit but the classifier's
    for i, ex in enumerate(picks):
        w = models.seeded(ConvBN, 0).eval()
        with torch.no_grad():
            p = dict(w.named_parameters())
            for j, u in ex:
                for n in structure[j].params:
                    p[n][u] = 0
            assert int(w(F[0][i:i + 1]).argmax(1)) != int(F[1][i]) or len(ex) in (64, n_cand)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.3"])
def test_budget_outside_unit_interval_is_refused(bad):
    """A budget outside [0, 1] (or not a number) raises ValueError naming the budget."""
    with pytest.raises(ValueError, match="budget"):
        masks.localize(tiny(), data(), "del", bad)


def test_unknown_strategy_lists_the_known_ones():
    """An unknown strategy name raises ValueError listing every known strategy."""
    with pytest.raises(ValueError) as err:
        masks.localize(tiny(), data(), "deepest_first", 0.1)
    assert all(s in str(err.value) for s in STRATS)


def test_empty_forget_set_is_refused():
    """An empty forget set raises ValueError."""
    X, y = data()
    with pytest.raises(ValueError, match="empty"):
        masks.localize(tiny(), (X[:0], y[:0]), "del", 0.1)


def test_rft_keeps_unmasked_weights_bitwise_and_resets_masked_ones():
    """RFT: entries outside the mask (but in the head) stay bitwise; masked entries start from a fresh init, then train."""
    m, F = tiny(), data()
    R = data(40, seed=1)
    mk = masks.localize(m, F, "del", 0.3)
    before = masks.snapshot(m)
    res0 = unlearn.unlearn("rft", m, R, F, mask=mk, epochs=0, seed=5)       # reset only
    res = unlearn.unlearn("rft", m, R, F, mask=mk, epochs=2, seed=5)
    fresh = dict(models.reset_parameters(m, __import__("course_lib").config.derive_seed(5, 7)).named_parameters())
    after0, after = dict(res0.model.named_parameters()), dict(res.model.named_parameters())
    for n, p in before.items():
        if n.startswith("head."):
            continue
        assert torch.equal(after[n][~mk[n]], p[~mk[n]]), n
        assert torch.equal(after0[n][mk[n]], fresh[n][mk[n]]), n
    moved = sum(int((after[n][mk[n]] != after0[n][mk[n]]).sum()) for n in mk)
    assert moved > 0 and not torch.equal(after["head.weight"], before["head.weight"])
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before.values()))   # original untouched


def test_del_is_localize_plus_rft():
    """unlearn('del', budget=b) equals RFT on masks.localize(strategy='del', budget=b), bitwise."""
    m, F, R = tiny(), data(), data(40, seed=1)
    a = unlearn.unlearn("del", m, R, F, budget=0.2, epochs=1, seed=2).model
    b = unlearn.unlearn("rft", m, R, F, mask=masks.localize(m, F, "del", 0.2), epochs=1, seed=2).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="rft"):
        unlearn.unlearn("del", m, R, F, mask=masks.full(m))


def test_ssd_dampens_exactly_the_forget_specialised_parameters():
    """SSD multiplies by min(lam I_D / I_f, 1) where I_f > alpha I_D and leaves every other parameter bitwise."""
    from course_lib.params import empirical_fisher_diagonal as fisher_diagonal

    m, F, R = tiny(), data(), data(40, seed=1)
    alpha, lam = 2.0, 1.0
    X = torch.cat([R[0], F[0]]); y = torch.cat([R[1], F[1]])
    i_d, i_f = fisher_diagonal(m, X, y, batch_size=16), fisher_diagonal(m, *F, batch_size=16)
    out = dict(unlearn.unlearn("ssd", m, R, F, alpha=alpha, lam=lam, batch_size=16).model.named_parameters())
    n_sel = 0
    for n, p in m.named_parameters():
        sel = i_f[n] > alpha * i_d[n]
        n_sel += int(sel.sum())
        assert torch.equal(out[n][~sel], p.detach()[~sel])
        expect = p.detach()[sel] * torch.clamp(lam * i_d[n][sel] / i_f[n][sel], max=1.0)
        torch.testing.assert_close(out[n][sel], expect)
    assert n_sel > 0
    # by hand on one parameter: a ratio of exactly 1 / alpha is not selected (strict inequality)
    with pytest.raises(ValueError):
        unlearn.unlearn("ssd", m, R, F, alpha=0.0)


def test_rft_runs_on_a_masked_conv_bn_model_in_eval_and_train_modes():
    """After RFT the model still predicts finite logits."""
    m, F, R = tiny(), data(), data(40, seed=1)
    out = unlearn.unlearn("del", m, R, F, budget=0.5, epochs=1).model
    assert torch.isfinite(train.predict_logits(out, F[0])).all()


def test_layer_shares_are_the_budgets_at_which_whole_layers_open():
    """For an MLP 64-128-128-10: from the output, the first share is the head's size over the total; the
    shares increase to 1.0; and Deepest at each share opens exactly that share of the parameters."""
    from course_lib import masks, models
    from course_lib.masks import localization as loc

    net = models.MLP(64, 10, hidden=(128, 128))
    sizes = [64 * 128 + 128, 128 * 128 + 128, 128 * 10 + 10]
    total = sum(sizes)
    deep = loc.layer_shares(net, from_output=True)
    shallow = loc.layer_shares(net, from_output=False)
    assert deep == pytest.approx([sizes[2] / total, (sizes[2] + sizes[1]) / total, 1.0])
    assert shallow == pytest.approx([sizes[0] / total, (sizes[0] + sizes[1]) / total, 1.0])
    X, y = torch.randn(8, 64), torch.arange(8) % 10
    opened = masks.count(masks.localize(net, (X, y), "deepest", deep[0])) / total
    assert opened == pytest.approx(deep[0])
