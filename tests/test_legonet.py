"""LegoNet: keys, k-nearest activation, per-adapter training sets, and bit-exact unlearning."""
import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import config, data, models
from course_lib.exact import legonet

N_ADAPTERS, K = 30, 3
SMALL = dict(epochs=3, seed=0)


@pytest.fixture(scope="module")
def split(digits):
    private, Xp, yp = data.holdout(digits, 300, seed=0)
    return private, Xp, yp


@pytest.fixture(scope="module")
def encoder(split):
    _, Xp, yp = split
    return legonet.pretrain_encoder(Xp, yp, 10, epochs=20, lr=0.1, seed=0, width=16, feature_dim=32)


@pytest.fixture(scope="module")
def fitted(split, encoder):
    private = split[0]
    return legonet.LegoNet(encoder, N_ADAPTERS, K, 0.05, **SMALL).fit(private.X_train, private.y_train)


def _equal_params(a: legonet.LegoNet, b: legonet.LegoNet) -> bool:
    return a.params_.keys() == b.params_.keys() and all(torch.equal(a.params_[n], b.params_[n]) for n in a.params_)


def _refit_equal(net, X, y, forget, X_test, **kw):
    """Unlearn ``forget`` from ``net`` (fitted with ``**kw``), refit from scratch on the rest with
    the old keys, and compare."""
    before = {n: p.clone() for n, p in net.params_.items()}
    report = net.unlearn(forget)
    keep = data.retain_indices(len(y), torch.as_tensor(forget))
    fresh = legonet.LegoNet(net.encoder, net.n_adapters, net.k, net.key_noise, net.make_adapter,
                            **kw).fit(X[keep], y[keep], ids=keep, keys=net.keys_)
    assert _equal_params(net, fresh), "unlearned adapters differ from a refit on the retained rows"
    assert torch.equal(net.predict_proba(X_test), fresh.predict_proba(X_test))
    assert [m.tolist() for m in net.members_] == [m.tolist() for m in fresh.members_]
    changed = {j for n in before for j in range(net.n_adapters) if not torch.equal(before[n][j], net.params_[n][j])}
    # the adapters the forget rows activate, by brute force over all distances
    E_f = legonet.encode(net.encoder, X[torch.as_tensor(forget)]).double()
    d2 = ((E_f[:, None, :] - net.keys_.double()[None]) ** 2).sum(-1)
    expected = set(torch.sort(d2, dim=1, stable=True).indices[:, :net.k].flatten().tolist())
    assert report.adapters == sorted(expected), "the report names other adapters than D_f activates"
    assert changed <= expected, "an adapter not activated by the forget set moved"
    return report, changed


@pytest.mark.parametrize("kind", ["one row", "random 5%", "whole class"])
def test_unlearn_is_bitwise_a_refit(split, encoder, kind):
    """After unlearn(D_f): every parameter and every prediction equals a refit on D \\ D_f with the
    same keys; only the adapters D_f activated changed."""
    private = split[0]
    X, y = private.X_train, private.y_train
    forget = {"one row": torch.tensor([7]), "random 5%": data.forget_random(y, 0.05, seed=3),
              "whole class": data.forget_class(y, 4)}[kind]
    net = legonet.LegoNet(encoder, N_ADAPTERS, K, 0.05, n_classes=10, **SMALL).fit(X, y)
    report, changed = _refit_equal(net, X, y, forget, private.X_test, n_classes=10, **SMALL)
    assert report.samples == net.epochs * int(sum(net.sizes_[j] for j in report.adapters))
    assert report.seconds > 0 and report.steps > 0
    if kind == "one row":
        assert len(report.adapters) == K and changed == set(report.adapters)


def test_sequential_requests_and_custom_adapter(split, encoder):
    """Two requests in a row, with an MLP adapter trained through torch.func: still a refit."""
    private = split[0]
    X, y = private.X_train, private.y_train
    mlp = lambda d, c: nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, c))
    net = legonet.LegoNet(encoder, 12, 2, 0.05, mlp, epochs=2, seed=1).fit(X, y)
    net.unlearn([3, 50])
    net.unlearn(torch.tensor([600]))
    keep = data.retain_indices(len(y), torch.tensor([3, 50, 600]))
    fresh = legonet.LegoNet(encoder, 12, 2, 0.05, mlp, epochs=2, seed=1).fit(X[keep], y[keep], ids=keep,
                                                                           keys=net.keys_)
    assert _equal_params(net, fresh)
    assert torch.equal(net.predict(private.X_test), fresh.predict(private.X_test))


