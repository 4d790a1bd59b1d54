"""Integrity of autograding: the state of the kernel checked from test cells (``check_kernel``),
the static scan of answer cells (``scan_cell``, ``protected_names``) and the nbgrader
preprocessors around execution (``autograde_preprocessors``, used by ``nbgrader_config.py``)."""
from __future__ import annotations

import os
import re
import shutil
import sys

from .owncode import _DYNAMIC_ATTRS, _DYNAMIC_MODULES, _is_user_code


# ----------------------------------------------------------------- the state of the kernel

_REAL_EXCEPTIONS: dict[str, type] = {}


def _real_builtin_classes() -> dict[str, type]:
    """The interpreter's own exception classes and basic types, found from the class hierarchy
    (so that a rebinding of ``builtins.AssertionError`` cannot hide them)."""
    if not _REAL_EXCEPTIONS:
        stack = [BaseException]
        while stack:
            c = stack.pop()
            if c.__module__ == "builtins":
                _REAL_EXCEPTIONS.setdefault(c.__name__, c)
            stack.extend(type.__subclasses__(c))
    return _REAL_EXCEPTIONS


def check_kernel(namespace: dict | None = None) -> None:
    """Start of every test cell: reset what an answer cell may have changed in the kernel, and
    fail (this test scores 0) if the grading machinery was tampered with.

    Resets the display of expression values (``ast_node_interactivity``) to IPython's default
    (students meet ``"all"`` as a Jupyter tip: harmless, it only stops displaying values). Fails
    if input or AST transformers, custom exception handlers or a replaced ``showtraceback`` are
    installed, if a built-in exception class is rebound (in ``builtins`` or as a notebook global),
    or if a function of the course library was replaced by notebook code; the tampering is undone
    for the cells that follow.
    """
    import builtins
    problems = []
    try:
        from IPython import get_ipython
        ip = get_ipython()
    except ImportError:
        ip = None
    if ip is not None:
        ip.ast_node_interactivity = "last_expr"
        if getattr(ip, "ast_transformers", None):
            problems.append("an AST transformer is installed")
            ip.ast_transformers[:] = []
        if getattr(ip, "input_transformers_post", None):
            problems.append("an input transformer is installed")
            ip.input_transformers_post[:] = []
        try:
            default = type(ip.input_transformer_manager)().cleanup_transforms
            cur = ip.input_transformers_cleanup
            sig = lambda t: getattr(t, "__qualname__", type(t).__qualname__)     # noqa: E731
            if [sig(t) for t in cur] != [sig(t) for t in default]:
                problems.append("an input transformer is installed")
                cur[:] = default
        except Exception:  # noqa: BLE001 - an IPython without these attributes
            pass
        if getattr(ip, "custom_exceptions", ()):
            problems.append("a custom exception handler is installed")
            ip.set_custom_exc((), None)
        for hook in ("showtraceback", "showsyntaxerror", "run_cell", "run_ast_nodes", "run_code"):
            if hook in vars(ip):
                problems.append(f"get_ipython().{hook} was replaced")
                delattr(ip, hook)
    ns = namespace if namespace is not None else sys.modules["__main__"].__dict__
    for nm, real in _real_builtin_classes().items():
        if vars(builtins).get(nm, real) is not real:
            problems.append(f"builtins.{nm} was rebound")
            setattr(builtins, nm, real)
        if nm in ns and ns[nm] is not real and isinstance(ns.get(nm), type):
            problems.append(f"the name {nm} was rebound in the notebook")
            del ns[nm]
    for modname, mod in list(sys.modules.items()):
        if not (modname == "course_lib" or modname.startswith("course_lib.")) or mod is None:
            continue
        for attr, val in list(vars(mod).items()):
            code = getattr(val, "__code__", None) or getattr(getattr(val, "__func__", None), "__code__", None)
            if code is not None and _is_user_code(code) and not attr.startswith("__"):
                problems.append(f"{modname}.{attr} was replaced by notebook code")
    if problems:
        raise AssertionError("the grading environment was tampered with by an answer cell: "
                             + "; ".join(sorted(set(problems))) + ". This test scores 0.")


# ----------------------------------------------------------------- nbgrader preprocessors

# What answer cells may not do (stated in every assignment's instructions). A finding zeroes the
# test cells after the answer cell (their results can no longer be trusted).
_FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "globals", "vars", "setattr", "delattr",
                    "breakpoint", "get_ipython"}
_FORBIDDEN_NAMES = {"__builtins__", "In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii", "exit", "quit"}
_FORBIDDEN_IMPORTS = _DYNAMIC_MODULES + ("sys", "os", "subprocess", "shutil", "threading", "multiprocessing",
                                         "signal", "atexit", "faulthandler", "course_lib.grading")
