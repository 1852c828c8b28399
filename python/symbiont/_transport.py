"""The byte pipe under the protocol: fds 3 and 4 in production (PROTOCOL.md §1.2).

The host loop only talks to a :class:`Transport`, so that tests can swap the wire (a socket
pair, plain pipes) without touching the logic.
"""

from __future__ import annotations

import os
import select
import threading

__all__ = ["FdTransport", "Transport"]


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

    def close(self) -> None:
        """Release the underlying resources. Idempotent."""


class FdTransport(Transport):
    """A :class:`Transport` over two file descriptors (pipes or sockets).

    Parameters
    ----------
    read_fd, write_fd:
        Descriptors to read frames from and write frames to; 3 and 4 for a real host.
    """

    def __init__(self, read_fd: int = 3, write_fd: int = 4) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._write_lock = threading.Lock()
        self._poll = select.poll()
        self._poll.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._closed = False

    def read(self, size: int) -> bytes:
        """See :meth:`Transport.read`. A reset connection counts as end of stream."""
        try:
            return os.read(self.read_fd, size)
        except ConnectionResetError:
            return b""

    def wait_readable(self, timeout: float) -> bool:
        """See :meth:`Transport.wait_readable`."""
        return bool(self._poll.poll(max(0, int(timeout * 1000))))

    def write(self, data: bytes) -> None:
        """See :meth:`Transport.write`. Loops on partial writes."""
        with self._write_lock:
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
