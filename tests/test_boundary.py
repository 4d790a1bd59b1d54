"""Boundary Shrink / Boundary Expanding (course_lib.unlearn.boundary) and the decision-space plot."""
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_lib import data, models, plots, train, unlearn
from course_lib.unlearn import boundary
from conftest import params_equal

FORGET = 3


@pytest.fixture(scope="module")
def split(digits):
    f = data.forget_class(digits.y_train, FORGET)
    r = data.retain_indices(len(digits.y_train), f)
    return (digits.X_train[r], digits.y_train[r]), (digits.X_train[f], digits.y_train[f])


def _acc(m, X, y):
    return train.accuracy(m, X, y)


def test_registered_with_aliases():
    """Both methods are in the registry under their names and the aliases bs / be."""
    assert {"boundary_shrink", "boundary_expand"} <= set(unlearn.available())
    assert unlearn.defaults("bs") == unlearn.defaults("boundary_shrink")
    assert unlearn.defaults("be") == unlearn.defaults("boundary_expand")


def test_neighbour_search_is_one_fgsm_step_within_the_bound(trained, split):
    """FGSM: x' - x = eps * sign(grad_x CE) computed by hand, so |x' - x|_inf <= eps."""
    X, y = split[1][0][:40], split[1][1][:40]
    eps = 0.1
    x = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(trained(x), y, reduction="sum"), x)
    got = boundary.neighbour_search(trained, X, y, eps)
    assert torch.allclose(got, X + eps * g.sign(), atol=1e-7)
    assert (got - X).abs().max() <= eps + 1e-7


def test_pgd_respects_the_bound_and_moves_further(trained, split):
    """PGD (steps > 1) stays in the eps ball and raises the loss at least as much as... FGSM's ball allows."""
    X, y = split[1]
    adv = boundary.neighbour_search(trained, X, y, 0.2, steps=5)
    assert (adv - X).abs().max() <= 0.2 + 1e-6
    loss = lambda Z: F.cross_entropy(train.predict_logits(trained, Z), y).item()
    assert loss(adv) > loss(X)


def test_labels_are_nearest_but_incorrect(trained, split):
    """Labels never equal y and are the argmax over the other classes of the original on x'."""
    X, y = split[1]
    eps = 0.1
    labels = boundary.neighbour_labels(trained, X, y, eps)
    assert labels.dtype == torch.int64 and labels.shape == y.shape
    assert (labels != y).all()
    logits = train.predict_logits(trained, boundary.neighbour_search(trained, X, y, eps))
    logits[torch.arange(len(y)), y] = -float("inf")
    assert torch.equal(labels, logits.argmax(1))
    plain = boundary.neighbour_labels(trained, X, y, 0.01, exclude_true=False)
    assert (plain == y).any(), "with a tiny step the plain argmax (public code) keeps the true label"


def test_bad_bound_is_refused(trained, split):
    """eps <= 0 (or not a number) raises a ValueError naming the bound."""
    for eps in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="bound"):
            boundary.neighbour_labels(trained, *split[1], eps)
        with pytest.raises(ValueError, match="bound"):
            unlearn.unlearn("bs", trained, *split, bound=eps)


def test_non_class_forget_set_is_refused_unless_opted_in(digits, trained):
    """A forget set that is not a whole class raises; allow_partial=True runs the method anyway."""
    f = data.forget_random(digits.y_train, 0.1, seed=0)
    r = data.retain_indices(len(digits.y_train), f)
    retain, forget = (digits.X_train[r], digits.y_train[r]), (digits.X_train[f], digits.y_train[f])
    for m in ("bs", "be"):
        with pytest.raises(ValueError, match="class-wise.*allow_partial=True"):
            unlearn.unlearn(m, trained, retain, forget, epochs=1)
        res = unlearn.unlearn(m, trained, retain, forget, epochs=1, allow_partial=True)
        assert res.model.head.out_features == 10


def test_boundary_shrink_forgets_the_class_and_keeps_the_others(digits, trained, split):
    """With the defaults the forget class drops to near 0% while the other test classes lose few points."""
    res = unlearn.unlearn("bs", trained, *split, seed=0)
    test_keep = digits.y_test != FORGET
    assert _acc(res.model, *split[1]) < 10
    assert _acc(res.model, digits.X_test[~test_keep], digits.y_test[~test_keep]) < 10
    assert _acc(res.model, digits.X_test[test_keep], digits.y_test[test_keep]) > \
        _acc(trained, digits.X_test[test_keep], digits.y_test[test_keep]) - 6


def test_boundary_expand_keeps_head_shape_and_forgets(digits, trained, split):
    """After BE the head has the original shape again, the forget class falls, the others stay."""
    shape = tuple(trained.head.weight.shape)
    res = unlearn.unlearn("be", trained, *split, seed=0)
    assert tuple(res.model.head.weight.shape) == shape and res.model.head.bias.shape == (shape[0],)
    assert train.predict_logits(res.model, digits.X_test[:5]).shape == (5, 10)
    test_keep = digits.y_test != FORGET
    assert _acc(res.model, *split[1]) < 10
    assert _acc(res.model, digits.X_test[test_keep], digits.y_test[test_keep]) > \
        _acc(trained, digits.X_test[test_keep], digits.y_test[test_keep]) - 8


