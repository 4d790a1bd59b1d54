"""Synthetic submissions for assignment a07_del (DEL: unit criticality, budgeted masks, random control)."""
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

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    Case("cheat: interactivity", base="release",
         edits={A: SOL_A, B: STUB_B + "\nget_ipython().ast_node_interactivity = 'all'"},
         at_most=4, parts={"test_budget_mask": 0}),
    Case("cheat: patched grader + library call", base="release", edits={B: PATCH_GRADER_B},
         at_most=0, parts={"test_budget_mask": 0}),
    Case("cheat: rebinding math.floor", edits={B: REBIND_HELPER}, at_most=9, parts={"test_budget_mask": 0}),
    Case("cheat: library through importlib default argument", edits={B: DISGUISED_B},
         at_most=9, parts={"test_budget_mask": 0}),
    Case("bug: greedy knapsack instead of a prefix", edits={B: GREEDY_B}, score=9, parts={"test_budget_mask": 0}),
    Case("different but correct: sort + cumsum", edits={B: VECTOR_B}, score=13),
]
