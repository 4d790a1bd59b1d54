"""Empirical ε audit of unlearning, in the spirit of the NeurIPS 2023 unlearning competition.

ε-approximate unlearning (source 001, "Definition of Unlearning (2)") asks that for every set
of models T, ``e^-ε <= Pr(U(D, z, A(D)) in T) / Pr(A(D \\ z) in T) <= e^ε``. We cannot test
every T, but every *attack* that looks at one number per model is such a set. The audit:

1. train ``N`` models with the unlearning method and ``N`` by retraining on ``D \\ D_f``
   (:mod:`course_lib.stacked` trains them all at once);
2. score every forget example under every model with the logit-scaled confidence
   ``log p_y - log sum_{k != y} p_k`` (:func:`logit_scaled_confidence`): ``[N, n_forget]``;
3. per example, turn the false-positive / false-negative rates of attacks into an ε
   (:func:`epsilon_per_example`);
4. bucket the ε values and average into a forgetting quality ``F`` (:func:`forgetting_quality`),
   and multiply by the utility ratios (:func:`final_score`).

Two estimators (``estimator=``):

* ``"course"`` (default): every one-threshold attack "score > t => a" *and* its reverse, at every
  split of the pooled scores, with each rate replaced by its one-sided Clopper-Pearson upper
  limit (``confidence=0.95``) or, with ``confidence=None``, by the plain rate clamped to at least
  ``1/N`` (the plain estimate). Symmetric in a and b, depends on ranks only, capped near
  ``log N`` (:func:`epsilon_cap`), and never gives zero credit. The plain estimate is biased
  upwards: two samples of the *same* distribution read ε of about 1.4 for any N (F about 0.22
  with N = 32), because the extreme thresholds rest on a handful of models; the 95% version
  reads about 0 there, at the price of a lower cap (2.3 for N = 32, 4.4 for N = 256).
  "95%" holds *per rate*: one attack's ε uses two rates (so at least 90% for that attack, by a
  union bound), the thresholds are chosen from the same scores, and the maximum over all
  attacks carries no confidence guarantee. Read it as a deflated estimate, not a certificate.
* ``"competition"``: the rule of the competition's public scoring code
  (google-deepmind/unlearning_evaluation, ``metric.py``: ``_get_single_threshold_rates``,
  ``_get_double_threshold_rates``, ``_get_epsilons``, ``compute_forget_score_from_confs``;
  Triantafillou et al. 2024, arXiv:2406.09073, describe it in words). It differs in four ways:
  (i) besides one-threshold attacks it runs two-threshold *interval* attacks "score in [l, r]
  => the population with the smaller range"; (ii) one-threshold attacks go one way only:
  "score >= t => the population with the larger median"; (iii) an attack whose FPR or FNR is 0
  is discarded (the course clamps the rate to 1/N); (iv) a perfect split (FPR = FNR = 0) or a
  population whose range is under 1% of the other's gives ε = 50 (:data:`COMPETITION_EPSILON`),
  which its bucketing scores 0. Its thresholds are a grid (100 per score unit; the one-threshold
  grid in float32, as ``torch.linspace`` makes it there; intervals only near the narrower
  population, of width within 2 of its range) and its rates and ε are float32; we reproduce all
  of that (rates are ``k/N`` rounded to float32; a GPU mean may differ in the last bit when N is
  not a power of two). Its bias is of the same kind as the plain estimate's: identical
  unit-variance distributions with N = 32 read ε of about 1.6 (F about 0.18; 0.17 with N = 512).
  Because the grid is in score units, this depends on the scale of the scores (F about 0.11 for
  standard deviation 0.3, 0.21 for 10), unlike the course's rank-based estimators.

Why they differ: the course asks "what ε can N models show?" (rank-based, both directions,
rates never 0 so ε stays finite and capped); the competition ranks submissions, so it punishes
collapse or separation outright (zero credit) and ignores attacks that rest on an empty count.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .validation import check_delta, check_int, check_number

#: Bucket width of the forgetting quality: per-example credit ``2 / 2**n`` with ``n`` the 1-based
#: bucket ``1 + floor(ε / 0.5)``, so ε in [0, 0.5) earns 1, [0.5, 1) earns 1/2, ...
BIN_WIDTH = 0.5
#: The estimators of :func:`epsilon_per_example` (see the module docstring).
ESTIMATORS = ("course", "competition")
#: The competition's ε for a perfectly separated or collapsed example (its ``EPSILON_CAP``).
COMPETITION_EPSILON = 50.0
_PER_UNIT, _BUFFER, _N_LEFT = 100, 2.0, 400    # the competition's threshold grid


def logit_scaled_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log p_y - log sum_{k != y} p_k`` from logits, computed stably.

    ``logits``: ``[..., n, C]`` (e.g. ``[n_models, n_examples, C]``), ``y``: ``[n]`` int labels.
    Returns ``[..., n]`` float64 (as ``z_y - logsumexp_{k != y} z_k``, so it never saturates
    the way ``log(p / (1 - p))`` does once ``p`` rounds to 1).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("logits and y must be torch tensors")
    if logits.ndim < 2 or y.ndim != 1 or logits.shape[-2] != y.shape[0]:
        raise ValueError(f"need logits [..., n, C] and labels [n]; got {tuple(logits.shape)} and {tuple(y.shape)}")
    C = logits.shape[-1]
    if C < 2:
        raise ValueError(f"need at least 2 classes, got {C}")
    if y.dtype.is_floating_point or bool(((y < 0) | (y >= C)).any()):
        raise ValueError(f"labels must be integer class indices in [0, {C})")
    z = logits.detach().double()
    idx = y.to(z.device).long().expand(*z.shape[:-1]).unsqueeze(-1)
    z_y = z.gather(-1, idx).squeeze(-1)
    others = z.scatter(-1, idx, float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1)


def _as_scores(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_models, n_examples], got shape {arr.shape}; "
                         f"for a single example pass scores[:, None]")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} has {arr.shape[0]} model(s): an ε audit needs n_models >= 2 "
                         f"(and realistically >= 32) per population")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no examples")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite scores; use logit_scaled_confidence, "
                         f"which stays finite")
    return arr.astype(np.float64)


def _check_confidence(confidence: float | None) -> float | None:
    if confidence is None:
        return None
    return check_number(confidence, "confidence (None for the plain estimate)", 0.5, 1.0, hi_open=True)


def _check_estimator(estimator) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}")
    return estimator


def _rate_tables(n: int, confidence: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Rates used for a count ``k = 0..n`` of ``n`` models, as (numerator, denominator) tables.

    Plain estimate: ``k / n``, with the denominator clamped to ``1 / n`` (the smallest
    non-zero rate N models can show). Confidence bound: the one-sided Clopper-Pearson upper
    limit of the rate, which is never 0, in both places.
    """
    k = np.arange(n + 1, dtype=np.float64)
    if confidence is None:
        return k / n, np.maximum(k / n, 1.0 / n)
    from scipy.stats import beta

    upper = np.ones(n + 1)
    upper[:n] = beta.ppf(confidence, k[:n] + 1, n - k[:n])
    return upper, upper


