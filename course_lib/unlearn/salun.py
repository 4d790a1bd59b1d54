"""SalUn (lesson 5): Random Label fine-tuning of the salient weights only (sources 001, 003).

001 ("SalUn Training: classification"): ``theta_u = m_s * theta + (1 - m_s) * theta_o``, the
salient weights ``m_s`` (:func:`course_lib.masks.saliency`, computed once at ``theta_o``) trained
on forget examples relabelled ``y' != y``. The course trains on the retain set plus the
relabelled forget set, exactly as its ``random_label`` baseline (003 Sec. 3 "Random Label"; also
what SalUn's public code does for classification), so SalUn and Random Label differ *only* in
the mask. Frozen entries are restored after every optimiser step
(:func:`course_lib.train.sgd_steps`), so momentum and weight decay cannot move them: they stay
bitwise equal to ``theta_o``.

``random_mask=True`` is the slides' ablation: the same number of entries at random positions
(:func:`course_lib.masks.random_mask`, drawn from the stream ``derive_seed(seed, 8)``). A ``mask``
given by the caller (e.g. a pruning mask) restricts where salient entries may lie.
"""
from __future__ import annotations

from .. import config
from ..masks import random_mask as _random_mask
from ..masks import saliency
from . import register
from .baselines import _random_label


@register("salun", epochs=5, lr=0.02, augment=None, fraction=0.5, threshold=None, params="all",
          random_mask=False)
def _salun(model, retain, forget, *, valid, seed, mask, fraction, threshold, params, random_mask, **hp):
    if random_mask:
        if threshold is not None:
            raise ValueError("random_mask draws a fixed fraction of the weights; use fraction, not threshold")
        m_s = _random_mask(model, fraction, seed=config.derive_seed(seed, 8), params=params, within=mask)
    else:
        m_s = saliency(model, forget, None if threshold is not None else fraction, threshold=threshold,
                       params=params, within=mask)
    return _random_label(model, retain, forget, valid=valid, seed=seed, mask=m_s, **hp)
