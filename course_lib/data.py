"""Data sets as in-memory tensors, and forget-set builders.

Every loader returns a :class:`DataSplit` of float tensors ``X`` of shape ``[N, C, H, W]``
and int64 labels ``y`` of shape ``[N]``.

* ``digits`` (offline default): scikit-learn's bundled 8x8 handwritten digits, a fixed
  stratified split (1347 train / 450 test), pixels scaled to [0, 1].
* ``cifar10``, ``cifar100``, ``svhn``: downloaded once by torchvision into ``data/`` on a
  machine with internet, then read from the files on disk (their real on-disk formats:
  pickled batches for CIFAR, ``.mat`` files for SVHN). Offline, a clear
  :class:`DatasetUnavailableError` says what to do.

Forget sets are sorted ``int64`` index tensors into the training set; the retain set is
their complement (:func:`retain_indices`).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import config
from .validation import check_fraction, check_indices  # noqa: F401  (data.check_indices is public)

NAMES = ("digits", "cifar10", "cifar100", "svhn")

# Channel statistics of the training sets, used to standardise inputs.
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def pixel_std(name: str) -> tuple[float, ...] | None:
    """The per-channel standard deviation ``load(name)`` divided the pixels by (``None``: the inputs are
    [0, 1] pixels, as for ``digits``). Converts a radius in pixel units into the inputs' units."""
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; one of {', '.join(NAMES)}")
    return tuple(_STATS[name][1]) if name in _STATS else None


class DatasetUnavailableError(RuntimeError):
    """The data set is not on disk and could not be downloaded."""


@dataclass
class DataSplit:
    """A train/test split held in memory.

    ``X_train``: float32 ``[N, C, H, W]``; ``y_train``: int64 ``[N]``; same for test.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    def __repr__(self) -> str:
        return (f"DataSplit({self.name!r}, train={tuple(self.X_train.shape)}, "
                f"test={tuple(self.X_test.shape)}, classes={self.n_classes})")


def load(name: str = "digits", root: str | Path | None = None, download: bool = True) -> DataSplit:
    """Load a data set by name (one of ``digits``, ``cifar10``, ``cifar100``, ``svhn``).

    ``root`` defaults to the course's ``data/`` folder (``COURSE_DATA`` overrides it).
    With ``download=True`` a missing data set is fetched through torchvision; offline this
    raises :class:`DatasetUnavailableError` with instructions. Under a capped budget
    (:func:`course_lib.config.budget`, e.g. a smoke run) only the first rows of each set are kept.
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    if name == "digits":
        return _budget_rows(load_digits())
    root = Path(root) if root is not None else config.DATA_DIR
    if name in ("cifar10", "cifar100"):
        return _budget_rows(_load_cifar(name, root, download))
    return _budget_rows(_load_svhn(root, download))


def _budget_rows(ds: DataSplit) -> DataSplit:
    """The first rows of each set that the session's budget allows (:func:`course_lib.config.budget`:
    all of them, or a smoke run's ``rows``)."""
    n_train, n_test = config.budget().cap_rows(len(ds.y_train), len(ds.y_test))
    if (n_train, n_test) == (len(ds.y_train), len(ds.y_test)):
        return ds
    return DataSplit(ds.name, ds.X_train[:n_train], ds.y_train[:n_train], ds.X_test[:n_test], ds.y_test[:n_test],
                     ds.classes)


def load_digits(test_size: float = 0.25, seed: int = 0) -> DataSplit:
    """scikit-learn's 1797 handwritten 8x8 digits, split stratified with a fixed seed."""
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_digits()
    X = (bunch.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    y = bunch.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    return DataSplit("digits", torch.from_numpy(Xtr), torch.from_numpy(ytr),
                     torch.from_numpy(Xte), torch.from_numpy(yte), [str(i) for i in range(10)])


def _standardise(images_uint8_nhwc: np.ndarray, name: str) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_uint8_nhwc)).permute(0, 3, 1, 2).float().div_(255)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in _STATS[name])
    return (x - mean) / std


def _fetch(name: str, root: Path) -> None:
    """Download through torchvision; translate network failures into a clear message."""
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        if name == "cifar10":
            tvd.CIFAR10(str(root), train=True, download=True)
        elif name == "cifar100":
            tvd.CIFAR100(str(root), train=True, download=True)
        else:
            for split in ("train", "test"):
                tvd.SVHN(str(root / "svhn"), split=split, download=True)
    except Exception as exc:  # URLError, socket errors, HTTP errors, integrity failures
        raise DatasetUnavailableError(_offline_message(name, root, exc)) from exc


def _offline_message(name: str, root: Path, exc: BaseException | None = None) -> str:
    where = root / _FOLDERS[name] if name in _FOLDERS else root / "svhn"
    why = f" (download failed: {type(exc).__name__}: {exc})" if exc is not None else ""
    return (f"{name} is not in {where} and could not be downloaded{why}. "
            f"On a machine with internet run `python -m course_lib.data {name}` (or copy the "
            f"folder {where.name}/ from one), then try again. Offline, use the bundled "
            f"data set: load('digits').")


