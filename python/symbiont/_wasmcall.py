"""The hot path between Python and a Wasm instance: calls, memory and imports.

wasmtime-py's public API costs far more than the Wasm it runs for the small calls of the
ABI: ``Func.__call__`` asks for the function's type, converts every argument to a ``Val``
and back and allocates its arrays on each call (about 10 µs an argument),
``Memory.read``/``write`` build a new ctypes array type each time, and each import call
wraps its arguments and its caller in objects. The exports and imports of docs/WASM_ABI.md
take and return plain integers whose types are checked once, when a module is loaded
(``_wasm_abi._check_exports``), so :class:`DirectCalls` goes to wasmtime's C API instead:
``wasmtime_func_call_unchecked`` on one argument buffer made per instance, memory read and
written with ``memmove`` at the memory's base address, imports defined with
``wasmtime_linker_define_func_unchecked``. bench/wasm.exs measures both paths.

The direct path reaches into wasmtime-py's library handle and its raw pointers, which are
not public API; :data:`DIRECT` says whether this wasmtime-py has all of it. Where it does
not, :class:`PublicCalls` does the same through the public API, slower but equivalent
(the Python tests run every behaviour through both).

Everything here raises what wasmtime-py raises (``wasmtime.Trap``, ``WasmtimeError``) and
re-raises an exception that an import raised, so the caller classifies failures once.

Every read and write of linear memory, on both paths, checks its span here, against the
memory's size at that moment (a call may grow it): a pointer and a length are Wasm i32s,
read as the unsigned 32-bit numbers they are (``-64`` is 4294967232), and the span must end
within the memory. A span that does not raises :class:`OutOfBounds` before any byte is
touched, so a module's bad pointer is an error for that call, never a native read.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import wasmtime

__all__ = ["DIRECT", "DirectCalls", "OutOfBounds", "PublicCalls", "define_import", "span"]

# An import: called with the caller's context (for reading its memory) and its integer
# arguments; returns None, or an int for an import with a result.
ImportFn = Callable[..., Any]

_U64 = 0xFFFFFFFFFFFFFFFF
_U32 = 0xFFFFFFFF


class OutOfBounds(Exception):
    """A span of linear memory that does not fit in it (see the module docstring)."""

    def __init__(self, ptr: int, length: int, size: int) -> None:
        super().__init__(f"bytes {ptr}..{ptr + length} of a {size}-byte memory")
        self.ptr, self.length, self.size = ptr, length, size


def span(ptr: int, length: int, size: int) -> tuple[int, int]:
    """``(ptr, length)`` as unsigned 32-bit numbers, checked to lie within the first
    ``size`` bytes; raises :class:`OutOfBounds`. Python's integers do not overflow, so
    ``ptr + length`` is the true end (a span that wraps around 2**32 is out of bounds)."""
    ptr &= _U32
    length &= _U32
    if ptr + length > size:
        raise OutOfBounds(ptr, length, size)
    return ptr, length


class _Pending(threading.local):
    """The exception an import raised, carried across wasmtime to the call that failed."""

    error: BaseException | None = None


_pending = _Pending()


def _load_direct() -> Any:
    """The C functions of the direct path with our own prototypes (raw addresses in and
    out), or None when this wasmtime-py does not expose what they need."""
    try:
        from wasmtime import _ffi  # noqa: PLC0415 - not public API: see the module docstring

        # A CDLL of our own on the same handle: its function objects are not wasmtime-py's,
        # so our prototypes do not change theirs.
        lib = ctypes.CDLL(_ffi.dll._name, handle=_ffi.dll._handle)
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        protos = {
            "wasmtime_func_call_unchecked": ([vp, vp, vp, size, vp], vp),
            "wasmtime_memory_data": ([vp, vp], vp),
            "wasmtime_memory_data_size": ([vp, vp], size),
            "wasmtime_context_set_epoch_deadline": ([vp, ctypes.c_uint64], None),
            "wasmtime_caller_context": ([vp], vp),
            "wasmtime_trap_new": ([ctypes.c_char_p, size], vp),
            "wasmtime_linker_define_func_unchecked": (
                [vp, ctypes.c_char_p, size, ctypes.c_char_p, size, vp, vp, vp, vp],
                vp,
            ),
        }
        funcs = {}
        for name, (argtypes, restype) in protos.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, restype
            funcs[name] = fn
        funcs["trap_type"] = ctypes.POINTER(_ffi.wasm_trap_t)
        funcs["error_type"] = ctypes.POINTER(_ffi.wasmtime_error_t)
        # Attributes the direct path reads on wasmtime-py's objects.
        for cls, attr in (
            (wasmtime.Store, "_context"),
            (wasmtime.Trap, "_from_ptr"),
            (wasmtime.WasmtimeError, "_from_ptr"),
            (wasmtime.Linker, "ptr"),
            (wasmtime.FuncType, "ptr"),
        ):
            if not hasattr(cls, attr):
                return None
        from wasmtime._func import maybe_raise_last_exn  # noqa: PLC0415, F401
    except (ImportError, AttributeError, OSError):
        return None
    return funcs


_C = _load_direct()
#: Whether this wasmtime-py supports :class:`DirectCalls`.
DIRECT = _C is not None

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)
_MESSAGE = b"a host import raised an exception"


def _address(pointer: Any) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


def _raise_failure(error: int, trap: int) -> None:
    """Raise what wasmtime-py would for a failed call: an import's own exception first."""
    exc: BaseException
    if trap:
        exc = wasmtime.Trap._from_ptr(ctypes.cast(trap, _C["trap_type"]))
    else:
        exc = wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _C["error_type"]))
    pending, _pending.error = _pending.error, None
    if pending is not None:
        raise pending from None
    from wasmtime._func import maybe_raise_last_exn  # noqa: PLC0415

    maybe_raise_last_exn()  # a WASI callback of wasmtime-py's own
    raise exc


