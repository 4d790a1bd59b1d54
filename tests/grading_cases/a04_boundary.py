"""Synthetic submissions of a04_boundary (14 points: A 4, B 3, C 5, D 2).

Answer cells run in the sandbox and tests in the trusted process (course_lib/grading/executor.py):
tricks that used to target the grader (interactivity, patched checks, rebound helpers) now change
nothing the tests use, so each case scores exactly what its answers deserve; the library's
reference code (course_lib.unlearn) raises NotImplementedError in the sandbox, so a part built on it
scores 0.
"""
from . import Case, solution_of, stub

A = "a04_boundary"
SOL = {g: solution_of(A, g) for g in ("neighbours", "nbi_labels", "surgery", "answer_d")}
STUB = {g: stub(A, g) for g in ("neighbours", "nbi_labels", "surgery")}

# Part A, the other accepted convention: the step clamped to the pixel range [0, 1]
CLAMPED = '''def neighbours(model, X, y, eps):
    if not eps > 0:
        raise ValueError("eps must be positive")
    model.eval()
    with torch.enable_grad():
        x = X.clone().detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (X + eps * g.sign()).clamp(0.0, 1.0).detach()
'''

# Part A, plain step, written with .backward() on the input (fills p.grad of the sandbox's copy; harmless)
BACKWARD = '''def neighbours(model, X, y, eps):
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    model.eval()
    x = X.detach().clone()
    x.requires_grad = True
    losses = F.cross_entropy(model(x), y, reduction="none")
    losses.sum().backward()
    model.zero_grad(set_to_none=True)
    step = torch.where(x.grad > 0, 1.0, torch.where(x.grad < 0, -1.0, 0.0))
    return X + eps * step
'''

# Part C with setattr / getattr (the old rules forbade setattr)
SETATTR = '''def add_shadow(model):
    old = getattr(model, "head")
    if type(old) is not nn.Linear:
        raise ValueError("model.head must be an nn.Linear")
    K = old.weight.shape[0]
    wide = nn.Linear(old.in_features, K + 1)
    with torch.no_grad():
        wide.weight[:K].copy_(old.weight)
        wide.bias[:K].copy_(old.bias)
    setattr(model, "head", wide)
    return K


def remove_shadow(model, K):
    old = getattr(model, "head")
    narrow = nn.Linear(old.in_features, K)
    narrow.weight = nn.Parameter(old.weight.detach()[:K].clone())
    narrow.bias = nn.Parameter(old.bias.detach()[:K].clone())
    setattr(model, "head", narrow)
    return model


def boundary_expand(model, X_f, epochs=10, lr=3e-4):
    new = copy.deepcopy(model)
    K = add_shadow(new)
    fine_tune(new, X_f, torch.full((len(X_f),), K, dtype=torch.int64), epochs=epochs, lr=lr)
    remove_shadow(new, K)
    return new
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) one part solved, the interactivity tip on a stub: B scores nothing, the other parts theirs
    Case("cheat 1: interactivity 'all' + stub",
         edits={"neighbours": SOL["neighbours"],
                "nbi_labels": "get_ipython().ast_node_interactivity = 'all'\n" + STUB["nbi_labels"]},
         score=11, parts={"test_neighbours": 4, "test_nbi_labels": 0, "test_surgery": 5, "test_answer_d": 2}),
    # (2) patch the grader and call the library: the library raises in the sandbox, so A and everything
    #     built on it (B, D) score 0
    Case("cheat 2: assert_own_code patched + boundary.neighbour_search", edits={"neighbours": (
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
        "from course_lib.unlearn import boundary\n"
        "def neighbours(model, X, y, eps):\n    return boundary.neighbour_search(model, X, y, eps)\n")},
         score=5, parts={"test_neighbours": 0, "test_nbi_labels": 0, "test_surgery": 5, "test_answer_d": 0}),
    # (3) rebind a helper the tests might trust (F.cross_entropy): only the sandbox's copy changes. A was
    #     tested before the rebinding (4); after it, the student's own C (fine_tune trains nothing) and D
    #     (no gradient to step along) break, and B is wrong anyway
    Case("cheat 3: F.cross_entropy rebound + fake nbi_labels", edits={"nbi_labels": (
        "def nbi_labels(model, X, y, eps):\n    return (y + 1) % 10\n"
        "F.cross_entropy = lambda *a, **k: torch.zeros((), requires_grad=True)\n")},
         score=4, parts={"test_neighbours": 4, "test_nbi_labels": 0, "test_surgery": 0, "test_answer_d": 0}),
    # (4) the library's answer in disguise, through importlib and default arguments: raises in the sandbox
    Case("cheat 4: boundary.widen_head / narrow_head through importlib defaults", edits={"surgery": (
        "import importlib\n_b = importlib.import_module('course_lib.unlearn.boundary')\n"
        "def add_shadow(model, _w=_b.widen_head):\n    return _w(model)\n"
        "def remove_shadow(model, K, _n=_b.narrow_head):\n    return _n(model, K)\n"
        "def boundary_expand(model, X_f, epochs=10, lr=3e-4):\n"
        "    m = copy.deepcopy(model); K = add_shadow(m)\n"
        "    fine_tune(m, X_f, torch.full((len(X_f),), K), epochs=epochs, lr=lr)\n    return remove_shadow(m, K)\n")},
         score=9, parts={"test_surgery": 0}),
    # plausible bugs
    Case("bug: plain argmax (the public code) instead of excluding the true label", edits={"nbi_labels": (
        "def nbi_labels(model, X, y, eps):\n    with torch.no_grad():\n"
        "        return model(neighbours(model, X, y, eps)).argmax(1)\n")},
         score=11, parts={"test_nbi_labels": 0}),
    Case("bug: FGSM step towards the class (minus sign)",
         edits={"neighbours": SOL["neighbours"].replace("(X + eps * g.sign())", "(X - eps * g.sign())")},
         score=5, parts={"test_neighbours": 0, "test_nbi_labels": 0, "test_surgery": 5, "test_answer_d": 0}),
    # correct but different
    Case("different: mean loss, clamp to the eps-ball, topk for the label", edits={
        "neighbours": (
            "def neighbours(model, X, y, eps):\n    if not (eps > 0):\n        raise ValueError('eps must be positive')\n"
            "    model.eval()\n    x = X.detach().clone().requires_grad_(True)\n"
            "    g = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]\n"
            "    return torch.clamp(X + eps * torch.sign(g), X - eps, X + eps).detach()\n"),
        "nbi_labels": (
            "def nbi_labels(model, X, y, eps):\n    Xa = neighbours(model, X, y, eps)\n    with torch.no_grad():\n"
            "        z = model(Xa)\n"
            "    z = z - 1e30 * F.one_hot(y, z.shape[1]).to(z.dtype)\n    return z.topk(1, dim=1).indices[:, 0]\n")}),
    Case("different: FGSM step clamped to the pixel range [0, 1] (A, B and D)", edits={"neighbours": CLAMPED}),
    Case("different: plain step through .backward() on the input", edits={"neighbours": BACKWARD}),
    Case("different: head surgery with setattr / getattr", edits={"surgery": SETATTR}),
]
