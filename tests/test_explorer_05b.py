"""Lecture 05b's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
precomputed results, executed on small hand-made results (nothing here trains the lecture's models)."""
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from explorer_util import explorer_call, explorer_namespace, quiet_figures  # noqa: E402,F401 (quiet_figures: autouse)

NB = "05b_salun_controls.ipynb"
KINDS = ["saliency", "random (global)", "random (per layer)"]


def _ns():
    rows = []
    for k, mk in enumerate(KINDS):
        for fr in (0.05, 0.5):
            for s, jitter in ((0, -2.0), (1, 2.0), (2, 0.0)):
                rows.append({"seed": s, "mask": mk, "fraction": fr, "UA": 10.0 * (k + 1) + 40 * fr + jitter,
                             "TA": 70.0 - k, "RA": 99.0, "MIA-Efficacy": 20.0, "Disparity avg": 3.0 + k + jitter})
    retrain = pd.DataFrame({"UA": [35.0, 37.0, 36.0], "TA": [71.0, 71.0, 71.0], "RA": [100.0] * 3,
                            "MIA-Efficacy": [40.0] * 3, "Disparity avg": [0.0] * 3}, index=pd.Index([0, 1, 2], name="seed"))
    return explorer_namespace(NB, SWEEP=pd.DataFrame(rows), RETRAIN_R=retrain, time=time, T0=0.0, CPU0=0.0)


def test_05b_explorer_draws_every_mask_at_the_seed_means_with_retrain():
    """One error-bar line per mask through the mean over seeds at each fraction; Retrain's mean UA dashed."""
    fig = _ns()["explore"]("UA", "all")
    ax = fig.axes[0]
    data = {c.get_label(): c for c in ax.containers}
    assert set(data) == set(KINDS)
    x, y = (np.asarray(a, dtype=float) for a in data["random (global)"].lines[0].get_data())
    np.testing.assert_allclose(x, [0.05, 0.5])
    np.testing.assert_allclose(y, [22.0, 40.0])
    dashed = [ln for ln in ax.get_lines() if ln.get_label() == "Retrain"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 36.0)
    assert "3 seeds" in ax.get_title()


def test_05b_explorer_disparity_has_no_retrain_line_and_one_mask_can_be_shown():
    """The disparity to Retrain has no Retrain level to draw; show= one mask draws only that mask."""
    fig = _ns()["explore"]("Disparity avg", "saliency")
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["saliency"]
    assert not [ln for ln in ax.get_lines() if ln.get_label() == "Retrain"]
    np.testing.assert_allclose(np.asarray(ax.containers[0].lines[0].get_data()[1], dtype=float), [3.0, 3.0])


def test_05b_explorer_controls_offer_every_view():
    """The controls cell offers the metrics and every mask; every combination draws."""
    ns = _ns()
    view, defaults, controls = explorer_call(NB, ns)
    assert set(controls["show"]) == {"all", *KINDS}
    assert {"Disparity avg", "UA", "TA"} <= set(controls["metric"])
    for metric in controls["metric"]:
        for show in controls["show"]:
            view(metric=metric, show=show)
            plt.close("all")
