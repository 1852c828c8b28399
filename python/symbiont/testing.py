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

Calls into the BEAM (``self.call``, :mod:`symbiont.erlang`) need a real host; use the
Elixir test suite for those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from ._agent import Agent
from ._terms import packb, unpackb

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
    ) -> None:
        if not (isinstance(agent_class, type) and issubclass(agent_class, Agent)):
            raise TypeError(f"AgentHarness expects an Agent subclass, got {agent_class!r}")
        self.agent_class = agent_class
        self.name = name
        self.config = dict(config or {})
        self.max_topics = max_topics
        self.published: list[tuple[str, Any]] = []
        self.health: list[dict[str, Any]] = []
        self._checkpoint = packb(state)
        self._stopped = False
        self.agent = self._start()

    def _start(self) -> _A:
        state = unpackb(self._checkpoint)
        agent = self.agent_class(self.name, config=self.config, state=state)
        agent._publisher = self._record
        agent._reporter = self._record_health
        agent._max_topics = self.max_topics
        agent.on_start()
        # As in a host: the state after on_start is the checkpoint a failure goes back to.
        self._checkpoint = packb(agent.state)
        self._stopped = False
        return agent

    def _check_running(self) -> None:
        if self._stopped:
            raise RuntimeError(f"agent {self.name!r} was stopped; restart() it first")

    def _record(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, unpackb(payload)))

    def _record_health(self, kind: str, reason: str, metrics: dict[str, Any]) -> None:
        # What the owner publishes for it (less the stamp of a real owner's agent): the
        # report goes through msgpack, as on the wire.
        report = {"kind": kind, "agent": self.name, "node": None, "reason": reason}
        self.health.append(unpackb(packb(report | {"metrics": metrics})))

    def _deliver(self, handler: Any, *args: Any) -> list[tuple[str, Any]]:
        before = len(self.published)
        try:
            handler(*args)
            # The host checkpoints the state after each delivery: it must encode.
            checkpoint = packb(self.agent.state)
        except BaseException:
            # As in a host: a failed delivery leaves the state as it was before it.
            self.agent.state = unpackb(self._checkpoint)
            raise
        self._checkpoint = checkpoint
        return self.published[before:]

    def event(self, topic: str, payload: Any) -> list[tuple[str, Any]]:
        """Deliver ``payload`` on ``topic``; returns what the agent published meanwhile.

        An exception from the handler propagates (the real owner would retry the event,
        then dead-letter it), and the state goes back to the last successful delivery's,
        as in a host: the handler's changes are dropped.
        """
        self._check_running()
        return self._deliver(self.agent.handle_event, topic, packb(payload))

    def tick(self, timer: str) -> list[tuple[str, Any]]:
        """Run the ``@every`` method ``timer`` once; returns what it published."""
        self._check_running()
        if timer not in type(self.agent).timers():
            known = ", ".join(sorted(type(self.agent).timers())) or "none"
            raise LookupError(
                f"{self.agent_class.__name__} has no timer {timer!r} (timers: {known})"
            )
        return self._deliver(getattr(self.agent, timer))

    def stop(self) -> list[tuple[str, Any]]:
        """Stop the agent as its owner does: run its ``on_stop``; returns what it published.

        An exception from ``on_stop`` propagates (a host would log it). Events and ticks
        are refused until :meth:`restart`; stopping a stopped agent does nothing.
        """
        if self._stopped:
            return []
        self._stopped = True
        before = len(self.published)
        self.agent.on_stop()
        return self.published[before:]

    def restart(self) -> _A:
        """Replace the agent by a new one started from the last checkpoint, as after a
        crash of its host; returns it."""
        self.agent = self._start()
        return self.agent

    @property
    def state(self) -> Any:
        """The agent's current state."""
        return self.agent.state
