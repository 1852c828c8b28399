"""Agent slots (``symbiont._slots``): a slot's life in a host, and the state rule (PROTOCOL.md
§8) that the host and :class:`~symbiont.testing.AgentHarness` share: one home, so a test
in the harness cannot pass where production would not."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SocketOwner

from symbiont import FrameTooLarge
from symbiont._agent import Agent
from symbiont._host import Host
from symbiont._slots import Phase, Slot, checkpoint_of, state_of
from symbiont._terms import packb
from symbiont._transport import FdTransport
from symbiont.testing import AgentHarness

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class Owner(SocketOwner):
    """The owner's end of an in-process host (a socket pair), with the host itself."""

    def __init__(self, sock: socket.socket, host: Host) -> None:
        super().__init__(sock)
        self.host = host
        self.pings = 0

    def recv_kind(self, *kinds: str) -> list[Any]:
        """The next frame of one of ``kinds``; the others before it are dropped."""
        while (frame := self.recv())[0] not in kinds:
            pass
        return frame

    def settle(self) -> None:
        """Ping and wait for the pong: the host has read all that was sent before (and
        handled it: it reads on while a dispatch runs only once a watchdog tick passed)."""
        self.pings += 1
        self.send(["ping", self.pings])
        self.recv_kind("pong")


@pytest.fixture
def owner() -> Iterator[Owner]:
    owner_sock, host_sock = socket.socketpair()
    owner_sock.settimeout(5)

    def exit_hook(status: int) -> None:
        raise SystemExit(status)

    host = Host(FdTransport(host_sock.fileno(), host_sock.fileno()), exit=exit_hook)

    def serve() -> None:
        try:
            host.serve()
        except SystemExit:
            pass  # raised by exit_hook to end the thread

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    owner = Owner(owner_sock, host)
    owner.send(["init", 2, {"name": "slots", "max_frame": 1 << 20, "python_path": [str(FIXTURES)]}])
    assert owner.recv()[0] == "ready"
    try:
        yield owner
    finally:
        owner_sock.close()
        thread.join(5)
        host_sock.close()


def spec(cls: str, **extra: Any) -> dict[str, Any]:
    return {"name": cls.lower(), "module": "agents", "class": cls, "config": {}, "state": None}


# -- a slot's life in a host ---------------------------------------------------------------


def test_a_slot_lives_from_its_start_to_its_stop(owner: Owner) -> None:
    host = owner.host
    owner.send(["agent_start", 1, spec("Careless")])
    assert owner.recv()[0] == "agent_ready"
    slot = host._slots[1]
    assert slot.phase is Phase.RUNNING and slot.number == 1
    assert host.agents == {1: slot.agent}
    owner.send(["event", 1, 1, "numbers", packb(4)])
    assert owner.recv_kind("ack") == ["ack", 1, 1, packb({"sum": 4, "count": 1})]
    assert slot.checkpoint == packb({"sum": 4, "count": 1}) and slot.unacked is None
    assert slot.publish_ids == [1, -1]
    owner.send(["agent_stop", 1])
    owner.settle()
    assert 1 not in host._slots and host.agents == {}
    assert slot.phase is Phase.GONE
    assert slot.publish_ids is None and slot.window is None and slot.checkpoint is None


def test_a_start_that_fails_leaves_no_slot(owner: Owner) -> None:
    owner.send(["agent_start", 1, spec("BrokenStart")], ["agent_start", 2, spec("BadTopics")])
    assert [owner.recv()[:2], owner.recv()[:2]] == [["agent_failed", 1], ["agent_failed", 2]]
    owner.settle()
    assert owner.host._slots == {}


def test_a_slot_may_start_again_once_stopped(owner: Owner) -> None:
    owner.send(["agent_start", 3, spec("Careless")])
    assert owner.recv()[0] == "agent_ready"
    first = owner.host._slots[3]
    owner.send(["agent_stop", 3], ["agent_start", 3, spec("Careless")])
    assert owner.recv()[0] == "agent_ready"
    second = owner.host._slots[3]
    assert second is not first and first.phase is Phase.GONE and second.running


def test_busy_time_is_each_slots_own(owner: Owner) -> None:
    host = owner.host
    host._busy = True
    owner.send(["agent_start", 1, spec("Careless")], ["agent_start", 2, spec("Careless")])
    owner.settle()
    owner.send(["event", 2, 1, "numbers", packb(1)])
    owner.recv_kind("ack")
    busy = host._busy_us()
    assert list(busy) == [2] and busy[2] >= 0
    assert host._slots[2].busy_told == busy[2] and host._slots[1].busy_told == 0
    assert host._busy_us() == {}  # told once


