"""Wasm components in the habitat: the ``symbiont:agent`` world (``wit/agent.wit``).

:meth:`symbiont.wasm.Runtime.instantiate` gives a :class:`ComponentInstance` for a
component (detected from the binary's header, :func:`symbiont.wasm.is_component`) and an
:class:`symbiont.wasm.Instance` for a core module. Both run under the same
:class:`symbiont.wasm.Limits` (epoch deadline, fuel, memory, tables, instances, events per
call), publish through the same checks and outbox (what a call publishes goes out only if
it succeeds), and are rebuilt after a failed call from the last good state. See
docs/WASM_ABI.md, "Components".

WASI: a component gets WASI 0.2 with nothing preopened, inherited or reachable (no
directory, no environment, no arguments, no stdin, no network: wasmtime's sockets refuse
every address); ``wasi:clocks`` and ``wasi:random`` fail the call with a ``capability``
error unless the manifest grants ``clock`` or ``random``.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._agent import HEALTH_REASON_BYTES
from ._terms import packb
from ._wasm_abi import (
    Imports,
    _active,
    _check_msgpack,
    _last_line,
    _not_granted,
    _utf8,
    health_checked,
    publish_checked,
)
from ._wasm_instance import Instance
from ._wasm_limits import Limits, WasmError

if TYPE_CHECKING:  # pragma: no cover
    from ._wasm_runtime import Runtime

#: The world's host interface, as components import it.
HOST_INTERFACE = "symbiont:agent/host@0.1.0"
# The exports that return a state (msgpack bytes).
_RETURNS_STATE = frozenset({"handle", "tick", "snapshot"})
#: What a component of the world exports.
EXPORTS = ("init", "subscriptions", "timers", "handle", "tick", "snapshot")
# The WASI functions behind each capability (wasi:clocks, wasi:random), by interface.
_CAPABILITY_INTERFACES = {
    "clock": {
        "wasi:clocks/wall-clock": ("now", "resolution"),
        "wasi:clocks/monotonic-clock": (
            "now",
            "resolution",
            "subscribe-instant",
            "subscribe-duration",
        ),
    },
    "random": {
        "wasi:random/random": ("get-random-bytes", "get-random-u64"),
        "wasi:random/insecure": ("get-insecure-random-bytes", "get-insecure-random-u64"),
        "wasi:random/insecure-seed": ("insecure-seed",),
    },
}
#: The least deadline of an instance's start (instantiation and ``init``, which runs a
#: Python agent's ``on_start``): CPython's own start in the component takes tens of ms.
START_DEADLINE_MS = 1000
# What no grant allows: the network. Without `instance-network` there is no network to
# bind, connect or look names up in (wasi:sockets/ip-name-lookup, which defines a
# resource, cannot be shadowed whole: it needs that network); wasmtime's WASI refuses
# every address and name lookup by default too. These fail the call with an error that
# says so.
_NEVER_INTERFACES = {
    "wasi:sockets/instance-network": ("instance-network",),
    "wasi:sockets/tcp-create-socket": ("create-tcp-socket",),
    "wasi:sockets/udp-create-socket": ("create-udp-socket",),
}


def _instance() -> Instance:
    instance = _active.instance
    assert instance is not None  # imports run only inside a call (Instance._entered)
    return instance


# The host's functions, called by wasmtime with C values (_add_host_func): each reads its
# arguments as the world's types say, without wasmtime-py's per-call type lookups.
_HOST_FUNCS: dict[int, Callable[[Any, Any], None]] = {}


def _add_host_func(w: Any, iface: Any, name: str, fn: Callable[..., Any], kinds: str) -> None:
    """Define ``name`` in ``iface`` as ``fn``, its arguments read by ``kinds`` (one letter
    each: ``s`` string, ``b`` list<u8>, ``u`` u8) and its result, when ``fn`` has one, a
    u64. Falls back to wasmtime-py's ``add_func`` where its internals are not there."""
    ffi = w._ffi
    impl = _host_callback(w)
    if impl is None:
        iface.add_func(name, lambda _store, *args: fn(*args))
        return

    def read(vals: Any) -> list[Any]:
        out = []
        for i, kind in enumerate(kinds):
            val = vals[i]
            if kind == "s":
                out.append(ffi.to_str(val.of.string))
                ffi.wasm_byte_vec_delete(ctypes.byref(val.of.string))
            elif kind == "b":
                out.append(_bytes_from_c(ffi, val))
            else:
                out.append(int(val.of.u8))
        return out

    def call(vals: Any, results: Any) -> None:
        value = fn(*read(vals))
        if value is not None:
            results[0].kind = ffi.WASMTIME_COMPONENT_U64
            results[0].of.u64 = value

    idx = id(call)
    _HOST_FUNCS[idx] = call
    name_bytes = name.encode()
    err = ffi.wasmtime_component_linker_instance_add_func(
        iface.ptr(),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        impl,
        idx,
        _host_finalize(),
    )
    if err:
        raise w.WasmtimeError._from_ptr(err)