def _load_cifar(name: str, root: Path, download: bool) -> DataSplit:
    folder = root / _FOLDERS[name]
    if not folder.is_dir():
        if not download:
            raise DatasetUnavailableError(_offline_message(name, root))
        _fetch(name, root)
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta_file, label_key, names_key = ["test_batch"], "batches.meta", "labels", "label_names"
    else:
        train_files, test_files = ["train"], ["test"]
        meta_file, label_key, names_key = "meta", "fine_labels", "fine_label_names"

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            path = folder / f
            if not path.is_file():
                raise DatasetUnavailableError(f"{path} is missing: the {name} folder is incomplete; "
                                              f"delete {folder} and download it again.")
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        return np.concatenate(xs).transpose(0, 2, 3, 1), np.concatenate(ys)

    Xtr, ytr = read(train_files)
    Xte, yte = read(test_files)
    with open(folder / meta_file, "rb") as fh:
        classes = list(pickle.load(fh, encoding="latin1")[names_key])
    return DataSplit(name, _standardise(Xtr, name), torch.from_numpy(ytr),
                     _standardise(Xte, name), torch.from_numpy(yte), classes)


def _load_svhn(root: Path, download: bool) -> DataSplit:
    from scipy.io import loadmat

    folder = root / "svhn"
    files = {s: folder / f"{s}_32x32.mat" for s in ("train", "test")}
    if not all(f.is_file() for f in files.values()):
        if not download:
            raise DatasetUnavailableError(_offline_message("svhn", root))
        _fetch("svhn", root)

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        mat = loadmat(str(path))
        X = np.transpose(mat["X"], (3, 0, 1, 2))  # [32, 32, 3, N] -> [N, 32, 32, 3]
        y = mat["y"].astype(np.int64).reshape(-1) % 10  # the digit 0 is stored as label 10
        return X, y

    Xtr, ytr = read(files["train"])
    Xte, yte = read(files["test"])
    return DataSplit("svhn", _standardise(Xtr, "svhn"), torch.from_numpy(ytr),
                     _standardise(Xte, "svhn"), torch.from_numpy(yte), [str(i) for i in range(10)])


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation on a batch ``[B, C, H, W]``: random shifts of up to
    ``pad`` pixels (zero padding) and horizontal flips. Deterministic given ``generator``."""
    B, _, H, W = x.shape
    dev = x.device
    shifts = torch.randint(-pad, pad + 1, (2, B), generator=generator).to(dev)
    flips = torch.rand(B, generator=generator).to(dev) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(H, device=dev)[None] + pad + shifts[0][:, None])  # [B, H]
    cols = (torch.arange(W, device=dev)[None] + pad + shifts[1][:, None])  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    b = torch.arange(B, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop_flip_device(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4,
                            channels_last: bool = False) -> torch.Tensor:
    """:func:`random_crop_flip` with its random draws made on ``x``'s device (a CUDA batch takes
    a CUDA ``generator``; ``None`` uses that device's default stream), so a GPU batch is
    augmented with no host round trip. Same draws in the same order: with a CPU generator in the
    same state the output equals :func:`random_crop_flip`'s bit for bit. ``channels_last=True``
    returns the gathered ``[B, H, W, C]`` storage as a channels-last tensor (no extra copy)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"random_crop_flip_device expects a batch [B, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    from .validation import check_int

    pad = check_int(pad, "pad", lo=0)
    dev = x.device
    if generator is not None and generator.device.type != dev.type:
        raise ValueError(f"the generator lives on {generator.device} but the batch on {dev}; make it with "
                         f"torch.Generator(device={str(dev)!r}) (or pass generator=None)")
    B, _, H, W = x.shape
    shifts = torch.randint(-pad, pad + 1, (2, B), generator=generator, device=dev)
    flips = torch.rand(B, generator=generator, device=dev) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(H, device=dev)[None] + pad + shifts[0][:, None]  # [B, H]
    cols = torch.arange(W, device=dev)[None] + pad + shifts[1][:, None]  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    b = torch.arange(B, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


# ----------------------------------------------------------------------------- forget sets

def _check_labels(y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(y.shape)}")
    return y


def forget_random(y: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """An IID forget set: ``round(fraction * N)`` training rows drawn uniformly (``[k]`` int64)."""
    y = _check_labels(y)
    fraction = check_fraction(fraction)
    k = int(round(fraction * y.numel()))
    if k == 0:
        raise ValueError(f"fraction {fraction} of {y.numel()} rows selects no example")
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(y.numel(), generator=g)[:k]).values


def _check_classes(y: torch.Tensor, cls) -> list[int]:
    """The classes to forget as a list of distinct ints present in ``y``; ValueError otherwise."""
    if isinstance(cls, torch.Tensor):
        cls = cls.tolist()
    if isinstance(cls, np.ndarray):
        cls = cls.tolist()
    classes = [cls] if isinstance(cls, (int, np.integer, float, bool)) else list(cls)
    if not classes:
        raise ValueError("give at least one class to forget")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
    if bad:
        raise ValueError(f"classes must be integer labels, got {bad}")
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} name a class twice: give each class once")
    present = set(torch.unique(y).tolist())
    unknown = [c for c in classes if c not in present]
    if unknown:
        raise ValueError(f"unknown class {unknown}: the labels hold {sorted(present)}")
    return classes


