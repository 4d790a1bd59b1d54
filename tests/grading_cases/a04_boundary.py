"""Synthetic submissions for assignment a04_boundary (see tests/grading_cases/__init__.py)."""
from . import Case, solution_of

A = "a04_boundary"
SOL_A = solution_of(A, "neighbours")
SOL_B = solution_of(A, "nbi_labels")
SOL_C = solution_of(A, "surgery")
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) one part solved, display tricks elsewhere: the stubbed part still scores nothing
    Case("cheat: interactivity", edits={"neighbours": SOL_A, "nbi_labels": "get_ipython().ast_node_interactivity = 'all'\n" + STUB},
         at_most=11, parts={"test_nbi_labels": 0}),
    # (2) patch the grader and call the library
    Case("cheat: patched grader", edits={"neighbours": (
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
        "from course_lib.unlearn import boundary\n"
        "def neighbours(model, X, y, eps):\n    return boundary.neighbour_search(model, X, y, eps)\n")},
         at_most=10, parts={"test_neighbours": 0}),
    # (3) rebind a helper the tests might trust (F.cross_entropy) so that any output passes
    Case("cheat: rebound helper", edits={"nbi_labels": (
        "import torch.nn.functional as F_\n"
        "def nbi_labels(model, X, y, eps):\n    return (y + 1) % 10\n"
        "F.cross_entropy = lambda *a, **k: torch.zeros((), requires_grad=True)\n")},
         at_most=4, parts={"test_nbi_labels": 0}),
    # (4) the library's answer in disguise, reached through importlib
    Case("cheat: library in disguise", edits={"surgery": (
        "import importlib\n_b = importlib.import_module('course_lib.unlearn.boundary')\n"
        "def add_shadow(model, _w=_b.widen_head):\n    return _w(model)\n"
        "def remove_shadow(model, K, _n=_b.narrow_head):\n    return _n(model, K)\n"
        "def boundary_expand(model, X_f, epochs=10, lr=3e-4):\n"
        "    m = copy.deepcopy(model); K = add_shadow(m)\n"
        "    fine_tune(m, X_f, torch.full((len(X_f),), K), epochs=epochs, lr=lr)\n    return remove_shadow(m, K)\n")},
         at_most=9, parts={"test_surgery": 0}),
    # a plausible bug: the plain argmax (public code) instead of excluding the true label
    Case("bug: plain argmax", edits={"nbi_labels": (
        "def nbi_labels(model, X, y, eps):\n    with torch.no_grad():\n"
        "        return model(neighbours(model, X, y, eps)).argmax(1)\n")}, score=11),
    # correct but different: mean loss (same signs), topk for the label, surgery via torch.cat
    Case("different but correct", edits={
        "neighbours": (
            "def neighbours(model, X, y, eps):\n    if not (eps > 0):\n        raise ValueError('eps must be positive')\n"
            "    model.eval()\n    x = X.detach().clone().requires_grad_(True)\n"
            "    g = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]\n"
            "    return torch.clamp(X + eps * torch.sign(g), X - eps, X + eps).detach()\n"),
        "nbi_labels": (
            "def nbi_labels(model, X, y, eps):\n    Xa = neighbours(model, X, y, eps)\n    with torch.no_grad():\n"
            "        z = model(Xa)\n"
            "    z = z - 1e30 * F.one_hot(y, z.shape[1]).to(z.dtype)\n    return z.topk(1, dim=1).indices[:, 0]\n")}),
]
