"""Each lecture's explorer callback (the code cell tagged ``explorer``) is a plain function that only
reads precomputed results. The tests execute that cell on small hand-made results and call the
callback with non-default values; nothing here trains a model of the lecture."""
import json
import os
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
from explorer_util import _call_cell, explorer_call, quiet_figures  # noqa: E402,F401 (quiet_figures: autouse)


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
