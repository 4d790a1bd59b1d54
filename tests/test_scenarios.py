"""The forgetting scenarios: each forget set is what its description says, deterministic per seed, and
the FAST benchmark memorises (the original knows its forget set far better than Retrain does)."""
import pytest
import torch

from course_lib import data, scenarios, train


def test_available_lists_the_five_scenarios_with_descriptions():
    names = scenarios.available()
    assert set(names) >= {"random", "class", "noniid", "mislabeled", "backdoor"}
    assert all(isinstance(d, str) and d for d in names.values())


@pytest.mark.parametrize("name", ["random", "class", "noniid", "mislabeled", "backdoor"])
def test_each_scenario_is_deterministic_per_seed_and_splits_the_training_set(name):
    a, b = scenarios.make(name, seed=1, fast=True), scenarios.make(name, seed=1, fast=True)
    assert torch.equal(a.forget_idx, b.forget_idx) and torch.equal(a.data.y_train, b.data.y_train)
    n = len(a.data.y_train)
    assert len(a.forget_idx) + len(a.retain_idx) == n
    assert not set(a.forget_idx.tolist()) & set(a.retain_idx.tolist())
    assert a.description == scenarios.available()[name]


def test_forget_sets_match_their_definitions():
    y = scenarios.base_data(True).y_train
    r = scenarios.make("random", seed=0, fast=True)
    assert len(r.forget_idx) == round(scenarios.RANDOM_FRACTION * len(y))
    assert not torch.equal(r.forget_idx, scenarios.make("random", seed=1, fast=True).forget_idx)
    c = scenarios.make("class", fast=True)
    assert torch.equal(c.forget_idx, torch.nonzero(y == scenarios.FORGET_CLASS).flatten())
    assert c.exclude_classes == [scenarios.FORGET_CLASS]
    nn_ = scenarios.make("noniid", fast=True)
    assert set(y[nn_.forget_idx].tolist()) == set(scenarios.NONIID_CLASSES)


def test_mislabeled_changes_exactly_the_forget_rows_and_never_to_the_true_class():
    m = scenarios.make("mislabeled", seed=2, fast=True)
    changed = torch.nonzero(m.data.y_train != m.clean_y_train).flatten()
    assert torch.equal(changed, m.forget_idx)
    assert torch.equal(m.data.X_train, scenarios.base_data(True).X_train)


def test_backdoor_rows_carry_the_trigger_and_the_target_label():
    bd = scenarios.make("backdoor", fast=True)
    X, y = bd.forget
    assert (y == scenarios.BACKDOOR_TARGET).all()
    assert (bd.clean_y_train[bd.forget_idx] == scenarios.BACKDOOR_SOURCE).all()
    assert torch.equal(X, data.add_trigger(scenarios.base_data(True).X_train[bd.forget_idx]))


def test_bad_names_and_seeds_are_refused():
    with pytest.raises(ValueError, match="available: random"):
        scenarios.make("randm")
    with pytest.raises(ValueError, match="seed"):
        scenarios.make("random", seed=-1)


def test_the_fast_original_memorises_what_retrain_does_not():
    """mislabeled, seed 0: the original learns the wrong labels (forget accuracy over 80%), Retrain
    predicts the true classes (under 15%): a gap far above the few points of seed noise."""
    sc = scenarios.make("mislabeled", seed=0, fast=True)
    o, r = sc.train_original(), sc.train_retrain()
    assert train.accuracy(o, *sc.forget) > 80 > 15 > train.accuracy(r, *sc.forget)


def test_the_deep_recipe_changes_only_the_model_and_memorises():
    """recipe="deep" (lesson 7): the same data, forget set and training as the default recipe, a
    3-hidden-layer MLP; the default is unchanged; an unknown recipe is refused. On mislabeled, seed 0,
    the deep original fits the wrong labels (over 80%) and its Retrain does not (under 15%)."""
    d, deep = scenarios.make("mislabeled", seed=0, fast=True), scenarios.make("mislabeled", seed=0, fast=True, recipe="deep")
    assert torch.equal(d.forget_idx, deep.forget_idx) and torch.equal(d.data.y_train, deep.data.y_train)
    assert d.recipe == "default" and d.arch_kw == {} and deep.recipe == "deep"
    assert deep.arch == "mlp" and len(deep.arch_kw["hidden"]) == 3 and deep.train == d.train
    assert scenarios.RECIPE_VARIANTS["deep"][False]["arch"] == "resnet18"          # full mode: already deep
    with pytest.raises(ValueError, match="unknown recipe"):
        scenarios.make("random", recipe="wide")
    o, r = deep.train_original(), deep.train_retrain()
    assert train.accuracy(o, *deep.forget) > 80 > 15 > train.accuracy(r, *deep.forget)
