"""Synthetic submissions of a00_metrics (12 points: A 2, B 3, C 2, D 3, E 2 by prediction).

Lecture 00 computes every metric with the course library (``course_lib.metrics``, ``train.accuracy``),
which raises in the sandbox, and Part E's setting (the masked original) is not in it: a copy of the
lecture's code earns 0 of 12 (the "lecture-copy" case)."""
from . import Case, solution_of, stub

A = "a00_metrics"
SOL = {g: solution_of(A, g) for g in ("accuracy", "ua_ra_ta", "confidence", "mia", "answer_e")}
STUB = {g: stub(A, g) for g in ("accuracy", "ua_ra_ta", "confidence", "mia")}

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # (1) the interactivity tip, on a stub: neutralised, Part A keeps its 2 points and nothing else passes
    Case("cheat 1: interactivity 'all' + stubs", base="release",
         edits={"accuracy": SOL["accuracy"],
                "ua_ra_ta": STUB["ua_ra_ta"] + '\nget_ipython().ast_node_interactivity = "all"'},
         score=2, parts={"test_accuracy": 2, "test_ua_ra_ta": 0}),
    # (2) patching the grader, with a library call behind it
    Case("cheat 2: no-op assert_own_code + library call", base="release",
         edits={"accuracy": "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
                            "from course_lib import metrics\n\ndef accuracy(pred, y):\n"
                            "    return metrics.accuracy(pred, y)\n"},
         at_most=0),
    Case("cheat 2: input transformer that blanks tests + AssertionError = ValueError", base="release",
         edits={"accuracy": STUB["accuracy"] + "\nAssertionError = ValueError",
                "ua_ra_ta": STUB["ua_ra_ta"] + "\nget_ipython().input_transformers_cleanup.append("
                            "lambda lines: [] if any('assert' in l for l in lines) else lines)"},
         at_most=0),
    # (3) rebinding what the tests read: a fake Part B (0), and the retrained model replaced by the original
    # (ignored: the tests keep the given `retrained`), the other parts honest
    Case("cheat 3: fake ua_ra_ta + `retrained = original`",
         edits={"ua_ra_ta": "def ua_ra_ta(model, forget, retain, test):\n"
                            "    return {'UA': 100.0, 'RA': 100.0, 'TA': 100.0}\nretrained = original\n"},
         score=9, parts={"test_accuracy": 2, "test_ua_ra_ta": 0}),
    # (4) the answer key in disguise: default argument, a function object copied whole, partial in a dict
    Case("cheat 4: reference via default argument, copied object, partial in a dict",
         edits={"accuracy": "from course_lib import metrics as _m\n\ndef accuracy(pred, y, _f=_m.accuracy):\n"
                            "    return _f(pred, y)\n",
                "confidence": "from course_lib import metrics\ntrue_class_confidence = metrics.confidence\n",
                "mia": "import functools\nfrom course_lib import metrics\n_impl = {'f': functools.partial("
                       "metrics.mia_efficacy)}\n\ndef mia_efficacy(conf_retain, conf_test, conf_forget, seed=0):\n"
                       "    return _impl['f'](conf_retain, conf_test, conf_forget, seed=seed)\n"},
         score=2, parts={"test_accuracy": 0, "test_ua_ra_ta": 0, "test_confidence": 0, "test_mia": 0,
                         "test_answer_e": 2}),
    Case("cheat 4: importlib by computed name (Part D) after honest A-C",
         edits={"mia": "import importlib\n_m = importlib.import_module('course_lib.' + 'metrics')\n"
                       "mia_efficacy = _m.mia_efficacy\n"},
         score=9, parts={"test_confidence": 2, "test_mia": 0, "test_answer_e": 2}),
    Case("cheat 4: exec(inspect.getsource(...)) + helper module shipped next to the notebook",
         edits={"accuracy": "import inspect\nfrom course_lib import metrics\n"
                            "exec(inspect.getsource(metrics.accuracy))\n",
                "mia": "from helper import mia_efficacy\n"},
         files={"helper.py": "from course_lib.metrics import mia_efficacy\n"},
         score=4, parts={"test_accuracy": 0, "test_ua_ra_ta": 0, "test_confidence": 2, "test_mia": 0,
                         "test_answer_e": 2}),
    # a plausible bug: no balancing (the SVC is fitted on all retain and test confidences; hidden test only)
    Case("bug: forgets to balance members and non-members",
         edits={"mia": SOL["mia"].replace(
             "    if len(r) > n:\n        r = r[rng.choice(len(r), n, replace=False)]\n"
             "    if len(t) > n:\n        t = t[rng.choice(len(t), n, replace=False)]\n"
             "    X = np.concatenate([r, t]).reshape(-1, 1)\n"
             "    y = np.concatenate([np.ones(n), np.zeros(n)])\n",
             "    X = np.concatenate([r, t]).reshape(-1, 1)\n"
             "    y = np.concatenate([np.ones(len(r)), np.zeros(len(t))])\n")},
         score=9, parts={"test_mia": 0}),
    # correct, written differently: torch throughout, float64 results, max-subtraction by hand
    Case("different: torch accuracy, float64 confidence by hand",
         edits={"accuracy": "def accuracy(pred, y):\n    p, t = torch.as_tensor(pred), torch.as_tensor(y)\n"
                            "    if p.dim() == 2:\n        p = p.argmax(dim=1)\n"
                            "    if len(p) != len(t):\n        raise ValueError('different numbers of examples')\n"
                            "    return (p == t).double().mean().item() * 100\n",
                "ua_ra_ta": "def ua_ra_ta(model, forget, retain, test):\n    out = {}\n"
                            "    for key, (X, y) in (('UA', forget), ('RA', retain), ('TA', test)):\n"
                            "        out[key] = accuracy(train.predict_logits(model, X), y)\n"
                            "    out['UA'] = 100 - out['UA']\n    return out\n",
                "confidence": "def true_class_confidence(logits, y):\n    z = logits.double()\n"
                              "    z = z - z.max(dim=1, keepdim=True).values\n"
                              "    p = z.exp() / z.exp().sum(dim=1, keepdim=True)\n"
                              "    return p[torch.arange(len(y)), y]\n",
                "answer_e": "keep = [c for c in range(10) if c != 3]\n"
                            "pick = lambda z: torch.tensor(keep)[z[:, keep].argmax(1)]   # the column dropped\n"
                            "zf, zt = train.predict_logits(original, X_f), train.predict_logits(original, X_t)\n"
                            "ua_mask = 100 - accuracy(pick(zf), y_f)\n"
                            "ta_gain = accuracy(pick(zt), y_t) - accuracy(zt, y_t)\n"}),
    # correct, another convention for Part E: a large negative logit instead of -inf, NumPy float64 answers
    # (named without "different"/"bug": the class-of-30 test takes those three times each, which would crowd
    # out its hostile students)
    Case("convention: E with logit - 1e9 and NumPy floats",
         edits={"answer_e": "z = train.predict_logits(original, X_t).numpy().astype(np.float64)\n"
                            "zm = z.copy()\nzm[:, 3] -= 1e9\n"
                            "yt = y_t.numpy()\n"
                            "ta_gain = np.float64(100 * np.mean(zm.argmax(1) == yt) - 100 * np.mean(z.argmax(1) == yt))\n"
                            "zf = train.predict_logits(original, X_f).numpy()\nzf[:, 3] -= 1e9\n"
                            "ua_mask = np.float64(100 * np.mean(zf.argmax(1) != y_f.numpy()))\n"}),
    # a plausible bug in Part E: the TA gain measured on the whole test set, class 3 included (whose rows the
    # mask turns wrong): the gain becomes a loss
    Case("E bug: TA gain on the test set with class 3",
         edits={"answer_e": SOL["answer_e"].replace(
             "z_f, z_t = train.predict_logits(original, X_f), train.predict_logits(original, X_t)\n",
             "z_f, z_t = train.predict_logits(original, X_f), train.predict_logits(original, ds.X_test)\n"
             "y_t = ds.y_test\n")},
         score=10, parts={"test_answer_e": 0}),
    # what copying lecture 00's code earns: its accuracies come from train.accuracy (cell "memo") and its
    # MIA-Efficacy from the library's metrics (scenarios.compare), both stubs in the sandbox; Part E from the
    # lecture's "expect UA = 100%" and a guess that a mask changes no test accuracy. 0 of 12.
    Case("lecture-copy", base="release",
         edits={"accuracy": "from course_lib import metrics\n\ndef accuracy(pred, y):\n    return metrics.accuracy(pred, y)\n",
                "ua_ra_ta": "def ua_ra_ta(model, forget, retain, test):\n"
                            "    return {'UA': 100 - train.accuracy(model, *forget), 'RA': train.accuracy(model, *retain),\n"
                            "            'TA': train.accuracy(model, *test)}\n",
                "confidence": "def true_class_confidence(logits, y):\n    return metrics.confidence(logits, y)\n",
                "mia": "from course_lib import metrics\n\n"
                       "def mia_efficacy(conf_retain, conf_test, conf_forget, seed=0):\n"
                       "    return metrics.mia_efficacy(conf_retain, conf_test, conf_forget, seed=seed)\n",
                "answer_e": "ua_mask = 100.0   # lecture 00, section 6: Retrain never sees the class\n"
                            "ta_gain = 0.0\n"},
         score=0),
]
