"""SalUn (lesson 5): Random Label fine-tuning of the salient weights only (sources 001, 003).

001 ("SalUn Training: classification"): ``theta_u = m_s * theta + (1 - m_s) * theta_o``, the
salient weights ``m_s`` (:func:`course_lib.masks.saliency`, computed once at ``theta_o``) trained
on forget examples relabelled ``y' != y``. The course trains on the retain set plus the
relabelled forget set with its ``random_label`` loop (003 Sec. 3 "Random Label"), so SalUn and
Random Label differ *only* in the mask: one shuffled pass per epoch over ``D_r + D_f'`` (retain
and forget rows mixed in every batch), the forget labels drawn **once**, before training, uniformly
from the *other* classes (stream ``derive_seed(seed, 3)``), SGD with momentum, weight decay and a
per-step schedule. Frozen entries are restored after every optimiser step
(:func:`course_lib.train.sgd_steps`), so momentum and weight decay cannot move them: they stay
bitwise equal to ``theta_o``.

This is *not* the loop of SalUn's public code (``Classification/unlearn/RL.py``). There, for
CIFAR-10 and SVHN, each epoch is a pass over the forget loader with labels **redrawn every batch**
uniformly from **all** classes (the true class included, probability 1/C), **then** a pass over the
retain loader; for CIFAR-100 and TinyImageNet, one shuffled pass over the concatenation with the
forget labels redrawn once per epoch from all classes. Its masking multiplies the gradients by the
mask, then restores the frozen entries (and masks their momentum) after every step: the same
frozen weights as here.

``random_mask=True`` is the slides' ablation: the same number of entries at random positions
(:func:`course_lib.masks.random_mask`, drawn from the stream ``derive_seed(seed, 8)``). A ``mask``
given by the caller (e.g. a pruning mask) restricts where salient entries may lie.
"""
from __future__ import annotations

from .. import config
from ..masks.salient import random_mask as _random_mask
from ..masks.salient import saliency
from .baselines import relabel_and_finetune
from .registry import register


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
    return relabel_and_finetune(model, retain, forget, seed=seed, mask=m_s, **hp)
