"""Synthetic submissions of a07_del (13 points: A 4, B 4, C 3, D 2): unit criticality, budgeted masks,
random control.

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader change nothing the tests use, so each case scores exactly what
its answers deserve. The library's reference code (course_lib.masks, course_lib.unlearn) raises
NotImplementedError in the sandbox: a part built on it scores 0 (and so does Part C, whose tests build
their mask with the student's budget_mask).
"""
from . import Case, solution_of

A = "unit_criticality"
B = "budget_mask"
C = "random_control"
SOL_A = solution_of("a07_del", A)
SOL_B = solution_of("a07_del", B)
SOL_C = solution_of("a07_del", C)

STUB_B = '''def budget_mask(model, units, scores, budget):
    """stub"""
    raise NotImplementedError()'''

# cheat (2): patch the grader, then call the library
PATCH_GRADER_B = '''import course_lib.grading as g
g.assert_own_code = lambda *a, **k: None
from course_lib.masks import localization as _loc

def budget_mask(model, units, scores, budget):
    """The library's selection, after disabling the check."""
    structure = _loc.layers(model)
    allowed = int(budget * sum(p.numel() for p in model.parameters()) + 1e-9)
    return _loc.mask_from_units(model, structure, _loc.select_units(scores, [l.unit_size for l in structure], allowed))'''

# cheat (3): open everything, and rebind a helper the tests might trust (math.floor) so any count
# looks within the budget
REBIND_HELPER = '''math.floor = lambda x: 10**9

def budget_mask(model, units, scores, budget):
    """Everything, always."""
    if not 0 <= budget <= 1:
        raise ValueError("budget")
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}'''

# cheat (4): the library's answer in disguise, through importlib and a default argument
DISGUISED_B = '''import importlib

def budget_mask(model, units, scores, budget, _lib=importlib.import_module("course_lib.masks.localization")):
    """Looks like my own code."""
    structure = _lib.layers(model)
    allowed = int(budget * sum(p.numel() for p in model.parameters()) + 1e-9)
    if not 0 <= budget <= 1:
        raise ValueError("budget")
    chosen = _lib.select_units(scores, [l.unit_size for l in structure], allowed)
    return _lib.mask_from_units(model, structure, chosen)'''

# plausible bug: a greedy knapsack that skips units that do not fit (not the paper's prefix)
GREEDY_B = SOL_B.replace("""        if used + size > allowed:
            break""", """        if used + size > allowed:
            continue""")

# correct but different: vectorised with torch.sort and cumsum
VECTOR_B = '''def budget_mask(model, units, scores, budget):
    """Prefix selection with a stable sort and a cumulative sum."""
    if not (isinstance(budget, (int, float)) and 0.0 <= budget <= 1.0):
        raise ValueError(f"budget must lie in [0, 1], got {budget!r}")
    params = dict(model.named_parameters())
    allowed = math.floor(budget * sum(p.numel() for p in params.values()) + 1e-9)
    sizes = torch.cat([torch.full((len(s),), sum(params[n][0].numel() for n in nm))
                       for (_, nm), s in zip(units, scores)])
    order = torch.sort(torch.cat([s.double() for s in scores]), descending=True, stable=True).indices
    n_sel = int((torch.cumsum(sizes[order], 0) <= allowed).sum())
    chosen = torch.zeros(len(sizes), dtype=torch.bool)
    chosen[order[:n_sel]] = True
    mask = {}
    for ((_, nm), part) in zip(units, torch.split(chosen, [len(s) for s in scores])):
        for n in nm:
            p = params[n]
            mask[n] = part.view(-1, *([1] * (p.ndim - 1))).expand_as(p).clone()
    return mask'''

