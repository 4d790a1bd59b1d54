"""Synthetic submissions of a05_salun (11 points: A 4, B 4, C 3).

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader change nothing the tests use, so each case scores exactly what
its answers deserve. The library's reference code (course_lib.masks, course_lib.params, course_lib.unlearn
and the whole of course_lib.train) raises NotImplementedError in the sandbox: a part built on it scores 0.
Part A asks for a per-layer budget where lecture 05's `saliency_by_hand` ranks globally, Part B for a loop
of one's own where the lecture calls `train.fit(mask=)`, Part C for predictions the lecture does not
compute: the lecture's cells pasted in score 0 of 11.
"""
from . import Case, solution_of, stub

A = "a05_salun"
SOL = {g: solution_of(A, g) for g in ("saliency", "masked_rl", "answer_c")}
STUB = {g: stub(A, g) for g in ("saliency", "masked_rl", "answer_c")}

# ----------------------------------------------------------------- lecture 05's cells, adapted to the stubs
LECTURE_A = '''def saliency_mask(model, X_f, y_f, fraction, batch_size=256):
    """lecture 05's saliency_by_hand (a global budget), on a copy so that p.grad of the model stays empty"""
    model = copy.deepcopy(model)
    forget = (X_f, y_f)
    model.eval(); model.zero_grad()
    for s in range(0, len(forget[1]), batch_size):
        X_b, y_b = forget[0][s:s + batch_size], forget[1][s:s + batch_size]
        (F.cross_entropy(model(X_b).float(), y_b, reduction="sum") / len(forget[1])).backward()
    flat = torch.cat([p.grad.abs().reshape(-1) for p in model.parameters()])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.argsort(-flat, stable=True)[:round(fraction * flat.numel())]] = True
    out, at = {}, 0
    for n, p in model.named_parameters():
        out[n] = keep[at:at + p.numel()].reshape(p.shape); at += p.numel()
    return out
'''
LECTURE_B = '''from course_lib import config, train
from course_lib.unlearn.baselines import random_other_labels


def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=HP["epochs"], lr=HP["lr"], momentum=0.9,
                        weight_decay=5e-4, batch_size=HP["batch_size"], seed=0):
    """lecture 05's section 3: the library's Random Label stream and train.fit with mask="""
    y_rand = random_other_labels(y_f, 10, config.derive_seed(seed, 3))
    hand = copy.deepcopy(model)
    train.fit(hand, torch.cat([X_r, X_f]), torch.cat([y_r, y_rand]), seed=seed, mask=mask, epochs=epochs, lr=lr,
              momentum=momentum, weight_decay=weight_decay, batch_size=batch_size)
    return hand
'''

GRAD_MASK_ONLY = '''def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=HP["epochs"], lr=HP["lr"], momentum=0.9,
                        weight_decay=5e-4, batch_size=HP["batch_size"], seed=0):
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

# Part A's bug: a budget per tensor (weight and bias apart) instead of per layer
PER_TENSOR = '''def saliency_mask(model, X_f, y_f, fraction):
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

# Part A in numpy: lexsort on (-|g|, position) within each layer
NUMPY_SALIENCY = '''def saliency_mask(model, X_f, y_f, fraction):
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0 < fraction <= 1):
        raise ValueError('fraction must be in (0, 1]')
    was = model.training; model.eval()
    ps = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gs = torch.autograd.grad(F.cross_entropy(model(X_f), y_f), [p for _, p in ps], allow_unused=True)
    model.train(was)
    absg = {n: (np.zeros(p.numel()) if g is None else g.detach().abs().double().numpy().ravel()) for (n, p), g in zip(ps, gs)}
    out = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in model.named_parameters()}
    layers = []
    for n, _ in ps:
        key = n[:n.rfind(".")] if "." in n else n
        if not layers or layers[-1][0] != key:
            layers.append((key, []))
        layers[-1][1].append(n)
    shapes = dict((n, tuple(p.shape)) for n, p in ps)
    for _, names in layers:
        a = np.concatenate([absg[n] for n in names])
        keep = np.zeros(a.size, bool)
        keep[np.lexsort((np.arange(a.size), -a))[:round(fraction * a.size)]] = True
        at = 0
        for n in names:
            size = absg[n].size
            out[n] = torch.from_numpy(keep[at:at + size].reshape(shapes[n])); at += size
    return out
'''

# Part B written differently: frozen entries restored through boolean indexing after every step, the
# relabelling by rejection sampling, and reproducibility flags set
DETERMINISTIC_RL = '''import random
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
torch.manual_seed(0)
random.seed(0)


def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=HP["epochs"], lr=HP["lr"], momentum=0.9,
                        weight_decay=5e-4, batch_size=HP["batch_size"], seed=0):
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

# Part C in closed form (float32 would do too: the tolerance is relative 1e-3)
CLOSED_FORM_C = '''import math

w, b = 1.0, 0.0
for t in range(200):                    # d = 0 + wd * w; b = mu * b + d (b = d at the first step); w -= lr * b
    b = 0.9 * b + 5e-4 * w
    w -= 0.1 * b
