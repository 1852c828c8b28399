"""The host loop over a swapped transport: a socket pair, in this process (STYLE.md #14).

Here the host does not run on the main thread, so cancelling the running call goes through
``PyThreadState_SetAsyncExc`` instead of a signal.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SocketOwner

from symbiont._host import Host
from symbiont._transport import HOLD_BYTES, FdTransport

Owner = SocketOwner


@pytest.fixture
def in_process() -> Iterator[tuple[Owner, list[int], threading.Thread]]:
    owner_sock, host_sock = socket.socketpair()
    owner_sock.settimeout(5)
    exits: list[int] = []

    def exit_hook(status: int) -> None:
        exits.append(status)
        raise SystemExit(status)

    host = Host(FdTransport(host_sock.fileno(), host_sock.fileno()), exit=exit_hook)

    def serve() -> None:
        try:
            host.serve()
        except SystemExit:
            pass  # raised by exit_hook to end the thread

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    owner = Owner(owner_sock)
    fixtures = str(Path(__file__).resolve().parent / "fixtures")
    owner.send(["init", 2, {"name": "inproc", "max_frame": 1 << 20, "python_path": [fixtures]}])
    assert owner.recv()[0] == "ready"
    try:
        yield owner, exits, thread
    finally:
        owner_sock.close()
        thread.join(5)
        host_sock.close()


def test_calls_over_a_socket_pair(in_process: tuple[Owner, list[int], threading.Thread]) -> None:
    owner, exits, thread = in_process
    owner.send(["call", 1, "hostmod", "add", [1, 2]], ["call", 2, "hostmod", "boom", ["x"]])
    assert owner.recv() == ["reply", 1, 3]
    assert owner.recv()[2]["type"] == "ValueError"
    owner.sock.shutdown(socket.SHUT_WR)
    thread.join(5)
    assert exits[0] == 0 and not thread.is_alive()


def test_cancel_without_signals(in_process: tuple[Owner, list[int], threading.Thread]) -> None:
    owner, _, _ = in_process
    owner.send(["call", 1, "hostmod", "spin", [30]], ["cancel", 1])
    owner.send(["call", 2, "hostmod", "echo", ["after"]])
    assert owner.recv() == ["reply", 2, "after"]


def _spin_pair(spin_us: int) -> tuple[FdTransport, int, int]:
    read_fd, write_fd = os.pipe()
    return FdTransport(read_fd, write_fd, spin_us=spin_us), read_fd, write_fd


@pytest.mark.parametrize("spin_us", [0, 100, 50_000])
def test_spinning_read_returns_every_byte_in_order(spin_us: int) -> None:
    """Whether the next bytes come during the spin, after it, or were already there."""
    transport, read_fd, write_fd = _spin_pair(spin_us)
    try:
        os.write(write_fd, b"a")
        assert transport.read(10) == b"a"  # cold: no spin, data already there
        late = threading.Timer(0.01, os.write, (write_fd, b"b"))  # after a 100 µs spin
        started = time.perf_counter()  # before the timer's 10 ms start: it cannot be late
        late.start()
        assert transport.read(10) == b"b"
        assert time.perf_counter() - started >= 0.005  # the read waited for it
        late.join()
        os.write(write_fd, b"cd")
        assert transport.read(1) == b"c"
        assert transport.read(10) == b"d"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_spin_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBIONT_SPIN_US", "0")
    read_fd, write_fd = os.pipe()
    try:
        assert FdTransport(read_fd, write_fd)._spin_s == 0
        monkeypatch.delenv("SYMBIONT_SPIN_US")
        assert FdTransport(read_fd, write_fd)._spin_s == 100 / 1e6
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _available(read_fd: int) -> bytes:
    os.set_blocking(read_fd, False)
    try:
        return os.read(read_fd, 1 << 20)
    except BlockingIOError:
        return b""
    finally:
        os.set_blocking(read_fd, True)


def test_held_writes_go_out_together_and_in_order() -> None:
    out_r, out_w = os.pipe()
    transport = FdTransport(out_r, out_w, spin_us=0)  # reads unused here
    try:
        transport.hold_writes(True)
        transport.write(b"a")
        transport.write(b"b")
        assert _available(out_r) == b""
        transport.flush()
        assert _available(out_r) == b"ab"
        transport.write(b"c")
        # A write from another thread takes what waits with it, in order.
        other = threading.Thread(target=transport.write, args=(b"d",))
        other.start()
        other.join()
        assert _available(out_r) == b"cd"
        transport.write(b"e")
        transport.hold_writes(False)  # goes out at once
        assert _available(out_r) == b"e"
        transport.write(b"f")  # not held any more
        assert _available(out_r) == b"f"
    finally:
        os.close(out_r)
        os.close(out_w)


def test_held_writes_go_out_at_the_size_limit() -> None:
    out_r, out_w = os.pipe()
    transport = FdTransport(out_r, out_w, spin_us=0)
    try:
        transport.hold_writes(True)
        chunk = b"x" * (HOLD_BYTES // 4)
        for _ in range(3):
            transport.write(chunk)
        assert _available(out_r) == b""
        transport.write(chunk)
        assert len(_available(out_r)) == HOLD_BYTES
    finally:
        os.close(out_r)
        os.close(out_w)
