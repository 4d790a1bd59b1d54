"""Each lecture's explorer callback (the code cell tagged ``explorer``) is a plain function that only
reads precomputed results. The tests execute that cell on small hand-made results and call the
callback with non-default values; nothing here trains a model of the lecture."""
import json
import os
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
                            ds=type("DS", (), {"classes": [str(i) for i in range(10)]})(),
                            accs=lambda m: (0.0, 0.0, 96.0), original=None)
    fig = ns["show_setting"]("BS", "bound", 0.2)
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.05, 0.1, 0.2]
    assert fig.axes[0].lines[-1].get_xdata()[0] == 0.2            # the chosen value is marked
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


def test_03_explorer_offers_only_fitted_pairs_in_order():
    """03's controls: n sorted, k only the values fitted with the chosen n, defaults N_ADAPTERS and K."""
    from course_lib import explorer as E

    zoo = {("LegoNet", 32, 3): None, ("LegoNet", 8, 1): None, ("LegoNet", 8, 3): None, ("SISA", 4, 1): None}
    ns = {"zoo": zoo, "N_ADAPTERS": 32, "K": 3, "y_test": torch.zeros(5), "explore_lego": lambda n, k, point: None}
    _, defaults, controls = explorer_call("03_legonet.ipynb", ns)
    values, options = E.resolve(controls, defaults=defaults)
    assert options["n"] == [8, 32] and values == {"n": 32, "k": 3, "point": 0}
    assert E.resolve(controls, chosen={"n": 8}, defaults=defaults)[1]["k"] == [1, 3]


def test_05_explorer_draws_the_chosen_metric_with_error_bars():
    """explore draws one bar per method (Original dropped) at the stored mean of the chosen metric."""
    class Res:
        mean = pd.DataFrame({"UA": [0.0, 50.0, 40.0], "TA": [90.0, 88.0, 85.0]}, index=["Original", "Retrain", "SalUn"])
        std = pd.DataFrame({"UA": [0.0, 1.0, 2.0], "TA": [0.5, 0.5, 0.5]}, index=["Original", "Retrain", "SalUn"])
    ns = explorer_namespace("05_salun.ipynb", RESULTS={"random": Res}, SEEDS=[0, 1, 2])
    fig = ns["explore"]("random", "UA")
    bars = [p.get_width() for p in fig.axes[0].patches]
    assert bars == [50.0, 40.0]
    assert "3 seeds" in fig.axes[0].get_title()


def test_06_explorer_reads_the_paradigm_table():
    """view draws the chosen method's metric against sparsity next to Retrain's."""
    from course_lib import plots

    paradigm = pd.DataFrame([dict(sparsity=s, method=m, UA=v + 10 * s) for s in (0.0, 0.5, 0.9)
                             for m, v in (("Retrain", 5.0), ("FT", 1.0), ("Original", 0.0))])
    ns = explorer_namespace("06_sparsity.ipynb", paradigm=paradigm, plots=plots)
    fig = ns["view"]("UA", "FT")
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in fig.axes[0].lines}
    assert lines["FT"] == pytest.approx([1.0, 6.0, 10.0]) and lines["Retrain"] == pytest.approx([5.0, 10.0, 14.0])


def test_07_explorer_draws_every_strategy_of_the_chosen_forget_set():
    """sweep_view draws one series per strategy of the chosen forget set at the opened share (in %),
    and Retrain's value as a line."""
    sweep = pd.DataFrame([dict(forget_set=fs, strategy=s, opened=o, **{"forget acc": 50.0 + o})
                          for fs in ("IID", "non-IID") for s in ("del", "salloc") for o in (0.01, 0.1)])
    ns = explorer_namespace("07_del.ipynb", sweep=sweep, COLORS={"del": "red", "salloc": "blue"},
                            ref={"IID": {"forget acc": 40.0}, "non-IID": {"forget acc": 30.0}})
    fig = ns["sweep_view"]("IID", "forget acc")
    series = {ln.get_label(): ln for ln in fig.axes[0].lines}
    assert list(series["del"].get_xdata()) == pytest.approx([1.0, 10.0])
    assert series["Retrain"].get_ydata()[0] == 40.0


def explorer_call(notebook: str, ns: dict):
    """Execute the cell after the explorer's (the plots.explorer call) with a stand-in ``plots`` that
    records the call: returns (view, defaults, controls)."""
    seen = []
    stand_in = type("Plots", (), {"explorer": staticmethod(lambda view, defaults=None, **c: seen.append((view, defaults, c)))})
    exec(compile(_call_cell(notebook), f"{notebook}:explorer-call", "exec"), {**ns, "plots": stand_in})
    assert len(seen) == 1, f"{notebook}: the cell after the explorer's should call plots.explorer once"
    return seen[0]


def _call_cell(notebook: str) -> str:
    nb = json.loads((ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))
    i = next(i for i, c in enumerate(nb["cells"]) if "explorer" in c.get("metadata", {}).get("tags", []))
    return "".join(nb["cells"][i + 1]["source"])


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_every_lecture_has_one_explorer_whose_next_cell_calls_it(notebook):
    """Every lecture tags exactly one cell 'explorer' (the view, tested here) and the next cell calls
    plots.explorer (the controls), so the view can be tested without the lecture's training."""
    nb = json.loads((ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))
    tagged = [c for c in nb["cells"] if "explorer" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook}: {len(tagged)} cells tagged 'explorer'"
    assert "plots.explorer(" not in "".join(tagged[0]["source"]), "keep the explorer call in the next cell"
    assert "plots.explorer(" in _call_cell(notebook)


