"""One 2-D embedding shared by several models' views of the same points (lesson 4's decision space).

Drawing each model's points with an embedding fitted to that model alone gives every panel its own
axes: a cluster that sits top-left in one panel may sit bottom-right in the next, and nothing can be
read off by comparing panels. Here the embedding is fitted **once** and every panel is drawn in it:

* ``fit_on=None`` (the default): the rows of every model are stacked and embedded together, so every
  panel is a subset of one map (an *aligned* embedding). Points of a model that moved to a place no
  other model uses get a place of their own, which is what a new region of the decision space (BE's
  shadow class) needs.
* ``fit_on="Original"`` (a model's name): the embedding is fitted on that model's rows and the others
  are placed with the fitted reducer's ``transform`` (UMAP) or projection (PCA). A transformed point
  lands among the fitted points it resembles most; it cannot open a region of its own.

The rows must live in one coordinate system for this to mean anything: the models' **outputs over the
same classes** do (class k is the same axis for every model), whereas the penultimate features of
two separately trained networks do not. :func:`decision_coordinates` gives such rows.

:func:`panels` draws the shared embedding, one panel per model, filled markers coloured by the class
each model predicts, the highlighted points (the forget class) larger and outlined in black.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["decision_coordinates", "shared_embedding", "panels"]


def decision_coordinates(logits: torch.Tensor, floor: float = -10.0) -> np.ndarray:
    """A model's position of each example in the *decision space*: its log-probabilities over the
    classes ``[N, K]`` (float32 numpy), floored at ``floor`` so that the few near-zero probabilities of
    a very confident model do not dominate the distances. Log-probabilities, not raw logits: logits
    are defined only up to a per-example constant."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(f"logits must be a tensor [N, K], got {type(logits).__name__}"
                         f"{'' if not isinstance(logits, torch.Tensor) else tuple(logits.shape)}")
    return F.log_softmax(logits.float(), dim=1).clamp_min(floor).cpu().numpy().astype(np.float32)


def _reducer(method: str, random_state: int, n_neighbors: int, min_dist: float, n_epochs: int | None, n: int):
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=random_state)
    if method != "umap":
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    with warnings.catch_warnings():  # umap warns that a fixed random_state forces one thread: intended
        warnings.simplefilter("ignore")
        import umap

    return umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                     random_state=random_state, n_epochs=n_epochs)


def shared_embedding(rows: Mapping[str, np.ndarray], *, method: str = "umap", fit_on: str | None = None,
                     random_state: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                     n_epochs: int | None = None) -> dict[str, np.ndarray]:
    """``{name: [N, 2]}``: the rows ``[N, d]`` of every model embedded in **one** 2-D map, fitted once.

    ``rows``: name -> the model's rows (the same ``N`` points in the same order for every model, in one
    coordinate system, e.g. :func:`decision_coordinates`). ``fit_on=None`` fits on every model's rows
    stacked (an aligned embedding); ``fit_on=name`` fits on that model's rows and places the others with
    ``transform``. ``method``: ``"umap"`` (umap-learn; the first fit in a process compiles numba code)
    or ``"pca"``; ``n_epochs`` (UMAP): fewer epochs are faster and coarser (``None``: UMAP's default).
    """
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError("rows must be a non-empty dict {name: array [N, d]}")
    arrays = {k: np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float32)
              for k, v in rows.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or first[0] < 3 or any(s != first for s in shapes.values()):
        raise ValueError(f"every model needs rows of one shape [N >= 3, d]; got {shapes}")
    if fit_on is not None and fit_on not in arrays:
        raise ValueError(f"fit_on={fit_on!r} is not one of the models {list(arrays)}")
    names = list(arrays)
    fit_rows = np.concatenate([arrays[k] for k in names]) if fit_on is None else arrays[fit_on]
    threads = torch.get_num_threads()
    try:
        red = _reducer(method, random_state, n_neighbors, min_dist, n_epochs, fit_rows.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = np.asarray(red.fit_transform(fit_rows), dtype=np.float64)
            if fit_on is None:
                n = first[0]
                return {k: fitted[i * n:(i + 1) * n] for i, k in enumerate(names)}
            return {k: (fitted if k == fit_on else np.asarray(red.transform(arrays[k]), dtype=np.float64))
                    for k in names}
    finally:
        # umap/numba raise torch's intra-op thread count (measured: 1 -> 2 after the first fit), which made
        # later tiny trainings several times slower on a shared 2-core machine: put it back
        torch.set_num_threads(threads)


def panels(embeddings: Mapping[str, np.ndarray], predicted: Mapping[str, Sequence[int]], highlight,
           *, class_names: Sequence[str], highlight_label: str = "forget class", title: str = "",
           ncols: int | None = None):
    """One panel per model of a shared embedding (:func:`shared_embedding`), all on the same axes.

    Filled markers coloured by the class the model predicts (``predicted[name]`` ``[N]``); the
    ``highlight`` ``[N]`` (bool) points are drawn larger, outlined in black and on top. Returns the
    figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(embeddings)
    if set(names) != set(predicted):
        raise ValueError(f"predicted must name the same models as embeddings: {names} vs {list(predicted)}")
    hl = np.asarray(highlight.cpu() if isinstance(highlight, torch.Tensor) else highlight, dtype=bool)
    n_classes = len(class_names)
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    colours = np.array([cmap(c % cmap.N) for c in range(n_classes)])
    allpts = np.concatenate([np.asarray(e) for e in embeddings.values()])
    lo, hi = allpts.min(0), allpts.max(0)
    pad = 0.05 * (hi - lo + 1e-9)
    ncols = ncols or min(len(names), 4)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.5 * nrows + 0.7), squeeze=False)
    for ax, k in zip(axes.flat, names):
        e = np.asarray(embeddings[k])
        p = np.asarray(predicted[k].cpu() if isinstance(predicted[k], torch.Tensor) else predicted[k], dtype=int)
        if e.shape[0] != hl.shape[0] or p.shape[0] != hl.shape[0]:
            raise ValueError(f"{k}: {e.shape[0]} embedded rows, {p.shape[0]} predictions, {hl.shape[0]} highlight flags")
        ax.scatter(e[~hl, 0], e[~hl, 1], s=10, c=colours[p[~hl]], marker="o", linewidths=0, alpha=0.8)
        ax.scatter(e[hl, 0], e[hl, 1], s=38, c=colours[p[hl]], marker="o", edgecolors="black", linewidths=0.9)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0]), ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(k, fontsize=12)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=colours[c], label=class_names[c]) for c in range(n_classes)]
    handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="0.85", mec="black", label=highlight_label))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 11), fontsize=9, frameon=False,
               title=title or "colour = predicted class", title_fontsize=9)
    fig.tight_layout(rect=(0, 0.7 / (3.5 * nrows + 0.7), 1, 1))
    return fig
