"""Agents in a host (PROTOCOL.md §8): ``agent_start`` and ``agent_stop``, each running
agent's :class:`~symbiont._slots.Slot` from its start to its end, events and ticks run in
seq order, acks and nacks, the flight recorder's entries (§11.1) and busy time (§11.2).

Functions of :class:`~symbiont._host.Host`, which binds them as its methods.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from . import _blackbox
from ._agent import agent_class
from ._aio import cancellations
from ._blackbox import DELIVERY, ENTRY, SIZE, START, STOP
from ._errors import CancelledError, ProtocolError, error_map
from ._frame_checks import MAX_INT, MAX_U32, _bad, _is_id, _is_seq, _window
from ._slots import Phase, Slot
from ._terms import packb

if TYPE_CHECKING:  # pragma: no cover
    from ._host import Host

__all__ = [
    "ACK_INTERVAL",
    "_box_enter",
    "_box_leave",
    "_busy_us",
    "_deliver",
    "_end_slot",
    "_flush_ack",
    "_flush_acks",
    "_load_agent",
    "_nack",
    "_on_agent_start",
    "_on_agent_stop",
    "_on_event",
    "_on_tick",
    "_run_delivery",
    "_stop_agent",
]

#: A delivery handled this long ago (seconds) is acked even while more wait in the buffer,
#: so that the owner hears of progress while a slow agent works through a batch (its
#: handler_timeout watch, see Symbiont.Agent).
ACK_INTERVAL = 0.2

_logger = logging.getLogger("symbiont.host")


def _busy_us(self: Host) -> dict[int, int]:
    """PROTOCOL.md §11.2: the microseconds each running agent's deliveries took since
    the last call, by slot, the running one's so far included; slots that took none
    are left out.

    Safe from any thread (pings are answered by the dispatch thread or, while a
    dispatch runs long, the watchdog; never both at once): the dispatch thread clears
    ``_running`` before it adds the delivery to its slot's ``busy``, and this reads
    ``busy`` first, so a delivery that ends meanwhile is counted once (perhaps in the
    next pong only).
    """
    busy = [(slot, slot.busy) for slot in list(self._slots.values()) if slot.running]
    running = self._running
    out: dict[int, int] = {}
    for slot, seconds in busy:
        if running is not None and running[0] is slot:
            seconds += max(0.0, time.monotonic() - running[1])
        total, told = int(seconds * 1_000_000), slot.busy_told
        if total > told:
            out[slot.number] = min(total - told, MAX_INT)
            slot.busy_told = total
    return out


def _load_agent(self: Host, slot: int, spec: dict[Any, Any]) -> Slot:
    name, module, class_name = spec.get("name"), spec.get("module"), spec.get("class")
    config, state = spec.get("config"), spec.get("state")
    for key, value in (("name", name), ("module", module), ("class", class_name)):
        if type(value) is not str or not value:
            raise TypeError(f"agent {key} must be a non-empty str, got {value!r}")
    if config is not None and type(config) is not dict:
        raise TypeError(f"agent config must be a map or nil, got {config!r}")
    timeout = spec.get("handler_timeout_ms")
    if timeout is not None and (type(timeout) is not int or not 0 < timeout <= MAX_U32):
        raise TypeError(
            f"agent handler_timeout_ms must be nil or an int in 1..2^32-1, got {timeout!r}"
        )
    seq = spec.get("seq", 0)
    if not _is_id(seq):
        raise TypeError(f"agent seq must be an int in 0..2^63-1, got {seq!r}")
    max_topics = spec.get("max_topics")
    if max_topics is not None and (type(max_topics) is not int or max_topics <= 0):
        raise TypeError(f"agent max_topics must be a positive int or nil, got {max_topics!r}")
    window = spec.get("window")
    if window is not None and _window(window) is None:
        raise TypeError(
            'agent window must be nil or {"frames": int, "bytes": int}, each in '
            f"1..2^63-1, got {window!r}"
        )
    assert isinstance(name, str) and isinstance(module, str) and isinstance(class_name, str)
    agent = agent_class(module, class_name)(name, config=config, state=state)
    agent._max_topics = max_topics
    # Its boolean (whether the publish went out) is the host's; the agent's is None.
    agent._publisher = functools.partial(self._publish, slot)  # type: ignore[assignment]
    agent._apublisher = functools.partial(self._publish_async, slot)
    agent._reporter = functools.partial(self._report_health, slot)
    record = Slot(slot, agent, pack=self._pack, max_frame=self.peer_max)
    record.publish_ids = [seq, -1]
    if window is not None:
        record.window = [0, 0, *_window(window)]  # type: ignore[misc]
    if type(timeout) is int:
        record.timeout_ms = timeout
    # In the table from here, not yet running: its on_start may publish.
    self._slots[slot] = record
    result: Any = agent.on_start()  # type: ignore[func-returns-value]  # async: a coroutine
    if result is not None:
        self._await(agent._symbiont_awaitable("on_start", result))
    return record


def _end_slot(self: Host, record: Slot) -> None:
    """``record``'s agent is stopped, or did not start: the slot is gone."""
    self._forget_window(record.number)
    record.end()
    if self._slots.get(record.number) is record:
        del self._slots[record.number]