# ----------------------------------------------------------------------------- the explorer itself

def test_dependent_controls_offer_only_valid_combinations():
    """A control given as a function of earlier controls gets the options valid for their values; a
    chosen value that became invalid falls back to the default, then to the first option."""
    from course_lib import explorer as E

    ctl = dict(method=["BS", "BE"], knob=lambda method: ["epochs", "bound"] if method == "BS" else ["epochs"],
               value=lambda method, knob: [1, 5] if knob == "epochs" else [0.1, 0.2])
    dflt = {"knob": "bound", "value": lambda knob: 0.2 if knob == "bound" else 5}
    assert E.resolve(ctl, defaults=dflt)[0] == {"method": "BS", "knob": "bound", "value": 0.2}
    values, options = E.resolve(ctl, chosen={"method": "BE", "knob": "bound", "value": 0.2}, defaults=dflt)
    assert values == {"method": "BE", "knob": "epochs", "value": 5} and options["knob"] == ["epochs"]
    with pytest.raises(ValueError, match="not controls listed before it"):
        E.resolve(dict(knob=lambda method: ["a"], method=["BS"]))
    with pytest.raises(ValueError, match="not controls"):
        E.resolve(dict(method=["BS"]), defaults={"colour": 1})


def test_headless_explorer_draws_the_default_view_and_builds_no_widget(monkeypatch):
    """With COURSE_HEADLESS=1 the explorer only calls the view with the defaults: no widget is created."""
    import ipywidgets

    from course_lib import explorer as E

    monkeypatch.setenv("COURSE_HEADLESS", "1")
    made = []
    monkeypatch.setattr(ipywidgets.Widget, "__init__", lambda self, **kw: made.append(self))
    calls = []
    out = E.explorer(lambda n, k: calls.append((n, k)) or (n, k), n=[8, 16, 32], k=lambda n: [n // 8, n // 4],
                     defaults={"n": 16})
    assert out == (16, 2) and calls == [(16, 2)] and made == []
    monkeypatch.setenv("COURSE_HEADLESS", "0")
    assert E.headless() is False
    monkeypatch.delenv("COURSE_HEADLESS")
    assert E.headless() is True          # no Jupyter kernel here: nothing could show a widget


KERNEL_CODE = r'''
import os
os.environ["COURSE_HEADLESS"] = "0"
import matplotlib.pyplot as plt
from course_lib import explorer as E
calls = []
def view(method, knob, value):
    calls.append((method, knob, value))
    fig, ax = plt.subplots(); ax.set_title(f"{method} {knob} {value}")
    return fig
ex = E.Explorer(view, method=["BS", "BE"], knob=lambda method: ["epochs", "bound"] if method == "BS" else ["epochs"],
                value=lambda knob: [1, 5] if knob == "epochs" else [0.1, 0.2], defaults={"knob": "bound"})
print("MARK")
ex.controls["method"].value = "BE"
print("RESULT", E.headless(), len(calls), calls[-1], [o for o, _ in ex.controls["knob"].options],
      ex.result.axes[0].get_title())
'''


def test_live_explorer_builds_real_widgets_in_a_kernel():
    """In a real Jupyter kernel with COURSE_HEADLESS=0 the explorer builds ipywidgets; changing the method
    to BE leaves only the valid knob and *replaces* the figure (one output, not two)."""
    import tempfile

    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="course-kernel-") as sock:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sock}/kernel")
        # the inline backend, as in JupyterLab (the test session's Agg would display figures as text)
        km.start_kernel(cwd=str(ROOT), env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            msg_id = kc.execute(KERNEL_CODE)
            events, error = [], None
            while True:
                msg = kc.get_iopub_msg(timeout=120)    # a hang guard: raises queue.Empty after 120 s of silence
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    events += [("print", ln) for ln in content["text"].splitlines()]
                elif kind == "comm_open" and content.get("target_name") == "jupyter.widget":
                    events.append(("widget", content["data"]["state"]["_model_name"]))
                elif kind in ("display_data", "clear_output"):
                    events.append((kind, "image/png" in content.get("data", {})))
                elif kind == "error":
                    error = "\n".join(content["traceback"])
                elif kind == "status" and content["execution_state"] == "idle":
                    break
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    assert error is None, error
    mark = events.index(("print", "MARK"))
    before, after = events[:mark], events[mark + 1:]
    built = {name for kind, name in before if kind == "widget"}
    assert {"DropdownModel", "OutputModel", "VBoxModel"} <= built, built
    # the default view: one figure in the output area; the change clears it, then draws one new figure
    assert [e for e in before if e[0] == "display_data"] == [("display_data", True)]
    shown = [e for e in after if e[0] in ("display_data", "clear_output")]
    assert shown == [("clear_output", False), ("display_data", True)], shown
    line = next(name for kind, name in after if kind == "print" and name.startswith("RESULT"))
    assert line == "RESULT False 2 ('BE', 'epochs', 1) ['epochs'] BE epochs 1", line
