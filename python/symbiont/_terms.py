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
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack: {obj!r}")


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
    """Encode ``obj`` as msgpack with Symbiont's term mapping (PROTOCOL.md §2)."""
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
