"""The host against a test process playing the owner (PROTOCOL.md §3-§7, §9)."""

from __future__ import annotations

import os
import platform
import random
import struct
import time

import pytest
from conftest import MAX_FRAME, HostProcess

from symbiont import Atom, Pid
from symbiont._terms import packb


def test_handshake(raw_host: HostProcess) -> None:
    ready = raw_host.init(max_frame=1 << 20)
    assert ready[:2] == ["ready", 2]
    info = ready[2]
    assert info["protocol"] == 2
    assert info["pid"] == raw_host.proc.pid
    assert info["runtime"] == f"CPython {platform.python_version()}"
    assert info["max_frame"] == 1 << 20
    assert "agent" not in info
    assert info["heartbeat"] is True


def test_ping_is_answered_also_while_a_call_runs(host: HostProcess) -> None:
    """PROTOCOL.md §11: a pong for each ping, from the watchdog while user code runs."""
    host.send(["ping", 1])
    assert host.recv() == ["pong", 1]
    host.send(["call", 1, "hostmod", "sleep", [0.5]])
    host.assert_silent(0.05)
    host.send(["ping", 2])
    assert host.recv() == ["pong", 2]  # before the call's reply
    assert host.recv() == ["reply", 1, "slept"]


def test_pongs_carry_each_slots_busy_time_when_init_asks(raw_host: HostProcess) -> None:
    """PROTOCOL.md §11.2: with ``busy: true`` in init, each pong carries the microseconds
    each agent's deliveries took since the last pong, by slot, the running one's so far
    included (the watchdog answers while it runs); slots that took none are left out."""
    spec = {"name": "s", "module": "agents", "class": "Sleeper", "config": {}, "state": None}
    raw_host.init_agent(spec, busy=True)
    assert raw_host.start_agent({**spec, "name": "t"}, slot=2)[0] == "agent_ready"
    raw_host.send(["ping", 1])
    assert raw_host.recv_kind("pong") == ["pong", 1, {}]
    raw_host.send(["event", 1, 1, "sleep", packb(0.2)])
    assert raw_host.recv_kind("ack")[1:3] == [1, 1]
    raw_host.send(["ping", 2])
    _, _, busy = raw_host.recv_kind("pong")
    assert list(busy) == [1] and 200_000 <= busy[1] < 5_000_000
    # While slot 2's delivery runs: its time so far, then the rest of it.
    raw_host.send(["event", 2, 1, "sleep", packb(1.0)])
    raw_host.assert_silent(0.3)
    raw_host.send(["ping", 3])
    _, _, running = raw_host.recv_kind("pong")
    assert list(running) == [2] and 250_000 <= running[2] < 1_000_000
    assert raw_host.recv_kind("ack")[1:3] == [2, 1]
    raw_host.send(["ping", 4])
    _, _, rest = raw_host.recv_kind("pong")
    assert list(rest) == [2] and 1_000_000 <= running[2] + rest[2] < 5_000_000
    raw_host.send(["ping", 5])
    assert raw_host.recv_kind("pong") == ["pong", 5, {}]


def test_pongs_carry_nothing_more_unless_init_asks(host: HostProcess) -> None:
    """An owner that did not ask for busy times gets the pong of §11 as it was."""
    host.send(["ping", 7])
    assert host.recv() == ["pong", 7]


def _framed(frame: list) -> bytes:  # type: ignore[type-arg]
    payload = packb(frame)
    return struct.pack(">I", len(payload)) + payload


