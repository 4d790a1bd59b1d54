"""Lecture 01's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def _explore(n=8, seed=0):
    """Hand-made scores of section 1: 3 forget examples, n models per population. Example 0: the original
    lies far above Retrain A; example 1: Retrain B is Retrain A itself; example 2: random overlapping scores."""
    g = np.random.default_rng(seed)
    ref = g.normal(size=(n, 3))
    orig = ref.copy()
    orig[:, 0] += 100.0
    orig[:, 2] = g.normal(size=n) + 0.7
    scores = {"Retrain A": ref, "Original": orig, "Retrain B": ref.copy(), "Order only": g.normal(size=(n, 3))}
    return {"scores": scores, "order": np.array([0, 2, 1]), "ids": np.array([40, 41, 42])}


def test_01_explorer_a_separated_example_proves_log_n_minus_one_and_identical_populations_prove_nothing():
    ns = explorer_namespace("01_definitions.ipynb", EXPLORE=_explore(8))
    view = ns["explore_ratio"]
    out = view(rank=0, population="Original", quantile=0.5)     # rank 0 is example 0 (order[0])
    assert out["example"] == 40
    assert out["share"] == 1.0 and out["share_retrain"] == 0.0
    # both shares clamped to [1/8, 7/8]: the set and its complement each prove log(7)
    assert out["eps_set"] == pytest.approx(np.log(7))
    for q in (0.1, 0.5, 0.9):   # Retrain B equal to Retrain A: same shares at every threshold, nothing proved
        same = view(rank=2, population="Retrain B", quantile=q)   # order[2] = example 1
        assert same["example"] == 41 and same["share"] == same["share_retrain"] and same["eps_set"] == 0.0


def test_01_explorer_matches_a_direct_count_on_overlapping_scores():
    ex = _explore(16, seed=3)
    ns = explorer_namespace("01_definitions.ipynb", EXPLORE=ex)
    for q in (0.2, 0.5, 0.8):
        out = ns["explore_ratio"](rank=1, population="Original", quantile=q)   # order[1] = example 2
        a, ref = ex["scores"]["Original"][:, 2], ex["scores"]["Retrain A"][:, 2]
        t = np.quantile(np.r_[a, ref], q)
        pa, pr = np.mean(a > t), np.mean(ref > t)
        c = lambda p: min(max(p, 1 / 16), 1 - 1 / 16)
        want = max(abs(np.log(c(pa) / c(pr))), abs(np.log(c(1 - pa) / c(1 - pr))))
        assert out["t"] == pytest.approx(t) and out["share"] == pa and out["share_retrain"] == pr
        assert out["eps_set"] == pytest.approx(want)
        assert out["eps_set"] <= np.log(15) + 1e-12       # the clamp caps what one set can prove with 16 models


def test_01_explorer_controls_cover_every_forget_example_and_population():
    ex = _explore(8)
    ns = explorer_namespace("01_definitions.ipynb", EXPLORE=ex)
    view, defaults, controls = explorer_call("01_definitions.ipynb", ns)
    assert view is ns["explore_ratio"]
    assert controls["rank"][:2] == (0, len(ex["order"]) - 1)
    assert set(controls["population"]) == {"Original", "Retrain B", "Order only"}
    assert defaults["population"] == "Original" and defaults["rank"] == 0