# correct but different: a global variable named max in Part A's cell (the tests use Python's max), and
# a criticality that does without the built-in
MAX_A = '''def unit_criticality(model, forget, units, criterion="weighted_grad", top_fraction=0.1):
    """Mean of each unit's top-k scores, k = floor(top_fraction * unit size), at least 1."""
    if criterion not in ("grad", "weighted_grad"):
        raise ValueError(f"unknown criterion {criterion!r}")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction!r}")
    model.eval()
    names = [n for _, nm in units for n in nm]
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(forget[0]), forget[1]), [params[n] for n in names])
    grad_of = dict(zip(names, grads))
    out = []
    for _, nm in units:
        rows = params[nm[0]].shape[0]
        score = torch.cat([(grad_of[n] if criterion == "grad" else params[n] * grad_of[n]).abs().detach().reshape(rows, -1)
                           for n in nm], dim=1)
        k = int(top_fraction * score.shape[1] // 1)
        if k < 1:
            k = 1
        out.append(score.sort(dim=1, descending=True).values[:, :k].mean(dim=1))
    return out


crit = unit_criticality(net, forget, UNITS)
max = float(torch.cat(crit).amax())      # the largest criticality, to look at
print(f"largest unit criticality: {max:.3e}")'''

# correct but different: `max` as a local name (the allowed count) in Part B and as a global in Part D
MAX_B = SOL_B.replace("allowed = math.floor(", "max = math.floor(").replace(
    "if used + size > allowed:", "if used + size > max:")
MAX_D = """max = math.floor(0.25 * 1000)     # parameters the budget allows
opened = 0
for size in (120, 90, 300, 20, 20, 10):
    if opened + size > max:
        break
    opened += size
answer_d = opened"""

# correct but different: scores left attached to the autograd graph (no detach), and a warning printed by
# the student's own cell (float() of such a tensor); the tests ignore warnings, so this scores full
UNDETACHED_A = SOL_A.replace("cols.append(s.detach().reshape(n_units, -1))", "cols.append(s.reshape(n_units, -1))") + '''


crit = unit_criticality(net, forget, UNITS)
print("criticality of unit 3 of c2:", float(crit[1][3]))      # UserWarning: requires_grad tensor to a scalar'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) one part solved, the interactivity tip on a stub: B scores nothing, nor C (its tests use budget_mask)
    Case("cheat: interactivity", base="release",
         edits={A: SOL_A, B: STUB_B + "\nget_ipython().ast_node_interactivity = 'all'"},
         score=4, parts={"test_unit_criticality": 4, "test_budget_mask": 0, "test_random_control": 0}),
    # (2) the grader patched, then the library: localization raises in the sandbox
    Case("cheat: patched grader + library call", base="release", edits={B: PATCH_GRADER_B},
         score=0, parts={"test_budget_mask": 0}),
    # (3) math.floor rebound: only in the sandbox, where it breaks the student's own unit_criticality (it
    #     floors k) from then on; B (opens everything) and C (calls unit_criticality) score 0, A was tested before
    Case("cheat: rebinding math.floor", edits={B: REBIND_HELPER}, score=6,
         parts={"test_unit_criticality": 4, "test_budget_mask": 0, "test_random_control": 0}),
    # (4) the library through importlib and a default argument: raises in the sandbox (B, and C built on it)
    Case("cheat: library through importlib default argument", edits={B: DISGUISED_B},
         score=6, parts={"test_budget_mask": 0, "test_random_control": 0}),
    # plausible bug; correct but different answers
    Case("bug: greedy knapsack instead of a prefix", edits={B: GREEDY_B}, score=9, parts={"test_budget_mask": 0}),
    Case("different but correct: sort + cumsum", edits={B: VECTOR_B}, score=13),
    Case("different but correct: a global variable named max (Part A's cell)", edits={A: MAX_A}, score=13),
    Case("different but correct: criticality not detached, a warning in the answer cell", edits={A: UNDETACHED_A},
         score=13),
    Case("different but correct: max as a local (Part B) and a global (Part D) name",
         edits={B: MAX_B, "answer_d": MAX_D}, score=13),
]