def test_a_partial_frame_blocks_neither_heartbeats_nor_the_watchdog(host: HostProcess) -> None:
    """The owner's frames may arrive in pieces: while one is incomplete the host keeps
    its watchdog (pongs, handler deadlines) going, and serves it once the rest is in."""
    # Idle: the main thread reads; a ping split after its 3rd byte, then the rest.
    ping = _framed(["ping", 1])
    host.send_raw(ping[:3])
    host.assert_silent(0.05)
    host.send_raw(ping[3:] + _framed(["ping", 2]))
    assert host.recv() == ["pong", 1]
    assert host.recv() == ["pong", 2]
    # Busy: the watchdog reads for a call that sleeps; the piece it reads is kept, and the
    # pongs come before the call's reply.
    host.send(["call", 1, "hostmod", "sleep", [1.0]])
    host.assert_silent(0.05)
    ping = _framed(["ping", 3])
    host.send_raw(ping[:5])
    host.assert_silent(0.05)
    host.send_raw(ping[5:] + _framed(["ping", 4]))
    assert host.recv() == ["pong", 3]
    assert host.recv() == ["pong", 4]
    assert host.recv() == ["reply", 1, "slept"]


def test_a_handler_deadline_fires_while_a_frame_is_incomplete(raw_host: HostProcess) -> None:
    """PROTOCOL.md §8: the watchdog cancels a handler past its handler_timeout_ms even
    while the frame after it has not fully arrived; EOF in the middle of a frame ends the
    host as any EOF does (§1.5)."""
    spec = {"name": "s", "module": "agents", "class": "Sleeper", "config": {}, "state": None}
    raw_host.init_agent({**spec, "handler_timeout_ms": 100})
    raw_host.send(["event", 1, 1, "sleep", packb(30)])
    raw_host.send_raw(_framed(["ping", 1])[:6])
    nack = raw_host.recv_kind("nack", timeout=10)
    assert nack[1:3] == [1, 1] and "handler_timeout of 100 ms" in nack[3]["message"]
    raw_host.close_input()
    assert raw_host.wait_exit(5) == 0


def test_echo_call_keeps_terms(host: HostProcess) -> None:
    value = {"a": [1, 2.5, None, True], (1, Atom("ok")): b"\xff\x00", "pid": Pid(b"\x83x")}
    assert host.call("hostmod", "echo", value) == ["reply", 1001, value]
    assert host.call("hostmod", "add", 2, 3)[2] == 5


def test_exception_becomes_error_and_host_keeps_serving(host: HostProcess) -> None:
    kind, _, error = host.call("hostmod", "boom", "no way")
    assert kind == "error"
    assert error["type"] == "ValueError"
    assert error["message"] == "no way"
    assert "raise ValueError(message)" in error["traceback"]
    assert "_host.py" not in error["traceback"].splitlines()[1]
    assert host.call("hostmod", "echo", "still here")[2] == "still here"


def test_error_type_is_qualified(host: HostProcess) -> None:
    error = host.call("hostmod", "bad_json")[2]
    assert error["type"] == "json.decoder.JSONDecodeError"


def test_dotted_function(host: HostProcess) -> None:
    assert host.call("os", "path.join", "a", "b")[2] == "a/b"
    assert host.call("hostmod", "Box.twice", 21)[2] == 42


def test_unknown_module_and_function(host: HostProcess) -> None:
    error = host.call("no_such_module_here", "f")[2]
    assert error["type"] == "ModuleNotFoundError"
    assert "no_such_module_here" in error["message"]
    assert host.call("hostmod", "nope")[2]["type"] == "AttributeError"


def test_unencodable_result(host: HostProcess) -> None:
    kind, _, error = host.call("hostmod", "unencodable")
    assert kind == "error"
    assert error["type"] == "TypeError"
    assert "hostmod.unencodable cannot be encoded" in error["message"]


def test_a_result_msgpack_would_change_is_an_error_naming_where(host: HostProcess) -> None:
    # A set would arrive as a list (PROTOCOL.md §2): refused, not changed on the way.
    kind, _, error = host.call("hostmod", "tagged")
    assert kind == "error" and error["type"] == "TypeError"
    assert error["message"] == (
        "the result of hostmod.tagged cannot be encoded: result['tags']: a set is not a "
        "msgpack type; use a list (sorted(...) for a stable order)"
    )


