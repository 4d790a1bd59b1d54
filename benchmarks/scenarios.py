"""Measure each scenario's memorisation gap in FAST mode: the original's and Retrain's accuracy on the
forget set (with the labels the original trained on), train and test accuracy, over seeds.

    python benchmarks/scenarios.py [--seeds 3]

The printed table is the source of ``course_lib.scenarios.MEASURED`` (copy the dict it prints)."""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from course_lib import scenarios, train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for name in scenarios.available():
        rows = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            sc = scenarios.make(name, seed=seed, fast=True)
            o, r = sc.train_original(), sc.train_retrain()
            X, y = sc.forget
            rows.append([train.accuracy(o, *sc.forget), train.accuracy(r, X, y),
                         train.accuracy(o, sc.data.X_train, sc.data.y_train),
                         train.accuracy(o, sc.data.X_test, sc.data.y_test), train.accuracy(r, sc.data.X_test, sc.data.y_test)])
        a = np.array(rows)
        gap = a[:, 0] - a[:, 1]
        out[name] = {"original_forget_acc": float(round(a[:, 0].mean(), 1)), "retrain_forget_acc": float(round(a[:, 1].mean(), 1)),
                     "gap": float(round(gap.mean(), 1)), "gap_std": float(round(gap.std(ddof=1), 1)),
                     "retrain_forget_acc_std": float(round(a[:, 1].std(ddof=1), 1)),
                     "original_train_acc": float(round(a[:, 2].mean(), 1)), "original_test_acc": float(round(a[:, 3].mean(), 1)),
                     "retrain_test_acc": float(round(a[:, 4].mean(), 1))}
        print(f"{name:11s} {out[name]}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("MEASURED =", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
