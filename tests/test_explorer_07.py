"""Lecture 07's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
precomputed results, executed on small hand-made results (nothing here trains the lecture's models)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from explorer_util import explorer_call, explorer_namespace, quiet_figures  # noqa: E402,F401 (quiet_figures: autouse)


def _sweep():
    """Two seeds, DEL and its random twin at two budgets; values chosen so means and se are easy."""
    rows = []
    for seed, shift in ((0, -1.0), (1, 1.0)):
        for strategy, base in (("del", 10.0), ("random (del)", 30.0)):
            for budget, opened in ((0.1, 0.099), (0.4, 0.4)):
                rows.append(dict(seed=seed, strategy=strategy, budget=budget, opened=opened,
                                 **{"forget acc": base + 100 * budget + shift, "gap to Retrain": base + shift}))
    return pd.DataFrame(rows)


def _ns():
    return explorer_namespace("07_del.ipynb", sweep=_sweep(), COLORS={"del": "red", "random (del)": "salmon"},
                              ref_mean={"forget acc": 5.0, "MIA score": 95.0, "test acc": 70.0})


def _series(fig):
    """label -> (x, y, yerr half-width) of each errorbar series on the figure's axes."""
    ax = fig.axes[0]
    out = {}
    for c in ax.containers:
        line = c.lines[0]
        bars = c.lines[2][0].get_segments() if c.lines[2] else []
        out[c.get_label()] = (list(line.get_xdata()), list(line.get_ydata()),
                              [abs(s[1][1] - s[0][1]) / 2 for s in bars])
    return out


def test_07_explorer_plots_the_seed_mean_and_se_at_the_opened_share():
    """sweep_view draws each strategy's mean over seeds at the *opened* share (in %), with the standard
    error of the mean as error bars, and Retrain's value as a dashed line for a metric Retrain has."""
    fig = _ns()["sweep_view"]("forget acc", True)
    s = _series(fig)
    assert set(s) == {"del", "random (del)"}
    x, y, err = s["del"]
    assert x == pytest.approx([9.9, 40.0])                   # opened share, not the nominal budget
    assert y == pytest.approx([20.0, 50.0])                  # mean of seeds (-1 and +1 around it)
    assert err == pytest.approx([1.0, 1.0])                  # sem of (-1, +1) = 1
    retrain = [ln for ln in fig.axes[0].lines if ln.get_label() == "Retrain"]
    assert len(retrain) == 1 and retrain[0].get_ydata()[0] == 5.0


def test_07_explorer_hides_random_masks_and_has_no_retrain_line_for_the_gap():
    """random_masks=False leaves the random twins out; the gap to Retrain has no Retrain line (it is 0 by
    definition) and its y label says points."""
    fig = _ns()["sweep_view"]("gap to Retrain", False)
    s = _series(fig)
    assert set(s) == {"del"}
    assert s["del"][1] == pytest.approx([10.0, 10.0])
    assert not [ln for ln in fig.axes[0].lines if ln.get_label() == "Retrain"]
    assert "points" in fig.axes[0].get_ylabel()


def test_07_explorer_controls_offer_the_gap_and_the_three_metrics():
    ns = _ns()
    ns["METRICS"] = ["forget acc", "MIA score", "test acc"]
    view, defaults, controls = explorer_call("07_del.ipynb", ns)
    assert view is ns["sweep_view"]
    assert controls["metric"] == ["gap to Retrain", "forget acc", "MIA score", "test acc"]
    assert controls["random_masks"] == [True, False]
