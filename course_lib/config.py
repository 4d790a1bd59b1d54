"""Course-wide settings: the FAST switch, seeds, paths, and when to stay quiet.

Lecture notebooks receive ``FAST`` as a papermill parameter; graded notebooks cannot
(nbgrader runs them as they are), so they read the environment variable ``COURSE_FAST``.
Both end up in :func:`fast_mode`.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
#: Cache for downloaded data sets (CIFAR-10/100, SVHN). Override with ``COURSE_DATA``.
DATA_DIR = Path(os.environ.get("COURSE_DATA", ROOT / "data"))
#: Where the main job writes executed notebooks and HTML.
BUILD_DIR = ROOT / "build"
DEFAULT_SEED = 0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_flag(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not understood: use 1 (on) or 0 (off).")


_session_fast: bool | None = None


def set_fast(fast: bool | None) -> None:
    """Remember the notebook's FAST switch for this Python session (``device.setup`` calls it),
    so that library code asking :func:`fast_mode` without an argument (progress bars, for
    instance) agrees with the notebook's parameter. ``None`` forgets it."""
    global _session_fast
    _session_fast = None if fast is None else bool(fast)


def fast_mode(fast: bool | None = None) -> bool:
    """Resolve the FAST switch.

    An explicit ``fast`` wins; then the value a notebook gave :func:`set_fast` (through
    ``device.setup(fast=...)``); then ``COURSE_FAST`` (``1``/``0``); otherwise FAST exactly when
    no CUDA GPU is present (a laptop runs the small experiment, a GPU the real one).
    """
    if fast is not None:
        return bool(fast)
    if _session_fast is not None:
        return _session_fast
    env = _env_flag("COURSE_FAST")
    if env is not None:
        return env
    return not torch.cuda.is_available()


# ------------------------------------------------------------------------- smoke runs
#: Caps of a *smoke run* (``COURSE_SMOKE=1``): the full-mode code path with the work cut to sizes and
#: loop counts that a CPU finishes in seconds, so that CI executes every full-mode branch (ResNet-18,
#: augmentation, the full hyper-parameter tables) on a miniature CIFAR-10. Only sizes and loop counts
#: change: every call that trains still trains (``SMOKE_STEPS`` optimisation steps), every sweep
#: still runs (its first and last points), every data set still loads (its first rows).
SMOKE_STEPS = 2          # optimisation steps per training call (train.sgd_steps, engine plans, DP, stacks)
SMOKE_BATCH = 16         # largest mini-batch of a single-model training call
SMOKE_ROWS = (256, 128)  # largest training and test sets data.load returns
SMOKE_ITERATIONS = 2     # largest count of other iterative loops (SynFlow scoring, IMP rounds)
SMOKE_EVAL_ROWS = 24     # largest set one evaluation predicts on (train.accuracy; metrics.evaluate per set)


def smoke() -> bool:
    """True in a smoke run: ``COURSE_SMOKE=1`` (see :data:`SMOKE_STEPS` and its neighbours)."""
    return bool(_env_flag("COURSE_SMOKE"))


def smoke_cap(n: int, cap: int) -> int:
    """``min(n, cap)`` in a smoke run, ``n`` otherwise (a size or a loop count): for notebooks that cut
    their own sizes; library loops read :func:`budget` instead."""
    return min(int(n), int(cap)) if smoke() else n


def smoke_sweep(values, keep: int = 2) -> list:
    """A sweep's points: all of them, or in a smoke run its first and last (``keep=2``) or its
    first (``keep=1``), so that both ends of every sweep still run."""
    values = list(values)
    if not smoke() or len(values) <= keep:
        return values
    return values[:1] if keep == 1 else values[:keep - 1] + values[-1:]


@dataclass(frozen=True)
class Budget:
    """How much work one call may do: the caps a run applies, ``None`` meaning uncapped.

    The one object the library's two training loops (:func:`course_lib.train.sgd_steps`,
    :func:`course_lib.engine.batch_plan` for stacks, shards and adapters), :func:`course_lib.data.load`
    and the cost models (:mod:`course_lib.exact.costs`) read, so that a capped run reports exactly the
    work it did. :func:`budget` gives the session's: uncapped, or the smoke caps under ``COURSE_SMOKE=1``.

    ``steps``: optimisation steps per training call; ``batch``: rows per mini-batch; ``rows``: the
    largest training and test sets a data set loads; ``iterations``: other iterative loops (SynFlow
    scoring, IMP rounds, greedy unit picks); ``eval_rows``: rows one evaluation predicts on.
    """

    steps: int | None = None
    batch: int | None = None
    rows: tuple[int, int] | None = None
    iterations: int | None = None
    eval_rows: int | None = None

    @property
    def capped(self) -> bool:
        return any(v is not None for v in (self.steps, self.batch, self.rows, self.iterations, self.eval_rows))

    @staticmethod
    def _cap(n, cap):
        return n if cap is None else min(int(n), int(cap))

    def cap_steps(self, n: int) -> int:
        """Steps a training call of ``n`` planned steps takes."""
        return self._cap(n, self.steps)

    def cap_batch(self, n: int) -> int:
        """Rows per mini-batch for a requested ``batch_size`` of ``n``."""
        return self._cap(n, self.batch)

    def cap_iterations(self, n: int) -> int:
        return self._cap(n, self.iterations)

    def cap_eval_rows(self, n: int) -> int:
        return self._cap(n, self.eval_rows)

    def cap_rows(self, n_train: int, n_test: int) -> tuple[int, int]:
        if self.rows is None:
            return n_train, n_test
        return self._cap(n_train, self.rows[0]), self._cap(n_test, self.rows[1])


#: No caps: every loop runs as asked.
UNCAPPED = Budget()
#: A smoke run's caps (the SMOKE_* constants above).
SMOKE = Budget(steps=SMOKE_STEPS, batch=SMOKE_BATCH, rows=SMOKE_ROWS, iterations=SMOKE_ITERATIONS,
               eval_rows=SMOKE_EVAL_ROWS)


def budget() -> Budget:
    """The session's :class:`Budget`: :data:`SMOKE` in a smoke run (``COURSE_SMOKE=1``), else :data:`UNCAPPED`."""
    return SMOKE if smoke() else UNCAPPED


def in_ci() -> bool:
    """True under continuous integration (the ``CI`` variable is set to a true value)."""
    return bool(_env_flag("CI"))


def show_progress(fast: bool | None = None) -> bool:
    """Progress bars are drawn unless we are in CI, in FAST mode, or ``COURSE_QUIET=1``."""
    if _env_flag("COURSE_QUIET") or in_ci():
        return False
    return not fast_mode(fast)


def seed_everything(seed: int = DEFAULT_SEED) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh CPU generator seeded with ``seed``."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed))


def derive_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integer parts, e.g. ``derive_seed(seed, shard, slice)``.

    Independent of Python's hash randomisation and of the order in which streams are used,
    so a random stream named by its parts can be re-created at any later time.
    """
    ss = np.random.SeedSequence([int(p) for p in parts])
    hi, lo = (int(v) for v in ss.generate_state(2, dtype=np.uint32))
    return ((hi << 32) | lo) & (2**63 - 1)
