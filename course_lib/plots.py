"""Figures used across lessons. Each function returns the matplotlib ``Figure``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def per_example_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy of every example, ``[N]``."""
    return F.cross_entropy(predict_logits(model, X), y.cpu(), reduction="none").numpy()


def loss_histograms(models: dict[str, nn.Module], forget: tuple[torch.Tensor, torch.Tensor],
                    test: tuple[torch.Tensor, torch.Tensor], bins: int = 30):
    """One panel per model: histograms of per-example loss on the forget set and the test set
    (log-scaled loss axis). A model that has forgotten shows forget losses like test losses."""
    import matplotlib.pyplot as plt

    if isinstance(models, nn.Module):
        models = {"model": models}
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 2.8), sharey=False, squeeze=False)
    eps = 1e-6
    for ax, (name, m) in zip(axes[0], models.items()):
        lf = np.log10(per_example_loss(m, *forget) + eps)
        lt = np.log10(per_example_loss(m, *test) + eps)
        edges = np.linspace(min(lf.min(), lt.min()), max(lf.max(), lt.max()) + 1e-9, bins + 1)
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
    if reference is not None and reference in df.index:
        ax.axvline(df.loc[reference, metric], ls="--", color="tab:red", label=reference)
        ax.legend(fontsize=8)
    ax.set_xlabel(metric)
    ax.invert_yaxis()
    return ax.figure
