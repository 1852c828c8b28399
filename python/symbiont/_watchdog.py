"""The watchdog thread of a host: it wakes every :data:`WATCHDOG_INTERVAL` seconds, cancels
a delivery past its handler_timeout (PROTOCOL.md §8), and, once the dispatch thread has
stayed in one dispatch for a full tick, reads the owner's frames for it (see the
"Threads" of ``symbiont._host``): what it may handle itself (:func:`_on_waiting`), the
rest queued for the dispatch thread.

Functions of :class:`~symbiont._host.Host`, which binds them as its methods.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ._errors import ProtocolError
from ._frame_checks import _is_seq

if TYPE_CHECKING:  # pragma: no cover
    from ._host import Host

__all__ = ["WATCHDOG_INTERVAL", "_on_waiting", "_take_over", "_watchdog"]

#: How often the watchdog wakes, in seconds; also the longest a dispatch thread's wait
#: (for a reply, for credit) goes without looking at the owner's frames.
WATCHDOG_INTERVAL = 0.01

_logger = logging.getLogger("symbiont.host")


def _watchdog(self: Host) -> None:
    reader = self.reader
    last = -1
    while self._serving:
        time.sleep(WATCHDOG_INTERVAL)
        self._check_delivery_deadline()
        if reader.reading:
            last = -1
            continue
        generation = reader.generation
        if generation != last:
            last = generation
            continue
        # The main thread has been in one dispatch for a tick: what it wrote while a
        # burst was held goes out now rather than when the dispatch ends.
        try:
            self.transport.flush()
        except OSError:
            pass  # the owner is gone: the reader sees the end of the stream
        try:
            self._take_over(generation)
        except ProtocolError as exc:
            self._protocol_error(str(exc))
        except Exception:
            _logger.exception("symbiont watchdog failed")


def _take_over(self: Host, generation: int) -> None:
    """Read for the main thread while it stays in the dispatch ``generation``."""
    reader = self.reader
    fill = False  # first the frames the main thread left in the buffer
    while self._serving and not reader.reading and reader.generation == generation:
        if not reader.lock.acquire(blocking=False):
            return
        try:
            if reader.reading or reader.generation != generation:
                return
            for frame in reader.read_available(fill):
                self._on_waiting(frame)
        finally:
            reader.lock.release()
        fill = self.transport.wait_readable(WATCHDOG_INTERVAL)
        self._check_delivery_deadline()


def _on_waiting(self: Host, frame: list[Any]) -> None:
    """A frame read while the dispatch waits (for credit, or the watchdog for it)."""
    kind = frame[0]
    if kind == "credit":
        self._on_credit(frame)
    elif kind == "ping":
        self._on_ping(frame)
    elif kind == "cancel":
        self._on_cancel(frame)
    elif kind == "reply" or kind == "error":
        self._on_reply(frame)
    else:
        if kind == "agent_stop" and len(frame) == 2 and _is_seq(frame[1]):
            self._forget_window(frame[1])  # a wait for its credit ends (§8.2)
        self.reader.pending.append(frame)
