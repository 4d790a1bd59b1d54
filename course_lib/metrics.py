"""Unlearning metrics: UA, RA, TA and RTE (source 002, Sec. 2), the SVC
membership-inference attacks MIA-Efficacy (002, App. C.3) and MIA-Privacy (002, App. C.4),
and the disparity average (002, Sec. 5.1).

* UA  (unlearning accuracy) = 100 - accuracy on the forget set.
* RA  (remaining accuracy)  = accuracy on the retain set.
* TA  (testing accuracy)    = accuracy on the test set (for class-wise forgetting, without
  the forgotten classes: pass ``exclude_classes``).
* MIA-Efficacy: an RBF SVC is fitted on one per-example attack feature with retain examples
  as members (1) and test examples as non-members (0), equal counts; MIA-Efficacy is the
  share (%) of forget examples it labels non-member. Higher means the forget set looks less
  "seen"; the target is the retrained model's value, not 100% nor 50%. Source 003 calls this
  share the "MIA score" (003, Sec. 2.1 footnote), but its main tables compute it with the
  **correctness** feature (App. A.3; A.4 Table 9), not with the default confidence feature:
  pass ``mia_feature="correctness"`` to measure 003's MIA score (lesson 7 does).
* MIA-Privacy: the same attack fitted on half of the test set and as many retain examples,
  scored by its accuracy (%) on the other halves; lower means less leakage about the retain
  set (002, App. C.4 and Fig. A1 name it; the half/half split follows 002's public code).
* RTE: run-time of the unlearning method in seconds.
* Disparity average: mean |metric - metric of Retrain| over UA, MIA-Efficacy, RA and TA.

Attack features (``attack_features``; ``evaluate(..., mia_feature=...)``), one number each:

* ``"confidence"`` (default): softmax probability of the true class, the "prediction
  confidence-based attack" of 002 (Sec. 5.1, App. C.3, after Song & Mittal, its ref. [48]).
  Not 003's main attack (see ``"correctness"``).
* ``"max_confidence"``: softmax probability of the predicted class, 003's
  "confidence-based MIA" (App. A.4, variant (ii), Table 8).
* ``"correctness"``: 1 if the prediction is right, else 0; 003's "correctness-based MIA"
  (App. A.4, variant (i), Table 9), which is the MIA score of its main tables (App. A.3).
  003 describes the SVC input as the predicted class index; the course feeds the correctness
  bit the attack is named after (a deviation: a class index read as a number mostly encodes
  the class, not membership). On one bit the SVC can at best learn "right -> member, wrong ->
  non-member" (when retain rows are right more often than test rows), so MIA-Efficacy then
  equals the forget error, 100 - forget accuracy: a weak attack, as 003 A.4 notes.
* ``"entropy"``: entropy of the softmax output; in neither paper's text, but a feature of
  002's public attack code (and of Song & Mittal's study).

If the training features of an attack are all equal (e.g. correctness of a model that is
right on every retain and test example), the SVC cannot learn anything: the attack then
counts as a coin flip, 50% for MIA-Efficacy and MIA-Privacy, instead of libsvm's arbitrary
tie-break (which labels everything a member).

Retain subsample: the larger side of the member/non-member pair is subsampled uniformly at
random without replacement (seeded). This is a course choice: 002's public code takes the
first |test| rows of the retain set, and 003 (App. A.3) asks for a retain subset of the test
set's size and a similar label mix; uniform sampling matches that mix in expectation when
retain and test share class proportions (random forgetting), whereas no retain subset can
match it once a class is forgotten (the retain set has none of that class).

All percentages are on a 0-100 scale. ``accuracy`` is :func:`course_lib.params.accuracy`, the
course's one accuracy (re-exported here); logits come from :func:`course_lib.train.predict_logits`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from . import config
from . import data as _data
from .params import accuracy  # noqa: F401  (metrics.accuracy is the course's one accuracy)
from .train import predict_logits
from .validation import check_indices

#: Metrics compared with the retrained model in the disparity average.
DISPARITY_METRICS = ("UA", "MIA-Efficacy", "RA", "TA")
#: Hyper-parameters of the attack, as in the public code of the sparsity and saliency papers.
SVC_PARAMS = dict(C=3, gamma="auto", kernel="rbf")
#: Per-example features the attacks can use (see the module docstring for their sources).
ATTACK_FEATURES = ("confidence", "max_confidence", "entropy", "correctness")


def _as_numpy(a, name: str, ndim: int = 1) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def unlearning_accuracy(pred_forget, y_forget) -> float:
    """UA = 100 - accuracy (%) on the forget set."""
    return 100.0 - accuracy(pred_forget, y_forget)


def confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the true class: ``logits`` ``[N, C]``, ``y`` ``[N]`` -> ``[N]``."""
    if logits.ndim != 2 or y.ndim != 1 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"need logits [N, C] and labels [N]; got {tuple(logits.shape)} and {tuple(y.shape)}")
    return torch.softmax(logits.float(), dim=1).gather(1, y.long().view(-1, 1)).squeeze(1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax output: ``[N, C]`` -> ``[N]``."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


def max_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the predicted (argmax) class: ``[N, C]`` -> ``[N]``."""
    return torch.softmax(logits.float(), dim=1).max(dim=1).values


def correctness(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1.0 where the argmax of ``logits`` ``[N, C]`` equals ``y`` ``[N]``, else 0.0 (``[N]``)."""
    return (logits.argmax(dim=1) == y.long()).float()


def _check_feature(feature) -> str:
    if not isinstance(feature, str) or feature not in ATTACK_FEATURES:
        raise ValueError(f"unknown MIA feature {feature!r}; choose one of {list(ATTACK_FEATURES)}")
    return feature


def _feature(logits: torch.Tensor, y: torch.Tensor, feature: str) -> torch.Tensor:
    """The attack feature as a float tensor ``[N]`` (``confidence`` exactly as before)."""
    _check_feature(feature)
    if logits.ndim != 2 or y.ndim != 1 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"need logits [N, C] and labels [N]; got {tuple(logits.shape)} and {tuple(y.shape)}")
    if feature == "confidence":
        return confidence(logits, y)
    if feature == "max_confidence":
        return max_confidence(logits)
    if feature == "entropy":
        return entropy(logits)
    return correctness(logits, y)


