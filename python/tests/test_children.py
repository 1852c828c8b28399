"""Children of a host die with it (SECURITY.md): it leads a process group of its own."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from conftest import HostProcess, pid_gone, wait_until

from symbiont._terms import packb, unpackb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

PARENT = {
    "name": "parent",
    "module": "sample_agents",
    "class": "Parent",
    "config": {"out": "children"},
    "state": None,
}


def breed(host: HostProcess, seq: int) -> list[int]:
    """Has the agent fork a child and spawn a subprocess; their pids."""
    host.send(["event", 1, seq, "parent.in", packb(None)])
    publish = host.recv_kind("publish")
    pids = unpackb(publish[3])
    return [pids["forked"], pids["spawned"]]


def test_the_host_leads_a_process_group_of_its_own(host: HostProcess) -> None:
    assert os.getpgid(host.proc.pid) == host.proc.pid
    assert os.getsid(host.proc.pid) == host.proc.pid


def test_children_die_when_the_host_exits_on_eof(raw_host: HostProcess) -> None:
    raw_host.init_agent(PARENT)
    children = breed(raw_host, 1)
    assert not any(pid_gone(pid) for pid in children)
    raw_host.close_input()
    assert raw_host.wait_exit() == 0
    assert wait_until(lambda: all(pid_gone(pid) for pid in children), timeout=5), children


def test_a_forked_child_does_not_hold_the_protocol_pipes(raw_host: HostProcess) -> None:
    """Killed outright, the host cannot clean up: its owner still sees its end of stream at
    once (and kills the group, as the owner does), though its children still run."""
    raw_host.init_agent(PARENT)
    children = breed(raw_host, 1)
    try:
        os.kill(raw_host.proc.pid, signal.SIGKILL)
        while (frame := raw_host.recv(timeout=5)) is not None:  # then EOF, children alive
            assert frame[0] == "ack", frame
        assert not any(pid_gone(pid) for pid in children)
    finally:
        os.killpg(raw_host.proc.pid, signal.SIGKILL)
    assert wait_until(lambda: all(pid_gone(pid) for pid in children), timeout=5), children