ratio_decay = w
moves_momentum_only = "no"              # no weight decay, zero gradient, empty buffer: every step adds 0
b5 = sum(0.9 ** i for i in range(5))    # the buffer after 5 steps of gradient 1
drift_after_freeze = 0.1 * b5 * sum(0.9 ** k for k in range(1, 101))
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # the lecture's cells pasted into the stubs: the global mask of saliency_by_hand, the library's masked
    # train.fit (raises in the sandbox), Part C left blank (the lecture computes none of it): 0 of 11 (<= 25%)
    Case("lecture-copy", base="release", edits={"saliency": LECTURE_A, "masked_rl": LECTURE_B},
         score=0, parts={"test_saliency": 0, "test_masked_rl": 0, "test_answer_c": 0}),
    # (1) one part solved, the interactivity tip on a stub: B scores nothing, A and C theirs
    Case("cheat 1: interactivity 'all' + stub",
         edits={"saliency": SOL["saliency"],
                "masked_rl": "get_ipython().ast_node_interactivity = 'all'\n" + STUB["masked_rl"]},
         score=7, parts={"test_saliency": 4, "test_masked_rl": 0, "test_answer_c": 3}),
    # (2) patch the grader and call the library: masks.saliency raises in the sandbox, so A scores 0
    Case("cheat 2: assert_own_code patched + masks.saliency", edits={"saliency": (
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
        "from course_lib import masks\n"
        "def saliency_mask(model, X_f, y_f, fraction):\n    return masks.saliency(model, (X_f, y_f), fraction)\n")},
         score=7, parts={"test_saliency": 0, "test_masked_rl": 4, "test_answer_c": 3}),
    # (3) rebind a helper the tests might trust (torch.equal) so that moved weights look frozen, with the
    #     library's train.fit as the "update": only the sandbox's torch.equal changes, and train.fit raises
    Case("cheat 3: torch.equal rebound + train.fit", edits={"masked_rl": (
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=3, lr=0.1, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=32, seed=0):\n"
        "    out = copy.deepcopy(model)\n"
        "    train.fit(out, X_r, y_r, epochs=1)\n    return out\n"
        "torch.equal = lambda a, b: True\n")},
         score=7, parts={"test_masked_rl": 0}),
    Case("cheat 3b: torch.equal rebound + an unmasked update of its own", edits={"masked_rl": (
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=3, lr=0.1, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=32, seed=0):\n"
        "    out = copy.deepcopy(model)\n"
        "    with torch.no_grad():\n        for p in out.parameters():\n            p.add_(0.01)\n"
        "    return out\n"
        "torch.equal = lambda a, b: True\n")},
         score=7, parts={"test_masked_rl": 0}),
    # (4) the library's answer in disguise: function objects behind default arguments; they raise (with the
    #     library filtered out of the sandbox, already the import of unlearn.baselines does)
    Case("cheat 4: train.fit(mask=) and random_other_labels through default arguments", edits={"masked_rl": (
        "from course_lib import train as _t\n"
        "from course_lib.unlearn.baselines import random_other_labels as _rol\n"
        "def masked_random_label(model, X_r, y_r, X_f, y_f, mask, epochs=3, lr=0.1, momentum=0.9,\n"
        "                        weight_decay=5e-4, batch_size=32, seed=0, _fit=_t.fit):\n"
        "    out = copy.deepcopy(model)\n"
        "    y2 = _rol(y_f, 10, seed)\n"
        "    _fit(out, torch.cat([X_r, X_f]), torch.cat([y_r, y2]), epochs=epochs, lr=lr, momentum=momentum,\n"
        "         weight_decay=weight_decay, batch_size=batch_size, seed=seed, mask=mask)\n    return out\n")},
         score=7, parts={"test_masked_rl": 0}),
    # plausible bugs
    Case("bug: gradient masking only (momentum and weight decay still move frozen weights)",
         edits={"masked_rl": GRAD_MASK_ONLY}, score=7, parts={"test_masked_rl": 0}),
    Case("bug: a budget per tensor instead of per layer (weight and bias ranked apart)",
         edits={"saliency": PER_TENSOR}, score=7, parts={"test_saliency": 0, "test_masked_rl": 4, "test_answer_c": 3}),
    Case("bug: momentum alone is believed to move a frozen weight",
         edits={"answer_c": SOL["answer_c"].replace(
             'moves_momentum_only = "no" if all(v == 1.0 for v in _simulate(200, 0.0)) else "yes"',
             'moves_momentum_only = "yes"')},
         score=8, parts={"test_answer_c": 0}),
    # correct but different
    Case("different: the per-layer ranking in numpy (lexsort on -|g| then position)", edits={"saliency": NUMPY_SALIENCY}),
    Case("different: cudnn.deterministic = True, rejection-sampled labels, restore by indexing",
         edits={"masked_rl": DETERMINISTIC_RL}),
    Case("different: Part C in closed form, in plain Python", edits={"answer_c": CLOSED_FORM_C}),
]
