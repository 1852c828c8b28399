"""Flow control in a host (PROTOCOL.md §8.2): what it sends on its own, an agent's
publishes and health reports within its slot's window, the host's casts and messages
within its own, waits for the owner's credit, from the dispatch thread (which reads the
owner's frames meanwhile), a thread of the agent's or a coroutine.

Functions of :class:`~symbiont._host.Host`, which binds them as its methods.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._calls import _settle_soon
from ._errors import OverloadedError, ProtocolError
from ._frame_checks import _bad, _is_id
from ._watchdog import WATCHDOG_INTERVAL

if TYPE_CHECKING:  # pragma: no cover
    from ._host import Host

__all__ = [
    "CREDIT_WAIT",
    "_await_credit",
    "_credit_room",
    "_forget_window",
    "_on_credit",
    "_publish",
    "_publish_async",
    "_read_for_credit",
    "_report_health",
    "_wake_credit_futures",
    "_window_of",
    "asend_counted",
    "send_counted",
]

#: How long a publish, cast or message waits for the owner's credit (PROTOCOL.md §8.2)
#: before it raises :class:`~symbiont.OverloadedError`, in seconds.
CREDIT_WAIT = 60.0

_logger = logging.getLogger("symbiont.host")


def _publish(self: Host, slot: int, topic: str, payload_bin: bytes, wait: bool = True) -> bool:
    """Send a publish of ``slot``'s agent (§8), within its window (§8.2); without
    ``wait``, only if the window has room now: False when it has none."""
    record = self._slots.get(slot)
    if record is None:
        return True  # the agent was stopped; the owner would drop it (§8)
    credit = record.window
    if credit is None:  # no window (§8.2)
        ids = record.publish_ids
        if ids is None:
            return True  # the agent was stopped; the owner would drop it (§8)
        seq, n = ids
        ids[1] = n + 1 if n >= 0 else n - 1
        self.send_async(["publish", slot, topic, payload_bin, seq, n], f"publish on {topic!r}")
        return True
    # §8.2: its cost, the bytes of its topic and payload; it waits for room in the
    # slot's window. Its id is taken once it has room, with the lock held to its
    # write: ids go out in the order they are given.
    cost = (len(topic) if topic.isascii() else len(topic.encode())) + len(payload_bin)
    with self._credit_lock:  # self._credit's (the Condition's __enter__ is slower)
        if not (credit[0] < credit[2] and credit[1] < credit[3]):
            if not wait:
                return False
            if not self._await_credit(slot):
                return True  # stopped meanwhile: the owner drops what its slot sends
        ids = record.publish_ids
        if ids is None:
            return True
        seq, n = ids
        ids[1] = n + 1 if n >= 0 else n - 1
        data = self._encode(["publish", slot, topic, payload_bin, seq, n], "a publish")
        credit[0] += 1
        credit[1] += cost
        self._write_frame(data)
    return True


async def _publish_async(self: Host, slot: int, topic: str, payload_bin: bytes) -> None:
    """:meth:`_publish` for a coroutine (``Agent.apublish``): it waits for room in the
    window without blocking its event loop."""
    deadline = None
    while not self._publish(slot, topic, payload_bin, False):
        deadline = deadline or time.monotonic() + CREDIT_WAIT
        await self._credit_room(slot, deadline)


def _report_health(self: Host, slot: int, kind: str, reason: str, metrics: dict[str, Any]) -> None:
    """Send the agent's health report, ``["health", slot, kind, reason, metrics]``
    (PROTOCOL.md §8.3), within the slot's window (§8.2: it costs its frame's size)."""
    if not self._owner_reports:
        if not self._reports_told:
            self._reports_told = True
            _logger.warning(
                "the owner does not take health reports (PROTOCOL.md §8.3): "
                "agent health reports are dropped"
            )
        return
    frame = ["health", slot, kind, reason, metrics]
    record = self._slots.get(slot)
    if record is None:
        return  # stopped, the owner would drop it (§8)
    credit = record.window
    if credit is None:  # no window (§8.2)
        if record.publish_ids is not None:  # else: stopped, the owner would drop it
            self.send_async(frame, "a health report")
        return
    data = self._encode(frame, "a health report")
    with self._credit_lock:
        if not (credit[0] < credit[2] and credit[1] < credit[3] or self._await_credit(slot)):
            return
        if record.publish_ids is None:
            return
        credit[0] += 1
        credit[1] += len(data)
        self._write_frame(data)


def send_counted(self: Host, frame: list[Any], what: str, wait: bool = True) -> bool:
    """Send a ``cast`` or ``msg`` frame within the host's own window (§8.2): it waits
    for the owner's credit when the window is full; without ``wait``, it returns
    False then instead."""
    credit = self._window
    if not self.ready or credit is None:
        self.send_async(frame, what)
        return True
    data = self._encode(frame, what)
    with self._credit_lock:
        if not (credit[0] < credit[2] and credit[1] < credit[3]):
            if not wait:
                return False
            if not self._await_credit(0):
                return True
        credit[0] += 1
        credit[1] += len(data)
        self._write_frame(data)
    return True


async def asend_counted(self: Host, frame: list[Any], what: str) -> None:
    """:meth:`send_counted` for a coroutine: it waits for room in the window without
    blocking its event loop."""
    deadline = None
    while not self.send_counted(frame, what, False):
        deadline = deadline or time.monotonic() + CREDIT_WAIT
        await self._credit_room(0, deadline)


async def _credit_room(self: Host, slot: int, deadline: float) -> None:
    """Wait, in a coroutine, until the window of ``slot`` may have room (the next
    ``credit``, or its agent stopped); :class:`~symbiont.OverloadedError` past
    ``deadline`` (monotonic)."""
    import asyncio  # noqa: PLC0415 - in a coroutine: loaded

    loop = asyncio.get_running_loop()
    with self._credit_lock:
        c = self._window_of(slot)
        if c is None or (c[0] < c[2] and c[1] < c[3]):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _overloaded(slot, c)
        future = loop.create_future()
        self._credit_futures.append((loop, future))
    self.transport.flush()  # what is held goes out: the owner gives back what it gets
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(future, remaining)


def _wake_credit_futures(self: Host) -> None:
    """Wake the coroutines that wait for credit (the caller holds ``_credit_lock``)."""
    futures, self._credit_futures = self._credit_futures, []
    for loop, future in futures:
        _settle_soon(loop, future, None)


def _await_credit(self: Host, slot: int) -> bool:
    """Wait, holding ``self._credit`` (released meanwhile), until the window of ``slot``
    has room: True; False when its agent stops. A host has room while what it was not
    given back is under its window, in frames and in bytes (§8.2).

    The dispatch thread reads the owner's frames itself meanwhile (nobody else does
    while it is in a dispatch, until the watchdog takes over): ``credit``, ``ping``,
    ``cancel``, ``reply`` and ``error`` are handled, the rest waits in the reader's
    queue for after the dispatch. Another thread waits for the reader to wake it.
    Raises :class:`~symbiont.OverloadedError` after :data:`CREDIT_WAIT` seconds,
    :class:`~symbiont.CancelledError` when the dispatch it runs in is cancelled.
    """
    credit = self._credit
    deadline = time.monotonic() + CREDIT_WAIT
    dispatch = threading.get_ident() == self._ident
    while True:
        c = self._window_of(slot)
        if c is None:
            return False
        if c[0] < c[2] and c[1] < c[3]:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _overloaded(slot, c)
        if not dispatch:
            if self._loop_cancelled is not None:
                self._raise_if_task_cancelled()
            credit.wait(min(remaining, 1.0))
            continue
        credit.release()
        try:
            self._raise_if_cancelled()
            self._read_for_credit(remaining)
        finally:
            credit.acquire()


def _read_for_credit(self: Host, remaining: float) -> None:
    """One read of the owner's frames for a dispatch that waits for credit."""
    self.transport.flush()  # what it holds goes out: the owner gives back what it gets
    reader = self.reader
    if not reader.lock.acquire(timeout=WATCHDOG_INTERVAL):
        return  # the watchdog reads meanwhile
    try:
        frames = reader.read_available(False)
        if not frames and self.transport.wait_readable(min(remaining, WATCHDOG_INTERVAL)):
            frames = reader.read_available(True)
    except ProtocolError as exc:
        self._protocol_error(str(exc))  # here: user code up the stack could swallow it
    finally:
        reader.lock.release()
    queue = deque(frames)
    try:
        while queue:
            self._on_waiting(queue.popleft())
    except ProtocolError as exc:
        self._protocol_error(str(exc))
    finally:
        reader.pending.extend(queue)  # the rest of them, if one raised


