"""The host's flight recorder (PROTOCOL.md §11.1): whose code runs, readable after a kill."""

from __future__ import annotations

import os
import signal
import stat
import struct
from pathlib import Path

from conftest import HostProcess, wait_until

from symbiont import _blackbox
from symbiont._blackbox import DELIVERY, ENTRY, IDLE, START
from symbiont._terms import packb


def spec(cls: str, name: str) -> dict:
    return {"name": name, "module": "agents", "class": cls, "config": {}, "state": None}


def read(path: Path) -> tuple[int, int, int, int]:
    """(pid, kind, slot, seq) as the owner reads them (the file has pid, slot, seq, kind)."""
    pid, slot, seq, kind = struct.unpack("<QQQQ", path.read_bytes())
    return pid, kind, slot, seq


def test_it_names_the_running_delivery_even_after_a_kill_9(
    raw_host: HostProcess, tmp_path: Path
) -> None:
    box = tmp_path / "box"
    ready = raw_host.init(blackbox=str(box))
    assert ready[2]["blackbox"] is True
    # For this user alone, and this process's.
    assert stat.S_IMODE(box.stat().st_mode) == 0o600
    pid = raw_host.proc.pid
    assert read(box) == (pid, IDLE, 0, 0)

    for slot, name in ((1, "quick"), (2, "slow")):
        assert raw_host.start_agent(spec("Sleeper", name), slot=slot)[0] == "agent_ready"
    raw_host.send(["event", 1, 5, "sleep", packb(0)])
    assert raw_host.recv_kind("ack")[1:3] == [1, 5]
    assert read(box)[:2] == (pid, IDLE)  # idle: slot and seq no longer mean anything

    # Slot 2's delivery seq 9 runs (it spins in Python): the recorder says so...
    raw_host.send(["event", 2, 9, "spin", packb(60)])
    assert wait_until(lambda: read(box)[1] == DELIVERY, 5)
    assert read(box) == (pid, DELIVERY, 2, 9)
    # ... and still says so once the process is dead.
    os.kill(pid, signal.SIGKILL)
    assert raw_host.wait_exit() == -signal.SIGKILL
    assert read(box) == (pid, DELIVERY, 2, 9)


def test_a_start_inside_a_delivery_gives_the_delivery_back(
    raw_host: HostProcess, tmp_path: Path
) -> None:
    """A handler waiting on the owner lets the host serve an agent_start meanwhile: once that
    start is done, the recorder names the delivery again, not idle."""
    box = tmp_path / "box"
    raw_host.init(blackbox=str(box))
    raw_host.start_agent(spec("Asker", "asker"), slot=1)
    raw_host.send(["event", 1, 3, "ask", packb(None)])
    inner = raw_host.recv_kind("call")
    assert read(box)[1:] == (DELIVERY, 1, 3)
    assert raw_host.start_agent(spec("Counter", "counter"), slot=2)[0] == "agent_ready"
    assert read(box)[1:] == (DELIVERY, 1, 3)
    raw_host.send(["reply", inner[1], "n@h"])
    assert raw_host.recv_kind("ack")[1:3] == [1, 3]
    assert read(box)[1] == IDLE


def test_a_delivery_inside_a_start_gives_the_start_back(
    raw_host: HostProcess, tmp_path: Path
) -> None:
    """An on_start waiting on the owner lets the host deliver to another slot meanwhile:
    once that delivery is done, the recorder names the start again."""
    box = tmp_path / "box"
    raw_host.init(blackbox=str(box))
    raw_host.start_agent(spec("Sleeper", "sleeper"), slot=2)
    raw_host.send(["agent_start", 1, spec("StartAsker", "starter")])
    inner = raw_host.recv_kind("call")
    assert read(box)[1:] == (START, 1, 0)
    raw_host.send(["event", 2, 8, "sleep", packb(0)])
    assert raw_host.recv_kind("ack")[1:3] == [2, 8]
    assert read(box)[1:] == (START, 1, 0)
    raw_host.send(["reply", inner[1], "n@h"])
    assert raw_host.recv_kind("agent_ready")[1] == 1
    assert read(box)[1] == IDLE


def test_the_kind_is_written_last(tmp_path: Path) -> None:
    """One store for the entry, its kind last: a process killed in the middle of it still
    reads as what it did before (PROTOCOL.md §11.1)."""
    path = tmp_path / "box"
    box = _blackbox.create(str(path))
    assert read(path) == (os.getpid(), IDLE, 0, 0)
    _blackbox.record(box, ENTRY, 4, 77, DELIVERY)
    assert read(path)[1:] == (DELIVERY, 4, 77)
    assert path.read_bytes()[24:] == struct.pack("<Q", DELIVERY)
    box[ENTRY : _blackbox.SIZE] = _blackbox.entry(START, 5)
    assert read(path)[1:] == (START, 5, 0)


def test_a_path_that_exists_or_is_a_link_is_not_used(raw_host: HostProcess, tmp_path: Path) -> None:
    """Never through a file or link someone else put there: the host serves without one."""
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    ready = raw_host.init(blackbox=str(link))
    assert "blackbox" not in ready[2]
    assert target.read_bytes() == b"keep"
    raw_host.wait_logs(lambda logs: any("no flight recorder" in m for _, m in logs))
    assert raw_host.call("hostmod", "echo", "serving")[2] == "serving"


def test_a_blackbox_that_is_not_a_path_is_a_protocol_error(raw_host: HostProcess) -> None:
    raw_host.send(["init", 2, {"name": "t", "max_frame": 1 << 20, "blackbox": 7}])
    assert raw_host.recv() is None
    assert raw_host.wait_exit() == 3
    assert "blackbox must be a non-empty str" in raw_host.stderr_text()


def test_an_owner_gone_before_it_took_the_recorder_leaves_no_file(
    raw_host: HostProcess, tmp_path: Path
) -> None:
    """The owner opens the recorder and removes its name once the host is ready; a host
    whose owner went away first (end of its input) removes it itself."""
    box = tmp_path / "box"
    raw_host.init(blackbox=str(box))
    assert box.exists()
    raw_host.close_input()
    assert raw_host.wait_exit() == 0
    assert not box.exists()