def forget_class(y: torch.Tensor, cls: int | list[int]) -> torch.Tensor:
    """Every training row of the given class (or classes): sorted int64 ``[k]``."""
    y = _check_labels(y)
    classes = _check_classes(y, cls)
    return torch.nonzero(torch.isin(y, torch.tensor(classes, dtype=y.dtype))).flatten()


def forget_noniid(y: torch.Tensor, classes: list[int], fraction: float, seed: int = 0) -> torch.Tensor:
    """A non-IID forget set (as in the DEL source): a ``fraction`` of the rows of each of
    the chosen ``classes``, drawn uniformly within each class."""
    y = _check_labels(y)
    fraction = check_fraction(fraction)
    classes = _check_classes(y, classes)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes:
        rows = torch.nonzero(y == c).flatten()
        k = int(round(fraction * rows.numel()))
        if k == 0:
            raise ValueError(f"fraction {fraction} of the {rows.numel()} rows of class {c} selects no example")
        picked.append(rows[torch.randperm(rows.numel(), generator=g)[:k]])
    return torch.sort(torch.cat(picked)).values


def retain_indices(n: int, forget: torch.Tensor) -> torch.Tensor:
    """The complement of ``forget`` in ``range(n)`` (validated), as sorted int64 ``[n - k]``."""
    forget = check_indices(forget, n)
    keep = torch.ones(n, dtype=torch.bool)
    keep[forget] = False
    if not keep.any():
        raise ValueError("the forget set covers the whole training set: nothing would remain")
    return torch.nonzero(keep).flatten()


def holdout(data: DataSplit, n: int, seed: int = 0) -> tuple[DataSplit, torch.Tensor, torch.Tensor]:
    """Set ``n`` training rows aside as a *public* pool, never subject to deletion.

    Returns ``(private, X_public, y_public)``: ``private`` is ``data`` without those rows
    (same test set). Used to pre-train encoders on data disjoint from the private set.
    """
    N = data.X_train.shape[0]
    if not (0 < n < N):
        raise ValueError(f"n must be between 1 and {N - 1}, got {n}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(N, generator=g)
    pub, priv = torch.sort(perm[:n]).values, torch.sort(perm[n:]).values
    private = DataSplit(data.name, data.X_train[priv], data.y_train[priv], data.X_test, data.y_test,
                        list(data.classes))
    return private, data.X_train[pub], data.y_train[pub]


# ----------------------------------------------------------------------------- backdoor (lesson 6)

def add_trigger(X: torch.Tensor, size: int = 2, value: float | None = None) -> torch.Tensor:
    """A copy of images ``X`` ``[N, C, H, W]`` with a ``size`` x ``size`` square trigger in the
    bottom-right corner (BadNets-style patch, as in 002's backdoor application after Gu et al.),
    set to ``value`` (default: the largest pixel value of ``X``, white on the digits)."""
    if X.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(X.shape)}")
    if not (isinstance(size, int) and 1 <= size <= min(X.shape[2], X.shape[3])):
        raise ValueError(f"size must be an int between 1 and the image side, got {size!r}")
    out = X.clone()
    out[:, :, -size:, -size:] = float(X.max()) if value is None else float(value)
    return out


def backdoor(X: torch.Tensor, y: torch.Tensor, source: int, target: int, fraction: float, seed: int = 0,
             size: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Poison a training set: a ``fraction`` of the rows of class ``source`` (drawn with ``seed``)
    get the trigger (:func:`add_trigger`) and the label ``target``. Returns ``(X', y', poisoned)``,
    ``poisoned`` the sorted int64 indices of the changed rows (the forget set of a cleanse)."""
    y = _check_labels(y)
    source, target = _check_classes(y, [source, target])
    rows = forget_noniid(y, [source], fraction, seed=seed)
    Xp, yp = X.clone(), y.clone()
    Xp[rows] = add_trigger(X[rows], size)
    yp[rows] = target
    return Xp, yp, rows


if __name__ == "__main__":  # python -m course_lib.data cifar10  (on a machine with internet)
    import sys

    for arg in sys.argv[1:] or ["digits"]:
        print(load(arg, download=True))

