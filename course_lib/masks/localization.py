"""Localisation: *which* parameters a localised unlearner may touch (lesson 7; source 003).

    mask = masks.localize(model, forget, "del", budget=0.3)

``budget`` is the share of **all** model parameters that may be updated (``0`` gives an empty
mask, ``1`` everything). Strategies (source 003, Sec. 4 and 5):

==============  ==========================================================================
``deepest``     whole layers from the output, as many as fit the budget (Goel et al.'s EU-k)
``shallowest``  whole layers from the input (003's control for Deepest)
``salloc``      SalUn's localiser: parameters ranked by |grad of the forget loss|
``del``         DEL (003, Sec. 5.2): criticality |theta * grad|; a unit scores the mean of its
                top ``top_fraction`` scores; the largest prefix of the sorted units that fits
``critmem``     Maini et al.'s iterative per-example channel reset until the prediction flips,
                the union over the forget set (003, Sec. 4); expensive
``random``      003's control (Table 5): the per-layer counts of a ``reference`` mask at random
                positions (``seed``); without a reference, random units filling the budget
==============  ==========================================================================

``salloc`` and ``del`` are two corners of Table 1's grid: ``criterion`` (``"grad"``,
``"weighted_grad"``, or ``"weight"`` for Table 6) times ``granularity`` (``"parameter"``,
``"channel"``) can be set for any of the two (``localize(..., "del", b, criterion="grad")``).

**Units** (:func:`layers`): an output channel of a conv or an output neuron of a linear layer is one
unit: its slice of the weight, its bias entry and, where the next module with parameters is a
normalisation layer over those channels (batch / layer / group norm), that layer's entries for
the channel. A normalisation layer that follows nothing owns one unit per entry; any other
parameter one unit per slice of its first dimension. "Layers" (for Deepest and Shallowest) are
these groups, ordered as the modules are registered (input to output for the course's models).

Deviations from DEL's public code (each said where it matters; see lesson 7): scores come from the
*mean* forget loss in eval mode (:func:`course_lib.params.mean_loss_gradient`) rather than a sum over
training-mode batches (a positive factor, so the ranking of ``del`` and ``salloc`` is the same up
to batch-norm statistics); the unit score is the mean of the top ``max(1, floor(top_fraction *
unit size))`` scores of the unit as the paper's text says (the code takes ``int(0.1 * output
channels)`` entries); and the selection is the paper's prefix of sorted units within the budget,
not the code's global top fraction over entries after broadcasting channel scores.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import config
from ..params import Mask, check_mask, global_topk, mean_loss_gradient, model_device, snapshot
from ..validation import check_number, check_xy

__all__ = ["localize", "layers", "Layer", "parameter_scores", "unit_scores", "select_units", "select_layers",
           "layer_shares",
           "mask_from_units", "units_of_mask", "random_like", "critmem_channels", "classifier_names",
           "STRATEGIES", "CRITERIA", "GRANULARITIES"]

STRATEGIES = ("deepest", "shallowest", "salloc", "del", "critmem", "random")
CRITERIA = ("grad", "weighted_grad", "weight")
GRANULARITIES = ("parameter", "channel")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_UNIT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class Layer:
    """One group of parameters whose first dimension indexes ``n_units`` units of ``unit_size``
    parameters each (``params``: parameter names; ``kind``: "conv", "linear", "norm" or "other")."""

    name: str
    kind: str
    params: tuple[str, ...]
    n_units: int
    unit_size: int

    @property
    def size(self) -> int:
        return self.n_units * self.unit_size


def _norm_features(mod: nn.Module) -> int | None:
    if isinstance(mod, nn.modules.batchnorm._NormBase):
        return mod.num_features
    if isinstance(mod, nn.GroupNorm):
        return mod.num_channels
    if isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1:
        return mod.normalized_shape[0]
    return None


def layers(model: nn.Module) -> list[Layer]:
    """The unit structure of ``model`` (see the module docstring), in registration order."""
    out: list[Layer] = []
    last: dict | None = None           # the conv/linear layer that a norm layer may follow
    for mname, mod in model.named_modules():
        own = [(f"{mname}.{n}" if mname else n, p) for n, p in mod.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(mod, _UNIT_LAYERS):
            n_units = mod.out_channels if isinstance(mod, nn.modules.conv._ConvNd) else mod.out_features
            last = dict(name=mname, kind="unit", params=[n for n, _ in own], n_units=n_units, slot=len(out))
            out.append(_make(last, model))     # replaced if a norm layer follows
            continue
        if isinstance(mod, _NORMS) and last is not None and _norm_features(mod) == last["n_units"]:
            last["params"] += [n for n, _ in own]
            out[last["slot"]] = _make(last, model)
            last = None
            continue
        last = None
        if isinstance(mod, _NORMS) and _norm_features(mod) is not None:
            out.append(_make(dict(name=mname, kind="norm", params=[n for n, _ in own],
                                  n_units=_norm_features(mod)), model))
            continue
        for n, p in own:
            out.append(_make(dict(name=n, kind="other", params=[n], n_units=p.shape[0] if p.ndim else 1), model))
    covered = [n for layer in out for n in layer.params]
    missing = sorted(set(dict(model.named_parameters())) - set(covered))
    if missing or len(covered) != len(set(covered)):
        raise ValueError(f"could not assign every parameter to one unit layer (missing {missing[:5]})")
    return out


def _make(d: dict, model: nn.Module) -> Layer:
    params = dict(model.named_parameters())
    sizes = []
    for n in d["params"]:
        p = params[n]
        if (p.shape[0] if p.ndim else 1) != d["n_units"]:
            raise ValueError(f"parameter {n} of shape {tuple(p.shape)} does not have {d['n_units']} units")
        sizes.append(p.numel() // d["n_units"])
    kind = d["kind"]
    if kind == "unit":
        kind = "linear" if params[d["params"][0]].ndim == 2 else "conv"
    return Layer(d["name"], kind, tuple(d["params"]), int(d["n_units"]), int(sum(sizes)))


def classifier_names(model: nn.Module) -> list[str]:
    """Names of the classifier layer's parameters: ``model.head`` if the model has one (the
    course's models do), else the last ``nn.Linear``."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the model has neither a .head nor an nn.Linear layer: no classifier layer to find")
        head = linears[-1]
    ids = {id(p) for p in head.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _unit_matrix(layer: Layer, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[n_units, unit_size]``: the layer's per-parameter values, one row per unit."""
    return torch.cat([tensors[n].reshape(layer.n_units, -1) for n in layer.params], dim=1)


def parameter_scores(model: nn.Module, forget, criterion: str = "weighted_grad", *,
                     batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-parameter criticality on ``forget = (X, y)``: ``"grad"`` |g| (SalLoc),
    ``"weighted_grad"`` |theta * g| (CritMem, DEL), ``"weight"`` |theta| (003 Table 6, data-free);
    g is the gradient of the mean cross-entropy over ``forget`` (float32, on the CPU)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    params = dict(model.named_parameters())
    if criterion == "weight":
        return {n: p.detach().abs().float().cpu() for n, p in params.items()}
    grads = mean_loss_gradient(model, forget, batch_size=batch_size)
    out = {}
    for n, p in params.items():
        g = grads.get(n, torch.zeros_like(p)).detach().float().cpu()
        out[n] = g.abs() if criterion == "grad" else (p.detach().float().cpu() * g).abs()
    return out


def unit_scores(layer: Layer, scores: dict[str, torch.Tensor], top_fraction: float = 0.1) -> torch.Tensor:
    """DEL's unit criticality ``[n_units]``: the mean of the top ``max(1, floor(top_fraction *
    unit_size))`` parameter scores of each unit (003, Sec. 5.2)."""
    k = max(1, int(math.floor(top_fraction * layer.unit_size)))
    return torch.topk(_unit_matrix(layer, scores), k, dim=1).values.mean(1)


def _allowed(budget: float, total: int) -> int:
    return int(math.floor(budget * total + 1e-9))


def select_units(unit_score: list[torch.Tensor], unit_size: list[int], allowed: int) -> list[torch.Tensor]:
    """The budgeted prefix selection (003, Sec. 5.2): sort all units by score (descending, ties
    in layer order) and keep the longest prefix whose parameters number at most ``allowed``.
    ``unit_score[l]`` ``[n_units_l]``, ``unit_size[l]`` its unit size; returns bool tensors."""
    scores = torch.cat([s.double() for s in unit_score])
    sizes = torch.cat([torch.full((len(s),), int(z), dtype=torch.long) for s, z in zip(unit_score, unit_size)])
    order = torch.sort(scores, descending=True, stable=True).indices
    n_sel = int((torch.cumsum(sizes[order], 0) <= allowed).sum())
    chosen = torch.zeros(len(scores), dtype=torch.bool)
    chosen[order[:n_sel]] = True
    return list(torch.split(chosen, [len(s) for s in unit_score]))


def select_layers(structure: list[Layer], allowed: int, from_output: bool) -> list[bool]:
    """Whole layers from the output (``from_output``) or the input, as many as fit ``allowed``."""
    order = list(range(len(structure)))[::-1] if from_output else list(range(len(structure)))
    keep, used = [False] * len(structure), 0
    for i in order:
        if used + structure[i].size > allowed:
            break
        keep[i], used = True, used + structure[i].size
    return keep


def layer_shares(model: nn.Module, from_output: bool) -> list[float]:
    """The shares of all parameters that Deepest (``from_output``) or Shallowest opens with 1, 2, ...
    whole layers: the only budgets at which a layer-wise mask opens what it is allowed to. Comparing
    another strategy with a layer-wise one at one of these shares compares equal *opened* budgets
    (between them the layer-wise mask opens less than its nominal budget)."""
    structure = layers(model)
    total = sum(L.size for L in structure)
    order = structure[::-1] if from_output else structure
    out, used = [], 0
    for L in order:
        used += L.size
        out.append(used / total)
    return out


def mask_from_units(model: nn.Module, structure: list[Layer], chosen: list[torch.Tensor]) -> Mask:
    """A mask that opens every parameter of the chosen units (one bool ``[n_units]`` per layer)."""
    params = dict(model.named_parameters())
    mask = {}
    for layer, c in zip(structure, chosen):
        for n in layer.params:
            p = params[n]
            mask[n] = c.to(p.device).view(-1, *([1] * max(p.ndim - 1, 0))).expand_as(p).reshape(p.shape).clone()
    return mask


def units_of_mask(model: nn.Module, mask: dict[str, torch.Tensor], structure: list[Layer] | None = None):
    """Per layer, ``(all_in [n_units], any_in [n_units])`` bool tensors: which units a mask opens
    completely, and which it touches at all (a unit-structured mask has the two equal)."""
    structure = structure or layers(model)
    params = dict(model.named_parameters())
    filled = {n: mask.get(n, torch.zeros_like(p, dtype=torch.bool)).cpu() for n, p in params.items()}
    out = []
    for layer in structure:
        M = _unit_matrix(layer, filled)
        out.append((M.all(1), M.any(1)))
    return out


def random_like(model: nn.Module, reference: dict[str, torch.Tensor], seed: int = 0,
                granularity: str | None = None) -> Mask:
    """003's random-mask control (Table 5): per layer, as many units as ``reference`` opens
    (``granularity="channel"``), or per parameter tensor as many entries (``"parameter"``), at
    random positions drawn with ``seed``. ``None``: channel if ``reference`` is unit-structured."""
    check_mask(reference, model)
    structure = layers(model)
    per_layer = units_of_mask(model, reference, structure)
    if granularity is None:
        granularity = "channel" if all(torch.equal(a, b) for a, b in per_layer) else "parameter"
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    g = torch.Generator().manual_seed(int(seed))
    if granularity == "channel":
        chosen = []
        for layer, (all_in, _) in zip(structure, per_layer):
            c = torch.zeros(layer.n_units, dtype=torch.bool)
            c[torch.randperm(layer.n_units, generator=g)[:int(all_in.sum())]] = True
            chosen.append(c)
        return mask_from_units(model, structure, chosen)
    out = {}
    for n, p in model.named_parameters():
        k = int(reference[n].sum()) if n in reference else 0
        m = torch.zeros(p.numel(), dtype=torch.bool)
        m[torch.randperm(p.numel(), generator=g)[:k]] = True
        out[n] = m.view(p.shape).to(p.device)
    return out


def critmem_channels(model: nn.Module, forget, *, max_units: int = 64, exclude_classifier: bool = True):
    """Maini et al.'s localisation, per example (003, Sec. 4): repeatedly score every candidate
    unit by the *sum* of |theta * grad| of the example's loss over its parameters, zero the best
    unit not yet zeroed, until the example is misclassified (or ``max_units`` were zeroed).

    Candidates are the conv / linear units (with their norm entries); the classifier layer is
    left out by default (zeroing the true class's output row would flip any prediction at once).
    Returns ``(chosen, info)``: ``chosen[i]`` is a list of ``(layer index, unit)`` for example ``i``,
    ``info`` counts ``gradient_evaluations`` (one per iteration per example) and ``flipped``.
    Cost: one forward-backward pass per zeroed unit per example, sequentially, so it grows with
    |forget| times the units needed to flip each example (versus one batched pass for DEL)."""
    X, y = forget
    check_xy(X, y, "forget set")
    structure = layers(model)
    head = set(classifier_names(model)) if exclude_classifier else set()
    cand = [i for i, L in enumerate(structure) if L.kind in ("conv", "linear") and not (set(L.params) & head)]
    work = copy.deepcopy(model).eval()
    params = dict(work.named_parameters())
    reference = snapshot(work)
    dev = model_device(work)
    max_units = config.budget().cap_iterations(max_units)  # a smoke run's loop cap
    chosen, evals, flipped = [], 0, 0
    for i in range(X.shape[0]):
        xb, yb = X[i:i + 1].to(dev), y[i:i + 1].to(dev)
        done: set[tuple[int, int]] = set()
        picks: list[tuple[int, int]] = []
        for _ in range(max_units + 1):
            out = work(xb)
            if int(out.argmax(1)) != int(yb):
                flipped += 1
                break
            if len(picks) == max_units:
                break
            loss = F.cross_entropy(out.float(), yb)
            names = [n for j in cand for n in structure[j].params]
            grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)))
            evals += 1
            best, best_key = -math.inf, None
            for j in cand:
                L = structure[j]
                s = torch.cat([(params[n].detach() * (grads[n] if grads[n] is not None else 0)).abs()
                               .reshape(L.n_units, -1) for n in L.params], 1).sum(1)
                for u in [u for (jj, u) in done if jj == j]:
                    s[u] = -1.0
                v, u = s.max(0)
                if float(v) > best:
                    best, best_key = float(v), (j, int(u))
            if best_key is None or best < 0:      # every candidate unit is already zeroed
                break
            done.add(best_key)
            picks.append(best_key)
            with torch.no_grad():
                for n in structure[best_key[0]].params:
                    params[n][best_key[1]] = 0
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(reference[n])
        chosen.append(picks)
    return chosen, dict(gradient_evaluations=evals, flipped=flipped, examples=int(X.shape[0]))


