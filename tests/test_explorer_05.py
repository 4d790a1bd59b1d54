"""Lecture 05's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def test_05_explorer_draws_the_chosen_metric_with_error_bars():
    """explore draws one bar per method (Original dropped) at the stored mean of the chosen metric."""
    class Res:
        mean = pd.DataFrame({"UA": [0.0, 50.0, 40.0], "TA": [90.0, 88.0, 85.0]}, index=["Original", "Retrain", "SalUn"])
        std = pd.DataFrame({"UA": [0.0, 1.0, 2.0], "TA": [0.5, 0.5, 0.5]}, index=["Original", "Retrain", "SalUn"])
    ns = explorer_namespace("05_salun.ipynb", RESULTS={"random": Res}, SEEDS=[0, 1, 2])
    fig = ns["explore"]("random", "UA")
    bars = [p.get_width() for p in fig.axes[0].patches]
    assert bars == [50.0, 40.0]
    assert "3 seeds" in fig.axes[0].get_title()
