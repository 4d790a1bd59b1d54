"""Lecture 08's explorer callback (the code cell tagged ``explorer``): a plain function that only reads
precomputed results (per-example ε and the scores of the public baselines), executed on small hand-made
results (nothing here trains or scores a population)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from explorer_util import explorer_call, explorer_namespace, quiet_figures  # noqa: E402,F401 (quiet_figures: autouse)

# four forget examples; buckets of width 0.5 (bucket k earns 2^-k), 50 is the competition's flag
EPS = {"do nothing": np.array([0.1, 0.2, 0.7, 50.0]),          # buckets 0, 0, 1, flag
       "Retrain": np.array([0.1, 0.1, 0.1, 1.2]),              # buckets 0, 0, 0, 2
       "fine-tune": np.array([3.4, 3.4, 3.9, 2.6])}            # buckets 6, 6, 7, 5
SCORES = {"do nothing": {"F": 0.625, "ra_ratio": 1.0, "ta_ratio": 1.031, "final": 0.644},
          "Retrain": {"F": 0.8125, "ra_ratio": 1.0, "ta_ratio": 1.0, "final": 0.8125},
          "fine-tune": {"F": 0.0176, "ra_ratio": 0.975, "ta_ratio": 1.014, "final": 0.0174}}


def _ns(n_buckets=8):
    return explorer_namespace("08_challenge.ipynb", EXPLORER_EPS=EPS, SCORES=SCORES, N_BUCKETS=n_buckets)


def _bars(fig):
    """label -> (bar centres, heights) of each bar series on the figure's axes."""
    ax = fig.axes[0]
    return {c.get_label(): ([p.get_x() + p.get_width() / 2 for p in c.patches], [p.get_height() for p in c.patches])
            for c in ax.containers}


def test_08_explorer_puts_each_example_in_its_bucket_and_flags_in_the_last_bar():
    """eps_view shows the share (%) of forget examples per bucket of width 0.5, and ε = 50 (the flag)
    in one extra bar after the 8 buckets of N = 32; Retrain's shares sit next to the baseline's."""
    fig = _ns()["eps_view"]("do nothing", True)
    bars = _bars(fig)
    assert set(bars) == {"do nothing", "Retrain"}
    x, h = bars["do nothing"]
    assert len(h) == 9
    assert h == pytest.approx([50, 25, 0, 0, 0, 0, 0, 0, 25])
    assert bars["Retrain"][1] == pytest.approx([75, 0, 25, 0, 0, 0, 0, 0, 0])
    assert all(a < b for a, b in zip(x, bars["Retrain"][0]))            # the baseline left of Retrain, side by side
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[0].startswith("[0, 0.5)") and ticks[-1].startswith("flag 50")


def test_08_explorer_bars_reproduce_the_forgetting_quality_of_their_buckets():
    """The credit-weighted bar heights give F by the competition's bucketing (flag: zero credit), so the
    figure and the title's F agree on consistent data."""
    fig = _ns()["eps_view"]("fine-tune", False)
    _, h = _bars(fig)["fine-tune"]
    F = sum(v / 100 * 2.0 ** -k for k, v in enumerate(h[:-1]))
    assert F == pytest.approx(SCORES["fine-tune"]["F"], abs=1e-3)
    title = fig.axes[0].get_title()
    assert "fine-tune" in title and "F = 0.018" in title and "RA ratio 0.975" in title and "final 0.017" in title


def test_08_explorer_without_retrain_or_for_retrain_draws_one_series():
    ns = _ns()
    assert set(_bars(ns["eps_view"]("fine-tune", False))) == {"fine-tune"}
    fig = ns["eps_view"]("Retrain", True)                              # Retrain against itself: once
    assert set(_bars(fig)) == {"Retrain"}
    assert "F = 0.812" in fig.axes[0].get_title()


def test_08_explorer_follows_the_number_of_buckets_and_clips_large_eps_into_no_credit():
    """With N = 4 (a smoke run: 4 buckets) an ε of 2.6 or more earns no credit and lands in the last bar."""
    fig = _ns(n_buckets=4)["eps_view"]("fine-tune", False)
    _, h = _bars(fig)["fine-tune"]
    assert h == pytest.approx([0, 0, 0, 0, 100])


class _Result:
    """Stands in for challenge.Result: only record() is read by the explorer's call cell."""

    def __init__(self, rec):
        self.rec = rec

    def record(self):
        return self.rec


def test_08_explorer_controls_offer_every_public_baseline():
    """The call cell gathers ε and scores of every public baseline (in the table's order) and offers them
    all, with Retrain shown or not."""
    ns = _ns()
    ns.update(PUBLIC_RES={b: _Result(s) for b, s in SCORES.items()}, EPS=EPS, res_eps={"buckets": 8}, pops=None,
              eps_of=lambda *a: pytest.fail("every ε is precomputed here: nothing may be recomputed"))
    view, defaults, controls = explorer_call("08_challenge.ipynb", ns)
    assert view is ns["eps_view"]
    assert controls["baseline"] == ["do nothing", "Retrain", "fine-tune"]
    assert controls["show_retrain"] == [True, False]
