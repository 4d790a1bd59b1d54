"""LegoNet: time of one unlearning request against SISA, and what batching the adapters buys.

    python benchmarks/bench_legonet.py                       # the FAST setting of lecture 03
    python benchmarks/bench_legonet.py --epochs 10 --requests 20 --adapters 100 400 --chunks 1 8 16 32

Setting (as in notebooks/03_legonet.ipynb, FAST mode): digits, 500 rows are a public pool that
pre-trains a SmallCNN encoder (30 epochs); the 847 private rows are the training set. SISA's
shard models are that pre-trained network with a fresh head, fine-tuned end to end (the source's
SISA with pre-trained ResNet-34s); LegoNet trains linear adapters on the cached encodings, with
the same number of epochs. It prints

* for SISA (``--shards``) and LegoNet (each ``--adapters`` n, ``k = --k``): fit time, test
  accuracy, the median wall clock of ``--requests`` single-row requests (the same random rows
  for every model, each request on a fresh copy of the fitted model) and the example-gradient
  evaluations of a request (LegoNet: epochs x re-trained rows; SISA: its report's ``samples``);
  the LegoNet / SISA ratios are the numbers to compare with the source (32.65% for n = 100,
  12.91% for n = 1000 against SISA s = 10);
* for each ``--chunks`` G: LegoNet's fit time and request time when G adapters train together
  (G = 1 is one adapter after the other, i.e. no batching).

All CPU work is single-threaded inside both libraries, so the numbers compare methods, not thread
scheduling; on a busy machine rerun and take the median.
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch

from course_lib import data, device, models
from course_lib.exact import legonet
from course_lib.exact.sisa import SISA


def median_request_seconds(model, ids) -> tuple[float, list]:
    reports = [copy.deepcopy(model).unlearn([int(i)]) for i in ids]
    return statistics.median(r.seconds for r in reports), reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6, help="epochs of SISA's shard models and of the adapters")
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--adapters", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device.setup(args.seed, device="cpu", fast=True)
    ds = data.load("digits")
    private, X_pub, y_pub = data.holdout(ds, 500, seed=args.seed)
    X, y, X_test, y_test = private.X_train, private.y_train, private.X_test, private.y_test
    encoder = legonet.pretrain_encoder(X_pub, y_pub, 10, epochs=30, seed=args.seed)
    E, E_test = legonet.encode(encoder, X), legonet.encode(encoder, X_test)
    victims = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed + 1))[:args.requests]

    def make_network():
        m = models.SmallCNN(10, 1)
        m.load_state_dict({k: v for k, v in encoder.module.state_dict().items() if not k.startswith("head.")},
                          strict=False)
        return m

    print(f"digits: {len(y)} private rows, {len(y_test)} test rows, encoder d={E.shape[1]}, "
          f"{args.epochs} epochs, {args.requests} single-row requests per model (median)")
    print(f"{'model':24s} {'fit s':>7s} {'test %':>7s} {'s/request':>10s} {'grad evals':>11s} {'vs SISA':>8s}")
    sisa = SISA(args.shards, 1, make_network, args.epochs, seed=args.seed).fit(X, y)
    t_sisa, reps = median_request_seconds(sisa, victims)
    g_sisa = statistics.median(r.samples for r in reps)
    print(f"{f'SISA s={args.shards}':24s} {sisa.fit_seconds_:7.2f} {sisa.score(X_test, y_test):7.2f} "
          f"{t_sisa:10.4f} {g_sisa:11.0f} {'100%':>8s}")
    for n in args.adapters:
        net = legonet.LegoNet(None, n, args.k, 0.05, epochs=args.epochs, n_classes=10, seed=args.seed).fit(E, y)
        t, reps = median_request_seconds(net, victims)
        g = statistics.median(r.samples for r in reps)          # epochs x rows, as for SISA
        print(f"{f'LegoNet n={n}, k={args.k}':24s} {net.fit_seconds_:7.2f} {net.score(E_test, y_test):7.2f} "
              f"{t:10.4f} {g:11.0f} {100 * t / t_sisa:7.1f}%")

    n = args.adapters[0]
    print(f"\nbatching the adapters (n={n}, k={args.k}): G adapters share one batched SGD step")
    print(f"{'G':>4s} {'fit s':>7s} {'s/request':>10s}")
    for G in args.chunks:
        net = legonet.LegoNet(None, n, args.k, 0.05, epochs=args.epochs, n_classes=10, chunk_size=G,
                              seed=args.seed).fit(E, y)
        t, _ = median_request_seconds(net, victims)
        print(f"{G:4d} {net.fit_seconds_:7.2f} {t:10.4f}")


if __name__ == "__main__":
    main()
