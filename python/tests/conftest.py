"""Test harness: run the real ``python -m symbiont.host`` with pipes on its fds 3 and 4.

The test plays the owner: it writes frames to the host's fd 3 and reads the host's fd 4.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from symbiont._host import PROTOCOL_VERSION
from symbiont._terms import packb, unpackb

ROOT = Path(__file__).resolve().parents[2]
PYTHON_SRC = ROOT / "python"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HOSTILE = ROOT / "test" / "fixtures" / "python"
DEMO = ROOT / "examples" / "demo"
MAX_FRAME = 64 * 1024 * 1024


def host_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (PYTHON_SRC, FIXTURES, HOSTILE))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def spawn_host(to_host_r: int, from_host_w: int, **popen: Any) -> subprocess.Popen[bytes]:
    """Start the host with ``to_host_r`` as its fd 3 and ``from_host_w`` as its fd 4."""

    def map_fds() -> None:
        # Copies above 10 first, so that dup2 onto 3 cannot clobber the other end.
        high_r = fcntl.fcntl(to_host_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_host_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    popen.setdefault("env", host_env())
    return subprocess.Popen(
        [sys.executable, "-m", "symbiont.host"],
        preexec_fn=map_fds,  # noqa: PLW1509 - only dup2/fcntl, async-signal-safe enough
        close_fds=False,  # the fds dup2'ed onto 3 and 4 are the only inheritable ones we add
        stdin=subprocess.DEVNULL,
        **popen,
    )


class HostProcess:
    """A host subprocess and the owner's end of its pipes."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        to_host_r, self.to_host = os.pipe()
        self.from_host, from_host_w = os.pipe()
        self.proc = spawn_host(
            to_host_r,
            from_host_w,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env or host_env(),
        )
        os.close(to_host_r)
        os.close(from_host_w)
        self._buf = bytearray()
        self.logs: list[tuple[str, str]] = []
        self._next_id = 1000

    # -- writing ----------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.to_host, view) :]

    def send(self, *frames: list[Any]) -> None:
        """Send frames in one write (so that the host finds them buffered together)."""
        out = bytearray()
        for frame in frames:
            payload = packb(frame)
            out += struct.pack(">I", len(payload)) + payload
        self.send_raw(bytes(out))

    def close_input(self) -> None:
        if self.to_host >= 0:
            os.close(self.to_host)
            self.to_host = -1

    # -- reading ----------------------------------------------------------------------

    def _read_frame(self, deadline: float) -> list[Any] | None:
        while True:
            if len(self._buf) >= 4:
                (size,) = struct.unpack_from(">I", self._buf)
                if len(self._buf) >= 4 + size:
                    payload = bytes(self._buf[4 : 4 + size])
                    del self._buf[: 4 + size]
                    return unpackb(payload)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame from the host; logs so far: {self.logs}")
            ready, _, _ = select.select([self.from_host], [], [], remaining)
            if ready:
                data = os.read(self.from_host, 1 << 20)
                if not data:
                    return None
                self._buf += data

    def recv(self, timeout: float = 5.0) -> list[Any] | None:
        """The next frame that is not a log (logs go to ``self.logs``); None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._read_frame(deadline)
            if frame is not None and frame[0] == "log":
                self.logs.append((frame[1], frame[2]))
                continue
            return frame

    def recv_kind(self, kind: str, timeout: float = 5.0) -> list[Any]:
        frame = self.recv(timeout)
        assert frame is not None and frame[0] == kind, frame
        return frame

    def wait_logs(self, pred: Callable[[list[tuple[str, str]]], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.logs):
            frame = self._read_frame(deadline)
            assert frame is not None, f"EOF while waiting for logs: {self.logs}"
            assert frame[0] == "log", f"unexpected frame {frame}"
            self.logs.append((frame[1], frame[2]))

    def assert_silent(self, seconds: float) -> None:
        """No non-log frame arrives within ``seconds``."""
        try:
            frame = self.recv(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    # -- protocol helpers ---------------------------------------------------------------

    def init(self, **options: Any) -> list[Any]:
        opts: dict[str, Any] = {
            "name": "test",
            "max_frame": MAX_FRAME,
            "python_path": [],
            "health": True,
        }
        opts.update(options)
        self.send(["init", PROTOCOL_VERSION, opts])
        return self.recv_kind("ready")

    def start_agent(self, spec: dict[str, Any], slot: int = 1) -> list[Any]:
        """Send ``agent_start`` and return the answer (``agent_ready`` or ``agent_failed``)."""
        self.send(["agent_start", slot, spec])
        frame = self.recv()
        assert frame is not None and frame[0] in ("agent_ready", "agent_failed"), frame
        assert frame[1] == slot, frame
        return frame

    def init_agent(self, spec: dict[str, Any], **options: Any) -> dict[str, Any]:
        """The handshake, then ``spec`` started in slot 1; returns its ``agent_ready`` info."""
        self.init(**options)
        frame = self.start_agent(spec)
        assert frame[0] == "agent_ready", frame
        return frame[2]

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def call(self, module: str, function: str, *args: Any, timeout: float = 5.0) -> list[Any]:
        """Send a call and return its reply or error frame."""
        call_id = self.new_id()
        self.send(["call", call_id, module, function, list(args)])
        frame = self.recv(timeout)
        assert frame is not None and frame[0] in ("reply", "error") and frame[1] == call_id, frame
        return frame

    def wait_exit(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout)

    def stderr_text(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode("utf-8", "replace")

    def stop(self) -> None:
        self.close_input()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        os.close(self.from_host)


@pytest.fixture
def raw_host() -> Iterator[HostProcess]:
    """A host that has not been sent ``init`` yet."""
    host = HostProcess()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def host(raw_host: HostProcess) -> HostProcess:
    """A host past the handshake, without an agent."""
    raw_host.init()
    return raw_host


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass (bounded, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class SocketOwner:
    """The owner's end of an in-process host on a socket pair: frames in and out; log
    frames are skipped."""

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
