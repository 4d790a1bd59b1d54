"""Lecture 06's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def test_06_explorer_reads_the_paradigm_table():
    """view draws the chosen method's metric against sparsity next to Retrain's."""
    from course_lib import plots

    paradigm = pd.DataFrame([dict(sparsity=s, method=m, UA=v + 10 * s) for s in (0.0, 0.5, 0.9)
                             for m, v in (("Retrain", 5.0), ("FT", 1.0), ("Original", 0.0))])
    ns = explorer_namespace("06_sparsity.ipynb", paradigm=paradigm, plots=plots)
    fig = ns["view"]("UA", "FT")
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in fig.axes[0].lines}
    assert lines["FT"] == pytest.approx([1.0, 6.0, 10.0]) and lines["Retrain"] == pytest.approx([5.0, 10.0, 14.0])
