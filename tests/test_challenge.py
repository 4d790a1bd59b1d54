"""The capstone's scorer (course_lib.challenge): the competition's score recomputed by hand from the audit
functions, the budget refusal, failed runs counted as the original, the collapse rule, the checksummed
cache, the leaderboard's ranks and files."""
import csv
import re
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import audit, challenge, models
from course_lib.challenge import protocol as popmod, scoring


def _stack(mods):
    return {k: torch.stack([m.state_dict()[k] for m in mods]) for k in mods[0].state_dict()}


@pytest.fixture
def pops():
    """A hand-made split: 5 tiny MLPs per population on random data (no training: scores only)."""
    g = torch.Generator().manual_seed(0)
    X = lambda n: torch.randn(n, 1, 2, 2, generator=g)  # noqa: E731
    y = lambda n: torch.randint(0, 3, (n,), generator=g)  # noqa: E731
    make = lambda s: models.seeded(lambda: models.make_model("mlp", 3, (1, 2, 2), hidden=(6,)), s)  # noqa: E731
    n = 5
    split = challenge.Split("hand", "random", seed=0, n_models=n, fast=True)
    return challenge.Populations(split, (X(40), y(40)), (X(7), y(7)), (X(10), y(10)), (X(30), y(30)),
                                 _stack([make(i) for i in range(n)]), _stack([make(100 + i) for i in range(n)]),
                                 _stack([make(200 + i) for i in range(n)]), "mlp", {"hidden": (6,)}, 3, (1, 2, 2),
                                 {}, 0.5, checksum="hand")


def _acc(m, xy):
    with torch.no_grad():
        return 100.0 * float((m(xy[0]).argmax(1) == xy[1]).double().mean())


def test_score_is_the_competitions_rule_recomputed_from_the_audit_functions(pops):
    unl = [pops.model(i, "reference") for i in range(5)]
    got = challenge.score(unl, pops, name="ref")
    ret = [pops.model(i, "retrained") for i in range(5)]
    with torch.no_grad():
        cu = torch.stack([audit.logit_scaled_confidence(m(pops.forget[0]), pops.forget[1]) for m in unl]).numpy()
        cr = torch.stack([audit.logit_scaled_confidence(m(pops.forget[0]), pops.forget[1]) for m in ret]).numpy()
    eps = audit.epsilon_per_example(cu, cr, 1e-5, estimator="competition")
    F = audit.forgetting_quality(eps, 5, estimator="competition")
    ra_u, ra_r = np.mean([_acc(m, pops.retain) for m in unl]), np.mean([_acc(m, pops.retain) for m in ret])
    ta_u, ta_r = np.mean([_acc(m, pops.test) for m in unl]), np.mean([_acc(m, pops.test) for m in ret])
    assert got.F == pytest.approx(F, abs=1e-12)
    assert got.ra_ratio == pytest.approx(ra_u / ra_r) and got.ta_ratio == pytest.approx(ta_u / ta_r)
    assert got.final == pytest.approx(F * ra_u / ra_r * ta_u / ta_r)
    assert np.array_equal(got.eps, eps)


def test_an_identical_population_collapses_to_zero_forgetting_quality(pops):
    same = [pops.model(0, "reference") for _ in range(5)]
    r = challenge.score(same, pops)
    assert r.F == 0.0 and r.final == 0.0
    assert np.all(r.eps == audit.COMPETITION_EPSILON)


def test_the_test_set_is_never_handed_to_a_submission(pops):
    seen = []

    def spy(net, retain, forget, val):
        seen.append([len(t[1]) for t in (retain, forget, val)])
        return net
    challenge.run_submission(spy, pops, retrain_s=1.0)
    assert seen == [[40, 7, 10]] * 5


def test_a_submission_past_the_budget_is_stopped_and_refused(pops):
    calls = []

    def slow(net, retain, forget, val):
        calls.append(1)
        time.sleep(0.05)
        return net
    r = challenge.run_submission(slow, pops, retrain_s=0.1, budget_share=0.25)   # 5 x 0.025 s allowed
    assert r.refused and r.status == "over budget" and math.isnan(r.final) and r.ranked_score == -math.inf
    assert len(calls) < 5, "the grader stops a submission once it is past the budget"
    assert r.budget_s == pytest.approx(5 * 0.25 * 0.1)


