import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import grading, metrics, plots


@pytest.fixture
def df():
    rows = {"Retrain": {"UA": 10.0, "MIA-Efficacy": 20.0, "RA": 90.0, "TA": 80.0},
            "FT": {"UA": 12.0, "MIA-Efficacy": 14.0, "RA": 91.0, "TA": 79.0},
            "GA": {"UA": 30.0, "MIA-Efficacy": 60.0, "RA": 50.0, "TA": 40.0}}
    return metrics.table(rows)


def test_gap_bars_have_the_gap_heights(df):
    """Each bar's height is the method's gap to Retrain."""
    fig = plots.gap_to_retrain(df)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    expected = sorted([2.0, -6.0, 1.0, -1.0, 20.0, 40.0, -40.0, -40.0])
    assert heights == expected
    with pytest.raises(ValueError, match="reference row"):
        plots.gap_to_retrain(df, reference="Oracle")
    with pytest.raises(ValueError, match="no method"):
        plots.gap_to_retrain(df.loc[["Retrain"]])


def test_metric_bars(df):
    """One bar per method; unknown metrics are refused."""
    fig = plots.metric_bars(df, "UA")
    assert [p.get_width() for p in fig.axes[0].patches] == [10.0, 12.0, 30.0]
    with pytest.raises(ValueError, match="unknown metric"):
        plots.metric_bars(df, "F1")


def test_loss_histograms(digits, trained):
    """One panel per model, two histograms (forget, test) on each."""
    fig = plots.loss_histograms({"a": trained, "b": trained}, (digits.X_train[:50], digits.y_train[:50]),
                                (digits.X_test, digits.y_test))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        bars = ax.patches
        assert len(bars) == 2 * 10 * 3, "30 bins for the test set and 30 for the forget set"
        for part in (bars[:30], bars[30:]):          # each is a density: the areas add up to 1
            assert sum(b.get_width() * b.get_height() for b in part) == pytest.approx(1.0, rel=1e-6)
    loss = plots.per_example_loss(trained, digits.X_test[:5], digits.y_test[:5])
    assert loss.shape == (5,) and (loss >= 0).all()
    by_hand = torch.nn.functional.cross_entropy(trained(digits.X_test[:5]), digits.y_test[:5], reduction="none")
    assert torch.allclose(torch.as_tensor(loss).float(), by_hand.detach().float(), atol=1e-5)


