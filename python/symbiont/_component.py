"""Wasm components in the habitat: the ``symbiont:agent`` world (``wit/agent.wit``).

:meth:`symbiont.wasm.Runtime.instantiate` gives a :class:`ComponentInstance` for a
component (detected from the binary's header, :func:`symbiont.wasm.is_component`) and an
:class:`symbiont.wasm.Instance` for a core module. Both run under the same
:class:`symbiont.wasm.Limits` (epoch deadline, fuel, memory, tables, instances, events per
call), publish through the same checks and outbox (what a call publishes goes out only if
it succeeds), and are rebuilt after a failed call from the last good state. See
docs/WASM_ABI.md, "Components".

This module owns :class:`ComponentInstance`: a component instance's calls, state and
rebuilds. What a component may import is ``symbiont._component_linker``'s
(:class:`ComponentLinked`); how values cross into it, ``symbiont._component_values``'s.

WASI: a component gets WASI 0.2 with nothing preopened, inherited or reachable (no
directory, no environment, no arguments, no stdin, no network: wasmtime's sockets refuse
every address); ``wasi:clocks`` and ``wasi:random`` fail the call with a ``capability``
error unless the manifest grants ``clock`` or ``random``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._component_linker import EXPORTS as EXPORTS
from ._component_linker import HOST_INTERFACE as HOST_INTERFACE
from ._component_linker import ComponentLinked as ComponentLinked
from ._component_values import _Export
from ._terms import packb
from ._wasm_abi import (
    Imports,
    _active,
    _check_msgpack,
    _last_line,
)
from ._wasm_instance import Instance
from ._wasm_limits import Limits, WasmError

if TYPE_CHECKING:  # pragma: no cover
    from ._wasm_runtime import Runtime

# The exports that return a state (msgpack bytes).
_RETURNS_STATE = frozenset({"handle", "tick", "snapshot"})
#: The least deadline of an instance's start (instantiation and ``init``, which runs a
#: Python agent's ``on_start``): CPython's own start in the component takes tens of ms.
START_DEADLINE_MS = 1000


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
