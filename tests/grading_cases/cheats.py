"""Cheat submissions of every kind, generated for any assignment from a small spec.

One generator per kind of cheat (issue 23), each ``(spec) -> Case`` (or a list of cases, empty where
the kind cannot be tried safely here). The per-assignment :class:`Spec` names one answer cell and the
function it defines (not the first part, so that earlier parts have points to keep), one answer cell
binding plain values (a multiple-choice letter, a number) and one answer cell whose function the
course library implements (the forbidden reference). Everything else (which test cells grade a cell,
their points, the parts before it) is read from the solution notebook.

Each case starts from the solution and replaces one or two answer cells, and asserts the score the
cheat deserves: 0 for the cheated part; the parts before it keep their points; at most what the honest
parts earn in all. ``tests/test_grading_suite.py`` grades every generator on every assignment: the
cheats with the assignment's other cases, the denial-of-service cases (``timeout`` set) in a batch of
their own with a short time limit.

    from grading_cases import cheats
    cheats.cases("a00_metrics")            # every kind, for one assignment
    cheats.fork_bomb(cheats.SPECS["a00_metrics"])
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

from . import ROOT, Case, solution_of

#: Seconds per cell for the denial-of-service cases (an infinite loop, a fork bomb): each costs this
#: much once, and the parts before it (the set-up cell included: seconds of training on a busy
#: machine, plus the sandbox's start) must fit in it. ``COURSE_DOS_TIMEOUT`` overrides it.
DOS_TIMEOUT_S = float(os.environ.get("COURSE_DOS_TIMEOUT", "60"))


@dataclass(frozen=True)
class Spec:
    """What the generators need to know of one assignment (all names from its solution notebook)."""

    assignment: str
    answer: str                     # an answer cell that defines ONE function (not the first graded part)
    function: str                   # ... and that function's name
    values: str                     # an answer cell binding plain values
    names: dict = field(default_factory=dict)       # ... its names and their types: "str", "int" or "float"
    ref_answer: str = ""            # an answer cell whose function the (forbidden) course library implements
    ref_module: str = ""            # the library module holding the reference, under course_lib ("exact.sisa")
    ref_name: str = ""              # the reference function's name in that module
    ref_code: str = ""              # the cell's function written with `_ref` (the reference) or `_lib` (its module)


_PASS = "def {f}(*args, **kwargs):\n    return _ref(*args, **kwargs)\n"

#: One spec per graded assignment (grade_ids and names from ``solutions/<a>/<a>.ipynb``).
SPECS = {s.assignment: s for s in [
    Spec("a00_metrics", "ua_ra_ta", "ua_ra_ta", "answer_e", {"ua_mask": "float", "ta_gain": "float"},
         "confidence", "metrics", "confidence", _PASS.format(f="true_class_confidence")),
    Spec("a01_definitions", "part_b_solution", "epsilon_two_samples", "part_c_solution",
         {"N_MIN": "int", "P_CAP": "float", "EPS_NULL": "float"},
         "part_a_solution", "exact.ridge", "woodbury_downdate",
         "import numpy as np\n\ndef ridge_remove(A_inv, b, X_f, Y_f):\n"
         "    X_f = np.atleast_2d(np.asarray(X_f, dtype=np.float64))\n"
         "    X_f = np.hstack([X_f, np.ones((len(X_f), 1))])      # the intercept's column\n"
         "    return _ref(np.asarray(A_inv, dtype=np.float64), X_f), np.asarray(b) - X_f.T @ np.asarray(Y_f)\n"),
    Spec("a02_sisa", "retrain_shard", "retrain_shard", "answer_e", {"MOVED_ROWS": "int", "SHARDS_RETRAINED": "int"},
         "assign_rows", "exact.sisa", "assign", _PASS.format(f="assign_rows")),
    Spec("a03_legonet", "activate", "activate", "answer_e", {"EXPECTED_ADAPTERS": "float"},
         "activate", "exact.legonet", "nearest_keys", _PASS.format(f="activate")),
    Spec("a04_boundary", "nbi_labels", "nbi_labels", "answer_d", {"kept_fgsm": "float", "kept_pgd": "float"},
         "neighbours", "unlearn.boundary", "neighbour_search", _PASS.format(f="neighbours")),
    Spec("a05_salun", "masked_rl", "masked_random_label", "answer_c",
         {"ratio_decay": "float", "moves_momentum_only": "str", "drift_after_freeze": "float"},
         "saliency", "masks", "saliency",
         "def saliency_mask(model, X_f, y_f, fraction):\n    return _ref(model, (X_f, y_f), fraction)\n"),
    Spec("a06_sparsity", "finetune_pruned", "finetune_pruned", "answer_d",
         {"gap_direction": "str", "gap_change": "float"},
         "omp_mask", "masks", "omp", _PASS.format(f="omp_mask")),
    Spec("a07_del", "weight_mask", "weight_mask", "answer_d",
         {"more_forgotten": "str", "forget_acc_difference": "float"},
         "weight_mask", "params", "global_topk",
         "def weight_mask(model, scores, budget):\n"
         "    k = int(budget * sum(p.numel() for p in model.parameters()) + 1e-9)\n"
         "    return _ref({n: scores[n] for n, _ in model.named_parameters()}, k)\n"),
    # a08 is a design task: nothing is forbidden and `unlearning` is the first graded part; the "reference" out
    # of reach is the grader's populations (challenge.populations raises in the sandbox: private data)
    Spec("a08_challenge", "unlearning", "unlearning", "answer_b", {"predicted_F": "float"},
         "unlearning", "challenge", "populations",
         "def unlearning(net, retain, forget, val):\n"
         "    pops = _ref(challenge.Split('grading', 'random', seed=2718))\n"
         "    return pops.model(secrets.randbelow(pops.n_models), 'retrained')\n"),
]}


# ----------------------------------------------------------------- what the notebook says

@lru_cache(maxsize=None)
def _cells(assignment: str) -> tuple:
    nb_path = next((ROOT / "solutions" / assignment).glob("*.ipynb"))
    out = []
    for c in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]:
        meta = c.get("metadata", {}).get("nbgrader", {}) or {}
        if c.get("cell_type") == "code" and meta.get("grade_id"):
            kind = "test" if meta.get("grade") and not meta.get("solution") else \
                "answer" if meta.get("solution") else "given"
            out.append((meta["grade_id"], kind, float(meta.get("points", 0) or 0)))
    return tuple(out)


def points(assignment: str) -> dict[str, float]:
    """Points of every test cell, by grade_id."""
    return {g: p for g, k, p in _cells(assignment) if k == "test"}


def tests_of(assignment: str, answer: str) -> dict[str, float]:
    """The test cells that grade ``answer``: those after it, up to the next answer cell."""
    out, seen = {}, False
    for g, k, p in _cells(assignment):
        if g == answer:
            seen = True
        elif seen and k == "answer":
            break
        elif seen and k == "test":
            out[g] = p
    if not seen:
        raise KeyError(f"{assignment} has no cell {answer!r}")
    return out


def tests_before(assignment: str, answer: str) -> dict[str, float]:
    """The test cells before ``answer`` (they ran, with the student's honest answers, before the cheat)."""
    out = {}
    for g, k, p in _cells(assignment):
        if g == answer:
            return out
        if k == "test":
            out[g] = p
    raise KeyError(f"{assignment} has no cell {answer!r}")


def _full(spec: Spec) -> float:
    return sum(points(spec.assignment).values())


def _cheated(spec: Spec, name: str, edits: dict, answer: str | None = None, **kw) -> Case:
    """A case whose cheated part (``answer``'s tests) scores 0 and whose total is at most what the
    other parts earn; the parts before the cheat keep their points."""
    answer = answer or spec.answer
    mine = tests_of(spec.assignment, answer)
    parts = {**tests_before(spec.assignment, answer), **{g: 0.0 for g in mine}}
    kw.setdefault("at_most", _full(spec) - sum(mine.values()))
    return Case(f"cheat: {name}", edits=edits, parts=parts, **kw)


def _stub(function: str) -> str:
    return f"def {function}(*args, **kwargs):\n    return None\n"


# ----------------------------------------------------------------- where the sandbox must be strict

def strict_sandbox() -> bool:
    """Whether the executor's sandbox is bubblewrap's (own pid namespace): only there may a case kill
    every process it can see (outside it, as root, ``kill(-1)`` would end the machine's processes)."""
    from course_lib.grading import sandbox
    try:
        return sandbox.mode() == "bwrap"
    except (RuntimeError, ValueError):
        return False


def pids_capped() -> bool:
    """Whether a fork bomb is bounded: RLIMIT_NPROC (not for root) or a pids cgroup the grader can make."""
    from course_lib.grading import sandbox
    if not strict_sandbox():
        return False
    if os.geteuid() != 0:
        return True
    made = sandbox._make_cgroups(sandbox.Limits(nproc=64))
    try:
        return any((cg / "pids.max").exists() for cg in made)
    finally:
        for cg in made:
            sandbox._remove_cgroup(cg)


# ----------------------------------------------------------------- the generators, one per kind

def shell_and_input_transformer(spec: Spec) -> Case:
    """The IPython shell reached through builtins / getattr / exec: output of every expression shown,
    an input transformer that strips every later cell's asserts, AssertionError rebound in builtins
    and in the namespace; the function itself does nothing."""
    code = ("import builtins\n_shell = getattr(builtins, 'get_' + 'ipython', None) or globals()['get_ipython']\n"
            "_shell = _shell()\n_shell.ast_node_interactivity = 'all'\n"
            "_shell.input_transformers_cleanup.append(lambda lines: [l for l in lines if 'assert' not in l])\n"
            "getattr(builtins, 'ex' + 'ec')(\"import builtins as _b\\n_b.AssertionError = type('AssertionError', "
            "(Exception,), {})\", {})\n"
            "exec('AssertionError = ValueError', _shell.user_ns)\n" + _stub(spec.function))
    return _cheated(spec, "IPython shell via builtins/getattr/exec + input transformer", {spec.answer: code})


_DISK = '''import json, os, time
from pathlib import Path

{f} = lambda *args, **kwargs: None
_A, _GID = {a!r}, {gid!r}


def _solution_cell(path):
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:
        return None
    for c in nb.get("cells", []):
        meta = (c.get("metadata", {{}}) or {{}}).get("nbgrader", {{}}) or {{}}
        src = "".join(c.get("source", ""))
        if meta.get("grade_id") == _GID and "BEGIN SOLUTION" in src:
            return src
    return None


_paths = []
try:
    import course_lib
    _root = Path(course_lib.__file__).resolve().parent.parent
    _paths += [_root / "solutions" / _A / (_A + ".ipynb"), _root / "source" / _A / (_A + ".ipynb")]
except Exception:
    _root = None
for _up in [Path.cwd(), *Path.cwd().parents]:
    _paths += [_up / "solutions" / _A / (_A + ".ipynb"), _up / "source" / _A / (_A + ".ipynb")]
_paths += [Path("../../solutions") / _A / (_A + ".ipynb"), Path("../solutions") / _A / (_A + ".ipynb")]
_t0 = time.monotonic()
for _base in ["/tmp", "/var/tmp", "/work", "/root", "/home", "/srv", "/opt", "/mnt", str(_root or "/")]:
    for _dir, _subdirs, _files in os.walk(_base):
        if time.monotonic() - _t0 > 10 or _dir.count(os.sep) - _base.count(os.sep) >= 6:
            _subdirs[:] = []
        _subdirs[:] = [d for d in _subdirs if d not in ("site-packages", "dist-packages", ".git", "__pycache__",
                                                         "lib", "lib64", "include", "share", "proc", "sys")]
        _paths += [Path(_dir) / f for f in _files if f.endswith(".ipynb")]
_stolen = None
for _p in _paths:
    _stolen = _solution_cell(_p)
    if _stolen:
        exec(_stolen, globals())
        break
'''


def answer_key_from_disk(spec: Spec) -> Case:
    """Read the answer key from disk: ``solutions/<a>/<a>.ipynb`` next to the course library, in every
    parent of the working folder, ``../../solutions``, and any notebook under /tmp, /work, /home...
    (the scratch course, the restored notebook with its hidden tests); run the solution cell found."""
    return _cheated(spec, "answer key and hidden tests read from disk",
                    {spec.answer: _DISK.format(f=spec.function, a=spec.assignment, gid=spec.answer)})


_ALWAYS = '''class _AlwaysFloat(float):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __sub__(self, other):
        return _AlwaysFloat(0.0)
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __sub__
    def __abs__(self):
        return _AlwaysFloat(0.0)
    def __lt__(self, other):
        return True
    __le__ = __gt__ = __ge__ = __lt__
    def __getitem__(self, key):
        return self
    def __len__(self):
        return 1
    def __iter__(self):
        return iter([self])
    def __call__(self, *args, **kwargs):
        return self
    def __getattr__(self, name):
        return self
    __hash__ = float.__hash__


class _AlwaysInt(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __lt__(self, other):
        return True
    __le__ = __gt__ = __ge__ = __lt__
    __hash__ = int.__hash__


class _AlwaysStr(str):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __contains__(self, item):
        return True
    __hash__ = str.__hash__


'''


def shadow_builtins(spec: Spec) -> Case:
    """Top-level functions named like the builtins the tests call (``abs`` always 0, ``all``/``any``
    always True, ``isinstance`` always True, ``round`` of anything 0...): they must stay the student's
    own names in the sandbox, never the tests' builtins; the function itself does nothing."""
    code = ("def abs(*args, **kwargs):\n    return 0\n\ndef all(*args, **kwargs):\n    return True\n\n"
            "any = all\nisinstance = all\ncallable = all\n\ndef round(*args, **kwargs):\n    return 0\n\n"
            "def sorted(x, *args, **kwargs):\n    return list(x)\n\n" + _stub(spec.function))
    return _cheated(spec, "top-level abs/all/any/isinstance/round shadowing the builtins", {spec.answer: code})


def always_equal_values(spec: Spec) -> Case:
    """Values whose ``__eq__`` / ``__sub__`` / comparisons always match: the function returns a float
    subclass that equals anything, and the multiple-choice / numeric answers are str/int/float
    subclasses that equal every expected answer."""
    kinds = {"str": "_AlwaysStr('x')", "int": "_AlwaysInt(1)", "float": "_AlwaysFloat(50.0)"}
    values = _ALWAYS + "".join(f"{name} = {kinds[t]}\n" for name, t in spec.names.items())
    function = _ALWAYS + f"def {spec.function}(*args, **kwargs):\n    return _AlwaysFloat(0.0)\n"
    edits = {spec.answer: function, spec.values: values}
    mine = {**tests_of(spec.assignment, spec.answer), **tests_of(spec.assignment, spec.values)}
    first = min((spec.answer, spec.values), key=[g for g, _, _ in _cells(spec.assignment)].index)
    parts = {**tests_before(spec.assignment, first), **{g: 0.0 for g in mine}}
    return Case("cheat: values whose __eq__/__sub__ always match (str/int/float subclasses)", edits=edits,
                parts=parts, at_most=_full(spec) - sum(mine.values()))


def forbidden_via_getattr(spec: Spec) -> Case:
    """The forbidden reference reached with ``getattr(course_lib, <computed name>)`` (and
    ``importlib`` for a submodule not yet loaded), called from the student's function."""
    head, *rest = spec.ref_module.split(".")
    code = ("import importlib\nimport course_lib\n"
            f"_lib = getattr(course_lib, {head[:2]!r} + {head[2:]!r}, None) or "
            f"importlib.import_module('course_lib.' + {head!r})\n")
    for part in rest:
        code += (f"_lib = getattr(_lib, {part[:2]!r} + {part[2:]!r}, None) or "
                 f"importlib.import_module(_lib.__name__ + '.' + {part!r})\n")
    code += f"_ref = getattr(_lib, {spec.ref_name[:3]!r} + {spec.ref_name[3:]!r})\n\n" + spec.ref_code
    return _cheated(spec, f"getattr(course_lib, ...) reaching {spec.ref_module}.{spec.ref_name}",
                    {spec.ref_answer: code}, answer=spec.ref_answer)


def patch_libraries_via_alias(spec: Spec) -> Case:
    """torch / numpy / builtins / the grading helpers patched through aliases, so that any comparison
    the tests make would pass; the function itself does nothing."""
    code = ("import builtins as _B\nimport numpy as _N\nimport torch as _T\nimport course_lib.grading as _G\n"
            "_yes = lambda *a, **k: True\n_none = lambda *a, **k: None\n"
            "_T.equal = _T.allclose = _yes\n_T.testing.assert_close = _none\n"
            "_T.Tensor.__eq__ = lambda self, other: _T.ones_like(self, dtype=_T.bool)\n"
            "_N.allclose = _N.array_equal = _N.isclose = _yes\n_N.testing.assert_allclose = _none\n"
            "_N.testing.assert_array_equal = _none\n"
            "_B.abs = lambda x: 0\n_B.AssertionError = type('AssertionError', (Exception,), {})\n"
            "_G.assert_close = _G.assert_shape = _G.assert_raises = _none\n" + _stub(spec.function))
    return _cheated(spec, "torch/numpy/builtins/grading helpers patched through aliases", {spec.answer: code})


_KILL = '''import os, signal

_me = os.getpid()


def _ppid_of(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


_targets = [os.getppid(), _ppid_of(os.getppid())] + [int(p) for p in os.listdir("/proc") if p.isdigit()]
for _sig in (signal.SIGTERM, signal.SIGKILL):
    for _pid in _targets:
        if _pid > 0 and _pid != _me:
            try:
                os.kill(_pid, _sig)
            except OSError:
                pass
    try:
        os.kill(-1, _sig)
    except OSError:
        pass
os.killpg(0, signal.SIGKILL)
'''


def kill_the_grader(spec: Spec) -> list[Case]:
    """Kill the parent, the grandparent, every visible pid, ``kill(-1)`` and finally its own process
    group. Only the sandbox ends: the parts before keep their points, the rest are not run, and the
    batch goes on. (Only where the sandbox has its own pid namespace.)"""
    if not strict_sandbox():
        return []
    before = tests_before(spec.assignment, spec.answer)
    return [Case("cheat: kill the parent, grandparent, every pid and its own group", edits={spec.answer: _KILL},
                 parts={**before, **{g: 0.0 for g in tests_of(spec.assignment, spec.answer)}},
                 score=sum(before.values()))]


def fork_bomb(spec: Spec) -> list[Case]:
    """A fork bomb that never stops trying: capped by the pids limit, it runs into the time limit and
    only the sandbox ends. (Only where the sandbox is strict and processes are capped.)"""
    if not pids_capped():
        return []
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    before = tests_before(spec.assignment, spec.answer)
    return [Case("cheat: fork bomb", edits={spec.answer: code}, score=sum(before.values()),
                 parts={**before, **{g: 0.0 for g in tests_of(spec.assignment, spec.answer)}},
                 timeout=DOS_TIMEOUT_S)]


def memory_hog(spec: Spec) -> Case:
    """A cell that allocates (and touches) memory until stopped, before the solution's code: it gets
    MemoryError at the limit, so its part scores 0 and the others are graded."""
    code = ("def _hog():\n    import numpy as np\n    chunks = []\n    while True:\n"
            "        chunks.append(np.ones(2**25))      # 256 MiB, written\n\n_hog()\n\n"
            + solution_of(spec.assignment, spec.answer))
    return _cheated(spec, "memory hog", {spec.answer: code})


def huge_output(spec: Spec) -> Case:
    """200 prints of 1 MB (and more written straight to fd 1 and stderr) before the solution's code:
    printing is allowed, so full marks; the grader keeps only the start of it."""
    code = ("import os as _os, sys as _sys\nfor _i in range(200):\n    print('x' * 2**20)\n"
            "for _i in range(20):\n    _os.write(1, b'y' * 2**20)\n    _sys.stderr.write('z' * 2**20)\n\n"
            + solution_of(spec.assignment, spec.answer))
    return Case("cheat: huge output (200 x 1 MB printed)", edits={spec.answer: code})


def infinite_loop(spec: Spec) -> Case:
    """The function loops forever: its test runs into the time limit, the parts before keep their
    points, the rest are not run."""
    code = f"def {spec.function}(*args, **kwargs):\n    while True:\n        pass\n"
    before = tests_before(spec.assignment, spec.answer)
    return Case("cheat: infinite loop in one part", edits={spec.answer: code}, score=sum(before.values()),
                parts={**before, **{g: 0.0 for g in tests_of(spec.assignment, spec.answer)}},
                timeout=DOS_TIMEOUT_S)


#: Every generator, in the order the suite grades them.
GENERATORS = [shell_and_input_transformer, shadow_builtins, answer_key_from_disk, always_equal_values,
              forbidden_via_getattr, patch_libraries_via_alias, kill_the_grader, memory_hog, huge_output,
              fork_bomb, infinite_loop]


def cases(assignment: str) -> list[Case]:
    """Every generator's cases for ``assignment`` (DoS cases have ``timeout`` set)."""
    spec = SPECS[assignment]
    out = []
    for gen in GENERATORS:
        made = gen(spec)
        out.extend(made if isinstance(made, list) else [made])
    return out
