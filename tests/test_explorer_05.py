"""Lecture 05's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
precomputed results, executed on small hand-made results (nothing here trains the lecture's models)."""
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from explorer_util import explorer_call, explorer_namespace, quiet_figures  # noqa: E402,F401 (quiet_figures: autouse)


def _trade():
    """Two seeds x three learning-rate factors for each method; UA grows with the factor."""
    rows = []
    for k, name in enumerate(["SalUn", "RL", "FT", "GA"]):
        for f, ua in ((1 / 3, 10.0), (1.0, 30.0), (3.0, 50.0)):
            for s, jitter in ((0, -1.0), (1, 1.0)):
                rows.append(dict(method=name, factor=f, seed=s, UA=ua + k + jitter, TA=90.0 - ua / 2 - 5 * k + jitter,
                                 RA=99.0 - k, **{"MIA-Efficacy": ua, "Disparity avg": 5.0 + k}))
    return pd.DataFrame(rows)


def _ns():
    retrain = pd.DataFrame({"UA": [30.0, 34.0], "TA": [70.0, 72.0], "RA": [100.0, 100.0],
                            "MIA-Efficacy": [40.0, 44.0], "Disparity avg": [0.0, 0.0]}, index=pd.Index([0, 1], name="seed"))
    return explorer_namespace("05_salun.ipynb", TRADE=_trade(), RETRAIN=retrain, SEEDS=[0, 1], time=time, T0=0.0, CPU0=0.0)


def test_05_explorer_draws_each_methods_sweep_at_the_seed_means():
    """One line per method through (mean UA, mean metric) per factor, ordered by UA; the star is Retrain's mean."""
    ns = _ns()
    fig = ns["explore"]("TA", "all")
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"SalUn", "RL", "FT", "GA"}
    x, y = lines["FT"].get_data()
    np.testing.assert_allclose(x, [12.0, 32.0, 52.0])           # mean UA of the two seeds, k = 2
    np.testing.assert_allclose(y, [75.0, 65.0, 55.0])           # 90 - UA/2 - 10
    star = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(star)[0], [32.0, 71.0])
    assert "2 seeds" in ax.get_title() and ax.get_ylabel() == "TA"


def test_05_explorer_shows_one_method_and_another_metric():
    """show= one method draws only its line; the metric picks the column read."""
    ns = _ns()
    fig = ns["explore"]("RA", "GA")
    lines = [ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in lines] == ["GA"]
    np.testing.assert_allclose(lines[0].get_data()[1], [96.0, 96.0, 96.0])
    assert fig.axes[0].get_ylabel() == "RA"


def test_05_explorer_controls_offer_every_view():
    """The controls cell offers the metrics of the table and every method; every combination draws."""
    ns = _ns()
    view, defaults, controls = explorer_call("05_salun.ipynb", ns)
    assert set(controls["metric"]) >= {"TA", "RA", "MIA-Efficacy"}
    assert set(controls["show"]) == {"all", "SalUn", "RL", "FT", "GA"}
    for metric in controls["metric"]:
        for show in controls["show"]:
            view(metric=metric, show=show)
            plt.close("all")
