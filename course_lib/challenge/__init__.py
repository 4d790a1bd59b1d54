"""The capstone challenge (assignment a08): an unlearning algorithm judged by the rule of the NeurIPS 2023
machine-unlearning competition (Triantafillou et al. 2024, arXiv:2406.09073), against the class and the
baselines.

A submission is one function, the competition starting kit's signature with tensors instead of data
loaders (loaders cannot cross the grader's sandbox as plain data)::

    def unlearning(net, retain, forget, val) -> nn.Module:
        # net: a trained original (an nn.Module); retain, forget, val: (X, y) tensor pairs
        ...

The protocol (:func:`populations`, :func:`run_submission`, :func:`score`):

1. A :class:`Split` names a forgetting scenario of :mod:`course_lib.scenarios` (default ``random``: the
   course's memorising benchmark, so that there is something to forget) and a seed; it fixes the
   forget set, the retain set, a validation set ``val`` (a third of the held-out rows, handed to the
   submission) and the test set (the other two thirds, never handed out).
2. ``N`` originals are trained on the whole training set and ``N`` models on the retain set only
   (Retrain), plus ``N`` more retrained models with other seeds: the *reference* that scores Retrain
   itself as a baseline. In FAST mode they are trained at once on the many-model engine
   (:class:`course_lib.stacked.StackedModels`); ResNet-18 (batch norm) one after another. They are built
   once per course build and cached in ``build/challenge/`` with a SHA-256 checksum (a file that does not
   match is rebuilt).
3. The submission runs once on each original. Per forget example, ε comes from the logit-scaled
   confidences of the ``N`` unlearned against the ``N`` retrained models with the competition's
   estimator (:func:`course_lib.audit.epsilon_per_example` with ``estimator="competition"``); the
   forgetting quality ``F`` from its bucketing; the final score is ``F x (RA_u / RA_r) x (TA_u / TA_r)``
   (RA on the retain set, TA on the test set, each averaged over the population's models).
4. **Compute budget**: the ``N`` runs together may take at most :data:`BUDGET_SHARE` of the wall time of
   ``N`` Retrains, with Retrain timed on the same machine in the same grading run (FAST mode; in full
   mode the build's timing of one Retrain is used). A submission past the budget is stopped at that
   point and refused (no score, no points).

Numbers to know (FAST, ``N = 32``): the competition's ε takes values in ``[0, log(N - 1))`` (below 3.43)
or 50 (a perfect split), so ``F`` has ``2 ceil(log(N - 1)) = 8`` buckets; two populations drawn from the
*same* distribution do not score ``F = 1`` but about 0.2 (the estimator's bias at small ``N``, lecture
01b): that is Retrain's own row.
"""
from __future__ import annotations

from .protocol import (DELTA, N_MODELS, PUBLIC, SMOKE_N, VAL_SHARE, Populations, Split, cache_dir,  # noqa: F401
                          epsilon_resolution, populations, public_task, retrain_seconds_now)
from .scoring import (BASELINES, BUDGET_SHARE, Result, baseline_function, baselines, grade,  # noqa: F401
                      run_submission, score, table)
from .board import (COLUMNS, RECORD_KEY, class_leaderboard, class_record, format_rows,  # noqa: F401
                    leaderboard_rows, write_leaderboard)
