"""Running a submission, scoring it by the competition's rule, and the baselines (see
:mod:`course_lib.challenge`)."""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import audit, config, train
from ..engine import progress
from ..validation import check_int
from .protocol import DELTA, PUBLIC, XY, Populations, Split, _Lock, cache_dir, populations, retrain_seconds_now

#: The N runs of a submission may take at most this share of the wall time of N Retrains. Chosen so that
#: every baseline of the table fits with margin (the dearest, DEL and Random Label at their tuned settings,
#: take about 40-60% of Retrain's time in FAST mode) while Retrain itself does not.
BUDGET_SHARE = 0.75
#: Baselines scored in every table: name -> (registry method or None, the tuned table's scenario key).
#: "do nothing" returns the original; "Retrain" is the reference population; DEL is lesson 7's method
#: with lecture 07's tuned setting (tuned on ``mislabeled`` with the deep MLP: the table has no DEL row
#: for ``random``).
BASELINES = {
    "do nothing": (None, None),
    "Retrain": ("retrain", None),
    "fine-tune": ("finetune", "random"),
    "NegGrad+": ("neggrad+", "random"),
    "Random Label": ("random_label", "random"),
    "SalUn": ("salun", "random"),
    "DEL (lesson 7)": ("del", "mislabeled:deep"),
}
_BASELINES: dict[tuple, dict] = {}
_GRADED: dict[tuple, "Result"] = {}


# ---------------------------------------------------------------------------------------- scoring

@dataclass
class Result:
    """One entry of the challenge's table: the forgetting quality ``F``, the accuracy ratios, the final
    score, ``seconds`` (the N runs together), ``status`` ("ok", "over budget", "failed on k of N") and
    the numbers behind them (``ra``/``ta``: the unlearned models' mean accuracies in %, ``ra_r``/``ta_r``:
    Retrain's; ``budget_s``: the allowed seconds; ``eps``: the per-example ε)."""

    name: str
    F: float
    ra_ratio: float
    ta_ratio: float
    final: float
    seconds: float
    status: str = "ok"
    ra: float = float("nan")
    ta: float = float("nan")
    ra_r: float = float("nan")
    ta_r: float = float("nan")
    budget_s: float = float("nan")
    n_models: int = 0
    failures: list = field(default_factory=list)
    eps: np.ndarray | None = field(default=None, repr=False)

    @property
    def refused(self) -> bool:
        """True when the submission broke the compute budget (it gets no score and no points)."""
        return self.status == "over budget"

    @property
    def ranked_score(self) -> float:
        """The score used for ranking: the final score, or -inf when refused."""
        return float("-inf") if self.refused else self.final

    def record(self) -> dict:
        """Plain data for a leaderboard row (what the grader keeps per student)."""
        out = {k: getattr(self, k) for k in ("name", "F", "ra_ratio", "ta_ratio", "final", "seconds", "status",
                                             "ra", "ta", "ra_r", "ta_r", "budget_s", "n_models")}
        out["failures"] = [str(f) for f in self.failures][:10]
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _accuracy_pct(model: nn.Module, xy: XY) -> float:
    """Accuracy (%) on ``xy``: its first rows only in a smoke run (the run's ``Budget``: evaluation caps)."""
    n = config.budget().cap_eval_rows(len(xy[1]))
    with torch.no_grad():
        return 100.0 * float((train.predict_logits(model, xy[0][:n]).argmax(1).cpu() == xy[1][:n]).double().mean())


def _population_stats(models_: Sequence[nn.Module], pops: Populations):
    conf, ra, ta = [], [], []
    X_f, y_f = pops.forget
    for m in models_:
        m.eval()
        with torch.no_grad():
            conf.append(audit.logit_scaled_confidence(train.predict_logits(m, X_f).cpu(), y_f))
        ra.append(_accuracy_pct(m, pops.retain))
        ta.append(_accuracy_pct(m, pops.test))
    return torch.stack(conf).numpy(), float(np.mean(ra)), float(np.mean(ta))


def _retrained_stats(pops: Populations) -> tuple:
    key = ("retrained", pops.checksum)
    if key not in _BASELINES:
        _BASELINES[key] = _population_stats([pops.model(i, "retrained") for i in range(pops.n_models)], pops)
    return _BASELINES[key]