class DirectCalls:
    """Calls into one instance through wasmtime's C API (see the module docstring).

    ``funcs`` are the instance's exports by name, with their types already checked: a
    function takes at most two i32 arguments and returns nothing, an i32 or an i64.
    """

    def __init__(
        self,
        store: wasmtime.Store,
        memory: wasmtime.Memory,
        funcs: dict[str, wasmtime.Func],
        results: dict[str, str | None],
    ) -> None:
        self._store = store  # keeps the context alive
        self._ctx = _address(store._context())
        self._memory = memory
        self._mem = ctypes.addressof(memory._memory)
        self._funcs = funcs
        self._addr = {name: ctypes.addressof(func._func) for name, func in funcs.items()}
        self._results = results
        # One buffer for the arguments and the result (wasmtime_val_raw_t is 16 bytes),
        # seen as i64s and i32s.
        self._raw = (ctypes.c_int64 * 4)()
        self._raw_addr = ctypes.addressof(self._raw)
        self._i32 = (ctypes.c_int32 * 8).from_buffer(self._raw)
        self._trap = ctypes.c_void_p()
        self._trap_addr = ctypes.addressof(self._trap)
        self._call = _C["wasmtime_func_call_unchecked"]
        self._data = _C["wasmtime_memory_data"]
        self._data_size = _C["wasmtime_memory_data_size"]
        self._deadline = _C["wasmtime_context_set_epoch_deadline"]

    def arm(self, ticks: int, fuel: int | None) -> None:
        """Set the epoch deadline (and the fuel) of the next calls."""
        self._deadline(self._ctx, ticks)
        if fuel is not None:
            self._store.set_fuel(fuel)

    def call(self, name: str, a: int | None = None, b: int | None = None) -> int | None:
        """Call export ``name`` with up to two i32 arguments."""
        i32 = self._i32
        # The buffer always holds two values (the most any ABI function takes or returns);
        # wasmtime reads as many arguments as the function's type has.
        if a is not None:
            i32[0] = a
            if b is not None:
                i32[4] = b
        error = self._call(self._ctx, self._addr[name], self._raw_addr, 2, self._trap_addr)
        trap = self._trap.value
        if error or trap:
            self._trap.value = None
            _raise_failure(error or 0, trap or 0)
        kind = self._results[name]
        if kind is None:
            return None
        return i32[0] if kind == "i32" else self._raw[0] & _U64

    def size(self, ctx: Any = None) -> int:
        """The memory's size in bytes (``ctx``: an import's caller, else the store)."""
        return int(self._data_size(ctx or self._ctx, self._mem))

    def read_spans(
        self, spans: tuple[tuple[int, int], ...], ctx: Any = None, most: int = _U32
    ) -> list[bytes]:
        """Copy each ``(ptr, length)`` out of memory, or its first ``most`` bytes (``ctx``:
        an import's caller, else the store); raises :class:`OutOfBounds` before reading
        anything if one does not fit."""
        ctx = ctx or self._ctx
        # The size and the base now: memory may have grown (and moved) since the last look.
        size = self._data_size(ctx, self._mem)
        checked = []
        for ptr, length in spans:  # span(), inlined: this is every import's path
            ptr &= _U32
            length &= _U32
            if ptr + length > size:
                raise OutOfBounds(ptr, length, size)
            checked.append((ptr, length if length <= most else most))
        base = self._data(ctx, self._mem)
        return [ctypes.string_at(base + ptr, n) if n else b"" for ptr, n in checked]

    def write(self, ptr: int, data: bytes, ctx: Any = None) -> None:
        """Copy ``data`` into memory at ``ptr`` (``ctx``: an import's caller, else the
        store); raises :class:`OutOfBounds` if it does not fit."""
        ctx = ctx or self._ctx
        ptr, length = span(ptr, len(data), self._data_size(ctx, self._mem))
        if length:
            ctypes.memmove(self._data(ctx, self._mem) + ptr, data, length)


