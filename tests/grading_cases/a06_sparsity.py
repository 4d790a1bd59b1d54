"""Synthetic submissions of a06_sparsity (13 points: A 4, B 3, C 3, D 1 + 2): layer-wise magnitude pruning,
a pruned model that stays pruned, this assignment's ℓ1 schedule, and a prediction on lecture 06's scenario.

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader change nothing the tests use, so each case scores exactly what
its answers deserve. The library's reference code (course_lib.masks, course_lib.params, course_lib.train,
course_lib.unlearn) raises NotImplementedError in the sandbox: a part built on it scores 0.

A submission that pastes lecture 06's cells ("lecture-copy": 06's global `omp_from_scratch`, the library's
`masks.train_sparse` that 06 calls, 06b's mid-epoch `decaying`, and the lecture's finding that the gap
shrinks, with the size of its disparity average) earns 1 of 13 points.
"""
from . import Case, solution_of, stub

A = "a06_sparsity"
SOL = {g: solution_of(A, g) for g in ("omp_mask", "finetune_pruned", "decaying_l1", "answer_d")}
STUB = {g: stub(A, g) for g in ("omp_mask", "finetune_pruned", "decaying_l1")}

# lecture 06's omp_from_scratch (global ranking), adapted to the stub's signature and return type
LECTURE_OMP = '''def omp_mask(model, s):
    names = [n for n, mod in model.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    params = dict(model.named_parameters())
    w = torch.cat([params[n + ".weight"].detach().abs().flatten() for n in names])
    k = round(s * w.numel())
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[torch.sort(w, stable=True).indices[:k]] = False          # the k smallest magnitudes go
    out, i = {}, 0
    for n, p in params.items():
        if n in {m + ".weight" for m in names}:
            out[n] = keep[i:i + p.numel()].view(p.shape)
            i += p.numel()
        else:
            out[n] = torch.ones(p.shape, dtype=torch.bool)
    return out
'''
# lecture 06 trains sparse models with the library
LECTURE_FT = '''from course_lib import masks

def finetune_pruned(model, mask, X, y, epochs, lr, momentum, weight_decay, batch_size=64, seed=0):
    return masks.train_sparse(model, mask, X, y, epochs=epochs, lr=lr, momentum=momentum,
                              weight_decay=weight_decay, batch_size=batch_size, seed=seed)
'''
# lecture 06b's decaying(gamma, epoch, epochs), 0-based at mid-epoch, shifted to the stub's 1-based epoch
LECTURE_L1 = '''def decaying(gamma, epoch, epochs):
    return gamma * (2 - 2 * (epoch + 0.5) / epochs)


def decaying_l1(gamma, epoch, epochs):
    return decaying(gamma, epoch - 1, epochs)
'''
# the lecture's figure: the do-nothing gap shrinks; its size read off the disparity average (not forget accuracy)
LECTURE_D = 'gap_direction = "shrink"\ngap_change = 10.0\n'

# correct but different: a per-layer loop over named_modules, indices from argsort(stable) of numpy
DIFFERENT_OMP = '''def omp_mask(model, sparsity):
    if type(sparsity) not in (int, float) or sparsity != sparsity or sparsity < 0 or sparsity >= 1:
        raise ValueError("sparsity must be a number in [0, 1)")
    layers = {n + ".weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    out = {}
    for n, p in model.named_parameters():
        kept = np.ones(p.numel(), dtype=bool)
        if n in layers:
            order = np.argsort(p.detach().abs().numpy().ravel(), kind="stable")
            kept[order[:int(round(sparsity * p.numel()))]] = False
        out[n] = torch.from_numpy(kept.reshape(tuple(p.shape)).copy())
    return out
'''

# plausible bug: the count floored instead of rounded (int(s * n))
FLOOR_OMP = SOL["omp_mask"].replace("[:round(sparsity * w.numel())]", "[:int(sparsity * w.numel())]")
assert FLOOR_OMP != SOL["omp_mask"]

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

