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


#: Test files whose tests run for minutes (a notebook, an nbgrader batch): started first, so that with
#: ``-n 2 --dist worksteal`` the two workers finish together instead of one idling behind the last
#: long test. Only the order changes; nothing is skipped.
_LONG_FIRST = ("test_full_path.py", "test_grading_suite.py", "test_hub.py", "test_grade.py", "test_notebooks.py",
               "test_nbgrader.py", "test_grading_scratch.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name if hasattr(item, "path") else ""
        tier = _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)
        lecture_first = 0 if "notebooks/" in item.nodeid else 1   # lectures run longer than solutions
        return (tier, lecture_first)

    items[:] = [it for _, it in sorted(enumerate(items), key=lambda p: (rank(p[1]), p[0]))]