def test_exact_with_odd_shapes_where_slot_position_matters():
    """d=37, 3 classes, chunk of 5: batched matmuls on the CPU can depend on a slot's position;
    adapters keep their slot (j % G), so a retrain in a different chunk is still exact."""
    g = torch.Generator().manual_seed(0)
    E = torch.randn(400, 37, generator=g)
    y = (E[:, 0] > 0).long() + (E[:, 1] > 0.5).long()
    net = legonet.LegoNet(None, 23, 4, 0.1, epochs=3, chunk_size=5, batch_size=7, seed=2).fit(E, y)
    _refit_equal(net, E, y, torch.tensor([0, 5, 77, 300]), E[:50], epochs=3, chunk_size=5, batch_size=7, seed=2)


def test_fit_ignores_row_order(split, encoder):
    """Only the (id, row) pairs matter: shuffled rows with their ids give the same model."""
    private = split[0]
    X, y = private.X_train[:400], private.y_train[:400]
    a = legonet.LegoNet(encoder, 20, 2, 0.05, **SMALL).fit(X, y)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(5))
    b = legonet.LegoNet(encoder, 20, 2, 0.05, **SMALL).fit(X[perm], y[perm], ids=perm)
    assert torch.equal(a.keys_, b.keys_) and _equal_params(a, b)
    c = legonet.LegoNet(encoder, 20, 2, 0.05, epochs=3, seed=1).fit(X, y)
    assert not torch.equal(a.keys_, c.keys_), "another seed must sample other keys"


def test_activation_matches_brute_force(fitted, split, encoder):
    """activate() = the k smallest L2 distances to the keys, nearest first; D_aj is exactly the
    set of training rows that activate adapter j."""
    private = split[0]
    E = legonet.encode(encoder, private.X_test).double().numpy()
    K_ = fitted.keys_.double().numpy()
    d2 = ((E[:, None, :] - K_[None]) ** 2).sum(-1)
    expected = np.argsort(d2, axis=1, kind="stable")[:, :K]
    assert np.array_equal(fitted.activate(private.X_test).numpy(), expected)
    act = fitted.activate(private.X_train)
    for j in range(N_ADAPTERS):
        rows = torch.nonzero((act == j).any(1)).flatten()
        assert fitted.members_[j].tolist() == rows.tolist()
    assert int(fitted.sizes_.sum()) == K * len(private.y_train)
    # hand-made case with a tie: equal distances go to the lower index
    keys = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    got = legonet.nearest_keys(torch.tensor([[1.0, 0.0], [0.9, 0.0]]), keys, 3)
    assert got.tolist() == [[2, 0, 1], [2, 0, 1]]


def test_keys_are_noisy_training_encodings(split, encoder):
    """key_noise=0: each key is the encoding of the training row in key_rows_; key_noise>0: a
    perturbation of about key_noise times the spread of the encodings; given keys are used as is."""
    private = split[0]
    X, y = private.X_train, private.y_train
    E = legonet.encode(encoder, X)
    exact = legonet.LegoNet(encoder, 25, 2, 0.0, **SMALL).fit(X, y)
    assert exact.keys_.shape == (25, E.shape[1]) and len(set(exact.key_rows_.tolist())) == 25
    assert torch.equal(exact.keys_, E[exact.key_rows_])
    noisy = legonet.LegoNet(encoder, 25, 2, 0.2, **SMALL).fit(X, y)
    assert torch.equal(noisy.key_rows_, exact.key_rows_)
    spread = E.double().var(0, unbiased=False).mean().sqrt()
    ratio = (noisy.keys_ - exact.keys_).double().std() / spread
    assert 0.15 < ratio < 0.25, ratio
    given = torch.randn(25, E.shape[1])
    net = legonet.LegoNet(encoder, 25, 2, 0.2, **SMALL).fit(X, y, keys=given)
    assert torch.equal(net.keys_, given) and net.key_rows_ is None


