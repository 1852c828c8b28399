"""The linker of a Wasm component (``symbiont:agent``, ``wit/agent.wit``): what a component
may import. :class:`ComponentLinked` links the world's host interface (publish, log,
health, now-ms: the host functions here, which act for the instance that runs), WASI 0.2
with nothing reachable, and, in place of each capability the manifest does not grant
(``clock``, ``random``) and of the network, functions that fail the call and say why.
See docs/WASM_ABI.md, "Components".
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._agent import HEALTH_REASON_BYTES
from ._component_values import _bytes_from_c, _Export, _install_fast_bytes
from ._wasm_abi import (
    _active,
    _not_granted,
    _utf8,
    health_checked,
    publish_checked,
)
from ._wasm_instance import Instance
from ._wasm_limits import WasmError

if TYPE_CHECKING:  # pragma: no cover
    from ._wasm_runtime import Runtime

__all__ = ["EXPORTS", "HOST_INTERFACE", "ComponentLinked"]

#: The world's host interface, as components import it.
HOST_INTERFACE = "symbiont:agent/host@0.1.0"
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
        # Each export's types, from the first instance (symbiont._component_values._Export).
        self.exports: dict[str, _Export] = {}
