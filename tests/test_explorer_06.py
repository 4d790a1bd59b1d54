"""Lecture 06's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def _paradigm():
    """Two seeds, three sparsities; seed 1 adds +2 to every value of seed 0 (so the means are +1)."""
    rows = []
    for seed in (0, 1):
        for s in (0.0, 0.5, 0.9):
            for m, v in (("Retrain", 5.0), ("FT", 1.0), ("GA", 3.0), ("Original", 0.0)):
                val = v + 10 * s + 2 * seed
                rows.append(dict(seed=seed, sparsity=s, method=m, UA=val, **{"Disparity avg": 20 - val}))
    return pd.DataFrame(rows)


def test_06_explorer_draws_the_seed_mean_beside_retrain_and_doing_nothing():
    """view averages the chosen metric over seeds per sparsity, for the method, Retrain and the original."""
    from course_lib import plots

    ns = explorer_namespace("06_sparsity.ipynb", paradigm=_paradigm(), plots=plots)
    fig = ns["view"]("UA", "FT")
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in fig.axes[0].lines}
    assert lines["FT"] == pytest.approx([2.0, 7.0, 11.0])
    assert lines["Retrain"] == pytest.approx([6.0, 11.0, 15.0])
    assert lines["Original"] == pytest.approx([1.0, 6.0, 10.0])
    assert "GA" not in lines


def test_06_explorer_marks_every_seed_of_the_method():
    """The per-seed dots are the chosen method's rows only, at the sparsities in percent."""
    from course_lib import plots

    ns = explorer_namespace("06_sparsity.ipynb", paradigm=_paradigm(), plots=plots)
    fig = ns["view"]("Disparity avg", "GA")
    dots = fig.axes[0].collections[0].get_offsets()
    assert len(dots) == 6
    assert sorted(map(tuple, np.asarray(dots).round(6))) == sorted(
        (100 * s, 20 - (3.0 + 10 * s + 2 * seed)) for seed in (0, 1) for s in (0.0, 0.5, 0.9))
    assert "2 seeds" in fig.axes[0].get_title()


def test_06_explorer_controls_offer_every_metric_and_method():
    """The controls list the disparity first (the default view) and every unlearner of the lecture."""
    from course_lib import plots

    ns = explorer_namespace("06_sparsity.ipynb", paradigm=_paradigm(), plots=plots)
    ns["METHODS"] = {"FT": "finetune", "GA": "neggrad", "FF": "fisher", "IU": "influence"}
    view, defaults, controls = explorer_call("06_sparsity.ipynb", ns)
    assert controls["metric"][0] == "Disparity avg" and "MIA-Privacy" in controls["metric"]
    assert controls["method"] == ["FT", "GA", "FF", "IU"]
