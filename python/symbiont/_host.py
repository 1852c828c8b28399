"""The host loop: serves one owner over a :class:`~symbiont._transport.Transport`.

Threads
-------
* The **main thread** reads frames itself and dispatches them inline: a call runs, its
  reply is packed and written with one ``write``. No per-call handoff (speed matters).
* The **watchdog** wakes every ~10 ms. Once the main thread has stayed in one dispatch for
  a full tick, it takes over reading (under the reader's lock, after ``poll`` says there is
  data, so it never blocks holding it): it handles ``cancel`` (PROTOCOL.md §4.2), routes
  ``reply``/``error`` to waiting callers, exits at end of stream (§1.5) and queues every
  other frame for the main thread, which drains that queue before reading again.
* The output pumps of ``_logcapture`` turn lines written to fds 1 and 2 into log frames.

Writes from all threads are serialized by the transport.

Cancelling the running call
---------------------------
The watchdog marks the call cancelled and signals the main thread (``pthread_kill``). The
signal handler runs in the main thread, between bytecodes or when a blocking system call
such as ``time.sleep`` is interrupted, and raises :class:`~symbiont.CancelledError` there,
unless the main thread is inside the host's own I/O code (a half-written frame would break
the stream); then the cancellation is raised right after that write. When the host does
not run on the main thread (no signal handler possible) the watchdog falls back to
``PyThreadState_SetAsyncExc``, which cannot interrupt a blocking system call.

A delivery (event or tick) that runs past its agent's ``handler_timeout_ms`` is cancelled
the same way, by the watchdog, and nacked (PROTOCOL.md §8).

``async def`` agents
--------------------
Their handlers, timers and hooks run on the host's event loop, a thread of its own
(``symbiont._aio``): the dispatch thread waits for each one as for a plain handler, and
serves the owner meanwhile while the coroutine awaits a call of its own (nested calls,
§4.1). Their timeout cancels the task (``asyncio.CancelledError`` at its ``await``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import inspect
import itertools
import logging
import mmap
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, NoReturn, cast

from . import _blackbox
from ._agent import Agent, agent_class
from ._aio import Job, LoopThread, not_runnable
from ._blackbox import DELIVERY, ENTRY, SIZE, START, STOP
from ._errors import (
    CallTimeout,
    CancelledError,
    ErlangError,
    FrameTooLarge,
    OverloadedError,
    ProtocolError,
    error_map,
    qualified_name,
    wire_text,
)
from ._framing import DEFAULT_MAX_FRAME, HEADER, FrameReader
from ._logcapture import OutputLimiter
from ._slots import Phase, Slot
from ._terms import encode_error, packb, thread_packer
from ._transport import FdTransport, Transport

__all__ = ["Host", "current_host", "run"]

PROTOCOL_VERSION = 2
WATCHDOG_INTERVAL = 0.01
#: A delivery handled this long ago (seconds) is acked even while more wait in the buffer,
#: so that the owner hears of progress while a slow agent works through a batch (its
#: handler_timeout watch, see Symbiont.Agent).
ACK_INTERVAL = 0.2
#: How long a publish, cast or message waits for the owner's credit (PROTOCOL.md §8.2)
#: before it raises :class:`~symbiont.OverloadedError`, in seconds.
CREDIT_WAIT = 60.0
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})

_logger = logging.getLogger("symbiont.host")
_pack_header = HEADER.pack
_current: Host | None = None

# A real-time signal nobody else uses; SIGUSR2 where there are none.
_CANCEL_SIGNAL = getattr(signal, "SIGRTMIN", signal.SIGUSR2) + (
    3 if hasattr(signal, "SIGRTMIN") else 0
)


def current_host() -> Host:
    """The host this process runs, or ``RuntimeError`` outside a host."""
    host = _current
    if host is None:
        raise RuntimeError("not running inside a symbiont host")
    return host


#: PROTOCOL.md §9: ids, seqs, slots and counts fit in 63 bits; a frame size or a period in
#: milliseconds in 32.
MAX_INT = (1 << 63) - 1
MAX_U32 = (1 << 32) - 1


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


def _is_seq(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_INT


def _bad(frame: list[Any], rule: str) -> ProtocolError:
    return ProtocolError(f"malformed {frame[0]!r} frame ({rule}): {frame!r:.300}")


class _Waiter:
    """A caller on a thread other than the dispatch thread, waiting for its reply."""

    __slots__ = ("event", "ok", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None

    def set(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value
        self.event.set()


class _LoopWaiter:
    """A caller in a coroutine (:meth:`Host.acall`), waiting for its reply in a future of
    its event loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[tuple[bool, Any]] = loop.create_future()

    def set(self, ok: bool, value: Any) -> None:
        _settle_soon(self.loop, self.future, (ok, value))


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any) -> None:
    """Give ``future`` its result on its loop, from any thread (unless it is done)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, value)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


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
        # The slots with a handled, not yet acked, delivery (Slot.unacked), in the order
        # the first of those was handled.
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
        # back yet, then [frames, bytes] of the window, as the owner gave it; None: no
        # limit.
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
            signal.signal(_CANCEL_SIGNAL, self._on_cancel_signal)
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

    def _busy_us(self) -> dict[int, int]:
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

    # -- handshake (PROTOCOL.md §3) -------------------------------------------------------

    def _handshake(self) -> None:
        frame = self.reader.next_frame()
        assert frame is not None
        if frame[0] != "init":
            raise ProtocolError(f"expected an init frame first, got {frame[0]!r}")
        if len(frame) != 3 or type(frame[1]) is not int or type(frame[2]) is not dict:
            raise _bad(frame, 'expected ["init", version, options]')
        _, version, options = frame
        if version != PROTOCOL_VERSION:
            self._fatal(
                ValueError(
                    f"protocol version mismatch: the owner speaks {version}, "
                    f"this host speaks {PROTOCOL_VERSION}"
                )
            )
        name = options.get("name", self.name)
        self.node: str | None = options.get("node") if type(options.get("node")) is str else None
        max_frame = options.get("max_frame", DEFAULT_MAX_FRAME)
        python_path = options.get("python_path") or []
        if type(name) is not str:
            raise _bad(frame, "name must be a str")
        if type(max_frame) is not int or not 64 <= max_frame <= MAX_U32:
            raise _bad(frame, "max_frame must be an int in 64..2^32-1")
        if type(python_path) is not list or not all(type(p) is str for p in python_path):
            raise _bad(frame, "python_path must be a list of str")
        output_limit = options.get("output_limit")
        if output_limit is not None:
            if type(output_limit) is not dict:
                raise _bad(frame, "output_limit must be a map")
            try:
                (self.output or OutputLimiter(lambda level, text: None)).configure(output_limit)
            except ValueError as exc:
                raise _bad(frame, str(exc)) from None
        if self.output is not None:
            self.output.name = name
        window = options.get("window")
        if window is not None and _window(window) is None:
            raise _bad(frame, 'window must be {"frames": int, "bytes": int}, each in 1..2^63-1')
        box_path = options.get("blackbox")
        if box_path is not None and (type(box_path) is not str or not box_path):
            raise _bad(frame, "blackbox must be a non-empty str (a path)")
        if options.get("agent") is not None:
            self._fatal(
                ValueError(
                    "an agent in init is protocol version 1; since version 2 agents are "
                    "started with agent_start frames"
                )
            )
        self.name = name
        self.peer_max = max_frame
        self.reader.limit = max_frame
        # Whether the owner takes health frames (§8.3); an owner that does not would take
        # one for a protocol error, so agents' reports are dropped then.
        self._owner_reports = options.get("health") is True
        # Whether it takes log frames with a record's fields (§7); an older owner would
        # take their fourth element for a protocol error, so they go without then.
        self._log_fields = options.get("log_fields") is True
        # Whether the owner wants each slot's busy time with its pongs (§11.2).
        if options.get("busy") is True:
            self._busy = True
        if window is not None:
            self._window = [0, 0, *_window(window)]  # type: ignore[misc]
        sys.path[0:0] = [p for p in python_path if p not in sys.path]
        info: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "runtime": f"{platform.python_implementation()} {platform.python_version()}",
            "max_frame": max_frame,
            "heartbeat": True,
            "credit": True,
        }
        if box_path is not None:
            try:
                self._box = _blackbox.create(box_path)
                self._box_path = box_path
                info["blackbox"] = True
            except OSError as exc:  # the owner charges crashes without it (§11.1)
                _logger.warning("no flight recorder at %s: %s", box_path, exc)
        self.reader.on_idle = self._flush_acks
        self._write_frame(packb(["ready", PROTOCOL_VERSION, info]))
        self.ready = True
        queued, self._before_ready = self._before_ready, []
        for data in queued:
            self._write_frame(data)

    def _load_agent(self, slot: int, spec: dict[Any, Any]) -> Slot:
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

    def _end_slot(self, record: Slot) -> None:
        """``record``'s agent is stopped, or did not start: the slot is gone."""
        self._forget_window(record.number)
        record.end()
        if self._slots.get(record.number) is record:
            del self._slots[record.number]

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

    def _publish(self, slot: int, topic: str, payload_bin: bytes, wait: bool = True) -> bool:
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

    async def _publish_async(self, slot: int, topic: str, payload_bin: bytes) -> None:
        """:meth:`_publish` for a coroutine (``Agent.apublish``): it waits for room in the
        window without blocking its event loop."""
        deadline = None
        while not self._publish(slot, topic, payload_bin, False):
            deadline = deadline or time.monotonic() + CREDIT_WAIT
            await self._credit_room(slot, deadline)

    def _report_health(self, slot: int, kind: str, reason: str, metrics: dict[str, Any]) -> None:
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

    def send_counted(self, frame: list[Any], what: str, wait: bool = True) -> bool:
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

    async def asend_counted(self, frame: list[Any], what: str) -> None:
        """:meth:`send_counted` for a coroutine: it waits for room in the window without
        blocking its event loop."""
        deadline = None
        while not self.send_counted(frame, what, False):
            deadline = deadline or time.monotonic() + CREDIT_WAIT
            await self._credit_room(0, deadline)

    async def _credit_room(self, slot: int, deadline: float) -> None:
        """Wait, in a coroutine, until the window of ``slot`` may have room (the next
        ``credit``, or its agent stopped); :class:`~symbiont.OverloadedError` past
        ``deadline`` (monotonic)."""
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

    def _wake_credit_futures(self) -> None:
        """Wake the coroutines that wait for credit (the caller holds ``_credit_lock``)."""
        futures, self._credit_futures = self._credit_futures, []
        for loop, future in futures:
            _settle_soon(loop, future, None)

    # -- flow control (PROTOCOL.md §8.2) ------------------------------------------------

    def _await_credit(self, slot: int) -> bool:
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

    def _raise_if_cancelled(self) -> None:
        """The dispatch thread's running call or delivery was cancelled: raise it here."""
        stack = self._stack
        if stack and stack[-1] in self._cancelled:
            self._cancel_pending = None
            raise CancelledError(_cancelled_text(stack[-1]))
        if self._cancel_pending is not None:
            self._raise_deferred_cancel()

    def _read_for_credit(self, remaining: float) -> None:
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

    def _on_waiting(self, frame: list[Any]) -> None:
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

    def _on_credit(self, frame: list[Any]) -> None:
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

    def _window_of(self, slot: int) -> list[int] | None:
        """The window of ``slot`` (0: the host's own), or None when it has none."""
        if slot == 0:
            return self._window
        record = self._slots.get(slot)
        return None if record is None else record.window

    def _forget_window(self, slot: int) -> None:
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

    # -- owner -> host calls (PROTOCOL.md §4) ---------------------------------------------

    def _resolve(self, module: str, function: str) -> Callable[..., Any]:
        target: Any = importlib.import_module(module)
        for part in function.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise TypeError(f"{module}.{function} is not callable")
        self._callables[(module, function)] = target
        return cast("Callable[..., Any]", target)

    def _on_call(self, frame: list[Any]) -> None:
        if len(frame) != 5:
            raise _bad(frame, "expected 5 elements")
        _, call_id, module, function, args = frame
        if (
            not _is_id(call_id)
            or type(module) is not str
            or type(function) is not str
            or type(args) is not list
        ):
            raise _bad(frame, 'expected ["call", id, module, function, args], id in 0..2^63-1')
        stack = self._stack
        stack.append(call_id)
        try:
            try:
                fn = self._callables.get((module, function)) or self._resolve(module, function)
                result = fn(*args)
                if result is not None and hasattr(type(result), "__await__"):
                    # An async def function: awaited on the loop, cancelled like a task.
                    result = self._await(_runnable(fn, result, f"{module}.{function}"), call_id)
            finally:
                stack.pop()
        except (CancelledError, asyncio.CancelledError) as exc:
            if call_id in self._cancelled:
                self._cancelled.discard(call_id)
                if self._cancel_pending == call_id:
                    self._cancel_pending = None
                return  # cancelled: no reply (§4.2)
            self._send_error(call_id, exc)
            return
        except Exception as exc:  # noqa: BLE001 - user errors become error replies (§5)
            self._send_error(call_id, exc)
            return
        if self._cancelled:
            self._cancelled.discard(call_id)
        try:
            data = packb(["reply", call_id, result])
        except Exception as exc:  # noqa: BLE001 - unencodable result
            error = encode_error(result, "result", exc)
            self._send_error_map(
                call_id,
                {
                    "type": qualified_name(type(error)),
                    "message": f"the result of {module}.{function} cannot be encoded: {error}",
                    "traceback": "",
                },
            )
            return
        if len(data) > self.peer_max:
            self._send_error(
                call_id,
                FrameTooLarge(f"the reply of {module}.{function}", len(data), self.peer_max),
            )
            return
        self._write_frame(data)

    def _send_error(self, call_id: int, exc: BaseException) -> None:
        self._send_error_map(call_id, error_map(exc, skip_frames=1))

    def _send_error_map(self, call_id: int, error: dict[str, str]) -> None:
        self._write_frame(self._pack_error(["error", call_id], error))

    def _pack_error(self, head: list[Any], error: dict[str, str]) -> bytes:
        """``head + [error]`` packed, the error cut down to fit the owner's ``max_frame``."""
        data = packb([*head, error])
        if len(data) > self.peer_max:
            message = error["message"][: self.peer_max // 8]
            error = {**error, "traceback": "", "message": message + " [truncated]"}
            data = packb([*head, error])
        return data

    def _on_cast(self, frame: list[Any]) -> None:
        if len(frame) != 4:
            raise _bad(frame, "expected 4 elements")
        _, module, function, args = frame
        if type(module) is not str or type(function) is not str or type(args) is not list:
            raise _bad(frame, 'expected ["cast", module, function, args]')
        self._stack.append(None)
        try:
            fn = self._callables.get((module, function)) or self._resolve(module, function)
            result = fn(*args)
            if result is not None and hasattr(type(result), "__await__"):
                self._await(_runnable(fn, result, f"{module}.{function}"))
        except Exception:
            _logger.exception("cast %s.%s failed", module, function)
        finally:
            self._stack.pop()

    def _on_msg(self, frame: list[Any]) -> None:
        if len(frame) != 3:
            raise _bad(frame, "expected 3 elements")
        _, dest, value = frame
        agent: Agent | None = None
        if dest is None:
            target = self.message_handler
            if target is None:
                _logger.warning("message dropped, no handler is set: %r", value)
                return
        elif isinstance(dest, str):
            agent = next(
                (s.agent for s in self._slots.values() if s.running and s.agent.name == dest),
                None,
            )
            if agent is None:
                _logger.warning("message for unknown agent %r dropped", dest)
                return
            target = agent.on_message
        else:
            raise _bad(frame, "destination must be nil or an agent name")
        self._stack.append(None)
        try:
            result = target(value)
            if result is not None:
                if agent is not None:
                    self._await(agent._symbiont_awaitable("on_message", result))
                elif inspect.iscoroutinefunction(target):
                    self._await(result)
                elif inspect.isawaitable(result):
                    raise not_runnable("the message handler", result)
        except Exception:
            _logger.exception("message handler failed on %r", value)
        finally:
            self._stack.pop()

    # -- cancellation (PROTOCOL.md §4.2) --------------------------------------------------

    def _on_cancel(self, frame: list[Any]) -> None:
        if len(frame) != 2 or not _is_id(frame[1]):
            raise _bad(frame, 'expected ["cancel", id], id in 0..2^63-1')
        self._cancel(frame[1])

    def _cancel(self, call_id: int) -> None:
        stack = self._stack
        if call_id in stack:
            self._cancelled.add(call_id)
            job = self._jobs.get(call_id)
            if job is not None:
                self._cancel_job(job, call_id)
            elif stack and stack[-1] == call_id and threading.get_ident() != self._ident:
                self._interrupt(call_id)
            # Otherwise it waits on a call of its own; that wait raises (see _call_inline).
            return
        pending = self.reader.pending
        for queued in list(pending):
            if queued[0] == "call" and len(queued) > 1 and queued[1] == call_id:
                try:
                    pending.remove(queued)
                except ValueError:
                    pass  # the main thread took it meanwhile; it runs, then its cancel is late
                return
        # Unknown id: finished, never seen, or already cancelled. Nothing to do.

    def _interrupt(self, call_id: int) -> None:
        self._cancel_pending = call_id
        if self._use_signal:
            signal.pthread_kill(self._ident, _CANCEL_SIGNAL)
        else:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._ident), ctypes.py_object(CancelledError)
            )

    def _check_delivery_deadline(self) -> None:
        deadline = self._delivery_deadline
        if deadline is not None and time.monotonic() >= deadline[1]:
            self._delivery_deadline = None
            self._cancel_delivery(deadline[0])

    def _cancel_delivery(self, token: int) -> None:
        """The running delivery ``token`` is past its handler_timeout: cancel it (§8).

        A handler waiting on a call of its own sees it when that wait next wakes up (see
        :meth:`_call_inline`); one that swallows it or is stuck in native code is the
        owner's to deal with (it restarts the host).
        """
        stack = self._stack
        if token in stack:
            self._cancelled.add(token)
            job = self._jobs.get(token)
            if job is not None:
                self._cancel_job(job, token)
            elif stack and stack[-1] == token:
                self._interrupt(token)

    def _cancel_job(self, job: Job, token: int) -> None:
        """Cancel the task of an async delivery (``asyncio.CancelledError`` at its
        ``await``). A coroutine that blocks the loop in a wait of the host's own (a full
        window, a plain ``erlang.call``) gets :class:`~symbiont.CancelledError` there."""
        text = _cancelled_text(token)
        self._loop_cancelled = (job, text)
        job.cancel(text)
        with self._credit:
            self._credit.notify_all()

    def _raise_if_task_cancelled(self) -> None:
        """On the event loop's thread, in the task of the async dispatch that was
        cancelled (:meth:`_cancel_job`), blocked in a wait of the host's: raise its
        cancellation there. Other tasks of the loop wait on."""
        cancelled = self._loop_cancelled
        if cancelled is None or threading.get_ident() != self._loop_ident:
            return
        job, text = cancelled
        with contextlib.suppress(RuntimeError):  # no task runs: not the cancelled one
            if job.task is not None and asyncio.current_task() is job.task:
                raise CancelledError(text)

    def _on_cancel_signal(self, signum: int, frame: FrameType | None) -> None:
        target = self._cancel_pending
        if target is None:
            return
        if not self._stack or self._stack[-1] != target:
            self._cancel_pending = None  # that call is over
            return
        while frame is not None:
            if frame.f_code in self._critical_code:
                return  # _write_frame raises it once the frame is out
            frame = frame.f_back
        self._cancel_pending = None
        raise CancelledError(_cancelled_text(target))

    def _raise_deferred_cancel(self) -> None:
        if threading.get_ident() != self._ident:
            return
        target = self._cancel_pending
        self._cancel_pending = None
        if target is not None and self._stack and self._stack[-1] == target:
            raise CancelledError(_cancelled_text(target))

    # -- the watchdog ---------------------------------------------------------------------

    def _watchdog(self) -> None:
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

    def _take_over(self, generation: int) -> None:
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

    # -- host -> owner calls (PROTOCOL.md §4.1) -------------------------------------------

    def call(self, module: str, function: str, args: list[Any], timeout: float | None) -> Any:
        """Call ``module:function(args)`` on the owner; see :func:`symbiont.erlang.call`."""
        if not self.ready:
            raise RuntimeError("symbiont.erlang.call is not available before the host is ready")
        call_id = next(self._ids)
        data = self._encode(["call", call_id, module, function, args], f"call to {module}")
        me = threading.get_ident()
        if me == self._ident:
            ok, value = self._call_inline(call_id, data, timeout, f"{module}.{function}")
        else:
            waiter = _Waiter()
            self._waiters[call_id] = waiter
            on_loop = me == self._loop_ident
            try:
                if on_loop:
                    self._loop_call(call_id)
                self._write_frame(data)
                if on_loop:
                    replied = self._wait_on_loop(waiter, timeout)
                else:
                    replied = waiter.event.wait(timeout)
            except BaseException:
                if self._waiters.pop(call_id, None) is not None:
                    self._send_cancel(call_id)
                raise
            finally:
                self._loop_calls.discard(call_id)
            if not replied and self._waiters.pop(call_id, None) is not None:
                self._send_cancel(call_id)
                raise CallTimeout(f"{module}.{function} did not reply within {timeout} s")
            ok, value = waiter.ok, waiter.value
        if ok:
            return value
        raise ErlangError.from_map(value)

    async def acall(
        self, module: str, function: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Call ``module:function(args)`` on the owner from a coroutine; see
        :func:`symbiont.erlang.acall`."""
        if not self.ready:
            raise RuntimeError("symbiont.erlang.acall is not available before the host is ready")
        call_id = next(self._ids)
        data = self._encode(["call", call_id, module, function, args], f"call to {module}")
        waiter = _LoopWaiter(asyncio.get_running_loop())
        self._waiters[call_id] = waiter
        try:
            if threading.get_ident() == self._loop_ident:
                self._loop_call(call_id)
            self._write_frame(data)
            ok, value = await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            if self._waiters.pop(call_id, None) is not None:
                self._send_cancel(call_id)
            raise CallTimeout(f"{module}.{function} did not reply within {timeout} s") from None
        except BaseException:  # cancelled (a handler's timeout): the owner is told (§4.2)
            if self._waiters.pop(call_id, None) is not None:
                self._send_cancel(call_id)
            raise
        finally:
            self._loop_calls.discard(call_id)
        if ok:
            return value
        raise ErlangError.from_map(value)

    def _loop_call(self, call_id: int) -> None:
        """The event loop's thread waits for the reply to ``call_id``: the dispatch thread,
        if it waits for a coroutine, serves the owner meanwhile (nested calls, §4.1)."""
        self._loop_calls.add(call_id)
        self._wake.set()

    def _wait_on_loop(self, waiter: _Waiter, timeout: float | None) -> bool:
        """A plain call's wait for its reply on the event loop's thread (it blocks the
        loop): False after ``timeout``; :class:`~symbiont.CancelledError` when the
        coroutine it runs in is cancelled meanwhile (the task cannot see it otherwise)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 0.05 if deadline is None else min(deadline - time.monotonic(), 0.05)
            if waiter.event.wait(max(remaining, 0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._loop_cancelled is not None:
                self._raise_if_task_cancelled()

    # -- the event loop of async def agents (symbiont._aio) ------------------------------

    def _await(self, awaitable: Awaitable[Any] | None, token: int | None = None) -> Any:
        """Run ``awaitable`` on the host's event loop and return its result (or raise what
        it raised), the dispatch thread waiting meanwhile; ``None`` gives ``None``.

        ``token`` is the delivery's, whose timeout cancels the task (:meth:`_cancel_job`).
        While the coroutine awaits a call of its own, the dispatch thread serves the
        owner's frames, as :meth:`_call_inline` does (nested calls, §4.1).
        """
        if awaitable is None:
            return None
        aio = self._aio
        if aio is None:
            aio = self._aio = LoopThread()
            self._loop_ident = aio.ident
        wake = self._wake
        self._loop_cancelled = None
        job = aio.submit(awaitable, wake.set)
        if token is not None:
            self._jobs[token] = job
        try:
            while not job.done.is_set():
                if self._loop_calls:
                    self._serve_one()
                else:
                    wake.wait()
                    wake.clear()
        finally:
            self._loop_cancelled = None  # the loop's other tasks wait on as they please
            if token is not None:
                self._jobs.pop(token, None)
        return job.result()

    def _serve_one(self) -> None:
        """Handle the owner's next frame, if one comes within a watchdog tick."""
        try:
            frame = self.reader.next_frame(WATCHDOG_INTERVAL)
            if frame is None:
                return
            handler = self._handlers.get(frame[0])
            if handler is None:
                raise ProtocolError(f"unknown frame kind {frame[0]!r}")
            handler(frame)
        except ProtocolError as exc:
            self._protocol_error(str(exc))  # here: user code up the stack could swallow it

    def _call_inline(
        self, call_id: int, data: bytes, timeout: float | None, what: str
    ) -> tuple[bool, Any]:
        # On the dispatch thread nobody else reads for us: serve frames while waiting, so
        # that the owner can call back in (nested calls, §4.1).
        results = self._results
        depth = len(self._stack)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._inline_waits.add(call_id)
        answered = False
        try:
            self._write_frame(data)
            self.transport.flush()  # not held behind the frames handled while it waits
            while call_id not in results:
                if self._cancelled and depth and self._stack[depth - 1] in self._cancelled:
                    raise CancelledError(f"call {self._stack[depth - 1]} was cancelled")
                remaining = None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                try:
                    frame = None
                    if remaining is None or remaining > 0:
                        frame = self.reader.next_frame(remaining)
                    if frame is None:
                        raise CallTimeout(f"{what} did not reply within {timeout} s")
                    handler = self._handlers.get(frame[0])
                    if handler is None:
                        raise ProtocolError(f"unknown frame kind {frame[0]!r}")
                    handler(frame)
                except ProtocolError as exc:
                    # Exit here: user code up the stack could swallow the exception.
                    self._protocol_error(str(exc))
            answered = True
            return results.pop(call_id)
        finally:
            self._inline_waits.discard(call_id)
            if not answered:
                results.pop(call_id, None)
                self._send_cancel(call_id)

    def _send_cancel(self, call_id: int) -> None:
        try:
            self._write_frame(packb(["cancel", call_id]))
        except OSError:
            pass

    def _on_reply(self, frame: list[Any]) -> None:
        if len(frame) != 3 or not _is_id(frame[1]):
            raise _bad(frame, "expected [kind, id, value], id in 0..2^63-1")
        kind, call_id, value = frame
        ok = kind == "reply"
        if not ok and type(value) is not dict:
            raise _bad(frame, "an error must be a map")
        waiter = self._waiters.pop(call_id, None)
        if waiter is not None:
            self._loop_calls.discard(call_id)
            waiter.set(ok, value)
        elif call_id in self._inline_waits:
            self._results[call_id] = (ok, value)
        else:
            _logger.debug("late %s for call %d dropped", kind, call_id)

    # -- agents (PROTOCOL.md §8) ---------------------------------------------------------

    def _on_agent_start(self, frame: list[Any]) -> None:
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

    def _on_agent_stop(self, frame: list[Any]) -> None:
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

    def _stop_agent(self, slot: int) -> None:
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

    def _on_event(self, frame: list[Any]) -> None:
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

    def _on_tick(self, frame: list[Any]) -> None:
        if (
            len(frame) != 4
            or not _is_seq(frame[1])
            or not _is_seq(frame[2])
            or type(frame[3]) is not str
        ):
            raise _bad(frame, 'expected ["tick", slot, seq, timer_name], slot and seq in 1..2^63-1')
        self._deliver(frame[1], frame[2], "tick", frame)

    def _deliver(self, slot: int, seq: int, kind: str, frame: list[Any]) -> None:
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

    def _run_delivery(self, slot: int, seq: int, kind: str, frame: list[Any]) -> None:
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
        except (Exception, CancelledError, asyncio.CancelledError) as exc:  # noqa: BLE001 - a nack
            self._delivery_deadline = None
            if isinstance(exc, (CancelledError, asyncio.CancelledError)) and (
                token in self._cancelled
            ):
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

    def _box_enter(self, kind: int, slot: int) -> tuple[bytes, bytes] | None:
        """Record that ``slot``'s agent starts or stops (§11.1); returns what to put back."""
        box = self._box
        if box is None:
            return None
        recorded = (box[ENTRY:SIZE], self._box_after)
        self._box_after = _blackbox.entry(kind, slot)
        box[ENTRY:SIZE] = self._box_after
        return recorded

    def _box_leave(self, recorded: tuple[bytes, bytes] | None) -> None:
        """Back to what ran before the start or stop (idle, or a delivery it ran inside)."""
        box = self._box
        if recorded is not None and box is not None:
            box[ENTRY:SIZE], self._box_after = recorded

    def _nack(self, record: Slot, seq: int, error: dict[str, str]) -> None:
        """Delivery ``seq`` failed (its slot rolled back: :meth:`Slot.roll_back`): the
        deliveries before it are acked, and it is nacked (§8)."""
        self._flush_ack(record.number, force=True)
        self._write_frame(self._pack_error(["nack", record.number, seq], error))

    def _flush_acks(self) -> None:
        """Send the cumulative ack of every slot with deliveries handled but not acked."""
        if not self._unacked:
            return
        for slot in list(self._unacked):
            self._flush_ack(slot)

    def _flush_ack(self, slot: int, *, force: bool = False) -> None:
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


def _exit_after_flush(transport: Transport, exit: Callable[[int], Any], status: int) -> Any:
    """``exit(status)`` once the writes the transport held are out (the owner may be gone)."""
    with contextlib.suppress(OSError):
        transport.flush()
    return exit(status)


def _window(value: Any) -> tuple[int, int] | None:
    """A window of PROTOCOL.md §8.2 as (frames, bytes), or None when it is not one."""
    if type(value) is not dict:
        return None
    frames, size = value.get("frames"), value.get("bytes")
    if not (type(frames) is int and type(size) is int and _is_seq(frames) and _is_seq(size)):
        return None
    return frames, size


def _runnable(fn: Callable[..., Any], result: Any, what: str) -> Any:
    """``result``, an awaitable that ``fn`` returned, if ``fn`` is an ``async def``; a
    ``TypeError`` otherwise (:func:`symbiont._aio.not_runnable`)."""
    if inspect.iscoroutinefunction(fn):
        return result
    raise not_runnable(what, result)


def _overloaded(slot: int, c: list[int]) -> OverloadedError:
    what = "publishes of its slot" if slot else "casts and messages"
    return OverloadedError(
        f"the owner gave back none of the {c[0]} {what} sent ({c[1]} bytes, "
        f"a window of {c[2]} frames and {c[3]} bytes) within {CREDIT_WAIT:g} s: "
        "the node takes in less than this host sends"
    )


def _cancelled_text(target: int) -> str:
    # Owner calls have ids >= 0; deliveries negative tokens (see Host._run_delivery).
    if target >= 0:
        return f"call {target} was cancelled by the owner"
    return "the delivery ran past its handler_timeout"


def _frame_bytes(frame: list[Any]) -> bytes:
    data = packb(frame)
    return _pack_header(len(data)) + data


def _die_with_parent() -> None:
    """PROTOCOL.md §1.5: never outlive the owner, even stuck in native code."""
    if not sys.platform.startswith("linux"):
        return
    ppid = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    current = os.getppid()
    if current != ppid or current == 1:
        os._exit(1)  # the parent died before prctl took effect


def _lead_a_process_group() -> None:
    """Children of the host die with it (SECURITY.md): it leads a process group of its
    own, which the owner kills once the host is gone, and which the host kills itself
    on its way out (:func:`_exit_with_children`)."""
    try:
        os.setsid()  # a session of its own also keeps the terminal's Ctrl-C away from it
    except OSError:
        pass  # already a group leader: started by something other than an owner
    # A forked child must not hold the protocol's pipes: the owner would not see the
    # host's end of stream while it lives (subprocesses do not: the fds are CLOEXEC).
    os.register_at_fork(after_in_child=_drop_protocol_fds)


def _drop_protocol_fds() -> None:
    for fd in (3, 4):
        with contextlib.suppress(OSError):
            os.close(fd)


def _group_members() -> list[int]:
    """The other processes of this host's process group (Linux: read from /proc)."""
    me = os.getpid()
    if os.getpgrp() != me:
        return []
    members = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == me:
                members.append(int(entry.name))
    return members


def _exit_with_children(status: int) -> NoReturn:
    """``os._exit(status)``, after SIGKILL to the rest of the host's process group."""
    for pid in _group_members():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(status)


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
