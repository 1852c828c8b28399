"""Agents: decorators and the agent frames of PROTOCOL.md §8."""

from __future__ import annotations

import re

import pytest
from conftest import DEMO, HostProcess

from symbiont import Agent, every, on
from symbiont._terms import packb, unpackb


def agent_spec(cls: str, *, name: str = "counter", state: object = None, **extra: object) -> dict:
    spec = {"name": name, "module": "agents", "class": cls, "config": {}, "state": state}
    spec.update(extra)
    return spec


def event(seq: int, topic: str, payload: object, slot: int = 1) -> list:
    return ["event", slot, seq, topic, packb(payload)]


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
        (every, 0, ValueError, r"in 0\.001\.\.4294967\.295"),
        (every, float("inf"), ValueError, "finite"),
        # Past what the owner's timers take (PROTOCOL.md §9): 2^32-1 ms.
        (every, 4294967.296, ValueError, r"in 0\.001\.\.4294967\.295"),
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
    assert raw_host.init_agent(agent_spec("Child")) == {
        "name": "counter",
        "topics": ["numbers", "fail", "extra"],
        "timers": [{"name": "beat", "every_ms": 250}],
    }


def test_events_in_order_publish_before_cumulative_ack(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Counter"))
    raw_host.send(event(1, "numbers", 1), event(2, "numbers", 2), event(3, "numbers", 3))
    # Each with the seq of the delivery it was made in, and n = 0 (PROTOCOL.md §8.1).
    assert [raw_host.recv() for _ in range(3)] == [
        ["publish", 1, "sums", packb(1), 1, 0],
        ["publish", 1, "sums", packb(3), 2, 0],
        ["publish", 1, "sums", packb(6), 3, 0],
    ]
    kind, slot, seq, state_bin = raw_host.recv()
    assert (kind, slot, seq) == ("ack", 1, 3)  # one ack for the three: buffered together
    assert isinstance(state_bin, bytes)
    assert unpackb(state_bin) == {"sum": 6, "count": 3}


def test_each_ack_when_deliveries_come_one_by_one(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Counter"))
    for seq in (1, 2):
        raw_host.send(event(seq, "numbers", 10))
        raw_host.recv_kind("publish")
        assert raw_host.recv_kind("ack")[2] == seq


def test_nack_after_acking_earlier_deliveries(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Counter"))
    raw_host.send(event(1, "numbers", 5), event(2, "fail", "x"), event(3, "numbers", 1))
    assert raw_host.recv_kind("publish")[3] == packb(5)
    assert raw_host.recv_kind("ack")[2] == 1
    _, slot, seq, error = raw_host.recv_kind("nack")
    assert (slot, seq) == (1, 2)
    assert error["type"] == "ValueError" and error["message"] == "cannot handle 'x'"
    assert "def fail" in error["traceback"] or "raise ValueError" in error["traceback"]
    assert raw_host.recv_kind("publish")[3] == packb(6)
    _, _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 3 and unpackb(state_bin)["sum"] == 6


def test_publish_ids_in_handlers_timers_and_outside_them(host: HostProcess) -> None:
    # PROTOCOL.md §8.1: (seq, n) of the delivery being handled, n from 0; outside a
    # handler the last seq handled (on start: the agent_start's), n from -1 down.
    def ids(frames: list[list]) -> list[tuple]:
        return [(f[2], unpackb(f[3]), f[4], f[5]) for f in frames]

    host.send(["agent_start", 1, agent_spec("Fanout", config={"fail_once": [2]}, seq=40)])
    assert ids([host.recv_kind("publish")]) == [("fan.start", 0, 40, -1)]
    assert host.recv_kind("agent_ready")[1] == 1
    host.send(event(41, "fan.in", 1), ["tick", 1, 42, "beat"], event(43, "fan.in", 2))
    got = [host.recv_kind("publish") for _ in range(5)]
    assert ids(got) == [
        ("fan.out", [1, "a"], 41, 0),
        ("fan.out", [1, "b"], 41, 1),
        ("fan.beat", 1, 42, 0),
        ("fan.out", [2, "a"], 43, 0),
        ("fan.out", [2, "b"], 43, 1),
    ]
    assert host.recv_kind("ack")[1:3] == [1, 42]
    assert host.recv_kind("nack")[1:3] == [1, 43]
    # Sent again with its seq, it publishes the same ids again (then succeeds).
    host.send(event(43, "fan.in", 2))
    again = [host.recv_kind("publish") for _ in range(2)]
    assert ids(again) == ids(got[3:])
    assert host.recv_kind("ack")[1:3] == [1, 43]
    host.send(["agent_stop", 1])
    assert ids([host.recv_kind("publish")]) == [("fan.stop", 2, 43, -1)]


def test_agent_start_with_a_bad_seq_fails_its_slot(host: HostProcess) -> None:
    _, slot, error = host.start_agent(agent_spec("Counter", seq=-1), slot=2)
    assert slot == 2 and "agent seq must be an int in 0..2^63-1, got -1" in error["message"]
    _, slot, error = host.start_agent(agent_spec("Counter", seq=1 << 63), slot=3)
    assert slot == 3 and f"got {1 << 63}" in error["message"]


def test_a_failed_delivery_leaves_no_change_in_the_state(host: HostProcess) -> None:
    # Handled together, so acked together: the ack of seq 1 goes out when 2 fails, and
    # must carry the state after 1, not 2's half-way change (§8).
    host.start_agent(agent_spec("Careless"), slot=1)
    host.send(event(1, "numbers", 1), event(2, "half", 1000), event(3, "numbers", 2))
    assert host.recv_kind("publish")[3] == packb(1)
    _, _, seq, state_bin = host.recv_kind("ack")
    assert seq == 1 and unpackb(state_bin) == {"sum": 1, "count": 1}
    assert host.recv_kind("nack")[1:3] == [1, 2]
    assert host.recv_kind("publish")[3] == packb(3)
    _, _, seq, state_bin = host.recv_kind("ack")
    assert seq == 3 and unpackb(state_bin) == {"sum": 3, "count": 2}


def test_ticks_and_unknown_topics(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Counter"))
    raw_host.send(["tick", 1, 1, "beat"], ["tick", 1, 2, "beat"], event(3, "nobody.listens", 1))
    _, _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 3 and unpackb(state_bin) == {"beats": 2}
    raw_host.send(["tick", 1, 4, "no_such_timer"])
    assert "no timer 'no_such_timer'" in raw_host.recv_kind("nack")[3]["message"]


def test_state_restored_from_agent_start(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Counter", state={"sum": 10, "count": 1}))
    raw_host.send(event(7, "numbers", 5))
    assert raw_host.recv_kind("publish")[3] == packb(15)
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"sum": 15, "count": 2}


def test_message_to_agent_and_stateless_agent(raw_host: HostProcess) -> None:
    raw_host.init()
    raw_host.send(["agent_start", 1, agent_spec("Stateless", name="quiet")])
    # Published in on_start, so sent before agent_ready; outside a handler: seq 0, n -1.
    assert raw_host.recv() == ["publish", 1, "started", packb("quiet"), 0, -1]
    assert raw_host.recv_kind("agent_ready")[1] == 1
    raw_host.send(event(1, "ping", [1, 2]))
    assert raw_host.recv_kind("publish") == ["publish", 1, "pong", packb([1, 2]), 1, 0]
    assert raw_host.recv_kind("ack") == ["ack", 1, 1, None]
    raw_host.send(["msg", "quiet", "hello"])
    raw_host.wait_logs(lambda logs: any("does not handle: 'hello'" in m for _, m in logs))


def test_on_message_updates_state(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Counter"))
    raw_host.send(["msg", "counter", {"hi": 1}], ["tick", 1, 1, "beat"])
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"message": {"hi": 1}, "beats": 1}


def test_agent_calling_the_owner(raw_host: HostProcess) -> None:
    raw_host.init_agent(agent_spec("Asker"))
    raw_host.send(event(1, "ask", None))
    inner = raw_host.recv_kind("call")
    # Deliveries arriving while the handler waits are handled after it, in order.
    raw_host.send(event(2, "ask", None))
    raw_host.send(["reply", inner[1], "n@h"])
    second = raw_host.recv_kind("call")
    raw_host.send(["reply", second[1], "n2@h"])
    _, _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 2 and unpackb(state_bin) == {"answer": "n2@h"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"module": "no_such_agents"}, "No module named 'no_such_agents'"),
        ({"class": "Missing"}, "has no attribute 'Missing'"),
        ({"class": "NotAnAgent"}, "is not a subclass of symbiont.Agent"),
        ({"class": "BrokenStart"}, "cannot start"),
        ({"class": "BadTopics"}, "topics must be non-empty str"),
        ({"config": [1]}, "agent config must be a map or nil"),
    ],
)
def test_bad_agent_fails_its_slot_only(host: HostProcess, spec: dict, message: str) -> None:
    _, slot, error = host.start_agent(agent_spec("Counter", **spec), slot=4)
    assert slot == 4 and message in error["message"]
    assert {"type", "message", "traceback"} <= error.keys()
    # The host serves on: another agent starts and gets its events.
    assert host.start_agent(agent_spec("Counter"), slot=5)[0] == "agent_ready"
    host.send(["event", 5, 1, "numbers", packb(2)])
    assert host.recv_kind("publish") == ["publish", 5, "sums", packb(2), 1, 0]
    assert host.recv_kind("ack")[1:3] == [5, 1]
    host.send(["agent_stop", 4])  # the owner may stop an agent whose start failed
    assert host.call("hostmod", "echo", "still serving")[2] == "still serving"


def test_agent_in_init_is_fatal(raw_host: HostProcess) -> None:
    raw_host.send(["init", 2, {"name": "t", "agent": agent_spec("Counter")}])
    _, error = raw_host.recv_kind("fatal")
    assert "started with agent_start frames" in error["message"]
    assert raw_host.wait_exit() == 2


def test_agents_in_one_host_have_their_own_slots_and_state(host: HostProcess) -> None:
    host.start_agent(agent_spec("Counter", name="a"), slot=1)
    host.start_agent(agent_spec("Counter", name="b", state={"sum": 100, "count": 0}), slot=2)
    host.send(
        ["event", 1, 1, "numbers", packb(1)],
        ["event", 2, 1, "numbers", packb(5)],
        ["event", 1, 2, "numbers", packb(2)],
    )
    frames = [host.recv() for _ in range(5)]
    publishes = [f for f in frames if f[0] == "publish"]
    assert publishes == [
        ["publish", 1, "sums", packb(1), 1, 0],
        ["publish", 2, "sums", packb(105), 1, 0],
        ["publish", 1, "sums", packb(3), 2, 0],
    ]
    acks = {f[1]: (f[2], unpackb(f[3])) for f in frames if f[0] == "ack"}
    assert acks == {1: (2, {"sum": 3, "count": 2}), 2: (1, {"sum": 105, "count": 1})}
    # Messages find an agent by name.
    host.send(["msg", "b", {"hi": 2}], ["tick", 2, 2, "beat"])
    _, slot, seq, state_bin = host.recv_kind("ack")
    assert (slot, seq) == (2, 2) and unpackb(state_bin)["message"] == {"hi": 2}


def test_agent_stop_calls_on_stop_and_frees_the_slot(host: HostProcess) -> None:
    host.start_agent(agent_spec("Stoppable"), slot=3)
    host.send(["event", 3, 1, "numbers", packb(1)], ["agent_stop", 3])
    assert host.recv_kind("publish") == ["publish", 3, "sums", packb(1), 1, 0]
    assert host.recv_kind("ack")[1:3] == [3, 1]  # the pending ack goes out before the stop
    # on_stop publishes outside a handler: the last seq handled, n from -1.
    assert host.recv_kind("publish") == ["publish", 3, "stopped", packb("counter"), 1, -1]
    host.send(["agent_stop", 3])  # a free slot: ignored
    host.send(["event", 3, 2, "numbers", packb(1)])
    assert host.recv() is None  # EOF: an event for a free slot is a protocol error
    assert host.wait_exit() == 3
    assert "slot 3, which runs no agent" in host.stderr_text()


def test_agent_stop_waits_for_the_deliveries_before_it(host: HostProcess) -> None:
    host.start_agent(agent_spec("StoppableAsker"), slot=1)
    host.send(event(1, "ask", None))
    inner = host.recv_kind("call")
    # The stop comes while the handler waits on the owner: it runs after that delivery.
    host.send(["agent_stop", 1])
    host.send(["reply", inner[1], "n@h"])
    _, slot, seq, state_bin = host.recv_kind("ack")
    assert (slot, seq, unpackb(state_bin)) == (1, 1, {"answer": "n@h"})
    assert host.recv_kind("publish") == ["publish", 1, "stopped", packb("n@h"), 1, -1]
    host.send(event(2, "ask", None))
    assert host.recv() is None
    assert host.wait_exit() == 3


def test_on_stop_that_raises_is_logged(host: HostProcess) -> None:
    host.start_agent(agent_spec("BrokenStop"), slot=1)
    host.send(["agent_stop", 1])
    host.wait_logs(lambda logs: any("on_stop failed" in m and "cannot stop" in m for _, m in logs))
    assert host.start_agent(agent_spec("Counter"), slot=2)[0] == "agent_ready"


def test_unencodable_state_is_a_nack_for_its_slot(host: HostProcess) -> None:
    host.start_agent(agent_spec("Counter", name="good"), slot=1)
    host.start_agent(agent_spec("Unencodable", name="bad"), slot=2)
    host.send(event(1, "numbers", 1, slot=1), event(1, "bad", None, slot=2))
    frames = [host.recv() for _ in range(3)]
    assert frames[0] == ["publish", 1, "sums", packb(1), 1, 0]
    acks = [f for f in frames if f[0] == "ack"]
    nacks = [f for f in frames if f[0] == "nack"]
    assert [a[1:3] for a in acks] == [[1, 1]]
    assert [n[1:3] for n in nacks] == [[2, 1]]
    assert "cannot be checkpointed" in nacks[0][3]["message"]


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("publish", "payload['tags']: a set is not a msgpack type; use a list"),
        ("keep", "the agent state cannot be checkpointed: state['seen'][1]: a set is not"),
        ("send", "value['ids'][0]: a frozenset is not a msgpack type"),
        ("call", "args[0][1]: a set is not a msgpack type"),
    ],
)
def test_values_msgpack_would_change_are_refused_where_they_are_made(
    raw_host: HostProcess, topic: str, message: str
) -> None:
    """PROTOCOL.md §2: a set would arrive as a list; it is a nack naming where, and
    nothing goes out."""
    raw_host.init_agent(agent_spec("Settish"))
    raw_host.send(event(1, topic, "x"))
    _, _, seq, error = raw_host.recv_kind("nack")
    assert seq == 1 and error["type"] == "TypeError"
    assert message in error["message"], error["message"]