def test_prediction_is_mean_of_activated_adapters(fitted, split):
    """predict_proba = mean over the k activated adapters of their softmax outputs (Eq. 2)."""
    X = split[0].X_test[:40]
    E = legonet.encode(fitted.encoder, X)
    act = fitted.activate(X)
    adapters = [fitted.adapter(j) for j in range(N_ADAPTERS)]
    by_hand = torch.stack([torch.stack([torch.softmax(adapters[j](E[i:i + 1])[0], 0) for j in act[i]]).mean(0)
                           for i in range(len(X))])
    proba = fitted.predict_proba(X)
    assert torch.allclose(proba, by_hand, atol=1e-6)
    assert torch.allclose(proba.sum(1), torch.ones(len(X)), atol=1e-6)
    assert torch.equal(fitted.predict(X), proba.argmax(1))


def test_adapter_sees_only_its_own_rows(split, encoder):
    """Relabelling rows outside D_aj leaves adapter j bit-identical; relabelling one inside moves it."""
    private = split[0]
    X, y = private.X_train[:300], private.y_train[:300].clone()
    a = legonet.LegoNet(encoder, 15, 2, 0.05, **SMALL).fit(X, y)
    j = 0
    outside = torch.ones(300, dtype=torch.bool)
    outside[a.members_[j]] = False
    y2 = y.clone()
    y2[outside] = (y2[outside] + 1) % 10
    b = legonet.LegoNet(encoder, 15, 2, 0.05, **SMALL).fit(X, y2, keys=a.keys_)
    assert all(torch.equal(a.params_[n][j], b.params_[n][j]) for n in a.params_)
    y3 = y.clone()
    y3[a.members_[j][0]] = (y3[a.members_[j][0]] + 1) % 10
    c = legonet.LegoNet(encoder, 15, 2, 0.05, **SMALL).fit(X, y3, keys=a.keys_)
    assert not torch.equal(a.params_["weight"][j], c.params_["weight"][j])


def test_idle_adapter_keeps_its_init_despite_momentum_and_decay(split, encoder):
    """An adapter whose key is far from all data has no rows and no steps: with momentum and
    weight decay it still equals its initialisation from derive_seed(seed, j, 0)."""
    private = split[0]
    X, y = private.X_train[:200], private.y_train[:200]
    E = legonet.encode(encoder, X)
    keys = E[:6].clone()
    keys[4] += 1e4
    net = legonet.LegoNet(encoder, 6, 2, 0.0, epochs=3, seed=7, weight_decay=0.1).fit(X, y, keys=keys)
    assert net.sizes_[4] == 0 and (net.sizes_[[0, 1, 2, 3, 5]] > 0).all()
    init = models.seeded(lambda: nn.Linear(E.shape[1], 10), config.derive_seed(7, 4, 0))
    assert torch.equal(net.params_["weight"][4], init.weight) and torch.equal(net.params_["bias"][4], init.bias)


def test_linear_fast_path_matches_generic_path(split, encoder):
    """The hand-written batched gradient of the default linear adapter agrees with torch.func;
    a zero-argument factory works as well as make_adapter(d, n_classes)."""
    private = split[0]
    X, y = private.X_train[:300], private.y_train[:300]
    fast = legonet.LegoNet(encoder, 10, 2, 0.05, **SMALL).fit(X, y)
    generic = legonet.LegoNet(encoder, 10, 2, 0.05, lambda d, c: nn.Linear(d, c), **SMALL).fit(X, y)
    no_args = legonet.LegoNet(encoder, 10, 2, 0.05, lambda: nn.Linear(32, 10), **SMALL).fit(X, y)
    for n in fast.params_:
        assert torch.allclose(fast.params_[n], generic.params_[n], atol=1e-5), n
        assert torch.equal(generic.params_[n], no_args.params_[n]), n
    assert torch.allclose(fast.predict_proba(X), generic.predict_proba(X), atol=1e-5)


def test_learns_digits(fitted, split):
    """A LegoNet on a small public encoder (300 digits) classifies held-out digits well."""
    private = split[0]
    assert fitted.score(private.X_test, private.y_test) > 88


