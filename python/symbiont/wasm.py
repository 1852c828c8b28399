"""Wasm modules in a sandbox: the runtime under Wasm agents and plug-ins (docs/WASM_ABI.md).

A :class:`Runtime` owns the wasmtime engines, the compiled-module cache and the epoch
ticker that enforces call deadlines; a host has one. :meth:`Runtime.instantiate` gives an
:class:`Instance`: one module, one store, its own memory cap, deadline, fuel and WASI
grants. Everything that can go wrong inside a call (a trap, a deadline, running out of
fuel, hitting the memory cap, breaking the ABI, using a capability that was not granted)
comes out as a :class:`WasmError` with a ``kind``; the instance is then rebuilt before its
next call, so one bad message never poisons the next. What a call publishes goes out only
when it succeeds: a failed call leaves no partial output.

wasmtime is imported on first use: a host that runs no Wasm never loads it. It is an
extra of the package (``pip install 'symbiont[wasm]'``); without it, a :class:`Runtime`
raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from ._agent import Agent
from ._terms import packb as _packb
from ._wasm_abi import ABI_VERSION, HEALTH_KINDS, LOG_LINE_BYTES, LOG_LINES_PER_CALL, Imports
from ._wasm_instance import Instance
from ._wasm_limits import GRANTS, Limits, WasmError
from ._wasm_runtime import Runtime, default_runtime, is_component

# The public API: the rest lives in the private modules it re-exports from (_wasm_limits,
# _wasm_abi, _wasm_instance, _wasm_runtime).
__all__ = [
    "ABI_VERSION",
    "GRANTS",
    "HEALTH_KINDS",
    "LOG_LINES_PER_CALL",
    "LOG_LINE_BYTES",
    "Imports",
    "Instance",
    "Limits",
    "Runtime",
    "WasmAgent",
    "WasmError",
    "WasmPlugin",
    "default_runtime",
    "is_component",
]


class WasmPlugin:
    """A Wasm module a Python agent calls like a function (``self.wasm("pricing")``).

    Declared in the agent's config under ``"wasm"``: ``{"pricing": "priv/wasm/pricing.wasm"}``
    or, with limits, ``{"pricing": {"path": ..., "deadline_ms": 50, "fuel": 10_000_000,
    "memory_bytes": 16_777_216, "grants": ["clock"], "config": 1.2}}``. Relative paths are
    relative to the host's working directory (the other limits of :class:`Limits` may be
    given too). What the module publishes goes out as the agent's events when the call
    succeeds; its log lines and stdout go to the agent's log.
    """

    def __init__(self, agent: Any, name: str, spec: Any) -> None:
        if isinstance(spec, (str, os.PathLike)):
            spec = {"path": spec}
        if not isinstance(spec, dict) or "path" not in spec:
            raise ValueError(
                f"agent {agent.name!r}: Wasm plug-in {name!r} must be a path or a map with "
                f'"path", got {spec!r}'
            )
        spec = dict(spec)
        path = spec.pop("path")
        plugin_config = spec.pop("config", None)
        try:
            limits = Limits.from_config(spec)
        except ValueError as exc:
            raise ValueError(f"agent {agent.name!r}: Wasm plug-in {name!r}: {exc}") from None
        self.name = name
        self._agent = agent
        imports = Imports.for_agent(
            agent, lambda kind, reason: agent.log.warning("%s reports %s: %s", name, kind, reason)
        )
        instance = default_runtime().instantiate(
            path, limits=limits, imports=imports, name=f"{agent.name}/{name}", config=plugin_config
        )
        if hasattr(instance, "timers"):  # a component (symbiont._component)
            raise ValueError(
                f"agent {agent.name!r}: Wasm plug-in {name!r} ({path}) is a component of the "
                "symbiont:agent world: a component is an agent (wasm: in the manifest), not a "
                "plug-in; a plug-in is a core module (docs/WASM_ABI.md)"
            )
        self.instance = instance

    def call(self, payload: Any, topic: str | None = None) -> Any:
        """Run the module on ``payload`` (as ``[topic, payload]``, topic the plug-in's name
        unless given) and return its decoded reply. Raises :class:`WasmError`."""
        from ._terms import unpackb  # noqa: PLC0415

        return unpackb(self.instance.call(topic or self.name, _packb(payload)))


class WasmAgent(Agent):
    """An agent whose logic is a Wasm module (``wasm:`` in the manifest).

    Its config, built by the owner from the manifest: ``"wasm"`` the module's path,
    ``"topics"`` the topics it consumes, ``"limits"`` its sandbox (:class:`Limits`) and
    ``"config"`` what ``symbiont_init`` receives. Each event's payload bytes go to the
    module as they were published; what it publishes goes out as this agent's events, once
    the call has succeeded.
    Its state (when it exports ``symbiont_state``) is checkpointed with each ack, so a
    restarted host resumes it through ``symbiont_migrate``.

    A failed call (trap, deadline, fuel, memory cap, limit, capability) fails that event (it
    goes to the dead letters, and nothing it published goes out) and reports health on
    ``symbiont.health``: ``degraded`` at the first failure, ``failing`` at the third in a
    row, ``healthy`` at the next success.
    """

    FAILING_AFTER = 3

    def on_start(self) -> None:
        """Load the module, then hand it the checkpointed state, if any.

        A component (``symbiont:agent``) keeps its state as the agent's own, decoded, as a
        native Python agent does: an agent moved from ``python:`` to ``wasm:`` (or back)
        keeps it. A core module's is ``{"wasm_state": <its bytes>}`` (WASM_ABI.md §4).
        """
        self.instance = self._instantiate(Imports.for_agent(self, self.health.report))
        self._failures = 0
        if self.is_component:
            self._symbiont_timers = self.instance.timers()  # type: ignore[attr-defined,misc]
            for timer in self._symbiont_timers:
                if hasattr(type(self), timer):
                    raise ValueError(
                        f"Wasm agent {self.name!r}: timer {timer!r} is the name of a "
                        "method of the host's agent; rename it"
                    )
                setattr(self, timer, functools.partial(self._tick, timer))
            if self.state not in (None, {}):
                self.instance.migrate(_packb(self.state))
            return
        saved = self.state.get("wasm_state") if isinstance(self.state, dict) else None
        if isinstance(saved, bytes):
            self.instance.migrate(saved)

    @property
    def is_component(self) -> bool:
        """Whether the agent runs a component (``symbiont:agent``) rather than a module."""
        return hasattr(self.instance, "timers")

    def probe(self) -> None:
        """Check that the module can start, without starting the agent: compile it (through
        the cache), check its exports against the ABI, instantiate it within its limits
        and run its ``_initialize`` and ``symbiont_init``, as :meth:`on_start` does, with
        imports that go nowhere (what it publishes, logs or reports is dropped), then drop
        the instance. Raises what :meth:`on_start` would: :class:`WasmError`, or
        ``ValueError`` for bad limits. ``symbiont._probe`` calls it before the agent runs.
        """
        self._instantiate(Imports())

    def _instantiate(self, imports: Imports) -> Instance:
        spec = self.config
        if not isinstance(spec.get("wasm"), str):
            raise ValueError(f"Wasm agent {self.name!r} needs its module path in config['wasm']")
        return default_runtime().instantiate(
            spec["wasm"],
            limits=Limits.from_config(spec.get("limits")),
            imports=imports,
            name=self.name,
            config=spec.get("config"),
        )

    def subscriptions(self) -> list[str]:
        """The topics of the manifest; for a component that the manifest gives none, its
        own (its ``@on`` topics). A core module does not declare its own."""
        topics = list(self.config.get("topics") or [])
        if not topics and self.is_component:
            topics = self.instance.subscriptions()  # type: ignore[attr-defined]
        return topics

    def handle_event(self, topic: str, payload: bytes) -> None:
        """Run the module on the event's bytes; see the class docstring for failures."""
        self._guarded_call(self.instance.call, topic, payload)

    def _tick(self, timer: str) -> None:
        """Run a component's timer ``timer`` (its ``@every``)."""
        self._guarded_call(self.instance.tick, timer)  # type: ignore[attr-defined]

    def _guarded_call(self, run: Callable[..., Any], *args: Any) -> None:
        try:
            run(*args)
        except WasmError as exc:
            self._failures += 1
            if self._failures == 1:
                self.health.degraded(str(exc), failures=self._failures)
            elif self._failures == self.FAILING_AFTER:
                self.health.failing(
                    f"{self._failures} failures in a row, the last: {exc}",
                    failures=self._failures,
                )
            raise
        if self._failures:
            self._failures = 0
            self.health.ok("a call succeeded again")
        state = self.instance.last_state
        if state is None:
            return
        if self.is_component:
            from ._terms import unpackb  # noqa: PLC0415

            try:
                self.state = unpackb(state)
            except Exception as exc:  # noqa: BLE001 - any decoding failure is the module's
                self.instance._broken = True
                raise WasmError(
                    "abi", f"{self.name}: its snapshot is not one msgpack value: {exc}"
                ) from None
        else:
            self.state = {"wasm_state": state}
