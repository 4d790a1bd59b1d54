"""Parameter masks: everything that says *which weights may change*, in one place.

A mask is a ``dict`` ``{parameter name: bool tensor of the parameter's shape}``; ``True`` means
the entry may be updated, ``False`` that it stays as it is. A parameter missing from the mask is
frozen entirely. Every training loop of the course takes ``mask=`` (:func:`course_lib.train.sgd_steps`,
every unlearner of :mod:`course_lib.unlearn`) and restores the frozen entries after every step
(:func:`restore_masked`), so momentum and weight decay cannot move them.

What builds masks, one file each:

====================  =======================================================================
``ops.py``            the operations: :func:`full`, :func:`apply`, :func:`count`, :func:`size`,
                      :func:`density`, :func:`per_layer`
``salient.py``        :func:`saliency`: SalUn's weight-saliency mask (lesson 5)
``pruning.py``        :func:`omp`, :func:`synflow`, :func:`imp`: pruning masks (lesson 6)
``localization.py``   :func:`localize`: DEL and the other localisation strategies (lesson 7)
====================  =======================================================================

The mask type and what the training loops need of it (``Mask``, :func:`snapshot`,
:func:`restore_masked`, :func:`check`, :func:`forget_gradients`) live one layer down in
:mod:`course_lib.params` (as ``check_mask`` and ``mean_loss_gradient``) and are re-exported here
under their lesson names.
"""
from __future__ import annotations

from ..params import Mask, restore_masked, snapshot
from ..params import check_mask as check
from ..params import mean_loss_gradient as forget_gradients
from .localization import (CRITERIA, GRANULARITIES, STRATEGIES, Layer, classifier_names, critmem_channels,
                           layer_shares, layers, localize, mask_from_units, parameter_scores, random_like,
                           select_layers, select_units, unit_scores, units_of_mask)
from .ops import apply, count, density, full, per_layer, size
from .pruning import ImpTrace, imp, imp_trace, omp, prunable, sparsity, synflow, train_sparse
from .salient import PARAMS, eligible, random_mask, saliency

__all__ = ["Mask", "snapshot", "restore_masked", "check", "forget_gradients",
           "full", "apply", "count", "size", "density", "per_layer",
           "saliency", "random_mask", "eligible", "PARAMS",
           "prunable", "sparsity", "omp", "synflow", "imp", "imp_trace", "ImpTrace", "train_sparse",
           "localize", "layers", "Layer", "parameter_scores", "unit_scores", "select_units", "select_layers",
           "layer_shares", "mask_from_units", "units_of_mask", "random_like", "critmem_channels",
           "classifier_names", "STRATEGIES", "CRITERIA", "GRANULARITIES"]
