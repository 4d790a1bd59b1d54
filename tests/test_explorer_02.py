"""Lecture 02's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def test_02_explorer_reads_the_sweep_and_computes_the_slicing_cost():
    """explore_sisa returns E (N/S) (2R+1)/(3R) samples and the accuracy measured for that (S, R), if any."""
    sweep = pd.DataFrame({"vote": [95.0, 93.0, 90.0]}, index=pd.Index([1, 2, 5], name="S"))
    acc_sl = pd.DataFrame([[80.0, 81.0, 82.0], [88.0, 87.0, 86.0]], index=[4, 12], columns=[1, 3, 7])
    ns = explorer_namespace("02_sisa.ipynb", sweep=sweep, acc_sl=acc_sl, EPOCHS=12, N=1000, S_SL=5)
    out = ns["explore_sisa"](S=5, R=3)
    assert out["samples"] == pytest.approx(12 * 200 * 7 / 9)
    assert out["accuracy"] == 87.0
    assert ns["explore_sisa"](S=2, R=1) == {"samples": pytest.approx(12 * 500), "accuracy": 93.0}
    assert ns["explore_sisa"](S=2, R=7)["accuracy"] is None
