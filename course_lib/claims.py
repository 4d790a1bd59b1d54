"""Claims of the sources judged over seeds, in one shape for every lecture.

A lecture states what a source claims (:class:`Claim`: its section or table, the statement, the
measured quantity, the margin that counts as a real difference), measures a **signed per-seed effect**
(positive supports the claim; usually a paired difference, :func:`paired`), and lets :class:`Claims`
judge it. Over ``n >= 3`` seeds the effect is the mean, ``se`` its standard error
(``std(ddof=1) / sqrt(n)``), and the verdict one of :data:`VERDICTS`:

* ``reproduced``      effect > margin and effect > 2·se;
* ``opposite``        −effect > margin and −effect > 2·se;
* ``not reproduced``  anything else (too small, or within the noise);
* ``not testable here``  no effect, with the reason (e.g. needs ImageNet).

A claim may state another rule (``Claim.rule`` names it and ``Claim.decide`` applies it); its record
then says which rule was used.

The table is displayed as HTML **and** as a JSON bundle with the mimetype :data:`MIMETYPE`: a list of
records with the fields :data:`FIELDS` (plus ``rule``, ``per_seed`` and ``reason``), so any executed
notebook's claims can be read back (:func:`read`) and re-checked by a program (:func:`check`).
:func:`settings_table` is the one shape of every lecture's settings table.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

MIMETYPE = "application/vnd.unlearning-course.claims+json"
VERDICTS = ("reproduced", "not reproduced", "opposite", "not testable here")
FIELDS = ("lecture", "claim", "source", "statement", "metric", "seeds", "effect", "se", "margin", "verdict")
MIN_SEEDS = 3
DEFAULT_RULE = "effect > margin and effect > 2·se"


def default_rule(effect: float, se: float, margin: float) -> str:
    """The course's rule: ``reproduced`` when effect > margin and effect > 2·se, ``opposite`` when the
    same holds for −effect, else ``not reproduced``."""
    if effect > margin and effect > 2 * se:
        return "reproduced"
    if -effect > margin and -effect > 2 * se:
        return "opposite"
    return "not reproduced"


@dataclass(frozen=True)
class Claim:
    """One claim of a source.

    ``claim``: a short name; ``source``: where (e.g. "002 Sec. 5.1, Fig. 4"); ``statement``: what the
    source says; ``metric``: the measured, signed quantity (say which way is positive); ``margin``: the
    smallest effect that counts (in the metric's units, >= 0); ``rule`` / ``decide``: another rule than
    :func:`default_rule`, named and applied as ``decide(effect, se, margin) -> verdict``."""

    claim: str
    source: str
    statement: str
    metric: str
    margin: float = 0.0
    rule: str | None = None
    decide: Callable[[float, float, float], str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for name in ("claim", "source", "statement", "metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"Claim.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"Claim.margin must be a finite number >= 0, got {self.margin!r}")
        if (self.rule is None) != (self.decide is None):
            raise ValueError("give both rule (its name) and decide (the function), or neither")


def paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """Per-seed differences ``a[i] - b[i]`` (float64) of two measurements on the same seeds."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired measurements need one value per seed on both sides, got {a.size} and {b.size}")
    return a - b


