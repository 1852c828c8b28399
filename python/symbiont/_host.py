"""The host loop: serves one owner over a :class:`~symbiont._transport.Transport`.

This module owns :class:`Host` (its state, the frame loop, errors that end it, and its
output) and :func:`run`, the entry point of a host process. The rest of the host is a
module each, whose functions ``Host`` binds as its methods:

* ``symbiont._handshake``: ``init`` and ``ready`` (PROTOCOL.md §3);
* ``symbiont._calls``: calls, casts and messages both ways (§4, §4.1), and the event loop
  of ``async def`` code;
* ``symbiont._cancel``: cancellation of a call (§4.2) or a delivery past its timeout (§8);
* ``symbiont._watchdog``: the watchdog thread;
* ``symbiont._credit``: flow control (§8.2);
* ``symbiont._deliveries``: agent slots, events, ticks, acks (§8), each running agent's
  state in a ``symbiont._slots.Slot``;
* ``symbiont._process``: the host as an OS process (§1.5).

Threads
-------
* The **main thread** reads frames itself and dispatches them inline: a call runs, its
  reply is packed and written with one ``write``. No per-call handoff (speed matters).
* The **watchdog** wakes every ~10 ms. Once the main thread has stayed in one dispatch for
  a full tick, it takes over reading (under the reader's lock, after ``poll`` says there is
  data, so it never blocks holding it): it handles ``cancel`` (PROTOCOL.md §4.2), routes
  ``reply``/``error`` to waiting callers, exits at end of stream (§1.5) and queues every
  other frame for the main thread, which drains that queue before reading again.
* The **event loop** of ``async def`` code, a thread of its own (``symbiont._aio``).
* The output pumps of ``_logcapture`` turn lines written to fds 1 and 2 into log frames.

Writes from all threads are serialized by the transport.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import mmap
import os
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from . import _blackbox
from . import _calls as calls
from . import _cancel as cancellation
from . import _credit as credit
from . import _deliveries as deliveries
from . import _handshake as handshake
from . import _watchdog as watchdog
from ._agent import Agent
from ._aio import Job, LoopThread
from ._calls import _LoopWaiter, _Waiter
from ._cancel import CANCEL_SIGNAL
from ._errors import CancelledError, FrameTooLarge, ProtocolError, error_map, wire_text
from ._frame_checks import _bad, _is_id
from ._framing import DEFAULT_MAX_FRAME, HEADER, FrameReader
from ._handshake import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._logcapture import OutputLimiter
from ._process import (
    _die_with_parent,
    _exit_after_flush,
    _exit_with_children,
    _lead_a_process_group,
)
from ._slots import Slot
from ._terms import encode_error, packb, thread_packer
from ._transport import FdTransport, Transport

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

__all__ = ["Host", "current_host", "run"]

LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})

_pack_header = HEADER.pack
_current: Host | None = None


def current_host() -> Host:
    """The host this process runs, or ``RuntimeError`` outside a host."""
    host = _current
    if host is None:
        raise RuntimeError("not running inside a symbiont host")
    return host


class Host:
    """One host: the handshake, then calls, casts, messages and agent deliveries.

    Parameters
    ----------
    transport:
        The wire to the owner.
    stderr_fd:
        Where protocol errors are reported (the real stderr, saved before redirection).
    exit:
        Ends the process with a status; ``os._exit`` for a real host.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        stderr_fd: int | None = None,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.transport = transport
        self.reader = FrameReader(transport, on_eof=self._on_eof)
        self.name = "python"
        self.peer_max = DEFAULT_MAX_FRAME
        # The owner's node, as init names it (PROTOCOL.md §3).
        self.node: str | None = None
        # Its agent slots, from their agent_start to their end (PROTOCOL.md §8; _slots).
        self._slots: dict[int, Slot] = {}
        self.message_handler: Callable[[Any], Any] | None = None
        # The output limit that run() puts fds 1 and 2 and logging through; init's
        # output_limit configures it (PROTOCOL.md §3, §7).
        self.output: OutputLimiter | None = None
        self.ready = False
        self._serving = False
        self._stderr_fd = stderr_fd
        self._exit = functools.partial(_exit_after_flush, transport, exit)
        self._ident = threading.get_ident()
        self._use_signal = False
        self._callables: dict[tuple[str, str], Callable[..., Any]] = {}
        # Dispatches in progress on the dispatch thread, innermost last: the id of an
        # owner->host call, or None for anything else (cast, message, delivery).
        self._stack: list[int | None] = []
        self._cancelled: set[int] = set()
        self._cancel_pending: int | None = None
        self._ids = itertools.count(1)
        self._inline_waits: set[int] = set()
        self._results: dict[int, tuple[bool, Any]] = {}
        self._waiters: dict[int, _Waiter | _LoopWaiter] = {}
        # The event loop of async def agents (symbiont._aio), made on first use; the
        # awaitables it runs for the dispatch thread by the token of their delivery (or
        # the id of their call); what wakes the dispatch thread while it waits for one (it
        # is done, or it awaits a call: ids in _loop_calls); why the one running was
        # cancelled, if it was (the loop thread's blocking waits raise it then); and the
        # futures of coroutines that wait for credit (§8.2), woken by the next credit.
        self._aio: LoopThread | None = None
        self._loop_ident = 0
        self._jobs: dict[int, Job] = {}
        self._wake = threading.Event()
        self._loop_calls: set[int] = set()
        self._loop_cancelled: tuple[Job, str] | None = None
        self._credit_futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self._before_ready: list[bytes] = []
        self._owner_reports = False
        self._log_fields = False
        self._reports_told = False
        # Slots with a handled delivery not yet acked (Slot.unacked), by first handled.
        self._unacked: dict[int, Slot] = {}
        self._delivering = False
        self._deferred: deque[tuple[int, int, str, Any]] = deque()
        # The running delivery's deadline (its agent's handler_timeout_ms, §8): (its stack
        # token, monotonic deadline, the timeout in ms), read by the watchdog.
        self._delivery_deadline: tuple[int, float, int] | None = None
        self._delivery_tokens = itertools.count(-1, -1)
        self._unacked_since = 0.0
        # When the last delivery started (monotonic): how old the oldest unsent ack is.
        self._started_at = 0.0
        # Busy time (PROTOCOL.md §11.2), when init asked for it: each slot adds up its
        # deliveries' (Slot.busy); (slot, monotonic start) of the one running. The
        # dispatch thread writes them; a pong (perhaps the watchdog's) reads them.
        self._busy = False
        self._running: tuple[Slot, float] | None = None
        # Flow control (PROTOCOL.md §8.2): the window of the host's own casts and messages
        # (slot 0; each agent's is its Slot.window). [frames, bytes] sent and not given
        # back yet, then [frames, bytes] of the window as the owner gave it; None: none.
        self._window: list[int] | None = None
        self._credit_lock = threading.Lock()
        self._credit = threading.Condition(self._credit_lock)
        # This thread's msgpack packer (the dispatch thread's: checkpoints are taken here).
        self._pack = thread_packer()
        # The flight recorder init asked for (PROTOCOL.md §11.1), or None; and the entry a
        # delivery leaves in it when it is done: idle, or the agent start (or stop) that
        # the delivery ran inside while that waited on the owner.
        self._box: mmap.mmap | None = None
        self._box_path: str | None = None
        self._box_after = _blackbox.IDLE_ENTRY
        self._handlers: dict[str, Callable[[list[Any]], None]] = {
            "call": self._on_call,
            "reply": self._on_reply,
            "error": self._on_reply,
            "cancel": self._on_cancel,
            "cast": self._on_cast,
            "msg": self._on_msg,
            "event": self._on_event,
            "tick": self._on_tick,
            "agent_start": self._on_agent_start,
            "agent_stop": self._on_agent_stop,
            "ping": self._on_ping,
            "credit": self._on_credit,
        }
        kind = type(transport)
        self._critical_code = {
            code
            for code in (
                getattr(kind.write, "__code__", None),
                getattr(kind.flush, "__code__", None),
                getattr(kind.hold_writes, "__code__", None),
                Host._write_frame.__code__,
                # A cancellation waits for a publish's frame and its count to be one.
                Host._publish.__code__,
                Host._report_health.__code__,
                Host.send_counted.__code__,
                Host._await_credit.__code__,
                Host._read_for_credit.__code__,
                FrameReader.next_frame.__code__,
                FrameReader.read_available.__code__,
                FrameReader._fill.__code__,
                FrameReader._parse_one.__code__,
                # An import is never cut in half (a half-initialised package breaks its
                # later imports): the cancel is raised once the function is found.
                Host._resolve.__code__,
                *calls.CRITICAL,
                # The flight recorder is never left half restored (§11.1).
                Host._box_enter.__code__,
                Host._box_leave.__code__,
            )
            if code is not None
        }

    @property
    def agents(self) -> dict[int, Agent]:
        """The agents it runs (started, not stopping), by slot (PROTOCOL.md §8)."""
        return {n: slot.agent for n, slot in self._slots.items() if slot.running}

    # -- lifecycle ------------------------------------------------------------------------

    def serve(self) -> NoReturn:
        """Run the handshake and serve frames until end of stream; never returns."""
        global _current
        _current = self
        self._serving = True
        self._ident = threading.get_ident()
        if threading.current_thread() is threading.main_thread() and hasattr(
            signal, "pthread_kill"
        ):
            signal.signal(CANCEL_SIGNAL, self._on_cancel_signal)
            self._use_signal = True
        threading.Thread(target=self._watchdog, name="symbiont-watchdog", daemon=True).start()
        try:
            self._serve_frames()
        finally:
            # Only reached when exit() returns or raises (a host run in-process by tests).
            self._serving = False
            if _current is self:
                _current = None
        raise AssertionError("unreachable")  # pragma: no cover

    def _serve_frames(self) -> None:
        """The handshake, then frames until the input ends; every way out calls ``exit``.

        The dispatch path without the watchdog thread: the fuzz tests run it directly.
        """
        try:
            self._handshake()
            self._loop()
        except ProtocolError as exc:
            self._protocol_error(str(exc))
        except SystemExit as exc:
            code = exc.code
            self._exit(code if isinstance(code, int) else (0 if code is None else 1))
        except BrokenPipeError:
            self._on_eof()  # the owner closed our output: as good as EOF on our input
        except BaseException as exc:  # noqa: BLE001 - a bug in the host itself: say what, then go
            text = "".join(traceback.format_exception(exc))
            with contextlib.suppress(Exception):
                self.log("error", f"symbiont host {self.name!r} crashed: {text}")
            self._write_stderr(f"symbiont host {self.name!r} crashed: {text}")
            self._exit(1)

    def _loop(self) -> None:
        next_frame = self.reader.next_frame
        handlers = self._handlers
        while True:
            try:
                while True:
                    frame: list[Any] = next_frame()  # type: ignore[assignment]  # no timeout: never None
                    handler = handlers.get(frame[0])
                    if handler is None:
                        raise ProtocolError(f"unknown frame kind {frame[0]!r}")
                    handler(frame)
            except CancelledError:
                pass  # a cancellation that landed after its call had ended

    def _on_ping(self, frame: list[Any]) -> None:
        # PROTOCOL.md §11: answered at once, by the watchdog while a dispatch runs long.
        if len(frame) != 2 or not _is_id(frame[1]):
            raise _bad(frame, "ping takes one int n in 0..2^63-1")
        if not self._busy:
            self.send_async(["pong", frame[1]], "pong")
        else:
            self.send_async(["pong", frame[1], self._busy_us()], "pong")

    def _on_eof(self) -> None:
        # PROTOCOL.md §1.5: the owner is gone or wants us gone; don't wait for user code.
        # An owner gone before it took the flight recorder leaves its name to us (§11.1).
        if self._box_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._box_path)
        self._exit(0)

    def _protocol_error(self, reason: str) -> NoReturn:
        text = f"symbiont host {self.name!r}: protocol error: {reason}"
        with contextlib.suppress(Exception):  # the owner may be gone; stderr still gets it
            self.log("error", text)
        self._write_stderr(text)
        self._exit(3)
        raise SystemExit(3)  # only reached when exit() returns (tests)

    def _fatal(self, exc: BaseException) -> NoReturn:
        error = error_map(exc)
        try:
            self._write_frame(self._pack_error(["fatal"], error))
        except BrokenPipeError:
            pass  # the owner closed the channel: it no longer wants to hear from this host
        except Exception:  # noqa: BLE001 - the frame could not be sent: stderr is the last resort
            self._write_stderr(f"symbiont host {self.name!r}: fatal: {error['traceback']}")
        self._exit(2)
        raise SystemExit(2)

    def _write_stderr(self, text: str) -> None:
        if self._stderr_fd is None:
            return
        try:
            os.write(self._stderr_fd, text.rstrip("\n").encode("utf-8", "replace") + b"\n")
        except OSError:
            pass

    # -- output ---------------------------------------------------------------------------

    def _write_frame(self, data: bytes) -> None:
        self.transport.write(_pack_header(len(data)) + data)
        if self._cancel_pending is not None:
            self._raise_deferred_cancel()

    def _encode(self, frame: list[Any], what: str) -> bytes:
        """``frame`` packed; its last element is the user's value (args, a message), which
        a ``TypeError`` names the place in when it cannot be encoded (PROTOCOL.md §2)."""
        try:
            data = packb(frame)
        except (TypeError, ValueError, OverflowError) as exc:
            root = "args" if frame[0] in ("call", "cast") else "value"
            raise encode_error(frame[-1], root, exc) from None
        if len(data) > self.peer_max:
            raise FrameTooLarge(what, len(data), self.peer_max)
        return data

    def send_async(self, frame: list[Any], what: str) -> None:
        """Send a frame that expects no answer; held back until ``ready`` (§3)."""
        data = self._encode(frame, what)
        if self.ready:
            self._write_frame(data)
        else:
            self._before_ready.append(data)

    def log(self, level: str, message: str, fields: dict[str, Any] | None = None) -> None:
        """Send ``["log", level, message]`` (PROTOCOL.md §7), shortened to fit a frame, or
        ``["log", level, message, fields]`` with a record's fields (bounded by
        ``_logcapture.record_fields``)."""
        room = self.peer_max // 4 - 64
        if len(message) > room:
            message = message[: max(room, 0)] + " [truncated]"
        frame: list[Any] = ["log", level, message]
        if fields is not None and self._log_fields:
            frame.append(fields)
        try:
            data = _frame_bytes(frame)
        except UnicodeEncodeError:  # lone surrogates: str allows them, UTF-8 does not
            frame[2] = wire_text(message)  # (record_fields escapes them in the fields)
            data = _frame_bytes(frame)
        self.transport.write(data)

    def _pack_error(self, head: list[Any], error: dict[str, str]) -> bytes:
        """``head + [error]`` packed, the error cut down to fit the owner's ``max_frame``."""
        data = packb([*head, error])
        if len(data) > self.peer_max:
            message = error["message"][: self.peer_max // 8]
            error = {**error, "traceback": "", "message": message + " [truncated]"}
            data = packb([*head, error])
        return data

    # -- the rest, a module each: functions of the host, written with ``self: Host`` -----

    # The handshake (PROTOCOL.md §3).
    _handshake = handshake._handshake

    # Owner -> host calls, casts and messages (§4); host -> owner calls (§4.1); the event
    # loop of async def agents (symbiont._aio).
    _resolve = calls._resolve
    _on_call = calls._on_call
    _send_error = calls._send_error
    _send_error_map = calls._send_error_map
    _on_cast = calls._on_cast
    _on_msg = calls._on_msg
    call = calls.call
    acall = calls.acall
    _loop_call = calls._loop_call
    _wait_on_loop = calls._wait_on_loop
    _await = calls._await
    _start_job = calls._start_job
    _serve_one = calls._serve_one
    _call_inline = calls._call_inline
    _send_cancel = calls._send_cancel
    _on_reply = calls._on_reply

    # Cancellation (§4.2) and handler timeouts (§8).
    _on_cancel = cancellation._on_cancel
    _cancel = cancellation._cancel
    _interrupt = cancellation._interrupt
    _check_delivery_deadline = cancellation._check_delivery_deadline
    _cancel_delivery = cancellation._cancel_delivery
    _cancel_job = cancellation._cancel_job
    _raise_if_task_cancelled = cancellation._raise_if_task_cancelled
    _raise_if_cancelled = cancellation._raise_if_cancelled
    _on_cancel_signal = cancellation._on_cancel_signal
    _raise_deferred_cancel = cancellation._raise_deferred_cancel

    # The watchdog: it reads for a dispatch that runs long.
    _watchdog = watchdog._watchdog
    _take_over = watchdog._take_over
    _on_waiting = watchdog._on_waiting

    # Flow control (§8.2).
    _publish = credit._publish
    _publish_async = credit._publish_async
    _report_health = credit._report_health
    send_counted = credit.send_counted
    asend_counted = credit.asend_counted
    _credit_room = credit._credit_room
    _wake_credit_futures = credit._wake_credit_futures
    _await_credit = credit._await_credit
    _read_for_credit = credit._read_for_credit
    _on_credit = credit._on_credit
    _window_of = credit._window_of
    _forget_window = credit._forget_window

    # Agent slots (§8): start, stop, deliveries, acks; busy time (§11.2).
    _load_agent = deliveries._load_agent
    _end_slot = deliveries._end_slot
    _on_agent_start = deliveries._on_agent_start
    _on_agent_stop = deliveries._on_agent_stop
    _stop_agent = deliveries._stop_agent
    _on_event = deliveries._on_event
    _on_tick = deliveries._on_tick
    _deliver = deliveries._deliver
    _run_delivery = deliveries._run_delivery
    _box_enter = deliveries._box_enter
    _box_leave = deliveries._box_leave
    _nack = deliveries._nack
    _flush_acks = deliveries._flush_acks
    _flush_ack = deliveries._flush_ack
    _busy_us = deliveries._busy_us


def _frame_bytes(frame: list[Any]) -> bytes:
    data = packb(frame)
    return _pack_header(len(data)) + data


def run() -> NoReturn:
    """Entry point of ``python -m symbiont.host``: serve the owner on fds 3 and 4."""
    from ._logcapture import capture_output, install_log_handler

    _die_with_parent()
    try:
        for fd in (3, 4):
            os.set_inheritable(fd, False)  # user subprocesses must not hold our pipes
    except OSError:
        sys.stderr.write("symbiont.host must be started by its owner with fds 3 and 4 open\n")
        raise SystemExit(2) from None
    _lead_a_process_group()
    stderr_fd = os.dup(2)
    host = Host(FdTransport(3, 4), stderr_fd=stderr_fd, exit=_exit_with_children)
    host.output = OutputLimiter(host.log)
    capture_output(host.output)
    install_log_handler(host.output.send)
    _preload(os.environ.get("SYMBIONT_PRELOAD", ""))
    host.serve()


def _preload(names: str) -> None:
    """Import, before the handshake, the modules a warm standby host's agents will likely
    need (comma-separated; set by ``Symbiont.Host.Standby``), so that starting them after a
    crash takes no import time. A module that fails to import here is left for its
    ``agent_start`` to import again and report."""
    for name in filter(None, names.split(",")):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported by agent_start, not here
            sys.modules.pop(name, None)
