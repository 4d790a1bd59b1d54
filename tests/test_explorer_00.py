"""Lecture 00's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def test_00_explorer_shows_the_stored_row_and_model_of_the_chosen_forget_set():
    """explore_method returns the chosen method's stored metric row and draws it next to Retrain."""
    from course_lib import data, plots

    g = torch.Generator().manual_seed(0)
    ds = data.DataSplit("toy", torch.randn(30, 1, 2, 2, generator=g), torch.arange(30) % 3,
                        torch.randn(12, 1, 2, 2, generator=g), torch.arange(12) % 3, ["a", "b", "c"])
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 3))   # noqa: E731
    results = {}
    for kind, idx in {"random": torch.tensor([0, 5, 9]), "class b": torch.arange(1, 30, 3)}.items():
        trained = {m: make() for m in ("Original", "Retrain", "neggrad")}
        table = pd.DataFrame({"UA": [0.0, 50.0, 70.0 + len(idx)], "RA": [99.0, 98.0, 90.0]}, index=list(trained))
        results[kind] = (table, trained, idx)
    ns = explorer_namespace("00_unlearning_basics.ipynb", RESULTS=results, ds=ds, plots=plots)
    out = ns["explore_method"]("class b", "neggrad")
    assert out["row"]["UA"] == 70.0 + 10 and out["row"]["RA"] == 90.0
    assert [ax.get_title() for ax in out["figure"].axes] == ["neggrad", "Retrain"]
    alone = ns["explore_method"]("random", "Retrain")
    assert [ax.get_title() for ax in alone["figure"].axes] == ["Retrain"]