def test_duplicate_slot_is_a_protocol_error(host: HostProcess) -> None:
    host.start_agent(agent_spec("Counter"), slot=1)
    host.send(["agent_start", 1, agent_spec("Counter")])
    assert host.recv() is None
    assert host.wait_exit() == 3
    assert "slot 1 already runs agent 'counter'" in host.stderr_text()


def test_demo_billing_agent(raw_host: HostProcess) -> None:
    spec = {
        "name": "billing",
        "module": "demo_agents",
        "class": "Billing",
        "config": {"currency": "CHF"},
        "state": None,
    }
    info = raw_host.init_agent(spec, python_path=[str(DEMO)])
    assert info["topics"] == ["orders.created"]
    raw_host.send(event(1, "orders.created", {"id": 1, "amount": 12.5}))
    published = raw_host.recv_kind("publish")
    assert published[2] == "billing.charged"
    assert unpackb(published[3]) == {"order": 1, "amount": 12.5, "total": 12.5, "currency": "CHF"}
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"count": 1, "total": 12.5}


def test_demo_orders_timer(raw_host: HostProcess) -> None:
    spec = {
        "name": "orders",
        "module": "demo_agents",
        "class": "Orders",
        "config": {},
        "state": None,
    }
    info = raw_host.init_agent(spec, python_path=[str(DEMO)])
    assert info["timers"] == [{"name": "create", "every_ms": 1000}]
    raw_host.send(["tick", 1, 1, "create"])
    assert unpackb(raw_host.recv_kind("publish")[3])["id"] == 1
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"next_id": 2}
    raw_host.wait_logs(lambda logs: any(m.startswith("order 1 created") for _, m in logs))


