"""Flow control of what a host sends on its own (PROTOCOL.md §8.2): publishes wait for the
owner's credit when their slot's window is full, casts and messages when the host's is;
from a handler, a timer, a thread of the agent's, without deadlock. The test plays the
owner and gives credit back by hand."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import HostProcess

from symbiont import OverloadedError
from symbiont import _credit as credit_module
from symbiont._agent import Agent
from symbiont._host import Host
from symbiont._slots import Slot
from symbiont._terms import packb
from symbiont._transport import Transport

BIG = 1 << 20


def spec(cls: str, frames: int, size: int = BIG, **extra: Any) -> dict[str, Any]:
    return {
        "name": "flooder",
        "module": "agents",
        "class": cls,
        "config": {},
        "state": None,
        "window": {"frames": frames, "bytes": size},
        **extra,
    }


def event(seq: int, topic: str, payload: Any) -> list[Any]:
    return ["event", 1, seq, topic, packb(payload)]


def publishes(host: HostProcess, n: int) -> list[tuple[Any, int, int]]:
    """The next ``n`` frames, all publishes: (payload, seq, n) each."""
    got = [host.recv_kind("publish") for _ in range(n)]
    return [(frame[3], frame[4], frame[5]) for frame in got]


def test_the_host_announces_credit(raw_host: HostProcess) -> None:
    assert raw_host.init()[2]["credit"] is True


def test_a_handler_waits_for_credit_and_keeps_answering_the_owner(raw_host: HostProcess) -> None:
    raw_host.init()
    raw_host.start_agent(spec("Flooder", frames=3))
    raw_host.send(event(1, "flood", 8))
    assert publishes(raw_host, 3) == [(packb(i), 1, i) for i in range(3)]
    raw_host.assert_silent(0.2)  # the window is full: it waits
    # Meanwhile it answers pings; a call waits for after the handler.
    raw_host.send(["ping", 5], ["call", 77, "hostmod", "echo", ["later"]])
    assert raw_host.recv() == ["pong", 5]
    raw_host.assert_silent(0.1)
    raw_host.send(["credit", 1, 2, 0])
    assert publishes(raw_host, 2) == [(packb(i), 1, i) for i in (3, 4)]
    raw_host.assert_silent(0.1)
    raw_host.send(["credit", 1, 3, 0])
    assert publishes(raw_host, 3) == [(packb(i), 1, i) for i in (5, 6, 7)]
    rest = [raw_host.recv(), raw_host.recv()]
    assert ["reply", 77, "later"] in rest
    assert [f[:3] for f in rest if f[0] == "ack"] == [["ack", 1, 1]]


def test_the_bytes_of_a_window_count_too(raw_host: HostProcess) -> None:
    """A publish costs its topic and payload; the host sends while under the window."""
    raw_host.init()
    # "flooded" and a small int: 8 bytes each. Two fit under 10 (the second takes it past).
    raw_host.start_agent(spec("Flooder", frames=100, size=10))
    raw_host.send(event(1, "flood", 4))
    assert len(publishes(raw_host, 2)) == 2
    raw_host.assert_silent(0.2)
    raw_host.send(["credit", 1, 0, 8])  # bytes back, 8 of 16: still 8, under 10
    assert len(publishes(raw_host, 1)) == 1
    raw_host.assert_silent(0.1)
    raw_host.send(["credit", 1, 0, 16])
    assert len(publishes(raw_host, 1)) == 1
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]


def test_a_timer_waits_for_credit(raw_host: HostProcess) -> None:
    raw_host.init()
    raw_host.start_agent(spec("Flooder", frames=1))
    raw_host.send(["tick", 1, 1, "burst"])
    assert publishes(raw_host, 1) == [(packb(0), 1, 0)]
    raw_host.assert_silent(0.2)
    for i in (1, 2):
        raw_host.send(["credit", 1, 1, 0])
        assert publishes(raw_host, 1) == [(packb(i), 1, i)]
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]


def test_a_thread_waits_for_credit_and_its_agent_stopping_releases_it(
    raw_host: HostProcess,
) -> None:
    raw_host.init()
    raw_host.start_agent(spec("Flooder", frames=2))
    raw_host.send(event(1, "spawn", 10))
    frames = [raw_host.recv(), raw_host.recv(), raw_host.recv()]  # the ack, two publishes
    assert [f[:3] for f in frames if f[0] == "ack"] == [["ack", 1, 1]]
    sent = [f for f in frames if f[0] == "publish"]
    raw_host.assert_silent(0.2)
    raw_host.send(["credit", 1, 2, 0])
    sent += [raw_host.recv_kind("publish") for _ in range(2)]
    # In order; their ids (§8.1: the handler's while it ran, then n from -1 down) unique.
    assert [f[3] for f in sent] == [packb(i) for i in range(4)]
    assert len({(f[4], f[5]) for f in sent}) == 4
    raw_host.assert_silent(0.1)
    # Stopped: the thread's waiting publish ends (the owner drops what a stopped slot
    # sends), and so do the rest of them, at once, without a frame.
    raw_host.send(["agent_stop", 1])
    for call_id in range(50):
        raw_host.send(["call", call_id, "agents", "_thread_outcome.copy", []])
        reply = raw_host.recv_kind("reply")
        if reply[2]:
            break
        raw_host.assert_silent(0.02)
    assert reply[2] == ["done"]


def test_a_handler_waiting_for_credit_is_cancelled_at_its_handler_timeout(
    raw_host: HostProcess,
) -> None:
    raw_host.init()
    raw_host.start_agent(spec("Flooder", frames=1, handler_timeout_ms=300))
    raw_host.send(event(1, "flood", 5))
    assert publishes(raw_host, 1) == [(packb(0), 1, 0)]
    nack = raw_host.recv_kind("nack", timeout=5)
    assert nack[1:3] == [1, 1] and "handler_timeout of 300 ms" in nack[3]["message"]
    # The host serves on; with the one publish given back, the next event goes through.
    raw_host.send(["credit", 1, 1, 0], event(2, "flood", 1))
    assert publishes(raw_host, 1) == [(packb(0), 2, 0)]
    assert raw_host.recv_kind("ack")[1:3] == [1, 2]


def test_casts_wait_for_the_hosts_own_credit(raw_host: HostProcess) -> None:
    raw_host.init(window={"frames": 2, "bytes": BIG})
    raw_host.start_agent(spec("Flooder", frames=100))
    raw_host.send(event(1, "casts", 5))
    casts = [raw_host.recv_kind("cast") for _ in range(2)]
    assert [c[3] for c in casts] == [[0], [1]]
    raw_host.assert_silent(0.2)
    size = sum(len(packb(c)) for c in casts)
    raw_host.send(["credit", 0, 2, size])
    assert [raw_host.recv_kind("cast")[3] for _ in range(2)] == [[2], [3]]
    raw_host.send(["credit", 0, 2, size])
    assert raw_host.recv_kind("cast")[3] == [4]
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]


@pytest.mark.parametrize(
    ("frames", "rule"),
    [
        ([["credit", 1, -1, 0]], "each in 0..2^63-1"),
        ([["credit", 1, 1 << 63, 0]], "each in 0..2^63-1"),
        ([["credit", 1, 1]], "each in 0..2^63-1"),
    ],
)
def test_bad_credit_frames_are_protocol_errors(
    raw_host: HostProcess, frames: list[list[Any]], rule: str
) -> None:
    raw_host.init()
    raw_host.send(*frames)
    assert raw_host.recv() is None
    assert raw_host.wait_exit() == 3
    assert rule in raw_host.stderr_text()


def test_bad_windows_are_refused(raw_host: HostProcess) -> None:
    raw_host.init()
    failed = raw_host.start_agent(spec("Flooder", frames=0))
    assert failed[0] == "agent_failed" and "agent window must be nil or" in failed[2]["message"]
    raw_host.send(["call", 1, "hostmod", "echo", ["on"]])
    assert raw_host.recv() == ["reply", 1, "on"]


def test_a_bad_window_in_init_is_a_protocol_error(raw_host: HostProcess) -> None:
    raw_host.send_raw(b"")
    from conftest import PROTOCOL_VERSION  # noqa: PLC0415 - the harness's, not the host's

    raw_host.send(["init", PROTOCOL_VERSION, {"name": "t", "window": {"frames": 1}}])
    assert raw_host.recv() is None
    assert raw_host.wait_exit() == 3
    assert "window must be" in raw_host.stderr_text()


class _Silent(Transport):
    """A wire on which the owner never answers."""

    def __init__(self) -> None:
        self.written = bytearray()

    def read(self, size: int) -> bytes:
        raise AssertionError("nothing to read: wait_readable says so")

    def wait_readable(self, timeout: float) -> bool:
        threading.Event().wait(min(timeout, 0.01))
        return False

    def write(self, data: bytes) -> None:
        self.written += data


@pytest.mark.parametrize("dispatch", [True, False])
def test_no_credit_for_a_while_is_an_overloaded_error(
    monkeypatch: pytest.MonkeyPatch, dispatch: bool
) -> None:
    """Bounded: from the dispatch thread (which reads for it) or another one."""
    monkeypatch.setattr(credit_module, "CREDIT_WAIT", 0.2)
    host = Host(_Silent())
    host.ready = True
    slot = host._slots[1] = Slot(1, Agent("a"), pack=packb)
    slot.publish_ids = [0, -1]
    slot.window = [1, 5, 1, BIG]  # full
    outcome: list[BaseException] = []

    def publish() -> None:
        try:
            host._publish(1, "t", packb(1))
        except BaseException as exc:  # noqa: BLE001 - what the test checks
            outcome.append(exc)

    if dispatch:
        publish()
    else:
        thread = threading.Thread(target=publish)
        thread.start()
        thread.join(5)
    (exc,) = outcome
    assert isinstance(exc, OverloadedError)
    assert "gave back none of the 1 publishes of its slot sent (5 bytes" in str(exc)
    assert slot.window == [1, 5, 1, BIG]