def attack_features(logits, y, feature: str = "confidence") -> np.ndarray:
    """One attack feature per example, float64 ``[N]``, from ``logits`` ``[N, C]`` and labels
    ``y`` ``[N]`` (tensors or arrays): ``feature`` is one of ``ATTACK_FEATURES`` ("confidence",
    the true-class probability, by default). The result feeds ``mia_efficacy``/``mia_privacy``."""
    _check_feature(feature)
    logits = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if logits.is_floating_point() and not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values")
    return _feature(logits.detach().cpu(), y.detach().cpu(), feature).numpy().astype(np.float64)


def _balanced(members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator):
    n = min(len(members), len(nonmembers))
    m = members[rng.choice(len(members), n, replace=False)] if len(members) > n else members
    o = nonmembers[rng.choice(len(nonmembers), n, replace=False)] if len(nonmembers) > n else nonmembers
    X = np.concatenate([m, o]).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    return X, y


def _svc():
    from sklearn.svm import SVC

    return SVC(**SVC_PARAMS)


def _uninformative(X: np.ndarray) -> bool:
    """All training features equal: the SVC can only tie-break, so the attack is a coin flip."""
    return bool(X.min() == X.max())


def mia_efficacy(conf_retain, conf_test, conf_forget, seed: int = 0) -> float:
    """MIA-Efficacy (%): fit the SVC on retain (member) vs test (non-member) features, equal
    counts (the larger side subsampled with ``seed``), and return the share of forget
    examples predicted non-member. Inputs are 1-D arrays of per-example features (see
    ``attack_features``); 50% if the fitted features are all equal (module docstring)."""
    r = _as_numpy(conf_retain, "conf_retain").astype(np.float64)
    t = _as_numpy(conf_test, "conf_test").astype(np.float64)
    f = _as_numpy(conf_forget, "conf_forget").astype(np.float64)
    X, y = _balanced(r, t, np.random.default_rng(seed))
    if _uninformative(X):
        return 50.0
    clf = _svc().fit(X, y)
    return 100.0 * float(np.mean(clf.predict(f.reshape(-1, 1)) == 0))