def test_failed_runs_count_as_their_original_and_are_listed(pops):
    k = {"n": 0}

    def flaky(net, retain, forget, val):
        k["n"] += 1
        if k["n"] % 2 == 0:
            raise RuntimeError("boom")
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.5)
        return net
    r = challenge.run_submission(flaky, pops, retrain_s=10.0)
    assert r.status == "failed on 2 of 5" and len(r.failures) == 2 and "boom" in r.failures[0]
    expect = []
    for i in range(5):
        m = pops.model(i)
        if i % 2 == 0:
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(0.5)
        expect.append(m)
    assert r.final == pytest.approx(challenge.score(expect, pops).final)


@pytest.mark.parametrize("bad, why", [(lambda net, *a: nn.Linear(4, 3), "parameters differ"),
                                      (lambda net, *a: "a model", "must return an nn.Module"),
                                      (lambda net, *a: net.apply(lambda m: torch.nn.init.constant_(m.weight, float("nan"))
                                                                  if isinstance(m, nn.Linear) else None), "NaN")])
def test_a_returned_value_that_is_not_the_architecture_is_a_failure_that_says_why(pops, bad, why):
    r = challenge.run_submission(bad, pops, retrain_s=10.0)
    assert r.status == "failed on 5 of 5" and why in r.failures[0]


def test_grade_runs_a_submission_once_per_split(pops, monkeypatch):
    calls = []
    monkeypatch.setattr(scoring, "populations", lambda split: pops)

    def fn(net, retain, forget, val):
        calls.append(1)
        return net
    split = challenge.Split("hand", "random", seed=0, n_models=5, fast=True)
    a = challenge.grade(fn, split, retrain_s=1.0)
    b = challenge.grade(fn, split, retrain_s=1.0)
    assert a is b and len(calls) == 5


def test_populations_are_cached_with_a_checksum_and_rebuilt_when_the_file_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CHALLENGE_CACHE", str(tmp_path))
    monkeypatch.setattr(popmod, "_time_retrain", lambda *a, **k: 0.25)
    split = challenge.Split("tiny", "random", seed=3, n_models=3, fast=True)
    first = challenge.populations(split)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith(".pt") for f in files) and any(f.endswith(".sha256") for f in files)
    popmod._POPULATIONS.clear()
    again = challenge.populations(split)
    assert again.checksum == first.checksum
    assert all(torch.equal(again.originals[k], first.originals[k]) for k in first.originals)
    pt = next(tmp_path.glob("*.pt"))
    pt.write_bytes(pt.read_bytes()[:-10] + b"0123456789")
    popmod._POPULATIONS.clear()
    with pytest.warns(UserWarning, match="checksum"):
        rebuilt = challenge.populations(split)
    assert all(torch.equal(rebuilt.retrained[k], first.retrained[k]) for k in first.retrained), \
        "training is seeded: the rebuilt populations equal the first"
    assert len(rebuilt.val[1]) + len(rebuilt.test[1]) == 450 and len(rebuilt.val[1]) == 150
    # original i was trained on the whole training set, retrained i on the retain set only
    assert not torch.equal(rebuilt.originals[next(iter(rebuilt.originals))],
                           rebuilt.retrained[next(iter(rebuilt.retrained))])


def test_populations_are_out_of_reach_inside_the_grading_sandbox(monkeypatch):
    monkeypatch.setenv("COURSE_IN_SANDBOX", "1")
    with pytest.raises(RuntimeError, match="not available while your notebook is graded"):
        challenge.populations(challenge.PUBLIC)


def test_bad_splits_and_arguments_are_refused_with_the_reason(pops):
    with pytest.raises(ValueError, match="unknown scenario"):
        challenge.Split("x", "nope").resolved()
    with pytest.raises(ValueError, match="n_models"):
        challenge.Split("x", n_models=2).resolved()
    with pytest.raises(ValueError, match="unlearning must be a function"):
        challenge.run_submission("not a function", pops)
    with pytest.raises(ValueError, match="one unlearned model per original"):
        challenge.score([pops.model(0)], pops)
    with pytest.raises(ValueError, match="unknown baseline"):
        challenge.baseline_function("magic")


def test_the_resolution_at_32_models_is_eight_buckets_below_log_31():
    r = challenge.epsilon_resolution(32)
    assert r["max_finite_epsilon"] == pytest.approx(math.log(31)) and r["buckets"] == 8
    assert r["smallest_credit"] == 2.0 ** -7