def test_health_reports_go_to_the_owner_as_reports_not_publishes() -> None:
    from symbiont import Agent

    reports: list[tuple[str, str, dict]] = []
    published: list[str] = []
    agent = Agent("payments")
    agent._publisher = lambda topic, payload: published.append(topic)
    agent._reporter = lambda kind, reason, metrics: reports.append((kind, reason, metrics))
    agent.health.degraded("provider slow", p99_ms=900)
    agent.health.ok()
    # A report names nobody: the owner stamps it with the agent in its slot (§8.3).
    assert reports == [("degraded", "provider slow", {"p99_ms": 900}), ("healthy", "", {})]
    assert published == []
    with pytest.raises(ValueError, match="health kind must be healthy, degraded"):
        agent.health.report("sad", "why")
    with pytest.raises(TypeError, match="health reason must be a str"):
        agent.health.degraded(42)  # type: ignore[arg-type]


def test_health_reports_are_bounded_where_they_are_made() -> None:
    from symbiont import Agent
    from symbiont._agent import HEALTH_REASON_BYTES

    reports: list[tuple[str, str, dict]] = []
    agent = Agent("payments")
    agent._reporter = lambda kind, reason, metrics: reports.append((kind, reason, metrics))
    agent.health.failing("é" * 10_000_000)
    [(_, reason, _)] = reports
    assert len(reason.encode()) <= HEALTH_REASON_BYTES and reason.endswith(" [truncated]")
    for metrics, error, message in [
        ({f"m{i}": i for i in range(17)}, ValueError, "at most 16 metrics, got 17"),
        ({"x" * 65: 1}, ValueError, "is over 64 bytes"),
        ({"blob": "z" * 257}, ValueError, "'blob' is a str of over 256 bytes"),
        ({"nested": {"a": 1}}, TypeError, "'nested' must be None, a bool, a number or a str"),
        ({"nan": float("nan")}, ValueError, "'nan' = nan is not a finite number"),
        ({"big": 1 << 64}, ValueError, "out of -2^63..2^64-1"),
    ]:
        with pytest.raises(error, match=re.escape(message)):
            agent.health.degraded("why", **metrics)
    assert len(reports) == 1


