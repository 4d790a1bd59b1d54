"""Synthetic submissions of a07_del (14 points: A 4, B 4, C 3, D 1 + 2): per-example criticality, a budgeted
weight-level mask, the random-mask control, and a prediction on lecture 07's scenario (mislabeled, deep MLP).

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader change nothing the tests use, so each case scores exactly what
its answers deserve. The library's reference code (course_lib.masks, its localization module,
course_lib.params, course_lib.unlearn) raises NotImplementedError in the sandbox: a part built on it scores 0.

A submission that pastes lecture 07's cells ("lecture-copy": the criticality and the unit prefix of
`del_mask_from_scratch`, the library's random twin `masks.localize(..., "random", reference=...)`, and the
lecture's finding that a random mask forgets less, with the size of its Table 4 gap) earns 1 of 14 points.
"""
from . import Case, solution_of

A = "per_example_scores"
B = "weight_mask"
C = "random_control"
SOL_A = solution_of("a07_del", A)
SOL_B = solution_of("a07_del", B)
SOL_C = solution_of("a07_del", C)

STUB_B = '''def weight_mask(model, scores, budget):
    """stub"""
    raise NotImplementedError()'''

# lecture 07's del_mask_from_scratch, cut into the stubs: its criticality (the mean loss's gradient) ...
LECTURE_A = '''def per_example_scores(model, forget, criterion="weighted_grad", batch_size=256):
    model.eval()
    params = dict(model.named_parameters())
    g = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in range(0, len(forget[1]), batch_size):
        loss = torch.nn.functional.cross_entropy(model(forget[0][s:s + batch_size]).float(),
                                                 forget[1][s:s + batch_size], reduction="sum")
        for n, gn in zip(params, torch.autograd.grad(loss, list(params.values()))):
            g[n] += gn
    g = {n: v / len(forget[1]) for n, v in g.items()}                 # the mean loss's gradient
    return {n: ((params[n] * g[n]).abs() if criterion == "weighted_grad" else g[n].abs()).detach() for n in params}
'''
# ... and its unit scores (mean of a unit's top 10%) with the longest prefix of units that fits
LECTURE_B = '''def weight_mask(model, scores, budget, top=0.1):
    params = dict(model.named_parameters())
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    units = []
    for layer in layers:
        names = [layer + ".weight"] + ([layer + ".bias"] if layer + ".bias" in params else [])
        n_units = params[names[0]].shape[0]
        s = torch.cat([scores[n].reshape(n_units, -1) for n in names], 1)
        k = max(1, int(top * s.shape[1]))
        units += [(float(v), names, u, s.shape[1]) for u, v in enumerate(s.topk(k, 1).values.mean(1))]
    units.sort(key=lambda t: -t[0])
    mask, used = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}, 0
    for _, names, u, size in units:                                    # the longest prefix that fits
        if used + size > int(budget * sum(p.numel() for p in params.values())):
            break
        used += size
        for n in names:
            mask[n][u] = True
    return mask
'''
LECTURE_C = '''from course_lib import masks

def random_control(model, units, mask, seed):
    return masks.localize(model, None, "random", 0.0, reference=mask, seed=seed)
'''
LECTURE_D = 'more_forgotten = "mask"\nforget_acc_difference = 5.0       # the lecture\'s Table 4: random minus DEL, in gap points\n'

# cheat: patch the grader, then call the library (params.global_topk raises in the sandbox)
PATCH_GRADER_B = '''import course_lib.grading as g
g.assert_own_code = lambda *a, **k: None
from course_lib import params as _params

def weight_mask(model, scores, budget):
    """The library's top-k, after disabling the check."""
    k = int(budget * sum(p.numel() for p in model.parameters()) + 1e-9)
    return _params.global_topk({n: scores[n] for n, _ in model.named_parameters()}, k)'''

# cheat: open everything, and rebind a helper the tests might trust (math.floor) so any count looks right
REBIND_HELPER = '''math.floor = lambda x: 10**9

def weight_mask(model, scores, budget):
    """Everything, always."""
    if not 0 <= budget <= 1:
        raise ValueError("budget")
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}'''

# cheat: the library's answer in disguise, through importlib and a default argument
DISGUISED_B = '''import importlib

def weight_mask(model, scores, budget, _lib=importlib.import_module("course_lib.params")):
    """Looks like my own code."""
    if not 0 <= budget <= 1:
        raise ValueError("budget")
    k = int(budget * sum(p.numel() for p in model.parameters()) + 1e-9)
    return _lib.global_topk({n: scores[n] for n, _ in model.named_parameters()}, k)'''

# plausible bugs: the count rounded instead of floored (B); the scores summed over examples, not averaged (A)
ROUND_B = SOL_B.replace("k = math.floor(budget * sum(p.numel() for p in params.values()) + 1e-9)",
                        "k = round(budget * sum(p.numel() for p in params.values()))")
SUM_A = SOL_A.replace("return {n: (v / len(y)).float() for n, v in total.items()}",
                      "return {n: v.float() for n, v in total.items()}")
assert ROUND_B != SOL_B and SUM_A != SOL_A