def epsilon_cap(n_models: int, delta: float = 1e-5, confidence: float | None = 0.95) -> float:
    """The largest ε the course estimator can report with ``n_models`` per population
    (two perfectly separated samples): ``log((1 - δ - r0) / r0')`` with the rates of a zero
    count. Plain estimate: ``log((1 - δ) n)``; 95% bound: 2.32 for n = 32, 4.44 for n = 256, and 0
    for n < 5 (so few models cannot show any ε with 95% confidence). The competition's estimator
    has no such cap: its largest finite ε is about ``log(n - 1)``, and it flags a perfect split
    with :data:`COMPETITION_EPSILON`."""
    n_models = check_int(n_models, "n_models", 2)
    num, den = _rate_tables(int(n_models), _check_confidence(confidence))
    slack = 1.0 - check_delta(delta) - num[0]
    return float(max(0.0, math.log(slack / den[0]))) if slack > 0 else 0.0


def epsilon_per_example(scores_a, scores_b, delta: float = 1e-5, *, estimator: str = "course",
                        confidence: float | None = 0.95) -> np.ndarray:
    """Per-example ε from two populations of scores by threshold attacks.

    ``scores_a``, ``scores_b``: ``[n_models, n_examples]`` (same shape, finite): the
    logit-scaled confidences of the forget examples under ``n_models`` unlearned (a) and
    ``n_models`` retrained (b) models. Returns ``[n_examples]`` float64.

    ``estimator="course"`` (default): for one example and every threshold ``t`` between the
    pooled scores, the attack "score > t => a" has ``FPR = Pr_b(score > t)`` and ``FNR =
    Pr_a(score <= t)``; an (ε, δ) guarantee in both directions forces ``ε >= log((1 - δ - FPR) /
    FNR)`` and ``ε >= log((1 - δ - FNR) / FPR)``. We take the largest value over all thresholds,
    over the reversed attack "score <= t => a" too (so the result is symmetric in a and b), and
    over 0; each value lies in ``[0, epsilon_cap(n_models, delta, confidence)]``.
    ``confidence=0.95``: each rate is replaced by its one-sided Clopper-Pearson upper limit, so
    each *rate* is bounded with 95% confidence (not the maximum over attacks: see the module
    docstring); about 0 for two samples of one distribution. ``confidence=None``: the plain
    estimate, rates clamped to at least ``1/n_models`` so ε stays finite (about 1.4 there).

    ``estimator="competition"``: the competition's rule (module docstring: interval attacks,
    one direction, attacks with a zero rate discarded, ε = 50 for a perfect split or a
    population whose range is under 1% of the other's). Values lie in ``[0, log(n - 1)) ∪
    {50}``. Where a is "unlearned" matters only for ties: equal medians make a the positive
    class, as there. Choices where the competition's code gives no answer: if every attack is
    discarded (e.g. two identical constant populations, where that code stops with an assertion
    error) we return 0. ``confidence`` does not apply: leave it at its default or pass None;
    any other value is refused rather than silently ignored. Cost: about 1.6e5 interval attacks
    per example (a loop over examples, some 15 ms each on a CPU), against microseconds for "course".
    """
    a = _as_scores(scores_a, "scores_a")
    b = _as_scores(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a {a.shape} and scores_b {b.shape} must have the same shape "
                         f"[n_models, n_examples]")
    delta = check_delta(delta)
    if _check_estimator(estimator) == "competition":
        if confidence is not None and confidence != 0.95:
            raise ValueError(f"the competition's estimator has no confidence bound; leave confidence at "
                             f"its default or pass None, got {confidence!r}")
        table = _competition_table(a.shape[0], delta)
        return np.array([_competition_example(a[:, j], b[:, j], table) for j in range(a.shape[1])])
    return _course_epsilon(a, b, delta, _check_confidence(confidence))