def test_publishing_on_the_nodes_own_topics_is_refused_where_it_is_made() -> None:
    from symbiont import Agent, ReservedTopicError

    published: list[str] = []
    agent = Agent("forger")
    agent._publisher = lambda topic, payload: published.append(topic)
    for topic in ("symbiont.health", "symbiont.remediation", "symbiont.dead_letter", "symbiont.x"):
        with pytest.raises(ReservedTopicError) as refused:
            agent.publish(topic, {"kind": "failing", "agent": "someone-else"})
        assert str(refused.value) == (
            f"agent 'forger' cannot publish on {topic!r}: topics starting with 'symbiont.' "
            "are published by Symbiont itself, not by agents (report health with "
            "self.health or the Wasm health import)"
        )
        assert isinstance(refused.value, ValueError)
    agent.publish("symbiontic.ok", 1)
    assert published == ["symbiontic.ok"]


def test_a_health_report_is_a_frame_of_its_own_within_the_slot_window(host: HostProcess) -> None:
    window = {"frames": 1, "bytes": 1 << 20}
    assert host.start_agent(agent_spec("Reporter", window=window))[0] == "agent_ready"
    host.send(event(1, "report", ["degraded", "slow"]), event(2, "report", ["healthy", ""]))
    first = host.recv_kind("health")
    assert first == ["health", 1, "degraded", "slow", {"seq": 0}]
    # The window is full: the second waits for the owner's credit (§8.2), the frame's size.
    host.assert_silent(0.2)
    host.send(["credit", 1, 1, len(packb(first))])
    assert host.recv_kind("health") == ["health", 1, "healthy", "", {"seq": 1}]
    assert host.recv_kind("ack")[2] == 2


