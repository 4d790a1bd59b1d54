import numpy as np
import pytest
import torch

from course_lib import grading, metrics, plots


@pytest.fixture
def df():
    rows = {"Retrain": {"UA": 10.0, "MIA-Efficacy": 20.0, "RA": 90.0, "TA": 80.0},
            "FT": {"UA": 12.0, "MIA-Efficacy": 14.0, "RA": 91.0, "TA": 79.0},
            "GA": {"UA": 30.0, "MIA-Efficacy": 60.0, "RA": 50.0, "TA": 40.0}}
    return metrics.table(rows)


def test_gap_bars_have_the_gap_heights(df):
    """Each bar's height is the method's gap to Retrain."""
    fig = plots.gap_to_retrain(df)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    expected = sorted([2.0, -6.0, 1.0, -1.0, 20.0, 40.0, -40.0, -40.0])
    assert heights == expected
    with pytest.raises(ValueError, match="reference row"):
        plots.gap_to_retrain(df, reference="Oracle")
    with pytest.raises(ValueError, match="no method"):
        plots.gap_to_retrain(df.loc[["Retrain"]])


def test_metric_bars(df):
    """One bar per method; unknown metrics are refused."""
    fig = plots.metric_bars(df, "UA")
    assert [p.get_width() for p in fig.axes[0].patches] == [10.0, 12.0, 30.0]
    with pytest.raises(ValueError, match="unknown metric"):
        plots.metric_bars(df, "F1")


def test_loss_histograms(digits, trained):
    """One panel per model, two histograms (forget, test) on each."""
    fig = plots.loss_histograms({"a": trained, "b": trained}, (digits.X_train[:50], digits.y_train[:50]),
                                (digits.X_test, digits.y_test))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        bars = ax.patches
        assert len(bars) == 2 * 10 * 3, "30 bins for the test set and 30 for the forget set"
        for part in (bars[:30], bars[30:]):          # each is a density: the areas add up to 1
            assert sum(b.get_width() * b.get_height() for b in part) == pytest.approx(1.0, rel=1e-6)
    loss = plots.per_example_loss(trained, digits.X_test[:5], digits.y_test[:5])
    assert loss.shape == (5,) and (loss >= 0).all()
    by_hand = torch.nn.functional.cross_entropy(trained(digits.X_test[:5]), digits.y_test[:5], reduction="none")
    assert torch.allclose(torch.as_tensor(loss).float(), by_hand.detach().float(), atol=1e-5)


def test_assert_close_messages():
    """Students see where and by how much they are off."""
    grading.assert_close([1.0, 2.0], np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match="at index \\(1,\\) you give 2.5, expected 2 "):
        grading.assert_close([1.0, 2.5], [1.0, 2.0], hint="check the sign")
    with pytest.raises(AssertionError, match="shape \\(3,\\)"):
        grading.assert_close([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(AssertionError, match="NaN"):
        grading.assert_close([float("nan")], [1.0])
    grading.assert_shape(torch.zeros(2, 3), (2, 3))
    with pytest.raises(AssertionError, match="should have shape \\(3, 2\\)"):
        grading.assert_shape(torch.zeros(2, 3), (3, 2))


def test_assert_raises_messages():
    """Test cells' assert_raises: passes on the expected exception, says what happened otherwise."""
    grading.assert_raises(ValueError, int, "not a number")
    with pytest.raises(AssertionError, match="expected ValueError, but nothing was raised"):
        grading.assert_raises(ValueError, int, "3")
    with pytest.raises(AssertionError, match="expected KeyError, but ValueError was raised"):
        grading.assert_raises(KeyError, int, "x")
