"""The student's side of the grading boundary. Runs *inside* the sandbox (``sandbox.py`` starts
it): ``python -m course_lib.grading.sandbox_server FD``.

It executes the cells it is sent (answer cells and the instructor's given cells; never a test
cell) in an IPython shell, and calls the student's functions for the trusted side, with plain
data both ways (``codec.py``). Nothing here is trusted by the grader: whatever this process
sends back is decoded as plain data and checked there.

Requests (one frame each) and replies:

* ``{"op": "exec", "source": str, "answer": bool}`` -> ``{"ok", "error", "stdout", "stderr",
  "names"}``; for an answer cell ``names`` describes every name it bound or rebound:
  ``{"value": plain}``, ``{"callable": true}`` or ``{"object": type name}``.
* ``{"op": "call", "target": T, "args": [...], "kwargs": {...}}`` and ``{"op": "getattr",
  "target": T, "attr": str}``: T is ``{"name": str}`` (a notebook name) or ``{"handle": int}``.
  Reply ``{"ok": true, "value": plain, "sync": [...]}``, where ``sync`` holds the new state of
  every argument the call changed in place, or ``{"ok": false, "error": {...}}``.
* ``{"op": "forbid", "names": [...]}``: make these course-library functions or modules raise.
"""
from __future__ import annotations

import io
import os
import sys
import traceback

from . import codec

#: Characters of printed output kept per cell (the rest is dropped, with a note).
OUTPUT_LIMIT = 20_000


class _Capped(io.TextIOBase):
    """A text stream that keeps the first :data:`OUTPUT_LIMIT` characters."""

    def __init__(self):
        self.parts, self.size, self.dropped = [], 0, 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        room = OUTPUT_LIMIT - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self) -> str:
        tail = f"\n[... {self.dropped} more characters of output dropped]" if self.dropped else ""
        return "".join(self.parts) + tail


def _builtin_error(exc: BaseException) -> dict:
    """The error as plain data: the first built-in exception class in its MRO, and its message."""
    import builtins
    base = next((c.__name__ for c in type(exc).__mro__
                 if c.__module__ == "builtins" and isinstance(getattr(builtins, c.__name__, None), type)),
                "Exception")
    if base in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException"):
        base = "RuntimeError"
    try:
        msg = str(exc)[:2000]
    except Exception:  # noqa: BLE001 - a student's __str__ may raise
        msg = "(no message)"
    return {"ename": base, "type": type(exc).__name__[:100], "evalue": msg}


