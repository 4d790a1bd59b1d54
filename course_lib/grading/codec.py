"""Plain data across the sandbox boundary: a codec with no pickle and no code.

A value is encoded into JSON-able structures; arrays and tensors travel as raw bytes with an
explicit dtype and shape. Decoding yields only exact built-in types (``bool``, ``int``, ``float``,
``str``, ``list``, ``tuple``, ``dict``, ``set``, ``None``), NumPy arrays and scalars of plain
dtypes, and torch tensors: a subclass of ``str`` with its own ``__eq__`` cannot survive the trip.

Objects of an *allowed* class (torch's ``nn`` modules, classes of the course library, classes the
instructor's cells define) travel as their class's name and their ``__dict__``, itself plain data;
the receiving side rebuilds them with its own class of that name. Anything else raises
:class:`Unencodable` (the sandbox then hands out a handle instead, see ``executor.py``).

Frames on a byte stream: 8-byte big-endian length, then the JSON text (UTF-8). A frame over
:data:`MAX_FRAME` bytes is refused.
"""
from __future__ import annotations

import base64
import json
import math
import struct
from collections import OrderedDict

import numpy as np

#: Largest frame either side accepts (bytes).
MAX_FRAME = 64 * 2**20
#: Deepest nesting accepted (a hostile value cannot exhaust the decoder's stack).
MAX_DEPTH = 60

_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "complex64", "complex128"}
_TORCH_EXTRA = {"bfloat16"}


class Unencodable(TypeError):
    """The value has no plain-data form."""


class Malformed(ValueError):
    """A frame or a value that does not follow the codec."""


# ----------------------------------------------------------------- encoding