def test_health_reports_are_dropped_for_an_owner_that_does_not_take_them(
    raw_host: HostProcess,
) -> None:
    raw_host.init(health=None)  # an owner before PROTOCOL.md §8.3 would refuse the frame
    assert raw_host.start_agent(agent_spec("Reporter"))[0] == "agent_ready"
    raw_host.send(event(1, "report", ["degraded", "slow"]))
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]
    raw_host.wait_logs(lambda logs: any("does not take health reports" in m for _, m in logs))


def test_a_publish_on_the_nodes_own_topics_raises_in_the_agent_and_sends_nothing(
    host: HostProcess,
) -> None:
    assert host.start_agent(agent_spec("Reporter"))[0] == "agent_ready"
    host.send(event(1, "forge", "symbiont.health"))
    ack = host.recv_kind("ack")  # no publish frame before it
    assert unpackb(ack[3])["refused"] == (
        "ReservedTopicError: agent 'counter' cannot publish on 'symbiont.health': topics "
        "starting with 'symbiont.' are published by Symbiont itself, not by agents (report "
        "health with self.health or the Wasm health import)"
    )


def wasm_spec(name: str, module: str, topic: str) -> dict:
    wasm = str(DEMO.parents[1] / "priv" / "wasm" / module)
    config = {"wasm": wasm, "topics": [topic], "limits": {}, "config": None}
    return {"name": name, "module": "symbiont.wasm", "class": "WasmAgent", "config": config}


