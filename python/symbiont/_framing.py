"""Frame reading and writing: 4-byte big-endian length + one msgpack array (PROTOCOL.md §1.3).

:class:`FrameReader` is shared by the host's main thread and its watchdog (see
``_host.py``): a lock guards the buffer, and frames the watchdog read ahead wait in
:attr:`FrameReader.pending`, which the main thread drains first.
"""

from __future__ import annotations

import collections
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ._errors import ProtocolError
from ._terms import unpackb
from ._transport import Transport

__all__ = ["DEFAULT_MAX_FRAME", "HEADER", "FrameReader"]

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")
_CHUNK = 256 * 1024
_unpack_header = HEADER.unpack_from


def _decode(payload: bytes | bytearray) -> list[Any]:
    try:
        frame = unpackb(payload)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a protocol error
        raise ProtocolError(
            f"payload of {len(payload)} bytes does not decode: {type(exc).__name__}: {exc}"
        ) from None
    if type(frame) is not list or not frame or type(frame[0]) is not str:
        raise ProtocolError(f"payload is not an array led by a kind string: {frame!r:.200}")
    return frame


class FrameReader:
    """Reads frames from a :class:`Transport`.

    Attributes
    ----------
    limit:
        The largest accepted payload; a bigger length prefix is a protocol error (§1.4).
    pending:
        Frames read ahead by another thread, returned before anything else.
    reading:
        True while the main thread is inside :meth:`next_frame`.
    generation:
        Counts :meth:`next_frame` returns; unchanged while the main thread stays in one
        dispatch.
    on_idle:
        Called before :meth:`next_frame` blocks (the agent's cumulative ack, §8).
    on_eof:
        Called at end of stream; must not return normally (the host exits).
    """

    def __init__(self, transport: Transport, on_eof: Callable[[], None]) -> None:
        self.transport = transport
        self.limit = DEFAULT_MAX_FRAME
        self.pending: collections.deque[list[Any]] = collections.deque()
        self.lock = threading.Lock()
        self.reading = False
        self.generation = 0
        self.on_idle: Callable[[], None] | None = None
        self.on_eof = on_eof
        self._buf = bytearray()
        self._need = 0

    def next_frame(self, timeout: float | None = None) -> list[Any] | None:
        """The next frame, blocking for it; ``None`` if ``timeout`` seconds pass first."""
        self.reading = True
        try:
            with self.lock:
                if self.pending:
                    return self.pending.popleft()
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    frame = self._parse_one()
                    if frame is not None:
                        return frame
                    if self.on_idle is not None:
                        self.on_idle()
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not self.transport.wait_readable(remaining):
                            return None
                    self._fill()
        finally:
            self.generation += 1
            self.reading = False

    def read_available(self, fill: bool) -> list[list[Any]]:
        """All complete frames in the buffer, after one read from the transport if ``fill``.

        The caller holds :attr:`lock`; with ``fill`` it has checked that the transport is
        readable, so that the read does not block.
        """
        if fill:
            self._fill()
        frames = []
        while (frame := self._parse_one()) is not None:
            frames.append(frame)
        return frames

    def _fill(self) -> None:
        data = self.transport.read(max(_CHUNK, self._need))
        self._need = 0
        if not data:
            self.on_eof()
            raise EOFError("end of stream")  # on_eof normally never returns
        self._buf += data

    def _parse_one(self) -> list[Any] | None:
        buf = self._buf
        avail = len(buf)
        if avail < 4:
            return None
        (size,) = _unpack_header(buf)
        if size > self.limit:
            raise ProtocolError(f"frame length {size} is over the limit of {self.limit} bytes")
        end = 4 + size
        if avail < end:
            self._need = end - avail
            return None
        payload = buf[4:end]
        del buf[:end]  # cheap: bytearray moves its start pointer
        return _decode(payload)