def _on_credit(self: Host, frame: list[Any]) -> None:
    if len(frame) != 4 or not (_is_id(frame[1]) and _is_id(frame[2]) and _is_id(frame[3])):
        raise _bad(frame, 'expected ["credit", slot, frames, bytes], each in 0..2^63-1')
    _, slot, frames, size = frame
    with self._credit:
        c = self._window_of(slot)
        if c is not None:  # else: a slot stopped since
            c[0] = max(0, c[0] - frames)
            c[1] = max(0, c[1] - size)
            self._credit.notify_all()
            if self._credit_futures:
                self._wake_credit_futures()


def _window_of(self: Host, slot: int) -> list[int] | None:
    """The window of ``slot`` (0: the host's own), or None when it has none."""
    if slot == 0:
        return self._window
    record = self._slots.get(slot)
    return None if record is None else record.window


def _forget_window(self: Host, slot: int) -> None:
    """What the slot sends from now on is not counted (the owner drops it uncounted),
    and a wait for its credit ends."""
    with self._credit:
        if slot == 0:
            forgotten, self._window = self._window, None
        else:
            record = self._slots.get(slot)
            forgotten = None if record is None else record.window
            if record is not None:
                record.window = None
        if forgotten is not None:
            self._credit.notify_all()
            if self._credit_futures:
                self._wake_credit_futures()


def _overloaded(slot: int, c: list[int]) -> OverloadedError:
    what = "publishes of its slot" if slot else "casts and messages"
    return OverloadedError(
        f"the owner gave back none of the {c[0]} {what} sent ({c[1]} bytes, "
        f"a window of {c[2]} frames and {c[3]} bytes) within {CREDIT_WAIT:g} s: "
        "the node takes in less than this host sends"
    )
