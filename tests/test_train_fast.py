"""The fast GPU path (course_lib.fastpath) checked on the CPU: its augmentation, train.fit with its
numerics against the plain numerics, its options, and that the CPU keeps the plain loop bit for bit."""
import math
import warnings

import pytest
import torch
from torch import nn

from course_lib import config, data, fastpath, models, train
from conftest import params_equal


def _small(seed=0):
    return models.seeded(lambda: models.SmallCNN(10, width=8, feature_dim=16), seed)


def _fast_fit(model, X, y, *, bf16=None, channels_last=None, compile=None, **kw):
    """train.fit with the fast path's numerics (what fastpath.fit_fast was), on the model's device."""
    opts = fastpath.resolve_options(train.model_device(model), bf16, channels_last, compile)
    return train.fit(model, X, y, numerics=opts, **kw)


class _TinyBN(nn.Module):
    """conv - BN - ReLU - pool - head: a cheap stand-in for ResNet-18's building blocks."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(24, 10)
        self.feature_dim = 24

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def _coded_images(B, H, W):
    """Images whose pixel (i, j) holds i * W + j + 1, so a crop reveals where it came from."""
    return (torch.arange(H * W, dtype=torch.float32) + 1).reshape(1, 1, H, W).repeat(B, 2, 1, 1)


def _decode(out, H, W):
    """(dy, dx, flip) of each cropped image, read from the always-inside centre pixels."""
    r, c = H // 2, W // 2
    i, j = divmod_t(out[:, 0, r, c].long() - 1, W)
    flip = out[:, 0, r, c + 1] < out[:, 0, r, c]
    dx = torch.where(flip, j - (W - 1 - c), j - c)
    return i - r, dx, flip


def divmod_t(v, d):
    return v // d, v % d


def _crop_by_hand(x, dy, dx, flip, pad):
    """One image at a time: zero-pad, slice the shifted window, optionally mirror it."""
    H, W = x.shape[-2:]
    out = []
    for b in range(x.shape[0]):
        p = torch.nn.functional.pad(x[b], (pad, pad, pad, pad))
        win = p[:, pad + dy[b]: pad + dy[b] + H, pad + dx[b]: pad + dx[b] + W]
        out.append(win.flip(-1) if flip[b] else win)
    return torch.stack(out)


def test_device_crop_flip_equals_cpu_crop_flip_for_the_same_generator_state():
    """Same generator state: the on-device version returns random_crop_flip's output bit for bit,
    also in channels-last layout."""
    x = torch.randn(37, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    for pad in (0, 2, 4):
        a = data.random_crop_flip(x, torch.Generator().manual_seed(9), pad=pad)
        b = data.random_crop_flip_device(x, torch.Generator().manual_seed(9), pad=pad)
        c = data.random_crop_flip_device(x, torch.Generator().manual_seed(9), pad=pad, channels_last=True)
        assert torch.equal(a, b) and torch.equal(a, c)
        assert b.is_contiguous() and c.is_contiguous(memory_format=torch.channels_last)


def test_device_crop_flip_is_a_shifted_mirrored_window_of_each_image():
    """Every output image equals its zero-padded input, shifted by the decoded (dy, dx) and
    mirrored when decoded as flipped, cut out by hand one image at a time."""
    H, W, pad = 9, 11, 3
    x = _coded_images(64, H, W)
    out = data.random_crop_flip_device(x, torch.Generator().manual_seed(2), pad=pad)
    dy, dx, flip = _decode(out, H, W)
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    assert torch.equal(out, _crop_by_hand(x, dy.tolist(), dx.tolist(), flip.tolist(), pad))
    assert 0 < int(flip.sum()) < 64 and len(set(dy.tolist())) > 1  # the draw did vary


def test_device_crop_flip_draws_uniform_shifts_and_fair_flips_like_the_cpu_version():
    """Over 18,000 images: each of the 9 shifts per axis has frequency 1/9 and flips 1/2 (within
    5 standard errors), the (dy, dx, flip) cells pass a generous chi-square bound, and the CPU
    random_crop_flip's frequencies agree with the device version's."""
    H = W = 12  # the centre pixels stay inside the image for every shift of up to 4
    pad, n = 4, 18_000
    x = _coded_images(n, H, W)[:, :1]
    freqs = []
    for fn in (data.random_crop_flip_device, data.random_crop_flip):
        dy, dx, flip = _decode(fn(x, torch.Generator().manual_seed(11), pad=pad), H, W)
        for shift in (dy, dx):
            counts = torch.bincount(shift + pad, minlength=2 * pad + 1).double() / n
            se = math.sqrt((1 / 9) * (8 / 9) / n)
            assert (counts - 1 / 9).abs().max() < 5 * se, counts
        assert abs(flip.double().mean() - 0.5) < 5 * math.sqrt(0.25 / n)
        cells = torch.bincount(((dy + pad) * 9 + (dx + pad)) * 2 + flip.long(), minlength=162).double()
        expected = n / 162
        chi2 = float(((cells - expected) ** 2 / expected).sum())
        assert chi2 < 161 + 6 * math.sqrt(2 * 161), chi2  # mean 161, sd ~18: a wide margin
        freqs.append(cells / n)
    assert (freqs[0] - freqs[1]).abs().max() < 0.01


def test_device_crop_flip_refuses_bad_input():
    """Non-batch input, negative pad, and a generator on another device than the batch are refused."""
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        data.random_crop_flip_device(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="pad"):
        data.random_crop_flip_device(torch.zeros(2, 3, 8, 8), pad=-1)
    with pytest.raises(ValueError, match="generator lives on cpu"):
        data.random_crop_flip_device(torch.zeros(2, 3, 8, 8, device="meta"), torch.Generator())


def _plain_fit(model, X, y, *, epochs, lr, batch_size, seed, augment=None, mask=None, schedule="cosine"):
    """The plain CPU loop as it was before the fast path (train.fit + train.sgd_steps), by hand."""
    opt = torch.optim.SGD(list(model.parameters()), lr=lr, momentum=0.9, weight_decay=5e-4)
    n, steps = X.shape[0], epochs * -(-X.shape[0] // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * s / steps)))
    ref = {k: p.detach().clone() for k, p in model.named_parameters()}
    gen, aug_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(config.derive_seed(seed, 1))
    losses = []
    model.train()
    for _ in range(epochs):
        order, running = torch.randperm(n, generator=gen), torch.zeros(())
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            xb = X[idx] if augment is None else augment(X[idx], aug_gen)
            loss = nn.CrossEntropyLoss()(model(xb).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if mask is not None:
                with torch.no_grad():
                    for k, p in model.named_parameters():
                        p.copy_(torch.where(mask[k], p, ref[k]) if k in mask else ref[k])
            running += loss.detach().float().cpu() * idx.numel()
        losses.append(float(running) / n)
    return losses


def test_cpu_fit_is_still_the_plain_loop_bit_for_bit(digits, monkeypatch):
    """On the CPU train.fit never reaches the fast path and gives the plain loop's weights and
    losses bit for bit (with crop + flip and a mask)."""
    monkeypatch.setattr(fastpath, "loss_closure", lambda *a, **k: pytest.fail("fast path taken on the CPU"))
    X, y = digits.X_train[:150], digits.y_train[:150]
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5
            for n, p in _small().named_parameters() if n != "head.bias"}
    for kw in (dict(), dict(augment=data.random_crop_flip, mask=mask, schedule="constant")):
        a, b = _small(), _small()
        log = train.fit(a, X, y, epochs=2, lr=0.05, batch_size=32, seed=4, **kw)
        losses = _plain_fit(b, X, y, epochs=2, lr=0.05, batch_size=32, seed=4, **kw)
        assert params_equal(a, b) and log.losses == losses


def test_fast_path_on_cpu_takes_the_same_steps_as_fit(digits):
    """The fast numerics in float32 on the CPU: bit-identical weights, losses and step count to train.fit,
    with crop + flip (moved onto the device generator) and a mask."""
    X, y = digits.X_train[:200], digits.y_train[:200]
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(3)) < 0.7
            for n, p in _small().named_parameters()}
    for kw in (dict(), dict(augment=data.random_crop_flip, mask=mask)):
        a, b = _small(), _small()
        la = train.fit(a, X, y, epochs=2, lr=0.05, batch_size=48, seed=7, **kw)
        lb = _fast_fit(b, X, y, epochs=2, lr=0.05, batch_size=48, seed=7, **kw)
        assert params_equal(a, b) and la.losses == lb.losses and la.steps == lb.steps == 10


def test_fast_path_channels_last_with_batch_norm_follows_fit_within_tolerance(digits):
    """With channels-last layout (another conv kernel on the CPU) and batch norm, the loss
    trajectory and the weights stay within float32 rounding of train.fit's."""
    X, y = digits.X_train[:256], digits.y_train[:256]
    a, b = models.seeded(_TinyBN, 0), models.seeded(_TinyBN, 0)
    la = train.fit(a, X, y, epochs=3, lr=0.05, batch_size=32, seed=1, augment=data.random_crop_flip)
    lb = _fast_fit(b, X, y, epochs=3, lr=0.05, batch_size=32, seed=1, augment=data.random_crop_flip,
                   channels_last=True)
    assert lb.losses[-1] < lb.losses[0]
    assert torch.allclose(torch.tensor(la.losses), torch.tensor(lb.losses), rtol=1e-4, atol=1e-5)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-3, atol=1e-4) for k in sa)
    assert b.body[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_path_refuses_bad_options(digits, monkeypatch):
    """bf16 on the CPU, unknown compile modes (argument or COURSE_COMPILE), non-bool layout flags,
    a non-callable augment and bad SGD settings are refused with a message naming the fix."""
    X, y = digits.X_train[:20], digits.y_train[:20]
    cases = [(dict(bf16=True), "bf16=False"), (dict(compile="fastest"), "reduce-overhead"),
             (dict(channels_last="yes"), "channels_last must be"), (dict(augment=3), "augment must be"),
             (dict(batch_size=0), "batch_size"), (dict(schedule="step"), "schedule")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _fast_fit(_small(), X, y, **{"epochs": 1, **kw})
    monkeypatch.setenv("COURSE_COMPILE", "bogus")
    with pytest.raises(ValueError, match="compile must be"):
        _fast_fit(_small(), X, y, epochs=1)


def test_options_default_to_bf16_channels_last_on_cuda_and_compile_from_the_environment(monkeypatch):
    """CUDA defaults to bf16 + channels-last, the CPU to neither; COURSE_COMPILE 1 / 0 / a mode."""
    assert fastpath.resolve_options(torch.device("cuda")) == fastpath.FastOptions(True, True, None)
    assert fastpath.resolve_options(torch.device("cpu")) == fastpath.FastOptions(False, False, None)
    for env, mode in (("1", "default"), ("0", None), ("max-autotune", "max-autotune")):
        monkeypatch.setenv("COURSE_COMPILE", env)
        assert fastpath.resolve_options(torch.device("cpu")).compile == mode
    assert fastpath.resolve_options(torch.device("cpu"), compile=False).compile is None


def test_dispatch_only_on_cuda_and_not_when_switched_off(monkeypatch):
    """enabled(): CUDA yes (unless COURSE_FASTPATH=0), CPU and MPS no."""
    monkeypatch.delenv("COURSE_FASTPATH", raising=False)
    assert fastpath.enabled(torch.device("cuda")) and fastpath.enabled("cuda:1")
    assert not fastpath.enabled(torch.device("cpu")) and not fastpath.enabled("mps")
    monkeypatch.setenv("COURSE_FASTPATH", "0")
    assert not fastpath.enabled(torch.device("cuda"))


def test_train_functions_hand_every_argument_to_the_fast_path_when_enabled(digits, monkeypatch):
    """With the fast path switched on, fit builds its loss with the fast numerics and hands all its
    arguments to the one loop, train.sgd_steps (with the fused optimiser and device-side batch
    indices); predict_logits / features forward all theirs to predict_fast."""
    calls = []
    monkeypatch.setattr(fastpath, "enabled", lambda dev: True)
    monkeypatch.setattr(fastpath, "loss_closure", lambda *a, **k: calls.append(("loss", a, k)) or "loss_fn")
    monkeypatch.setattr(train, "sgd_steps", lambda *a, **k: calls.append(("fit", a, k)) or "log")
    monkeypatch.setattr(fastpath, "predict_fast", lambda *a, **k: calls.append(("predict", a, k)) or "out")
    m, X, y = _small(), digits.X_train[:10], digits.y_train[:10]
    mask = {}
    assert train.fit(m, X, y, epochs=3, lr=0.1, batch_size=5, momentum=0.5, weight_decay=0.0, seed=2,
                     schedule="constant", augment=data.random_crop_flip, mask=mask, desc="d") == "log"
    assert calls[0][1] == (m, X, y, fastpath.resolve_options(torch.device("cpu")))
    assert calls[0][2] == dict(seed=2, augment=data.random_crop_flip)
    fit_kw = dict(calls[1][2])
    assert calls[1][1] == (m, 10, "loss_fn") and callable(fit_kw.pop("optimizer"))
    assert fit_kw == dict(epochs=3, lr=0.1, batch_size=5, momentum=0.5, weight_decay=0.0, seed=2,
                          schedule="constant", mask=mask, desc="d", index_device=torch.device("cpu"))
    assert train.predict_logits(m, X, batch_size=7) == "out" and train.features(m, X, batch_size=3) == "out"
    assert calls[2][1:] == ((m, X, 7), {"what": "logits"}) and calls[3][1:] == ((m, X, 3), {"what": "features"})


def test_compile_failure_falls_back_to_eager_with_a_warning(digits, monkeypatch):
    """A torch.compile that fails on its first call: a RuntimeWarning, then the eager run's exact weights."""
    def broken_compile(model, mode=None):
        def call(x):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    X, y = digits.X_train[:64], digits.y_train[:64]
    a, b = _small(), _small()
    _fast_fit(a, X, y, epochs=1, batch_size=16, seed=0)
    with pytest.warns(RuntimeWarning, match="eager mode"):
        _fast_fit(b, X, y, epochs=1, batch_size=16, seed=0, compile=True)
    assert params_equal(a, b)


def test_fast_evaluation_on_cpu_equals_the_plain_one(digits, monkeypatch):
    """predict_fast equals predict_logits / features bit for bit (batch norm in eval mode), also
    when the inputs travel in several chunks; train mode is restored; empty input and unknown
    outputs are refused."""
    X = digits.X_test
    model = models.seeded(_TinyBN, 0)
    train.fit(model, digits.X_train[:128], digits.y_train[:128], epochs=1, batch_size=32)  # non-trivial BN statistics
    monkeypatch.setattr(fastpath, "_CHUNK_BYTES", 8 * 8 * 4 * 100)  # 100 rows per chunk
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(fastpath.predict_fast(model, X, 64), train.predict_logits(model, X, 64))
        assert torch.equal(fastpath.predict_fast(model, X, 50, what="features"), train.features(model, X, 50))
    assert model.training
    with pytest.raises(ValueError, match="empty"):
        fastpath.predict_fast(model, X[:0])
    with pytest.raises(ValueError, match="what must be"):
        fastpath.predict_fast(model, X, what="probs")