def test_wasm_agents_share_a_host_and_a_trap_stays_in_its_slot(host: HostProcess) -> None:
    assert host.start_agent(wasm_spec("count", "counter.wat", "c.in"), slot=1)[0] == "agent_ready"
    assert host.start_agent(wasm_spec("trap", "trap.wat", "t.in"), slot=2)[0] == "agent_ready"
    for seq in (1, 2):
        host.send(["event", 2, seq, "t.in", packb(seq)], ["event", 1, seq, "c.in", packb(seq)])
        frames = [host.recv()]
        while frames[-1][:2] != ["ack", 1]:
            frames.append(host.recv())
        (nack,) = [f for f in frames if f[0] == "nack"]
        assert nack[1:3] == [2, seq] and "trapped" in nack[3]["message"]
        assert ["publish", 1, "count.out", packb(seq), seq, 0] in frames
        assert frames[-1][2] == seq and isinstance(frames[-1][3], bytes)
        # Its failure is reported in a health frame of its slot (§8.3), the first only.
        health = [f[2] for f in frames if f[:2] == ["health", 2]]
        assert health == (["degraded"] if seq == 1 else [])
        assert not [f for f in frames if f[0] == "publish" and f[2].startswith("symbiont.")]


def test_wasm_agent_restarted_in_a_new_slot_resumes_its_state(host: HostProcess) -> None:
    assert host.start_agent(wasm_spec("a", "counter.wat", "c.in"), slot=1)[0] == "agent_ready"
    assert host.start_agent(wasm_spec("b", "counter.wat", "c.in"), slot=2)[0] == "agent_ready"
    host.send(["event", 1, 1, "c.in", packb(None)], ["event", 1, 2, "c.in", packb(None)])
    assert host.recv_kind("publish")[1:] == [1, "count.out", packb(1), 1, 0]
    assert host.recv_kind("publish")[1:] == [1, "count.out", packb(2), 2, 0]
    _, _, seq, state_bin = host.recv_kind("ack")
    assert seq == 2
    host.send(["agent_stop", 1])
    spec = wasm_spec("a", "counter.wat", "c.in") | {"state": unpackb(state_bin)}
    assert host.start_agent(spec, slot=3)[0] == "agent_ready"
    # The restarted one goes on from its checkpoint; its neighbour has its own count.
    host.send(["event", 3, 1, "c.in", packb(None)], ["event", 2, 1, "c.in", packb(None)])
    assert host.recv_kind("publish")[1:] == [3, "count.out", packb(3), 1, 0]
    # The module's third message: a health report, in a frame of its own (§8.3).
    assert host.recv_kind("health") == ["health", 3, "degraded", "third message", {}]
    assert host.recv_kind("publish")[1:] == [2, "count.out", packb(1), 1, 0]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("surrogate", "bad byte \\udcff in a file name"),
        ("bad_str", "<agents._BadStr object at"),
        ("huge", "x" * 100),
    ],
    ids=["surrogate", "bad_str", "huge"],
)
def test_awkward_handler_exceptions_are_nacks(
    raw_host: HostProcess, how: str, message: str
) -> None:
    """Handler exceptions whose text cannot go as is: still a clear nack, the host serves on."""
    raw_host.init_agent(agent_spec("Raiser"), max_frame=1 << 20)
    raw_host.send(event(1, "raise", how), event(2, "raise", "fine"))
    _, slot, seq, error = raw_host.recv_kind("nack")
    assert (slot, seq) == (1, 1)
    assert error["type"] in ("ValueError", "agents._BadStr")
    assert error["message"].startswith(message)
    assert len(packb(error)) < 1 << 20
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"ok": "fine"}