def score(unlearned: Sequence[nn.Module], pops: Populations, *, name: str = "submission", seconds: float = 0.0,
          status: str = "ok", budget_s: float = float("nan"), failures: Sequence = ()) -> Result:
    """Score ``N`` unlearned models (model ``i`` from original ``i``) against the retrained population of
    ``pops`` by the competition's rule (module docstring, step 3)."""
    if len(unlearned) != pops.n_models:
        raise ValueError(f"need one unlearned model per original ({pops.n_models}), got {len(unlearned)}")
    conf_u, ra_u, ta_u = _population_stats(unlearned, pops)
    conf_r, ra_r, ta_r = _retrained_stats(pops)
    eps = audit.epsilon_per_example(conf_u, conf_r, DELTA, estimator="competition")
    F = audit.forgetting_quality(eps, pops.n_models, estimator="competition")
    final = audit.final_score(F, ra_u, ra_r, ta_u, ta_r)
    return Result(name, F, ra_u / ra_r, ta_u / ta_r, final, float(seconds), status, ra_u, ta_u, ra_r, ta_r,
                  float(budget_s), pops.n_models, list(failures), eps)


def _check_output(out, template: nn.Module) -> nn.Module:
    """The model a submission returned, loaded into a fresh copy of the architecture (so nothing of the
    submission's own class or hooks reaches the scorer). ValueError says what is wrong."""
    if not isinstance(out, nn.Module):
        raise ValueError(f"unlearning must return an nn.Module, got {type(out).__name__}")
    want = template.state_dict()
    got = out.state_dict()
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(f"the returned model's parameters differ from the original's (missing {missing[:3]}, "
                         f"extra {extra[:3]}): return a model of the same architecture")
    for k, v in want.items():
        g = got[k]
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(v.shape):
            raise ValueError(f"{k}: shape {tuple(getattr(g, 'shape', ()))} instead of {tuple(v.shape)}")
        if g.is_floating_point() and not bool(torch.isfinite(g).all()):
            raise ValueError(f"{k} holds NaN or infinite values")
    fresh = copy.deepcopy(template)
    fresh.load_state_dict({k: v.detach().to("cpu", want[k].dtype) for k, v in got.items()})
    return fresh.eval()


def _error_text(exc: BaseException) -> str:
    text = getattr(exc, "_course_student", None) or f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split())[:300]


def run_submission(unlearning: Callable, pops: Populations | Split, *, name: str = "submission",
                   budget_share: float = BUDGET_SHARE, retrain_s: float | None = None,
                   first: int | None = None) -> Result:
    """Run ``unlearning(net, retain, forget, val)`` once on each original of ``pops`` (a fresh copy each
    time), time the runs, check the budget and score the returned models (:func:`score`).

    A run that raises or returns something unusable is replaced by its original (as if it did nothing)
    and listed in ``failures``; status "failed on k of N". Once the runs' seconds pass the budget
    (``budget_share`` x N x one Retrain's seconds, ``retrain_s`` or :func:`retrain_seconds_now`), the
    submission is stopped and refused (status "over budget"). ``first``: run only the first originals
    (a quick check), scored against as many retrained models."""
    if isinstance(pops, Split):
        pops = populations(pops)
    if not callable(unlearning):
        raise ValueError(f"unlearning must be a function unlearning(net, retain, forget, val), got "
                         f"{type(unlearning).__name__}")
    if not (isinstance(budget_share, (int, float)) and budget_share > 0):
        raise ValueError(f"budget_share must be a positive number, got {budget_share!r}")
    n = pops.n_models if first is None else check_int(first, "first", 1)
    n = min(n, pops.n_models)
    r_s = retrain_seconds_now(pops) if retrain_s is None else float(retrain_s)
    budget = float(budget_share) * n * r_s
    outs, failures, spent = [], [], 0.0
    status = "ok"
    for i in progress(range(n), desc=f"{name}: {n} runs"):
        original = pops.model(i, "originals")
        net = copy.deepcopy(original).train()
        data = [tuple(t.clone() for t in xy) for xy in (pops.retain, pops.forget, pops.val)]
        t0 = time.perf_counter()
        try:
            returned = unlearning(net, *data)
            spent += time.perf_counter() - t0
            outs.append(_check_output(returned, original))
        except Exception as exc:  # noqa: BLE001 - a student's failure is recorded, the others go on
            spent += time.perf_counter() - t0
            failures.append(f"original {i}: {_error_text(exc)}")
            outs.append(original)
        if spent > budget:
            status = "over budget"
            break
    if status == "over budget":
        return Result(name, float("nan"), float("nan"), float("nan"), float("nan"), spent, status,
                      budget_s=budget, n_models=n, failures=failures)
    if failures:
        status = f"failed on {len(failures)} of {n}"
    sub = pops if n == pops.n_models else _first(pops, n)
    return score(outs, sub, name=name, seconds=spent, status=status, budget_s=budget, failures=failures)