# -- the state rule (PROTOCOL.md §8), one home ---------------------------------------------

#: Events for the Spoiler fixture: kept, failed half-way, kept, unencodable, kept.
SCRIPT = [("numbers", 1), ("half", 5), ("numbers", 2), ("spoil", 0), ("numbers", 3)]


def test_the_harness_and_the_host_keep_the_same_states(owner: Owner) -> None:
    """Each step of one script, through a host and through the harness: the same state
    after it, and the same deliveries fail."""
    harness = AgentHarness(_agent_class("Spoiler"), name="spoiler")
    owner.send(["agent_start", 1, spec("Spoiler")])
    assert owner.recv()[0] == "agent_ready"
    agent = owner.host._slots[1].agent
    for seq, (topic, payload) in enumerate(SCRIPT, 1):
        owner.send(["event", 1, seq, topic, packb(payload)])
        host_failed = owner.recv_kind("ack", "nack")[0] == "nack"
        try:
            harness.event(topic, payload)
            harness_failed = False
        except Exception:  # noqa: BLE001 - what the test compares
            harness_failed = True
        assert (topic, harness_failed) == (topic, host_failed)
        assert harness.state == agent.state, topic
    assert harness.state == {"sum": 6, "count": 3}


def test_the_harness_rolls_back_and_commits_through_the_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The harness has no rule of its own: it calls the slot's."""
    calls: list[str] = []
    roll_back, commit = Slot.roll_back, Slot.commit

    def traced_roll_back(self: Slot) -> None:
        calls.append("roll_back")
        roll_back(self)

    def traced_commit(self: Slot) -> None:
        calls.append("commit")
        commit(self)

    monkeypatch.setattr(Slot, "roll_back", traced_roll_back)
    monkeypatch.setattr(Slot, "commit", traced_commit)
    harness = AgentHarness(_agent_class("Spoiler"))
    harness.event("numbers", 1)
    with pytest.raises(ValueError, match="half-way"):
        harness.event("half", 1)
    with pytest.raises(TypeError):
        harness.event("spoil", 0)
    # A commit that fails rolls back (Slot.commit's own roll-back, the last one).
    assert calls == ["commit", "roll_back", "commit", "roll_back"]
    assert harness.state == {"sum": 1, "count": 1}


def test_commit_keeps_a_checkpoint_or_rolls_back() -> None:
    agent = Agent("a", state={"n": 1})
    slot = Slot(1, agent, pack=packb)
    slot.commit()
    assert slot.checkpoint == packb({"n": 1})
    agent.state["n"] = 2
    slot.roll_back()
    assert agent.state == {"n": 1}
    agent.state["bad"] = {1, 2}
    with pytest.raises(TypeError, match=r"state\['bad'\]"):
        slot.commit()
    assert agent.state == {"n": 1} and slot.checkpoint == packb({"n": 1})


def test_checkpoints() -> None:
    assert checkpoint_of(None, packb) is None and state_of(None) is None
    assert state_of(checkpoint_of([1, "a"], packb)) == [1, "a"]
    with pytest.raises(FrameTooLarge):
        checkpoint_of("x" * 100, packb, max_frame=64)
    assert checkpoint_of("x" * 10, packb, max_frame=64) == packb("x" * 10)


def _agent_class(name: str) -> type[Agent]:
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))
    import agents  # noqa: PLC0415 - the fixtures' module, as the host imports it

    cls = getattr(agents, name)
    assert issubclass(cls, Agent)
    return cls


# -- the host's parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "part", ["_calls", "_cancel", "_credit", "_deliveries", "_handshake", "_watchdog"]
)
def test_the_host_binds_every_function_of_its_parts(part: str) -> None:
    """A function of the host written in a part module (``self: Host``) is a method of
    :class:`Host` under its own name: none is forgotten, none shadowed."""
    import importlib
    import inspect

    module = importlib.import_module(f"symbiont.{part}")
    assert module.__doc__, f"{part} says what it owns"
    methods = [
        name
        for name in module.__all__
        if inspect.isfunction(fn := getattr(module, name))
        and next(iter(inspect.signature(fn).parameters), None) == "self"
    ]
    assert methods
    for name in methods:
        assert Host.__dict__.get(name) is getattr(module, name), name
