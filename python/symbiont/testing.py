"""Unit-test an agent in plain pytest, without a BEAM.

:class:`AgentHarness` plays the owner: it creates the agent the way a host does, feeds it
events and ticks, and records what it publishes, with the same msgpack round trips as the
real wire (a payload that could not travel fails here too). ``stop()`` stops it as its
owner does (``on_stop``); ``restart()`` brings it back from its last checkpoint, as after a
crash::

    from symbiont.testing import AgentHarness
    from demo_agents import Billing

    def test_billing_keeps_a_running_total():
        billing = AgentHarness(Billing, config={"currency": "EUR"})
        billing.event("orders.created", {"id": 1, "amount": 9.5})
        billing.restart()
        assert billing.event("orders.created", {"id": 2, "amount": 0.5}) == [
            ("billing.charged", {"order": 2, "amount": 0.5, "total": 10.0, "currency": "EUR"})
        ]

``async def`` handlers, timers and hooks run on an event loop of the harness's own, on a
thread of its own as in a host (``symbiont._aio``): each call waits until the coroutine is
done, and tasks the agent starts keep running between calls. :meth:`AgentHarness.close`
(or a ``with`` block) stops that loop; the pytest fixture ``agent_harness``
(``symbiont.pytest_plugin``, installed with the package) closes what it made::

    def test_billing(agent_harness):
        billing = agent_harness(Billing, config={"currency": "EUR"})
        assert billing.event("orders.created", {"id": 1, "amount": 9.5})

Calls into the BEAM (``self.call``, :mod:`symbiont.erlang`) need a real host; use the
Elixir test suite for those.

The same class built into a Wasm component (``symbiont build-wasm``) runs in the harness
too, sandboxed, under wasmtime: ``AgentHarness(Billing, wasm="billing.wasm")`` drives the
component instead of the class, with the same calls and the same results, so one test
can check both forms (a failure in the sandbox raises :class:`symbiont.wasm.WasmError`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from ._agent import Agent
from ._aio import LoopThread
from ._errors import CancelledError
from ._slots import Phase, Slot, checkpoint_of, state_of
from ._terms import encode_error, packb, unpackb

__all__ = ["AgentHarness"]

_A = TypeVar("_A", bound=Agent)


class AgentHarness(Generic[_A]):
    """Drive one agent as its owner would.

    Parameters
    ----------
    agent_class:
        The :class:`~symbiont.Agent` subclass under test.
    name, config, state:
        What the manifest and the last checkpoint would give it.
    max_topics:
        Its ``max_topics`` (``Symbiont.Agent``, "Topics"): how many distinct topics it may
        publish on before :class:`~symbiont.TopicLimitError`; ``None`` (the default): no
        limit.
    handler_timeout:
        Seconds after which the task of an ``async def`` handler or timer is cancelled,
        as its host would at its ``handler_timeout``: the call then raises
        :class:`~symbiont.CancelledError`. ``None`` (the default): no limit. (A plain
        handler is not interrupted here.)
    wasm, limits:
        The path of ``agent_class`` built into a component: the harness runs that, in
        the sandbox (:class:`symbiont.wasm.WasmAgent`), within ``limits`` (a map of
        :class:`symbiont.wasm.Limits`, as ``limits:`` in the manifest).

    Attributes
    ----------
    agent:
        The running instance (a new one after :meth:`restart`).
    published:
        Every ``(topic, value)`` the agent has published, decoded, in order.
    health:
        Its health reports (``self.health``), as its owner publishes them on
        ``symbiont.health``: ``{"kind", "agent", "node", "reason", "metrics"}``, ``node``
        ``None`` here.
    """

    def __init__(
        self,
        agent_class: type[_A],
        *,
        name: str = "agent",
        config: Mapping[str, Any] | None = None,
        state: Any = None,
        max_topics: int | None = None,
        handler_timeout: float | None = None,
        wasm: str | os.PathLike[str] | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        if not (isinstance(agent_class, type) and issubclass(agent_class, Agent)):
            raise TypeError(f"AgentHarness expects an Agent subclass, got {agent_class!r}")
        self.agent_class = agent_class
        self.name = name
        self.config = dict(config or {})
        self.max_topics = max_topics
        self.handler_timeout = handler_timeout
        self.wasm = os.fspath(wasm) if wasm is not None else None
        self.limits = dict(limits or {})
        self.published: list[tuple[str, Any]] = []
        self.health: list[dict[str, Any]] = []
        self._aio: LoopThread | None = None
        # The agent's slot, as in a host (symbiont._slots): its checkpoints and roll-backs
        # follow the host's rule because they are the host's code.
        self._slot: Slot | None = None
        self.agent = self._start(checkpoint_of(state, packb))

    def _start(self, checkpoint: bytes | None) -> _A:
        state = state_of(checkpoint)
        if self.wasm is not None:
            from .wasm import WasmAgent  # noqa: PLC0415 - wasmtime only when used

            spec = {"wasm": self.wasm, "topics": [], "limits": self.limits, "config": self.config}
            agent: Any = WasmAgent(self.name, config=spec, state=state)
        else:
            agent = self.agent_class(self.name, config=self.config, state=state)
        agent._publisher = self._record
        agent._reporter = self._record_health
        agent._max_topics = self.max_topics
        slot = Slot(1, agent, pack=packb)
        self._call(agent, "on_start")
        # As in a host: the state after on_start is the checkpoint a failure goes back to.
        slot.checkpoint = slot.take_checkpoint()
        slot.phase = Phase.RUNNING
        self._slot = slot
        return cast("_A", agent)

    def _call(self, agent: Agent, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Call the agent's method ``name``; what an ``async def`` returns is awaited on the
        harness's event loop (its task cancelled after ``timeout`` seconds)."""
        awaitable = agent._symbiont_awaitable(name, getattr(agent, name)(*args))
        if awaitable is None:
            return None
        if self._aio is None:
            self._aio = LoopThread("symbiont-harness-asyncio")
        job = self._aio.submit(awaitable)
        if not job.done.wait(timeout):
            job.cancel("ran past its handler_timeout")
            job.done.wait()
            try:
                return job.result()
            except asyncio.CancelledError:
                raise CancelledError(
                    f"agent {self.name!r}: {type(agent).__qualname__}.{name} ran past its "
                    f"handler_timeout of {timeout} s and was cancelled"
                ) from None
        return job.result()

    def close(self) -> None:
        """Stop the harness's event loop (if an ``async def`` made one), cancelling the
        tasks left on it. ``on_stop`` is not called (see :meth:`stop`)."""
        if self._aio is not None:
            self._aio.close()
            self._aio = None

    def __enter__(self) -> AgentHarness[_A]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_running(self) -> Slot:
        slot = self._slot
        if slot is None or not slot.running:
            raise RuntimeError(f"agent {self.name!r} was stopped; restart() it first")
        return slot

    def _record(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, unpackb(payload)))

    def _record_health(self, kind: str, reason: str, metrics: dict[str, Any]) -> None:
        # What the owner publishes for it (less the stamp of a real owner's agent): the
        # report goes through msgpack, as on the wire.
        report = {"kind": kind, "agent": self.name, "node": None, "reason": reason}
        self.health.append(unpackb(packb(report | {"metrics": metrics})))

    def _deliver(self, slot: Slot, name: str, *args: Any) -> list[tuple[str, Any]]:
        before = len(self.published)
        try:
            self._call(slot.agent, name, *args, timeout=self.handler_timeout)
        except BaseException:
            slot.roll_back()  # as in a host (Host._run_delivery): the one rule, in _slots
            raise
        slot.commit()  # the state must checkpoint; when it cannot, it is rolled back
        return self.published[before:]

    def event(self, topic: str, payload: Any) -> list[tuple[str, Any]]:
        """Deliver ``payload`` on ``topic``; returns what the agent published meanwhile.

        An exception from the handler propagates (the real owner would retry the event,
        then dead-letter it), and the state goes back to the last successful delivery's,
        as in a host: the handler's changes are dropped.
        """
        slot = self._check_running()
        return self._deliver(slot, "handle_event", topic, _encode(payload, "payload"))

    def tick(self, timer: str) -> list[tuple[str, Any]]:
        """Run the ``@every`` method ``timer`` once; returns what it published."""
        slot = self._check_running()
        timers = self.agent._symbiont_timers  # a component's are its instance's
        if timer not in timers:
            known = ", ".join(sorted(timers)) or "none"
            raise LookupError(
                f"{self.agent_class.__name__} has no timer {timer!r} (timers: {known})"
            )
        return self._deliver(slot, timer)

    def stop(self) -> list[tuple[str, Any]]:
        """Stop the agent as its owner does: run its ``on_stop``; returns what it published.

        An exception from ``on_stop`` propagates (a host would log it). Events and ticks
        are refused until :meth:`restart`; stopping a stopped agent does nothing.
        """
        slot = self._slot
        if slot is None or not slot.running:
            return []
        slot.phase = Phase.STOPPING
        before = len(self.published)
        try:
            self._call(slot.agent, "on_stop")
        finally:
            slot.phase = Phase.GONE  # its checkpoint stays: the owner's, for restart()
        return self.published[before:]

    def restart(self) -> _A:
        """Replace the agent by a new one started from the last checkpoint, as after a
        crash of its host; returns it."""
        assert self._slot is not None  # __init__ started one
        self.agent = self._start(self._slot.checkpoint)
        return self.agent

    @property
    def state(self) -> Any:
        """The agent's current state."""
        return self.agent.state


def _encode(value: Any, root: str) -> bytes:
    try:
        return packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise encode_error(value, root, exc) from None
