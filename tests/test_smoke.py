"""Smoke runs (COURSE_SMOKE=1) cut sizes and loop counts only; off, nothing changes. And the training
benchmark runs on the CPU, reporting the fast path against the DataLoader loop."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from course_lib import config, data, engine, models, train
from course_lib.masks import pruning

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")


def _mlp_and_loss(digits):
    m = models.seeded(lambda: models.make_model("mlp", 10, digits.input_shape), 0)
    seen = []

    def loss(idx):
        seen.append(idx.numel())
        return F.cross_entropy(m(digits.X_train[idx]), digits.y_train[idx])
    return m, loss, seen


def test_smoke_flag_and_caps(monkeypatch):
    """Off by default (caps are the identity); on, min(n, cap) and the ends of a sweep."""
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    assert not config.smoke() and config.smoke_cap(500, 2) == 500
    assert config.smoke_sweep([1, 2, 3, 4]) == [1, 2, 3, 4]
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert config.smoke() and config.smoke_cap(500, 2) == 2 and config.smoke_cap(1, 2) == 1
    assert config.smoke_sweep([1, 2, 3, 4]) == [1, 4]
    assert config.smoke_sweep([1, 2, 3, 4], keep=1) == [1]
    assert config.smoke_sweep([1, 2, 3, 4], keep=3) == [1, 2, 4]
    assert config.smoke_sweep([7]) == [7]
    monkeypatch.setenv("COURSE_SMOKE", "maybe")
    with pytest.raises(ValueError, match="COURSE_SMOKE"):
        config.smoke()


def test_sgd_steps_takes_every_step_unless_smoke(digits, monkeypatch):
    """Off: epochs x ceil(N / B) steps of B rows. Smoke: SMOKE_STEPS steps of at most SMOKE_BATCH rows."""
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    m, loss, seen = _mlp_and_loss(digits)
    log = train.sgd_steps(m, 300, loss, epochs=2, batch_size=64, lr=0.01)
    assert log.steps == 2 * 5 == len(seen) and seen[:4] == [64] * 4 and len(log.losses) == 2
    monkeypatch.setenv("COURSE_SMOKE", "1")
    m, loss, seen = _mlp_and_loss(digits)
    log = train.sgd_steps(m, 300, loss, epochs=50, batch_size=64, lr=0.01)
    assert log.steps == config.SMOKE_STEPS == len(seen) and set(seen) == {config.SMOKE_BATCH}
    assert train.steps_per_epoch(300, 64) == -(-300 // config.SMOKE_BATCH)


def test_engine_plans_are_cut_to_their_first_steps(monkeypatch):
    """A smoke plan is the first SMOKE_STEPS steps of the full plan, rows, weights and rates alike."""
    orders = [torch.randperm(40, generator=torch.Generator().manual_seed(e)) for e in range(3)]
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    full = engine.batch_plan(orders, 8, pad=40, lr=0.1, schedule="cosine")
    monkeypatch.setenv("COURSE_SMOKE", "1")
    cut = engine.batch_plan(orders, 8, pad=40, lr=0.1, schedule="cosine")
    T = config.SMOKE_STEPS
    assert full.steps == 15 and cut.steps == T
    assert torch.equal(cut.rows, full.rows[:T]) and torch.equal(cut.lrs, full.lrs[:T])
    assert cut.samples == 8 * T


def test_data_load_keeps_the_first_rows(monkeypatch, digits):
    """Smoke: the first SMOKE_ROWS rows of each split, the same tensors otherwise."""
    monkeypatch.setenv("COURSE_SMOKE", "1")
    small = data.load("digits")
    n_tr, n_te = config.SMOKE_ROWS
    assert len(small.y_train) == n_tr and len(small.y_test) == n_te
    assert torch.equal(small.X_train, digits.X_train[:n_tr]) and torch.equal(small.y_test, digits.y_test[:n_te])


def test_imp_rewind_and_synflow_survive_the_caps(digits, smoke):
    """IMP reaches the target sparsity in SMOKE_ITERATIONS rounds and still returns rewind weights."""
    make = lambda: models.make_model("small_cnn", 10, digits.input_shape, width=4, feature_dim=16)
    m = models.seeded(make, 0)
    trace = pruning.imp_trace(m, digits.X_train[:128], digits.y_train[:128], 0.9, rounds=14, epochs=10,
                              rewind_epoch=8)
    assert len(trace.masks) == config.SMOKE_ITERATIONS and trace.rewind_state is not None
    kept = sum(int(v.sum()) for v in trace.mask.values())
    assert kept < 0.2 * sum(v.numel() for v in trace.mask.values())
    sf = pruning.synflow(m, 0.9, (1, 8, 8), iterations=100)   # the final sparsity, in 2 iterations
    assert sum(int(v.sum()) for v in sf.values()) == kept


@pytest.mark.notebook
def test_training_benchmark_runs_on_the_cpu():
    """benchmarks/bench_train.py reports images/s for every path and model, fast path beside DataLoader."""
    proc = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--device", "cpu", "--resnet-batch", "8",
                           "--resnet-steps", "1", "--small-epochs", "1", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for arch in ("resnet18", "small_cnn", "mlp"):
        for path in ("dataloader", "plain-fit", "fast-path"):
            assert any(line.startswith(arch) and path in line for line in out.splitlines()), (arch, path, out)
    assert "not measured in this run" in out   # no GPU claim from a CPU run
