import pytest
import torch

from course_lib import models
from conftest import params_equal


@pytest.mark.parametrize("arch,shape", [("small_cnn", (1, 8, 8)), ("small_cnn", (3, 32, 32)),
                                        ("mlp", (1, 8, 8)), ("resnet18", (3, 32, 32))])
def test_shapes_and_features(arch, shape):
    """Logits are [N, C]; features are [N, feature_dim]; forward = head(features)."""
    m = models.make_model(arch, 7, shape).eval()
    x = torch.randn(2, *shape)
    f = m.features(x)
    assert f.shape == (2, m.feature_dim)
    out = m(x)
    assert out.shape == (2, 7)
    assert torch.allclose(out, m.head(f))


def test_resnet18_is_the_cifar_variant():
    """3x3 stride-1 stem, no max-pool, about 11.2 M parameters for 10 classes."""
    m = models.ResNet18(10)
    stem = m.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert 11_100_000 < models.count_parameters(m) < 11_250_000


def test_seeded_is_reproducible_and_leaves_global_stream():
    """Same seed, same weights; the global random stream is not consumed."""
    make = lambda: models.SmallCNN(10)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = models.seeded(make, 5), models.seeded(make, 5)
    assert torch.equal(torch.rand(1), before)
    assert params_equal(a, b)
    assert not params_equal(a, models.seeded(make, 6))


def test_bad_arguments():
    """Unknown architectures and empty MLPs are refused with the known names."""
    with pytest.raises(ValueError, match="small_cnn"):
        models.make_model("vgg", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="hidden"):
        models.MLP(10, 2, hidden=())


def test_count_parameters_trainable_only():
    """Frozen parameters are left out when asked."""
    m = models.MLP(4, 2, hidden=(3,))  # 4*3+3 + 3*2+2 = 23
    assert models.count_parameters(m) == 23
    for p in m.body.parameters():
        p.requires_grad_(False)
    assert models.count_parameters(m, trainable_only=True) == 8


def test_reset_parameters_draws_fresh_weights_under_a_seed_and_leaves_the_model_alone():
    """reset_parameters: a copy with new weights, the same for the same seed; the model itself unchanged."""
    m = models.seeded(lambda: models.SmallCNN(10, width=4, feature_dim=8), 0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    a, b = models.reset_parameters(m, 3), models.reset_parameters(m, 3)
    assert a is not m and params_equal(a, b)
    assert not params_equal(a, m) and not params_equal(a, models.reset_parameters(m, 4))
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())


def test_n_outputs_counts_classes_without_touching_batch_norm_or_the_mode():
    """n_outputs runs one example in eval mode: running statistics and the training flag are kept."""
    m = models.ResNet18(7).train()
    stats = m.stem[1].running_mean.clone()
    assert models.n_outputs(m, torch.randn(3, 3, 32, 32)) == 7
    assert m.training and torch.equal(m.stem[1].running_mean, stats)
