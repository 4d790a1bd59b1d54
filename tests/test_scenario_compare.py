"""scenarios.trained / scenarios.compare: a scenario's methods over seeds with the tuned settings, the
input of every lecture's claims. Small (FAST mode, MLP on digits); no lecture is run."""
import numpy as np
import pytest
import torch

from course_lib import claims, metrics, scenarios, unlearn


def test_trained_is_cached_and_equals_training_by_hand():
    """trained() trains once per process and returns the models the scenario's recipe gives."""
    sc, o, r = scenarios.trained("random", seed=1, fast=True)
    again = scenarios.trained("random", seed=1, fast=True)
    assert again[1] is o and again[2] is r
    by_hand = scenarios.make("random", seed=1, fast=True).train_original()
    assert all(torch.equal(a, b) for a, b in zip(o.state_dict().values(), by_hand.state_dict().values()))


def test_compare_uses_the_tuned_settings_and_matches_one_run_by_hand():
    """Each seed's row of a method equals unlearn.unlearn with unlearn.tuned(...) on that seed's
    original, evaluated against that seed's data; per_seed reads the rows in seed order."""
    res = scenarios.compare("random", ["finetune", "neggrad"], seeds=[0, 1, 2], fast=True)
    assert res.seeds == [0, 1, 2] and res.settings["neggrad"] == unlearn.tuned("neggrad", "random", fast=True)
    assert list(res.mean.index) == ["Original", "Retrain", "finetune", "neggrad"]
    sc, o, _ = scenarios.trained("random", seed=2, fast=True)
    m = unlearn.unlearn("neggrad", o, sc.retain, sc.forget, seed=2, **unlearn.tuned("neggrad", "random", fast=True)).model
    row = metrics.evaluate(m, sc.data, sc.forget_idx, seed=2)
    assert res.runs[2].loc["neggrad", "UA"] == pytest.approx(row["UA"], abs=0.006)   # tables keep 2 decimals
    assert res.per_seed("neggrad", "UA")[2] == pytest.approx(row["UA"], abs=0.006)
    ua = res.per_seed("finetune", "UA")
    assert res.mean.loc["finetune", "UA"] == pytest.approx(ua.mean())
    assert res.std.loc["finetune", "UA"] == pytest.approx(ua.std(ddof=1))
    with pytest.raises(KeyError, match="no 'UA'"):
        res.per_seed("salun", "UA")


def test_memorisation_is_a_reproduced_claim_on_the_random_scenario():
    """The benchmark memorises: the original's forget accuracy exceeds Retrain's by far more than the seed
    noise, so the claims helper says reproduced with a 10-point margin."""
    res = scenarios.compare("random", [], seeds=[0, 1, 2], fast=True)
    C = claims.Claims("test")
    rec = C.add(claims.Claim("memorised", "003 Sec. 4", "the original knows its forget set", "UA gap", margin=10.0),
                claims.paired(res.per_seed("Retrain", "UA"), res.per_seed("Original", "UA")), seeds=res.seeds)
    assert rec["verdict"] == "reproduced" and rec["effect"] > 20
    assert claims.check(C.records) == []


def test_compare_refuses_unknown_names_and_stray_settings():
    with pytest.raises(ValueError, match="unknown scenario"):
        scenarios.compare("nope", ["finetune"], seeds=[0])
    with pytest.raises(ValueError, match="not among the methods"):
        scenarios.compare("random", ["finetune"], seeds=[0], hp={"neggrad": {}})
    with pytest.raises(ValueError, match="no setting for"):
        scenarios.compare(lambda s: scenarios.make("random", seed=s, fast=True), ["finetune"], seeds=[0])


def test_a_callable_scenario_with_explicit_settings():
    """A scenario built by a callable (another recipe) runs with explicit or borrowed (tuned_for) settings."""
    import dataclasses

    small = lambda s: dataclasses.replace(scenarios.make("class", seed=s, fast=True),   # noqa: E731
                                          train={"epochs": 3, "lr": 0.05, "batch_size": 64})
    res = scenarios.compare(small, ["finetune"], seeds=[0], tuned_for="class")
    assert res.settings["finetune"] == unlearn.tuned("finetune", "class", fast=True)
    assert res.runs[0].loc["Retrain", "UA"] == 100.0          # class-wise: Retrain never saw class 3
    assert np.isnan(res.runs[0].loc["Original", "RTE (s)"])


def test_the_cache_shares_originals_by_data_and_keys_retrain_by_the_forget_set():
    """random and class draw on the same data: one original per seed; a changed forget set (same name)
    gets its own Retrain, trained on its own retain set."""
    import dataclasses

    _, o_random, r_random = scenarios.trained("random", seed=3, fast=True)
    _, o_class, r_class = scenarios.trained("class", seed=3, fast=True)
    assert o_class is o_random and r_class is not r_random
    _, o_mis, _ = scenarios.trained("mislabeled", seed=3, fast=True)
    assert o_mis is not o_random                      # other labels: another original
    sc = scenarios.make("random", seed=3, fast=True)
    other = dataclasses.replace(sc, forget_idx=sc.forget_idx[:20])
    _, o2, r2 = scenarios.trained(other)
    assert o2 is o_random and r2 is not r_random
    by_hand = other.train_retrain()
    assert all(torch.equal(a, b) for a, b in zip(r2.state_dict().values(), by_hand.state_dict().values()))
