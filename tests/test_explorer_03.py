"""Lecture 03's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
precomputed results, executed on small hand-made results (nothing here trains the lecture's models)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from explorer_util import explorer_call, explorer_namespace, quiet_figures  # noqa: E402,F401 (quiet_figures: autouse)


def test_03_explorer_reports_the_activated_adapters_and_the_retrained_rows():
    """explore_lego: a test point's k nearest keys, its nearest training row, and the rows that row's
    deletion re-trains (sum of its k adapters' sizes minus the row itself), checked by brute force."""
    from course_lib.exact.legonet import LegoNet

    g = torch.Generator().manual_seed(0)
    E, E_test = torch.randn(60, 4, generator=g), torch.randn(9, 4, generator=g)
    y, y_test = torch.arange(60) % 3, torch.arange(9) % 3
    model = LegoNet(None, 8, 3, 0.05, epochs=1, n_classes=3, seed=0).fit(E, y)
    ns = explorer_namespace("03_legonet.ipynb", zoo={("LegoNet", 8, 3): model}, E=E, E_test=E_test,
                            y_test=y_test, N=60)
    out = ns["explore_lego"](8, 3, 7)
    near = torch.cdist(E_test[7:8], model.keys_).argsort(dim=1)[0, :3]
    assert out["activated"] == sorted(near.tolist())
    row = int(((E - E_test[7]) ** 2).sum(1).argmin())
    assert out["row"] == row
    hit = torch.cdist(E[row:row + 1], model.keys_).argsort(dim=1)[0, :3]
    assert out["retrained_adapters"] == sorted(hit.tolist())
    assert out["retrained_rows"] == int(model.sizes_[hit].sum()) - 3
    assert ns["explore_lego"](16, 3, 0) is None


def test_03_explorer_offers_only_fitted_pairs_in_order():
    """03's controls: n sorted, k only the values fitted with the chosen n, defaults N_ADAPTERS and K."""
    from course_lib import explorer as E

    zoo = {("LegoNet", 32, 3): None, ("LegoNet", 8, 1): None, ("LegoNet", 8, 3): None, ("SISA", 4, 1): None}
    ns = {"zoo": zoo, "N_ADAPTERS": 32, "K": 3, "y_test": torch.zeros(5), "explore_lego": lambda n, k, point: None}
    _, defaults, controls = explorer_call("03_legonet.ipynb", ns)
    values, options = E.resolve(controls, defaults=defaults)
    assert options["n"] == [8, 32] and values == {"n": 32, "k": 3, "point": 0}
    assert E.resolve(controls, chosen={"n": 8}, defaults=defaults)[1]["k"] == [1, 3]
