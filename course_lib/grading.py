"""Grading helpers: friendly assertions for visible tests in graded notebooks, and the
nbgrader round trip (generate the student release, autograde a solution and a blank copy).

Course layout (see ``nbgrader_config.py``): ``solutions/<a>/<a>.ipynb`` is the nbgrader
*source*, ``assignments/<a>/<a>.ipynb`` the generated *release* that students receive.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import config


# ----------------------------------------------------------------- assertions for students

def _arr(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_shape(x, shape: tuple, name: str = "result") -> None:
    """Fail with a helpful message unless ``x`` has exactly ``shape``."""
    got = tuple(_arr(x).shape)
    if got != tuple(shape):
        raise AssertionError(f"{name} should have shape {tuple(shape)}, but has shape {got}. "
                             f"Check which axis you reduce over and whether you keep the batch axis.")


def assert_close(actual, expected, name: str = "result", atol: float = 1e-6, rtol: float = 1e-6,
                 hint: str = "") -> None:
    """Fail with the largest discrepancy (and a hint) unless ``actual`` ~= ``expected``."""
    a, e = _arr(actual).astype(np.float64), _arr(expected).astype(np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{name} should have shape {e.shape}, but has shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{name} contains NaN or infinite values. {hint}".strip())
    if not np.allclose(a, e, atol=atol, rtol=rtol):
        i = np.unravel_index(np.argmax(np.abs(a - e)), a.shape) if a.ndim else ()
        raise AssertionError(f"{name} is off: at index {tuple(int(j) for j in i)} you give {float(a[i]):.6g}, "
                             f"expected {float(e[i]):.6g} (tolerance {atol}). {hint}".strip())


def assert_raises(exc_type, fn, *args, **kwargs) -> None:
    """Fail unless ``fn(*args, **kwargs)`` raises ``exc_type`` (a test helper that does not rely on
    ``raise AssertionError`` inside a ``try``, whose name an answer cell could have rebound)."""
    try:
        fn(*args, **kwargs)
    except exc_type:
        return
    except Exception as err:  # noqa: BLE001 - the message says what was raised instead
        raise AssertionError(f"expected {exc_type.__name__}, but {type(err).__name__} was raised: {err}") from None
    raise AssertionError(f"expected {exc_type.__name__}, but nothing was raised")


# ----------------------------------------------------------------- own-code check

# Import machinery and introspection that can reach any module by a computed name, or run text as
# code: an answer that uses them cannot be checked, so it is refused outright.
_DYNAMIC_NAMES = {"exec", "eval", "compile", "__import__", "globals", "vars", "__builtins__", "breakpoint"}
_DYNAMIC_MODULES = ("importlib", "inspect", "builtins", "ctypes", "gc", "IPython", "ipykernel", "runpy", "pickle",
                    "marshal", "types", "dill", "cloudpickle")
_DYNAMIC_ATTRS = {"__globals__", "__code__", "__builtins__", "__subclasses__", "f_globals", "f_locals",
                  "getsource", "import_module", "__import__"}


_MODULE_PATH = re.compile(r"[\w.]*course_lib[\w.]*")     # "course_lib.metrics", "course_lib." + ...


def _library_dirs() -> tuple[str, ...]:
    import sysconfig
    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.add(os.path.dirname(os.path.abspath(__file__)))            # course_lib itself
    dirs.add(os.path.dirname(os.__file__))
    return tuple(os.path.realpath(d) + os.sep for d in dirs)


def _is_user_code(code) -> bool:
    """True for code written by the student: a notebook cell or a file outside the libraries."""
    f = code.co_filename
    if f.startswith("<"):
        return f.startswith("<ipython-input")
    return not os.path.realpath(f).startswith(_library_dirs())


def _resolve_forbidden(forbidden) -> tuple[tuple[str, ...], dict[int, str]]:
    """Split ``forbidden`` into module prefixes and single objects (``"numpy.linalg.inv"``)."""
    import importlib
    if isinstance(forbidden, str):
        forbidden = (forbidden,)
    modules, objects = [], {}
    for f in forbidden:
        try:
            importlib.import_module(f)
            modules.append(f)
            continue
        except ImportError:
            pass
        mod, _, attr = f.rpartition(".")
        obj = None
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError, ValueError):
            pass
        if obj is None:
            modules.append(f)                      # unknown: treat as a module name
        else:
            objects[id(obj)] = f
    return tuple(modules), objects


class _Reach:
    """Walks everything a function can reach and raises at the first forbidden thing."""

    def __init__(self, label, forbidden):
        self.label = label
        self.modules, self.objects = _resolve_forbidden(forbidden)
        self.seen: set[int] = set()
        self.reached_modules: list = []

    def fail(self, what, where):
        raise AssertionError(f"{self.label} {what} (reached through {where}): write this part yourself, in the "
                             f"notebook, instead of using the course library's reference or hiding a call to it")

    def bad_module(self, name) -> str | None:
        name = name or ""
        for f in self.modules:
            if name == f or name.startswith(f + "."):
                return f
        return None

    def check_module_name(self, name, where):
        top = (name or "").split(".")[0]
        if top in _DYNAMIC_MODULES:
            self.fail(f"uses the module {name!r}, which can load or rewrite code by name", where)
        hit = self.bad_module(name)
        if hit:
            self.fail(f"uses {name!r} from {hit}", where)

    def visit(self, obj, where: str, depth: int = 0):
        if depth > 60 or obj is None or isinstance(obj, (bool, int, float, complex, bytes)):
            return
        if isinstance(obj, str):
            if _MODULE_PATH.fullmatch(obj.strip()):
                self.fail(f"holds the string {obj[:60]!r}, a module path into the course library", where)
            return
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if id(obj) in self.objects:
            self.fail(f"uses {self.objects[id(obj)]}", where)
        if isinstance(obj, types.ModuleType):
            self.check_module_name(obj.__name__, where)
            self.reached_modules.append(obj)
            f = getattr(obj, "__file__", None)
            if f and not os.path.realpath(f).startswith(_library_dirs()):
                self.fail(f"imports {obj.__name__!r}, a module shipped next to the notebook", where)
            return
        if isinstance(obj, functools.partial):
            self.visit(obj.func, where + " (partial)", depth + 1)
            for a in obj.args:
                self.visit(a, where + " (partial argument)", depth + 1)
            for v in obj.keywords.values():
                self.visit(v, where + " (partial argument)", depth + 1)
            return
        if isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            self.visit(obj.__func__, where, depth + 1)
            self.visit(getattr(obj, "__self__", None), where + " (bound object)", depth + 1)
            return
        if isinstance(obj, (list, tuple, set, frozenset)):
            for i, x in enumerate(list(obj)[:2000]):
                self.visit(x, f"{where}[{i}]", depth + 1)
            return
        if isinstance(obj, dict):
            for i, (k, v) in enumerate(list(obj.items())[:2000]):
                self.visit(k, f"{where} (dict key)", depth + 1)
                self.visit(v, f"{where}[{k!r}]", depth + 1)
            return
        if isinstance(obj, type):
            hit = self.bad_module(getattr(obj, "__module__", ""))
            if hit:
                self.fail(f"uses the class {obj.__module__}.{obj.__qualname__}", where)
            if obj.__module__ == "__main__" or any(isinstance(v, types.FunctionType) and _is_user_code(v.__code__)
                                                   for v in vars(obj).values()):
                for k, v in list(vars(obj).items()):
                    if not (k.startswith("__") and k.endswith("__")) or k in ("__init__", "__call__", "__new__"):
                        self.visit(v, f"{obj.__qualname__}.{k}", depth + 1)
            return
        if isinstance(obj, types.FunctionType):
            hit = self.bad_module(getattr(obj, "__module__", ""))
            if hit:
                self.fail(f"uses {obj.__module__}.{obj.__qualname__}", where)
            code = obj.__code__
            if code.co_filename.startswith("<") and not code.co_filename.startswith("<ipython-input") \
                    and "__create_fn__" not in obj.__qualname__ and getattr(obj, "__module__", None) in ("__main__", None):
                self.fail(f"runs code built from text ({code.co_filename})", where)
            if not _is_user_code(code):
                return                                     # a library function, allowed: not followed
            name = f"{obj.__qualname__}"
            for d in obj.__defaults__ or ():
                self.visit(d, f"a default argument of {name}", depth + 1)
            for d in (obj.__kwdefaults__ or {}).values():
                self.visit(d, f"a default argument of {name}", depth + 1)
            env = dict(obj.__globals__)
            for var, cell in zip(code.co_freevars, obj.__closure__ or ()):
                try:
                    env[var] = cell.cell_contents
                except ValueError:                          # an empty cell
                    pass
            self.visit_code(code, env, name, depth)
            return
        if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            hit = self.bad_module(getattr(obj, "__module__", "") or "")
            if hit:
                self.fail(f"uses {obj.__module__}.{obj.__name__}", where)
            owner = getattr(obj, "__self__", None)
            if isinstance(owner, types.ModuleType) and owner.__name__ != "builtins":
                self.visit(owner, where, depth + 1)
            if getattr(obj, "__name__", "") in _DYNAMIC_NAMES and getattr(obj, "__module__", "") == "builtins":
                self.fail(f"calls {obj.__name__}()", where)
            return
        # any other object: its class decides (an instance of a reference class, a callable object)
        cls = type(obj)
        hit = self.bad_module(getattr(cls, "__module__", ""))
        if hit:
            self.fail(f"holds an object of {cls.__module__}.{cls.__qualname__}", where)
        if getattr(cls, "__module__", "") == "__main__":
            self.visit(cls, where, depth + 1)
            d = getattr(obj, "__dict__", None)
            if isinstance(d, dict):
                self.visit(d, where, depth + 1)

    def visit_code(self, code, env, name, depth):
        import builtins
        import dis

        for const in code.co_consts:
            if isinstance(const, str) and _MODULE_PATH.fullmatch(const.strip()):
                self.fail(f"holds the string {const[:60]!r}, a module path into the course library", name)
        used_names = set()                          # attribute names, wherever they are looked up
        chain_obj, chain_ok = None, False
        for ins in dis.get_instructions(code):
            op, arg = ins.opname, ins.argval
            if op in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "IMPORT_FROM") and isinstance(arg, str):
                used_names.add(arg)
            if op in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_GLOBALS"):
                var = arg if isinstance(arg, str) else ins.argrepr.replace("NULL + ", "").strip()
                if var in _DYNAMIC_NAMES:
                    self.fail(f"calls {var}()", name)
                if var in env:
                    chain_obj, chain_ok = env[var], True
                elif hasattr(builtins, var):
                    chain_obj, chain_ok = getattr(builtins, var), True
                else:
                    chain_obj, chain_ok = None, False
                if chain_ok:
                    self.visit(chain_obj, f"{name} -> {var}", depth + 1)
            elif op in ("LOAD_ATTR", "LOAD_METHOD") and chain_ok:
                attr = arg if isinstance(arg, str) else str(arg)
                if attr in _DYNAMIC_ATTRS or (attr == "modules" and chain_obj is sys):
                    self.fail(f"uses .{attr}", name)
                if isinstance(chain_obj, (types.ModuleType, type)):
                    chain_obj = getattr(chain_obj, attr, None)
                    self.visit(chain_obj, f"{name} -> .{attr}", depth + 1)
                else:
                    chain_ok = False
            elif op == "IMPORT_NAME":
                self.check_module_name(str(arg), name)
                mod = sys.modules.get(str(arg))
                if mod is not None:
                    self.visit(mod, name, depth + 1)
                chain_obj, chain_ok = mod, mod is not None
            elif op == "IMPORT_FROM" and chain_ok:
                self.check_module_name(f"{getattr(chain_obj, '__name__', '')}.{arg}", name)
                self.visit(getattr(chain_obj, str(arg), None), f"{name} -> {arg}", depth + 1)
            else:
                if op in ("LOAD_ATTR", "LOAD_METHOD") and isinstance(arg, str) and arg in _DYNAMIC_ATTRS:
                    self.fail(f"uses .{arg}", name)
                chain_ok = False
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.visit_code(const, env, f"{name}.{const.co_name}", depth + 1)
        # a name used anywhere in the function that a reached module defines (``m = np.linalg; m.inv``)
        for mod in list(self.reached_modules):
            for w in used_names:
                val = getattr(mod, w, None) if not w.startswith("__") else None
                if val is not None and not isinstance(val, types.ModuleType):
                    if id(val) in self.objects:
                        self.fail(f"uses {self.objects[id(val)]}", f"{name} -> .{w}")
                    hit = self.bad_module(getattr(val, "__module__", "") or "")
                    if hit and callable(val):
                        self.fail(f"uses {hit}.{w}", f"{name} -> .{w}")


def assert_own_code(fn, forbidden: tuple[str, ...], name: str | None = None) -> None:
    """Fail unless ``fn`` does its work itself.

    ``forbidden`` names modules (``"course_lib.metrics"``: anything defined in it or below) and
    single functions (``"numpy.linalg.inv"``). The check follows what ``fn`` can actually reach:
    the functions it calls (recursively, through globals, closures, default arguments,
    ``functools.partial``, bound methods, classes and the contents of lists and dicts), attribute
    chains (``np.linalg.inv``), imports inside the function, and a function object copied whole
    (``f = library.fn``). Code built from text (``exec``/``eval``), dynamic imports (``importlib``,
    ``__import__``, ``sys.modules``), source introspection (``inspect``) and the string
    ``"course_lib"`` in the code are refused outright, as are modules shipped next to the notebook.
    Hidden tests call it; library functions that are allowed are not followed into.
    """
    label = name or getattr(fn, "__name__", None) or "your function"
    if not callable(fn):
        raise AssertionError(f"{label} must be a function defined in the notebook")
    _Reach(label, forbidden).visit(fn, label)


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


# ----------------------------------------------------------------- the nbgrader round trip

def assignments(root: Path | None = None) -> list[str]:
    """Names of the graded assignments (folders of ``solutions/``)."""
    root = Path(root or config.ROOT)
    return sorted(p.name for p in (root / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _env(fast: bool = True) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # nbgrader calls alembic
    env["COURSE_FAST"] = "1" if fast else "0"
    env.setdefault("COURSE_QUIET", "1")
    return env


def _nbgrader(args: list[str], cwd: Path, fast: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(fast), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _scratch_course(root: Path, names: list[str]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="course-grade-"))
    shutil.copy(root / "nbgrader_config.py", tmp / "nbgrader_config.py")
    for a in names:
        shutil.copytree(root / "solutions" / a, tmp / "solutions" / a,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return tmp


def generate_release(name: str, root: Path | None = None, out: Path | None = None) -> Path:
    """Generate the student version of ``name``. By default in place (``assignments/<name>``);
    with ``out`` in a scratch course whose release folder is copied to ``out``."""
    root = Path(root or config.ROOT)
    if out is None:
        _nbgrader(["generate_assignment", name, "--force"], root)
        return root / "assignments" / name
    tmp = _scratch_course(root, [name])
    try:
        _nbgrader(["generate_assignment", name, "--force"], tmp)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp / "assignments" / name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _normalised(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return {"cells": [{k: c.get(k) for k in ("cell_type", "source", "metadata")} for c in nb["cells"]],
            "kernelspec": nb.get("metadata", {}).get("kernelspec")}


def release_is_current(name: str, root: Path | None = None) -> list[str]:
    """Regenerate ``name`` in a scratch folder and compare with the committed release.

    Returns a list of differences (empty when the committed ``assignments/<name>`` is current).
    """
    root = Path(root or config.ROOT)
    with tempfile.TemporaryDirectory() as d:
        fresh = generate_release(name, root, Path(d) / name)
        committed = root / "assignments" / name
        problems = []
        fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        old_files = {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()} if committed.exists() else set()
        for f in sorted(fresh_files ^ old_files):
            problems.append(f"{f}: only in the {'fresh' if f in fresh_files else 'committed'} release")
        for f in sorted(fresh_files & old_files):
            a, b = fresh / f, committed / f
            same = _normalised(a) == _normalised(b) if f.suffix == ".ipynb" else a.read_bytes() == b.read_bytes()
            if not same:
                problems.append(f"{f}: differs from a fresh `nbgrader generate_assignment {name}`")
    return problems


@dataclass
class GradeReport:
    """Score of one submission of one assignment.

    ``parts``: points of every graded cell by its ``grade_id``; ``problem``: why a submission
    could not be (fully) graded, e.g. a missing or unreadable notebook (it then scores 0)."""

    assignment: str
    student: str
    score: float
    max_score: float
    parts: dict = field(default_factory=dict)
    problem: str = ""


def autograde(name: str, submissions: dict[str, Path], root: Path | None = None,
              fast: bool = True) -> dict[str, GradeReport]:
    """Autograde many submissions of one assignment as nbgrader would, in ONE scratch course and
    one ``nbgrader autograde`` call.

    ``submissions`` maps a student id to a notebook (e.g. ``{"solution": solutions/a/a.ipynb,
    "blank": assignments/a/a.ipynb}``), copied under the assignment's notebook name, or to a
    folder (a student's whole submission, copied as it is: extra files, a renamed notebook).
    Never raises for one student's broken, missing or renamed notebook: that submission scores 0
    and its report says why in ``problem``.
    """
    from nbgrader.api import Gradebook, MissingEntry

    root = Path(root or config.ROOT)
    tmp = _scratch_course(root, [name])
    try:
        _nbgrader(["generate_assignment", name, "--force"], tmp)
        nb_name = next((tmp / "solutions" / name).glob("*.ipynb")).name
        for student, nb in submissions.items():
            dest = tmp / "build" / "nbgrader" / "submitted" / student / name
            nb = Path(nb)
            if nb.is_dir():
                shutil.copytree(nb, dest)
            else:
                shutil.copytree(tmp / "assignments" / name, dest)  # data files travel with the release
                shutil.copy(nb, dest / nb_name)
        cmd = [sys.executable, "-m", "nbgrader", "autograde", name, "--force"]
        proc = subprocess.run(cmd, cwd=tmp, env=_env(fast), capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        db = "sqlite:///" + str(tmp / "build" / "nbgrader" / "gradebook.db")
        out = {}
        with Gradebook(db) as gb:
            max_score = float(gb.find_assignment(name).max_score)
            for student in submissions:
                done = tmp / "build" / "nbgrader" / "autograded" / student / name / nb_name
                lines = [ln.strip() for ln in log.splitlines() if f"/{student}/" in ln or f"'{student}'" in ln
                         or f" {student} " in ln]
                problem = "; ".join(ln for ln in lines if "ERROR" in ln or "No submitted file" in ln
                                    or "Skipping unknown" in ln)[:1500]
                try:
                    sub = gb.find_submission(name, student)
                except MissingEntry:
                    out[student] = GradeReport(name, student, 0.0, max_score, {}, problem or "not graded")
                    continue
                parts = {}
                for snb in sub.notebooks:
                    for g in snb.grades:
                        parts[g.name] = float(g.score)
                if not done.exists():
                    problem = problem or f"no notebook named {nb_name} was graded"
                    out[student] = GradeReport(name, student, 0.0, max_score, {k: 0.0 for k in parts}, problem)
                else:
                    out[student] = GradeReport(name, student, float(sub.score), float(sub.max_score), parts, problem)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_round_trip(name: str, root: Path | None = None) -> dict[str, GradeReport]:
    """Solution must score full marks, blank release zero. Returns the two reports."""
    root = Path(root or config.ROOT)
    sol = next((root / "solutions" / name).glob("*.ipynb"))
    blank = root / "assignments" / name / sol.name
    if not blank.exists():
        raise FileNotFoundError(f"{blank} is missing: run `nbgrader generate_assignment {name} --force`")
    return autograde(name, {"solution": sol, "blank": blank}, root)