def test_reply_over_owner_max_frame(raw_host: HostProcess) -> None:
    raw_host.init(max_frame=4096)
    kind, _, error = raw_host.call("hostmod", "big", 10_000)
    assert kind == "error"
    assert error["type"] == "symbiont.FrameTooLarge"
    assert "4096" in error["message"] and "10" in error["message"]
    assert raw_host.call("hostmod", "big", 10)[2] == b"x" * 10


def test_cancel_running_sleep_sends_no_reply(host: HostProcess) -> None:
    started = time.monotonic()
    host.send(["call", 1, "hostmod", "sleep_noting_cancel", [30]])
    host.wait_logs(lambda logs: any("sleep: running" in m for _, m in logs))
    host.send(["cancel", 1])
    host.send(["call", 2, "hostmod", "echo", ["next"]])
    assert host.recv() == ["reply", 2, "next"]
    # Well before the sleep's 30 s (a bound, not a speed: the machine may be loaded).
    assert time.monotonic() - started < 15
    assert host.call("hostmod", "cancellations")[2] == ["sleep"]


def test_cancels_at_any_moment_leave_the_host_serving(host: HostProcess) -> None:
    """Calls cancelled after 0 to 4 ms, while the watchdog and the main thread both touch
    the input (this once crashed the host: two threads polling one poll object)."""
    rng = random.Random(7)
    pid = host.call("hostmod", "os_pid")[2]
    for _ in range(150):
        call_id = host.new_id()
        host.send(["call", call_id, "hostmod", "sleep", [30]])
        time.sleep(rng.random() * 0.004)
        host.send(["cancel", call_id])
        assert host.call("hostmod", "os_pid")[2] == pid
    assert host.proc.poll() is None


def test_cancel_running_python_loop(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "spin", [30]])
    # The cancel reaches a loop that is running, not a call still queued.
    host.wait_logs(lambda logs: any("spinning" in m for _, m in logs))
    host.send(["cancel", 1], ["call", 2, "hostmod", "echo", ["after"]])
    assert host.recv() == ["reply", 2, "after"]


def test_cancel_queued_call(host: HostProcess) -> None:
    host.send(
        ["call", 1, "hostmod", "sleep", [0.3]],
        ["call", 2, "hostmod", "echo", ["dropped"]],
        ["cancel", 2],
        ["call", 3, "hostmod", "echo", ["kept"]],
        ["cancel", 99],  # unknown id: ignored
    )
    assert host.recv() == ["reply", 1, "slept"]
    assert host.recv() == ["reply", 3, "kept"]
    host.assert_silent(0.1)


def test_cancel_ignored_by_user_code_gives_late_reply(host: HostProcess) -> None:
    host.send(["call", 1, "hostile", "stubborn", [0.3]])
    host.wait_logs(lambda logs: any("stubborn: running" in m for _, m in logs))
    host.send(["cancel", 1])
    assert host.recv() == ["reply", 1, "late"]


def test_a_cancel_during_the_import_of_the_called_module_waits_for_the_import(
    host: HostProcess,
) -> None:
    # Cut in half, a package stays half initialised in sys.modules, and every later
    # import of it fails (NameError in its __init__): the cancel is raised once the
    # module is imported, before the function runs.
    host.send(["call", 1, "slow_package", "echo", ["first"]])
    host.wait_logs(lambda logs: any("slow_package: importing" in m for _, m in logs))
    host.send(["cancel", 1], ["call", 2, "slow_package", "echo", ["second"]])
    assert host.recv() == ["reply", 2, "second"]  # none for call 1: cancelled
    assert host.call("slow_package", "runs")[2] == 1


def test_eof_while_sleeping_exits_fast(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "sleep", [30]])
    host.assert_silent(0.05)
    host.close_input()
    # Well before the sleep's 30 s: the EOF interrupts it.
    assert host.wait_exit(10) == 0