def _on_agent_start(self: Host, frame: list[Any]) -> None:
    if len(frame) != 3 or not _is_seq(frame[1]) or type(frame[2]) is not dict:
        raise _bad(frame, 'expected ["agent_start", slot, spec], slot in 1..2^63-1')
    _, slot, spec = frame
    running = self._slots.get(slot)
    if running is not None and running.running:
        raise _bad(frame, f"slot {slot} already runs agent {running.agent.name!r}")
    recorded = self._box_enter(START, slot)
    try:
        record = self._load_agent(slot, spec)
        agent = record.agent
        topics = list(agent.subscriptions())
        if not all(type(topic) is str and topic for topic in topics):
            raise TypeError(f"agent {agent.name!r}: topics must be non-empty str: {topics!r}")
        agent._check_subscriptions(topics)
        record.checkpoint = record.take_checkpoint()
    except BaseException as exc:
        started = self._slots.get(slot)
        if started is not None and started.phase is Phase.STARTING:
            self._end_slot(started)  # what its agent still publishes is dropped
        if not isinstance(exc, Exception):
            raise
        _logger.debug("agent in slot %d could not start", slot, exc_info=True)
        self._write_frame(self._pack_error(["agent_failed", slot], error_map(exc)))
        return
    finally:
        self._box_leave(recorded)
    record.phase = Phase.RUNNING
    self._slots[slot] = record
    info = {
        "name": agent.name,
        "topics": topics,
        "timers": [
            {"name": timer, "every_ms": every_ms}
            # The instance's: a Wasm component's are its own (WasmAgent.on_start).
            for timer, every_ms in agent._symbiont_timers.items()
        ],
    }
    self._write_frame(packb(["agent_ready", slot, info]))


def _on_agent_stop(self: Host, frame: list[Any]) -> None:
    if len(frame) != 2 or not _is_seq(frame[1]):
        raise _bad(frame, 'expected ["agent_stop", slot], slot in 1..2^63-1')
    slot = frame[1]
    record = self._slots.get(slot)
    if record is None or not record.running:
        _logger.debug("agent_stop for free slot %d", slot)
        self._forget_window(slot)
    elif self._delivering:
        # A handler waits on a call: stop after the deliveries that came first (§8).
        self._deferred.append((slot, 0, "stop", frame))
    else:
        self._stop_agent(slot)


def _stop_agent(self: Host, slot: int) -> None:
    self._flush_ack(slot, force=True)
    record = self._slots.get(slot)
    if record is None or not record.running:
        return  # stopped twice while waiting behind a handler (see _on_agent_stop)
    record.phase = Phase.STOPPING  # no more deliveries, nor busy time in pongs
    agent = record.agent
    self._stack.append(None)
    self._forget_window(slot)  # on_stop's publishes are not counted (§8.2)
    recorded = self._box_enter(STOP, slot)
    try:
        result: Any = agent.on_stop()  # type: ignore[func-returns-value]  # async: a coroutine
        if result is not None:
            self._await(agent._symbiont_awaitable("on_stop", result))
    except Exception:
        _logger.exception("agent %r: on_stop failed", agent.name)
    finally:
        self._box_leave(recorded)
        self._stack.pop()
        self._end_slot(record)


def _on_event(self: Host, frame: list[Any]) -> None:
    # The hottest frame: _is_seq inline (a Python call less for each of two fields).
    if (
        len(frame) != 5
        or type(slot := frame[1]) is not int
        or not 0 < slot <= MAX_INT
        or type(seq := frame[2]) is not int
        or not 0 < seq <= MAX_INT
        or type(frame[3]) is not str
        or type(frame[4]) is not bytes
    ):
        raise _bad(
            frame,
            'expected ["event", slot, seq, topic, payload_bin], slot and seq in 1..2^63-1',
        )
    self._deliver(slot, seq, "event", frame)


def _on_tick(self: Host, frame: list[Any]) -> None:
    if (
        len(frame) != 4
        or not _is_seq(frame[1])
        or not _is_seq(frame[2])
        or type(frame[3]) is not str
    ):
        raise _bad(frame, 'expected ["tick", slot, seq, timer_name], slot and seq in 1..2^63-1')
    self._deliver(frame[1], frame[2], "tick", frame)


def _deliver(self: Host, slot: int, seq: int, kind: str, frame: list[Any]) -> None:
    record = self._slots.get(slot)
    if record is None or not record.running:
        raise ProtocolError(f"{kind} frame for slot {slot}, which runs no agent")
    if self._delivering:
        # A delivery arrived while a handler waits on a call: keep seq order (§8).
        self._deferred.append((slot, seq, kind, frame))
        return
    self._delivering = True
    try:
        self._run_delivery(slot, seq, kind, frame)
        while self._deferred:
            self._run_delivery(*self._deferred.popleft())
    finally:
        self._delivering = False
    if self._unacked and self._started_at - self._unacked_since >= ACK_INTERVAL:
        self._flush_acks()  # more may be buffered: the owner still hears of progress


