"""The byte pipe under the protocol: fds 3 and 4 in production (PROTOCOL.md §1.2).

The host loop only talks to a :class:`Transport`, so that tests can swap the wire (a socket
pair, plain pipes) without touching the logic.
"""

from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["DEFAULT_SPIN_US", "HOLD_BYTES", "FdTransport", "Transport"]

#: How long a read waits actively for the next frame while traffic is hot, in µs.
DEFAULT_SPIN_US = 100
#: Traffic is hot when the previous read returned data less than this long ago, in seconds.
HOT_WINDOW_S = 0.002
#: Held writes go out once they reach this many bytes (see :meth:`Transport.hold_writes`).
HOLD_BYTES = 64 * 1024

#: The read buffer a transport keeps: the largest read it makes at once without
#: allocating (``symbiont._framing`` asks for 256 KiB, or a whole frame when larger).
_READ_BUF = 256 * 1024
_MAX_POLL_MS = (1 << 31) - 1


class Transport:
    """Interface of a bidirectional byte stream used by the host loop.

    ``write`` may be called from several threads at once; implementations serialize it so
    that frames never interleave.
    """

    def read(self, size: int) -> bytes:
        """Block until at least one byte is available; return up to ``size`` bytes.

        Returns ``b""`` at end of stream.
        """
        raise NotImplementedError

    def wait_readable(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for :meth:`read` not to block."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Write all of ``data`` as one unit with respect to other writers."""
        raise NotImplementedError

    def hold_writes(self, hold: bool) -> None:
        """While held, writes from the calling thread wait to go out together.

        The host holds its writes while more frames wait in its input (a burst): the
        frames it answers with then cost one system call, and one wakeup of the owner,
        instead of one each. Held bytes go out at :meth:`flush`, when they reach
        :data:`HOLD_BYTES`, before any write from another thread (the order of the
        stream is kept), and when ``hold`` is set back to false. The default does not
        hold anything.
        """

    def flush(self) -> None:
        """Write what :meth:`hold_writes` held back, if anything. Any thread may call it."""

    def close(self) -> None:
        """Release the underlying resources. Idempotent."""


class FdTransport(Transport):
    """A :class:`Transport` over two file descriptors (pipes or sockets).

    Parameters
    ----------
    read_fd, write_fd:
        Descriptors to read frames from and write frames to; 3 and 4 for a real host.
    spin_us:
        While traffic is hot (the previous read returned data less than 2 ms ago), a read
        first polls for up to this many µs before it blocks. A blocked process takes tens
        of µs to be woken by the kernel; a request/reply loop saves that on every call.
        An idle host never spins. 0 turns it off. Default: ``SYMBIONT_SPIN_US`` from the
        environment, else :data:`DEFAULT_SPIN_US`.
    """

    def __init__(self, read_fd: int = 3, write_fd: int = 4, spin_us: int | None = None) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        if spin_us is None:
            spin_us = int(os.environ.get("SYMBIONT_SPIN_US", DEFAULT_SPIN_US))
        self._spin_s = max(0, spin_us) / 1e6
        self._last_data = 0.0
        self._write_lock = threading.Lock()
        events = select.POLLIN | select.POLLHUP | select.POLLERR
        self._events = events
        # wait_readable: a poll object per thread (one refuses concurrent use, and the
        # watchdog waits while the dispatch thread may wait too, for credit or a reply).
        self._polls = threading.local()
        # read's spin: a poll object of its own, since a poll object refuses concurrent
        # use and wait_readable runs on another thread than read (reads are serialized).
        self._spin_poll = select.poll()
        self._spin_poll.register(read_fd, events)
        # read's buffer, kept (reads are serialized): os.read would allocate one of the
        # size asked for each read, 256 KiB, which glibc serves by mmap or by growing the
        # heap, and gives back at once (two system calls a frame, more than the read's).
        self._read_buf = memoryview(bytearray(_READ_BUF))
        self._closed = False
        # hold_writes: the thread whose writes are held (None: no hold), and what waits.
        self._holder: int | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0

    def read(self, size: int) -> bytes:
        """See :meth:`Transport.read`. A reset connection counts as end of stream."""
        if self._spin_s:
            now = time.perf_counter()
            if now - self._last_data < HOT_WINDOW_S:
                poll, deadline = self._spin_poll.poll, now + self._spin_s
                while not poll(0) and time.perf_counter() < deadline:
                    pass
        # A larger read (a frame over the buffer) gets a buffer of its own, not kept.
        view = self._read_buf if size <= _READ_BUF else memoryview(bytearray(size))
        try:
            n = os.readv(self.read_fd, [view[:size]])
        except ConnectionResetError:
            return b""
        data = bytes(view[:n])
        if self._spin_s and data:
            self._last_data = time.perf_counter()
        return data

    def wait_readable(self, timeout: float) -> bool:
        """See :meth:`Transport.wait_readable`. Any thread may call it, several at once."""
        poll = getattr(self._polls, "poll", None)
        if poll is None:
            poll = self._polls.poll = select.poll()
            poll.register(self.read_fd, self._events)
        # poll takes a C int of ms (24.8 days); a longer wait is that long, then again.
        return bool(poll.poll(min(max(0, int(timeout * 1000)), _MAX_POLL_MS)))

    def write(self, data: bytes) -> None:
        """See :meth:`Transport.write`. Loops on partial writes."""
        with self._write_lock:
            if self._holder is not None or self._held:
                self._held.append(data)
                self._held_bytes += len(data)
                if self._holder == threading.get_ident() and self._held_bytes < HOLD_BYTES:
                    return
                data = self._take_held()
            self._write_all(data)

    def hold_writes(self, hold: bool) -> None:
        """See :meth:`Transport.hold_writes`."""
        if hold:
            self._holder = threading.get_ident()
        else:
            self._holder = None
            if self._held:
                self.flush()

    def flush(self) -> None:
        """See :meth:`Transport.flush`."""
        with self._write_lock:
            if self._held:
                self._write_all(self._take_held())

    def _take_held(self) -> bytes:
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        return data

    def _write_all(self, data: bytes) -> None:
        written = os.write(self.write_fd, data)
        if written < len(data):
            view = memoryview(data)
            while written < len(view):
                written += os.write(self.write_fd, view[written:])

    def close(self) -> None:
        """Close both descriptors. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
