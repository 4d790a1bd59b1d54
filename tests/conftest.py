"""Shared fixtures. Tests always run in FAST mode and quietly, whatever the machine."""
import os

os.environ["COURSE_FAST"] = "1"
os.environ.setdefault("COURSE_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("COURSE_HEADLESS", "1")   # explorers draw their static view; no live widgets
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # one core per worker: one thread for every pool (torch/OpenMP, OpenBLAS, MKL, numba), here and in
    # every kernel a test starts; an idle worker of a second pool spins and slows its neighbour 3-4x
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import config, data, models, train  # noqa: E402


@pytest.fixture(autouse=True)
def _forget_session_fast():
    """device.setup(fast=...) remembers FAST for the session; no test leaks it to the next."""
    yield
    config.set_fast(None)


@pytest.fixture(scope="session")
def digits():
    return data.load("digits")


@pytest.fixture(scope="session")
def trained(digits):
    """A small CNN trained on all digits (about 1.5 s)."""
    m = models.seeded(lambda: models.make_model("small_cnn", 10, digits.input_shape), 0)
    train.fit(m, digits.X_train, digits.y_train, epochs=10, lr=0.05, seed=0)
    return m


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
