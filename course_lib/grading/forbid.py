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

_MESSAGE = ("{name} is the course library's reference for what this assignment asks you to write; it is "
            "not available while your notebook is graded. Write your own.")


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


def install(names) -> list[str]:
    """Make every function ``names`` cover raise; returns the dotted names replaced."""
    done, seen = [], set()
    for name in names:
        obj = _resolve(name)
        found = _module_functions(obj, seen) if isinstance(obj, types.ModuleType) else _functions(obj, name, seen)
        for dotted, fn in found:
            try:
                fn.__code__ = _stub(dotted, fn)
            except ValueError:          # a closure: replace the name in every loaded module instead
                stub = types.FunctionType(_stub(dotted, fn), {})
                for m in list(sys.modules.values()):
                    d = getattr(m, "__dict__", None)
                    for k, v in list((d or {}).items()):
                        if v is fn:
                            d[k] = stub
            done.append(dotted)
    return done