def test_widen_then_narrow_is_exact(trained, digits):
    """Widening keeps the old logits bitwise; narrowing keeps the first K logits of the wide model bitwise."""
    import copy

    m = copy.deepcopy(trained)
    before = train.predict_logits(m, digits.X_test)
    K = boundary.widen_head(m, seed=1)
    assert K == 10 and m.head.out_features == 11
    wide = train.predict_logits(m, digits.X_test)
    assert torch.equal(wide[:, :10], before)
    with torch.no_grad():
        m.head.weight.add_(0.1)          # stands in for fine-tuning the widened model
    wide = train.predict_logits(m, digits.X_test)
    boundary.narrow_head(m, K)
    assert m.head.out_features == 10
    assert torch.equal(train.predict_logits(m, digits.X_test), wide[:, :10])


def test_model_without_final_linear_is_refused(split):
    """BE needs a final nn.Linear (head or fc): a model whose head is a conv layer gets a clear error."""

    class ConvHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 10, 8)
            self.head = nn.Flatten()

        def forward(self, x):
            return self.head(self.body(x))

    with pytest.raises(ValueError, match="nn.Linear"):
        unlearn.unlearn("be", ConvHead(), *split, epochs=1)


@pytest.mark.parametrize("method", ["bs", "be"])
def test_original_untouched_and_seeded(trained, split, method):
    """The original model is not modified, and the same seed gives bit-identical weights on the CPU."""
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    a = unlearn.unlearn(method, trained, *split, seed=3, epochs=2)
    b = unlearn.unlearn(method, trained, *split, seed=3, epochs=2)
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert params_equal(a.model, b.model) and not params_equal(a.model, trained)
    assert a.seconds > 0 and a.method in ("boundary_shrink", "boundary_expand")


def test_be_honours_a_mask(trained, split):
    """A mask freezing everything but the head leaves the body bitwise unchanged under BE."""
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in trained.named_parameters() if n.startswith("head.")}
    res = unlearn.unlearn("be", trained, *split, epochs=2, mask=mask)
    body_a, body_b = dict(res.model.body.named_parameters()), dict(trained.body.named_parameters())
    assert all(torch.equal(body_a[k], body_b[k]) for k in body_a)
    assert not torch.equal(res.model.head.weight, trained.head.weight)


# ----------------------------------------------------------------------------- decision_space

@pytest.fixture(scope="module")
def panel_data(digits):
    idx = torch.arange(0, 160)
    X, y = digits.X_train[idx], digits.y_train[idx]
    return X, y, (y == FORGET)


def test_decision_space_panels_and_hollow_forget_points(trained, panel_data):
    """One axis per model, titled by name; forget points drawn hollow (no face colour), the rest filled."""
    X, y, mask = panel_data
    fig, emb = plots.decision_space({"Original": trained, "Copy": trained, "Third": trained}, X, y, mask,
                                    method="pca", return_embeddings=True)
    axes = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in axes] == ["Original", "Copy", "Third"]
    for ax in axes:
        dots, hollow = ax.collections
        assert len(dots.get_offsets()) == int((~mask).sum()) and len(hollow.get_offsets()) == int(mask.sum())
        assert hollow.get_facecolors().shape[0] == 0 or np.all(hollow.get_facecolors()[:, 3] == 0)
        assert np.all(dots.get_facecolors()[:, 3] > 0)
    assert emb["Original"].shape == (len(y), 2)
    matplotlib.pyplot.close(fig)


def test_decision_space_umap_is_seeded(trained, panel_data):
    """The default UMAP embedding is reproducible with a fixed random_state (pays numba compilation once)."""
    X, y, mask = panel_data
    _, e1 = plots.decision_space({"m": trained}, X, y, mask, return_embeddings=True)
    _, e2 = plots.decision_space({"m": trained}, X, y, mask, return_embeddings=True)
    assert np.array_equal(e1["m"], e2["m"])
    matplotlib.pyplot.close("all")


def test_decision_space_refuses_bad_input(trained, panel_data):
    """Mismatched lengths, a non-bool mask, an empty dict and an unknown method raise ValueError."""
    X, y, mask = panel_data
    with pytest.raises(ValueError, match="one row per point"):
        plots.decision_space({"m": trained}, X, y[:-1], mask, method="pca")
    with pytest.raises(ValueError, match="one row per point"):
        plots.decision_space({"m": trained}, X, y, mask[:-3], method="pca")
    with pytest.raises(ValueError, match="bool"):
        plots.decision_space({"m": trained}, X, y, mask.long(), method="pca")
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.decision_space({}, X, y, mask)
    with pytest.raises(ValueError, match="umap' or 'pca"):
        plots.decision_space({"m": trained}, X, y, mask, method="tsne")