# Part D with other valid conventions: a capitalised direction with spaces, the change as a signed int
# (negative: the gap went down), measured by the student's own Parts A and B
DIFFERENT_D = '''import copy
m = omp_mask(original, 0.95)
so = finetune_pruned(sc.make_model(), m, ds.X_train, ds.y_train, momentum=0.0, weight_decay=0.0, **sc.train)
sr = finetune_pruned(sc.make_model(), m, *sc.retain, momentum=0.0, weight_decay=0.0, **sc.train)
sparse_gap = forget_acc(so) - forget_acc(sr)
gap_direction = " Shrink " if sparse_gap < dense_gap else "Grow"
gap_change = int(round(sparse_gap - dense_gap))
print(f"measured with my own code: gap {dense_gap:.1f} -> {sparse_gap:.1f}")
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
    Case("lecture-copy: 06's global OMP, train_sparse, 06b's mid-epoch ramp, the lecture's disparity change",
         edits={"omp_mask": LECTURE_OMP, "finetune_pruned": LECTURE_FT, "decaying_l1": LECTURE_L1,
                "answer_d": LECTURE_D},
         score=1, parts={"test_omp_mask": 0, "test_finetune_pruned": 0, "test_decaying_l1": 0,
                         "test_answer_d": 1, "test_answer_d_amount": 0}),
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
         score=10, parts={"test_decaying_l1": 0}),
    Case("cheat 3b: abs and max rebound, a wrong schedule that decreases", edits={"decaying_l1": ABS_REBOUND},
         score=10, parts={"test_decaying_l1": 0}),
    # (4) the library's answer in disguise: through a default argument, and a copied function object (both raise)
    Case("cheat 4a: library OMP through a default argument",
         edits={"omp_mask": "import course_lib.masks as _cm\n\n"
                            "def omp_mask(model, sparsity, _impl=_cm.omp):\n    return _impl(model, sparsity)\n"},
         score=9, parts={"test_omp_mask": 0}),
    Case("cheat 4b: the library's l1 ramp copied whole",
         edits={"decaying_l1": "from course_lib.unlearn.baselines import l1_weight\n"
                               "decaying_l1 = lambda gamma, epoch, epochs: l1_weight(gamma, 'decaying', epoch - 1, epochs)\n"},
         score=10, parts={"test_decaying_l1": 0}),
    # plausible bugs
    Case("bug: the count per layer floored instead of rounded", edits={"omp_mask": FLOOR_OMP},
         score=9, parts={"test_omp_mask": 0}),
    Case("bug: mask applied once, before training", edits={"finetune_pruned": MASK_ONCE},
         score=10, parts={"test_finetune_pruned": 0}),
    Case("bug: the library's mid-epoch ramp instead of this assignment's convention",
         edits={"decaying_l1": SOL["decaying_l1"].replace("2.0 * gamma * (epochs - epoch + 1) / (epochs + 1)",
                                                          "gamma * (2 - 2 * (epoch - 0.5) / epochs)")},
         score=10, parts={"test_decaying_l1": 0}),
    Case("bug: predicts that the gap grows (the sparse model 'remembers harder')",
         edits={"answer_d": 'gap_direction = "grow"\ngap_change = 30.0\n'},
         score=12, parts={"test_answer_d": 0, "test_answer_d_amount": 2}),
    # correct but different (one per convention)
    Case("different: numpy ranking per layer, explicit normalisation of the schedule",
         edits={"omp_mask": DIFFERENT_OMP, "decaying_l1": DIFFERENT_L1}),
    Case("different: pruned entries zeroed by indexing, nll of log_softmax", edits={"finetune_pruned": DIFFERENT_FT}),
    Case("different: Part D measured with the student's own code, capitalised direction, signed int change",
         edits={"answer_d": DIFFERENT_D}),
]