_CALLBACKS: list[Any] = []


def _host_callback(w: Any) -> Any:
    """The C callback of the host's functions (one, kept alive), or None where this
    wasmtime-py lacks what it needs."""
    if _CALLBACKS:
        return _CALLBACKS[0]
    try:
        from wasmtime.component._enter import catch_exceptions  # noqa: PLC0415

        ffi = w._ffi
        callback_t = ffi.wasmtime_component_func_callback_t
        needed = (ffi.wasmtime_component_linker_instance_add_func, ffi.to_str)
        del needed
    except (ImportError, AttributeError):
        return None

    def impl(idx: Any, context: Any, _ty: Any, args: Any, _n: int, results: Any, _r: int) -> Any:
        call = _HOST_FUNCS[idx or 0]
        return catch_exceptions(context, lambda _store: call(args, results))

    _CALLBACKS.append(callback_t(impl))
    return _CALLBACKS[0]


def _finalize_impl(idx: Any) -> None:
    _HOST_FUNCS.pop(idx or 0, None)


_finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize_impl)


def _host_finalize() -> Any:
    return _finalize


def _publish(topic: str, payload: bytes) -> None:
    publish_checked(_instance(), topic, len(topic.encode("utf-8", "surrogatepass")), payload)


def _log(level: int, message: str) -> None:
    instance = _instance()
    if instance._outbox.log_line():
        data = message.encode("utf-8", "replace")
        if len(data) > 8192:
            message = _utf8(data[:8192], "log text", cut=True) + " [truncated]"
        instance.imports.log(level, message)


def _health(kind: str, reason: str) -> None:
    data = reason.encode("utf-8", "replace")
    cut = len(data) > HEALTH_REASON_BYTES
    health_checked(_instance(), kind.encode("utf-8", "replace"), data[:HEALTH_REASON_BYTES], cut)


def _now_ms() -> int:
    import time  # noqa: PLC0415

    return time.time_ns() // 1_000_000


def _denied(capability: str, function: str) -> Any:
    def denied(*_args: Any) -> Any:
        raise _not_granted(capability, function)

    return denied


def _never(function: str) -> Any:
    def never(*_args: Any) -> Any:
        name = _active.instance.name if _active.instance else "a component"
        raise WasmError(
            "capability",
            f"{name} called {function}: no grant allows the network to a Wasm agent",
        )

    return never


def _entropy_at_start(function: str) -> Any:
    """``wasi:random`` without the ``random`` grant: served while an instance starts
    (componentize-py seeds Python's ``random`` module then, 2,496 bytes), refused in calls
    (``handle``, ``tick``, ``snapshot``)."""
    import os  # noqa: PLC0415

    def entropy(_store: Any, *args: Any) -> Any:
        instance = _active.instance
        if instance is None or not getattr(instance, "_starting", False):
            raise _not_granted("random", function)
        if function.endswith("-bytes"):
            return os.urandom(min(int(args[0]), 4096))
        return int.from_bytes(os.urandom(8), "little")

    return entropy


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


