"""Synthetic submissions for assignment a05_salun (see tests/grading_cases/__init__.py)."""
from . import Case, solution_of

A = "a05_salun"
SOL_A = solution_of(A, "saliency")
SOL_B = solution_of(A, "masked_rl")
SOL_C = solution_of(A, "answer_c")
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) one part solved, display tricks on a stub elsewhere: the stubbed part still scores nothing
    Case("cheat: interactivity", edits={"saliency": SOL_A,
                                        "masked_rl": "get_ipython().ast_node_interactivity = 'all'\n" + STUB},
         at_most=6, parts={"test_masked_rl": 0}),
    # (2) patch the grader and call the library
    Case("cheat: patched grader", edits={"saliency": (
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
        "from course_lib import masks\n"
        "def saliency_mask(model, X_f, y_f, fraction):\n    return masks.saliency(model, (X_f, y_f), fraction)\n")},
         at_most=6, parts={"test_saliency": 0}),
    # (3) rebind a helper the tests might trust (torch.equal) so that moved weights look frozen
    Case("cheat: rebound helper", edits={"masked_rl": (
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=64, seed=0):\n"
        "    out = copy.deepcopy(model)\n"
        "    train.fit(out, X_r, y_r, epochs=1)\n    return out\n"
        "torch.equal = lambda a, b: True\n")},
         at_most=6, parts={"test_masked_rl": 0}),
    # (4) the library's answer in disguise: a function object copied whole, behind a default argument
    Case("cheat: library in disguise", edits={"masked_rl": (
        "from course_lib import train as _t\n"
        "from course_lib.unlearn.baselines import random_other_labels as _rol\n"
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=64, seed=0, _fit=_t.fit):\n"
        "    out = copy.deepcopy(model)\n"
        "    y2 = _rol(y_f, 10, seed)\n"
        "    _fit(out, torch.cat([X_r, X_f]), torch.cat([y_r, y2]), epochs=epochs, lr=lr, momentum=momentum,\n"
        "         weight_decay=weight_decay, batch_size=batch_size, seed=seed, mask=mask)\n    return out\n")},
         at_most=6, parts={"test_masked_rl": 0}),
    # a plausible bug: masking only the gradient; momentum and weight decay still move frozen weights
    Case("bug: gradient masking only", edits={"masked_rl": (
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=64, seed=0):\n"
        "    out = copy.deepcopy(model)\n    g = torch.Generator().manual_seed(seed)\n"
        "    y2 = (y_f + torch.randint(1, 10, y_f.shape, generator=g)) % 10\n"
        "    X, y = torch.cat([X_r, X_f]), torch.cat([y_r, y2])\n"
        "    opt = torch.optim.SGD(out.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)\n"
        "    for _ in range(epochs):\n        order = torch.randperm(len(y), generator=g)\n"
        "        for s in range(0, len(y), batch_size):\n            idx = order[s:s + batch_size]\n"
        "            opt.zero_grad()\n            F.cross_entropy(out(X[idx]), y[idx]).backward()\n"
        "            for n, p in out.named_parameters():\n"
        "                p.grad *= mask[n].float() if n in mask else 0.0\n"
        "            opt.step()\n    return out\n")}, score=6),
    # a plausible bug: per-layer top fraction instead of a global ranking
    Case("bug: per-layer ranking", edits={"saliency": (
        "def saliency_mask(model, X_f, y_f, fraction):\n"
        "    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):\n        raise ValueError('fraction')\n"
        "    model.eval()\n    ps = list(model.named_parameters())\n"
        "    gs = torch.autograd.grad(F.cross_entropy(model(X_f), y_f), [p for _, p in ps])\n"
        "    out = {}\n    for (n, p), g in zip(ps, gs):\n"
        "        flat = g.abs().reshape(-1); keep = torch.zeros_like(flat, dtype=torch.bool)\n"
        "        keep[torch.argsort(-flat, stable=True)[:round(fraction * flat.numel())]] = True\n"
        "        out[n] = keep.reshape(p.shape)\n    return out\n")}, at_most=6, parts={"test_saliency": 0}),
    # correct but different: the ranking in numpy (lexsort on -|g| then position)
    Case("different but correct", edits={"saliency": (
        "def saliency_mask(model, X_f, y_f, fraction):\n"
        "    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0 < fraction <= 1):\n"
        "        raise ValueError('fraction must be in (0, 1]')\n"
        "    was = model.training; model.eval()\n"
        "    ps = [(n, p) for n, p in model.named_parameters() if p.requires_grad]\n"
        "    gs = torch.autograd.grad(F.cross_entropy(model(X_f), y_f), [p for _, p in ps], allow_unused=True)\n"
        "    model.train(was)\n"
        "    a = np.concatenate([(np.zeros(p.numel()) if g is None else g.detach().abs().double().numpy().ravel()) for (_, p), g in zip(ps, gs)])\n"
        "    order = np.lexsort((np.arange(a.size), -a))[:round(fraction * a.size)]\n"
        "    keep = np.zeros(a.size, bool); keep[order] = True\n"
        "    out, at = {}, 0\n"
        "    for n, p in model.named_parameters():\n"
        "        if p.requires_grad:\n            out[n] = torch.from_numpy(keep[at:at + p.numel()].reshape(tuple(p.shape))); at += p.numel()\n"
        "        else:\n            out[n] = torch.zeros(p.shape, dtype=torch.bool)\n"
        "    return out\n")}),
]