def summarise(effects: Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error, n) of per-seed effects; needs at least :data:`MIN_SEEDS` finite values."""
    e = np.asarray(effects, dtype=np.float64).ravel()
    if e.size < MIN_SEEDS:
        raise ValueError(f"a claim is judged over at least {MIN_SEEDS} seeds; got {e.size} effect(s). "
                         "Run more seeds (the many-model engine makes them cheap) or mark it not testable.")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"per-seed effects must be finite, got {e.tolist()}")
    return float(e.mean()), float(e.std(ddof=1) / math.sqrt(e.size)), int(e.size)


def judge(claim: Claim, effects: Sequence[float]) -> tuple[float, float, int, str]:
    """(effect, se, n, verdict) of ``claim`` over per-seed ``effects``."""
    effect, se, n = summarise(effects)
    verdict = (claim.decide or default_rule)(effect, se, claim.margin)
    if verdict not in VERDICTS[:3]:
        raise ValueError(f"the rule of {claim.claim!r} returned {verdict!r}; expected one of {VERDICTS[:3]}")
    return effect, se, n, verdict


class Claims:
    """A lecture's claims table. ``add`` judges a claim over seeds, ``not_testable`` records one that
    cannot be tested here; ``records`` (plain dicts), ``frame()``, ``synthesis()``; displaying the object
    in a notebook shows the HTML table and carries the JSON bundle (:data:`MIMETYPE`)."""

    def __init__(self, lecture: str):
        if not isinstance(lecture, str) or not lecture.strip():
            raise ValueError(f"lecture must name the notebook, e.g. '05_salun', got {lecture!r}")
        self.lecture = lecture
        self.records: list[dict] = []

    def _check_new(self, claim: Claim):
        if not isinstance(claim, Claim):
            raise TypeError(f"expected a Claim, got {type(claim).__name__}")
        if any(r["claim"] == claim.claim for r in self.records):
            raise ValueError(f"claim {claim.claim!r} is already in the table of {self.lecture}")

    def _base(self, claim: Claim) -> dict:
        return {"lecture": self.lecture, "claim": claim.claim, "source": claim.source,
                "statement": claim.statement, "metric": claim.metric}

    def add(self, claim: Claim, effects: Sequence[float], seeds: Iterable[int] | None = None) -> dict:
        """Judge ``claim`` on per-seed ``effects`` (positive supports it); returns its record."""
        self._check_new(claim)
        effect, se, n, verdict = judge(claim, effects)
        seed_ids = list(seeds) if seeds is not None else list(range(n))
        if len(seed_ids) != n:
            raise ValueError(f"{len(seed_ids)} seeds named for {n} effects of {claim.claim!r}")
        rec = {**self._base(claim), "seeds": n, "effect": effect, "se": se, "margin": float(claim.margin),
               "verdict": verdict, "rule": claim.rule or DEFAULT_RULE,
               "per_seed": [float(x) for x in np.asarray(effects, dtype=np.float64).ravel()],
               "seed_ids": [int(s) for s in seed_ids], "reason": ""}
        self.records.append(rec)
        return rec

    def not_testable(self, claim: Claim, reason: str) -> dict:
        """Record ``claim`` as ``not testable here`` with the ``reason`` (no effect)."""
        self._check_new(claim)
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("say why the claim cannot be tested here")
        rec = {**self._base(claim), "seeds": 0, "effect": None, "se": None, "margin": float(claim.margin),
               "verdict": "not testable here", "rule": claim.rule or DEFAULT_RULE, "per_seed": [],
               "seed_ids": [], "reason": reason.strip()}
        self.records.append(rec)
        return rec

    # ------------------------------------------------------------------ views
    def counts(self) -> dict[str, int]:
        return {v: sum(r["verdict"] == v for r in self.records) for v in VERDICTS}

    def frame(self):
        import pandas as pd

        cols = ["claim", "source", "metric", "seeds", "effect", "se", "margin", "verdict"]
        return pd.DataFrame([{k: r[k] for k in cols} for r in self.records], columns=cols)

    def synthesis(self) -> str:
        """A paragraph generated from the records: the counts, then every claim that did not reproduce
        with its numbers (and the reason of the untestable ones)."""
        if not self.records:
            return "No claim was judged in this run."
        c = self.counts()
        parts = [f"Of {len(self.records)} claims, {c['reproduced']} reproduced, {c['not reproduced']} did not, "
                 f"{c['opposite']} came out the opposite way and {c['not testable here']} cannot be tested here."]
        for r in self.records:
            if r["verdict"] in ("not reproduced", "opposite"):
                parts.append(f"“{r['claim']}” ({r['source']}): effect {r['effect']:+.2f} ± {r['se']:.2f} (se) over "
                             f"{r['seeds']} seeds against a margin of {r['margin']:g}: {r['verdict']}.")
            elif r["verdict"] == "not testable here":
                parts.append(f"“{r['claim']}” ({r['source']}) is not testable here: {r['reason']}")
        return " ".join(parts)

    def to_json(self) -> list[dict]:
        return json.loads(json.dumps(self.records))

    def _repr_html_(self) -> str:
        colour = {"reproduced": "#1a7f37", "not reproduced": "#9a6700", "opposite": "#cf222e",
                  "not testable here": "#57606a"}
        head = "".join(f"<th>{h}</th>" for h in ("claim", "source", "measured", "seeds", "effect ± se",
                                                    "margin", "verdict"))
        rows = []
        for r in self.records:
            num = ("—" if r["effect"] is None else f"{r['effect']:+.2f} ± {r['se']:.2f}")
            note = html.escape(r["reason"]) if r["reason"] else html.escape(r["metric"])
            rows.append(f"<tr><td title=\"{html.escape(r['statement'])}\">{html.escape(r['claim'])}</td>"
                        f"<td>{html.escape(r['source'])}</td><td>{note}</td><td>{r['seeds']}</td><td>{num}</td>"
                        f"<td>{r['margin']:g}</td><td style=\"color:{colour[r['verdict']]};font-weight:bold\">"
                        f"{r['verdict']}</td></tr>")
        return (f"<table class=\"course-claims\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
                f"</table><p><em>{html.escape(self.synthesis())}</em></p>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self._repr_html_(), MIMETYPE: self.to_json(),
                "text/plain": self.frame().to_string(index=False) + "\n" + self.synthesis()}


# ----------------------------------------------------------------------------- reading back

def _outputs(nb: dict):
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            yield out


def read(notebook) -> list[dict]:
    """Every claims record an executed notebook displayed (a path or a notebook dict)."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text(encoding="utf-8"))
    records = []
    for out in _outputs(nb):
        data = out.get("data", {})
        if MIMETYPE in data:
            value = data[MIMETYPE]
            records.extend(json.loads(value) if isinstance(value, str) else value)
    return records