def test_report_and_key_sources(split, encoder):
    """The report names the re-trained adapters and flags removed rows that seeded a key."""
    private = split[0]
    X, y = private.X_train[:300], private.y_train[:300]
    net = legonet.LegoNet(encoder, 15, 3, 0.05, **SMALL).fit(X, y)
    src = int(net.key_rows_[0])
    report = net.unlearn([src])
    assert report.key_sources == [src] and report.ids == [src]
    assert report.adapters == sorted(report.adapters) and len(report.adapters) == 3
    assert "re-trained 3 adapter(s)" in str(report)
    assert src not in net.ids_.tolist() and len(net.ids_) == 299
    assert net.requests_ == [report] and report["seconds"] == report.seconds


def test_bad_arguments_are_refused(split, encoder):
    private = split[0]
    X, y = private.X_train[:100], private.y_train[:100]
    with pytest.raises(ValueError, match="k <= n_adapters"):
        legonet.LegoNet(encoder, 5, 6).fit(X, y)
    with pytest.raises(ValueError, match="key_noise"):
        legonet.LegoNet(encoder, 5, 2, -0.1).fit(X, y)
    with pytest.raises(ValueError, match="n_adapters"):
        legonet.LegoNet(encoder, 0, 1).fit(X, y)
    with pytest.raises(ValueError, match="at most 100 adapters"):
        legonet.LegoNet(encoder, 101, 2, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="duplicates"):
        legonet.LegoNet(encoder, 5, 2, epochs=1).fit(X, y, ids=torch.zeros(100, dtype=torch.long))
    with pytest.raises(ValueError, match="one id per row"):
        legonet.LegoNet(encoder, 5, 2, epochs=1).fit(X, y, ids=torch.arange(99))
    with pytest.raises(ValueError, match="X must be"):
        legonet.LegoNet(encoder, 5, 2, epochs=1).fit(X, y[:50])
    with pytest.raises(ValueError, match="keys must be"):
        legonet.LegoNet(encoder, 5, 2, epochs=1).fit(X, y, keys=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="buffers"):
        legonet.LegoNet(encoder, 5, 2, make_adapter=lambda d, c: nn.Sequential(nn.BatchNorm1d(d), nn.Linear(d, c)),
                        epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="no arguments"):
        legonet.LegoNet(encoder, 5, 2, make_adapter=lambda a: nn.Linear(32, 10), epochs=1).fit(X, y)
    with pytest.raises(RuntimeError, match="not fitted"):  # sisa.NotFittedError: also sklearn's
        legonet.LegoNet(encoder, 5, 2).predict(X)


def test_bad_unlearning_requests_change_nothing(split, encoder):
    """Unknown, already removed, duplicate or empty ids: a clear ValueError and no change."""
    private = split[0]
    X, y = private.X_train[:200], private.y_train[:200]
    net = legonet.LegoNet(encoder, 10, 2, 0.05, epochs=2).fit(X, y, ids=torch.arange(1000, 1200))
    net.unlearn([1003])
    snapshot = {n: p.clone() for n, p in net.params_.items()}
    members = [m.clone() for m in net.members_]
    for bad, msg in [([1003], "already unlearned"), ([5], "not in the training set"), ([1004, 1004], "duplicates"),
                     ([], "non-empty"), ([1.5], "integers")]:
        with pytest.raises(ValueError, match=msg):
            net.unlearn(bad)
        assert all(torch.equal(snapshot[n], net.params_[n]) for n in snapshot)
        assert all(torch.equal(a, b) for a, b in zip(members, net.members_))


