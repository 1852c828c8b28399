"""Erlang term mapping for msgpack (PROTOCOL.md §2).

Atoms, tuples, pids, refs and other opaque Erlang terms travel as msgpack ext types so that
they survive a round trip through Python unchanged.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Callable
from typing import Any

import msgpack

__all__ = [
    "EXT_ATOM",
    "EXT_OPAQUE",
    "EXT_PID",
    "EXT_REF",
    "EXT_TUPLE",
    "Atom",
    "OpaqueTerm",
    "Pid",
    "Ref",
    "encode_error",
    "packb",
    "unpackb",
]

EXT_ATOM = 1
EXT_TUPLE = 2
EXT_PID = 3
EXT_REF = 4
EXT_OPAQUE = 5


class Atom(str):
    """An Erlang atom. It is a ``str``, so ``Atom("ok") == "ok"`` and it works as a dict key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class _Opaque:
    """An Erlang term kept in external term format; sent back unchanged."""

    __slots__ = ("data",)
    _ext: int = EXT_OPAQUE

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{type(self).__name__} data must be bytes, got {type(data).__name__}")
        self.data = bytes(data)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.data == self.data  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self._ext, self.data))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.data.hex()})"


class Pid(_Opaque):
    """An Erlang process identifier; pass it to ``symbiont.erlang.send``."""

    __slots__ = ()
    _ext = EXT_PID


class Ref(_Opaque):
    """An Erlang reference."""

    __slots__ = ()
    _ext = EXT_REF


class OpaqueTerm(_Opaque):
    """Any other Erlang term Python cannot represent (a port, a fun)."""

    __slots__ = ()
    _ext = EXT_OPAQUE


_UTC = _dt.UTC


def _default(obj: Any) -> Any:
    if isinstance(obj, Atom):
        return msgpack.ExtType(EXT_ATOM, obj.encode("utf-8"))
    if isinstance(obj, tuple):
        # A fresh packer: the shared one is in the middle of packing the outer value.
        return msgpack.ExtType(EXT_TUPLE, _new_packer().pack(list(obj)))
    if isinstance(obj, _Opaque):
        return msgpack.ExtType(obj._ext, obj.data)
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            raise TypeError("naive datetime cannot be encoded: give it a tzinfo (e.g. UTC)")
        return msgpack.Timestamp.from_datetime(obj)
    raise TypeError(_refusal(obj) or f"cannot encode {type(obj).__name__} as msgpack")


#: Where a value holds something msgpack cannot carry unchanged (PROTOCOL.md §2), the
#: kinds Python programmers hit most, and what to send instead.
_INSTEAD = {
    set: "a list (sorted(...) for a stable order)",
    frozenset: "a list (sorted(...) for a stable order)",
}
_BASES = (dict, list, str, int, float, bytes)
_MIN_INT, _MAX_INT = -(1 << 63), (1 << 64) - 1


def _refusal(obj: Any) -> str | None:
    """Why ``obj`` itself (not what it holds) cannot be encoded, or None when it can."""
    kind = type(obj)
    if kind in _INSTEAD:
        return f"{_a(kind.__name__)} is not a msgpack type; use {_INSTEAD[kind]}"
    if kind in (type(None), bool, float, bytes, bytearray, memoryview, dict, list, Atom):
        return None
    if kind is int:
        if _MIN_INT <= obj <= _MAX_INT:
            return None
        return f"the int {_short(obj)} is out of msgpack's range -2^63..2^64-1"
    if kind is str:
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return "a str with lone surrogates is not UTF-8; encode it (os.fsencode) to bytes"
        return None
    if isinstance(obj, (tuple, _Opaque, msgpack.ExtType, msgpack.Timestamp)):
        return None
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            return "a naive datetime cannot be encoded: give it a tzinfo (e.g. UTC)"
        return None
    for base in _BASES:
        if isinstance(obj, base):
            # strict_types: a subclass would lose its class on the way (PROTOCOL.md §2).
            return (
                f"{_a(kind.__name__)} (a subclass of {base.__name__}) would arrive as a plain "
                f"{base.__name__}; convert it with {base.__name__}(...)"
            )
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return (
        f"{_a(name)} is not a msgpack type (PROTOCOL.md §2 lists what is: None, bool, int, "
        "float, str, bytes, list, tuple, dict, datetime, symbiont.Atom, Pid, Ref)"
    )


def _a(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _find(obj: Any, path: str, depth: int) -> tuple[str, str] | None:
    """The first place in ``obj`` that cannot be encoded: (its path, why)."""
    why = _refusal(obj)
    if why is not None:
        return path, why
    if depth > 512:
        return path, "the value is nested over 512 levels deep"
    kind = type(obj)
    if kind is dict:
        for key, value in obj.items():
            why = _refusal(key)
            if why is not None:
                return f"{path}[key {_short(key)}]", why
            if type(key) is tuple:
                found = _find(key, f"{path}[key {_short(key)}]", depth + 1)
                if found is not None:
                    return found
            found = _find(value, f"{path}[{_short(key)}]", depth + 1)
            if found is not None:
                return found
    elif kind is list or isinstance(obj, tuple):
        for i, item in enumerate(obj):
            found = _find(item, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = object.__repr__(value)
    return text if len(text) <= 60 else text[:57] + "..."


def encode_error(value: Any, root: str, exc: BaseException) -> TypeError:
    """The error for ``value``, which :func:`packb` refused with ``exc``: a ``TypeError``
    naming where in it the problem is (``"state['items'][3]: a set is not a msgpack
    type; use a list (sorted(...) for a stable order)"``), ``root`` being its name.

    Only called once packing failed: the walk costs nothing on the hot path.
    """
    found = _find(value, root, 0)
    if found is None:
        return TypeError(f"{root} cannot be encoded as msgpack: {exc}")
    path, why = found
    return TypeError(f"{path}: {why}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_ATOM:
        return Atom(data.decode("utf-8"))
    if code == EXT_TUPLE:
        value = unpackb(data)
        if not isinstance(value, list):
            raise ValueError("ext 2 (tuple) must hold a msgpack array")
        return tuple(value)
    if code == EXT_PID:
        return Pid(data)
    if code == EXT_REF:
        return Ref(data)
    if code == EXT_OPAQUE:
        return OpaqueTerm(data)
    return msgpack.ExtType(code, data)


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True, datetime=False)


# Hot path: one Packer reused for every top-level value (packb is called per frame). One per
# thread: a Packer is not thread-safe, and the host packs log frames on its output threads
# while the main thread may be inside ``_default`` (Python code) packing a reply.
_local = threading.local()


def packb(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack with Symbiont's term mapping (PROTOCOL.md §2).

    Raises ``TypeError`` for what msgpack cannot carry, or would change on the way (a
    ``set``, a subclass of ``dict``...), ``ValueError`` or ``OverflowError`` for some
    values; :func:`encode_error` turns either into a ``TypeError`` that names where.
    """
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = _new_packer()
    return packer.pack(obj)


def thread_packer() -> Callable[[Any], bytes]:
    """:func:`packb` of the calling thread, without the thread-local lookup on each call:
    for a loop that packs on one thread only (the host's dispatch thread)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = _new_packer()
    return packer.pack


def unpackb(data: bytes) -> Any:
    """Decode one msgpack value with Symbiont's term mapping (PROTOCOL.md §2).

    Raises ``ValueError`` (or a subclass) when ``data`` is not exactly one valid value.
    """
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        ext_hook=_ext_hook,
        timestamp=3,
    )
