"""Training throughput: the fast path of ``train.fit`` against the plain loop and a plain
DataLoader loop, at the same batch size.

    python benchmarks/bench_train.py                      # FAST on a CPU (about a minute), full on a GPU
    python benchmarks/bench_train.py --full --compile     # full settings, fast path with torch.compile
    python benchmarks/bench_train.py --resnet-batch 256 --repeats 5

Workloads: ResNet-18 (``models.make_model("resnet18", 10, (3, 32, 32))``) on CIFAR-10 (the real
training set when it is already in ``data/``, otherwise synthetic tensors of the same shape,
50,000 rows), with random crop + flip; SmallCNN and MLP on digits (1,347 training rows), no
augmentation. Paths, timed on the same rows and batch size, one after the other in each of
``--repeats`` rounds, after one untimed warm-up call each (which also meets the last, partial batch):

* ``dataloader``: a plain PyTorch loop: ``DataLoader(TensorDataset(X, y), shuffle=True,
  num_workers=0)`` over CPU tensors, crop + flip on the CPU batch
  (:func:`course_lib.data.random_crop_flip`), ``.to(device)`` per batch, float32 and default
  memory format, ``loss.item()`` per step;
* ``plain-fit``: :func:`course_lib.train.fit` with the fast path switched off
  (``COURSE_FASTPATH=0``; on the CPU this is what ``fit`` always runs);
* ``fast-path``: :func:`course_lib.train.fit` with ``numerics=fastpath.resolve_options(...)`` (on CUDA: data on the device, crop + flip on
  the device, bf16 autocast, channels-last, fused SGD; ``--compile`` adds ``torch.compile``).

Images per second = rows x epochs / wall-clock seconds of the call (CUDA synchronised); seconds
per epoch = rows of the whole training set / images per second. Each figure is the median of
``--repeats`` calls. The target of the issue (at least 40,000 images/s for ResNet-18 at batch 512
in bf16 on one H100/H200-class GPU) is only reported as measured when this script ran with those
settings on such a GPU.
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch import nn

from course_lib import config, data, device, fastpath, models, train

GOAL_IPS = 40_000


def dataloader_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
                    augment: bool, seed: int, dev: torch.device) -> None:
    """The textbook loop: CPU tensors, a DataLoader, per-batch host-to-device copies."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch_size,
                                         shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(seed))
    aug_gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            if augment:
                xb = data.random_crop_flip(xb, aug_gen)
            xb, yb = xb.to(dev), yb.to(dev)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()


def plain_fit(model, X, y, *, epochs, batch_size, augment, seed, dev):
    old = os.environ.get("COURSE_FASTPATH")
    os.environ["COURSE_FASTPATH"] = "0"
    try:
        train.fit(model, X, y, epochs=epochs, lr=0.05, batch_size=batch_size, seed=seed,
                  augment=data.random_crop_flip if augment else None)
    finally:
        if old is None:
            del os.environ["COURSE_FASTPATH"]
        else:
            os.environ["COURSE_FASTPATH"] = old


def make_fast(compile_mode):
    def fast_fit(model, X, y, *, epochs, batch_size, augment, seed, dev):
        opts = fastpath.resolve_options(train.model_device(model), compile=compile_mode)
        train.fit(model, X, y, epochs=epochs, lr=0.05, batch_size=batch_size, seed=seed,
                  augment=data.random_crop_flip if augment else None, numerics=opts)
    return fast_fit


