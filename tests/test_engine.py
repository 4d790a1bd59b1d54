"""The many-models engine: schedule, slot grouping, batch plans, the masked SGD step, and a
slot trained in a group equals the same model trained alone."""
import math

import pytest
import torch

from course_lib import engine, models, train


def test_cosine_schedule_values_and_constant():
    """lr_factor is (1 + cos(pi t / T)) / 2 for cosine and 1 for constant; lr_schedule agrees."""
    assert engine.lr_factor(0, 10, "cosine") == 1.0
    assert engine.lr_factor(5, 10, "cosine") == pytest.approx(0.5)
    assert engine.lr_factor(3, 10, "constant") == 1.0
    lrs = engine.lr_schedule(0.2, 10, "cosine")
    assert torch.allclose(lrs, torch.tensor([0.2 * engine.lr_factor(t, 10, "cosine") for t in range(10)]))
    with pytest.raises(ValueError, match="schedule"):
        engine.lr_schedule(0.1, 3, "step")


def test_slot_groups_keep_each_item_in_slot_j_mod_G():
    """Item j always sits in slot j % G, free slots are None, every item appears once."""
    groups = engine.slot_groups([0, 2, 3, 5, 9], 4)
    assert all(j is None or j % 4 == i for g in groups for i, j in enumerate(g))
    assert sorted(j for g in groups for j in g if j is not None) == [0, 2, 3, 5, 9]
    assert len(groups) == 2


def test_batch_plan_even_batches_and_weights():
    """10 rows, batch 4: three batches of 4/3/3 rows, weights 1/rows, padding weight 0, samples = E n."""
    orders = [torch.arange(10), torch.arange(10).flip(0)]
    plan = engine.batch_plan(orders, 4, pad=99, lr=0.1, schedule="constant")
    assert plan.steps == 6 and plan.samples == 20
    assert (plan.weights > 0).sum(1).tolist() == [4, 3, 3, 4, 3, 3]
    assert torch.allclose(plan.weights.sum(1), torch.ones(6))
    assert (plan.rows[plan.weights == 0] == 99).all()


def test_masked_update_leaves_inactive_slots_bitwise_alone():
    """An inactive slot keeps its parameters and momentum bitwise; an active one takes the SGD step
    buf = mu buf + g + wd p, p -= lr buf."""
    P = {"w": torch.randn(2, 3)}
    M = {"w": torch.randn(2, 3)}
    g = {"w": torch.randn(2, 3)}
    P0, M0 = P["w"].clone(), M["w"].clone()
    engine.sgd_update(P, M, g, torch.tensor([0.1, 0.1]), 0.9, 0.01, torch.tensor([True, False]))
    assert torch.equal(P["w"][1], P0[1]) and torch.equal(M["w"][1], M0[1])
    buf = 0.9 * M0[0] + (g["w"][0] + 0.01 * P0[0])
    torch.testing.assert_close(M["w"][0], buf)
    torch.testing.assert_close(P["w"][0], P0[0] - 0.1 * buf)


def test_a_slot_trained_in_a_group_equals_plain_sgd():
    """Slot training on the engine equals torch.optim.SGD on the same batches (one model)."""
    torch.manual_seed(0)
    X, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    make = lambda: models.MLP(6, 3, hidden=(8,))  # noqa: E731
    ref = models.seeded(make, 1)
    base = models.seeded(make, 1).to("meta")
    P = {n: p.detach().clone()[None] for n, p in ref.named_parameters()}
    M = {n: torch.zeros_like(p) for n, p in P.items()}
    orders = [torch.randperm(40, generator=torch.Generator().manual_seed(e)) for e in range(2)]
    plan = engine.batch_plan(orders, 10, pad=40, lr=0.05, schedule="cosine")
    Xp, yp = torch.cat([X, torch.zeros(1, 6)]), torch.cat([y, torch.zeros(1, dtype=torch.long)])
    P, _ = engine.train_slots(P, M, [plan], engine.vmap_ce_grads(base, Xp, yp), pad=40, momentum=0.9,
                              weight_decay=5e-4, device=torch.device("cpu"))
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for t in range(plan.steps):
        for group in opt.param_groups:
            group["lr"] = float(plan.lrs[t])
        rows = plan.rows[t][plan.weights[t] > 0]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(X[rows]), y[rows]).backward()
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(P[n][0], p.detach(), rtol=1e-5, atol=1e-6)


def test_run_steps_is_the_one_stack_loop_and_updates_the_dicts_in_place():
    """run_steps with one rate per step (a list) takes sgd_update's step at every t, handing the
    current parameters to grads_of_step; P and M are the dicts given, updated in place."""
    P0 = {"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0))}
    P, M = {"w": P0["w"].clone()}, {"w": torch.zeros(3, 4)}
    seen = []

    def grads(t, Pt):
        seen.append(Pt["w"].clone())
        return {"w": 2 * Pt["w"]}                                  # the gradient of sum(w ** 2)

    out = engine.run_steps(P, M, [0.1, 0.05, 0.02], grads, momentum=0.9, weight_decay=0.01)
    assert out[0] is P and out[1] is M and len(seen) == 3
    Q, N = {"w": P0["w"].clone()}, {"w": torch.zeros(3, 4)}
    for t, lr in enumerate([0.1, 0.05, 0.02]):
        assert torch.equal(seen[t], Q["w"])
        engine.sgd_update(Q, N, {"w": 2 * Q["w"]}, lr, 0.9, 0.01)
    assert torch.equal(P["w"], Q["w"]) and torch.equal(M["w"], N["w"])
