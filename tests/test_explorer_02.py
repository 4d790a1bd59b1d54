"""Lecture 02's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def _results(**extra):
    """Hand-made results in the lecture's shapes: ``sweep`` (mean over seeds per S, with ``vote_se``) and
    ``acc_sl`` (seed SEED's slicing grid: budgets x R)."""
    sweep = pd.DataFrame({"vote": [95.0, 93.0, 90.0], "vote_se": [0.5, 0.6, 1.0]}, index=pd.Index([1, 2, 5], name="S"))
    acc_sl = pd.DataFrame([[80.0, 81.0, 82.0], [88.0, 87.0, 86.0]], index=[4, 12], columns=[1, 3, 7])
    return dict(sweep=sweep, acc_sl=acc_sl, EPOCHS=12, N=1000, S_SL=5, **extra)


def test_02_explorer_reads_the_sweep_and_computes_the_slicing_cost():
    """explore_sisa returns E (N/S) (2R+1)/(3R) samples and the accuracy measured for that (S, R), if any."""
    ns = explorer_namespace("02_sisa.ipynb", **_results())
    out = ns["explore_sisa"](S=5, R=3)
    assert out["samples"] == pytest.approx(12 * 200 * 7 / 9)
    assert out["accuracy"] == 87.0                     # the slicing grid at the lecture's budget E = 12
    assert ns["explore_sisa"](S=2, R=1) == {"samples": pytest.approx(12 * 500), "accuracy": 93.0}
    assert ns["explore_sisa"](S=2, R=7)["accuracy"] is None
    assert ns["explore_sisa"](S=5, R=1)["accuracy"] == 90.0   # R = 1 reads the sweep, not the grid


def test_02_explorer_uses_the_largest_budget_when_the_lecture_budget_was_not_swept():
    ns = explorer_namespace("02_sisa.ipynb", **{**_results(), "EPOCHS": 10})
    assert ns["explore_sisa"](S=5, R=7)["accuracy"] == 86.0
    assert ns["explore_sisa"](S=5, R=7)["samples"] == pytest.approx(10 * 200 * 15 / 21)


def test_02_explorer_draws_the_seed_error_bars_and_works_without_them():
    """With ``vote_se`` the left panel shows ±2 se over seeds; a sweep without it still draws."""
    ns = explorer_namespace("02_sisa.ipynb", **_results())
    ns["explore_sisa"](S=2, R=1)
    ax = plt.gcf().axes[0]
    assert any("2 se" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close("all")
    res = _results()
    res["sweep"] = res["sweep"].drop(columns="vote_se")
    ns = explorer_namespace("02_sisa.ipynb", **res)
    assert ns["explore_sisa"](S=2, R=1)["accuracy"] == 93.0


def test_02_explorer_controls_offer_the_swept_shards_and_slices():
    ns = explorer_namespace("02_sisa.ipynb", **_results(SHARDS=[1, 2, 5], R_LIST=[1, 3, 7]))
    view, defaults, controls = explorer_call("02_sisa.ipynb", ns)
    assert view is ns["explore_sisa"]
    assert controls == {"S": [1, 2, 5], "R": [1, 3, 7]}
    for S in controls["S"]:
        for R in controls["R"]:
            assert view(S=S, R=R)["samples"] > 0