def localize(model: nn.Module, forget, strategy: str, budget: float, *, retain=None, seed: int = 0,
             criterion: str | None = None, granularity: str | None = None, top_fraction: float = 0.1,
             source: str = "forget", reference: dict[str, torch.Tensor] | None = None,
             max_units: int = 64, batch_size: int = 256) -> Mask:
    """A mask ``{name: bool tensor}`` for ``model`` that opens at most ``floor(budget * P)`` of
    its ``P`` parameters, chosen by ``strategy`` (see the module docstring).

    ``forget = (X, y)``. ``criterion`` / ``granularity`` override the strategy's corner of Table 1
    (``salloc``: "grad" x "parameter"; ``del``: "weighted_grad" x "channel"); ``top_fraction`` is
    DEL's share of a unit's scores that are averaged; ``source="train"`` scores on
    ``retain`` plus ``forget`` (003 Table 6's "train set" criterion); ``reference`` is the mask
    whose per-layer counts ``random`` copies (``budget`` is then not used); ``max_units`` caps
    CritMem's resets per example (its mask is then trimmed to the budget, units chosen by more
    examples first).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown localisation strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    budget = check_number(budget, "budget", 0.0, 1.0)
    if not isinstance(forget, (tuple, list)) or len(forget) != 2:
        raise ValueError("forget must be a pair (X, y) of tensors")
    check_xy(*forget, "forget set")
    check_number(top_fraction, "top_fraction", 0.0, 1.0, lo_open=True)
    if source not in ("forget", "train"):
        raise ValueError(f"source must be 'forget' or 'train', got {source!r}")
    structure = layers(model)
    total = sum(L.size for L in structure)
    allowed = _allowed(budget, total)
    if strategy == "random":
        if reference is not None:
            return random_like(model, reference, seed, granularity)
        g = torch.Generator().manual_seed(int(seed))
        fake = [torch.rand(L.n_units, generator=g) for L in structure]
        return mask_from_units(model, structure, select_units(fake, [L.unit_size for L in structure], allowed))
    if strategy in ("deepest", "shallowest"):
        keep = select_layers(structure, allowed, from_output=strategy == "deepest")
        return mask_from_units(model, structure, [torch.full((L.n_units,), k) for L, k in zip(structure, keep)])
    if strategy == "critmem":
        picks, _ = critmem_channels(model, forget, max_units=max_units)
        counts = [torch.zeros(L.n_units) for L in structure]
        for ex in picks:
            for j, u in ex:
                counts[j][u] += 1
        score = [c + 1e-3 * (c > 0) for c in counts]            # unused units: score 0, never chosen
        chosen = select_units(score, [L.unit_size for L in structure], allowed)
        return mask_from_units(model, structure, [c & (s > 0) for c, s in zip(chosen, score)])
    criterion = criterion or ("grad" if strategy == "salloc" else "weighted_grad")
    granularity = granularity or ("parameter" if strategy == "salloc" else "channel")
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    data = forget
    if source == "train":
        if retain is None:
            raise ValueError("source='train' scores on retain + forget: pass retain=(X, y)")
        check_xy(*retain, "retain set")
        data = (torch.cat([retain[0], forget[0]]), torch.cat([retain[1], forget[1]]))
    scores = parameter_scores(model, data, criterion, batch_size=batch_size)
    if granularity == "channel":
        chosen = select_units([unit_scores(L, scores, top_fraction) for L in structure],
                              [L.unit_size for L in structure], allowed)
        return mask_from_units(model, structure, chosen)
    top = global_topk({n: scores[n] for n, _ in model.named_parameters()}, allowed)
    return {n: top[n].to(p.device) for n, p in model.named_parameters()}