class PublicCalls:
    """The same as :class:`DirectCalls` through wasmtime-py's public API."""

    def __init__(
        self,
        store: wasmtime.Store,
        memory: wasmtime.Memory,
        funcs: dict[str, wasmtime.Func],
        results: dict[str, str | None],
    ) -> None:
        self._store = store
        self._memory = memory
        self._funcs = funcs

    def arm(self, ticks: int, fuel: int | None) -> None:
        """Set the epoch deadline (and the fuel) of the next calls."""
        self._store.set_epoch_deadline(ticks)
        if fuel is not None:
            self._store.set_fuel(fuel)

    def call(self, name: str, a: int | None = None, b: int | None = None) -> int | None:
        """Call export ``name`` with up to two i32 arguments."""
        args = [x for x in (a, b) if x is not None]
        out = self._funcs[name](self._store, *args)
        return out & _U64 if isinstance(out, int) and out < 0 else out

    def size(self, ctx: Any = None) -> int:
        """The memory's size in bytes (``ctx``: an import's caller, else the store)."""
        return int(self._memory.data_len(ctx or self._store))

    def read_spans(
        self, spans: tuple[tuple[int, int], ...], ctx: Any = None, most: int = _U32
    ) -> list[bytes]:
        """Copy each ``(ptr, length)`` out of memory, or its first ``most`` bytes; raises
        :class:`OutOfBounds` before reading anything if one does not fit. (``Memory.read``
        alone takes a negative start as Python's slices do, from the end: the check comes
        first.)"""
        store = ctx or self._store
        size = self._memory.data_len(store)
        checked = [span(ptr, length, size) for ptr, length in spans]
        return [
            bytes(self._memory.read(store, ptr, ptr + min(length, most))) for ptr, length in checked
        ]

    def write(self, ptr: int, data: bytes, ctx: Any = None) -> None:
        """Copy ``data`` into memory at ``ptr``; raises :class:`OutOfBounds` if it does not fit."""
        store = ctx or self._store
        ptr, length = span(ptr, len(data), self._memory.data_len(store))
        if length:
            self._memory.write(store, data, ptr)


def define_import(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    ty: wasmtime.FuncType,
    fn: ImportFn,
    *,
    direct: bool,
    keep: list[Any],
) -> None:
    """Define import ``module.name`` of type ``ty`` (i32 and i64 parameters, at most one
    result) as ``fn(ctx, *args)``; ``ctx`` is what :meth:`DirectCalls.read_spans` (or
    :meth:`PublicCalls.read_spans`) takes to read the calling instance's memory. The
    arguments come as Wasm has them, an i32 as a signed int (:func:`span` makes pointers
    and lengths unsigned). What must stay alive as long as the linker is appended to
    ``keep``."""
    params = [str(p) for p in ty.params]
    results = [str(r) for r in ty.results]
    if not direct:

        def public(caller: Any, *args: int) -> Any:
            return fn(caller, *args)

        linker.define_func(module, name, ty, public, True)
        return

    caller_context = _C["wasmtime_caller_context"]
    trap_new = _C["wasmtime_trap_new"]
    offsets = [16 * i for i in range(len(params))]
    readers = [ctypes.c_int64 if p == "i64" else ctypes.c_int32 for p in params]
    result = (ctypes.c_int64 if results[0] == "i64" else ctypes.c_int32) if results else None

    # The arguments, each in a 16-byte wasmtime_val_raw_t: all i32 (the Symbiont imports)
    # are read as one array, every 4th int32.
    all_i32 = ctypes.c_int32 * (4 * len(params)) if set(params) <= {"i32"} else None

    def trampoline(_env: Any, caller: int, raw: int, _n: int) -> int:
        try:
            ctx = caller_context(caller)
            if all_i32 is not None:
                args = all_i32.from_address(raw)[::4]
            else:
                args = [
                    r.from_address(raw + o).value for r, o in zip(readers, offsets, strict=True)
                ]
            out = fn(ctx, *args)
            if result is not None:
                result.from_address(raw).value = out
            return 0
        except BaseException as exc:  # noqa: BLE001 - re-raised by the call that failed
            _pending.error = exc
            return trap_new(_MESSAGE, len(_MESSAGE)) or 0

    callback = _CALLBACK(trampoline)
    keep.append(callback)
    m, n = module.encode(), name.encode()
    error = _C["wasmtime_linker_define_func_unchecked"](
        _address(linker.ptr()),
        m,
        len(m),
        n,
        len(n),
        _address(ty.ptr()),
        ctypes.cast(callback, ctypes.c_void_p),
        None,
        None,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _C["error_type"]))