def test_eof_while_idle_exits_zero(host: HostProcess) -> None:
    host.close_input()
    assert host.wait_exit(2) == 0


def test_eof_before_init_exits_zero(raw_host: HostProcess) -> None:
    raw_host.close_input()
    assert raw_host.wait_exit(2) == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (struct.pack(">I", MAX_FRAME + 1), "over the limit"),
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "does not decode"),
        (struct.pack(">I", 2) + b"\x90\xc0", "does not decode"),  # trailing byte
        (struct.pack(">I", 1) + b"\x05", "not an array led by a kind"),
        (struct.pack(">I", 2) + b"\x91\x05", "not an array led by a kind"),
    ],
    ids=["oversize", "garbage", "trailing", "not-array", "kind-not-str"],
)
def test_protocol_errors_exit_3(host: HostProcess, payload: bytes, reason: str) -> None:
    host.send_raw(payload)
    assert host.wait_exit() == 3
    assert reason in host.stderr_text()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (["bogus", 1, 2], "unknown frame kind 'bogus'"),
        (["call", 1, "hostmod", "echo"], "malformed 'call' frame"),
        (["call", -1, "hostmod", "echo", []], "malformed 'call' frame"),
        (["reply", 1], "malformed 'reply' frame"),
        (["event", 1, 1, "t", b""], "slot 1, which runs no agent"),
        (["event", 1, "t", b""], "malformed 'event' frame"),
        (["agent_start", 0, {}], "malformed 'agent_start' frame"),
        (["init", 1, {}], "unknown frame kind 'init'"),
        (["ping", -1], "malformed 'ping' frame"),
        (["ping"], "malformed 'ping' frame"),
    ],
)
def test_bad_frames_exit_3(host: HostProcess, frame: list, reason: str) -> None:
    host.send(frame)
    assert host.wait_exit() == 3
    assert reason in host.stderr_text()


def test_protocol_error_during_long_call_exits_3(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "sleep", [30]])
    host.assert_silent(0.05)
    host.send(["bogus"])
    host.send_raw(struct.pack(">I", MAX_FRAME + 1))
    assert host.wait_exit(2) == 3


def test_first_frame_must_be_init(raw_host: HostProcess) -> None:
    raw_host.send(["call", 1, "hostmod", "echo", [1]])
    assert raw_host.wait_exit() == 3
    assert "expected an init frame first" in raw_host.stderr_text()


def test_version_mismatch_is_fatal(raw_host: HostProcess) -> None:
    raw_host.send(["init", 1, {"name": "x"}])
    fatal = raw_host.recv_kind("fatal")
    assert "version mismatch" in fatal[1]["message"]
    assert raw_host.wait_exit() == 2


def test_python_path_is_prepended(raw_host: HostProcess) -> None:
    raw_host.init(python_path=[str(os.path.dirname(__file__)) + "/fixtures/extra"])
    assert raw_host.call("sys", "path.__getitem__", 0)[2].endswith("fixtures/extra")


def test_output_and_logging_become_log_frames(host: HostProcess) -> None:
    assert host.call("hostmod", "say", "hi")[2] == "said"
    assert host.call("hostile", "say", "yo")[2] == "said"
    expected = {
        ("info", "out:hi"),
        ("warning", "err:hi"),
        ("info", "info:hi"),
        ("warning", "warning:hi"),
        ("info", "out:yo"),
        ("warning", "err:yo"),
        ("info", "raw:yo"),
    }
    host.wait_logs(
        lambda logs: expected <= set(logs) and any(m.startswith("error:hi") for _, m in logs)
    )
    error = next(m for level, m in host.logs if m.startswith("error:hi"))
    assert "Traceback" in error and "KeyError" in error
    assert ("error", error) in host.logs
    assert not any("debug:hi" in m for _, m in host.logs)


