"""Synthetic submissions of a06_sparsity (12 points: A 4, B 3, C 3, D 2).

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader change nothing the tests use, so each case scores exactly what
its answers deserve. The library's reference code (course_lib.masks, course_lib.train,
course_lib.unlearn) raises NotImplementedError in the sandbox: a part built on it scores 0.
"""
from . import Case, solution_of, stub

A = "a06_sparsity"
SOL = {g: solution_of(A, g) for g in ("omp_mask", "finetune_pruned", "decaying_l1", "answer_d")}
STUB = {g: stub(A, g) for g in ("omp_mask", "finetune_pruned", "decaying_l1")}

PER_LAYER = '''def omp_mask(model, sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError("sparsity must lie in [0, 1)")
    keep = {n + ".weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    out = {}
    for n, p in model.named_parameters():
        if n in keep:
            w = p.detach().abs().flatten()
            k = round(sparsity * w.numel())
            m = torch.ones(w.numel(), dtype=torch.bool)
            m[torch.sort(w, stable=True).indices[:k]] = False
            out[n] = m.view(p.shape)
        else:
            out[n] = torch.ones(p.shape, dtype=torch.bool)
    return out
'''

MASK_ONCE = '''def finetune_pruned(model, mask, X, y, epochs, lr, momentum, weight_decay, batch_size=64, seed=0):
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.mul_(mask[n].to(p.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model
'''

DIFFERENT_OMP = '''def omp_mask(model, sparsity):
    if type(sparsity) not in (int, float) or sparsity != sparsity or sparsity < 0 or sparsity >= 1:
        raise ValueError("sparsity must be a number in [0, 1)")
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    names = [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] in layers and n.endswith(".weight")]
    params = dict(model.named_parameters())
    flat = np.concatenate([params[n].detach().abs().numpy().ravel() for n in names])
    order = np.argsort(flat, kind="stable")
    kept = np.ones(flat.size, dtype=bool)
    kept[order[:int(round(sparsity * flat.size))]] = False
    out, i = {}, 0
    for n, p in model.named_parameters():
        if n in names:
            out[n] = torch.from_numpy(kept[i:i + p.numel()].reshape(tuple(p.shape)).copy())
            i += p.numel()
        else:
            out[n] = torch.ones(tuple(p.shape), dtype=torch.bool)
    return out
'''

DIFFERENT_L1 = '''def decaying_l1(gamma, epoch, epochs):
    if type(epochs) is not int or type(epoch) is not int or epochs < 1 or epoch < 1 or epoch > epochs:
        raise ValueError("need integers 1 <= epoch <= epochs")
    if gamma < 0:
        raise ValueError("gamma must be >= 0")
    weights = list(range(epochs, 0, -1))          # T, T-1, ..., 1
    scale = gamma * epochs / sum(weights)         # mean of the schedule = gamma
    return float(scale * weights[epoch - 1])
'''

# Part B written differently: pruned entries zeroed by boolean indexing, the loss as nll of log_softmax,
# batches from split() of the permutation
DIFFERENT_FT = '''def finetune_pruned(model, mask, X, y, epochs, lr, momentum, weight_decay, batch_size=64, seed=0):
    pruned = {n: ~mask[n] for n, _ in model.named_parameters()}

    def zero_pruned():
        with torch.no_grad():
            for n, p in model.named_parameters():
                p[pruned[n]] = 0.0

    zero_pruned()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            opt.zero_grad()
            F.nll_loss(F.log_softmax(model(X[idx]), dim=1), y[idx]).backward()
            opt.step()
            zero_pruned()
    return model
'''

# Part C wrong (gamma / t decreases, but is neither linear in T - t + 1 nor of mean gamma) behind rebound
# built-ins that the tests use (abs, max): the tests must keep Python's own abs and max
ABS_REBOUND = '''abs = lambda x: 0.0
max = lambda *a: 1.0

def decaying_l1(gamma, epoch, epochs):
    if type(epoch) is not int or type(epochs) is not int or not 1 <= epoch <= epochs or not gamma >= 0:
        raise ValueError("need integers 1 <= epoch <= epochs and gamma >= 0")
    return float(gamma) / epoch
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) one part solved, interactivity switched on in a stub elsewhere
    Case("cheat 1: interactivity 'all' + stub", base="release",
         edits={"omp_mask": SOL["omp_mask"],
                "decaying_l1": STUB["decaying_l1"] + '\nget_ipython().ast_node_interactivity = "all"'},
         score=4, parts={"test_omp_mask": 4, "test_decaying_l1": 0}),
    # (2) the grader patched, together with a library call: masks.omp raises in the sandbox
    Case("cheat 2: assert_own_code patched + masks.omp", base="release",
         edits={"omp_mask": "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
                            "from course_lib import masks\n\ndef omp_mask(model, sparsity):\n"
                            "    return masks.omp(model, sparsity)\n"},
         score=0, parts={"test_omp_mask": 0}),
    # (3) rebinding helpers the tests might trust: the error-checking helper and a builtin; the tests keep
    #     their own, and a constant schedule fails the visible test
    Case("cheat 3: assert_raises and abs rebound, schedule returns gamma",
         edits={"decaying_l1": "from course_lib import grading\ngrading.assert_raises = lambda *a, **k: None\n"
                               "assert_raises = lambda *a, **k: None\nabs = lambda x: 0.0\n\n"
                               "def decaying_l1(gamma, epoch, epochs):\n    return float(gamma)\n"},
         score=9, parts={"test_decaying_l1": 0}),
    Case("cheat 3b: abs and max rebound, a wrong schedule that decreases", edits={"decaying_l1": ABS_REBOUND},
         score=9, parts={"test_decaying_l1": 0}),
    # (4) the library's answer in disguise: through a default argument, and a copied function object (both raise)
    Case("cheat 4a: library OMP through a default argument",
         edits={"omp_mask": "import course_lib.masks as _cm\n\n"
                            "def omp_mask(model, sparsity, _impl=_cm.omp):\n    return _impl(model, sparsity)\n"},
         score=8, parts={"test_omp_mask": 0}),
    Case("cheat 4b: the library's l1 ramp copied whole",
         edits={"decaying_l1": "from course_lib.unlearn.baselines import l1_weight\n"
                               "decaying_l1 = lambda gamma, epoch, epochs: l1_weight(gamma, 'decaying', epoch - 1, epochs)\n"},
         score=9, parts={"test_decaying_l1": 0}),
    # plausible bugs
    Case("bug: OMP per layer instead of global", edits={"omp_mask": PER_LAYER},
         score=8, parts={"test_omp_mask": 0}),
    Case("bug: mask applied once, before training", edits={"finetune_pruned": MASK_ONCE},
         score=9, parts={"test_finetune_pruned": 0}),
    Case("bug: the library's mid-epoch ramp instead of this assignment's convention",
         edits={"decaying_l1": SOL["decaying_l1"].replace("2.0 * gamma * (epochs - epoch + 1) / (epochs + 1)",
                                                          "gamma * (2 - 2 * (epoch - 0.5) / epochs)")},
         score=9, parts={"test_decaying_l1": 0}),
    Case("different: numpy ranking, explicit normalisation",
         edits={"omp_mask": DIFFERENT_OMP, "decaying_l1": DIFFERENT_L1}),
    Case("different: pruned entries zeroed by indexing, nll of log_softmax", edits={"finetune_pruned": DIFFERENT_FT}),
]
