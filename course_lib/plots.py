"""Figures used across lessons. Each function returns the matplotlib ``Figure``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .explorer import explorer  # noqa: F401  (re-exported: the lectures call plots.explorer)
from .metrics import DISPARITY_METRICS
from .train import predict_logits


def gap_to_retrain(df, reference: str = "Retrain", metrics: Sequence[str] = DISPARITY_METRICS,
                   title: str | None = None):
    """Grouped bars of ``metric - metric(reference)`` per method, one group per metric.

    ``df``: the DataFrame of :func:`course_lib.metrics.table`. Bars near zero mean the method
    behaves like retraining on that metric.
    """
    import matplotlib.pyplot as plt

    if reference not in df.index:
        raise ValueError(f"reference row {reference!r} not in {list(df.index)}")
    methods = [m for m in df.index if m != reference]
    if not methods:
        raise ValueError("no method besides the reference to compare")
    gaps = np.array([[df.loc[m, k] - df.loc[reference, k] for k in metrics] for m in methods])
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics), 3.6))
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    for i, m in enumerate(methods):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, gaps[i], width, label=m)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, metrics)
    ax.set_ylabel(f"gap to {reference} (percentage points)")
    ax.set_title(title or f"Distance of each method from {reference} (0 = same as {reference})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))   # outside: never covers a bar
    fig.tight_layout()
    return fig


def per_example_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy of every example, ``[N]``, computed in float64 so that the loss of a confident
    prediction stays positive instead of rounding to 0 (which log axes would clip)."""
    return F.cross_entropy(predict_logits(model, X).double(), y.cpu(), reduction="none").numpy()


