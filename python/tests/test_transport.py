"""The host loop over a swapped transport: a socket pair, in this process (STYLE.md #14).

Here the host does not run on the main thread, so cancelling the running call goes through
``PyThreadState_SetAsyncExc`` instead of a signal.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from symbiont._host import Host
from symbiont._terms import packb, unpackb
from symbiont._transport import FdTransport


class Owner:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, *frames: list[Any]) -> None:
        self.sock.sendall(b"".join(struct.pack(">I", len(p)) + p for p in map(packb, frames)))

    def recv(self) -> list[Any]:
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack_from(">I", self.buf)
                if len(self.buf) >= 4 + size:
                    frame = unpackb(self.buf[4 : 4 + size])
                    self.buf = self.buf[4 + size :]
                    if frame[0] != "log":
                        return frame
                    continue
            data = self.sock.recv(65536)
            assert data, "host closed the stream"
            self.buf += data


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
    owner.send(["init", 1, {"name": "inproc", "max_frame": 1 << 20, "python_path": [fixtures]}])
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
