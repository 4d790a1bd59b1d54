"""The opacus wrapper: ε from the accountant, calibration to a target ε, reproducibility,
the original model untouched, and clear errors."""
import math

import pytest
import torch

from course_lib import dp, models



def _data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 1, 4, 4, generator=g)
    y = (X.flatten(1)[:, :3].argmax(1)).long()
    return X, y


def make():
    return models.MLP(16, 3, hidden=(8,))


def test_accountant_monotone_and_calibration_round_trip():
    q, steps = 0.1, 100
    e_low_noise = dp.epsilon_spent([(0.8, q, steps)], delta=1e-5)
    e_high_noise = dp.epsilon_spent([(2.0, q, steps)], delta=1e-5)
    assert e_high_noise < e_low_noise
    assert dp.epsilon_spent([(2.0, q, 2 * steps)]) > e_high_noise            # more steps cost more
    assert dp.epsilon_spent([(2.0, q, steps)], delta=1e-3) < e_high_noise    # a larger δ is cheaper
    sigma = dp.noise_for_epsilon(2.0, 1e-5, q, steps)
    assert dp.epsilon_spent([(sigma, q, steps)], delta=1e-5) == pytest.approx(2.0, abs=0.05)
    assert dp.epsilon_spent([(0.0, q, steps)]) == math.inf


def test_train_dp_hits_target_and_is_reproducible():
    X, y = _data()
    base = models.seeded(make, 0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    r1 = dp.train_dp(base, X, y, target_epsilon=3.0, delta=1e-5, epochs=2, batch_size=32, lr=0.2, seed=4)
    r2 = dp.train_dp(base, X, y, target_epsilon=3.0, delta=1e-5, epochs=2, batch_size=32, lr=0.2, seed=4)
    assert r1.epsilon == pytest.approx(3.0, abs=0.1) and r1.epsilon <= 3.0 + 0.05
    assert r1.sample_rate == pytest.approx(32 / 128) and r1.steps > 0
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k])                                      # original untouched
    for p, q in zip(r1.model.parameters(), r2.model.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, before[k]) for k, p in r1.model.state_dict().items())
    assert type(r1.model) is type(base) and not hasattr(r1.model, "_module")


def test_more_noise_means_smaller_epsilon():
    X, y = _data()
    lo = dp.train_dp(make(), X, y, noise_multiplier=0.7, epochs=1, batch_size=32)
    hi = dp.train_dp(make(), X, y, noise_multiplier=3.0, epochs=1, batch_size=32)
    assert hi.epsilon < lo.epsilon and hi.noise_multiplier == 3.0


def test_bad_arguments():
    X, y = _data()
    with pytest.raises(ValueError, match="exactly one"):
        dp.train_dp(make(), X, y)
    with pytest.raises(ValueError, match="exactly one"):
        dp.train_dp(make(), X, y, target_epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="batch norm"):
        dp.train_dp(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.BatchNorm1d(3)),
                    X, y, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="delta"):
        dp.train_dp(make(), X, y, noise_multiplier=1.0, delta=0.0)
    with pytest.raises(ValueError, match="accountant"):
        dp.epsilon_spent([(1.0, 0.1, 10)], accountant="moments")
    with pytest.raises(ValueError, match="empty"):
        dp.epsilon_spent([])
    with pytest.raises(ValueError):
        dp.noise_for_epsilon(0.0, 1e-5, 0.1, 10)


def test_train_dp_runs_on_the_one_single_model_loop(monkeypatch):
    """train_dp hands opacus' Poisson batches and DPOptimizer to train.sgd_steps (no loop of its own):
    one loop call, constant rate, no weight decay, and the steps the loop reports."""
    from course_lib import train

    calls = []

    def spy(*a, **k):
        calls.append(k)
        return train.sgd_steps(*a, **k)

    monkeypatch.setattr(dp, "sgd_steps", spy)
    X, y = _data()
    r = dp.train_dp(make(), X, y, noise_multiplier=1.0, epochs=2, batch_size=32, seed=1)
    assert len(calls) == 1 and calls[0]["schedule"] == "constant" and calls[0]["weight_decay"] == 0.0
    assert len(calls[0]["batches"]) == 4 and r.steps == r.log.steps > 0
