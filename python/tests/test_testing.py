"""symbiont.testing drives agents without a BEAM: here the demo's agents."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from symbiont import Agent, every, on
from symbiont.testing import AgentHarness

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "demo"))
from demo_agents import Billing, Orders  # noqa: E402


def test_the_docstring_example() -> None:
    billing = AgentHarness(Billing, config={"currency": "EUR"})
    billing.event("orders.created", {"id": 1, "amount": 9.5})
    billing.restart()
    assert billing.event("orders.created", {"id": 2, "amount": 0.5}) == [
        ("billing.charged", {"order": 2, "amount": 0.5, "total": 10.0, "currency": "EUR"})
    ]
    assert billing.state == {"count": 2, "total": 10.0}


def test_ticks_and_a_restored_state() -> None:
    orders = AgentHarness(Orders, state={"next_id": 41})
    [(topic, order)] = orders.tick("create")
    assert topic == "orders.created" and order["id"] == 41
    with pytest.raises(LookupError, match=r"Orders has no timer 'nope' \(timers: create\)"):
        orders.tick("nope")


class Fragile(Agent):
    @on("in")
    def take(self, payload: Any) -> None:
        self.state["seen"] = self.state.get("seen", 0) + 1
        if payload == "boom":
            raise ValueError("boom")
        if payload == "unencodable":
            self.state["bad"] = object()
        if payload == "slow":
            self.health.degraded("slow")

    @every(1)
    def beat(self) -> None:
        self.publish("beat", self.state.get("seen", 0))


def test_failures_keep_the_last_checkpoint() -> None:
    agent = AgentHarness(Fragile)
    agent.event("in", "ok")
    with pytest.raises(ValueError, match="boom"):
        agent.event("in", "boom")
    # As in a host, the failed delivery's change is dropped: the state is the checkpoint's.
    assert agent.state == {"seen": 1}
    assert agent.restart().state == {"seen": 1}


def test_a_state_that_cannot_be_checkpointed_fails_like_on_the_wire() -> None:
    agent = AgentHarness(Fragile)
    with pytest.raises(TypeError):
        agent.event("in", "unencodable")
    assert agent.state == {}  # back to before it, as in a host


def test_health_reports_are_kept_apart() -> None:
    agent = AgentHarness(Fragile, name="fragile")
    assert agent.event("in", "slow") == []
    assert [(h["kind"], h["agent"], h["reason"]) for h in agent.health] == [
        ("degraded", "fragile", "slow")
    ]
    assert agent.tick("beat") == [("beat", 1)]


def test_only_agents() -> None:
    with pytest.raises(TypeError, match="expects an Agent subclass"):
        AgentHarness(dict)  # type: ignore[arg-type]


class Closing(Agent):
    @on("in")
    def take(self, payload: Any) -> None:
        self.state["last"] = payload

    def on_stop(self) -> None:
        self.publish("closed", self.state.get("last"))


def test_stop_runs_on_stop_and_restart_resumes() -> None:
    agent = AgentHarness(Closing)
    agent.event("in", 1)
    assert agent.stop() == [("closed", 1)]
    assert agent.stop() == []  # already stopped
    with pytest.raises(RuntimeError, match="was stopped; restart"):
        agent.event("in", 2)
    with pytest.raises(RuntimeError, match="was stopped; restart"):
        agent.tick("beat")
    assert agent.restart().state == {"last": 1}
    assert agent.event("in", 2) == []
