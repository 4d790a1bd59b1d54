"""Boundary Shrink's bound is in [0, 1] pixel units whatever the normalisation (pixel_std)."""
import pytest
import torch
from torch import nn

from course_lib import data
from course_lib.unlearn import boundary


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))


@pytest.mark.parametrize("steps", [1, 4])
def test_the_radius_is_the_pixel_bound_over_each_channel_std(steps):
    """On standardised inputs the largest move per channel is bound / std of that channel (FGSM: exactly)."""
    X, y = torch.randn(16, 3, 4, 4), torch.arange(16) % 5
    std = (0.25, 0.5, 1.0)
    moved = (boundary.neighbour_search(_model(), X, y, 0.1, steps=steps, pixel_std=std) - X).abs().amax(dim=(0, 2, 3))
    assert moved.tolist() == pytest.approx([0.4, 0.2, 0.1], abs=1e-6)
    plain = (boundary.neighbour_search(_model(), X, y, 0.1, steps=steps) - X).abs().max()
    assert float(plain) == pytest.approx(0.1, abs=1e-6)


def test_pixel_std_of_each_data_set_and_bad_values():
    assert data.pixel_std("digits") is None
    assert data.pixel_std("cifar10") == pytest.approx((0.2470, 0.2435, 0.2616))
    with pytest.raises(ValueError, match="unknown data set"):
        data.pixel_std("mnist")
    X, y = torch.randn(4, 3, 4, 4), torch.arange(4)
    with pytest.raises(ValueError, match="one value per channel"):
        boundary.neighbour_search(_model(), X, y, 0.1, pixel_std=(0.2, 0.3))
    with pytest.raises(ValueError, match="positive"):
        boundary.neighbour_search(_model(), X, y, 0.1, pixel_std=0.0)