def _bytes(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _class_name(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(obj, classes=None, depth: int = 0, handle=None):
    """The plain form of ``obj``.

    ``classes(cls) -> bool`` says which classes may travel as ``(name, __dict__)``; ``handle(obj)``
    (optional) returns a plain stand-in for a value that cannot travel (else :class:`Unencodable`).
    """
    if depth > MAX_DEPTH:
        raise Unencodable("the value is nested too deeply")
    t = type(obj)
    if obj is None or t is bool or t is str:
        return obj
    if t is int:
        return obj if abs(obj) < 2**53 else {"$int": str(obj)}
    if t is float:
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    nxt = lambda v: encode(v, classes, depth + 1, handle)    # noqa: E731
    if t in (list, tuple, set, frozenset):
        return {"$" + t.__name__: [nxt(v) for v in obj]}
    if t in (dict, OrderedDict):
        return {"$dict" if t is dict else "$odict": [[nxt(k), nxt(v)] for k, v in obj.items()]}
    if t is bytes:
        return {"$bytes": base64.b64encode(obj).decode("ascii")}
    if t is complex:
        return {"$complex": [obj.real, obj.imag]}
    if t is range:
        return {"$range": [obj.start, obj.stop, obj.step]}
    if t is slice:
        return {"$slice": [nxt(obj.start), nxt(obj.stop), nxt(obj.step)]}
    if isinstance(obj, np.generic) and t.__module__ == "numpy" and obj.dtype.name in _DTYPES:
        return {"$npscalar": obj.dtype.name, "data": _bytes(np.asarray(obj))}
    if t is np.ndarray:
        if obj.dtype.name not in _DTYPES:
            raise Unencodable(f"a NumPy array of dtype {obj.dtype} (only numbers and booleans travel)")
        native = obj if obj.dtype.isnative else obj.astype(obj.dtype.newbyteorder("="))
        return {"$ndarray": obj.dtype.name, "shape": list(obj.shape), "data": _bytes(native)}
    import torch
    if t is torch.dtype:
        return {"$tdtype": str(obj).removeprefix("torch.")}
    if t is torch.device:
        return {"$tdevice": str(obj)}
    if t is torch.Generator:
        return {"$generator": nxt(obj.get_state())}
    if t in (torch.Tensor, torch.nn.Parameter):
        x = obj.detach()
        if x.is_meta:
            raise Unencodable("a tensor on the meta device has no values")
        if x.layout != torch.strided:
            x = x.to_dense()
        x = x.resolve_conj().resolve_neg()
        dt = str(x.dtype).removeprefix("torch.")
        if dt == "bfloat16":
            raw = x.cpu().contiguous().view(torch.int16).numpy()
        elif dt in _DTYPES:
            raw = x.cpu().contiguous().numpy()
        else:
            raise Unencodable(f"a tensor of dtype {x.dtype}")
        out = {"$tensor": dt, "shape": list(x.shape), "data": _bytes(raw)}
        if t is torch.nn.Parameter:
            out["param"] = bool(obj.requires_grad)
        elif obj.requires_grad:
            out["grad"] = True
        if obj.is_leaf and obj.grad is not None:
            out["gradient"] = nxt(obj.grad)
        return out
    if classes is not None and isinstance(t, type) and classes(t):
        state = getattr(obj, "__dict__", None)
        if state is None:
            raise Unencodable(f"an object of {t.__qualname__} without a __dict__")
        return {"$object": _class_name(t), "state": nxt(dict(state))}
    if handle is not None:
        return handle(obj)
    raise Unencodable(f"a value of type {t.__module__}.{t.__qualname__}")


# ----------------------------------------------------------------- decoding

def _array(spec: dict, dtype: str) -> np.ndarray:
    if dtype not in _DTYPES:
        raise Malformed(f"dtype {dtype!r} is not accepted")
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise Malformed("bad shape")
    raw = base64.b64decode(spec["data"], validate=True)
    a = np.frombuffer(raw, dtype=np.dtype(dtype))
    if a.size != math.prod(shape):
        raise Malformed("the data does not fill the shape")
    return a.reshape(shape).copy()


def decode(obj, classes=None, depth: int = 0, handle=None):
    """The value of a plain form. ``classes(name) -> class | None`` resolves ``$object`` names
    (None: refused); ``handle(spec)`` rebuilds a handle (None: refused)."""
    if depth > MAX_DEPTH:
        raise Malformed("nested too deeply")
    t = type(obj)
    if obj is None or t in (bool, str, int):
        return obj
    if t is float:
        return float(obj)
    nxt = lambda v: decode(v, classes, depth + 1, handle)     # noqa: E731
    if t is list:                      # only inside tagged forms
        raise Malformed("a bare list")
    if t is not dict or not obj:
        raise Malformed(f"unexpected {t.__name__}")
    tag = next(iter(obj))
    body = obj[tag]
    if tag == "$int":
        return int(str(body))
    if tag == "$float":
        return float(str(body))
    if tag in ("$list", "$tuple", "$set", "$frozenset"):
        if type(body) is not list:
            raise Malformed(tag)
        items = [nxt(v) for v in body]
        return {"$list": list, "$tuple": tuple, "$set": set, "$frozenset": frozenset}[tag](items)
    if tag in ("$dict", "$odict"):
        if type(body) is not list:
            raise Malformed(tag)
        pairs = [(nxt(k), nxt(v)) for k, v in body]
        return dict(pairs) if tag == "$dict" else OrderedDict(pairs)
    if tag == "$bytes":
        return base64.b64decode(body, validate=True)
    if tag == "$complex":
        return complex(float(body[0]), float(body[1]))
    if tag == "$range":
        return range(*(int(v) for v in body))
    if tag == "$slice":
        return slice(*(nxt(v) for v in body))
    if tag == "$npscalar":
        return _array({"data": obj["data"], "shape": []}, body)[()]
    if tag == "$ndarray":
        return _array(obj, body)
    import torch
    if tag == "$tdtype":
        dt = getattr(torch, str(body), None)
        if type(dt) is not torch.dtype:
            raise Malformed(f"no torch dtype {body!r}")
        return dt
    if tag == "$tdevice":
        try:
            return torch.device(str(body))
        except (RuntimeError, ValueError) as exc:
            raise Malformed(f"no torch device {str(body)[:40]!r}") from exc
    if tag == "$generator":
        g = torch.Generator()
        g.set_state(nxt(body))
        return g
    if tag == "$tensor":
        if body == "bfloat16":
            x = torch.from_numpy(_array(obj, "int16")).view(torch.bfloat16)
        else:
            x = torch.from_numpy(_array(obj, body))
        if "param" in obj:
            x = torch.nn.Parameter(x, requires_grad=bool(obj["param"]))
        elif obj.get("grad"):
            x = x.requires_grad_()
        if "gradient" in obj:
            g = nxt(obj["gradient"])
            if type(g) is not torch.Tensor or g.shape != x.shape:
                raise Malformed("a gradient must be a tensor of the parameter's shape")
            x.grad = g
        return x
    if tag == "$object":
        cls = classes(str(body)) if classes is not None else None
        if cls is None:
            raise Malformed(f"objects of class {body} are not accepted here")
        state = decode(obj.get("state"), classes, depth + 1, None)    # plain data only: no handles inside
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise Malformed("an object's state must be a dict of names")
        new = cls.__new__(cls)
        new.__dict__.update(state)
        return new
    if tag == "$handle" and handle is not None:
        return handle(obj)
    raise Malformed(f"unknown tag {tag!r}")


# ----------------------------------------------------------------- frames

def dumps(value) -> bytes:
    """A frame holding an already encoded value."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return struct.pack(">Q", len(text)) + text


def read_frame(read_exact) -> object:
    """The JSON value of the next frame; ``read_exact(n)`` returns exactly n bytes (or raises EOFError)."""
    (n,) = struct.unpack(">Q", read_exact(8))
    if n > MAX_FRAME:
        raise Malformed(f"a frame of {n} bytes is over the limit of {MAX_FRAME}")
    try:
        return json.loads(read_exact(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Malformed(f"not a frame of JSON: {exc}") from None
