"""The own-code check of graded notebooks: ``assert_own_code`` follows what a student's function
actually reaches (called functions, closures, default arguments, partials, containers, imports,
copied function objects) and refuses the course library's reference implementations."""
from __future__ import annotations

import functools
import os
import re
import sys
import types


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
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # course_lib itself
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


