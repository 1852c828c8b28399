"""Agents: decorators and the agent frames of PROTOCOL.md §8."""

from __future__ import annotations

import pytest
from conftest import DEMO, HostProcess

from symbiont import Agent, every, on
from symbiont._terms import packb, unpackb


def agent_spec(cls: str, *, name: str = "counter", state: object = None, **extra: object) -> dict:
    spec = {"name": name, "module": "agents", "class": cls, "config": {}, "state": state}
    spec.update(extra)
    return spec


def event(seq: int, topic: str, payload: object) -> list:
    return ["event", seq, topic, packb(payload)]


# -- the SDK, in process ---------------------------------------------------------------


def test_decorators_collect_topics_and_timers() -> None:
    class Base(Agent):
        @on("a")
        def first(self, payload: object) -> None: ...

        @every(1.5)
        def tick(self) -> None: ...

    class Sub(Base):
        @on("a")
        @on("b")
        def second(self, payload: object) -> None: ...

        def tick(self) -> None:  # overridden without @every: no longer a timer
            ...

    assert Base.topics() == ["a"] and Base.timers() == {"tick": 1500}
    assert Sub._symbiont_handlers == {"a": ("first", "second"), "b": ("second",)}
    assert Sub.timers() == {}


@pytest.mark.parametrize(
    ("decorator", "arg", "error", "rule"),
    [
        (on, 3, TypeError, "topic to be a str"),
        (on, "", ValueError, "non-empty topic"),
        (every, "1", TypeError, "seconds to be a number"),
        (every, True, TypeError, "seconds to be a number"),
        (every, 0, ValueError, ">= 0.001"),
        (every, float("inf"), ValueError, "finite"),
    ],
)
def test_decorators_reject_bad_arguments(decorator, arg, error, rule) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=rule):
        decorator(arg)


def test_every_twice_is_rejected() -> None:
    with pytest.raises(ValueError, match="only once"):

        @every(1)
        @every(2)
        def f(self: object) -> None: ...


def test_agent_attributes_and_publish_outside_a_host() -> None:
    class A(Agent):
        pass

    agent = A("a1", config={"k": 1})
    assert agent.state == {} and agent.config == {"k": 1}
    assert agent.log.name == "symbiont.agent.a1"
    assert A("a2", state=[1]).state == [1]
    with pytest.raises(RuntimeError, match="not running inside a symbiont host"):
        agent.publish("t", 1)
    with pytest.raises(TypeError, match="non-empty str"):
        A("")


# -- the agent frames, against a real host ---------------------------------------------


def test_ready_announces_topics_and_timers(raw_host: HostProcess) -> None:
    info = raw_host.init(agent=agent_spec("Child"))[2]
    assert info["agent"] == {
        "name": "counter",
        "topics": ["numbers", "fail", "extra"],
        "timers": [{"name": "beat", "every_ms": 250}],
    }