def test_assert_close_messages():
    """Students see where and by how much they are off."""
    grading.assert_close([1.0, 2.0], np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match="at index \\(1,\\) you give 2.5, expected 2 "):
        grading.assert_close([1.0, 2.5], [1.0, 2.0], hint="check the sign")
    with pytest.raises(AssertionError, match="shape \\(3,\\)"):
        grading.assert_close([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(AssertionError, match="NaN"):
        grading.assert_close([float("nan")], [1.0])
    grading.assert_shape(torch.zeros(2, 3), (2, 3))
    with pytest.raises(AssertionError, match="should have shape \\(3, 2\\)"):
        grading.assert_shape(torch.zeros(2, 3), (3, 2))


def test_assert_own_code_catches_calls_into_the_reference():
    """A function that calls, imports or reaches through a forbidden module fails; honest code passes."""
    import course_lib.audit as audit_mod
    from course_lib.audit import epsilon_per_example

    def honest(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    def via_module(a, b):
        return audit_mod.epsilon_per_example(a, b)[0]

    def via_name(a, b):
        return epsilon_per_example(a, b)[0]

    def via_import(a, b):
        import course_lib.audit
        return course_lib.audit.epsilon_per_example(a, b)[0]

    def nested(a, b):
        return (lambda: epsilon_per_example(a, b))()

    grading.assert_own_code(honest, ("course_lib.audit",))
    for cheat in (via_module, via_name, via_import, nested):
        with pytest.raises(AssertionError, match="write this part yourself"):
            grading.assert_own_code(cheat, ("course_lib.audit",))
    grading.assert_own_code(via_name, ("course_lib.exact.ridge",))  # other modules stay allowed


def test_assert_own_code_follows_what_a_function_reaches():
    """The answer key in disguise is caught: default argument, function copied whole, partial,
    dict/list contents, bound method, a class, a computed module name, exec'd source; a qualified
    forbidden function (np.linalg.inv) too. Honest code calling allowed libraries passes."""
    import functools
    import importlib
    import inspect

    import course_lib.audit as audit_mod
    from course_lib.audit import epsilon_per_example
    forbidden = ("course_lib.audit",)

    def with_default(a, b, _f=epsilon_per_example):
        return _f(a, b)

    table = {"f": functools.partial(audit_mod.epsilon_per_example)}

    def via_dict(a, b):
        return table["f"](a, b)

    stash = [epsilon_per_example]

    def via_list(a, b):
        return stash[0](a, b)

    def helper(a, b):
        return epsilon_per_example(a, b)

    def via_helper(a, b):                  # one call deeper
        return helper(a, b)

    def by_name(a, b):
        return importlib.import_module("course_lib." + "audit").epsilon_per_example(a, b)

    ns = dict(vars(audit_mod))
    exec(inspect.getsource(audit_mod.logit_scaled_confidence), ns)    # noqa: S102 - the cheat under test
    copied_whole = audit_mod.epsilon_per_example

    class Holder:
        def run(self, a, b):
            return epsilon_per_example(a, b)

    cheats = [with_default, via_dict, via_list, via_helper, by_name, ns["logit_scaled_confidence"], copied_whole,
              functools.partial(epsilon_per_example), Holder().run]
    for cheat in cheats:
        with pytest.raises(AssertionError, match="write this part yourself"):
            grading.assert_own_code(cheat, forbidden)

    def inverts(A):
        return np.linalg.inv(A)

    def aliased(A):
        lin = np.linalg
        return lin.inv(A)

    def solves(A, b):
        return np.linalg.solve(A, b)

    for cheat in (inverts, aliased):
        with pytest.raises(AssertionError, match="numpy.linalg.inv"):
            grading.assert_own_code(cheat, ("numpy.linalg.inv",))
    grading.assert_own_code(solves, ("numpy.linalg.inv", "course_lib.exact.ridge"))

    from course_lib import train

    def honest(model, X, y):                 # an allowed library call, torch, numpy, a docstring naming course_lib
        """Uses course_lib.train, which is allowed here."""
        return float((train.predict_logits(model, X).argmax(1) == y).double().mean()) * np.float64(100)
    grading.assert_own_code(honest, ("course_lib.metrics", "course_lib.train.accuracy"))

    def calls_train_accuracy(model, X, y):
        return train.accuracy(model, X, y)
    with pytest.raises(AssertionError, match="course_lib.train.accuracy"):
        grading.assert_own_code(calls_train_accuracy, ("course_lib.metrics", "course_lib.train.accuracy"))


def test_scan_cell_flags_tampering_and_allows_the_interactivity_tip():
    """The static check of answer cells: grader patches, transformers, builtins, rebinding the given
    cells' names and dynamic imports are findings; the interactivity tip and honest code are not."""
    protected = {"same_model", "E_all", "train_adapter"}
    clean = [
        'get_ipython().ast_node_interactivity = "all"\n\ndef f(x):\n    return x + 1',
        "%config InteractiveShell.ast_node_interactivity='all'",
        "def unlearn_step(state, ids):\n    state['E'] = state['E'][1:]\n    state['members'][0] = 1\n"
        "    E_all = 3\n    return state",
        "import numpy as np\nimport warnings\nx = np.zeros(3)\nx[0] = 1\nfor i in range(3):\n    pass",
        "%%time\ny = 1",
    ]
    for src in clean:
        assert grading.scan_cell(src, protected) == [], src
    dirty = {
        "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None": "course_lib.grading",
        "import course_lib.audit\ncourse_lib.audit.epsilon_per_example = len": "assigns",
        "get_ipython().input_transformers_cleanup.append(lambda l: [])": "get_ipython",
        "AssertionError = ValueError": "AssertionError",
        "same_model = lambda *a: True": "same_model",
        "def train_adapter(*a):\n    return None": "train_adapter",
        "E_all.zero_()": "in place",
        "E_all[0] = 0": "modifies",
        "import importlib\nm = importlib.import_module('course_lib.' + 'x')": "importlib",
        "exec('x = 1')": "exec",
        "import builtins\nbuiltins.len = None": "builtins",
        "def f():\n    global same_model\n    same_model = 1": "global",
        "!rm -rf /": "system",
        "with open('course_lib.py', 'w') as fh:\n    fh.write('')": "writing",
    }
    for src, word in dirty.items():
        found = grading.scan_cell(src, protected)
        assert found and any(word in f for f in found), (src, found)


def test_protected_names_are_the_given_names_that_tests_read():
    """Names of locked cells that a test reads, directly or through a given function, are protected;
    names the tests never use are not."""
    def cell(src, **meta):
        return {"cell_type": "code", "source": src, "metadata": {"nbgrader": meta}}
    cells = [cell("import numpy as np\nX_all = np.zeros(3)\nscratch = 1\n"
                  "def refit(m):\n    return helper(m) + X_all\ndef helper(m):\n    return m", locked=True),
             cell("def answer():\n    pass", solution=True),
             cell("assert refit(1) is not None", grade=True, locked=True)]
    assert grading.protected_names(cells) == {"refit", "helper", "X_all"}


def test_check_kernel_refuses_a_patched_library_and_rebound_builtins(monkeypatch):
    """check_kernel fails when a course_lib function was replaced by non-library code or a
    built-in exception was rebound, and passes in a clean interpreter."""
    import builtins

    from course_lib import metrics
    grading.check_kernel({})
    monkeypatch.setattr(metrics, "accuracy", lambda *a: 100.0)
    with pytest.raises(AssertionError, match="course_lib.metrics.accuracy was replaced"):
        grading.check_kernel({})
    monkeypatch.undo()
    ns = {"AssertionError": ValueError}
    with pytest.raises(AssertionError, match="AssertionError was rebound"):
        grading.check_kernel(ns)
    assert "AssertionError" not in ns, "the rebinding is undone for the cells that follow"
    monkeypatch.setattr(builtins, "ValueError", KeyError)
    try:
        with pytest.raises(AssertionError, match="builtins.ValueError"):
            grading.check_kernel({})
    finally:
        monkeypatch.undo()


def test_score_tests_needs_the_token_and_ignores_warnings_and_displayed_values():
    """After execution a test cell keeps its points only if it printed the run's token; displayed
    values and stderr warnings are dropped; tampering found above a test zeroes it."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    scan, _execute, score = grading.autograde_preprocessors()[:3]

    def test_cell(gid):
        return new_code_cell("# a test\nassert True", metadata={"nbgrader": {
            "grade": True, "solution": False, "locked": True, "grade_id": gid, "points": 1}})
    answer = new_code_cell("x = 1", metadata={"nbgrader": {"grade": False, "solution": True, "locked": False,
                                                           "grade_id": "ans"}})
    nb = new_notebook(cells=[test_cell("t1"), test_cell("t2"), test_cell("t3"), answer, test_cell("t4")])
    res = {"metadata": {"path": str(Path(tempfile.mkdtemp()))}}
    nb, res = scan().preprocess(nb, res)
    token = res["course_integrity"]["token"]
    assert token in nb.cells[0].source
    nb.cells[0].outputs = [new_output("stream", name="stderr", text="UserWarning: harmless\n"),
                           new_output("stream", name="stdout", text=f"course-grading-complete {token}\n")]
    nb.cells[1].outputs = [new_output("execute_result", data={"text/plain": "'a docstring'"}, execution_count=1)]
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="course-grading-complete 0000\n")]
    nb.cells[4].outputs = [new_output("stream", name="stdout", text=f"course-grading-complete {token}\n")]
    res["course_integrity"]["findings"].append((3, "ans", "uses `exec`"))
    nb, res = score().preprocess(nb, res)
    from nbgrader.utils import determine_grade
    assert [determine_grade(c)[0] for c in nb.cells if c.metadata["nbgrader"].get("grade")] == [1, 0, 0, 0]
    assert nb.cells[0].source == "# a test\nassert True" and nb.cells[0].outputs == []
    assert "uses `exec`" in nb.cells[4].outputs[-1]["evalue"]
    nbformat.validate(nb)