class ComponentLinked:
    """What the instances of one component with the same fuel and grants share: one
    linker (WASI 0.2, the host interface, the capabilities not granted shadowed by
    functions that fail the call)."""

    def __init__(self, runtime: Runtime, component: Any, fuel: bool, grants: frozenset[str]):
        w = runtime._wasmtime
        _install_fast_bytes(w)
        engine = runtime.engine(fuel)
        self.module = component
        self.results: dict[str, str | None] = {}
        self.wasi = True
        ty = component.type
        exports = set(ty.exports(engine))
        missing = [e for e in EXPORTS if e not in exports]
        if missing:
            raise WasmError(
                "abi",
                f"the component does not export {', '.join(missing)} (a component of the "
                f"symbiont:agent world exports {', '.join(EXPORTS)}; see wit/agent.wit)",
            )
        imports = list(ty.imports(engine))
        linker = w.component.Linker(engine)
        linker.add_wasip2()
        linker.allow_shadowing = True
        with linker.root() as root:
            with root.add_instance(HOST_INTERFACE) as host:
                _add_host_func(w, host, "publish", _publish, "sb")
                _add_host_func(w, host, "log", _log, "us")
                _add_host_func(w, host, "health", _health, "ss")
                _add_host_func(w, host, "now-ms", _now_ms, "")
            for name in imports:
                base = name.partition("@")[0]
                if base in _NEVER_INTERFACES:
                    with root.add_instance(name) as iface:
                        for function in _NEVER_INTERFACES[base]:
                            iface.add_func(function, _never(f"{base}.{function}"))
            for capability, interfaces in _CAPABILITY_INTERFACES.items():
                if capability in grants:
                    continue
                for name in imports:
                    base = name.partition("@")[0]
                    if base not in interfaces:
                        continue
                    with root.add_instance(name) as iface:
                        for function in interfaces[base]:
                            qualified = f"{base}.{function}"
                            iface.add_func(
                                function,
                                _entropy_at_start(qualified)
                                if capability == "random" and "seed" not in function
                                else _denied(capability, qualified),
                            )
        self.linker = linker
        # Each export's types, from the first instance (symbiont._component._Export).
        self.exports: dict[str, _Export] = {}