@pytest.mark.parametrize("topic", ["sleep", "spin"])
def test_a_handler_past_its_timeout_is_cancelled_and_nacked(
    raw_host: HostProcess, topic: str
) -> None:
    raw_host.init_agent(agent_spec("Sleeper", handler_timeout_ms=100))
    raw_host.send(event(1, topic, 30), event(2, topic, 0))
    _, slot, seq, error = raw_host.recv_kind("nack", timeout=10)
    assert (slot, seq) == (1, 1)
    assert error["type"] == "symbiont.CancelledError"
    assert error["message"] == (
        f"agent 'counter': the handler of event on {topic!r} (seq 1) ran past its "
        "handler_timeout of 100 ms and was cancelled"
    )
    assert raw_host.recv_kind("ack")[2] == 2  # the host serves on
    assert raw_host.call("os", "getpid")[2] == raw_host.proc.pid


def test_slow_deliveries_in_a_batch_are_acked_as_they_go(raw_host: HostProcess) -> None:
    """The owner watches for progress (handler_timeout): a batch of slow deliveries does
    not wait for the last one to be acked."""
    raw_host.init_agent(agent_spec("Sleeper", handler_timeout_ms=5_000))
    raw_host.send(*(event(seq, "sleep", 0.25) for seq in (1, 2, 3)))
    assert raw_host.recv_kind("ack")[2] == 2  # 0.25 s after the first: past ACK_INTERVAL
    assert raw_host.recv_kind("ack")[2] == 3


def test_a_bad_handler_timeout_fails_the_agent(host: HostProcess) -> None:
    failed = host.start_agent(agent_spec("Sleeper", handler_timeout_ms=0))
    assert failed[0] == "agent_failed"
    message = "handler_timeout_ms must be nil or an int in 1..2^32-1, got 0"
    assert message in failed[2]["message"]
    # Past what a timer of the owner takes (PROTOCOL.md §9).
    failed = host.start_agent(agent_spec("Sleeper", handler_timeout_ms=1 << 32), slot=2)
    assert f"1..2^32-1, got {1 << 32}" in failed[2]["message"]


def test_a_python_agents_host_does_not_import_wasmtime(raw_host: HostProcess) -> None:
    # The idle host's memory (bench/idle.exs): wasmtime is imported on first use only.
    raw_host.init_agent(agent_spec("Counter"))
    raw_host.send(event(1, "numbers", 5))
    assert raw_host.recv_kind("publish")[:3] == ["publish", 1, "sums"]
    assert raw_host.recv_kind("ack")[:3] == ["ack", 1, 1]
    reply = raw_host.call("sys", "modules.__contains__", "wasmtime")
    assert reply == ["reply", reply[1], False]