_FORBIDDEN_ATTRS = _DYNAMIC_ATTRS | {"ast_transformers", "input_transformers_cleanup", "input_transformers_post",
                                     "set_custom_exc", "custom_exceptions", "showtraceback", "excepthook",
                                     "displayhook", "settrace", "setprofile", "__closure__", "__defaults__",
                                     "__kwdefaults__", "__dict__", "__class__", "__bases__", "__mro__",
                                     "user_ns", "events", "run_cell", "run_code", "system", "getoutput",
                                     "write_text", "write_bytes", "__setattr__", "__delattr__", "f_back"}
_PROTECTED_BUILTINS = {"print", "isinstance", "issubclass", "abs", "all", "any", "len", "range", "sorted", "set",
                       "sum", "float", "int", "bool", "list", "dict", "tuple", "zip", "type", "max", "min", "round",
                       "callable", "getattr", "hasattr", "iter", "next", "enumerate", "map", "filter", "object",
                       "repr", "str", "id", "hash", "super", "open"}
_ALLOWED_MAGICS = {"matplotlib", "time", "timeit"}


def _interactivity_only(node) -> bool:
    """``get_ipython().ast_node_interactivity = ...`` or ``%config ...ast_node_interactivity...``:
    a common tip, neutralised by the test cells (values are no longer displayed there)."""
    import ast
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        t = node.targets[0]
        return (isinstance(t, ast.Attribute) and t.attr == "ast_node_interactivity"
                and isinstance(t.value, ast.Call) and isinstance(t.value.func, ast.Name)
                and t.value.func.id == "get_ipython" and isinstance(node.value, ast.Constant))
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        c = node.value
        return (isinstance(c.func, ast.Attribute) and c.func.attr == "run_line_magic"
                and isinstance(c.func.value, ast.Call) and isinstance(c.func.value.func, ast.Name)
                and c.func.value.func.id == "get_ipython" and len(c.args) == 2
                and all(isinstance(a, ast.Constant) for a in c.args) and c.args[0].value == "config"
                and re.fullmatch(r"\s*\w*\.?ast_node_interactivity\s*=\s*['\"]?\w+['\"]?\s*", c.args[1].value or ""))
    return False


def _magic_call(node):
    """(kind, name, body) of ``get_ipython().run_line_magic / run_cell_magic / system`` calls."""
    import ast
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "get_ipython"):
        args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
        return node.func.attr, (args + [None, None, None])[:3]
    return None


