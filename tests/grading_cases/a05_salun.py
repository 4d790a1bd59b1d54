"""Synthetic submissions of a05_salun (10 points: A 4, B 4, C 2).

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader change nothing the tests use, so each case scores exactly what
its answers deserve. The library's reference code (course_lib.masks, course_lib.unlearn and the whole
of course_lib.train) raises NotImplementedError in the sandbox: a part built on it scores 0.
"""
from . import Case, solution_of, stub

A = "a05_salun"
SOL = {g: solution_of(A, g) for g in ("saliency", "masked_rl", "answer_c")}
STUB = {g: stub(A, g) for g in ("saliency", "masked_rl")}

# Part B written differently: frozen entries restored through boolean indexing after every step, the
# relabelling by rejection sampling, and reproducibility flags set (the old rules forbade assigning
# attributes of modules)
DETERMINISTIC_RL = '''import random
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
torch.manual_seed(0)
random.seed(0)


def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9, weight_decay=5e-4,
                        batch_size=64, seed=0):
    new = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    C = new(X_f[:1]).shape[-1]
    y_rand = y_f.clone()
    for i in range(len(y_f)):
        while int(y_rand[i]) == int(y_f[i]):
            y_rand[i] = int(torch.randint(0, C, (1,), generator=gen))
    X, y = torch.cat([X_r, X_f]), torch.cat([y_r, y_rand])
    start = {n: p.detach().clone() for n, p in new.named_parameters()}
    frozen = {n: ~mask[n] if n in mask else torch.ones_like(p, dtype=torch.bool) for n, p in new.named_parameters()}
    opt = torch.optim.SGD(new.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    new.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for b in perm.split(batch_size):
            loss = F.cross_entropy(new(X[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for n, p in new.named_parameters():
                    p[frozen[n]] = start[n][frozen[n]]
    return new
'''

GRAD_MASK_ONLY = '''def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,
                        weight_decay=5e-4, batch_size=64, seed=0):
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    y2 = (y_f + torch.randint(1, 10, y_f.shape, generator=g)) % 10
    X, y = torch.cat([X_r, X_f]), torch.cat([y_r, y2])
    opt = torch.optim.SGD(out.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            F.cross_entropy(out(X[idx]), y[idx]).backward()
            for n, p in out.named_parameters():
                p.grad *= mask[n].float() if n in mask else 0.0
            opt.step()
    return out
'''

PER_LAYER = '''def saliency_mask(model, X_f, y_f, fraction):
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError('fraction')
    model.eval()
    ps = list(model.named_parameters())
    gs = torch.autograd.grad(F.cross_entropy(model(X_f), y_f), [p for _, p in ps])
    out = {}
    for (n, p), g in zip(ps, gs):
        flat = g.abs().reshape(-1); keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.argsort(-flat, stable=True)[:round(fraction * flat.numel())]] = True
        out[n] = keep.reshape(p.shape)
    return out
'''

NUMPY_SALIENCY = '''def saliency_mask(model, X_f, y_f, fraction):
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0 < fraction <= 1):
        raise ValueError('fraction must be in (0, 1]')
    was = model.training; model.eval()
    ps = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gs = torch.autograd.grad(F.cross_entropy(model(X_f), y_f), [p for _, p in ps], allow_unused=True)
    model.train(was)
    a = np.concatenate([(np.zeros(p.numel()) if g is None else g.detach().abs().double().numpy().ravel())
                        for (_, p), g in zip(ps, gs)])
    order = np.lexsort((np.arange(a.size), -a))[:round(fraction * a.size)]
    keep = np.zeros(a.size, bool); keep[order] = True
    out, at = {}, 0
    for n, p in model.named_parameters():
        if p.requires_grad:
            out[n] = torch.from_numpy(keep[at:at + p.numel()].reshape(tuple(p.shape))); at += p.numel()
        else:
            out[n] = torch.zeros(p.shape, dtype=torch.bool)
    return out
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) one part solved, the interactivity tip on a stub: B scores nothing, A and C (built on A) theirs
    Case("cheat 1: interactivity 'all' + stub",
         edits={"saliency": SOL["saliency"],
                "masked_rl": "get_ipython().ast_node_interactivity = 'all'\n" + STUB["masked_rl"]},
         score=6, parts={"test_saliency": 4, "test_masked_rl": 0, "test_answer_c": 2}),
    # (2) patch the grader and call the library: masks.saliency raises in the sandbox, so A and C score 0
    Case("cheat 2: assert_own_code patched + masks.saliency", edits={"saliency": (
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
        "from course_lib import masks\n"
        "def saliency_mask(model, X_f, y_f, fraction):\n    return masks.saliency(model, (X_f, y_f), fraction)\n")},
         score=4, parts={"test_saliency": 0, "test_masked_rl": 4, "test_answer_c": 0}),
    # (3) rebind a helper the tests might trust (torch.equal) so that moved weights look frozen, with the
    #     library's train.fit as the "update": only the sandbox's torch.equal changes, and train.fit raises
    Case("cheat 3: torch.equal rebound + train.fit", edits={"masked_rl": (
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=64, seed=0):\n"
        "    out = copy.deepcopy(model)\n"
        "    train.fit(out, X_r, y_r, epochs=1)\n    return out\n"
        "torch.equal = lambda a, b: True\n")},
         score=6, parts={"test_masked_rl": 0}),
    Case("cheat 3b: torch.equal rebound + an unmasked update of its own", edits={"masked_rl": (
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=64, seed=0):\n"
        "    out = copy.deepcopy(model)\n"
        "    with torch.no_grad():\n        for p in out.parameters():\n            p.add_(0.01)\n"
        "    return out\n"
        "torch.equal = lambda a, b: True\n")},
         score=6, parts={"test_masked_rl": 0}),
    # (4) the library's answer in disguise: function objects behind default arguments; they raise (with the
    #     library filtered out of the sandbox, already the import of unlearn.baselines does)
    Case("cheat 4: train.fit(mask=) and random_other_labels through default arguments", edits={"masked_rl": (
        "from course_lib import train as _t\n"
        "from course_lib.unlearn.baselines import random_other_labels as _rol\n"
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=5, lr=0.02, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=64, seed=0, _fit=_t.fit):\n"
        "    out = copy.deepcopy(model)\n"
        "    y2 = _rol(y_f, 10, seed)\n"
        "    _fit(out, torch.cat([X_r, X_f]), torch.cat([y_r, y2]), epochs=epochs, lr=lr, momentum=momentum,\n"
        "         weight_decay=weight_decay, batch_size=batch_size, seed=seed, mask=mask)\n    return out\n")},
         score=6, parts={"test_masked_rl": 0}),
    # plausible bugs
    Case("bug: gradient masking only (momentum and weight decay still move frozen weights)",
         edits={"masked_rl": GRAD_MASK_ONLY}, score=6, parts={"test_masked_rl": 0}),
    Case("bug: per-layer ranking instead of a global one (A, and C built on it)", edits={"saliency": PER_LAYER},
         score=4, parts={"test_saliency": 0, "test_masked_rl": 4, "test_answer_c": 0}),
    # correct but different
    Case("different: the ranking in numpy (lexsort on -|g| then position)", edits={"saliency": NUMPY_SALIENCY}),
    Case("different: cudnn.deterministic = True, rejection-sampled labels, restore by indexing",
         edits={"masked_rl": DETERMINISTIC_RL}),
]