def test_events_in_order_publish_before_cumulative_ack(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Counter"))
    raw_host.send(event(1, "numbers", 1), event(2, "numbers", 2), event(3, "numbers", 3))
    assert [raw_host.recv() for _ in range(3)] == [
        ["publish", "sums", packb(1)],
        ["publish", "sums", packb(3)],
        ["publish", "sums", packb(6)],
    ]
    kind, seq, state_bin = raw_host.recv()
    assert (kind, seq) == ("ack", 3)  # one ack for the three: they were buffered together
    assert isinstance(state_bin, bytes)
    assert unpackb(state_bin) == {"sum": 6, "count": 3}


def test_each_ack_when_deliveries_come_one_by_one(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Counter"))
    for seq in (1, 2):
        raw_host.send(event(seq, "numbers", 10))
        raw_host.recv_kind("publish")
        assert raw_host.recv_kind("ack")[1] == seq


def test_nack_after_acking_earlier_deliveries(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Counter"))
    raw_host.send(event(1, "numbers", 5), event(2, "fail", "x"), event(3, "numbers", 1))
    assert raw_host.recv_kind("publish")[2] == packb(5)
    assert raw_host.recv_kind("ack")[1] == 1
    _, seq, error = raw_host.recv_kind("nack")
    assert seq == 2
    assert error["type"] == "ValueError" and error["message"] == "cannot handle 'x'"
    assert "def fail" in error["traceback"] or "raise ValueError" in error["traceback"]
    assert raw_host.recv_kind("publish")[2] == packb(6)
    _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 3 and unpackb(state_bin)["sum"] == 6


def test_ticks_and_unknown_topics(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Counter"))
    raw_host.send(["tick", 1, "beat"], ["tick", 2, "beat"], event(3, "nobody.listens", 1))
    _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 3 and unpackb(state_bin) == {"beats": 2}
    raw_host.send(["tick", 4, "no_such_timer"])
    assert "no timer 'no_such_timer'" in raw_host.recv_kind("nack")[2]["message"]


def test_state_restored_from_init(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Counter", state={"sum": 10, "count": 1}))
    raw_host.send(event(7, "numbers", 5))
    assert raw_host.recv_kind("publish")[2] == packb(15)
    assert unpackb(raw_host.recv_kind("ack")[2]) == {"sum": 15, "count": 2}


def test_message_to_agent_and_stateless_agent(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Stateless", name="quiet"))
    # Published in on_start, so sent right after ready.
    assert raw_host.recv_kind("publish") == ["publish", "started", packb("quiet")]
    raw_host.send(event(1, "ping", [1, 2]))
    assert raw_host.recv_kind("publish") == ["publish", "pong", packb([1, 2])]
    assert raw_host.recv_kind("ack") == ["ack", 1, None]
    raw_host.send(["msg", "quiet", "hello"])
    raw_host.wait_logs(lambda logs: any("does not handle: 'hello'" in m for _, m in logs))


def test_on_message_updates_state(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Counter"))
    raw_host.send(["msg", "counter", {"hi": 1}], ["tick", 1, "beat"])
    assert unpackb(raw_host.recv_kind("ack")[2]) == {"message": {"hi": 1}, "beats": 1}


def test_agent_calling_the_owner(raw_host: HostProcess) -> None:
    raw_host.init(agent=agent_spec("Asker"))
    raw_host.send(event(1, "ask", None))
    inner = raw_host.recv_kind("call")
    # Deliveries arriving while the handler waits are handled after it, in order.
    raw_host.send(event(2, "ask", None))
    raw_host.send(["reply", inner[1], "n@h"])
    second = raw_host.recv_kind("call")
    raw_host.send(["reply", second[1], "n2@h"])
    _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 2 and unpackb(state_bin) == {"answer": "n2@h"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"module": "no_such_agents"}, "No module named 'no_such_agents'"),
        ({"class": "Missing"}, "has no attribute 'Missing'"),
        ({"class": "NotAnAgent"}, "is not a subclass of symbiont.Agent"),
        ({"class": "BrokenStart"}, "cannot start"),
    ],
)
def test_bad_agent_is_fatal(raw_host: HostProcess, spec: dict, message: str) -> None:
    raw_host.send(["init", 1, {"name": "t", "agent": agent_spec("Counter", **spec)}])
    _, error = raw_host.recv_kind("fatal")
    assert message in error["message"]
    assert raw_host.wait_exit() == 2


def test_demo_billing_agent(raw_host: HostProcess) -> None:
    spec = {
        "name": "billing",
        "module": "demo_agents",
        "class": "Billing",
        "config": {"currency": "CHF"},
        "state": None,
    }
    info = raw_host.init(python_path=[str(DEMO)], agent=spec)[2]
    assert info["agent"]["topics"] == ["orders.created"]
    raw_host.send(event(1, "orders.created", {"id": 1, "amount": 12.5}))
    published = raw_host.recv_kind("publish")
    assert published[1] == "billing.charged"
    assert unpackb(published[2]) == {"order": 1, "amount": 12.5, "total": 12.5, "currency": "CHF"}
    assert unpackb(raw_host.recv_kind("ack")[2]) == {"count": 1, "total": 12.5}


def test_demo_orders_timer(raw_host: HostProcess) -> None:
    spec = {
        "name": "orders",
        "module": "demo_agents",
        "class": "Orders",
        "config": {},
        "state": None,
    }
    info = raw_host.init(python_path=[str(DEMO)], agent=spec)[2]
    assert info["agent"]["timers"] == [{"name": "create", "every_ms": 1000}]
    raw_host.send(["tick", 1, "create"])
    assert unpackb(raw_host.recv_kind("publish")[2])["id"] == 1
    assert unpackb(raw_host.recv_kind("ack")[2]) == {"next_id": 2}
    raw_host.wait_logs(lambda logs: any(m.startswith("order 1 created") for _, m in logs))


def test_health_reports_are_published_as_the_agents_events() -> None:
    from symbiont import Agent
    from symbiont._terms import unpackb

    sent: list[tuple[str, object]] = []
    agent = Agent("payments")
    agent._publisher = lambda topic, payload: sent.append((topic, unpackb(payload)))
    agent.health.degraded("provider slow", p99_ms=900)
    agent.health.ok()
    assert sent == [
        (
            "symbiont.health",
            {
                "kind": "degraded",
                "agent": "payments",
                "node": None,
                "reason": "provider slow",
                "metrics": {"p99_ms": 900},
            },
        ),
        (
            "symbiont.health",
            {"kind": "healthy", "agent": "payments", "node": None, "reason": "", "metrics": {}},
        ),
    ]
    with pytest.raises(ValueError, match="health kind must be healthy, degraded"):
        agent.health.report("sad", "why")
    with pytest.raises(TypeError, match="health reason must be a str"):
        agent.health.degraded(42)  # type: ignore[arg-type]