class Server:
    """The shell, its handles and the request loop."""

    def __init__(self, fd: int):
        import socket
        from IPython.core.interactiveshell import InteractiveShell

        self.sock = socket.socket(fileno=fd)
        self.shell = InteractiveShell.instance()
        self.ns = self.shell.user_ns
        self.handles: dict[int, object] = {}
        self._hidden = set(self.ns)

    # --------------------------------------------------------------- wire
    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def send(self, reply: dict) -> None:
        try:
            data = codec.dumps(reply)
        except (TypeError, ValueError) as exc:
            data = codec.dumps({"ok": False, "error": {"ename": "TypeError", "type": "TypeError",
                                                        "evalue": f"the reply could not be sent: {exc}"}})
        self.sock.sendall(data)

    # --------------------------------------------------------------- values
    def _classes(self, name: str):
        """Classes the trusted side may send: given-cell classes by name, else importable ones."""
        module, _, qual = name.partition(":")
        if module == "__main__":
            obj = self.ns.get(qual)
        else:
            import importlib
            obj = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
        return obj if isinstance(obj, type) else None

    @staticmethod
    def _travels(cls) -> bool:
        """Objects the trusted side can rebuild: torch modules, course-library and given-cell classes."""
        import torch
        mod = cls.__module__ or ""
        return (issubclass(cls, torch.nn.Module) and mod.startswith("torch.nn")) or mod.startswith("course_lib.") \
            or (mod == "__main__" and cls.__qualname__ in _GIVEN_CLASSES)

    def _handle(self, obj) -> dict:
        key = len(self.handles) + 1
        self.handles[key] = obj
        return {"$handle": key, "callable": callable(obj), "type": type(obj).__qualname__[:100]}

    def encode(self, obj):
        return codec.encode(obj, self._travels, handle=self._handle)

    def decode(self, plain):
        return codec.decode(plain, self._classes, handle=lambda spec: self.handles[int(spec["$handle"])])

    def _target(self, t: dict):
        if "handle" in t:
            return self.handles[int(t["handle"])]
        name = str(t["name"])
        if name not in self.ns:
            raise NameError(f"name {name!r} is not defined")
        return self.ns[name]

    # --------------------------------------------------------------- requests
    def _given(self, source: str):
        """An instructor's cell, statement by statement: a statement that fails (it needs library code
        this sandbox does not have) is skipped and the rest still defines its functions and classes;
        the grader then sends the values the cell computed on its side (``op_bind``)."""
        import ast
        first = None
        try:
            tree = ast.parse(self.shell.transform_cell(source))
        except SyntaxError as exc:
            return exc
        for stmt in tree.body:
            try:
                exec(compile(ast.Module(body=[stmt], type_ignores=[]), "<given cell>", "exec"), self.ns)  # noqa: S102
            except BaseException as exc:  # noqa: BLE001 - reported, the next statement runs
                first = first or exc
        return first

    def op_bind(self, req: dict) -> dict:
        bad = []
        for k, v in req.get("values", {}).items():
            try:
                self.ns[str(k)] = self.decode(v)
            except Exception:  # noqa: BLE001 - a value this side cannot rebuild
                bad.append(str(k))
        return {"ok": True, "failed": bad}

    def op_exec(self, req: dict) -> dict:
        before = {k: id(v) for k, v in self.ns.items()}
        out, err = _Capped(), _Capped()
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            if req.get("given"):
                exc = self._given(req["source"])
            else:
                result = self.shell.run_cell(req["source"], store_history=True, silent=False)
                exc = result.error_before_exec or result.error_in_exec
        finally:
            sys.stdout, sys.stderr = old
        error = None
        if exc is not None:
            error = _builtin_error(exc)
            error["trace"] = "".join(traceback.format_exception_only(type(exc), exc))[-2000:]
        reply = {"ok": error is None, "error": error, "stdout": out.text(), "stderr": err.text(), "names": {}}
        if req.get("given"):
            global _GIVEN_CLASSES
            _GIVEN_CLASSES = set(_GIVEN_CLASSES) | {k for k, v in self.ns.items()
                                                     if isinstance(v, type) and before.get(k) != id(v)}
        if req.get("answer"):
            for k, v in list(self.ns.items()):
                if before.get(k) == id(v) or k in self._hidden or _IPYTHON_NAME.match(k):
                    continue
                reply["names"][k] = self._describe(v)
        return reply

    def _describe(self, v) -> dict:
        import types
        if isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
            return {"callable": True}
        try:
            return {"value": codec.encode(v, self._travels)}
        except Exception:  # noqa: BLE001 - Unencodable, or a value whose encoding fails: a handle
            return {"callable": True} if callable(v) else {"object": type(v).__qualname__[:100]}

    def op_call(self, req: dict) -> dict:
        fn = self._target(req["target"])
        args = [self.decode(a) for a in req.get("args", [])]
        kwargs = {str(k): self.decode(v) for k, v in req.get("kwargs", {}).items()}
        value = fn(*args, **kwargs)
        sync = []
        for given, now in zip(list(req.get("args", [])) + list(req.get("kwargs", {}).values()),
                              args + list(kwargs.values())):
            try:
                enc = codec.encode(now, self._travels)
            except Exception:  # noqa: BLE001 - nothing to send back for this argument
                enc = None
            sync.append(None if enc == given else enc)
        every = args + list(kwargs.values())
        same = next((i for i, a in enumerate(every) if a is value and not isinstance(value, (int, float, str, bool,
                                                                                               type(None)))), None)
        return {"ok": True, "value": {"$arg": same} if same is not None else self.encode(value), "sync": sync}

    def op_getattr(self, req: dict) -> dict:
        return {"ok": True, "value": self.encode(getattr(self._target(req["target"]), str(req["attr"])))}

    def op_forbid(self, req: dict) -> dict:
        from . import forbid
        return {"ok": True, "replaced": forbid.install(req["names"])}

    def serve(self) -> None:
        while True:
            try:
                req = codec.read_frame(self._read_exact)
            except EOFError:
                return
            op = req.get("op") if isinstance(req, dict) else None
            handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                self.send({"ok": False, "error": {"ename": "RuntimeError", "type": "Protocol", "evalue": f"bad op {op!r}"}})
                continue
            if op == "exit":
                return
            try:
                reply = handler(req)
            except BaseException as exc:   # noqa: BLE001 - the student's error goes back as plain data
                reply = {"ok": False, "error": _builtin_error(exc)}
            self.send(reply)

    def op_exit(self, req):   # pragma: no cover - handled in serve
        return {"ok": True}


_GIVEN_CLASSES: set = set()
#: Names IPython binds by itself (output and input history), never the student's.
_IPYTHON_NAME = __import__("re").compile(r"^_+$|^_(i{1,3}|i\d+|\d+|oh|dh|ih)$")


def main() -> None:
    import matplotlib
    matplotlib.use("Agg")
    fd = int(sys.argv[1])
    # the student's prints cannot reach the grader's channel: fd 1 and 2 stay the sandbox's own pipe
    server = Server(fd)
    import numpy  # noqa: F401 - loaded before the grader's clock starts (torch loads with the set-up cell)
    server.send({"ok": True, "ready": True})
    server.serve()
    os._exit(0)


if __name__ == "__main__":
    main()
