import pytest
import torch

from course_lib import models, train
from conftest import params_equal


def _small(seed=0):
    return models.seeded(lambda: models.SmallCNN(10, width=8, feature_dim=16), seed)


def test_same_seed_identical_weights(digits):
    """Same seed: bit-identical weights on the CPU; another seed: different weights."""
    runs = []
    for seed in (0, 0, 1):
        m = _small(seed)
        train.fit(m, digits.X_train[:300], digits.y_train[:300], epochs=2, lr=0.05, batch_size=32, seed=seed)
        runs.append(m)
    assert params_equal(runs[0], runs[1])
    assert not params_equal(runs[0], runs[2])


def test_fit_learns_digits(digits, trained):
    """Ten epochs of the small CNN reach well above 90% test accuracy; the log is filled in."""
    assert train.accuracy(trained, digits.X_test, digits.y_test) > 93
    m = _small()
    log = train.fit(m, digits.X_train, digits.y_train, epochs=3, lr=0.05, seed=0)
    assert len(log.losses) == 3 and log.losses[-1] < log.losses[0]
    assert log.steps == 3 * -(-1347 // 64) and log.seconds > 0


def test_mask_freezes_weights_despite_momentum_and_decay(digits):
    """Masked-out entries stay bit-identical even with momentum and weight decay; others move."""
    m = _small()
    before = train.snapshot(m)
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5 for n, p in m.named_parameters()}
    del mask["head.bias"]  # a parameter missing from the mask is frozen entirely
    train.fit(m, digits.X_train[:200], digits.y_train[:200], epochs=2, lr=0.1, momentum=0.9,
              weight_decay=0.01, seed=0, mask=mask)
    for n, p in m.named_parameters():
        if n == "head.bias":
            assert torch.equal(p, before[n])
            continue
        assert torch.equal(p[~mask[n]], before[n][~mask[n]]), n
        assert not torch.equal(p[mask[n]], before[n][mask[n]]), n


def test_constant_vs_cosine_schedule(digits):
    """The two schedules give different weights; unknown schedules are refused."""
    a, b = _small(), _small()
    train.fit(a, digits.X_train[:100], digits.y_train[:100], epochs=1, seed=0, schedule="cosine")
    train.fit(b, digits.X_train[:100], digits.y_train[:100], epochs=1, seed=0, schedule="constant")
    assert not params_equal(a, b)
    with pytest.raises(ValueError, match="schedule"):
        train.fit(a, digits.X_train[:10], digits.y_train[:10], epochs=1, schedule="step")


@pytest.mark.parametrize("X,y,msg", [
    (torch.zeros(5, 1, 8, 8), torch.zeros(4, dtype=torch.long), "X must be"),
    (torch.zeros(5, 1, 8, 8), torch.zeros(5), "int64"),
    (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), "empty"),
    ([[0.0]], torch.zeros(1, dtype=torch.long), "torch tensors"),
])
def test_bad_training_data(X, y, msg):
    """Mismatched, float-labelled, empty or non-tensor data are refused with the reason."""
    with pytest.raises(ValueError, match=msg):
        train.fit(_small(), X, y, epochs=1)


def test_bad_hyper_parameters(digits):
    """Negative epochs or a zero batch size are refused."""
    with pytest.raises(ValueError, match="epochs"):
        train.fit(_small(), digits.X_train[:10], digits.y_train[:10], epochs=-1)
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(_small(), digits.X_train[:10], digits.y_train[:10], batch_size=0)


def test_predict_and_accuracy_by_hand():
    """A fixed linear model: logits, accuracy and features computed by hand."""
    class Fixed(torch.nn.Module):
        feature_dim = 2
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        def features(self, x):
            return x.flatten(1)
        def forward(self, x):
            return self.features(x) @ self.w
    m = Fixed()
    X = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 2.0]])
    assert torch.equal(train.predict_logits(m, X, batch_size=3), X)
    assert train.accuracy(m, X, torch.tensor([0, 1, 1, 1])) == 75.0
    assert torch.equal(train.features(m, X), X)


def test_stopwatch_measures():
    """The stopwatch reports elapsed seconds."""
    import time
    with train.Stopwatch() as sw:
        time.sleep(0.02)
    assert 0.015 < sw.seconds < 30   # lower bound: it measured the sleep; upper: a generous guard, not a speed claim


def test_sgd_steps_custom_loss_by_hand():
    """One parameter, loss w**2, plain SGD with a constant rate: w <- w (1 - 2 lr) per step."""
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(1.0)
    log = train.sgd_steps(w, 4, lambda idx: (w.weight ** 2).sum(), epochs=2, batch_size=2, lr=0.1,
                          momentum=0.0, weight_decay=0.0, schedule="constant")
    assert log.steps == 4
    assert w.weight.item() == pytest.approx(0.8 ** 4)
    empty = train.sgd_steps(w, 4, lambda idx: (w.weight ** 2).sum(), epochs=0, batch_size=2, lr=0.1)
    assert empty.steps == 0 and empty.losses == []


def test_sgd_steps_runs_given_batches_and_optimizer_and_skips_empty_ones():
    """Given batches (e.g. opacus' Poisson batches) replace the seeded ones, an empty batch is no
    step, the optimiser factory gets the loop's hyper-parameters, and an epoch's loss is the
    row-weighted mean of its batch losses."""
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(1.0)
    batches = [torch.tensor([0, 1, 2]), torch.tensor([], dtype=torch.long), torch.tensor([3])]
    made, seen = [], []

    class Batches:
        def __len__(self):
            return len(batches)

        def __iter__(self):
            return iter(batches)

    def make(params, **hp):
        made.append(hp)
        return torch.optim.SGD(params, **hp)

    def loss(idx):
        seen.append(idx.tolist())
        return (w.weight ** 2).sum() * (1 + len(seen))

    log = train.sgd_steps(w, 4, loss, epochs=1, batch_size=2, lr=0.1, momentum=0.0, weight_decay=0.0,
                          schedule="constant", optimizer=make, batches=Batches())
    assert made == [dict(lr=0.1, momentum=0.0, weight_decay=0.0)]
    assert seen == [[0, 1, 2], [3]] and log.steps == 2
    l1, l2 = 2 * 1.0, 3 * 0.6 ** 2               # the two batch losses (w = 1, then 1 - 0.1 * 4)
    assert log.losses[0] == pytest.approx((3 * l1 + 1 * l2) / 4)


def test_a_smoke_run_reports_the_mean_loss_of_the_rows_it_ran(digits, monkeypatch):
    """Under the smoke budget the loop takes SMOKE_STEPS steps and its epoch loss is the mean over
    the rows of those steps only (the work it did), not over the whole epoch's rows."""
    from course_lib import config

    monkeypatch.setenv("COURSE_SMOKE", "1")
    m, batch_losses = _small(), []

    def loss(idx):
        out = torch.nn.functional.cross_entropy(m(digits.X_train[idx]), digits.y_train[idx])
        batch_losses.append(float(out.detach()))
        return out

    log = train.sgd_steps(m, 300, loss, epochs=3, batch_size=64, lr=0.01)
    assert log.steps == config.SMOKE_STEPS == len(batch_losses) and len(log.losses) == 1
    assert log.losses[0] == pytest.approx(sum(batch_losses) / len(batch_losses), rel=1e-6)