def scan_cell(source: str, protected: set[str]) -> list[str]:
    """Static check of one answer cell (or a cell the student added): what it does that could
    change how the tests run. Returns findings, empty when the cell is clean.

    ``protected``: names defined by the given (locked) cells that the tests rely on; rebinding
    them, assigning their attributes or items, or changing them in place is a finding.
    """
    import ast
    from IPython.core.inputtransformer2 import TransformerManager
    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except Exception:  # noqa: BLE001 - a syntax error fails on its own when the cell runs
        return []
    builtin_names = set(dir(__import__("builtins")))
    shadowable = (_PROTECTED_BUILTINS | set(_real_builtin_classes())) & builtin_names
    found: list[str] = []
    module_names = {"np", "torch", "nn", "F", "math", "config", "data", "device", "models", "train",
                    "course_lib", "grading", "copy", "functional_call", "SVC"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            module_names |= {(a.asname or a.name.split(".")[0]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("course_lib", "numpy", "torch", "scipy", "sklearn"):
            module_names |= {(a.asname or a.name) for a in node.names}
    tree.body = [n for n in tree.body if not _interactivity_only(n)]   # the harmless tip
    exempt: set[int] = set()

    def base_name(n):
        while isinstance(n, (ast.Attribute, ast.Subscript, ast.Call)):
            n = n.func if isinstance(n, ast.Call) else n.value
        return n.id if isinstance(n, ast.Name) else None

    def locals_of(fn):
        a = fn.args
        names = {x.arg for x in a.args + a.kwonlyargs + getattr(a, "posonlyargs", [])}
        names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
        declared = set()
        stack = list(fn.body) if not isinstance(fn, ast.Lambda) else [fn.body]
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(n.name)
                continue
            if isinstance(n, ast.Lambda):
                continue
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                declared |= set(n.names)
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                names.add(n.id)
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                names |= {(x.asname or x.name.split(".")[0]) for x in n.names}
            stack.extend(ast.iter_child_nodes(n))
        return names - declared

    def visit(node, scopes):
        if id(node) in exempt:
            return
        local = set().union(*scopes) if scopes else set()
        top = not scopes
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in _FORBIDDEN_IMPORTS or m in _FORBIDDEN_IMPORTS:
                    found.append(f"imports {m!r}")
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                found.append(f"uses `from {node.module} import *`")
            if top:
                for a in node.names:
                    nm = a.asname or a.name.split(".")[0]
                    if nm in protected:
                        found.append(f"redefines `{nm}`, which the given cells define and the tests use")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and top:
            if node.name in protected:
                found.append(f"redefines `{node.name}`, which the given cells define and the tests use")
            elif node.name in shadowable:
                found.append(f"rebinds the built-in `{node.name}`")
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)) and node.id not in local:
                if node.id in protected:
                    found.append(f"redefines `{node.id}`, which the given cells define and the tests use")
                elif node.id in shadowable and top:
                    found.append(f"rebinds the built-in `{node.id}`")
            elif isinstance(node.ctx, ast.Load) and node.id not in local and \
                    (node.id in _FORBIDDEN_CALLS or node.id in _FORBIDDEN_NAMES):
                found.append(f"uses `{node.id}`")
        elif isinstance(node, ast.Global):
            for nm in node.names:
                if nm in protected or nm in shadowable:
                    found.append(f"declares `global {nm}`, a name the given cells or Python define")
        elif isinstance(node, ast.Call):
            mc = _magic_call(node)
            if mc:
                exempt.add(id(node.func.value.func))
                kind, (a0, a1, a2) = mc
                if kind == "run_line_magic" and a0 in _ALLOWED_MAGICS and isinstance(a1, str):
                    found.extend(scan_cell(a1, protected))
                elif kind == "run_cell_magic" and a0 in _ALLOWED_MAGICS and isinstance(a2, str):
                    found.extend(scan_cell(a2, protected))
                elif kind == "run_line_magic" and a0 == "config" and isinstance(a1, str) \
                        and "ast_node_interactivity" in a1:
                    pass
                else:
                    found.append(f"runs the IPython command {kind}({a0!r})")
            f = node.func
            if isinstance(f, ast.Name) and f.id == "open":
                mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords
                                                                      if k.arg == "mode"), None)
                if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                                             and not set(mode.value) & set("wax+")):
                    found.append("opens a file for writing")
            if isinstance(f, ast.Attribute) and f.attr.endswith("_") and not f.attr.startswith("_"):
                b = base_name(f.value)
                if b in protected and b not in local:
                    found.append(f"changes `{ast.unparse(f.value)}` in place, data of a given cell")
        elif isinstance(node, ast.Attribute):
            if node.attr in _FORBIDDEN_ATTRS or (node.attr == "modules" and base_name(node) == "sys"):
                found.append(f"uses `.{node.attr}`")
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                b = base_name(node)
                if b not in local and (b in module_names or b in protected):
                    found.append(f"assigns `{ast.unparse(node)}`, part of a module or of a given cell")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            b = base_name(node)
            if b in protected and b not in local:
                found.append(f"modifies `{ast.unparse(node)}`, data of a given cell")
        inner = scopes
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = scopes + [locals_of(node)]
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    for stmt in tree.body:
        visit(stmt, [])
    return list(dict.fromkeys(found))


def _global_reads(tree) -> set[str]:
    """Global names a module-level piece of code reads without binding them itself (its own
    functions' free globals included), from Python's symbol tables."""
    import ast
    import symtable
    try:
        top = symtable.symtable(ast.unparse(tree), "<cell>", "exec")
    except SyntaxError:
        return set()
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    reads: set[str] = set()

    def walk(t):
        for sym in t.get_symbols():
            if sym.is_referenced() and (t.get_type() == "module" or sym.is_global()):
                reads.add(sym.get_name())
        for child in t.get_children():
            walk(child)
    walk(top)
    return reads - bound


def protected_names(cells) -> set[str]:
    """Names bound at module level by the locked code cells that the test cells read, directly or
    through the given functions they call. ``cells``: nbformat cells of the (sanitised) notebook."""
    import ast

    def meta(c):
        return c.get("metadata", {}).get("nbgrader", {})

    defined: dict[str, set[str]] = {}           # name -> global names its definition reads
    tests_read: set[str] = set()
    for c in cells:
        if c.get("cell_type") != "code":
            continue
        m = meta(c)
        src = c.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        try:
            from IPython.core.inputtransformer2 import TransformerManager
            tree = ast.parse(TransformerManager().transform_cell(src))
        except Exception:  # noqa: BLE001
            continue
        if m.get("grade") and not m.get("solution"):
            tests_read |= _global_reads(tree)                # names the test cell does not define itself
        elif m.get("locked") and not m.get("solution"):
            for node in tree.body:
                names = []
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                    names = [node.name]
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [(a.asname or a.name.split(".")[0]) for a in node.names]
                else:
                    names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
                reads = set()                  # a given function reads its free globals when it is called
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                    reads = _global_reads(ast.Module(body=[node], type_ignores=[]))
                for nm in names:
                    defined.setdefault(nm, set()).update(reads)
    out: set[str] = set()
    todo = [n for n in tests_read if n in defined]
    while todo:
        n = todo.pop()
        if n in out:
            continue
        out.add(n)
        todo += [r for r in defined.get(n, ()) if r in defined and r not in out]
    return out


