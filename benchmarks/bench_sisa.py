"""SISA: cost of one unlearning request against retraining everything, and vectorised against
one-by-one shard training.

    python benchmarks/bench_sisa.py                                  # MLP on digits, S = 1 5 20, R = 1 4
    python benchmarks/bench_sisa.py --arch small_cnn --shards 5 20 --slices 1 --requests 5
    python benchmarks/bench_sisa.py --epochs 12 --slices 1 3 5       # budget-matched: 2E/(R+1) epochs per slice

For every (S, R) and both training paths (vectorised groups of 8 shards with torch.func, or one
shard after the other) it prints: the fit time; the median wall clock of single-row unlearning
requests (``--requests`` random rows, one request each); the time to retrain one monolithic
model on everything that is left (``SISA(1, 1)``, the "retrain all" baseline, same epochs); and
the same two costs counted in re-trained samples (example-gradient evaluations: deterministic,
so the ratio does not depend on the machine). Each shard is trained on one CPU thread.

Epochs: the monolithic model trains ``E`` epochs; a SISA shard with ``R`` slices trains
``2E / (R + 1)`` epochs per slice (rounded, at least 1), which keeps the total fit cost equal
to ``E`` passes over the data (the SISA paper's choice), so the expected samples per request are
``E * (N / S) * (2R + 1) / (3R)`` (source 001's incremental training, averaged over the slice
of the deleted row).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_lib import data, device, models
from course_lib.exact import sisa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mlp", choices=["mlp", "small_cnn"])
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--epochs", type=int, default=10, help="epochs E of the monolithic model")
    ap.add_argument("--requests", type=int, default=10, help="single-row requests timed per configuration")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device.setup(args.seed, device="cpu", fast=True)
    d = data.load("digits")
    X, y = d.X_train, d.y_train
    N = X.shape[0]
    make = (lambda: models.MLP(64, d.n_classes, hidden=(128,))) if args.arch == "mlp" else \
        (lambda: models.SmallCNN(d.n_classes, 1, width=16, feature_dim=64))
    E = args.epochs
    hp = dict(lr=0.05, batch_size=32, seed=args.seed)

    # retrain-all baseline: one model, E epochs, on N - 1 rows (what a request costs without SISA)
    full_times = []
    for i in range(3):
        keep = torch.cat([torch.arange(i), torch.arange(i + 1, N)])
        t0 = time.perf_counter()
        full = sisa.SISA(1, 1, make, E, vectorize=False, **hp).fit(X[keep], y[keep], ids=keep)
        full_times.append(time.perf_counter() - t0)
    t_full = statistics.median(full_times)
    n_full = full.fit_samples_
    acc_full = full.score(d.X_test, d.y_test)
    print(f"{args.arch} on digits: N = {N} rows, E = {E} epochs, batch 32, {args.requests} single-row requests "
          f"per configuration; one CPU thread")
    print(f"retrain all (one model): {t_full:.3f} s, {n_full} samples, test accuracy {acc_full:.1f}%")
    print(f"{'S':>3} {'R':>2} {'e/slice':>7} {'path':>10} {'acc %':>6} {'fit s':>7} {'req s':>7} "
          f"{'time ratio':>10} {'req samples':>11} {'samples ratio':>13} {'analytic':>8}")
    g = torch.Generator().manual_seed(args.seed)
    for S in args.shards:
        for R in args.slices:
            e = max(1, round(2 * E / (R + 1)))
            analytic = (E * N) / (e * (N / S) * (R + 1) * (2 * R + 1) / (6 * R))
            for vec in (True, False):
                m = sisa.SISA(S, R, make, e, vectorize=vec, **hp)
                t0 = time.perf_counter()
                m.fit(X, y)
                t_fit = time.perf_counter() - t0
                acc = m.score(d.X_test, d.y_test)
                victims = m.ids_[torch.randperm(N, generator=g)[:args.requests]]
                reports = [m.unlearn([int(v)]) for v in victims]
                t_req = statistics.median(r.seconds for r in reports)
                n_req = statistics.mean(r.samples for r in reports)
                print(f"{S:>3} {R:>2} {e:>7} {'vectorised' if vec else 'one-by-one':>10} {acc:>6.1f} {t_fit:>7.3f} "
                      f"{t_req:>7.3f} {t_full / t_req:>10.1f} {n_req:>11.0f} {n_full / n_req:>13.1f} {analytic:>8.1f}")


if __name__ == "__main__":
    main()
