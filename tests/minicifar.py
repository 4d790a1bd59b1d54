"""A miniature CIFAR-10 in torchvision's real on-disk format (``cifar-10-batches-py``: five pickled
training batches, a test batch, ``batches.meta``), for running the full-mode code path offline.

Images are 32x32x3 uint8 with a class-dependent colour and stripe pattern plus noise, so that a
network can learn something in a few steps; rows are ordered class by class in turn (0, 1, ..., 9,
0, 1, ...), so that the first rows of every split hold every class.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = labels.size
    colour = np.stack([(labels * 25) % 256, (labels * 70 + 40) % 256, (255 - labels * 25) % 256], 1)  # [n, 3]
    rows = np.arange(32)
    stripes = ((rows[None, :] // (2 + labels[:, None] % 4)) % 2) * 60                                 # [n, 32]
    img = colour[:, :, None, None] * 0.7 + stripes[:, None, :, None] + rng.normal(0, 30, (n, 3, 32, 32))
    return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072)  # channel-major rows, as CIFAR stores them


def write_cifar10(root: str | Path, n_train: int = 160, n_test: int = 80, seed: int = 0) -> Path:
    """Write ``n_train`` training images (split over the five batches) and ``n_test`` test images
    under ``root/cifar-10-batches-py``; returns ``root`` (pass it as ``COURSE_DATA``)."""
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(n_train) % 10, np.arange(n_test) % 10
    x_train, x_test = _images(y_train, rng), _images(y_test, rng)
    bounds = np.linspace(0, n_train, 6).astype(int)
    parts = [(f"data_batch_{i + 1}", slice(bounds[i], bounds[i + 1])) for i in range(5)]
    for name, sl in parts:
        _dump(folder / name, name, x_train[sl], y_train[sl])
    _dump(folder / "test_batch", "testing batch 1 of 1", x_test, y_test)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": NAMES, "num_cases_per_batch": int(bounds[1]), "num_vis": 3072}, fh, protocol=2)
    return root


def _dump(path: Path, label: str, x: np.ndarray, y: np.ndarray) -> None:
    entry = {"batch_label": label, "labels": y.tolist(), "data": x,
             "filenames": [f"mini_{i:05d}.png" for i in range(len(y))]}
    with open(path, "wb") as fh:
        pickle.dump(entry, fh, protocol=2)
