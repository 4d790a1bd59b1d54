"""Empirical ε audit of unlearning, in the spirit of the NeurIPS 2023 unlearning competition.

ε-approximate unlearning (source 001, "Definition of Unlearning (2)") asks that for every set
of models T, ``e^-ε <= Pr(U(D, z, A(D)) in T) / Pr(A(D \\ z) in T) <= e^ε``. We cannot test
every T, but every *attack* that looks at one number per model is such a set. The audit:

1. train ``N`` models with the unlearning method and ``N`` by retraining on ``D \\ D_f``
   (:mod:`course_lib.stacked` trains them all at once);
2. score every forget example under every model with the logit-scaled confidence
   ``log p_y - log sum_{k != y} p_k`` (:func:`logit_scaled_confidence`): ``[N, n_forget]``;
3. per example, run every threshold attack "score > t => population a" (and the reverse)
   and turn its false-positive / false-negative rates into a lower bound on ε
   (:func:`epsilon_per_example`);
4. bucket the ε values and average into a forgetting quality ``F`` in (0, 1]
   (:func:`forgetting_quality`), and multiply by the utility ratios (:func:`final_score`).

Resolution. With ``N`` models per population the smallest non-zero rate is ``1/N``, so no
audit with ``N`` models can report an ε much above ``log N`` (:func:`epsilon_cap`). The
plain estimate (``confidence=None``, as in the competition) is also biased upwards: two
samples from the *same* distribution give ε of about 1.4 on average for any ``N``, because
the extreme thresholds rest on a handful of models. The default therefore replaces each rate
by its one-sided Clopper-Pearson upper bound at 95% (as privacy audits do): the result is a
high-confidence lower bound on ε, about 0 for identical distributions, at the price of a
lower cap (2.3 for ``N = 32``, 4.4 for ``N = 256``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

#: The competition's bucketing (from public copies of its evaluation code): bins of width 0.5
#: starting at 0, per-example credit 2 / 2**n with n the 1-based bin index, so ε in [0, 0.5)
#: earns 1, [0.5, 1) earns 1/2, ...; 13 bins (ε >= 6 earns 2**-12) for its 512 models.
BIN_WIDTH = 0.5


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


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float, np.floating)) and 0.0 < float(delta) < 1.0):
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    return float(delta)


def _check_confidence(confidence: float | None) -> float | None:
    if confidence is None:
        return None
    if not (isinstance(confidence, (int, float, np.floating)) and 0.5 <= float(confidence) < 1.0):
        raise ValueError(f"confidence must lie in [0.5, 1) (or be None for the plain estimate), got {confidence!r}")
    return float(confidence)


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
    """The largest ε :func:`epsilon_per_example` can report with ``n_models`` per population
    (two perfectly separated samples): ``log((1 - δ - r0) / r0')`` with the rates of a zero
    count. Plain estimate: ``log((1 - δ) n)``; 95% bound: 2.32 for n = 32, 4.44 for n = 256, and 0
    for n < 5 (so few models cannot show any ε with 95% confidence)."""
    if not isinstance(n_models, (int, np.integer)) or n_models < 2:
        raise ValueError(f"n_models must be an integer >= 2, got {n_models!r}")
    num, den = _rate_tables(int(n_models), _check_confidence(confidence))
    slack = 1.0 - _check_delta(delta) - num[0]
    return float(max(0.0, math.log(slack / den[0]))) if slack > 0 else 0.0


def epsilon_per_example(scores_a, scores_b, delta: float = 1e-5, *, confidence: float | None = 0.95) -> np.ndarray:
    """Per-example ε from two populations of scores by threshold attacks.

    ``scores_a``, ``scores_b``: ``[n_models, n_examples]`` (same shape, finite; e.g. the
    logit-scaled confidences of the forget examples under ``n_models`` unlearned and
    ``n_models`` retrained models). Returns ``[n_examples]`` float64, each in
    ``[0, epsilon_cap(n_models, delta, confidence)]``.

    For one example and every threshold ``t`` between the pooled scores, the attack "score > t
    => a" has ``FPR = Pr_b(score > t)`` and ``FNR = Pr_a(score <= t)``; an (ε, δ) guarantee in
    both directions forces ``ε >= log((1 - δ - FPR) / FNR)`` and ``ε >= log((1 - δ - FNR) /
    FPR)``. We take the largest value over all thresholds, over the reversed attack "score <=
    t => a" too (so the result is symmetric in a and b), and over 0.

    ``confidence=0.95`` (default): each rate is replaced by its one-sided Clopper-Pearson
    upper limit, giving a lower bound on ε that holds with high confidence; about 0 when the
    two populations come from the same distribution. ``confidence=None``: the plain estimate
    of the competition, with rates clamped to at least ``1/n_models`` so ε stays finite; it
    reads about 1.4 even for identical distributions (see the module docstring).
    """
    a = _as_scores(scores_a, "scores_a")
    b = _as_scores(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a {a.shape} and scores_b {b.shape} must have the same shape "
                         f"[n_models, n_examples]")
    delta = _check_delta(delta)
    confidence = _check_confidence(confidence)
    n, m = a.shape
    if epsilon_cap(n, delta, confidence) == 0.0:
        warnings.warn(f"with {n} models per population the {confidence:.0%} lower bound on ε is always 0; "
                      f"use more models (the competition used 512) or confidence=None", stacklevel=2)
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


def forgetting_quality(eps, n_models: int, *, bin_width: float = BIN_WIDTH) -> float:
    """Forgetting quality ``F = mean_s 2 / 2**n(ε_s)`` in (0, 1].

    ``eps``: ``[n_examples]`` per-example ε (from :func:`epsilon_per_example`); ``n_models``:
    models per population in that audit. The bin index is ``n(ε) = 1 + floor(ε / bin_width)``,
    so ε < 0.5 earns full credit, [0.5, 1) half, and so on; it is capped at
    ``1 + floor(log(n_models) / bin_width)``, because no audit with ``n_models`` models can tell
    ε values above ``log(n_models)`` apart. With the competition's 512 models this gives its
    13 bins (bin edges 0, 0.5, ..., 6).

    The bucketing (width 0.5, credit 2/2^n, 13 bins for 512 models) is taken from public copies
    of the competition's evaluation code, not from the organisers' own text; check their
    description if you need it to the letter. Note the floor it implies: with the default 95%
    bound and 32 models no ε exceeds 2.32, so F cannot drop below 2/2**5 = 0.0625.
    """
    e = eps.detach().cpu().numpy() if isinstance(eps, torch.Tensor) else np.asarray(eps, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"eps must be a non-empty 1-D array [n_examples], got shape {e.shape}")
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("eps must be >= 0 and not NaN (use epsilon_per_example)")
    if not isinstance(n_models, (int, np.integer)) or n_models < 2:
        raise ValueError(f"n_models must be an integer >= 2, got {n_models!r}")
    if not (isinstance(bin_width, (int, float)) and bin_width > 0):
        raise ValueError(f"bin_width must be > 0, got {bin_width!r}")
    top = 1 + int(math.floor(math.log(int(n_models)) / bin_width))
    bins = np.minimum(np.floor(np.minimum(e, 1e6) / bin_width), top - 1).astype(np.int64) + 1
    return float(np.mean(2.0 / 2.0 ** bins))


def final_score(forgetting: float, ra_unlearned: float, ra_retrained: float,
                ta_unlearned: float, ta_retrained: float) -> float:
    """The competition's score ``F * (RA_u / RA_r) * (TA_u / TA_r)``.

    Accuracies in any common unit (percent or fraction), averaged over each population's models.
    A method that forgets well but loses accuracy is penalised by the ratios.
    """
    if not (0.0 < float(forgetting) <= 1.0):
        raise ValueError(f"forgetting quality must lie in (0, 1], got {forgetting!r}")
    vals = dict(ra_unlearned=ra_unlearned, ra_retrained=ra_retrained,
                ta_unlearned=ta_unlearned, ta_retrained=ta_retrained)
    for k, v in vals.items():
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{k} must be a finite accuracy >= 0, got {v!r}")
    if ra_retrained <= 0 or ta_retrained <= 0:
        raise ValueError("the retrained accuracies must be > 0 (they are the denominators)")
    return float(forgetting) * float(ra_unlearned) / float(ra_retrained) * float(ta_unlearned) / float(ta_retrained)
