"""Lecture 01b's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def test_01b_explorer_matches_a_direct_audit_of_the_same_scores():
    """explore_audit's ε means and caps equal the audit functions on the same seeded Gaussian scores."""
    from course_lib import audit, config

    ns = explorer_namespace("01b_verification.ipynb", audit=audit, config=config, SEED=3, DELTA=1e-5)
    out = ns["explore_audit"](shift=3.0, n_models=64)
    g = np.random.default_rng(config.derive_seed(3, 7, 64))
    a, b = g.normal(size=(64, 200)), g.normal(size=(64, 200)) + 3.0
    bound = audit.epsilon_per_example(a, b, 1e-5, confidence=0.95)
    assert out["bound"] == pytest.approx(bound.mean())
    assert out["plain"] == pytest.approx(audit.epsilon_per_example(a, b, 1e-5, confidence=None).mean())
    assert out["F_bound"] == pytest.approx(audit.forgetting_quality(bound, 64))
    assert out["cap_bound"] == audit.epsilon_cap(64, 1e-5, 0.95)
    assert out["cap_plain"] == pytest.approx(np.log((1 - 1e-5) * 64))
    zero = ns["explore_audit"](shift=0.0, n_models=64)
    assert zero["bound"] < 0.2 < out["bound"]
    assert zero["plain"] > 0.5            # the plain estimate's bias at zero shift (section 2)


def test_01b_explorer_offers_this_runs_population_size_as_default():
    from course_lib import audit, config

    ns = explorer_namespace("01b_verification.ipynb", audit=audit, config=config, SEED=0, DELTA=1e-5, N_MODELS=16)
    view, defaults, controls = explorer_call("01b_verification.ipynb", ns)
    assert view is ns["explore_audit"]
    assert 16 in controls["n_models"] and defaults == {"n_models": 16}
    assert controls["shift"][0] == 0.0
