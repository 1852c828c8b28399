"""Calls into a Wasm component, faster than wasmtime-py makes them: ``list<u8>`` values
(payloads, states) converted between bytes and wasmtime's C values in bulk, and
:class:`_Export`, an export called with its types looked up once per component.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["_Export", "_bytes_from_c", "_install_fast_bytes"]


def _bytes_from_c(ffi: Any, c: Any) -> bytes:
    """The bytes of a C ``list<u8>`` value, which it frees."""
    size = ctypes.sizeof(ffi.wasmtime_component_val_t)
    try:
        if c.kind != ffi.WASMTIME_COMPONENT_LIST.value:
            raise TypeError(f"expected a list<u8>, got a value of kind {c.kind}")
        n = c.of.list.size
        if not n:
            return b""
        raw = ctypes.string_at(c.of.list.data, n * size)
        kind_at = ffi.wasmtime_component_val_t.kind.offset
        if raw[kind_at::size].count(ffi.WASMTIME_COMPONENT_U8.value) != n:
            raise TypeError("a list<u8> holds something that is not a u8")
        return raw[ffi.wasmtime_component_val_t.of.offset :: size]
    finally:
        if c.kind == ffi.WASMTIME_COMPONENT_LIST.value:
            ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def _install_fast_bytes(w: Any) -> None:
    """Convert ``list<u8>`` (payloads, states) between bytes and wasmtime's C values in
    bulk rather than one Python call a byte, as wasmtime-py 51 does: its loop took about a
    microsecond a byte (a 1 MB payload, a second of the host's), and made a list of
    ints first. The C API still holds one 32-byte value a byte while it converts."""
    types, ffi = w.component._types, w._ffi
    list_type = types.ListType
    if getattr(list_type, "_symbiont_fast_bytes", False):
        return
    size = ctypes.sizeof(ffi.wasmtime_component_val_t)
    kind_at = ffi.wasmtime_component_val_t.kind.offset
    value_at = ffi.wasmtime_component_val_t.of.offset
    u8, kind_list = ffi.WASMTIME_COMPONENT_U8.value, ffi.WASMTIME_COMPONENT_LIST
    to_c, from_c = list_type.convert_to_c, list_type.convert_from_c

    def convert_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if not (self._is_bytes() and isinstance(val, (bytes, bytearray))):
            to_c(self, store, val, ptr)
            return
        n = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
        if n:
            buf = bytearray(n * size)
            buf[kind_at::size] = bytes((u8,)) * n
            buf[value_at::size] = val
            ctypes.memmove(raw.data, (ctypes.c_char * len(buf)).from_buffer(buf), len(buf))
        ptr.contents.kind = kind_list
        ptr.contents.of.list = raw
        return None

    def convert_from_c(self: Any, c: Any) -> Any:
        if not self._is_bytes():
            return from_c(self, c)
        return _bytes_from_c(ffi, c)

    list_type.convert_to_c = convert_to_c
    list_type.convert_from_c = convert_from_c
    list_type._symbiont_fast_bytes = True


class _Export:
    """One export of a component, called as wasmtime-py's ``Func.__call__`` does but with
    its parameter and result types looked up once per component (``Func.__call__`` asks
    wasmtime for them at every call, some tens of microseconds)."""

    __slots__ = ("_cases", "_enter", "_ffi", "_type", "params", "result")

    def __init__(self, w: Any, func: Any, store: Any) -> None:
        from wasmtime.component._enter import enter_wasm  # noqa: PLC0415

        self._ffi, self._enter = w._ffi, enter_wasm
        self._type = func.type(store)  # owns the types below: kept as long as they are
        self.params = [ty for _name, ty in self._type.params]
        self.result = self._type.result
        # A result<T, E> whose cases need no tag (bytes or nothing, and str, as the world's
        # exports): lifted here with its case types looked up once, not at each call.
        self._cases: tuple[Any, Any] | None = None
        if isinstance(self.result, w.component.ResultType) and not self.result._tagged():
            self._cases = (self.result.ok, self.result.err)

    def call(self, func: Any, store: Any, *args: Any) -> Any:
        """``func(store, *args)``, with these types."""
        ffi, byref = self._ffi, ctypes.byref
        params = (ffi.wasmtime_component_val_t * len(args))()
        n = 0
        try:
            for ty, value in zip(self.params, args, strict=True):
                ty.convert_to_c(store, value, ctypes.pointer(params[n]))
                n += 1
            result = ffi.wasmtime_component_val_t() if self.result is not None else None
            out = byref(result) if result is not None else None

            def run() -> Any:
                return ffi.wasmtime_component_func_call(
                    byref(func._func), store._context(), params, n, out, int(out is not None)
                )

            self._enter(run)
            if result is None:
                return None
            if self._cases is None:
                return self.result.convert_from_c(result)
            return self._lift_result(result)
        finally:
            for i in range(n):
                ffi.wasmtime_component_val_delete(byref(params[i]))

    def _lift_result(self, c: Any) -> Any:
        """What ``ResultType.convert_from_c`` returns for an untagged result, as it does."""
        ffi = self._ffi
        if c.kind != ffi.WASMTIME_COMPONENT_RESULT.value:
            raise TypeError(f"expected a result, got a value of kind {c.kind}")
        ty = self._cases[0] if c.of.result.is_ok else self._cases[1]  # type: ignore[index]
        if ty is None:
            return None
        val = c.of.result.val
        payload = ty.convert_from_c(val.contents)
        val.contents.kind = ffi.WASMTIME_COMPONENT_BOOL
        val.contents.of.boolean = False
        ffi.wasmtime_component_val_delete(val)
        return payload
