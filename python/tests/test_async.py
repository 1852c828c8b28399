"""``async def`` agents (symbiont._aio): in a real host, the test playing the owner, and in
an AgentHarness. Handlers, timers and hooks may be coroutines; the host awaits each on its
event loop, one delivery at a time, in order, acked after the coroutine completes; a
handler's timeout cancels its task; what the SDK cannot run is refused, never dropped."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from typing import Any

import pytest
from conftest import FIXTURES, HostProcess

from symbiont import Agent, CancelledError, every, on
from symbiont._terms import packb, unpackb
from symbiont.testing import AgentHarness

sys.path.insert(0, str(FIXTURES))
from async_agents import AsyncCounter, AsyncSleeper, AsyncWorker, Sneaky  # noqa: E402

BIG = 1 << 20


def spec(cls: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "aio",
        "module": "async_agents",
        "class": cls,
        "config": {},
        "state": None,
        **extra,
    }


def event(seq: int, topic: str, payload: Any) -> list[Any]:
    return ["event", 1, seq, topic, packb(payload)]


def until_ack(host: HostProcess, seq: int, timeout: float = 5) -> list[list[Any]]:
    """Every frame up to the ack of ``seq`` (included)."""
    frames = []
    while True:
        frame = host.recv(timeout)
        assert frame is not None, frames
        frames.append(frame)
        if frame[0] == "ack" and frame[2] >= seq:
            return frames
        assert frame[0] != "nack", frames


# -- in a host --------------------------------------------------------------------------


def test_async_handlers_run_in_order_and_are_acked_after_they_complete(
    raw_host: HostProcess,
) -> None:
    info = raw_host.init_agent(spec("AsyncCounter"))
    assert info["topics"] == ["numbers", "fail"]
    assert info["timers"] == [{"name": "beat", "every_ms": 60_000}]
    raw_host.send(*(event(seq, "numbers", seq) for seq in range(1, 31)))
    frames = until_ack(raw_host, 30)
    sums = [(unpackb(f[3]), f[4], f[5]) for f in frames if f[0] == "publish"]
    # Each delivery's publish, in seq order, with the id of its delivery (§8.1).
    assert sums == [(seq * (seq + 1) // 2, seq, 0) for seq in range(1, 31)]
    assert unpackb(frames[-1][3]) == {"sum": 465, "count": 30}
    # The plain handler of the same topic ran after the async one, each time.
    raw_host.send(["tick", 1, 31, "beat"], ["msg", "aio", {"hi": 1}], ["tick", 1, 32, "beat"])
    ack = raw_host.recv_kind("ack")
    while ack[2] != 32:
        ack = raw_host.recv_kind("ack")
    assert unpackb(ack[3]) == {"sum": 465, "count": 30, "beats": 2, "message": {"hi": 1}}


def test_an_async_handler_that_raises_is_a_nack_and_its_changes_are_dropped(
    raw_host: HostProcess,
) -> None:
    raw_host.init_agent(spec("AsyncCounter"))
    raw_host.send(event(1, "numbers", 2), event(2, "fail", "x"), event(3, "numbers", 1))
    assert raw_host.recv_kind("publish")[3] == packb(2)
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]
    _, slot, seq, error = raw_host.recv_kind("nack")
    assert (slot, seq) == (1, 2)
    assert error["type"] == "ValueError" and error["message"] == "cannot handle 'x'"
    assert "in fail" in error["traceback"]
    assert raw_host.recv_kind("publish")[3] == packb(3)  # from the state before the failure
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"sum": 3, "count": 2}


def test_an_async_handler_past_its_timeout_has_its_task_cancelled(raw_host: HostProcess) -> None:
    raw_host.init_agent(spec("AsyncSleeper", handler_timeout_ms=100))
    raw_host.send(event(1, "sleep", 30), event(2, "sleep", 0))
    # asyncio's cancellation: the coroutine saw CancelledError at its await, and said so.
    cancelled = raw_host.recv_kind("publish", timeout=10)
    assert cancelled[2:] == ["cancelled", packb(30), 1, 0]
    _, slot, seq, error = raw_host.recv_kind("nack")
    assert (slot, seq) == (1, 1)
    assert error["type"] == "symbiont.CancelledError"
    assert error["message"] == (
        "agent 'aio': the handler of event on 'sleep' (seq 1) ran past its "
        "handler_timeout of 100 ms and was cancelled"
    )
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"done": 0}  # the host serves on
    assert raw_host.call("os", "getpid")[2] == raw_host.proc.pid


def test_acall_awaits_the_owner_and_the_host_serves_nested_calls(raw_host: HostProcess) -> None:
    raw_host.init_agent(spec("AsyncAsker"))
    raw_host.send(event(1, "ask", None))
    inner = raw_host.recv_kind("call")
    assert inner[2:] == ["erlang", "node", []]
    # While the coroutine awaits, the owner calls into the host: served at once (§4.1);
    # a delivery that arrives meanwhile waits for the one in progress.
    raw_host.send(event(2, "ask", None), ["call", 77, "hostmod", "echo", ["nested"]])
    assert raw_host.recv() == ["reply", 77, "nested"]
    raw_host.send(["reply", inner[1], "n1@h"])
    second = raw_host.recv_kind("call")
    raw_host.send(["reply", second[1], "n2@h"])
    _, _, seq, state_bin = raw_host.recv_kind("ack")
    assert seq == 2 and unpackb(state_bin) == {"answer": "n2@h"}


def test_a_plain_call_in_async_code_works_and_serves_nested_calls(raw_host: HostProcess) -> None:
    raw_host.init_agent(spec("AsyncAsker"))
    raw_host.send(event(1, "ask_plain", None))
    inner = raw_host.recv_kind("call")
    raw_host.send(["call", 78, "hostmod", "echo", ["nested"]])
    assert raw_host.recv() == ["reply", 78, "nested"]
    raw_host.send(["error", inner[1], {"type": "error", "message": "nope", "traceback": ""}])
    _, _, seq, error = raw_host.recv_kind("nack")
    assert seq == 1 and error["type"] == "symbiont.ErlangError" and "nope" in error["message"]


def test_a_timeout_cancels_an_acall_and_tells_the_owner(raw_host: HostProcess) -> None:
    raw_host.init_agent(spec("AsyncAsker", handler_timeout_ms=150))
    raw_host.send(event(1, "ask", None))
    inner = raw_host.recv_kind("call")
    assert raw_host.recv_kind("cancel", timeout=5) == ["cancel", inner[1]]
    nack = raw_host.recv_kind("nack")
    assert nack[2] == 1 and "handler_timeout of 150 ms" in nack[3]["message"]


def test_apublish_waits_for_credit_without_blocking_the_loop(raw_host: HostProcess) -> None:
    raw_host.init()
    raw_host.start_agent(spec("AsyncFlooder", window={"frames": 3, "bytes": BIG}))
    raw_host.send(event(1, "flood_and_cast", 6))
    assert [raw_host.recv_kind("publish")[3] for _ in range(3)] == [packb(i) for i in range(3)]
    # The window is full and apublish waits; the loop does not: the side task casts.
    assert raw_host.recv_kind("cast", timeout=5)[1:] == ["owner", "take", ["meanwhile"]]
    raw_host.send(["ping", 9])
    assert raw_host.recv() == ["pong", 9]
    raw_host.send(["credit", 1, 3, 0])
    assert [raw_host.recv_kind("publish")[3] for _ in range(3)] == [packb(i) for i in (3, 4, 5)]
    assert unpackb(raw_host.recv_kind("ack")[3]) == {"flooded": 6}


def test_a_plain_publish_that_blocks_the_loop_is_still_cancelled(raw_host: HostProcess) -> None:
    raw_host.init()
    window = {"frames": 1, "bytes": BIG}
    raw_host.start_agent(spec("AsyncFlooder", window=window, handler_timeout_ms=300))
    raw_host.send(event(1, "flood_plain", 5))
    assert raw_host.recv_kind("publish")[3] == packb(0)
    nack = raw_host.recv_kind("nack", timeout=5)
    assert nack[1:3] == [1, 1] and "handler_timeout of 300 ms" in nack[3]["message"]
    raw_host.send(["credit", 1, 1, 0], event(2, "flood", 1))
    assert raw_host.recv_kind("publish")[3:] == [packb(0), 2, 0]
    assert raw_host.recv_kind("ack")[1:3] == [1, 2]


def test_only_the_cancelled_task_is_cancelled_in_a_blocking_wait(raw_host: HostProcess) -> None:
    raw_host.init()
    window = {"frames": 1, "bytes": BIG}
    raw_host.start_agent(spec("AsyncLeftover", window=window, handler_timeout_ms=100))
    raw_host.send(event(1, "spawn_then_nap", None))
    frames = [raw_host.recv(5)]
    while frames[-1][0] != "publish":
        frames.append(raw_host.recv(5))
    assert frames[-1][2:4] == ["later", packb(0)]
    # The task of its own waits for credit (holding the loop), though the handler's task
    # was cancelled meanwhile: given credit, it publishes on; then the nack is seen.
    raw_host.send(["credit", 1, 1, 0])
    while not ({"nack", "publish"} <= {f[0] for f in frames[1:]}):
        frames.append(raw_host.recv(5))
    (later,) = [f for f in frames[1:] if f[0] == "publish"]
    assert later[2:4] == ["later", packb(1)]
    (nack,) = [f for f in frames if f[0] == "nack"]
    assert nack[2] == 1 and "handler_timeout of 100 ms" in nack[3]["message"]


def test_acast_waits_for_the_hosts_own_credit(raw_host: HostProcess) -> None:
    raw_host.init(window={"frames": 2, "bytes": BIG})
    raw_host.start_agent(spec("AsyncFlooder"))
    raw_host.send(event(1, "casts", 3))
    casts = [raw_host.recv_kind("cast") for _ in range(2)]
    assert [c[3] for c in casts] == [[0], [1]]
    raw_host.assert_silent(0.2)
    raw_host.send(["credit", 0, 2, sum(len(packb(c)) for c in casts)])
    assert raw_host.recv_kind("cast")[3] == [2]
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]


def test_async_on_start_tasks_live_between_deliveries_and_on_stop_is_awaited(
    host: HostProcess,
) -> None:
    assert host.start_agent(spec("AsyncWorker"))[0] == "agent_ready"
    for seq, item in enumerate(["a", "b"], start=1):
        host.send(event(seq, "work", item))
        assert host.recv_kind("publish")[2:4] == ["worked", packb(item)]
        assert host.recv_kind("ack")[2] == seq
    host.send(["agent_stop", 1])
    assert host.recv_kind("publish")[2:4] == ["stopped", packb(True)]


def test_a_plain_def_returning_a_coroutine_is_a_nack_not_silence(raw_host: HostProcess) -> None:
    raw_host.init_agent(spec("Sneaky"))
    raw_host.send(event(1, "sneak", 1))
    _, _, seq, error = raw_host.recv_kind("nack")
    assert seq == 1 and error["type"] == "TypeError"
    assert error["message"].startswith(
        "Sneaky.sneak returned coroutine (Sneaky._later) but is not an async def"
    )
    raw_host.send(["call", 5, "gc", "collect", []])
    assert raw_host.recv_kind("reply")[1] == 5
    assert not [m for _, m in raw_host.logs if "never awaited" in m], raw_host.logs


def test_owner_calls_and_casts_to_async_def_functions_are_awaited(host: HostProcess) -> None:
    assert host.call("hostmod", "async_add", 1, 2)[2] == 3
    # The owner cancels a call (§4.2): its task is cancelled, no reply, the host serves on.
    host.send(["call", 1, "hostmod", "async_sleep_noting_cancel", [30]])
    host.wait_logs(lambda logs: any("async sleep: running" in m for _, m in logs))
    host.send(
        ["cancel", 1],
        ["cast", "hostmod", "async_add", [1, 1]],
        ["call", 2, "hostmod", "echo", ["next"]],
    )
    assert host.recv() == ["reply", 2, "next"]
    assert host.call("hostmod", "cancellations")[2] == ["async sleep"]
    kind, _, error = host.call("hostmod", "sneaky")
    assert kind == "error" and error["type"] == "TypeError"
    assert error["message"].startswith(
        "hostmod.sneaky returned coroutine (async_add) but is not an async def"
    )


# -- at class definition ------------------------------------------------------------------


def test_what_the_sdk_cannot_run_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"\.handle is an async generator .* never run"):

        class Streams(Agent):
            @on("in")
            async def handle(self, payload: Any) -> Any:
                yield payload

    with pytest.raises(TypeError, match=r"\.tick is a generator \(a def with yield\)"):

        class Ticks(Agent):
            @every(1)
            def tick(self) -> Any:
                yield 1

    with pytest.raises(TypeError, match=r"\.on_start is an async generator"):

        class Starts(Agent):
            async def on_start(self) -> Any:
                yield

    with pytest.raises(TypeError, match=r"\.subscriptions must be a plain def"):

        class Subscribes(Agent):
            async def subscriptions(self) -> list[str]:  # type: ignore[override]
                return ["x"]


def test_async_methods_are_known_from_the_class() -> None:
    assert AsyncCounter._symbiont_async == {"add", "fail", "beat", "on_message", "handle_event"}
    assert AsyncCounter._symbiont_async_topics == {"numbers", "fail"}
    assert Sneaky._symbiont_async == frozenset()


# -- in an AgentHarness -------------------------------------------------------------------


def test_the_harness_runs_async_handlers_timers_and_hooks() -> None:
    with AgentHarness(AsyncCounter) as agent:
        assert agent.event("numbers", 2) == [("sums", 2)]
        assert agent.event("numbers", 3) == [("sums", 5)]
        assert agent.tick("beat") == []
        with pytest.raises(ValueError, match="cannot handle 1"):
            agent.event("fail", 1)
        assert agent.state == {"sum": 5, "count": 2, "beats": 1}


def test_the_harness_keeps_the_agents_tasks_running_and_close_ends_them() -> None:
    agent = AgentHarness(AsyncWorker)
    assert agent.event("work", "a") == [("worked", "a")]
    worker = agent.agent.worker
    assert agent.event("work", "b") == [("worked", "b")]
    assert not worker.done()
    assert agent.stop() == [("stopped", True)]
    agent.restart()
    worker = agent.agent.worker
    agent.close()
    assert worker.cancelled()


def test_the_harness_cancels_an_async_handler_at_its_timeout() -> None:
    with AgentHarness(AsyncSleeper, handler_timeout=0.05) as agent:
        with pytest.raises(CancelledError, match="ran past its handler_timeout of 0.05 s"):
            agent.event("sleep", 30)
        assert agent.published == [("cancelled", 30)]
        assert agent.event("sleep", 0) == [] and agent.state == {"done": 0}


def test_the_harness_refuses_a_plain_def_returning_a_coroutine_without_a_warning() -> None:
    agent = AgentHarness(Sneaky)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=r"Sneaky\.sneak returned coroutine .* not an async"):
            agent.event("sneak", 1)
        gc.collect()  # a coroutine left unawaited would warn here
    assert agent.published == []


def test_the_harness_checkpoints_and_restores_around_async_failures() -> None:
    agent = AgentHarness(AsyncCounter, state={"sum": 10})
    with pytest.raises(ValueError):
        agent.event("fail", 0)
    assert agent.state == {"sum": 10}
    assert agent.restart().state == {"sum": 10}


def test_asyncio_is_not_running_in_the_test_thread() -> None:
    # The harness's loop is a thread of its own: an async test may drive it too.
    async def drive() -> list[tuple[str, Any]]:
        with AgentHarness(AsyncCounter) as agent:
            return agent.event("numbers", 1)

    assert asyncio.run(drive()) == [("sums", 1)]