def loss_histograms(models: dict[str, nn.Module], forget: tuple[torch.Tensor, torch.Tensor],
                    test: tuple[torch.Tensor, torch.Tensor], bins: int = 30):
    """One panel per model: histograms of per-example loss on the forget set and the test set
    (log-scaled loss axis). A model that has forgotten shows forget losses like test losses.

    All panels share one set of bins and both axes, so panels can be compared by eye. Losses
    are float64 (see :func:`per_example_loss`); any below ``1e-12`` are drawn at ``1e-12``."""
    import matplotlib.pyplot as plt

    if isinstance(models, nn.Module):
        models = {"model": models}
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 2.8), sharex=True, sharey=True,
                             squeeze=False)
    floor = 1e-12
    logs = {name: (np.log10(np.maximum(per_example_loss(m, *forget), floor)),
                   np.log10(np.maximum(per_example_loss(m, *test), floor))) for name, m in models.items()}
    lo = min(min(a.min(), b.min()) for a, b in logs.values())
    hi = max(max(a.max(), b.max()) for a, b in logs.values())
    edges = np.linspace(lo, hi + 1e-9, bins + 1)
    for ax, (name, (lf, lt)) in zip(axes[0], logs.items()):
        ax.hist(lt, edges, alpha=0.6, density=True, label="test (never seen)")
        ax.hist(lf, edges, alpha=0.6, density=True, label="forget set")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("log10 cross-entropy")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(df, metric: str, reference: str | None = "Retrain", ax=None):
    """One metric per method as horizontal bars, the reference value drawn as a dashed line."""
    import matplotlib.pyplot as plt

    if metric not in df.columns:
        raise ValueError(f"unknown metric {metric!r}; the table has {list(df.columns)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 0.4 * len(df) + 1))
    ax.barh(list(df.index), df[metric].values, color="tab:blue")
    if reference is not None and reference in df.index and df.loc[reference, metric] != 0:   # a line at 0 hides on the axis
        ax.axvline(df.loc[reference, metric], ls="--", color="tab:red", label=reference)
        ax.legend(fontsize=8)
    ax.set_xlabel(metric)
    ax.invert_yaxis()
    return ax.figure


# ----------------------------------------------------------------------------- decision space (lesson 4)

def embed_2d(Z, method: str = "umap", random_state: int = 0, n_neighbors: int = 15, min_dist: float = 0.1):
    """A 2-D embedding ``[N, 2]`` (float64 numpy) of the rows of ``Z`` ``[N, d]``.

    ``method="umap"`` (default): umap-learn with a fixed ``random_state`` (imported here, so that the
    rest of the library does not pay for it; the first fit in a process compiles numba code, which
    takes seconds); ``"pca"``: scikit-learn's PCA, a fast fallback that keeps only linear structure.
    """
    Z = Z.detach().cpu().numpy() if isinstance(Z, torch.Tensor) else np.asarray(Z)
    if Z.ndim != 2 or Z.shape[0] < 3:
        raise ValueError(f"need a feature matrix [N >= 3, d], got shape {Z.shape}")
    from .embedding import shared_embedding   # the one home of the reducers (and of UMAP's thread fix)

    return shared_embedding({"rows": Z.astype(np.float32)}, method=method, random_state=random_state,
                            n_neighbors=n_neighbors, min_dist=min_dist)["rows"]


def decision_space(models: dict[str, nn.Module], X: torch.Tensor, y: torch.Tensor, forget_mask, *,
                   method: str = "umap", random_state: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                   class_names: Sequence[str] | None = None, ncols: int | None = None,
                   return_embeddings: bool = False):
    """The decision space of each model, as in source 001 ("Decision Space (After ...)"): one panel
    per model (``models``: name -> model, e.g. Original, Retrain, BS, BE).

    Each model's penultimate features (:func:`course_lib.train.features`) of ``X`` ``[N, ...]`` are
    embedded in 2-D (:func:`embed_2d`: UMAP by default, ``method="pca"`` as a fallback); points are
    coloured by the class **the model predicts**; examples with ``forget_mask`` ``[N]`` True are
    hollow circles, the others dots. ``y`` ``[N]`` (the true labels) only sets the number of classes
    and is checked against ``X``. Keep ``N`` to a few hundred points: UMAP's cost grows with it.
    Each panel has **its own** embedding of its own features, so positions are not comparable across
    panels; to show a boundary *move*, use :func:`course_lib.embedding.shared_embedding` (one map fitted
    once, every model placed in it), as lecture 04 does.
    Returns the figure, or ``(figure, {name: embedding [N, 2]})`` with ``return_embeddings=True``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .train import features

    if isinstance(models, nn.Module) or not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict {name: model}")
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor) or X.ndim < 2 or y.ndim != 1:
        raise ValueError("X must be a tensor [N, ...] and y a tensor [N]")
    mask = torch.as_tensor(np.asarray(forget_mask.cpu() if isinstance(forget_mask, torch.Tensor) else forget_mask))
    if mask.dtype != torch.bool or mask.ndim != 1:
        raise ValueError(f"forget_mask must be a 1-D bool array, got {mask.dtype} of shape {tuple(mask.shape)}")
    if not (X.shape[0] == y.shape[0] == mask.shape[0]):
        raise ValueError(f"X, y and forget_mask must have one row per point: got {X.shape[0]}, {y.shape[0]} "
                         f"and {mask.shape[0]} rows")
    for name, m in models.items():
        if not callable(getattr(m, "features", None)):
            raise ValueError(f"model {name!r} has no features(x) method giving its penultimate features")
    n_classes = max(int(y.max()) + 1, *(int(predict_logits(m, X[:1]).shape[1]) for m in models.values()))
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    colours = [cmap(c % cmap.N) for c in range(n_classes)]
    ncols = ncols or min(len(models), 4)
    nrows = -(-len(models) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows + 0.9), squeeze=False)
    keep, forg = ~mask.numpy(), mask.numpy()
    embeddings = {}
    for ax, (name, m) in zip(axes.flat, models.items()):
        emb = embed_2d(features(m, X), method, random_state, n_neighbors, min_dist)
        embeddings[name] = emb
        pred = predict_logits(m, X).argmax(1).numpy()
        col = np.array([colours[p] for p in pred])
        ax.scatter(emb[keep, 0], emb[keep, 1], s=9, c=col[keep], marker="o", linewidths=0)
        ax.scatter(emb[forg, 0], emb[forg, 1], s=34, facecolors="none", edgecolors=col[forg], marker="o",
                   linewidths=1.1)
        ax.set_title(name, fontsize=13)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    handles = [Line2D([], [], ls="", marker="o", ms=8, color=colours[c], label=names[c]) for c in range(n_classes)]
    handles += [Line2D([], [], ls="", marker="o", ms=5, color="0.3", label="remaining (dot)"),
                Line2D([], [], ls="", marker="o", ms=8, mfc="none", mec="0.3", label="forgotten (hollow)")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 12), fontsize=10,
               title=f"colour = predicted class; {method.upper()} of the penultimate features", title_fontsize=10,
               frameon=False)
    fig.tight_layout(rect=(0, 0.9 / (4.0 * nrows + 0.9) + 0.04, 1, 1))
    return (fig, embeddings) if return_embeddings else fig


# ----------------------------------------------------------------------------- lesson 6

def metric_vs_sparsity(table, metric: str = "UA", method: str = "FT", ax=None):
    """One method's ``metric`` against sparsity, with Retrain and the original model beside it.

    ``table``: a DataFrame with columns ``sparsity``, ``method`` and the metric (one row per
    sparsity and method; rows named ``Retrain`` and ``Original`` are drawn dashed/dotted). Returns
    the figure. The explorer of lesson 6 calls it; it only reads the table."""
    import matplotlib.pyplot as plt

    for col in ("sparsity", "method", metric):
        if col not in table.columns:
            raise ValueError(f"the table has no column {col!r}; columns: {list(table.columns)}")
    g = table.pivot_table(index="sparsity", columns="method", values=metric)
    if method not in g.columns:
        raise ValueError(f"no rows for method {method!r}; methods: {list(g.columns)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    x = 100 * g.index.to_numpy()
    for ref, style, color in (("Retrain", "--", "black"), ("Original", ":", "gray")):
        if ref in g.columns:
            ax.plot(x, g[ref], style, color=color, label=ref)
    ax.plot(x, g[method], "o-", label=method)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel(metric)
    ax.set_title(f"{method}: {metric} against sparsity")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


# ----------------------------------------------------------------------------- lesson 5

def gap_with_error_bars(mean, std, reference: str = "Retrain", metrics: Sequence[str] = DISPARITY_METRICS,
                        methods: Sequence[str] | None = None, title: str | None = None):
    """Like :func:`gap_to_retrain` for a comparison over seeds: bars are the mean gap
    ``metric - metric(reference)`` (per-seed means, as :func:`course_lib.unlearn.compare_seeds`
    returns), error bars one standard deviation of the *method's* metric over seeds."""
    import matplotlib.pyplot as plt

    if reference not in mean.index:
        raise ValueError(f"reference row {reference!r} not in {list(mean.index)}")
    methods = [m for m in (methods or mean.index) if m != reference]
    if not methods:
        raise ValueError("no method besides the reference to compare")
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(metrics), 3.8))
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    for i, m in enumerate(methods):
        gaps = [mean.loc[m, k] - mean.loc[reference, k] for k in metrics]
        errs = [std.loc[m, k] for k in metrics]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, gaps, width, yerr=errs, capsize=2,
               label=m, error_kw=dict(lw=0.8))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, metrics)
    ax.set_ylabel(f"gap to {reference} (points)")
    ax.set_title(title or f"Mean gap to {reference} over seeds (error bar: ±1 std)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def saliency_overview(gradients: dict, mask: dict, bins: int = 60):
    """Two panels: the share of salient entries per parameter tensor (bars) and a histogram of
    ``log10 |g|`` over all entries, with the salient ones shaded (the global threshold is the
    edge where the shading starts)."""
    import matplotlib.pyplot as plt

    names = list(mask)
    share = [float(mask[n].float().mean()) for n in names]
    g = np.concatenate([gradients[n].detach().abs().reshape(-1).double().cpu().numpy() for n in names if n in gradients])
    sel = np.concatenate([mask[n].reshape(-1).cpu().numpy() for n in names if n in gradients])
    lg = np.log10(np.maximum(g, 1e-30))
    lo = np.percentile(lg[g > 0], 0.5) if (g > 0).any() else -30
    lg = np.maximum(lg, lo)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw=dict(width_ratios=[1.2, 1]))
    a.barh(range(len(names)), [100 * s for s in share])
    a.set_yticks(range(len(names)), names, fontsize=8)
    a.invert_yaxis()
    a.set_xlabel("salient entries (% of the tensor)")
    a.set_xlim(0, 100)
    edges = np.linspace(lg.min(), lg.max() + 1e-9, bins + 1)
    b.hist(lg, edges, color="lightgray", label="all entries")
    b.hist(lg[sel], edges, color="tab:red", alpha=0.8, label="salient")
    b.set_yscale("log")
    b.set_xlabel("log10 |gradient of the forget loss|")
    b.set_ylabel("entries")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig
