"""Synthetic submissions of a04_boundary (14 points: A 4, B 3, C 2 + 3, D 2).

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader (interactivity, patched checks, rebound helpers) now change
nothing the tests use, so each case scores exactly what its answers deserve; the library's
reference code (course_lib.unlearn) raises NotImplementedError in the sandbox, so a part built on it
scores 0. Every part asks for a variant of a lecture-04 cell (PGD for `fgsm`, the smallest crossing
bound for `nbi_labels`, one zero shadow row per class for `expand_from_scratch`, and a PGD-vs-FGSM
measurement): the lecture's cells pasted in score 0 of 14.
"""
from . import Case, solution_of, stub

A = "a04_boundary"
SOL = {g: solution_of(A, g) for g in ("neighbours", "nbi_labels", "surgery", "answer_d")}
STUB = {g: stub(A, g) for g in ("neighbours", "nbi_labels", "surgery")}

# ----------------------------------------------------------------- lecture 04's cells, adapted to the stubs
LECTURE_A = '''def neighbours(model, X, y, eps, steps, alpha):
    """lecture 04's fgsm (one signed step of size eps; pixel_std None, one batch)"""
    model.eval()
    x = X.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).detach()
'''
LECTURE_B = '''def nbi_labels(model, X, y, bounds):
    """lecture 04's nbi_labels at one bound (the largest)"""
    X_adv = neighbours(model, X, y, max(bounds), 1, max(bounds))
    with torch.no_grad():
        logits = model(X_adv)
    logits[torch.arange(len(y)), y] = -float("inf")                   # exclude the true class
    return logits.argmax(1)
'''
LECTURE_C = '''def add_shadows(model, n):
    old = model.head                                                # lecture 04's expand_from_scratch, split up
    K = old.out_features
    wide = torch.nn.Linear(old.in_features, K + 1)
    with torch.no_grad():
        wide.weight[:K], wide.bias[:K] = old.weight, old.bias          # keep the old rows
    setattr(model, "head", wide)
    return K


def remove_shadows(model, K):
    wide = model.head
    narrow = torch.nn.Linear(wide.in_features, K)
    with torch.no_grad():
        narrow.weight.copy_(wide.weight[:K]); narrow.bias.copy_(wide.bias[:K])
    setattr(model, "head", narrow)
    return model


def boundary_expand(model, X_f, y_f, epochs=BE_HP["epochs"], lr=BE_HP["lr"]):
    model = copy.deepcopy(model)
    K = add_shadows(model, 1)
    fine_tune(model, X_f, torch.full((len(X_f),), K), epochs=epochs, lr=lr)
    return remove_shadows(model, K)
'''
LECTURE_D = '''X_fgsm = neighbours(original, X_f, y_f, 0.05, 1, 0.05)
X_pgd = neighbours(original, X_f, y_f, 0.05, 10, 0.0125)        # the lecture's fgsm takes one step whatever `steps`
with torch.no_grad():
    kept_fgsm = float((original(X_fgsm).argmax(1) == y_f).double().mean() * 100)
    kept_pgd = float((original(X_pgd).argmax(1) == y_f).double().mean() * 100)
'''

# ----------------------------------------------------------------- the other pixel-range convention
# Part A clamped to the pixel range [0, 1] after the projection in every step (Parts B and D follow it)
CLAMPED = '''def neighbours(model, X, y, eps, steps, alpha):
    if not (eps > 0 and alpha > 0) or type(steps) is not int or steps < 1:
        raise ValueError("eps > 0, alpha > 0 and a positive integer number of steps")
    model.eval()
    x = X.clone()
    for _ in range(steps):
        with torch.enable_grad():
            xt = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xt), y, reduction="sum"), xt)
        x = torch.clamp(x + alpha * g.sign(), X - eps, X + eps).clamp(0.0, 1.0)
    return x.detach()
'''

# Part A written differently: mean loss (same signs), .backward() on the input, the projection as a clamped offset
BACKWARD = '''def neighbours(model, X, y, eps, steps, alpha):
    if eps <= 0 or alpha <= 0:
        raise ValueError(f"eps and alpha must be > 0, got {eps}, {alpha}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    model.eval()
    x = X.detach().clone()
    for _ in range(int(steps)):
        x.requires_grad = True
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        step = torch.where(x.grad > 0, 1.0, torch.where(x.grad < 0, -1.0, 0.0))
        x = (X + (x.detach() + alpha * step - X).clamp(-eps, eps)).detach()
    return x
'''

# Part B written differently: row by row in Python, topk for the excluded label
ROWWISE_B = '''def nbi_labels(model, X, y, bounds):
    bs = sorted(float(b) for b in bounds)
    with torch.no_grad():
        per_bound = [model(neighbours(model, X, y, b, 1, b)) for b in bs]
    out = []
    for i in range(len(y)):
        lab = None
        for z in per_bound:
            k = int(z[i].argmax())
            if k != int(y[i]):
                lab = k
                break
        if lab is None:
            top2 = per_bound[-1][i].topk(2).indices.tolist()
            lab = top2[1] if top2[0] == int(y[i]) else top2[0]
        out.append(lab)
    return torch.tensor(out, dtype=torch.int64)
'''

# Part C with setattr / getattr and torch.cat for the zero rows
SETATTR = '''def add_shadows(model, n):
    old = getattr(model, "head")
    if type(old) is not nn.Linear:
        raise ValueError("model.head must be an nn.Linear")
    if not isinstance(n, int) or n <= 0:
        raise ValueError("n must be a positive integer")
    K = old.weight.shape[0]
    wide = nn.Linear(old.in_features, K + n)
    wide.weight = nn.Parameter(torch.cat([old.weight.detach(), old.weight.new_zeros(n, old.in_features)]))
    wide.bias = nn.Parameter(torch.cat([old.bias.detach(), old.bias.new_zeros(n)]))
    setattr(model, "head", wide)
    return K


def remove_shadows(model, K):
    old = getattr(model, "head")
    narrow = nn.Linear(old.in_features, K)
    narrow.weight = nn.Parameter(old.weight.detach()[:K].clone())
    narrow.bias = nn.Parameter(old.bias.detach()[:K].clone())
    setattr(model, "head", narrow)
    return model


def boundary_expand(model, X_f, y_f, epochs=BE_HP["epochs"], lr=BE_HP["lr"]):
    new = copy.deepcopy(model)
    classes = sorted(set(int(c) for c in y_f))
    K = add_shadows(new, len(classes))
    shadow = {c: K + j for j, c in enumerate(classes)}
    fine_tune(new, X_f, torch.tensor([shadow[int(c)] for c in y_f], dtype=torch.int64), epochs=epochs, lr=lr)
    remove_shadows(new, K)
    return new
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # the lecture's cells pasted into the stubs: one FGSM step, the label at one bound, one randomly initialised
    # shadow row for every class, and PGD's share measured with the FGSM function: 0 of 14 (<= 25%)
    Case("lecture-copy", base="release",
         edits={"neighbours": LECTURE_A, "nbi_labels": LECTURE_B, "surgery": LECTURE_C, "answer_d": LECTURE_D},
         score=0, parts={"test_neighbours": 0, "test_nbi_labels": 0, "test_surgery": 0, "test_expand": 0,
                         "test_answer_d": 0}),
    # (1) one part solved, the interactivity tip on a stub: B scores nothing, the other parts theirs
    Case("cheat 1: interactivity 'all' + stub",
         edits={"neighbours": SOL["neighbours"],
                "nbi_labels": "get_ipython().ast_node_interactivity = 'all'\n" + STUB["nbi_labels"]},
         score=11, parts={"test_neighbours": 4, "test_nbi_labels": 0, "test_surgery": 2, "test_expand": 3,
                          "test_answer_d": 2}),
    # (2) patch the grader and call the library: the library raises in the sandbox, so A and everything
    #     built on it (B, D) score 0
    Case("cheat 2: assert_own_code patched + boundary.neighbour_search", edits={"neighbours": (
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
        "from course_lib.unlearn import boundary\n"
        "def neighbours(model, X, y, eps, steps, alpha):\n"
        "    return boundary.neighbour_search(model, X, y, eps, steps=steps)\n")},
         score=5, parts={"test_neighbours": 0, "test_nbi_labels": 0, "test_surgery": 2, "test_expand": 3,
                         "test_answer_d": 0}),
    # (3) rebind a helper the tests might trust (F.cross_entropy): only the sandbox's copy changes. A was
    #     tested before the rebinding (4); after it, the student's own C (fine_tune trains nothing) and D
    #     (no gradient to step along) break, and B is wrong anyway; the surgery alone still passes (2)
    Case("cheat 3: F.cross_entropy rebound + fake nbi_labels", edits={"nbi_labels": (
        "def nbi_labels(model, X, y, bounds):\n    return (y + 1) % 10\n"
        "F.cross_entropy = lambda *a, **k: torch.zeros((), requires_grad=True)\n")},
         score=6, parts={"test_neighbours": 4, "test_nbi_labels": 0, "test_surgery": 2, "test_expand": 0,
                         "test_answer_d": 0}),
    # (4) the library's answer in disguise, through importlib and default arguments: raises in the sandbox
    Case("cheat 4: boundary.widen_head / narrow_head through importlib defaults", edits={"surgery": (
        "import importlib\n_b = importlib.import_module('course_lib.unlearn.boundary')\n"
        "def add_shadows(model, n, _w=_b.widen_head):\n    return _w(model, n)\n"
        "def remove_shadows(model, K, _n=_b.narrow_head):\n    return _n(model, K)\n"
        "def boundary_expand(model, X_f, y_f, epochs=5, lr=3e-3):\n"
        "    m = copy.deepcopy(model); K = add_shadows(m, 1)\n"
        "    fine_tune(m, X_f, torch.full((len(X_f),), K), epochs=epochs, lr=lr)\n    return remove_shadows(m, K)\n")},
         score=9, parts={"test_surgery": 0, "test_expand": 0}),
    # plausible bugs
    Case("bug: PGD projected onto the ball around the current iterate, not the original x (A and D)",
         edits={"neighbours": SOL["neighbours"].replace(
             "x = torch.minimum(torch.maximum(x + alpha * g.sign(), X - eps), X + eps)",
             "x = torch.minimum(torch.maximum(x + alpha * g.sign(), x - eps), x + eps)")},
         score=8, parts={"test_neighbours": 0, "test_nbi_labels": 3, "test_answer_d": 0}),
    Case("bug: the shadow rows keep nn.Linear's random initialisation (C)",
         edits={"surgery": SOL["surgery"].replace("        wide.weight.zero_()\n        wide.bias.zero_()\n", "")},
         score=9, parts={"test_surgery": 0, "test_expand": 0}),
    Case("bug: the bounds taken in the given order, not sorted (B; the hidden tests pass one list unsorted)",
         edits={"nbi_labels": SOL["nbi_labels"].replace("for eps in sorted(bounds):", "for eps in bounds:")},
         score=11, parts={"test_nbi_labels": 0}),
    # correct but different, and the other convention
    Case("different: FGSM/PGD clamped to the pixel range [0, 1] after every projection (A, B and D)",
         edits={"neighbours": CLAMPED}),
    Case("different: mean loss through .backward() on the input, projection as a clamped offset",
         edits={"neighbours": BACKWARD}),
    Case("different: labels row by row with topk", edits={"nbi_labels": ROWWISE_B}),
    Case("different: head surgery with setattr / getattr and torch.cat", edits={"surgery": SETATTR}),
    Case("different: the clamped convention everywhere, written differently",
         edits={"neighbours": CLAMPED, "nbi_labels": ROWWISE_B, "surgery": SETATTR}),
]
