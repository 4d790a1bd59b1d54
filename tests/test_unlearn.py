import pytest
import torch
from torch.nn import functional as F

from course_lib.unlearn import baselines
from course_lib import config, data, models, train, unlearn
from conftest import params_equal

HP = dict(epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def split(digits):
    f = data.forget_class(digits.y_train, 3)
    r = data.retain_indices(len(digits.y_train), f)
    return (digits.X_train[r], digits.y_train[r]), (digits.X_train[f], digits.y_train[f])


def _loss(m, X, y):
    return F.cross_entropy(train.predict_logits(m, X), y).item()


def test_registry_names_and_errors(trained, split):
    """The six baselines are registered; unknown names and hyper-parameters are refused with the known ones listed."""
    assert set(["retrain", "finetune", "neggrad", "neggrad+", "random_label", "l1_sparse"]) <= set(unlearn.available())
    with pytest.raises(ValueError, match="known methods: .*finetune"):
        unlearn.unlearn("scrub", trained, *split)
    with pytest.raises(ValueError, match="does not take \\['momentun'\\]"):
        unlearn.unlearn("finetune", trained, *split, momentun=0.5)
    with pytest.raises(ValueError, match="forget set"):
        unlearn.unlearn("finetune", trained, split[0], (split[1][0], split[1][1][:-1]))
    assert unlearn.defaults("ga") == unlearn.defaults("neggrad")


@pytest.mark.parametrize("method", ["retrain", "finetune", "neggrad", "neggrad+", "random_label", "l1_sparse"])
def test_every_method_leaves_the_original_alone(trained, split, method):
    """The original model is never modified; the result differs from it; RTE is measured."""
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    res = unlearn.unlearn(method, trained, *split, seed=0, **HP)
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert not params_equal(res.model, trained)
    assert res.seconds > 0 and res.method == method and res.params["epochs"] == 1


def test_retrain_is_training_from_scratch(digits, trained, split):
    """Retrain equals, bit for bit, a fresh model trained on the retain set with the same seeds."""
    res = unlearn.unlearn("retrain", trained, *split, seed=4, epochs=2, lr=0.05)
    fresh = models.seeded(lambda: models.make_model("small_cnn", 10, digits.input_shape), config.derive_seed(4, 0))
    train.fit(fresh, *split[0], epochs=2, lr=0.05, batch_size=64, seed=4)
    assert params_equal(res.model, fresh)


def test_neggrad_raises_forget_loss(trained, split):
    """Gradient ascent increases the loss on the forget set."""
    res = unlearn.unlearn("neggrad", trained, *split, epochs=2, lr=0.01)
    assert _loss(res.model, *split[1]) > 3 * _loss(trained, *split[1])


def test_neggrad_plus_forgets_and_keeps(trained, split):
    """NegGrad+ raises the forget loss while the retain accuracy stays high; alpha is validated."""
    res = unlearn.unlearn("neggrad+", trained, *split, epochs=2, lr=0.01, alpha=0.95)
    assert _loss(res.model, *split[1]) > _loss(trained, *split[1]) + 1.0
    assert train.accuracy(res.model, *split[0]) > 95
    with pytest.raises(ValueError, match="alpha"):
        unlearn.unlearn("neggrad+", trained, *split, alpha=1.5)


def test_random_other_labels():
    """Every new label differs from the old one and stays in range; draws are seeded."""
    y = torch.randint(0, 4, (500,), generator=torch.Generator().manual_seed(0))
    z = baselines.random_other_labels(y, 4, seed=1)
    assert (z != y).all() and z.min() >= 0 and z.max() < 4
    assert set(z[y == 0].tolist()) == {1, 2, 3}
    assert torch.equal(z, baselines.random_other_labels(y, 4, seed=1))
    with pytest.raises(ValueError, match="two classes"):
        baselines.random_other_labels(y, 1, seed=0)


def test_l1_schedules_by_hand():
    """Constant, growing 2t/T and decaying 2-2t/T, as in source 002."""
    g = 0.1
    assert baselines.l1_weight(g, "constant", 3, 10) == g
    assert baselines.l1_weight(g, "growing", 0, 10) == pytest.approx(0.1 * g)     # t = epoch + 1/2
    assert baselines.l1_weight(g, "growing", 5, 10) == pytest.approx(1.1 * g)
    assert baselines.l1_weight(g, "decaying", 0, 10) == pytest.approx(1.9 * g)
    assert baselines.l1_weight(g, "decaying", 9, 10) == pytest.approx(0.1 * g)
    for kind in ("constant", "growing", "decaying"):     # every ramp averages gamma over the epochs
        for T in (1, 3, 10):
            assert sum(baselines.l1_weight(g, kind, t, T) for t in range(T)) / T == pytest.approx(g)
    with pytest.raises(ValueError, match="epoch"):
        baselines.l1_weight(g, "growing", 10, 10)
    with pytest.raises(ValueError):
        baselines.l1_weight(g, "cosine", 0, 10)


def test_l1_sparse_shrinks_weights(trained, split):
    """A strong l1 term gives a smaller l1 norm than plain fine-tuning with the same seed."""
    l1 = lambda m: sum(p.abs().sum().item() for p in m.parameters())
    ft = unlearn.unlearn("finetune", trained, *split, epochs=1, lr=0.02)
    sp = unlearn.unlearn("l1_sparse", trained, *split, epochs=1, lr=0.02, gamma=5e-3, l1_schedule="constant")
    assert l1(sp.model) < 0.9 * l1(ft.model)
    with pytest.raises(ValueError, match="schedule"):
        unlearn.unlearn("l1_sparse", trained, *split, l1_schedule="cosine")


def test_finetune_keeps_and_random_label_forgets(trained, split):
    """Finetune on the retain set keeps its accuracy; Random Label drives the forgotten class's
    accuracy far down while the retain set stays well classified."""
    ft = unlearn.unlearn("finetune", trained, *split, epochs=2, lr=0.02)
    assert train.accuracy(ft.model, *split[0]) > 97
    rl = unlearn.unlearn("random_label", trained, *split, epochs=2, lr=0.02)
    assert train.accuracy(trained, *split[1]) > 95
    assert train.accuracy(rl.model, *split[1]) < 30
    assert train.accuracy(rl.model, *split[0]) > 85


def test_validation_set_is_checked(trained, split):
    """A malformed validation pair is refused before any work is done."""
    X, y = split[0]
    with pytest.raises(ValueError, match="validation set"):
        unlearn.unlearn("finetune", trained, *split, valid=(X[:5], y[:4]), **HP)
    unlearn.unlearn("finetune", trained, *split, valid=(X[:5], y[:5]), **HP)


def test_mask_is_honoured(trained, split):
    """Only the masked-in weights move, whatever the method."""
    mask = {"head.weight": torch.ones_like(trained.head.weight, dtype=torch.bool)}
    for method in ("finetune", "neggrad", "neggrad+", "random_label", "l1_sparse"):
        res = unlearn.unlearn(method, trained, *split, mask=mask, **HP)
        for n, p in res.model.named_parameters():
            same = torch.equal(p, dict(trained.named_parameters())[n])
            assert same == (n != "head.weight"), (method, n)


def test_compare(digits, trained):
    """compare runs the named methods and evaluates each against Retrain."""
    f = data.forget_class(digits.y_train, 3)
    df, ms = unlearn.compare(trained, digits, f, ["retrain", "ga"], hp={"retrain": dict(epochs=3), "ga": HP},
                             exclude_classes=[3])
    assert list(df.index) == ["Original", "Retrain", "ga"]
    assert df.loc["Retrain", "Disparity avg"] == 0 and df.loc["Retrain", "UA"] > 90
    assert set(ms) == {"Original", "Retrain", "ga"}
    with pytest.raises(ValueError, match="not among the methods"):
        unlearn.compare(trained, digits, f, ["finetune"], hp={"retrain": {}})


def test_schedule_is_a_common_hyper_parameter_with_each_sources_default(trained, split):
    """Every method takes schedule=; NegGrad and NegGrad+ default to a constant rate and FT,
    Random Label and l1-sparse to cosine (003 A.2); an unknown schedule is refused."""
    for m in ("neggrad", "neggrad+"):
        assert unlearn.defaults(m)["schedule"] == "constant"
    for m in ("finetune", "random_label", "l1_sparse", "retrain"):
        assert unlearn.defaults(m)["schedule"] == "cosine"
    a = unlearn.unlearn("finetune", trained, *split, epochs=1, schedule="constant")
    b = unlearn.unlearn("finetune", trained, *split, epochs=1)
    assert a.params["schedule"] == "constant" and not params_equal(a.model, b.model)
    with pytest.raises(ValueError, match="schedule"):
        unlearn.unlearn("finetune", trained, *split, epochs=1, schedule="step")
