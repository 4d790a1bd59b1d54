"""Lecture 07's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
precomputed results, executed on small hand-made results (nothing here trains the lecture's models)."""
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from explorer_util import explorer_call, explorer_namespace  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _quiet_figures():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # plt.show() on the Agg backend warns that it cannot show
        yield
    plt.close("all")


def test_07_explorer_draws_every_strategy_of_the_chosen_forget_set():
    """sweep_view draws one series per strategy of the chosen forget set at the opened share (in %),
    and Retrain's value as a line."""
    sweep = pd.DataFrame([dict(forget_set=fs, strategy=s, opened=o, **{"forget acc": 50.0 + o})
                          for fs in ("IID", "non-IID") for s in ("del", "salloc") for o in (0.01, 0.1)])
    ns = explorer_namespace("07_del.ipynb", sweep=sweep, COLORS={"del": "red", "salloc": "blue"},
                            ref={"IID": {"forget acc": 40.0}, "non-IID": {"forget acc": 30.0}})
    fig = ns["sweep_view"]("IID", "forget acc")
    series = {ln.get_label(): ln for ln in fig.axes[0].lines}
    assert list(series["del"].get_xdata()) == pytest.approx([1.0, 10.0])
    assert series["Retrain"].get_ydata()[0] == 40.0
