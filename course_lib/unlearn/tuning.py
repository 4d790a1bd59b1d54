"""The one table of method hyper-parameters per scenario and mode: ``unlearn.tuned(method, scenario)``.

The table (``tuned.json`` beside this file) is written by ``benchmarks/tune_methods.py``: in FAST mode
each method is tuned once per scenario of :mod:`course_lib.scenarios` on a tuning seed disjoint from the
seeds lectures report, by a stated rule (the script's docstring and the table's ``about``); full mode
holds the sources' settings. Every lecture takes its settings from here; a lecture that departs from
the table says why.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

from .. import config
from .registry import resolve

TABLE = Path(__file__).with_name("tuned.json")
_AUGMENT = {"random_crop_flip": "random_crop_flip"}   # names stored in the JSON -> course_lib.data functions


@lru_cache(maxsize=1)
def _table() -> dict:
    if not TABLE.exists():
        raise FileNotFoundError(f"{TABLE} is missing: run `python benchmarks/tune_methods.py` to create it")
    return json.loads(TABLE.read_text(encoding="utf-8"))


def about() -> dict:
    """How the table was made: script, date, tuning seed, selection rule, grids."""
    return copy.deepcopy(_table()["about"])


def tuned(method: str, scenario: str, fast: bool | None = None) -> dict:
    """The hyper-parameters of ``method`` (a registry name or alias) for ``scenario`` in FAST or full
    mode, ready for ``unlearn(method, ..., **tuned(method, scenario))``."""
    from .. import data as _data

    name = resolve(method)
    mode = "fast" if config.fast_mode(fast) else "full"
    table = _table()[mode]
    rows = table.get(scenario, table.get("*"))
    if rows is None:
        raise ValueError(f"no tuned settings for scenario {scenario!r} in {mode} mode; tuned scenarios: "
                         f"{', '.join(k for k in table if k != '*')}")
    if name not in rows:
        raise ValueError(f"{name} has no tuned setting for {scenario!r} ({mode}); tuned methods there: "
                         f"{', '.join(sorted(rows))}")
    hp = dict(rows[name])
    if isinstance(hp.get("augment"), str):
        hp["augment"] = getattr(_data, _AUGMENT[hp["augment"]])
    return hp


def table(fast: bool | None = None):
    """The whole table of one mode as a DataFrame (rows: methods, columns: scenarios, cells: settings)."""
    import pandas as pd

    mode = "fast" if config.fast_mode(fast) else "full"
    t = _table()[mode]
    fmt = lambda hp: ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())  # noqa: E731
    methods = sorted({m for rows in t.values() for m in rows})
    return pd.DataFrame({sc: {m: fmt(rows[m]) if m in rows else "" for m in methods} for sc, rows in t.items()})