def mia_privacy(conf_retain, conf_test, seed: int = 0) -> float:
    """MIA-Privacy (%): fit the SVC on half of the test set (non-members) and as many retain
    examples (members); return its accuracy on the other test half and as many other retain
    examples. 50% means the attack learns nothing about the retain set (returned as such
    when the fitted features are all equal)."""
    r = _as_numpy(conf_retain, "conf_retain").astype(np.float64)
    t = _as_numpy(conf_test, "conf_test").astype(np.float64)
    if len(t) < 4 or len(r) < 4:
        raise ValueError("MIA-Privacy needs at least 4 retain and 4 test examples")
    rng = np.random.default_rng(seed)
    t = t[rng.permutation(len(t))]
    half = len(t) // 2
    r = r[rng.permutation(len(r))]
    n_fit = min(half, len(r) // 2)
    X_fit, y_fit = _balanced(r[:n_fit], t[:half], rng)
    X_ev, y_ev = _balanced(r[n_fit:], t[half:], rng)
    if _uninformative(X_fit):
        return 50.0
    clf = _svc().fit(X_fit, y_fit)
    return 100.0 * float(np.mean(clf.predict(X_ev) == y_ev))


def evaluate(model: nn.Module, data: _data.DataSplit, forget_idx: torch.Tensor, *,
             seconds: float | None = None, exclude_classes: list[int] | None = None,
             seed: int = 0, mia_feature: str = "confidence") -> dict[str, float]:
    """All metrics of one model as a row: UA, MIA-Efficacy, RA, TA, MIA-Privacy, RTE (s).

    ``forget_idx`` indexes ``data.X_train``; the retain set is its complement. For class-wise
    forgetting pass ``exclude_classes`` to leave those classes out of TA (as in source 002).
    ``mia_feature`` (one of ``ATTACK_FEATURES``) is the feature both attacks use; the default,
    the true-class confidence, is 002's attack (App. C.3); 003's main tables use ``"correctness"``
    (App. A.3).
    """
    _check_feature(mia_feature)
    N = data.X_train.shape[0]
    forget_idx = check_indices(forget_idx, N)
    retain_idx = _data.retain_indices(N, forget_idx)
    y_tr, y_te = data.y_train, data.y_test
    test_keep = torch.ones_like(y_te, dtype=torch.bool)
    for c in exclude_classes or []:
        test_keep &= y_te != c
    if not test_keep.any():
        raise ValueError("exclude_classes removes every test example")
    # under a capped budget (config.budget: a smoke run) predict on the first eval_rows rows of each
    # set (sizes only); otherwise on every row, in the same batches as always
    budget = config.budget()
    cap = lambda idx: idx[:budget.cap_eval_rows(len(idx))]   # noqa: E731
    f_idx, r_idx = cap(forget_idx), cap(retain_idx)
    te_idx, kept = cap(torch.arange(len(y_te))), cap(torch.nonzero(test_keep).flatten())
    capped = budget.eval_rows is not None
    tr_rows = torch.unique(torch.cat([f_idx, r_idx])) if capped else torch.arange(N)
    te_rows = torch.unique(torch.cat([te_idx, kept])) if capped else torch.arange(len(y_te))
    logits_train = predict_logits(model, data.X_train[tr_rows] if capped else data.X_train)
    logits_test = predict_logits(model, data.X_test[te_rows] if capped else data.X_test)
    if not (torch.isfinite(logits_train).all() and torch.isfinite(logits_test).all()):
        raise ValueError("the model outputs NaN or infinite logits: the method diverged "
                         "(try a smaller learning rate or fewer epochs)")
    at = lambda rows, idx: torch.searchsorted(rows, idx)     # noqa: E731  (positions of idx in sorted rows)
    lf, lr = logits_train[at(tr_rows, f_idx)], logits_train[at(tr_rows, r_idx)]
    pos, pos_keep = at(te_rows, te_idx), at(te_rows, kept)
    conf_f = _feature(lf, y_tr[f_idx], mia_feature)
    conf_r = _feature(lr, y_tr[r_idx], mia_feature)
    conf_test = _feature(logits_test[pos], y_te[te_idx], mia_feature)
    row = {
        "UA": unlearning_accuracy(lf, y_tr[f_idx]),
        "MIA-Efficacy": mia_efficacy(conf_r, conf_test, conf_f, seed),
        "RA": accuracy(lr, y_tr[r_idx]),
        "TA": accuracy(logits_test[pos_keep], y_te[kept]),
        "MIA-Privacy": mia_privacy(conf_r, conf_test, seed),
    }
    row["RTE (s)"] = float("nan") if seconds is None else float(seconds)
    return row


def disparity_average(row: Mapping[str, float], reference: Mapping[str, float],
                      metrics=DISPARITY_METRICS) -> float:
    """Mean absolute gap to the reference (Retrain) row over ``metrics`` (percentage points)."""
    missing = [m for m in metrics if m not in row or m not in reference]
    if missing:
        raise ValueError(f"rows lack the metrics {missing}")
    return float(np.mean([abs(row[m] - reference[m]) for m in metrics]))


def table(rows: Mapping[str, Mapping[str, float]], reference: str | None = "Retrain"):
    """Rows ``{method: metrics}`` as a pandas DataFrame (one row per method), with a
    ``Disparity avg`` column against ``reference`` when that row is present."""
    import pandas as pd

    if not rows:
        raise ValueError("no rows to show")
    df = pd.DataFrame.from_dict({k: dict(v) for k, v in rows.items()}, orient="index")
    if reference is not None:
        if reference not in rows:
            raise ValueError(f"reference row {reference!r} not among {list(rows)}")
        df["Disparity avg"] = [disparity_average(rows[k], rows[reference]) for k in df.index]
    return df.round(2)