SENTINEL = "course-grading-complete"


def autograde_preprocessors() -> list:
    """nbgrader's autograde preprocessors with the course's two integrity steps around ``Execute``
    (used by ``nbgrader_config.py``):

    * ``IntegrityScan`` (before execution): statically checks every answer cell and every cell the
      student added (:func:`scan_cell`), moves Python modules shipped with the submission out of
      the way (they could shadow ``course_lib`` or the student's imports), and appends to every
      test cell a line that prints a fresh random token: a test cell passes only if it ran to its
      end, whatever an answer cell did to error display or to the cell's source.
    * ``ScoreTests`` (after execution): restores the test cells' source; a test cell scores its
      points only if it printed the token, raised nothing, and no tampering was found in a cell
      above it; otherwise its outputs end with an error that says why. Displayed values (the
      tests never display any) and stderr warnings are dropped from passing test cells, so
      neither can change a score.
    """
    import secrets

    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, Execute, LimitOutput,
                                        NbGraderPreprocessor, SaveAutoGrades)

    def meta(cell):
        return cell.metadata.get("nbgrader", {})

    def is_test(cell):
        return cell.cell_type == "code" and meta(cell).get("grade") and not meta(cell).get("solution")

    class IntegrityScan(NbGraderPreprocessor):
        def preprocess(self, nb, resources):
            token = secrets.token_hex(16)
            path = resources.get("metadata", {}).get("path") or "."
            protected = protected_names(nb.cells)
            findings: list[tuple[int, str, str]] = []
            # Python modules shipped with the submission: moved aside so that they cannot shadow anything.
            for entry in sorted(os.listdir(path)):
                full = os.path.join(path, entry)
                is_pkg = os.path.isdir(full) and any(f.endswith(".py") for _, _, fs in os.walk(full) for f in fs)
                if entry.endswith((".py", ".pyc", ".pth", ".so")) or is_pkg:
                    shutil.move(full, os.path.join(path, entry + ".not-imported"))
                    findings.append((-1, "the submission", f"ships the Python module {entry!r} (answers live in "
                                                           f"the notebook; it was not made importable)"))
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                m = meta(cell)
                if is_test(cell) or (m.get("locked") and not m.get("solution")):
                    continue
                label = m.get("grade_id") or f"cell {i + 1} (added by you)"
                for f in scan_cell(cell.source, protected):
                    findings.append((i, label, f))
            resources["course_integrity"] = {"token": token, "findings": findings, "sources": {}}
            for i, cell in enumerate(nb.cells):
                if is_test(cell):
                    resources["course_integrity"]["sources"][i] = cell.source
                    cell.source = cell.source + f'\nprint("{SENTINEL} {token}")'
            return nb, resources

    class ScoreTests(NbGraderPreprocessor):
        def preprocess(self, nb, resources):
            info = resources.get("course_integrity", {"token": None, "findings": [], "sources": {}})
            token, findings = info["token"], info["findings"]
            for i, cell in enumerate(nb.cells):
                if i in info["sources"]:
                    cell.source = info["sources"][i]
                if not is_test(cell):
                    continue
                outs, done, errors = [], False, []
                for o in cell.get("outputs", []):
                    if o.output_type == "stream" and o.name == "stdout" and token and token in o.text:
                        done = True
                        text = "\n".join(ln for ln in o.text.split("\n") if token not in ln)
                        if text.strip():
                            outs.append(new_output("stream", name="stdout", text=text))
                    elif o.output_type == "error":
                        errors.append(o)
                    elif o.output_type == "stream" and o.name == "stderr":
                        continue                                   # warnings never cost points
                    elif o.output_type in ("execute_result", "display_data"):
                        continue                                   # tests display nothing
                    else:
                        outs.append(o)
                above = [f"{label}: {what}" for j, label, what in findings if j < i]
                reason = None
                if above:
                    reason = ("IntegrityError", "an answer cell above changes how the tests run, so this test "
                              "scores 0: " + "; ".join(above[:4]))
                elif not errors and not done:
                    reason = ("IncompleteTest", "this test cell did not run to its end (something in the notebook "
                              "stopped it or hid its result), so it scores 0")
                cell.outputs = outs + errors
                if reason:
                    cell.outputs.append(new_output("error", ename=reason[0], evalue=reason[1],
                                                   traceback=[f"{reason[0]}: {reason[1]}"]))
            return nb, resources

    return [IntegrityScan, Execute, ScoreTests, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
            AssignLatePenalties, CheckCellMetadata]


