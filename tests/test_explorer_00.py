"""Lecture 00's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
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

NB = "00_unlearning_basics.ipynb"


def _results():
    """Two forget sets, each a SeedComparison over seeds 3 and 4 (as scenarios.compare returns), with
    hand-set metric rows that differ per seed and tiny untrained models."""
    from course_lib import data, scenarios, unlearn

    g = torch.Generator().manual_seed(0)
    ds = data.DataSplit("toy", torch.randn(30, 1, 2, 2, generator=g), torch.arange(30) % 3,
                        torch.randn(12, 1, 2, 2, generator=g), torch.arange(12) % 3, ["a", "b", "c"])
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 3))   # noqa: E731
    results = {}
    for kind, idx in {"random": torch.tensor([0, 5, 9]), "class": torch.arange(1, 30, 3)}.items():
        sc = scenarios.Scenario(kind, 3, True, ds, idx, "mlp", {}, {}, "toy", ds.y_train.clone())
        models = {m: make() for m in ("Original", "Retrain", "neggrad")}
        runs = {s: pd.DataFrame({"UA": [0.0, 50.0, 70.0 + len(idx) + s], "RA": [99.0, 98.0, 90.0 - s]},
                                index=pd.Index(list(models), name="method")) for s in (3, 4)}
        results[kind] = unlearn.SeedComparison.from_runs(runs, models, scenarios={3: sc, 4: sc})
    return results


def test_00_explorer_shows_the_mean_row_over_seeds_and_the_first_seeds_models():
    """explore_method returns the chosen method's mean row over the seeds (and its mean ± std strings) of
    the chosen forget set, and draws that method's first-seed model next to Retrain."""
    from course_lib import plots

    results = _results()
    ns = explorer_namespace(NB, RESULTS=results, plots=plots)
    out = ns["explore_method"]("class", "neggrad")
    assert out["row"]["UA"] == pytest.approx(70.0 + 10 + 3.5) and out["row"]["RA"] == pytest.approx(86.5)
    assert out["formatted"]["RA"] == f"86.5 ± {np.std([87.0, 86.0], ddof=1):.1f}"
    assert [ax.get_title() for ax in out["figure"].axes] == ["neggrad", "Retrain"]
    assert "class: neggrad" in out["figure"]._suptitle.get_text()
    other = ns["explore_method"]("random", "neggrad")
    assert other["row"]["UA"] == pytest.approx(70.0 + 3 + 3.5)       # each forget set reads its own results
    alone = ns["explore_method"]("random", "Retrain")
    assert [ax.get_title() for ax in alone["figure"].axes] == ["Retrain"]
    assert alone["row"]["UA"] == 50.0


def test_00_explorer_controls_offer_every_forget_set_and_every_method():
    """The cell after the explorer's offers the three forget sets and the five methods plus the two references."""
    from course_lib import plots

    ns = explorer_namespace(NB, RESULTS=_results(), plots=plots,
                            KINDS=["random", "class", "noniid"],
                            METHODS=["finetune", "neggrad", "neggrad+", "random_label", "l1_sparse"])
    view, defaults, controls = explorer_call(NB, ns)
    assert view is ns["explore_method"]
    assert controls["kind"] == ["random", "class", "noniid"]
    assert set(controls["method"]) == {"finetune", "neggrad", "neggrad+", "random_label", "l1_sparse", "Original", "Retrain"}