def test_emptying_the_largest_label_needs_n_classes():
    """Without n_classes, removing every row of the largest label would shrink a refit's output
    layer, so no unlearning could equal it: a clear ValueError, nothing changed; with n_classes
    the request is served exactly."""
    g = torch.Generator().manual_seed(0)
    E = torch.randn(120, 6, generator=g)
    y = torch.arange(4).repeat(30)
    top = torch.nonzero(y == 3).flatten()
    net = legonet.LegoNet(None, 8, 2, 0.1, epochs=2).fit(E, y)
    snapshot = {n: p.clone() for n, p in net.params_.items()}
    with pytest.raises(ValueError, match="n_classes=4"):
        net.unlearn(top)
    assert all(torch.equal(snapshot[n], net.params_[n]) for n in snapshot) and net.ids_.numel() == 120
    with pytest.raises(ValueError, match="every remaining row"):
        net.unlearn(torch.arange(120))
    net = legonet.LegoNet(None, 8, 2, 0.1, epochs=2, n_classes=4).fit(E, y)
    _refit_equal(net, E, y, top, E[:10], epochs=2, n_classes=4)
    assert net.predict_proba(E[:5]).shape == (5, 4)


def test_encode_does_not_depend_on_batch_mates(split, encoder):
    """A row's encoding is bit-identical whatever rows are encoded with it (the refit needs it)."""
    X = split[0].X_train
    keep = data.retain_indices(len(X), torch.tensor([5, 300, 301]))
    assert torch.equal(legonet.encode(encoder, X)[keep], legonet.encode(encoder, X[keep]))
    E = torch.randn(4, 3)
    assert torch.equal(legonet.encode(None, E), E)
    with pytest.raises(ValueError, match="already be encodings"):
        legonet.encode(None, X)


def test_frozen_encoder(encoder):
    """Pre-trained encoder: no trainable parameters, stays in eval mode, maps to feature_dim."""
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.module.training
    assert encoder(torch.zeros(2, 1, 8, 8)).shape == (2, encoder.feature_dim) == (2, 32)
    assert len(encoder.pretrain_log.losses) == 20


def test_imagenet_encoder_offline_message(monkeypatch):
    """Without the weights (offline, nothing cached) the error says how to get them and what to
    use instead."""
    torchvision = pytest.importorskip("torchvision")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(legonet.EncoderUnavailableError, match="resnet34") as info:
        legonet.imagenet_encoder("resnet34")
    msg = str(info.value)
    assert "hub" in msg and "pretrain_encoder" in msg and "URLError" in msg
    with pytest.raises(ValueError, match="ResNet"):
        legonet.imagenet_encoder("vit_b_16")


def test_imagenet_encoder_wraps_a_resnet(monkeypatch):
    """With weights available (simulated by random ones) the fc layer is removed and frozen."""
    torchvision = pytest.importorskip("torchvision")
    real = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model", lambda arch, weights=None: real(arch, weights=None))
    enc = legonet.imagenet_encoder("resnet18", input_size=32)
    assert enc.feature_dim == 512 and enc(torch.zeros(2, 3, 16, 16)).shape == (2, 512)
    assert not any(p.requires_grad for p in enc.parameters())


def test_imagenet_network_is_the_same_body_with_a_fresh_trainable_head(monkeypatch):
    """The baselines' network: the ImageNet body (same weights as the encoder), a new C-way head."""
    torchvision = pytest.importorskip("torchvision")
    real = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model",
                        lambda arch, weights=None: models.seeded(lambda: real(arch, weights=None), 0))
    net = models.seeded(lambda: legonet.imagenet_network(7, "resnet18", input_size=32), 1)
    enc = legonet.imagenet_encoder("resnet18", input_size=32)
    body = {k: v for k, v in net[1].state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, enc.module[1].state_dict()[k]) for k, v in body.items())
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 7)
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="n_classes"):
        legonet.imagenet_network(1, "resnet18")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(legonet.EncoderUnavailableError, match="hub"):
        legonet.imagenet_network(10)


def test_cost_counts(fitted, encoder):
    """Parameters and FLOPs: encoder once + n distances + k linear adapters (2dC + C each)."""
    d, C, n, k = 32, 10, N_ADAPTERS, K
    c = fitted.cost((1, 8, 8))
    assert c["adapter_params"] == d * C + C
    assert c["encoder_params"] == sum(p.numel() for p in encoder.parameters())
    assert c["total_params"] == c["encoder_params"] + n * (d * C + C + d)
    assert c["encoder_flops"] == legonet.count_flops(encoder, (1, 8, 8)) > 0
    assert c["total_flops"] == c["encoder_flops"] + 3 * d * n + k * (2 * d * C + C)
