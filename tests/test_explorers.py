"""Each lecture's explorer callback (the code cell tagged ``explorer``) is a plain function that only
reads precomputed results. The tests execute that cell on small hand-made results and call the
callback with non-default values; nothing here trains a model of the lecture."""
import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def explorer_namespace(notebook: str, **precomputed) -> dict:
    """Execute the notebook's cell tagged 'explorer' in a namespace holding ``precomputed``."""
    nb = json.loads((ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "explorer" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook} must have exactly one code cell tagged 'explorer'"
    ns = {"np": np, "pd": pd, "torch": torch, "plt": plt, "display": lambda *a, **k: None, **precomputed}
    exec(compile("".join(cells[0]["source"]), f"{notebook}:explorer", "exec"), ns)
    return ns


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


def test_01_explorer_matches_a_direct_audit_of_the_same_scores():
    """explore_audit's ε means and caps equal the audit functions on the same seeded Gaussian scores."""
    from course_lib import audit, config

    ns = explorer_namespace("01_definitions.ipynb", audit=audit, config=config, SEED=3, DELTA=1e-5)
    out = ns["explore_audit"](shift=3.0, n_models=64)
    g = np.random.default_rng(config.derive_seed(3, 7, 64))
    a, b = g.normal(size=(64, 200)), g.normal(size=(64, 200)) + 3.0
    assert out["bound"] == pytest.approx(audit.epsilon_per_example(a, b, 1e-5, confidence=0.95).mean())
    assert out["plain"] == pytest.approx(audit.epsilon_per_example(a, b, 1e-5, confidence=None).mean())
    assert out["cap_bound"] == audit.epsilon_cap(64, 1e-5, 0.95)
    assert out["cap_plain"] == pytest.approx(np.log((1 - 1e-5) * 64))
    assert ns["explore_audit"](shift=0.0, n_models=64)["bound"] < 0.2 < out["bound"]


def test_02_explorer_reads_the_sweep_and_computes_the_slicing_cost():
    """explore_sisa returns E (N/S) (2R+1)/(3R) samples and the accuracy measured for that (S, R), if any."""
    sweep = pd.DataFrame({"vote": [95.0, 93.0, 90.0]}, index=pd.Index([1, 2, 5], name="S"))
    acc_sl = pd.DataFrame([[80.0, 81.0, 82.0], [88.0, 87.0, 86.0]], index=[4, 12], columns=[1, 3, 7])
    ns = explorer_namespace("02_sisa.ipynb", sweep=sweep, acc_sl=acc_sl, EPOCHS=12, N=1000, S_SL=5)
    out = ns["explore_sisa"](S=5, R=3)
    assert out["samples"] == pytest.approx(12 * 200 * 7 / 9)
    assert out["accuracy"] == 87.0
    assert ns["explore_sisa"](S=2, R=1) == {"samples": pytest.approx(12 * 500), "accuracy": 93.0}
    assert ns["explore_sisa"](S=2, R=7)["accuracy"] is None


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
