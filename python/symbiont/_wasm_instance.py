"""One module instance in its own store (:class:`Instance`), called through the ABI.

:mod:`symbiont.wasm` re-exports it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._terms import packb as _packb
from ._wasm_abi import _U32, ABI_VERSION, Imports, _active, _last_line, _Linked, _Outbox
from ._wasm_limits import Limits, WasmError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import wasmtime

    from ._wasm_runtime import Runtime


class Instance:
    """One module instance in its own store, called through the ABI of docs/WASM_ABI.md.

    The instance is rebuilt (``symbiont_init`` again, then ``symbiont_migrate`` with the
    last good state when the module exports ``symbiont_state``) after a failed call.
    """

    # Its public home (symbiont.wasm): the name tracebacks and error types on the wire give.
    __module__ = "symbiont.wasm"

    def __init__(
        self,
        runtime: Runtime,
        linked: _Linked,
        limits: Limits,
        imports: Imports,
        name: str,
        config: Any,
        fuel: bool,
    ) -> None:
        self.runtime = runtime
        self.engine = runtime.engine(fuel)
        self.module = linked.module
        self.limits = limits
        self.imports = imports
        self.name = name
        self.config = config
        self._w = runtime._wasmtime
        self._linked = linked
        self._exports = linked.results
        self._has_state = "symbiont_state" in linked.results
        # The next tick may come at once: one more makes the budget at least the
        # deadline, and at most a tick over it.
        self._ticks = math.ceil(limits.deadline_ms / runtime.tick_ms) + 1
        self._fuel = limits.fuel
        self._calls: Any = None
        from ._wasmcall import OutOfBounds  # noqa: PLC0415 - it imports wasmtime

        self._OutOfBounds = OutOfBounds
        self._last_state: bytes | None = None
        self._broken = True
        self._outbox: _Outbox = _Outbox(self)  # that of the running call (see _entered)
        with self._entered() as outbox:
            self._rebuild()
        self._send(outbox)

    # -- public ----------------------------------------------------------------------

    def call(self, topic: str, payload: bytes) -> bytes:
        """Run ``symbiont_handle`` on ``[topic, payload]``; returns its msgpack reply.

        One deadline (and one fuel budget) covers the whole message: the allocation, the
        handler and, for a module with a state, ``symbiont_state``, whose result is kept
        as :attr:`last_state`. What the module publishes goes out when the call succeeds;
        a failed call (a :class:`WasmError`, or an import's own exception) sends none of it.
        """
        message = b"\x92" + _packb(topic) + payload
        # _entered, spelled out: this is the path of every message.
        previous, _active.instance = _active.instance, self
        self._outbox = outbox = _Outbox(self)
        try:
            if self._broken:
                self._rebuild()
            self._calls.arm(self._ticks, self._fuel)
            out = self._invoke("symbiont_handle", message, result=True)
            state = self._last_state
            if self._has_state:
                state = self._invoke("symbiont_state", None, result=True)
        except BaseException:  # an import's own exception too: the instance was cut short
            self._broken = True
            raise
        finally:
            _active.instance = previous
            outbox.close()
        self._send(outbox)
        self._last_state = state
        return out

    @property
    def last_state(self) -> bytes | None:
        """The state after the last successful message (or migration), if the module
        exports ``symbiont_state``."""
        return self._last_state

    def state(self) -> bytes | None:
        """The module's state (msgpack), if it exports ``symbiont_state``."""
        if not self._has_state:
            return None
        with self._entered() as outbox:
            if self._broken:
                self._rebuild()
            self._calls.arm(self._ticks, self._fuel)
            state = self._invoke("symbiont_state", None, result=True)
        self._send(outbox)
        return state

    def migrate(self, state: bytes) -> None:
        """Hand an older version's state to this instance (``symbiont_migrate``)."""
        if "symbiont_migrate" not in self._exports:
            return
        with self._entered() as outbox:
            if self._broken:
                self._rebuild()
            self._calls.arm(self._ticks, self._fuel)
            self._invoke("symbiont_migrate", state, result=False)
        self._send(outbox)
        self._last_state = state

    def memory_size(self) -> int:
        """The current size of the instance's linear memory, in bytes (0 before it has one)."""
        return self._calls.size() if self._calls is not None else 0

    # -- building --------------------------------------------------------------------

    def _rebuild(self) -> None:
        """A new store and instance; the caller is in :meth:`_entered`."""
        from ._wasmcall import DirectCalls, PublicCalls  # noqa: PLC0415

        w, limits = self._w, self.limits
        store = w.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.table_elements,
            instances=limits.instances,
            tables=limits.tables,
            memories=limits.memories,
        )
        if self._linked.wasi:
            self._set_wasi(store)
        self._store = store
        self._calls = None
        self._broken = True
        store.set_epoch_deadline(self._ticks)
        if self._fuel is not None:
            store.set_fuel(self._fuel)
        try:
            instance = self._linked.linker.instantiate(store, self.module)
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            raise WasmError(
                "load",
                f"{self.name} cannot be instantiated: {_last_line(exc)} (its limits: "
                f"memory_bytes {limits.memory_bytes}, table_elements {limits.table_elements}, "
                f"instances {limits.instances}, tables {limits.tables}, "
                f"memories {limits.memories})",
            ) from None
        exports = instance.exports(store)
        funcs = {export: exports[export] for export in self._exports}
        calls = DirectCalls if self.runtime.direct else PublicCalls
        self._calls = calls(store, exports["memory"], funcs, self._exports)
        if "_initialize" in funcs:  # WASI reactors (clang -mexec-model=reactor)
            self._guarded("_initialize", lambda: self._calls.call("_initialize"))
        version = self._guarded(
            "symbiont_abi_version", lambda: self._calls.call("symbiont_abi_version")
        )
        if version != ABI_VERSION:
            raise WasmError(
                "abi", f"{self.name} implements ABI {version}; this runtime speaks {ABI_VERSION}"
            )
        self._broken = False
        if "symbiont_init" in self._exports:
            self._invoke("symbiont_init", _packb(self.config), result=False)
        if self._last_state is not None:
            self.migrate(self._last_state)

    def _set_wasi(self, store: wasmtime.Store) -> None:
        # Nothing preopened or inherited; stdout and stderr are _import_fd_write's. (Not
        # WasiConfig.stdout_custom: wasmtime-py calls it later, on a thread of wasmtime's,
        # which aborts the process if it still runs when the interpreter exits.)
        store.set_wasi(self._w.WasiConfig())

    # -- calling ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _entered(self) -> Iterator[_Outbox]:
        """Run Wasm as this instance: its imports act for it (:data:`_active`), under a
        new deadline and fuel (armed by the caller), and what it publishes is held in the
        outbox given, for :meth:`_send` once the block is over. Any failure marks the
        instance broken, to be rebuilt before its next call; the outbox is then dropped.
        Inside a call (a rebuild, a migration), the call's own outbox is used. (:meth:`call`
        does the same, spelled out.)"""
        if _active.instance is self:
            yield self._outbox
            return
        previous, _active.instance = _active.instance, self
        self._outbox = outbox = _Outbox(self)
        try:
            yield outbox
        except BaseException:  # an import's own exception too: the instance was cut short
            self._broken = True
            raise
        finally:
            _active.instance = previous
            outbox.close()

    def _send(self, outbox: _Outbox) -> None:
        """Send what a call that succeeded published (unless it is a part of a call, which
        sends it when it is over); if sending fails (an import's own exception), the call
        failed after all."""
        if _active.instance is self:
            return
        try:
            outbox.send()
        except BaseException:
            self._broken = True
            raise

    def _guarded(self, export: str, run: Callable[[], Any]) -> Any:
        w = self._w
        try:
            return run()
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            raise WasmError("trap", f"{self.name}.{export}: {exc}") from None

    def _invoke(self, export: str, data: bytes | None, result: bool) -> bytes:
        """Call ``export`` (with ``data`` written through ``symbiont_alloc``); the caller
        armed the deadline and made this the active instance."""
        w, calls = self._w, self._calls
        try:
            if data is None:
                out = calls.call(export)
            else:
                n = len(data)
                if n > min(self.limits.memory_bytes, _U32):
                    raise WasmError(
                        "memory",
                        f"{self.name}.{export}: {n} bytes of input cannot fit in its memory "
                        f"cap of {self.limits.memory_bytes} bytes",
                    )
                ptr = calls.call("symbiont_alloc", n) & _U32
                if ptr == 0:
                    raise WasmError("memory", f"symbiont_alloc({n}) returned 0 (out of memory?)")
                try:
                    calls.write(ptr, data)
                except self._OutOfBounds as exc:
                    raise WasmError(
                        "abi",
                        f"symbiont_alloc({n}) gave {ptr}, but {n} bytes do not fit in "
                        f"{exc.size} bytes",
                    ) from None
                out = calls.call(export, ptr, n)
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            raise WasmError("trap", f"{self.name}.{export}: {exc}") from None
        if not result:
            return b""
        try:
            span: bytes = calls.read_spans((((out >> 32) & _U32, out & _U32),))[0]
            return span
        except self._OutOfBounds as exc:
            raise WasmError("abi", f"{self.name} pointed at {exc}") from None

    def _classify(self, exc: Any) -> WasmError:
        code = getattr(exc, "trap_code", None)
        codes = self._w.TrapCode
        message = _last_line(exc).removeprefix("wasm trap: ")
        if code == codes.INTERRUPT:
            return WasmError(
                "deadline", f"{self.name} ran past its {self.limits.deadline_ms} ms deadline"
            )
        if code == codes.OUT_OF_FUEL:
            return WasmError("fuel", f"{self.name} used up its {self.limits.fuel} units of fuel")
        near_cap = self.memory_size() + 65536 > self.limits.memory_bytes
        if near_cap:
            return WasmError(
                "memory",
                f"{self.name} hit its memory cap of {self.limits.memory_bytes} bytes ({message})",
            )
        return WasmError("trap", f"{self.name} trapped: {message}")

    def _read(self, ctx: Any, *spans: tuple[int, int], most: int = _U32) -> list[bytes]:
        """The bytes of each ``(ptr, length)`` (i32s, read as unsigned), or its first
        ``most``, bounds-checked against the memory's current size (``ctx``: an import's
        caller)."""
        try:
            read: list[bytes] = self._calls.read_spans(spans, ctx, most)
            return read
        except self._OutOfBounds as exc:
            raise WasmError("abi", f"{self.name} pointed at {exc}") from None

    def _write(self, ptr: int, data: bytes, ctx: Any = None) -> None:
        """Write ``data`` at ``ptr`` (an i32, read as unsigned), bounds-checked against the
        memory's current size (``ctx``: an import's caller)."""
        try:
            self._calls.write(ptr, data, ctx)
        except self._OutOfBounds as exc:
            raise WasmError("abi", f"{self.name} pointed at {exc}") from None
