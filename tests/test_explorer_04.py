"""Lecture 04's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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


def _sweep_04():
    rows = [dict(method="BS", bound=b, epochs=10, **{"forget test": 90 - 100 * b, "other test": 95.0}) for b in (0.05, 0.1, 0.2)]
    rows += [dict(method=m, bound=0.1 if m == "BS" else np.nan, epochs=e, **{"forget test": 80.0 - e, "other test": 94.0})
             for e in (1, 5, 10) for m in ("BS", "BE")]
    return pd.DataFrame(rows)


def test_04_explorer_offers_only_measured_values_and_draws_the_chosen_sweep():
    """show_setting draws the chosen knob's sweep with its measured x values; the value list holds only
    values the sweep measured; BE with the knob "bound" is refused (the live explorer never offers it)."""
    from course_lib import explorer as E

    sweep = _sweep_04()
    settings = {"bs": {"epochs": 10, "bound": 0.1}, "be": {"epochs": 10}, "sweep_epochs": [1, 5, 10]}
    ns = explorer_namespace("04_boundary.ipynb", sweep=sweep, SETTINGS=settings, FORGET_CLASS=3,
                            ds=type("DS", (), {"classes": [str(i) for i in range(10)]})(), base_other=96.0)
    fig = ns["show_setting"]("BS", "bound", 0.2)
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.05, 0.1, 0.2]
    assert fig.axes[0].lines[-1].get_xdata()[0] == 0.2            # the chosen value is marked
    assert list(fig.axes[0].lines[0].get_ydata()) == [85.0, 80.0, 70.0]   # forget-class test accuracy along the bound
    assert fig.axes[0].lines[2].get_ydata()[0] == 96.0             # the original's other-class accuracy, precomputed
    fig = ns["show_setting"]("BE", "epochs", None)
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 5, 10]
    with pytest.raises(ValueError, match="only BS has a bound"):
        ns["show_setting"]("BE", "bound", None)
    # the controls the lecture passes (the cell after the tagged one) offer only valid combinations
    from course_lib import explorer as E

    view, defaults, controls = explorer_call("04_boundary.ipynb", ns)
    assert view is ns["show_setting"]
    values, options = E.resolve(controls, defaults=defaults)
    assert values == {"method": "BS", "knob": "bound", "value": 0.1} and options["value"] == [0.05, 0.1, 0.2]
    values, options = E.resolve(controls, chosen={"method": "BE", "knob": "bound"}, defaults=defaults)
    assert values == {"method": "BE", "knob": "epochs", "value": 10} and options["knob"] == ["epochs"]
    assert options["value"] == [1, 5, 10]
    for method in options["method"]:                 # every offered combination draws
        for knob in E.resolve(controls, chosen={"method": method}, defaults=defaults)[1]["knob"]:
            ns["show_setting"](method, knob, None)


def test_04_shared_embedding_is_one_map_for_every_panel():
    """The lecture's decision-space helper (course_lib.embedding): one map fitted once, every panel in it.
    PCA keeps the test fast; UMAP takes the same path (fit once, transform the others)."""
    from course_lib import embedding

    logits = torch.randn(40, 10, generator=torch.Generator().manual_seed(0))
    rows = {"Original": embedding.decision_coordinates(logits), "Copy": embedding.decision_coordinates(logits + 3.0),
            "Other": embedding.decision_coordinates(logits.flip(1))}
    assert rows["Original"].shape == (40, 10) and rows["Original"].max() <= 0 and rows["Original"].min() >= -10
    for fit_on in ("Original", None):
        emb = embedding.shared_embedding(rows, method="pca", fit_on=fit_on)
        assert set(emb) == set(rows) and all(e.shape == (40, 2) for e in emb.values())
        # the same decision-space rows land on the same points: logits shifted by a constant are the same outputs
        np.testing.assert_allclose(emb["Copy"], emb["Original"], atol=1e-4)
        assert not np.allclose(emb["Other"], emb["Original"])
    n = torch.get_num_threads()
    embedding.shared_embedding(rows, method="pca")
    assert torch.get_num_threads() == n
    with pytest.raises(ValueError, match="fit_on"):
        embedding.shared_embedding(rows, method="pca", fit_on="Retrain")
    with pytest.raises(ValueError, match="one shape"):
        embedding.shared_embedding({"a": rows["Original"], "b": rows["Original"][:10]}, method="pca")
    hl = np.zeros(40, bool)
    hl[:5] = True
    fig = embedding.panels(emb, {k: np.zeros(40, int) for k in emb}, hl, class_names=[str(i) for i in range(10)])
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 3 and len({ax.get_xlim() for ax in axes}) == 1      # every panel on the same axes
    hl_pts = axes[0].collections[1]
    assert len(hl_pts.get_offsets()) == 5 and hl_pts.get_facecolors().shape[0] >= 1   # filled, outlined markers