def _course_epsilon(a: np.ndarray, b: np.ndarray, delta: float, confidence: float | None) -> np.ndarray:
    n, m = a.shape
    if epsilon_cap(n, delta, confidence) == 0.0:
        warnings.warn(f"with {n} models per population the {confidence:.0%} lower bound on ε is always 0; "
                      f"use more models (the competition used 512) or confidence=None", stacklevel=3)
    num, den = _rate_tables(n, confidence)
    slack = 1.0 - delta - num
    with np.errstate(divide="ignore"):
        # table[kx, ky] = log((1 - δ - rate(kx)) / rate(ky)); -inf where the numerator is <= 0
        table = np.where(slack[:, None] > 0, np.log(np.clip(slack, 1e-300, None)[:, None] / den[None, :]), -np.inf)

    pooled = np.concatenate([a, b], axis=0)                     # [2n, m]
    order = np.argsort(pooled, axis=0, kind="stable")
    s = np.take_along_axis(pooled, order, axis=0)
    from_b = (order >= n).astype(np.int64)
    kb_le = np.cumsum(from_b, axis=0)                           # #b <= t at each sorted position
    ka_le = np.cumsum(1 - from_b, axis=0)                       # #a <= t
    last_of_tie = np.ones_like(s, dtype=bool)
    last_of_tie[:-1] = s[:-1] < s[1:]                           # only there is a threshold a real split
    ka_le = np.where(last_of_tie, ka_le, 0)                     # other positions: harmless t = -inf split
    kb_le = np.where(last_of_tie, kb_le, 0)
    ka_gt, kb_gt = n - ka_le, n - kb_le
    # attack "> t => a": FPR count kb_gt, FNR count ka_le; reversed attack: ka_gt and kb_le
    eps = np.maximum.reduce([table[kb_gt, ka_le].max(0), table[ka_le, kb_gt].max(0),
                             table[ka_gt, kb_le].max(0), table[kb_le, ka_gt].max(0)])
    return np.maximum(eps, 0.0)


