"""Many small models at once: StackedModels (torch.func, vmap over stacked parameters) against a
Python loop of ordinary trainings (course_lib.train.fit), same models, same seeds, same data.

    python benchmarks/bench_stacked.py                       # MLP on digits, N = 8 and 32, 5 epochs
    python benchmarks/bench_stacked.py --arch small_cnn --models 8 --epochs 2
    python benchmarks/bench_stacked.py --dp                  # also DP-SGD: stacked vs opacus loop

Prints seconds per population, the speed ratio, and the largest weight difference between
model i of the stack and model i of the loop (float rounding only).
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import data, device, models, stacked, train


def loop_fit(make, seeds, X, y, **hp) -> tuple[list[torch.nn.Module], float]:
    t0 = time.perf_counter()
    out = []
    for s in seeds:
        m = models.seeded(make, s)
        train.fit(m, X, y, seed=s, **hp)
        out.append(m)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mlp", choices=["mlp", "small_cnn"])
    ap.add_argument("--models", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--dp", action="store_true", help="also time DP-SGD: stacked vs a loop of opacus runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device.setup(0, device="cpu", fast=True)
    d = data.load("digits")
    make = (lambda: models.MLP(64, d.n_classes, hidden=(128,))) if args.arch == "mlp" else \
        (lambda: models.SmallCNN(d.n_classes, 1, width=16, feature_dim=64))
    hp = dict(epochs=args.epochs, lr=0.05, batch_size=64)
    stacked.StackedModels(make, [0]).fit(d.X_train[:128], d.y_train[:128], epochs=1)   # warm-up
    print(f"{args.arch} on digits ({d.X_train.shape[0]} rows), {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads")
    print(f"{'N':>4} {'loop (s)':>9} {'stacked (s)':>12} {'speed-up':>9} {'max |dw|':>10}")
    for n in args.models:
        seeds = list(range(n))
        loop_models, t_loop = loop_fit(make, seeds, d.X_train, d.y_train, **hp)
        t0 = time.perf_counter()
        st = stacked.StackedModels(make, seeds).fit(d.X_train, d.y_train, **hp)
        t_st = time.perf_counter() - t0
        diff = max((p - q).abs().max().item() for i, m in enumerate(loop_models)
                   for p, q in zip(st.model(i).parameters(), m.parameters()))
        print(f"{n:>4} {t_loop:>9.2f} {t_st:>12.2f} {t_loop / t_st:>8.1f}x {diff:>10.1e}")
    if args.dp:
        from course_lib import dp

        print("\nDP-SGD (noise multiplier 1.0, clip 1.0):")
        print(f"{'N':>4} {'opacus loop (s)':>16} {'stacked (s)':>12} {'speed-up':>9}")
        for n in args.models:
            t0 = time.perf_counter()
            for s in range(n):
                dp.train_dp(models.seeded(make, s), d.X_train, d.y_train, noise_multiplier=1.0,
                            epochs=args.epochs, batch_size=64, lr=0.5, momentum=0.0, seed=s)
            t_loop = time.perf_counter() - t0
            t0 = time.perf_counter()
            dp.fit_stacked(stacked.StackedModels(make, range(n)), d.X_train, d.y_train, noise_multiplier=1.0,
                           epochs=args.epochs, batch_size=64, lr=0.5, momentum=0.0)
            t_st = time.perf_counter() - t0
            print(f"{n:>4} {t_loop:>16.2f} {t_st:>12.2f} {t_loop / t_st:>8.1f}x")


if __name__ == "__main__":
    main()