def _run_delivery(self: Host, slot: int, seq: int, kind: str, frame: list[Any]) -> None:
    if kind == "stop":
        self._stop_agent(slot)
        return
    record = self._slots.get(slot)
    if record is None or not record.running:
        return  # stopped while this delivery waited behind a call (see _deliver)
    agent = record.agent
    # A token of its own on the stack, so that the watchdog can cancel this delivery
    # (and only this one) once it runs past the agent's handler_timeout.
    token = next(self._delivery_tokens)
    timeout_ms = record.timeout_ms
    self._stack.append(token)
    # One clock read a delivery: its deadline, and the age of the acks _deliver checks.
    now = self._started_at = time.monotonic()
    if timeout_ms is not None:
        self._delivery_deadline = (token, now + timeout_ms / 1000, timeout_ms)
    # Publishes made now have this seq (§8.1), those after it too, with n from -1.
    # A new list (one store): a thread of the agent's that publishes meanwhile sees the
    # old pair or the new one, never half of each.
    ids = record.publish_ids = [seq, 0]
    # The flight recorder (§11.1): a crash from here on is this delivery's.
    box = self._box
    if box is not None:
        _blackbox.record(box, ENTRY, slot, seq, DELIVERY)
    busy = self._busy
    if busy:
        self._running = (record, now)
    try:
        if kind == "event":
            result = agent.handle_event(frame[3], frame[4])
            if result is not None:  # an async def's coroutine, awaited on the loop
                self._await(agent._symbiont_awaitable("handle_event", result), token)
        else:
            name = frame[3]
            if name not in agent._symbiont_timers:
                raise LookupError(f"agent {agent.name!r} has no timer {name!r}")
            result = getattr(agent, name)()
            if result is not None:
                self._await(agent._symbiont_awaitable(name, result), token)
    except cancellations(Exception) as exc:  # a nack
        self._delivery_deadline = None
        if isinstance(exc, cancellations()) and (token in self._cancelled):
            what = f"event on {frame[3]!r}" if kind == "event" else f"timer {frame[3]!r}"
            text = (
                f"agent {agent.name!r}: the handler of {what} (seq {seq}) ran past its "
                f"handler_timeout of {timeout_ms} ms and was cancelled"
            )
            exc = CancelledError(text).with_traceback(exc.__traceback__)
        record.roll_back()
        self._nack(record, seq, error_map(exc, skip_frames=1))
        return
    finally:
        ids[0:2] = seq, -1
        self._delivery_deadline = None
        self._stack.pop()
        if busy:  # _running first: see _busy_us()
            self._running = None
            record.busy += time.monotonic() - now
        if box is not None:  # after the pop: no late cancellation lands in between
            box[ENTRY:SIZE] = self._box_after
        if self._cancelled:
            self._cancelled.discard(token)
        if self._cancel_pending == token:
            self._cancel_pending = None
    try:
        record.commit()
    except Exception as exc:  # noqa: BLE001 - unencodable state: the delivery failed
        error = error_map(exc)
        error["message"] = f"the agent state cannot be checkpointed: {error['message']}"
        self._nack(record, seq, error)
        return
    if not self._unacked:
        self._unacked_since = now
    record.unacked = seq
    self._unacked[slot] = record


def _box_enter(self: Host, kind: int, slot: int) -> tuple[bytes, bytes] | None:
    """Record that ``slot``'s agent starts or stops (§11.1); returns what to put back."""
    box = self._box
    if box is None:
        return None
    recorded = (box[ENTRY:SIZE], self._box_after)
    self._box_after = _blackbox.entry(kind, slot)
    box[ENTRY:SIZE] = self._box_after
    return recorded


def _box_leave(self: Host, recorded: tuple[bytes, bytes] | None) -> None:
    """Back to what ran before the start or stop (idle, or a delivery it ran inside)."""
    box = self._box
    if recorded is not None and box is not None:
        box[ENTRY:SIZE], self._box_after = recorded


def _nack(self: Host, record: Slot, seq: int, error: dict[str, str]) -> None:
    """Delivery ``seq`` failed (its slot rolled back: :meth:`Slot.roll_back`): the
    deliveries before it are acked, and it is nacked (§8)."""
    self._flush_ack(record.number, force=True)
    self._write_frame(self._pack_error(["nack", record.number, seq], error))


def _flush_acks(self: Host) -> None:
    """Send the cumulative ack of every slot with deliveries handled but not acked."""
    if not self._unacked:
        return
    for slot in list(self._unacked):
        self._flush_ack(slot)


def _flush_ack(self: Host, slot: int, *, force: bool = False) -> None:
    """Send the cumulative ack for the deliveries of ``slot`` handled so far, if any (§8),
    with the checkpoint taken after the last of them.

    Not while a handler waits on a call of its own (unless ``force``): deliveries
    handled meanwhile are acked together once it is done.
    """
    record = self._unacked.get(slot)
    if record is None or (self._delivering and not force):
        return
    del self._unacked[slot]
    seq, record.unacked = record.unacked, None
    if not record.running:
        return  # stopped: nobody wants its checkpoint any more
    self._write_frame(packb(["ack", slot, seq, record.checkpoint]))
