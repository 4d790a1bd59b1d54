"""params.py, the leaf home of what every layer does with weights: each helper against a brute-force or
hand-computed reference."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_lib import params


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3))


def _data(n=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_global_topk_equals_brute_force_with_ties_to_the_earlier_position():
    """Every k, both directions, with and without an allowed set: the chosen entries are the first k of
    the entries sorted by (score, position), ties broken by the earlier position."""
    scores = {"a": torch.tensor([[1.0, 3.0], [3.0, 0.0]]), "b": torch.tensor([3.0, 1.0, 2.0])}
    allowed = {"a": torch.tensor([[True, False], [True, True]])}           # b: never a candidate
    flat = [(v, i) for i, v in enumerate(torch.cat([t.flatten() for t in scores.values()]).tolist())]
    for k, largest, allow in itertools.product(range(9), (True, False), (None, allowed)):
        ok = [True] * 7 if allow is None else [True, False, True, True, False, False, False]
        cand = [(v, i) for v, i in flat if ok[i]]
        want = {i for _, i in sorted(cand, key=lambda t: (-t[0] if largest else t[0], t[1]))[:k]}
        got = params.global_topk(scores, k, largest=largest, allowed=allow)
        got_idx = {i for i, b in enumerate(torch.cat([got["a"].flatten(), got["b"]]).tolist()) if b}
        assert got_idx == want, (k, largest, allow is None)
        assert got["a"].shape == (2, 2) and got["a"].dtype == torch.bool


def test_global_topk_refuses_a_negative_k():
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        params.global_topk({"a": torch.ones(3)}, -1)


def test_eval_mode_restores_each_models_mode_even_when_the_block_raises():
    a, b = _net(), _net()
    a.train()
    b.eval()
    with pytest.raises(RuntimeError):
        with params.eval_mode(a, b):
            assert not a.training and not b.training
            raise RuntimeError("boom")
    assert a.training and not b.training


def test_restore_masked_puts_back_exactly_the_entries_outside_the_mask():
    m = _net()
    ref = params.snapshot(m)
    mask = {"0.weight": torch.rand(5, 4) > 0.5}                        # other parameters: frozen entirely
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    params.restore_masked(m, mask, ref)
    for n, p in m.named_parameters():
        want = torch.where(mask[n], ref[n] + 1.0, ref[n]) if n in mask else ref[n]
        assert torch.equal(p, want), n


def test_check_mask_says_what_is_wrong():
    m = _net()
    with pytest.raises(ValueError, match="does not have"):
        params.check_mask({"nope": torch.ones(1, dtype=torch.bool)}, m)
    with pytest.raises(ValueError, match=r"must be a bool tensor of shape \(5, 4\)"):
        params.check_mask({"0.weight": torch.ones(5, 4)}, m)


def test_mean_loss_gradient_equals_the_full_batch_gradient_in_eval_mode():
    m, (X, y) = _net(), _data(11)
    m.train()
    g = params.mean_loss_gradient(m, (X, y), batch_size=4)
    assert m.training                                                 # mode kept
    m.eval()
    full = torch.autograd.grad(F.cross_entropy(m(X), y), list(m.parameters()))
    for (n, _), ref in zip(m.named_parameters(), full):
        assert torch.allclose(g[n], ref, atol=1e-6), n


def test_empirical_fisher_is_the_mean_of_squared_batch_mean_gradients():
    m, (X, y) = _net(), _data(10)
    fis = params.empirical_fisher_diagonal(m, X, y, batch_size=4)     # batches of 4, 4, 2
    m.eval()
    want = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for s in (0, 4, 8):
        gs = torch.autograd.grad(F.cross_entropy(m(X[s:s + 4]), y[s:s + 4]), list(m.parameters()))
        for (n, _), gr in zip(m.named_parameters(), gs):
            want[n] += gr ** 2 / 3
    for n in want:
        assert torch.allclose(fis[n], want[n], atol=1e-7), n


def test_true_fisher_per_example_is_the_expectation_under_the_models_own_prediction():
    m, (X, _) = _net(), _data(3)
    fis = params.true_fisher_diagonal(m, X, batch_size=1)
    m.eval()
    want = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for i in range(3):
        logp = F.log_softmax(m(X[i:i + 1]), 1)[0]
        for k in range(3):
            gs = torch.autograd.grad(-logp[k], list(m.parameters()), retain_graph=True)
            for (n, _), gr in zip(m.named_parameters(), gs):
                want[n] += logp[k].exp().detach() * gr ** 2 / 3
    for n in want:
        assert torch.allclose(fis[n], want[n], atol=1e-6), n


def test_accuracy_is_the_share_of_hits_in_percent_and_refuses_mismatched_input():
    assert params.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 75.0
    assert params.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 50.0
    with pytest.raises(ValueError, match="differ in shape"):
        params.accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        params.accuracy([], [])
    with pytest.raises(ValueError, match="NaN"):
        params.accuracy([0.0, float("nan")], [0, 1])
