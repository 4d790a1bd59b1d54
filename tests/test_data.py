import pickle
import urllib.error

import numpy as np
import pytest
import torch

from course_lib import data


# ------------------------------------------------------------------ digits

def test_digits_split(digits):
    """The offline default: 1347/450 rows, [N, 1, 8, 8] in [0, 1], all ten classes, fixed split."""
    assert digits.X_train.shape == (1347, 1, 8, 8) and digits.X_test.shape == (450, 1, 8, 8)
    assert digits.X_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert 0 <= digits.X_train.min() and digits.X_train.max() <= 1
    assert digits.n_classes == 10 and set(digits.y_test.tolist()) == set(range(10))
    again = data.load("digits")
    assert torch.equal(again.X_train, digits.X_train) and torch.equal(again.y_test, digits.y_test)


def test_unknown_name():
    """Unknown data set names list the known ones."""
    with pytest.raises(ValueError, match="cifar10"):
        data.load("mnist")


# ------------------------------------------------------------------ files in the real on-disk formats

def _write_cifar10(root, n_per_batch=4, n_test=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [*((f"data_batch_{i}", n_per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        entry = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
        batches[name] = entry
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, fh, protocol=2)
    return batches


def test_cifar10_reads_the_pickled_batches(tmp_path):
    """Five training batches and a test batch, rows of 3072 bytes in channel-major order."""
    batches = _write_cifar10(tmp_path)
    ds = data.load("cifar10", root=tmp_path, download=False)
    assert ds.X_train.shape == (20, 3, 32, 32) and ds.X_test.shape == (3, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.n_classes == 10
    assert ds.y_train.tolist() == sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    # the first training image, channel 1 (green), pixel (row 2, col 5), standardised
    raw = batches["data_batch_1"]["data"][0].reshape(3, 32, 32)[1, 2, 5] / 255
    mean, std = data._STATS["cifar10"][0][1], data._STATS["cifar10"][1][1]
    assert ds.X_train[0, 1, 2, 5].item() == pytest.approx((raw - mean) / std, abs=1e-5)


def test_cifar100_fine_labels(tmp_path):
    """CIFAR-100 keeps one train and one test file and uses the 100 fine labels."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("test", 2)):
        with open(folder / name, "wb") as fh:
            pickle.dump({"fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": [0] * n,
                         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, fh)
    ds = data.load("cifar100", root=tmp_path, download=False)
    assert ds.X_train.shape == (6, 3, 32, 32) and ds.n_classes == 100


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    """SVHN's .mat files hold X as [32, 32, 3, N] and the digit 0 as label 10."""
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    for split in ("train", "test"):
        savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": X, "y": y})
    ds = data.load("svhn", root=tmp_path, download=False)
    assert ds.y_train.tolist() == [0, 1, 2, 0, 9]
    assert ds.X_train.shape == (5, 3, 32, 32)
    mean, std = data._STATS["svhn"][0][2], data._STATS["svhn"][1][2]
    assert ds.X_train[3, 2, 7, 4].item() == pytest.approx((X[7, 4, 2, 3] / 255 - mean) / std, abs=1e-5)


def test_missing_and_offline_give_clear_errors(tmp_path, monkeypatch):
    """No files and no internet: a DatasetUnavailableError that says what to do."""
    with pytest.raises(data.DatasetUnavailableError, match="python -m course_lib.data cifar10"):
        data.load("cifar10", root=tmp_path, download=False)

    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    monkeypatch.setattr(tvd, "SVHN", offline)
    with pytest.raises(data.DatasetUnavailableError, match="could not be downloaded.*URLError.*digits"):
        data.load("cifar10", root=tmp_path, download=True)
    with pytest.raises(data.DatasetUnavailableError, match="svhn"):
        data.load("svhn", root=tmp_path, download=True)


def test_incomplete_cifar_folder(tmp_path):
    """A folder missing a batch names the missing file."""
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(data.DatasetUnavailableError, match="data_batch_3"):
        data.load("cifar10", root=tmp_path, download=False)


def test_random_crop_flip():
    """Deterministic given the generator; with no padding every image is either kept or mirrored."""
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    a = data.random_crop_flip(x, torch.Generator().manual_seed(0))
    b = data.random_crop_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    out = data.random_crop_flip(x, torch.Generator().manual_seed(1), pad=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    shifted = data.random_crop_flip(x, torch.Generator().manual_seed(3), pad=1)
    assert (shifted == 0).any()  # zero padding shows at the border for some shift


# ------------------------------------------------------------------ forget sets

def test_forget_random(digits):
    """round(fraction * N) distinct sorted rows, reproducible by seed."""
    f = data.forget_random(digits.y_train, 0.1, seed=1)
    assert len(f) == round(0.1 * 1347) and torch.equal(f, torch.sort(f).values)
    assert len(torch.unique(f)) == len(f)
    assert torch.equal(f, data.forget_random(digits.y_train, 0.1, seed=1))
    assert not torch.equal(f, data.forget_random(digits.y_train, 0.1, seed=2))


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_forget_random_bad_fraction(digits, fraction):
    """Fractions outside (0, 1) are refused."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.forget_random(digits.y_train, fraction)


def test_forget_random_too_small():
    """A fraction that selects nobody is an error, not an empty set."""
    with pytest.raises(ValueError, match="selects no example"):
        data.forget_random(torch.zeros(10, dtype=torch.long), 0.01)


def test_forget_class(digits):
    """Exactly the rows of the class; unknown classes are named in the error."""
    f = data.forget_class(digits.y_train, 3)
    assert torch.equal(f, torch.nonzero(digits.y_train == 3).flatten())
    both = data.forget_class(digits.y_train, [3, 4])
    assert len(both) == int(((digits.y_train == 3) | (digits.y_train == 4)).sum())
    with pytest.raises(ValueError, match="unknown class \\[11\\]"):
        data.forget_class(digits.y_train, 11)
    with pytest.raises(ValueError, match="at least one class"):
        data.forget_class(digits.y_train, [])


def test_forget_noniid(digits):
    """Half of each chosen class, nothing from the others."""
    f = data.forget_noniid(digits.y_train, [2, 5], 0.5, seed=0)
    labels = digits.y_train[f]
    assert set(labels.tolist()) == {2, 5}
    for c in (2, 5):
        assert int((labels == c).sum()) == round(0.5 * int((digits.y_train == c).sum()))
    with pytest.raises(ValueError, match="unknown class"):
        data.forget_noniid(digits.y_train, [2, 42], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.forget_noniid(digits.y_train, [2], 1.0)


@pytest.mark.parametrize("builder", ["class", "noniid"])
@pytest.mark.parametrize("bad,msg", [([1, 1], "twice"), (1.0, "integer"), ([1.5], "integer"),
                                     ([True], "integer"), ([], "at least one class"), ([10], "unknown class")])
def test_forget_builders_refuse_bad_classes(builder, bad, msg):
    """Repeated, non-integer, empty and unknown class lists raise ValueError (never a duplicate index)."""
    y = torch.arange(10).repeat(3)
    with pytest.raises(ValueError, match=msg):
        data.forget_class(y, bad) if builder == "class" else data.forget_noniid(y, bad, 0.5)


def test_forget_builders_take_tensor_and_numpy_classes():
    """Classes given as a tensor or an array mean the same as a list."""
    y = torch.arange(10).repeat(3)
    assert torch.equal(data.forget_class(y, torch.tensor([2, 4])), data.forget_class(y, [2, 4]))
    assert torch.equal(data.forget_class(y, torch.tensor(2)), data.forget_class(y, 2))
    assert torch.equal(data.forget_noniid(y, np.array([2, 4]), 0.5), data.forget_noniid(y, [2, 4], 0.5))
    f = data.forget_noniid(y, [2, 4], 0.5)
    assert torch.unique(f).numel() == f.numel() == 4


def test_forget_noniid_fraction_too_small():
    """A fraction that picks nobody from a chosen class is an error naming the class."""
    with pytest.raises(ValueError, match="class 3 selects no example"):
        data.forget_noniid(torch.arange(10).repeat(3), [3], 0.1)


def test_retain_is_the_complement():
    """Retain and forget partition range(n)."""
    f = torch.tensor([7, 0, 3])
    r = data.retain_indices(10, f)
    assert r.tolist() == [1, 2, 4, 5, 6, 8, 9]


@pytest.mark.parametrize("bad,msg", [([], "empty"), ([1, 1], "duplicate"), ([0, 10], "outside"),
                                     ([-1], "outside"), ([0.5], "integer"), ([[1, 2]], "1-D")])
def test_check_indices_errors(bad, msg):
    """Empty, duplicate, out-of-range, non-integer and 2-D index sets are refused."""
    with pytest.raises(ValueError, match=msg):
        data.check_indices(torch.tensor(bad) if bad else torch.tensor([], dtype=torch.long), 10)


def test_retain_refuses_forgetting_everything():
    """Forgetting every row leaves nothing to train on."""
    with pytest.raises(ValueError, match="whole training set"):
        data.retain_indices(3, [0, 1, 2])


def test_holdout_is_disjoint(digits):
    """The public pool and the private training set partition the training rows."""
    tagged = data.DataSplit("t", torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1), torch.arange(50) % 3,
                            digits.X_test, digits.y_test, ["a", "b", "c"])
    private, Xp, yp = data.holdout(tagged, 20, seed=0)
    pub, priv = set(Xp.flatten().long().tolist()), set(private.X_train.flatten().long().tolist())
    assert len(pub) == 20 and len(priv) == 30 and not (pub & priv) and pub | priv == set(range(50))
    assert torch.equal(yp, Xp.flatten().long() % 3)  # labels travel with their rows
    assert torch.equal(private.X_test, digits.X_test)
    with pytest.raises(ValueError, match="between 1 and"):
        data.holdout(digits, 1347)
