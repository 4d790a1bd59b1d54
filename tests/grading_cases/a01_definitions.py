"""Synthetic submissions of a01_definitions (10 points: A 3, B 2 + 2, C 1 + 2 by prediction).

Lecture 01 removes ridge rows and estimates ε with the course library (``exact.ridge``, ``audit``: stubs
in the sandbox); its one hand-written ε (the explorer's single attack set, shares clamped to
[1/N, 1 - 1/N], no δ) adapted to Part B's stub fails Part B's tests; Part A asks for the intercept the
lecture's update lacks, Part C2 for a setting the lecture does not compute. A copy of the lecture earns
1 of 10 (C1, from its cap ~ log N): the "lecture-copy" case."""
from . import Case, solution_of, stub

A = "a01_definitions"
SOL = {g: solution_of(A, g) for g in ("part_a_solution", "part_b_solution", "part_c_solution")}
STUB = {g: stub(A, g) for g in ("part_a_solution", "part_b_solution", "part_c_solution")}

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) Part A solved, the interactivity tip on the Part B stub: Part A's 3 points, nothing more
    Case("cheat 1: interactivity 'all' + stubs", base="release",
         edits={"part_a_solution": SOL["part_a_solution"],
                "part_b_solution": STUB["part_b_solution"] + '\nget_ipython().ast_node_interactivity = "all"'},
         score=3, parts={"test_ridge_remove": 3}),
    # (2) patching what the old hidden test trusted: the library's estimator replaced by the student's fake.
    # Harmless now (tests run apart from the answer cells): Part B's fake scores 0, Part A and C1 keep theirs
    # (C2, computed with the fake estimator, is wrong).
    Case("cheat 2: course_lib.audit.epsilon_per_example replaced",
         edits={"part_b_solution": "import course_lib.audit\n"
                                   "course_lib.audit.epsilon_per_example = lambda a, b, delta=1e-5, **k: np.zeros(1)\n\n"
                                   "def epsilon_two_samples(scores_a, scores_b, delta=1e-5):\n    return 0.0\n"},
         score=4, parts={"test_ridge_remove": 3, "test_epsilon_values": 0, "test_epsilon_properties": 0,
                         "test_part_c": 1, "test_part_c2": 0}),
    # patching the (removed) grader hook, with the library behind Part B: the library raises in the sandbox
    Case("cheat 2: no-op assert_own_code + library call",
         edits={"part_b_solution": "import course_lib.grading\n"
                                   "course_lib.grading.assert_own_code = lambda *a, **k: None\n"
                                   "from course_lib import audit\n\n"
                                   "def epsilon_two_samples(scores_a, scores_b, delta=1e-5):\n"
                                   "    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)\n"
                                   "    return float(audit.epsilon_per_example(a[:, None], b[:, None], delta=delta,"
                                   " confidence=None)[0])\n"},
         score=4, parts={"test_ridge_remove": 3, "test_epsilon_values": 0, "test_epsilon_properties": 0,
                         "test_part_c": 1, "test_part_c2": 0}),
    # (3) rebinding the helper the visible test uses as its reference: the tests keep the given ridge_state,
    # so the fake Part A scores 0 and the honest Parts B and C keep their points
    Case("cheat 3: ridge_state redefined to agree with a fake",
         edits={"part_a_solution": "def ridge_remove(A_inv, b, X_f, Y_f):\n    return A_inv, b\n\n"
                                   "ridge_state = lambda X, Y, alpha: (np.eye(np.shape(X)[1]), np.zeros(np.shape(X)[1:]))\n"},
         score=7, parts={"test_ridge_remove": 0}),
    # (4) the answer key in disguise: a default argument (Part A), a closure (Part B); the library's code
    # raises in the sandbox however it is reached, so both parts score 0
    Case("cheat 4: reference via default argument and closure",
         edits={"part_a_solution": "from course_lib.exact.ridge import woodbury_downdate\n\n"
                                   "def ridge_remove(A_inv, b, X_f, Y_f, _w=woodbury_downdate):\n"
                                   "    X_f = np.atleast_2d(np.asarray(X_f, dtype=np.float64))\n"
                                   "    X_f = np.hstack([X_f, np.ones((len(X_f), 1))])\n"
                                   "    return _w(np.asarray(A_inv, dtype=np.float64), X_f), np.asarray(b) - X_f.T @ np.asarray(Y_f)\n",
                "part_b_solution": "from course_lib import audit\n\ndef _make():\n    f = audit.epsilon_per_example\n"
                                   "    def eps(scores_a, scores_b, delta=1e-5):\n"
                                   "        a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)\n"
                                   "        if a.ndim != 1 or a.shape != b.shape or len(a) < 2:\n"
                                   "            raise ValueError('bad input')\n"
                                   "        return float(f(a[:, None], b[:, None], delta=delta, confidence=None)[0])\n"
                                   "    return eps\n\nepsilon_two_samples = _make()\n"},
         score=1, parts={"test_ridge_remove": 0, "test_epsilon_values": 0, "test_epsilon_properties": 0,
                         "test_part_c": 1, "test_part_c2": 0}),
    # the shortcut the text forbids, re-inverting the d x d matrix: the right numbers, and the text says the
    # tests do not check how they were computed (this rule is for a person reading the notebook)
    Case("rule left to a person: re-inverts A",
         edits={"part_a_solution": "def ridge_remove(A_inv, b, X_f, Y_f):\n"
                                   "    X_f = np.atleast_2d(np.asarray(X_f, dtype=np.float64))\n"
                                   "    X_f = np.hstack([X_f, np.ones((len(X_f), 1))])\n"
                                   "    A = np.linalg.inv(A_inv) - X_f.T @ X_f\n"
                                   "    return np.linalg.inv(A), np.asarray(b, dtype=np.float64) - X_f.T @ np.asarray(Y_f, dtype=np.float64)\n"},
         score=None),
    # a plausible bug: modifying the given A_inv in place (the change comes back from the sandbox)
    Case("bug: updates A_inv in place",
         edits={"part_a_solution": SOL["part_a_solution"].replace(
             "    A_inv_new = A_inv + AU @ np.linalg.solve(S, AU.T)\n",
             "    A_inv_new = A_inv\n    A_inv_new += AU @ np.linalg.solve(S, AU.T)\n").replace(
             "    A_inv = np.asarray(A_inv, dtype=np.float64)\n", "")},
         score=7, parts={"test_ridge_remove": 0}),
    # a plausible bug: only the attack "score > t => a" (one direction); C2, computed with it, is wrong too
    # (P_CAP 8/70 instead of 16/70)
    Case("bug: one attack direction only",
         edits={"part_b_solution": SOL["part_b_solution"].replace("for pos, neg in ((a, b), (b, a)):",
                                                                 "for pos, neg in ((a, b),):")},
         score=4, parts={"test_epsilon_values": 0, "test_epsilon_properties": 0}),
    # correct, written differently: Sherman-Morrison one row at a time; thresholds vectorised
    Case("different: Sherman-Morrison loop, vectorised thresholds",
         edits={"part_a_solution": "def ridge_remove(A_inv, b, X_f, Y_f):\n"
                                   "    M = np.array(A_inv, dtype=np.float64, copy=True)\n"
                                   "    X_f = np.asarray(X_f, dtype=np.float64).reshape(-1, M.shape[0] - 1)\n"
                                   "    X_f = np.concatenate([X_f, np.ones((len(X_f), 1))], axis=1)\n"
                                   "    for x in X_f:\n        Mx = M @ x\n"
                                   "        M = M + np.outer(Mx, Mx) / (1.0 - x @ Mx)\n"
                                   "    Y_f = np.asarray(Y_f, dtype=np.float64).reshape(len(X_f), *np.shape(b)[1:])\n"
                                   "    return M, np.asarray(b, dtype=np.float64) - X_f.T @ Y_f\n",
                "part_b_solution": "def epsilon_two_samples(scores_a, scores_b, delta=1e-5):\n"
                                   "    a = np.asarray(scores_a, dtype=float)\n    b = np.asarray(scores_b, dtype=float)\n"
                                   "    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b) or len(a) < 2:\n"
                                   "        raise ValueError('need two 1-D samples of the same length >= 2')\n"
                                   "    if not np.isfinite(np.concatenate([a, b])).all():\n"
                                   "        raise ValueError('scores must be finite')\n"
                                   "    n = len(a)\n    t = np.concatenate([[-np.inf], np.unique(np.concatenate([a, b]))])\n"
                                   "    eps = [0.0]\n    for pos, neg in ((a, b), (b, a)):\n"
                                   "        fpr = (neg[None, :] > t[:, None]).mean(axis=1)\n"
                                   "        fnr = (pos[None, :] <= t[:, None]).mean(axis=1)\n"
                                   "        for num, den in ((fpr, fnr), (fnr, fpr)):\n"
                                   "            top = 1 - delta - num\n"
                                   "            with np.errstate(divide='ignore', invalid='ignore'):\n"
                                   "                vals = np.log(top / np.maximum(den, 1 / n))\n"
                                   "            eps += list(vals[top > 0])\n"
                                   "    return float(max(eps))\n",
                # C2 by simulation (a valid approach within the stated 0.01): 10,000 draws of 4 + 4 normals
                "part_c_solution": "N_MIN = 21\n_g = np.random.default_rng(0)\n"
                                   "_e = np.array([epsilon_two_samples(*_g.normal(size=(2, 4))) for _ in range(10000)])\n"
                                   "P_CAP = float(np.mean(_e > math.log(4 * (1 - 1e-5)) - 1e-9))\n"
                                   "EPS_NULL = float(_e.mean())\n"}),
    # correct, in other conventions: torch float64 tensors and an explicit inverse of the k x k matrix (allowed);
    # pure Python loops with `max` as a variable name and `setattr`; a NumPy integer and a cudnn flag in Part C
    Case("different: torch + k x k inverse, Python loops, `max` and setattr, numpy int",
         edits={"part_a_solution": "def ridge_remove(A_inv, b, X_f, Y_f):\n"
                                   "    M = torch.as_tensor(np.asarray(A_inv), dtype=torch.float64)\n"
                                   "    U = torch.as_tensor(np.asarray(X_f), dtype=torch.float64).reshape(-1, M.shape[0] - 1)\n"
                                   "    U = torch.cat([U, torch.ones(U.shape[0], 1, dtype=torch.float64)], dim=1)\n"
                                   "    MU = M @ U.T\n"
                                   "    K = torch.linalg.inv(torch.eye(U.shape[0], dtype=torch.float64) - U @ MU)\n"
                                   "    b_new = torch.as_tensor(np.asarray(b), dtype=torch.float64) - U.T @ torch.as_tensor(\n"
                                   "        np.asarray(Y_f), dtype=torch.float64).reshape(U.shape[0], *np.shape(b)[1:])\n"
                                   "    return M + MU @ K @ MU.T, b_new\n",
                "part_b_solution": "import types\nsettings = types.SimpleNamespace()\nsetattr(settings, 'clamp', True)\n\n"
                                   "def epsilon_two_samples(scores_a, scores_b, delta=1e-5):\n"
                                   "    a, b = np.asarray(scores_a), np.asarray(scores_b)\n"
                                   "    if a.ndim != 1 or b.ndim != 1 or a.size != b.size or a.size < 2:\n"
                                   "        raise ValueError('two 1-D samples of one length >= 2')\n"
                                   "    if not (np.isfinite(a).all() and np.isfinite(b).all()):\n"
                                   "        raise ValueError('finite scores only')\n"
                                   "    a, b = [float(v) for v in a], [float(v) for v in b]\n"
                                   "    n = len(a)\n    max = 0.0\n"
                                   "    for t in [-math.inf] + sorted(set(a + b)):\n"
                                   "        for pos, neg in ((a, b), (b, a)):\n"
                                   "            fpr = sum(1 for v in neg if v > t) / n\n"
                                   "            fnr = sum(1 for v in pos if v <= t) / n\n"
                                   "            for num, den in ((fpr, fnr), (fnr, fpr)):\n"
                                   "                if settings.clamp and den < 1 / n:\n                    den = 1 / n\n"
                                   "                if 1 - delta - num > 0 and math.log((1 - delta - num) / den) > max:\n"
                                   "                    max = math.log((1 - delta - num) / den)\n"
                                   "    return max\n",
                # C2 exactly, as fractions counted by hand over the 70 splits, NumPy floats
                "part_c_solution": "torch.backends.cudnn.deterministic = True\n"
                                   "import itertools\nfrom fractions import Fraction\n"
                                   "N_MIN = np.int64(21)\n_cap, _n, _tot = math.log(4 * (1 - 1e-5)), 0, 0.0\n"
                                   "_splits = list(itertools.combinations(range(8), 4))\n"
                                   "for _a in _splits:\n"
                                   "    _e = epsilon_two_samples([float(r) for r in _a], [float(r) for r in range(8) if r not in _a])\n"
                                   "    _n += abs(_e - _cap) < 1e-9\n    _tot += _e\n"
                                   "P_CAP = np.float64(float(Fraction(_n, len(_splits))))\n"
                                   "EPS_NULL = np.float64(_tot / len(_splits))\n"}),
    # what copying lecture 01's code earns: Part A through the library's ridge update (cell "ridge"; a stub in the
    # sandbox, and without the intercept), Part B the explorer's one-set ε (explore_ratio) taken over every
    # threshold, C1 from the cap ~ log N of 01b, C2 not in the lecture. 1 of 10.
    Case("lecture-copy", base="release",
         edits={"part_a_solution": "from course_lib.exact import ridge\n\n"
                                   "def ridge_remove(A_inv, b, X_f, Y_f):\n"
                                   "    X_f = np.atleast_2d(np.asarray(X_f, dtype=np.float64))\n"
                                   "    return ridge.woodbury_downdate(np.asarray(A_inv, dtype=np.float64), X_f), "
                                   "np.asarray(b) - X_f.T @ np.asarray(Y_f)\n",
                "part_b_solution": "def epsilon_two_samples(scores_a, scores_b, delta=1e-5):\n"
                                   "    a, ref = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)\n"
                                   "    n = len(a)\n    clamp = lambda p: min(max(p, 1 / n), 1 - 1 / n)\n    best = 0.0\n"
                                   "    for t in np.unique(np.r_[a, ref]):\n"
                                   "        p_a, p_ref = float(np.mean(a > t)), float(np.mean(ref > t))\n"
                                   "        best = max(best, abs(np.log(clamp(p_a) / clamp(p_ref))),\n"
                                   "                   abs(np.log(clamp(1 - p_a) / clamp(1 - p_ref))))\n"
                                   "    return float(best)\n",
                "part_c_solution": "N_MIN = 21\nP_CAP = None\nEPS_NULL = None\n"},
         score=1, parts={"test_ridge_remove": 0, "test_epsilon_values": 0, "test_epsilon_properties": 0,
                         "test_part_c": 1, "test_part_c2": 0}),
]