def test_failing_cast_is_logged(host: HostProcess) -> None:
    host.send(["cast", "hostmod", "record_cast", [7]], ["cast", "hostmod", "failing_cast", []])
    assert host.call("hostmod", "recorded_casts")[2] == [7]
    host.wait_logs(lambda logs: any("cast went wrong" in m for _, m in logs))
    level, text = next(log for log in host.logs if "cast went wrong" in log[1])
    assert level == "error" and "hostmod.failing_cast failed" in text


def test_nested_calls(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "ask", ["erlang", "node", []]])
    _, inner_id, module, function, args = host.recv_kind("call")
    assert (module, function, args) == ("erlang", "node", [])
    # While the host waits for us, it still serves our calls, nested ones included.
    host.send(["call", 2, "hostmod", "echo", ["meanwhile"]])
    assert host.recv() == ["reply", 2, "meanwhile"]
    host.send(["call", 3, "hostmod", "ask", ["erlang", "self", []]])
    deeper = host.recv_kind("call")
    host.send(["reply", deeper[1], Pid(b"pid")])
    assert host.recv() == ["reply", 3, Pid(b"pid")]
    host.send(["reply", inner_id, Atom("nonode@nohost")])
    assert host.recv() == ["reply", 1, "nonode@nohost"]


def test_erlang_error_reply_raises(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "ask", ["erlang", "error", ["badarg"]]])
    inner = host.recv_kind("call")
    host.send(["error", inner[1], {"type": "error", "message": "badarg", "traceback": ""}])
    kind, _, error = host.recv()
    assert kind == "error"
    assert error["type"] == "symbiont.ErlangError"
    assert error["message"] == "error: badarg"


def test_host_call_timeout_cancels(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "ask", ["timer", "sleep", [1000], 0.1]])
    inner = host.recv_kind("call")
    assert host.recv() == ["cancel", inner[1]]
    kind, _, error = host.recv()
    assert (kind, error["type"]) == ("error", "symbiont.CallTimeout")
    host.send(["reply", inner[1], "too late"])  # a late reply is dropped
    assert host.call("hostmod", "echo", 1)[2] == 1


def test_host_call_timeouts_a_wait_cannot_take_are_refused(host: HostProcess) -> None:
    """A timeout past what a wait takes (threading.TIMEOUT_MAX) is a clear ValueError; a
    long one (past the 24.8 days a poll takes at once) waits, and the reply comes."""
    error = host.call("hostmod", "ask", "erlang", "node", [], 1e300)[2]
    assert (
        error["type"] == "ValueError"
        and "timeout must be None or a number in 0.." in (error["message"])
    )
    host.send(["call", 1, "hostmod", "ask", ["erlang", "node", [], 3e6]])
    inner = host.recv_kind("call")
    host.send(["reply", inner[1], "node@here"])
    assert host.recv() == ["reply", 1, "node@here"]


def test_call_from_another_thread(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "ask_from_thread", ["erlang", "node", []]])
    inner = host.recv_kind("call")
    host.send(["reply", inner[1], "node@here"])
    assert host.recv() == ["reply", 1, "node@here"]


def test_owner_cancel_of_call_waiting_on_owner(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "ask", ["erlang", "node", []]])
    inner = host.recv_kind("call")
    host.send(["cancel", 1])
    assert host.recv() == ["cancel", inner[1]]
    assert host.call("hostmod", "echo", "ok")[2] == "ok"


def test_messages_and_casts_to_the_owner(host: HostProcess) -> None:
    pid = Pid(b"\x83Xowner")
    assert host.call("hostmod", "install_handler", pid)[2] is None
    host.send(["msg", None, 42])
    assert host.recv() == ["msg", pid, ("got", 42)]
    host.send(["call", 1, "hostmod", "owner_cast", ["erlang", "garbage_collect", []]])
    assert host.recv() == ["cast", "erlang", "garbage_collect", []]
    assert host.recv() == ["reply", 1, None]