def measure(runners, make, data_of, *, warm_rows, rows, epochs, batch_size, augment, repeats, seed, dev):
    """Median images/s of each path over ``repeats`` rounds; every path is warmed up once (untimed:
    cuDNN autotuning, compilation, caches), then the rounds time the paths one after the other,
    so a slow spell of a shared machine hits all of them alike."""
    kw = dict(batch_size=batch_size, augment=augment, seed=seed, dev=dev)
    nets = {}
    for name, run in runners.items():
        model = models.seeded(make, seed)
        nets[name] = model.to(dev) if name == "dataloader" else device.place(model, dev)  # plain: default layout
        X, y = data_of(name)
        warm = warm_rows + rows % batch_size  # the partial last batch's shape is tuned / compiled here too
        run(nets[name], X[:warm], y[:warm], epochs=1, **kw)
    rates = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            X, y = data_of(name)
            with train.Stopwatch() as sw:
                run(nets[name], X[:rows], y[:rows], epochs=epochs, **kw)
            rates[name].append(rows * epochs / sw.seconds)
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--full", action="store_true", help="full settings (the default on a GPU)")
    ap.add_argument("--fast", action="store_true", help="FAST settings (the default on a CPU)")
    ap.add_argument("--resnet-batch", type=int, default=None, help="ResNet-18 batch (FAST 32, full 512)")
    ap.add_argument("--resnet-steps", type=int, default=None,
                    help="timed ResNet-18 steps per call (FAST 2, full one epoch of 50,000 rows)")
    ap.add_argument("--small-batch", type=int, default=64, help="batch of the small nets on digits")
    ap.add_argument("--small-epochs", type=int, default=None, help="timed epochs of the small nets (FAST 1, full 5)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per figure (FAST 1, full 3)")
    ap.add_argument("--compile", nargs="?", const="default", default=None, choices=fastpath.COMPILE_MODES,
                    help="torch.compile the fast path's model (optionally a mode)")
    ap.add_argument("--paths", nargs="+", default=["dataloader", "plain-fit", "fast-path"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dev = device.setup(args.seed, device=args.device, fast=True, verbose=False)
    full = args.full or (dev.type == "cuda" and not args.fast)
    config.set_fast(not full)
    rb = args.resnet_batch or (512 if full else 32)
    steps = args.resnet_steps or (-(-50_000 // rb) if full else 2)
    small_epochs = args.small_epochs or (5 if full else 1)
    repeats = args.repeats or 3
    resnet_repeats = args.repeats or (3 if full else 1)  # FAST: one timed call (a CPU step takes seconds)
    print(device.banner(dev, seed=args.seed, fast=not full))
    runners = {"dataloader": dataloader_loop, "plain-fit": plain_fit, "fast-path": make_fast(args.compile)}
    unknown = set(args.paths) - set(runners)
    if unknown:
        ap.error(f"unknown paths {sorted(unknown)}; choose from {list(runners)}")

    try:
        cifar = data.load("cifar10", download=False)
        Xc, yc, source = cifar.X_train, cifar.y_train, "CIFAR-10"
    except (data.DatasetUnavailableError, OSError, ValueError):
        g = torch.Generator().manual_seed(args.seed)
        n_syn = 50_000 if full else max(steps, 1) * rb  # FAST: only the rows it times
        Xc, yc, source = torch.randn(n_syn, 3, 32, 32, generator=g), torch.randint(0, 10, (n_syn,), generator=g), \
            "synthetic CIFAR-shaped"
    rows = min(steps * rb, Xc.shape[0])
    Xc, yc = Xc[:max(rows, rb)], yc[:max(rows, rb)]
    digits = data.load("digits")
    workloads = [
        ("resnet18", f"{source} 3x32x32", lambda: models.make_model("resnet18", 10, (3, 32, 32)), Xc, yc,
         dict(warm_rows=min(rows, 4 * rb) if full else rb, rows=rows, epochs=1, batch_size=rb, augment=True), 50_000),
    ] + [
        (arch, "digits 1x8x8", (lambda a=arch: models.make_model(a, 10, digits.input_shape)),
         digits.X_train, digits.y_train,
         dict(warm_rows=256, rows=digits.X_train.shape[0], epochs=small_epochs, batch_size=args.small_batch,
              augment=False), digits.X_train.shape[0])
        for arch in ("small_cnn", "mlp")
    ]
    print(f"{'model':<10} {'data':<30} {'path':<11} {'batch':>5} {'rows':>6} {'epochs':>6} "
          f"{'images/s':>10} {'s/epoch':>9} {'vs dataloader':>13}")
    results = {}
    chosen = {path: runners[path] for path in args.paths}
    for arch, what, make, X, y, kw, n_epoch in workloads:
        Xd, yd = X.to(dev), y.to(dev)  # the fit paths find the data on the device; the DataLoader reads CPU tensors
        ips = measure(chosen, make, lambda path, X=X, y=y, Xd=Xd, yd=yd: (X, y) if path == "dataloader" else (Xd, yd),
                      repeats=resnet_repeats if arch == "resnet18" else repeats, seed=args.seed, dev=dev, **kw)
        base = ips.get("dataloader")
        for path, rate in ips.items():
            results[(arch, path)] = rate
            ratio = f"{rate / base:.2f}x" if base else "-"
            print(f"{arch:<10} {what:<30} {path:<11} {kw['batch_size']:>5} {kw['rows']:>6} {kw['epochs']:>6} "
                  f"{rate:>10,.0f} {n_epoch / rate:>9.3f} {ratio:>13}", flush=True)
    got = results.get(("resnet18", "fast-path"))
    if dev.type == "cuda" and rb == 512 and got is not None and rows >= 10 * rb:
        verdict = "met" if got >= GOAL_IPS else "NOT met"
        print(f"goal (>= {GOAL_IPS:,} images/s, ResNet-18, batch 512, bf16, one GPU): {got:,.0f} images/s "
              f"measured on {torch.cuda.get_device_name()} -> {verdict}")
    else:
        print(f"goal (>= {GOAL_IPS:,} images/s, ResNet-18, batch 512, bf16, one H100/H200-class GPU): "
              f"not measured in this run (device {dev.type}, batch {rb}, {rows} timed rows)")


if __name__ == "__main__":
    main()
