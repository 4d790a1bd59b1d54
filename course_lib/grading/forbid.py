"""Reference implementations an assignment asks students to write do not exist in the sandbox.

``install(["course_lib.metrics", "course_lib.train.accuracy"])`` (run inside the sandbox before the
first answer cell) replaces the *code* of every function the names cover (a module covers every
function and method defined in it and in its submodules) by code that raises
``NotImplementedError``. The function objects stay the same, so every way of reaching them (an
alias, ``getattr`` with a computed name, a default argument, a copy taken earlier) reaches the
stub. The trusted side never relies on this: it is what makes copying the library pointless, not
what makes a test pass.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import types

_MESSAGE = ("{name} is not available while your notebook is graded: this assignment asks you to write "
            "what it does yourself.")


def _stub(name: str, fn: types.FunctionType):
    ns: dict = {}
    exec(f"def _stub(*args, **kwargs):\n    raise NotImplementedError({_MESSAGE.format(name=name)!r})", ns)  # noqa: S102
    return ns["_stub"].__code__


def _functions(obj, prefix: str, seen: set):
    """(dotted name, function) of every Python function reachable as ``obj``'s own attributes."""
    if isinstance(obj, types.FunctionType):
        yield prefix, obj
        return
    if isinstance(obj, type):
        for k, v in vars(obj).items():
            v = getattr(v, "__func__", v)
            if isinstance(v, types.FunctionType) and id(v) not in seen:
                seen.add(id(v))
                yield f"{prefix}.{k}", v


def _module_functions(mod: types.ModuleType, seen: set):
    name = mod.__name__
    subs = [mod]
    if hasattr(mod, "__path__"):
        for info in pkgutil.walk_packages(mod.__path__, name + "."):
            try:
                subs.append(importlib.import_module(info.name))
            except Exception:  # noqa: BLE001 - a submodule that cannot load cannot leak either
                continue
    for m in subs:
        for k, v in list(vars(m).items()):
            if getattr(v, "__module__", None) == m.__name__ and id(v) not in seen:
                seen.add(id(v))
                yield from _functions(v, f"{m.__name__}.{k}", seen)


def _resolve(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        mod, _, attr = name.rpartition(".")
        return getattr(_resolve(mod), attr)


def _replace_everywhere(obj, stub) -> None:
    """Put ``stub`` wherever a loaded module holds ``obj`` (for objects whose code cannot be swapped)."""
    for m in list(sys.modules.values()):
        d = getattr(m, "__dict__", None)
        for k, v in list((d or {}).items()):
            if v is obj:
                d[k] = stub


def install(names) -> list[str]:
    """Make every function ``names`` cover raise; returns the dotted names replaced."""
    done, seen = [], set()
    for name in names:
        obj = _resolve(name)
        if callable(obj) and not isinstance(obj, (types.FunctionType, type, types.ModuleType)):
            # a built-in or C-level callable (numpy's dispatchers, torch ops): its code cannot be swapped,
            # so the name is replaced in its module and everywhere a loaded module holds the same object
            _replace_everywhere(obj, types.FunctionType(_stub(name, None), {}))
            done.append(name)
            continue
        found = _module_functions(obj, seen) if isinstance(obj, types.ModuleType) else _functions(obj, name, seen)
        for dotted, fn in found:
            try:
                fn.__code__ = _stub(dotted, fn)
            except ValueError:          # a closure: replace the name in every loaded module instead
                _replace_everywhere(fn, types.FunctionType(_stub(dotted, fn), {}))
            done.append(dotted)
    missing = [n for n in names if not any(d == n or d.startswith(n + ".") for d in done)]
    if missing:
        raise ValueError(f"forbidden names that cover no Python function: {missing}")
    return done


# ----------------------------------------------------------------- a course library without the references

def _stub_body(fn, dotted: str):
    import ast
    msg = _MESSAGE.format(name=dotted)
    raise_stmt = ast.parse(f"raise NotImplementedError({msg!r})").body[0]
    doc = fn.body[0] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(
        getattr(fn.body[0], "value", None), ast.Constant) and isinstance(fn.body[0].value.value, str) else None
    fn.body = ([doc] if doc else []) + [raise_stmt]


def stub_source(text: str, module: str, names: set[str] | None) -> str:
    """``text`` (a module's source) with the body of every function whose dotted name is covered
    replaced by ``raise NotImplementedError``: all functions and methods when ``names`` is None,
    else the top-level functions and classes (all their methods) named in ``names``."""
    import ast
    tree = ast.parse(text)

    def visit(node, prefix, covered):
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if covered or (names is not None and child.name in names and node is tree):
                    _stub_body(child, f"{prefix}.{child.name}")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}",
                      covered or (names is not None and child.name in names and node is tree))
    visit(tree, module, names is None)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def filtered_copy(package_dir, forbidden, dest) -> list[str]:
    """Copy the course library (``package_dir``, the ``course_lib`` folder) to ``dest`` with the source of
    every function ``forbidden`` covers replaced by a stub: the sandbox binds this copy, so the reference
    code is not on its disk nor in its memory (a reload or a read of the file finds the stub too).
    Returns the dotted names (modules or functions) stubbed."""
    import shutil
    from pathlib import Path

    package_dir, dest = Path(package_dir), Path(dest)
    shutil.copytree(package_dir, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    top = package_dir.name
    per_file: dict[Path, set | None] = {}
    for name in forbidden:
        if not (name == top or name.startswith(top + ".")):
            continue
        rel = name.split(".")[1:]
        base = dest.joinpath(*rel)
        if base.is_dir():
            for f in base.rglob("*.py"):
                per_file[f] = None
        elif base.with_suffix(".py").exists():
            per_file[base.with_suffix(".py")] = None
        elif base.parent.with_suffix(".py").exists() or (base.parent / "__init__.py").exists():
            f = base.parent.with_suffix(".py") if base.parent.with_suffix(".py").exists() else base.parent / "__init__.py"
            if per_file.get(f, set()) is not None:
                per_file.setdefault(f, set()).add(rel[-1])
    done = []
    for f, names in per_file.items():
        mod = ".".join((top, *f.relative_to(dest).with_suffix("").parts)).removesuffix(".__init__")
        f.write_text(stub_source(f.read_text(encoding="utf-8"), mod, names), encoding="utf-8")
        done.append(mod if names is None else ", ".join(f"{mod}.{n}" for n in sorted(names)))
    return done