def _competition_table(n: int, delta: float) -> np.ndarray:
    """ε of an attack with ``tp`` true and ``fp`` false positives out of ``n`` + ``n``, as
    ``table[tp, fp]``, in float32 as the competition computes it: ``inf`` for a perfect split,
    NaN for a discarded attack (FPR or FNR is 0, or both ε formulas undefined)."""
    k = np.arange(n + 1).astype(np.float32)
    fnr = ((np.float32(n) - k) / np.float32(n))[:, None]         # by tp; k/n rounded to float32
    fpr = (k / np.float32(n))[None, :]                           # by fp
    keep = np.float32(1.0 - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(keep - fpr) - np.log(fnr)
        e2 = np.log(keep - fnr) - np.log(fpr)
    eps = np.clip(np.fmax(e1, e2), 0, None)                      # fmax: NaN only if both are NaN
    eps[(fnr * fpr) == 0] = np.nan
    eps[n, 0] = np.inf
    return eps


def _competition_example(u: np.ndarray, r: np.ndarray, table: np.ndarray) -> float:
    """The competition's ε for one example: ``u`` unlearned, ``r`` retrained scores ``[n]``."""
    n = len(u)
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    d_pos, d_neg = np.ptp(pos), np.ptp(neg)
    small, large = min(d_pos, d_neg), max(d_pos, d_neg)
    if large > 0 and small / large < 0.01:                       # one population collapsed: flag
        return COMPETITION_EPSILON
    # count both populations at once: v is the pooled sorted scores, cum[:, i] = (#pos, #neg) below v[i]
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    v = np.concatenate([pos, neg])[order]
    cum = np.zeros((2, 2 * n + 1), dtype=np.int64)
    cum[0, 1:], cum[1, 1:] = np.cumsum(order < n), np.cumsum(order >= n)
    # (ii) one threshold, one direction: "score >= t => pos", t on a float32 grid from torch.linspace
    t = torch.linspace(v[0], v[-1], math.ceil((v[-1] - v[0]) * _PER_UNIT)).double().numpy()
    counts = [(n - cum[:, np.searchsorted(v, t, side="left")]).reshape(2, -1)]
    # (i) intervals "l <= score <= r => peaky" (the smaller range; ties: neg), width within 2 of it
    peaky = 1 if d_pos >= d_neg else 0                           # row of cum: 0 = pos, 1 = neg
    p_lo, p_hi = (neg if peaky else pos).min(), (neg if peaky else pos).max()
    right = np.linspace((p_lo + small) - _BUFFER, p_hi + _BUFFER,
                        math.ceil(((p_hi + _BUFFER) - ((p_lo + small) - _BUFFER)) * _PER_UNIT))
    left = np.linspace((right - small) - _BUFFER, (right - small) + _BUFFER, _N_LEFT, axis=-1)
    i_r = np.searchsorted(v, right, side="right")[:, None]      # #pooled <= r
    i_l = np.minimum(np.searchsorted(v, left, side="left"), i_r)  # #pooled < l (l > r: empty interval)
    pairs = np.flatnonzero(np.bincount((i_l * (2 * n + 1) + i_r).ravel(), minlength=(2 * n + 1) ** 2))
    inside = cum[:, pairs % (2 * n + 1)] - cum[:, pairs // (2 * n + 1)]
    counts.append(inside[[peaky, 1 - peaky]])                    # (tp, fp): the peaky one is positive
    # (iii), (iv): the table discards attacks with a zero rate and gives inf to a perfect split
    tp, fp = np.concatenate(counts, axis=1)
    used = np.zeros_like(table, dtype=bool)
    used[tp, fp] = True
    vals = table[used & ~np.isnan(table)]
    return float(min(vals.max(), COMPETITION_EPSILON)) if vals.size else 0.0


def forgetting_quality(eps, n_models: int, *, bin_width: float = BIN_WIDTH, estimator: str = "course") -> float:
    """Forgetting quality ``F = mean_s credit(ε_s)``, with credit ``2 / 2**n(ε)`` and the bucket
    ``n(ε) = 1 + floor(ε / bin_width)``: ε < 0.5 earns full credit, [0.5, 1) half, and so on.

    ``eps``: ``[n_examples]`` per-example ε (from :func:`epsilon_per_example` with the same
    ``estimator``); ``n_models``: models per population in that audit. The two rules differ only
    at the top:

    * ``"course"``: the bucket is capped at ``1 + floor(log(n_models) / bin_width)``, because no
      audit with ``n_models`` models can tell ε values above ``log(n_models)`` apart; every
      example earns some credit, F in (0, 1]. (512 models: 13 buckets, the last from ε = 6.)
      Note the floor this implies: with the 95% bound and 32 models no ε exceeds 2.32, so F
      cannot drop below 2/2**5 = 0.0625.
    * ``"competition"``: buckets of width 0.5 up to ``ceil(log(n_models - 1))`` (4 for 32 models,
      8 buckets; 7 for 512, 14 buckets), and ε at or beyond that earns **zero** credit, so a flagged
      example (ε = 50) scores 0 and F lies in [0, 1]. Only ``bin_width=0.5`` is accepted here.

    An ε of exactly 50 under the course rule is refused: it is the competition's flag, and the
    course's buckets would give it credit.
    """
    e = eps.detach().cpu().numpy() if isinstance(eps, torch.Tensor) else np.asarray(eps, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"eps must be a non-empty 1-D array [n_examples], got shape {e.shape}")
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("eps must be >= 0 and not NaN (use epsilon_per_example)")
    n_models = check_int(n_models, "n_models", 2)
    bin_width = check_number(bin_width, "bin_width", 0.0, lo_open=True)
    if _check_estimator(estimator) == "competition":
        if bin_width != BIN_WIDTH:
            raise ValueError(f"the competition's buckets have width {BIN_WIDTH}; got bin_width={bin_width!r}")
        n_buckets = 2 * math.ceil(math.log(int(n_models) - 1))
        bucket = np.floor(np.minimum(e, 1e6) / BIN_WIDTH)       # 0-based
        return float(np.mean(np.where(bucket < n_buckets, 2.0 ** -bucket, 0.0)))
    if np.any(e == COMPETITION_EPSILON):
        raise ValueError("eps contains 50, the competition estimator's flag for a collapsed or separated "
                         "example; score those with estimator='competition'")
    top = 1 + int(math.floor(math.log(int(n_models)) / bin_width))
    bins = np.minimum(np.floor(np.minimum(e, 1e6) / bin_width), top - 1).astype(np.int64) + 1
    return float(np.mean(2.0 / 2.0 ** bins))


def final_score(forgetting: float, ra_unlearned: float, ra_retrained: float,
                ta_unlearned: float, ta_retrained: float) -> float:
    """The competition's score ``F * (RA_u / RA_r) * (TA_u / TA_r)``.

    ``forgetting`` in [0, 1] (0 is reachable under the competition's rule). Accuracies in any
    common unit (percent or fraction), averaged over each population's models. A method that
    forgets well but loses accuracy is penalised by the ratios.
    """
    forgetting = check_number(forgetting, "forgetting quality", 0.0, 1.0)
    vals = dict(ra_unlearned=ra_unlearned, ra_retrained=ra_retrained,
                ta_unlearned=ta_unlearned, ta_retrained=ta_retrained)
    for k, v in vals.items():
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{k} must be a finite accuracy >= 0, got {v!r}")
    if ra_retrained <= 0 or ta_retrained <= 0:
        raise ValueError("the retrained accuracies must be > 0 (they are the denominators)")
    return float(forgetting) * float(ra_unlearned) / float(ra_retrained) * float(ta_unlearned) / float(ta_retrained)
