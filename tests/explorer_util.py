"""Shared pieces of the explorer tests: execute a lecture's cell tagged ``explorer`` (the view) in a
namespace of hand-made results, and record the call of the next cell (the controls)."""
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

ROOT = Path(__file__).resolve().parent.parent


def explorer_namespace(notebook: str, **precomputed) -> dict:
    """Execute the notebook's cell tagged 'explorer' in a namespace holding ``precomputed``."""
    nb = json.loads((ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "explorer" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook} must have exactly one code cell tagged 'explorer'"
    ns = {"np": np, "pd": pd, "torch": torch, "plt": plt, "display": lambda *a, **k: None, **precomputed}
    exec(compile("".join(cells[0]["source"]), f"{notebook}:explorer", "exec"), ns)
    return ns


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


@pytest.fixture(autouse=True)
def quiet_figures():
    """Autouse in every module that imports it: silence plt.show() on the Agg backend (it warns that it
    cannot show) and close every figure after the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    plt.close("all")