def test_the_leaderboard_ranks_by_final_score_and_refused_rows_have_no_rank(tmp_path):
    students = {"ann": {"F": 0.1, "ra_ratio": 1.0, "ta_ratio": 0.9, "final": 0.09, "seconds": 3.0, "status": "ok"},
                "bob": {"F": None, "final": None, "seconds": 9.0, "status": "over budget"},
                "cy": {"F": 0.2, "ra_ratio": 0.5, "ta_ratio": 0.5, "final": 0.05, "seconds": 2.0,
                       "status": "failed on 3 of 32"},
                "dee": {"status": "not scored (crashed)"}}
    base = {"do nothing": {"F": 0.04, "ra_ratio": 1.0, "ta_ratio": 1.0, "final": 0.04, "seconds": 0.0, "status": "ok"},
            "Retrain": {"F": 0.19, "ra_ratio": 1.0, "ta_ratio": 1.0, "final": 0.19, "seconds": 40.0, "status": "ok"}}
    rows = challenge.leaderboard_rows(students, base)
    assert [(r["rank"], r["name"]) for r in rows] == [(1, "Retrain"), (2, "ann"), (3, "cy"), (4, "do nothing"),
                                                      ("", "bob"), ("", "dee")]
    paths = challenge.write_leaderboard(rows, tmp_path)
    with open(paths["csv"], encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == ["Retrain", "ann", "cy", "do nothing", "bob", "dee"]
    assert table[1]["final score"] == "0.0900" and table[1]["kind"] == "student" and table[4]["rank"] == ""
    page = paths["html"].read_text(encoding="utf-8")
    assert "ann" not in page and "Retrain" in page and "data:image/png;base64," in page, \
        "the class page shows students under pseudonyms, baselines by name"
    assert paths["png"].stat().st_size > 1000


def test_the_class_leaderboard_comes_from_the_records_the_tests_left(tmp_path):
    class Row:
        def __init__(self, student, record, status="ok"):
            self.student, self.record, self.status = student, record, status
    rec = {"challenge": {"name": "submission", "F": 0.1, "ra_ratio": 1.0, "ta_ratio": 1.0, "final": 0.1,
                         "seconds": 1.0, "status": "ok"},
           "baselines": {"do nothing": {"final": 0.04, "F": 0.04, "ra_ratio": 1.0, "ta_ratio": 1.0, "seconds": 0.0,
                                        "status": "ok"}}}
    assert challenge.class_leaderboard([Row("a", None), Row("b", {"other": 1})], tmp_path) is None
    rows, paths = challenge.class_leaderboard([Row("a", rec), Row("b", None, "timed out")], tmp_path)
    assert [(r["name"], r["rank"]) for r in rows] == [("a", 1), ("do nothing", 2), ("b", "")]
    assert rows[-1]["status"] == "not scored (timed out)"
    assert "final score" in challenge.format_rows(rows).splitlines()[0]


def test_the_baseline_table_is_cached_next_to_the_populations_with_its_epsilons(pops, tmp_path):
    from dataclasses import replace
    p = replace(pops, path=tmp_path / "populations-hand-x.pt", checksum="hand-eps")
    first = challenge.baselines(p, names=["do nothing", "Retrain"])
    assert (tmp_path / "baselines-hand-x.json").exists()
    scoring._BASELINES.pop(("baselines", "hand-eps"))
    again = challenge.baselines(p, names=["do nothing", "Retrain"])
    for k in first:
        assert again[k].final == first[k].final and np.array_equal(again[k].eps, first[k].eps)
    assert first["Retrain"].seconds == pytest.approx(5 * 0.5), "N Retrains at the build's timing"


def test_pseudonyms_are_salted_per_class_and_stable_between_runs(tmp_path):
    import hashlib
    rows = challenge.leaderboard_rows({"ann": {"F": 0.1, "ra_ratio": 1.0, "ta_ratio": 1.0, "final": 0.1,
                                               "seconds": 1.0, "status": "ok"}}, {})
    page = challenge.write_leaderboard(rows, tmp_path / "a")["html"].read_text(encoding="utf-8")
    again = challenge.write_leaderboard(rows, tmp_path / "a")["html"].read_text(encoding="utf-8")
    other = challenge.write_leaderboard(rows, tmp_path / "b")["html"].read_text(encoding="utf-8")
    plain = "student " + hashlib.sha256(b"ann").hexdigest()[:6]
    alias = re.search(r"student [0-9a-f]{6}", page).group(0)
    assert plain not in page and alias in again and alias not in other
