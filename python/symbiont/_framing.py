"""Frame reading and writing: 4-byte big-endian length + one msgpack array (PROTOCOL.md §1.3).

:class:`FrameReader` is shared by the host's main thread and its watchdog (see
``_host.py`` and ``_watchdog.py``): a lock guards the buffer, and frames the watchdog read
ahead wait in :attr:`FrameReader.pending`, which the main thread drains first.

While the frame it returns is not the last one already read, the reader has the transport
hold the main thread's writes (:meth:`~symbiont._transport.Transport.hold_writes`): a
burst of frames is answered with one write, not one per frame. What was held goes out
before the reader waits for more input.
"""

from __future__ import annotations

import collections
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ._errors import ProtocolError
from ._terms import _ext_hook
from ._transport import Transport

__all__ = ["DEFAULT_MAX_FRAME", "HEADER", "FrameReader"]

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")
_CHUNK = 256 * 1024
_unpack_header = HEADER.unpack_from
_unpackb = msgpack.unpackb


def _undecodable(payload: bytes | bytearray, exc: Exception) -> ProtocolError:
    return ProtocolError(
        f"payload of {len(payload)} bytes does not decode: {type(exc).__name__}: {exc}"
    )


def _not_a_frame(frame: Any) -> ProtocolError:
    return ProtocolError(f"payload is not an array led by a kind string: {frame!r:.200}")


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
        self._pos = 0  # where the bytes not parsed yet start in _buf
        self._need = 0
        self._holding = False  # whether the transport holds the main thread's writes

    def next_frame(self, timeout: float | None = None) -> list[Any] | None:
        """The next frame, blocking for it; ``None`` if ``timeout`` seconds pass first."""
        self.reading = True
        # acquire/release rather than ``with``: half the cost, on every frame.
        lock = self.lock
        lock.acquire()
        try:
            if self.pending:
                head = self.pending.popleft()
                self._hold(bool(self.pending) or self._pos != 0)
                return head
            frame = self._parse_one()
            if frame is not None:
                # The usual case under load: it was in the buffer already. While more
                # wait there, what the host writes waits too, to go out together.
                self._hold(self._pos != 0)
                return frame
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if self.on_idle is not None:
                    self.on_idle()
                # Nothing more to handle: what was held goes out before the host waits.
                self._hold(False)
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.transport.wait_readable(remaining):
                        return None
                self._fill()
                frame = self._parse_one()
                if frame is not None:
                    self._hold(self._pos != 0)
                    return frame
        finally:
            lock.release()
            self.generation += 1
            self.reading = False

    def _hold(self, hold: bool) -> None:
        if hold != self._holding:
            self._holding = hold
            self.transport.hold_writes(hold)

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
        if self._pos:
            del self._buf[: self._pos]  # what was parsed goes once a read, not once a frame
            self._pos = 0
        self._buf += data

    def _parse_one(self) -> list[Any] | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 4:
            return None
        (size,) = _unpack_header(buf, pos)
        if size > self.limit:
            raise ProtocolError(f"frame length {size} is over the limit of {self.limit} bytes")
        if avail < 4 + size:
            self._need = 4 + size - avail
            return None
        start = pos + 4
        end = start + size
        payload = buf[start:end]
        if end == len(buf):
            buf.clear()  # all parsed: nothing is held while the host waits for more
            self._pos = 0
        else:
            self._pos = end
        # Decoded here rather than through _terms.unpackb: one Python call less per frame.
        try:
            frame = _unpackb(
                payload, raw=False, strict_map_key=False, ext_hook=_ext_hook, timestamp=3
            )
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a protocol error
            raise _undecodable(payload, exc) from None
        if type(frame) is not list or not frame or type(frame[0]) is not str:
            raise _not_a_frame(frame)
        return frame
