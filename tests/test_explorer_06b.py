"""Lecture 06b's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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

NB = "06b_l1_backdoor.ipynb"


def _sweep():
    """Two schedules x two strengths; the larger strength zeroes most weights."""
    rows, mags = [], {}
    for sch in ("constant", "decaying"):
        for g, nz in ((1e-4, 5.0), (1e-2, 90.0)):
            rows.append({"schedule": sch, "gamma": g, "UA": 30.0 + nz / 10, "RA": 99.0 - nz / 3,
                         "Disparity avg": nz / 10 + (1.0 if sch == "decaying" else 0.0), "near-zero (%)": nz})
            n_small = int(nz)           # nz of 100 weights below 1e-3
            mags[(sch, g)] = np.concatenate([np.full(n_small, 1e-5), np.full(100 - n_small, 0.1)])
    return pd.DataFrame(rows), mags


def _ns():
    sweep, mags = _sweep()
    return explorer_namespace(NB, sweep=sweep, magnitudes=mags, original_magnitudes=np.full(100, 0.05),
                              NEAR_ZERO=1e-3)


def _bars(ax):
    """Per histogram (in drawing order): {bin left edge: count} of its non-empty bins."""
    out = []
    for cont in ax.containers:
        out.append({round(p.get_x(), 6): p.get_height() for p in cont.patches if p.get_height() > 0})
    return out


def test_06b_explorer_shows_the_chosen_runs_weights_against_the_original():
    """The second histogram holds the chosen (schedule, γ) run's |w|, the first the original's."""
    ns = _ns()
    fig = ns["view"]("decaying", 1e-2)
    ax = fig.axes[0]
    original, after = _bars(ax)
    assert sum(original.values()) == 100 and len(original) == 1            # all at log10(0.05)
    assert sum(after.values()) == 100 and sorted(after.values()) == [10, 90]   # 90 near zero, 10 at 0.1
    low_edge = min(after)
    assert after[low_edge] == 90 and low_edge < np.log10(1e-3)
    assert "90.0% near zero" in ax.get_title() and "disparity 10.0" in ax.get_title()


def test_06b_explorer_reads_the_row_of_the_chosen_schedule_and_gamma():
    """Another schedule or γ gives that row's numbers; the near-zero threshold is drawn."""
    ns = _ns()
    title = ns["view"]("constant", 1e-4).axes[0].get_title()
    assert "5.0% near zero" in title and "disparity 0.5" in title and "RA 97.3" in title
    ax = ns["view"]("decaying", 1e-4).axes[0]
    assert "disparity 1.5" in ax.get_title()
    assert any(np.allclose(ln.get_xdata(), np.log10(1e-3)) for ln in ax.lines)


def test_06b_explorer_controls_start_at_the_tuned_gamma():
    """The controls offer every schedule and the swept γ values; the default view is decaying at the tuned γ."""
    ns = _ns()
    ns.update(L1_SCHEDULES=("constant", "growing", "decaying"), GAMMAS=[1e-5, 1e-4, 1e-3], GAMMA=1e-4)
    view, defaults, controls = explorer_call(NB, ns)
    assert controls["schedule"] == ["constant", "growing", "decaying"]
    assert [v for _, v in controls["gamma"]] == [1e-5, 1e-4, 1e-3]
    assert defaults == {"schedule": "decaying", "gamma": 1e-4}