def _first(pops: Populations, n: int) -> Populations:
    cut = lambda d: {k: v[:n] for k, v in d.items()}  # noqa: E731
    return replace(pops, split=replace(pops.split, n_models=n), originals=cut(pops.originals),
                   retrained=cut(pops.retrained), reference=cut(pops.reference), checksum=f"{pops.checksum}:{n}")


def grade(unlearning: Callable, split: Split, **kw) -> Result:
    """:func:`run_submission` on ``split``, once per function and split in this process (every test cell
    of the graded notebook asks; the first pays)."""
    key = (id(unlearning), split.resolved(), tuple(sorted(kw.items())))
    if key not in _GRADED:
        _GRADED[key] = run_submission(unlearning, split, **kw)
    return _GRADED[key]


# -------------------------------------------------------------------------------------- baselines

def baseline_function(name: str, fast: bool | None = None) -> Callable:
    """The baseline ``name`` of :data:`BASELINES` as a submission ``unlearning(net, retain, forget, val)``
    (tuned settings; "Retrain" retrains from scratch and breaks the budget by design)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; baselines: {', '.join(BASELINES)}")
    method, table = BASELINES[name]
    if method is None:
        return lambda net, retain, forget, val: net
    from .. import unlearn
    hp = {} if table is None else unlearn.tuned(method, table, fast)

    def run(net, retain, forget, val):
        return unlearn.unlearn(method, net, retain, forget, valid=val, seed=0, **hp).model
    run.__name__ = f"baseline_{method}"
    return run


def baselines(pops: Populations | Split = PUBLIC, names: Sequence[str] | None = None) -> dict[str, Result]:
    """Every baseline of :data:`BASELINES` scored on ``pops`` (cached with the populations): "Retrain" is
    the reference population scored against the retrained one (seconds: N Retrains, timed at build);
    the others run as submissions, in this process, without a budget check."""
    if isinstance(pops, Split):
        pops = populations(pops)
    names = list(BASELINES) if names is None else list(names)
    path = pops.path.with_name(pops.path.stem.replace("populations-", "baselines-") + ".json") if pops.path else None
    key = ("baselines", pops.checksum)
    table = _BASELINES.get(key)
    if table is None and path is not None and path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("checksum") == pops.checksum:
            table = {k: Result(**{f: (float("nan") if v is None else v) for f, v in rec.items()
                                  if f not in ("failures", "eps")}, failures=rec.get("failures", []),
                               eps=None if rec.get("eps") is None else np.asarray(rec["eps"], dtype=np.float64))
                     for k, rec in saved["results"].items()}
    table = dict(table or {})
    todo = [b for b in names if b not in table]
    if todo:
        with _Lock(path.with_suffix(".lock") if path else cache_dir() / "baselines.lock"):
            for b in todo:
                if b == "Retrain":
                    ref = [pops.model(i, "reference") for i in range(pops.n_models)]
                    table[b] = score(ref, pops, name=b, seconds=pops.n_models * pops.retrain_seconds)
                else:
                    table[b] = run_submission(baseline_function(b, pops.split.fast), pops, name=b,
                                              budget_share=float("inf"), retrain_s=pops.retrain_seconds)
            if path is not None:
                results = {k: {**r.record(), "eps": None if r.eps is None else [float(e) for e in r.eps]}
                           for k, r in table.items()}
                path.write_text(json.dumps({"checksum": pops.checksum, "results": results}), encoding="utf-8")
    _BASELINES[key] = table
    return {b: table[b] for b in names}


def table(results: Mapping[str, Result], title: str = ""):
    """A pandas table of results (rows by name): F, the ratios, the final score, seconds, status."""
    import pandas as pd
    df = pd.DataFrame([{"F": r.F, "RA_u/RA_r": r.ra_ratio, "TA_u/TA_r": r.ta_ratio, "final score": r.final,
                        "RA_u (%)": r.ra, "TA_u (%)": r.ta, "seconds": r.seconds, "status": r.status}
                       for r in results.values()], index=list(results))
    df.index.name = title or "method"
    return df