def test_message_without_handler_is_logged(host: HostProcess) -> None:
    host.send(["msg", None, "hello"], ["msg", "nobody", "hello"])
    host.wait_logs(lambda logs: sum("dropped" in m for _, m in logs) == 2)


def test_hostile_fixture_functions(host: HostProcess) -> None:
    assert host.call("hostile", "echo", [1, "two"])[2] == [1, "two"]
    assert host.call("hostile", "boom", "bad")[2]["type"] == "ValueError"
    assert host.call("hostile", "os_pid")[2] == host.proc.pid
    pid = Pid(b"p")
    host.send(["call", 1, "hostile", "notify", [pid, "m"]])
    assert host.recv() == ["msg", pid, "m"]
    assert host.recv() == ["reply", 1, None]


def test_hostile_raw_write_is_a_protocol_violation_of_the_host(host: HostProcess) -> None:
    # The host writes garbage to its own fd 4; the owner would see it. Here we only check
    # that the garbage arrives as-is (the owner-side tests judge it).
    host.send(["call", 1, "hostile", "unknown_kind", []])
    frame = host.recv()
    assert frame == ["bogus", 1, 2]


def test_packb_frames_are_small() -> None:
    assert len(packb(["reply", 1, None])) == 9


def test_protocol_error_while_waiting_on_the_owner_exits_3(host: HostProcess) -> None:
    host.send(["call", 1, "hostmod", "ask", ["erlang", "node", []]])
    host.recv_kind("call")
    host.send(["call", 2, "hostmod"])  # malformed; user code must not be able to swallow it
    assert host.wait_exit() == 3
    assert "malformed 'call' frame" in host.stderr_text()


def test_preload_imports_ahead_and_leaves_failures_for_later() -> None:
    """A warm standby imports its agents' modules before the handshake (SYMBIONT_PRELOAD);
    one that fails is not left half-imported, so agent_start imports and reports it."""
    import sys

    from symbiont._host import _preload

    sys.modules.pop("colorsys", None)
    _preload("colorsys,no_such_module_for_preload,")
    assert "colorsys" in sys.modules
    assert "no_such_module_for_preload" not in sys.modules


def test_a_burst_of_calls_is_answered_in_order(host: HostProcess) -> None:
    # The replies of a burst are held and written together (Transport.hold_writes).
    ids = [host.new_id() for _ in range(500)]
    host.send(*(["call", i, "hostmod", "echo", [i]] for i in ids))
    assert [host.recv() for _ in ids] == [["reply", i, i] for i in ids]


def test_replies_held_in_a_burst_do_not_wait_for_a_slow_call(host: HostProcess) -> None:
    first, slow, last = host.new_id(), host.new_id(), host.new_id()
    host.send(
        ["call", first, "hostmod", "echo", [1]],
        ["call", slow, "hostmod", "sleep", [6.0]],
        ["call", last, "hostmod", "echo", [3]],
    )
    started = time.monotonic()
    assert host.recv() == ["reply", first, 1]
    # Out once the watchdog sees the main thread in one call for a tick, not after it
    # (well before the 6 s call ends, on a loaded machine too).
    assert time.monotonic() - started < 3.0
    assert host.recv(10)[:2] == ["reply", slow]
    assert host.recv() == ["reply", last, 3]


def test_a_host_loads_neither_asyncio_nor_importlib_metadata_until_needed(
    host: HostProcess,
) -> None:
    # Each costs an idle host megabytes (asyncio some 10 MB with ssl, importlib.metadata
    # some 7 MB; bench/idle.exs): asyncio comes with the first async def agent or acall,
    # importlib.metadata with symbiont.__version__ outside a checkout.
    loaded = "[m for m in ('asyncio', 'importlib.metadata') if m in __import__('sys').modules]"
    host.send(["call", 1, "builtins", "eval", [loaded]])
    assert host.recv() == ["reply", 1, []]
    host.send(["call", 2, "symbiont", "_version", []])
    assert host.recv()[:2] == ["reply", 2]
