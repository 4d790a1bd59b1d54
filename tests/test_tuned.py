"""The one table of method settings: every registry method the table names resolves, every scenario of
course_lib.scenarios has FAST settings, full mode falls back to the sources' row, and bad requests say
what is available."""
import json

import pytest

from course_lib import data, scenarios, unlearn
from course_lib.unlearn import tuning as T


def test_every_fast_scenario_is_in_the_table_with_the_core_methods():
    table = json.loads(T.TABLE.read_text())
    assert {k for k in table["fast"] if ":" not in k} == set(scenarios.available())
    for sc, rows in table["fast"].items():
        for method in ("finetune", "neggrad", "neggrad+", "random_label", "l1_sparse", "salun", "fisher", "influence"):
            assert method in rows, (sc, method)
    assert {"boundary_shrink", "boundary_expand"} <= set(table["fast"]["class"])
    assert table["about"]["tuning_seed"] not in range(5), "the tuning seed must differ from the lectures' seeds"


def test_tuned_settings_are_accepted_by_the_registry():
    """Each stored setting names only hyper-parameters its method takes (unlearn refuses unknown ones)."""
    for sc in scenarios.available():
        for method in T._table()["fast"][sc]:
            hp = unlearn.tuned(method, sc, fast=True)
            assert set(hp) <= set(unlearn.defaults(method)), (sc, method, hp)


def test_aliases_full_mode_and_errors():
    assert unlearn.tuned("ft", "random", fast=True) == unlearn.tuned("finetune", "random", fast=True)
    full = unlearn.tuned("finetune", "mislabeled", fast=False)
    assert full["augment"] is data.random_crop_flip and full["batch_size"] == 256
    with pytest.raises(ValueError, match="tuned scenarios"):
        unlearn.tuned("finetune", "nosuch", fast=True)
    with pytest.raises(ValueError, match="no tuned setting"):
        unlearn.tuned("ssd", "random", fast=True)
    with pytest.raises(ValueError, match="unknown unlearning method"):
        unlearn.tuned("magic", "random", fast=True)
    assert T.table(fast=True).shape[1] == len(scenarios.available()) + len(_variants())


def test_class_wise_fisher_zeroes_the_class_row_in_both_modes():
    """002's public code zeroes the forgotten class's output row in FF: the table asks for it on class-wise
    forgetting only, in FAST and full mode."""
    for fast in (True, False):
        assert unlearn.tuned("fisher", "class", fast=fast)["forget_classes"] == [scenarios.FORGET_CLASS]
        assert "forget_classes" not in unlearn.tuned("fisher", "random", fast=fast)


# ----------------------------------------------------------------------------- recipe variants (lesson 7)

def _variants():
    return [k for k in T._table()["fast"] if ":" in k]


def test_recipe_variants_are_tuned_rows_of_known_scenarios_and_recipes():
    """A variant row "scenario:recipe" (benchmarks/tune_methods.py VARIANTS) names a scenario and a recipe
    that scenarios.make accepts, holds the core methods plus lesson 7's localised ones, and every setting
    is accepted by the registry; its tuning record lists the masks RFT was tuned on."""
    table = T._table()
    assert "mislabeled:deep" in _variants()
    for key in _variants():
        name, recipe = key.split(":")
        assert name in scenarios.available() and recipe in scenarios.recipes()
        rows = table["fast"][key]
        assert {"finetune", "random_label", "l1_sparse", "salun", "rft", "del", "ssd"} <= set(rows)
        for method in rows:
            hp = unlearn.tuned(method, key, fast=True)
            assert set(hp) <= set(unlearn.defaults(method)), (key, method, hp)
        assert table["fast_tuning"][key]["methods"]["rft"]["masks"]
        assert key in table["about"]["variants"]
    assert 0 < unlearn.tuned("del", "mislabeled:deep", fast=True)["budget"] <= 1


def test_localised_methods_have_full_mode_settings_from_the_source():
    """Full mode: RFT / DEL at 003 A.2's learning rate 0.015; SSD with Foster et al.'s defaults."""
    for method in ("rft", "del"):
        assert unlearn.tuned(method, "mislabeled:deep", fast=False)["lr"] == 0.015
    ssd = unlearn.tuned("ssd", "random", fast=False)
    assert (ssd["alpha"], ssd["lam"]) == (10.0, 1.0)