# correct but different: per-example gradients with torch.func (vmap of grad), scores in float32
FUNC_A = '''from torch.func import functional_call, grad, vmap

def per_example_scores(model, forget, criterion="weighted_grad"):
    """vmap over examples of the gradient of one example's loss."""
    if criterion not in {"grad", "weighted_grad"}:
        raise ValueError(criterion)
    X, y = forget
    if X.shape[0] == 0:
        raise ValueError("empty forget set")
    model.eval()
    theta = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(th, x, t):
        return F.cross_entropy(functional_call(model, th, (x.unsqueeze(0),)), t.unsqueeze(0))

    per_ex = vmap(grad(loss_one), in_dims=(None, 0, 0))(theta, X, y)      # {name: [N, *shape]}
    return {n: ((theta[n] * g).abs() if criterion == "weighted_grad" else g.abs()).mean(0) for n, g in per_ex.items()}'''

# correct but different: numpy lexsort on (position, -score), and the count without the 1e-9 guard (the
# budgets of the tests are not at an integer edge)
NUMPY_B = '''def weight_mask(model, scores, budget):
    """numpy: lexsort by descending score, then by position."""
    if type(budget) not in (int, float) or not (0 <= budget <= 1):
        raise ValueError("budget must be in [0, 1]")
    names = [n for n, _ in model.named_parameters()]
    flat = np.concatenate([scores[n].detach().numpy().astype(np.float64).ravel() for n in names])
    k = int(budget * flat.size)
    order = np.lexsort((np.arange(flat.size), -flat))
    on = np.zeros(flat.size, dtype=bool)
    on[order[:k]] = True
    out, i = {}, 0
    for n, p in model.named_parameters():
        out[n] = torch.from_numpy(on[i:i + p.numel()].reshape(tuple(p.shape)).copy())
        i += p.numel()
    return out'''

# correct but different: a global variable named max in Part A's cell (the tests use Python's max), a local
# named max in Part B
MAX_A = SOL_A + '''


sc_all = per_example_scores(net, forget)
max = max(float(v.max()) for v in sc_all.values())      # the largest score, to look at
print(f"largest per-example score: {max:.3e}")'''
MAX_B = SOL_B.replace("k = math.floor(", "max = math.floor(").replace("indices[:k]]", "indices[:max]]")
assert MAX_B != SOL_B

# correct but different: scores left attached to the autograd graph (no detach), and a warning printed by
# the student's own cell (float() of such a tensor); the tests ignore warnings
UNDETACHED_A = SOL_A.replace("total[n] += s.detach().double()", "total[n] = total[n] + s.double()") + '''


crit = per_example_scores(net, forget)
print("a score of the head:", float(crit["head.bias"][0]))'''
assert UNDETACHED_A.count("detach") == SOL_A.count("detach") - 1

# Part D with other valid conventions: a capitalised name with spaces, the difference as an int
DIFFERENT_D = 'more_forgotten = " Mask"\nforget_acc_difference = 28\n'

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    Case("lecture-copy: 07's mean-gradient criticality, its unit prefix, the library's random twin, Table 4's gap",
         edits={A: LECTURE_A, B: LECTURE_B, C: LECTURE_C, "answer_d": LECTURE_D},
         score=1, parts={"test_per_example_scores": 0, "test_weight_mask": 0, "test_random_control": 0,
                         "test_answer_d": 1, "test_answer_d_amount": 0}),
    # (1) one part solved, the interactivity tip on a stub: B scores nothing
    Case("cheat: interactivity", base="release",
         edits={A: SOL_A, B: STUB_B + "\nget_ipython().ast_node_interactivity = 'all'"},
         score=4, parts={"test_per_example_scores": 4, "test_weight_mask": 0}),
    # (2) the grader patched, then the library: params raises in the sandbox
    Case("cheat: patched grader + library call", base="release", edits={B: PATCH_GRADER_B},
         score=0, parts={"test_weight_mask": 0}),
    # (3) math.floor rebound: only in the sandbox; B (opens everything) scores 0, the tests keep their floor
    Case("cheat: rebinding math.floor", edits={B: REBIND_HELPER}, score=10,
         parts={"test_per_example_scores": 4, "test_weight_mask": 0, "test_random_control": 3}),
    # (4) the library through importlib and a default argument: raises in the sandbox
    Case("cheat: library through importlib default argument", edits={B: DISGUISED_B},
         score=10, parts={"test_weight_mask": 0}),
    # plausible bugs
    Case("bug: the count rounded instead of floored", edits={B: ROUND_B}, score=10, parts={"test_weight_mask": 0}),
    Case("bug: scores summed over the examples, not averaged", edits={A: SUM_A}, score=10,
         parts={"test_per_example_scores": 0}),
    Case("bug: predicts that the random twin forgets more", edits={"answer_d": 'more_forgotten = "random"\n'
                                                                              'forget_acc_difference = -20.0\n'},
         score=11, parts={"test_answer_d": 0, "test_answer_d_amount": 0}),
    # correct but different
    Case("different but correct: torch.func per-example gradients", edits={A: FUNC_A}, score=14),
    Case("different but correct: numpy lexsort, int() without the guard", edits={B: NUMPY_B}, score=14),
    Case("different but correct: max as a global (Part A's cell) and a local (Part B)", edits={A: MAX_A, B: MAX_B},
         score=14),
    Case("different but correct: scores not detached, a warning in the answer cell", edits={A: UNDETACHED_A},
         score=14),
    Case("different but correct: Part D capitalised, an int", edits={"answer_d": DIFFERENT_D}, score=14),
]