def check(records: Iterable[dict]) -> list[str]:
    """Problems with claims records (empty: every record is well formed and its verdict agrees with its
    own effect, se and margin under the default rule, or names another rule)."""
    problems = []
    for i, r in enumerate(records):
        name = r.get("claim", f"record {i}")
        missing = [f for f in FIELDS if f not in r]
        if missing:
            problems.append(f"{name}: missing fields {missing}")
            continue
        v = r["verdict"]
        if v not in VERDICTS:
            problems.append(f"{name}: unknown verdict {v!r}")
        elif v == "not testable here":
            if r["effect"] is not None:
                problems.append(f"{name}: not testable here, yet it has an effect")
        elif r["effect"] is None or r["se"] is None:
            problems.append(f"{name}: verdict {v!r} without an effect")
        elif r["seeds"] < MIN_SEEDS:
            problems.append(f"{name}: judged on {r['seeds']} seeds (< {MIN_SEEDS})")
        elif r.get("rule", DEFAULT_RULE) == DEFAULT_RULE and default_rule(r["effect"], r["se"], r["margin"]) != v:
            problems.append(f"{name}: verdict {v!r} disagrees with effect {r['effect']:.3g}, se {r['se']:.3g}, "
                            f"margin {r['margin']:.3g}")
    return problems


# ----------------------------------------------------------------------------- settings

def settings_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = ("setting", "FAST", "full mode",
                                                                           "source", "why ours differs")):
    """The one shape of a lecture's settings table: one row per setting, the course's FAST and full
    values, the source's (with its section / table / appendix) and why the course differs. Returns a
    pandas Styler that shows every cell whole (no "..." truncation) and aligns text left."""
    import pandas as pd

    rows = [tuple(str(x) for x in r) for r in rows]
    bad = [r for r in rows if len(r) != len(columns)]
    if bad:
        raise ValueError(f"every settings row needs {len(columns)} entries ({', '.join(columns)}); got {bad[0]}")
    df = pd.DataFrame(rows, columns=list(columns))
    return (df.style.hide(axis="index")
            .set_properties(**{"text-align": "left", "white-space": "pre-wrap", "vertical-align": "top"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))