class ComponentInstance(Instance):
    """One component instance in its own store, called through the ``symbiont:agent``
    world; the interface of :class:`symbiont.wasm.Instance` (``call``, ``last_state``,
    ``migrate``, ``state``), and the component's ``subscriptions`` and ``timers``."""

    def __init__(
        self,
        runtime: Runtime,
        linked: ComponentLinked,
        limits: Limits,
        imports: Imports,
        name: str,
        config: Any,
        fuel: bool,
    ) -> None:
        self._funcs: dict[str, Any] = {}
        self._component: ComponentLinked = linked
        super().__init__(runtime, linked, limits, imports, name, config, fuel)  # type: ignore[arg-type]
        self._has_state = True

    # -- public ----------------------------------------------------------------------

    def call(self, topic: str, payload: bytes) -> bytes:
        """Run ``handle(topic, payload)``; returns the state it returned (also kept as
        :attr:`last_state`)."""
        state: bytes = self._run("handle", topic, payload)
        return state

    def tick(self, timer: str) -> None:
        """Run the timer ``timer`` (``tick``), which returns the state."""
        self._run("tick", timer)

    def subscriptions(self) -> list[str]:
        """The topics the component handles (its ``@on`` topics)."""
        return list(self._query("subscriptions"))

    def timers(self) -> dict[str, int]:
        """The component's timers: name -> period in milliseconds."""
        return {str(name): int(ms) for name, ms in self._query("timers")}

    def state(self) -> bytes | None:
        """The component's state (``snapshot``)."""
        with self._entered() as outbox:
            if self._broken:
                self._rebuild()
            self._arm()
            state: bytes | None = self._invoke_export("snapshot")
        self._send(outbox)
        return state

    def migrate(self, state: bytes) -> None:
        """Start from ``state`` (msgpack): the instance is rebuilt and ``init`` receives
        it, so the agent's ``on_start`` sees it, as a native agent's does."""
        previous, self._last_state = self._last_state, state
        try:
            with self._entered() as outbox:
                self._rebuild()
            self._send(outbox)
        except BaseException:
            self._last_state = previous
            raise

    def memory_size(self) -> int:
        """0: wasmtime-py does not show a component's memories."""
        return 0

    # -- inside ----------------------------------------------------------------------

    def _run(self, export: str, *args: Any) -> Any:
        previous, _active.instance = _active.instance, self
        self._outbox = outbox = self._new_outbox()
        try:
            if self._broken:
                self._rebuild()
            self._arm()
            state = self._invoke_export(export, *args)
            _check_msgpack(state, f"the state {self.name}.{export} returned")
        except BaseException:
            self._broken = True
            raise
        finally:
            _active.instance = previous
            outbox.close()
        self._send(outbox)
        self._last_state = state
        return state

    def _new_outbox(self) -> Any:
        from ._wasm_abi import _Outbox  # noqa: PLC0415

        return _Outbox(self)

    def _query(self, export: str) -> Any:
        with self._entered() as outbox:
            if self._broken:
                self._rebuild()
            self._arm()
            out = self._invoke_export(export)
        self._send(outbox)
        return out

    def _arm(self, ticks: int | None = None) -> None:
        self._store.set_epoch_deadline(ticks or self._ticks)
        if self._fuel is not None:
            self._store.set_fuel(self._fuel)

    def _rebuild(self) -> None:
        w, limits = self._w, self.limits
        store = w.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.table_elements,
            instances=max(limits.instances, _COMPONENT_INSTANCES),
            tables=max(limits.tables, _COMPONENT_TABLES),
            memories=max(limits.memories, _COMPONENT_MEMORIES),
        )
        store.set_wasi(w.WasiConfig())  # nothing preopened, inherited or reachable
        self._store = store
        self._broken = True
        # A start (instantiation, then init: the runtime's own start and the agent's
        # on_start) has a deadline of its own, at least START_DEADLINE_MS.
        self._arm(max(self._ticks, math.ceil(START_DEADLINE_MS / self.runtime.tick_ms) + 1))
        self._starting = True  # see _entropy_at_start
        try:
            try:
                instance = self._linked.linker.instantiate(store, self.module)
            except w.WasmtimeError as exc:
                failed = self._classify_component(exc, "instantiate")
                if failed.kind in ("deadline", "fuel"):
                    raise failed from None
                raise WasmError(
                    "load",
                    f"{self.name} cannot be instantiated: {_last_line(exc)} (its limits: "
                    f"memory_bytes {limits.memory_bytes}, table_elements "
                    f"{limits.table_elements})",
                ) from None
            self._funcs = {e: instance.get_func(store, e) for e in EXPORTS}
            for export, func in self._funcs.items():
                if export not in self._component.exports:
                    self._component.exports[export] = _Export(w, func, store)
            self._broken = False
            self._invoke_export("init", self.name, packb(self.config), self._last_state)
        finally:
            self._starting = False

    def _invoke_export(self, export: str, *args: Any) -> Any:
        w = self._w
        try:
            out = self._component.exports[export].call(self._funcs[export], self._store, *args)
        except w.WasmtimeError as exc:
            raise self._classify_component(exc, export) from None
        except (TypeError, ValueError, AssertionError) as exc:  # a type that is not the world's
            raise WasmError(
                "abi",
                f"{self.name}.{export} does not have the type of the symbiont:agent world "
                f"(wit/agent.wit): {exc}",
            ) from None
        if isinstance(out, str):  # the err of a result<_, string>
            raise _guest_error(self, export, out)
        if export in _RETURNS_STATE and not isinstance(out, bytes):
            raise WasmError(
                "abi", f"{self.name}.{export} returned {type(out).__name__}, not list<u8>"
            )
        return out

    def _classify_component(self, exc: Any, export: str) -> WasmError:
        text = str(getattr(exc, "message", exc))
        if "interrupt" in text:
            return WasmError(
                "deadline", f"{self.name} ran past its {self.limits.deadline_ms} ms deadline"
            )
        if "fuel" in text:
            return WasmError("fuel", f"{self.name} used up its {self.limits.fuel} units of fuel")
        if "exit" in text.lower():
            return WasmError("trap", f"{self.name}.{export} exited the process: {_last_line(exc)}")
        return WasmError("trap", f"{self.name}.{export} trapped: {_last_line(exc)}")


# A componentized Python agent is several core instances (CPython, its WASI adapter, the
# glue), with their tables and memories; the store's counts are at least these.
_COMPONENT_INSTANCES = 20
_COMPONENT_TABLES = 20
_COMPONENT_MEMORIES = 5


def _guest_error(instance: Instance, export: str, text: str) -> WasmError:
    """The error a component returned, with a kind: ``memory`` for Python's MemoryError,
    ``capability`` for what the sandbox refused (symbiont._guest.SandboxError), else
    ``error``."""
    head = text.partition(":")[0]
    if head == "MemoryError":
        return WasmError(
            "memory",
            f"{instance.name} hit its memory cap of {instance.limits.memory_bytes} bytes in "
            f"{export} ({text})",
        )
    kind = "capability" if head == "SandboxError" else "error"
    return WasmError(kind, f"{instance.name}.{export} failed: {text}")


__all__ = ["EXPORTS", "HOST_INTERFACE", "START_DEADLINE_MS", "ComponentInstance", "ComponentLinked"]
