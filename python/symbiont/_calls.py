"""Calls in a host: the owner's calls, casts and messages (PROTOCOL.md §4), the host's
calls to the owner (§4.1) from any thread or coroutine, and the event loop that runs
``async def`` code for the dispatch thread.

``async def`` agents
--------------------
Their handlers, timers and hooks run on the host's event loop, a thread of its own
(``symbiont._aio``): the dispatch thread waits for each one as for a plain handler
(:func:`_await`), and serves the owner meanwhile while the coroutine awaits a call of its
own (nested calls, §4.1). Their timeout cancels the task (``asyncio.CancelledError`` at
its ``await``).

Functions of :class:`~symbiont._host.Host`, which binds them as its methods.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ._agent import Agent
from ._aio import Job, LoopThread, cancellations, not_runnable
from ._errors import (
    CallTimeout,
    CancelledError,
    ErlangError,
    FrameTooLarge,
    ProtocolError,
    error_map,
    qualified_name,
)
from ._frame_checks import _bad, _is_id
from ._terms import encode_error, packb
from ._watchdog import WATCHDOG_INTERVAL

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

    from ._host import Host

__all__ = [
    "CRITICAL",
    "_await",
    "_call_inline",
    "_loop_call",
    "_on_call",
    "_on_cast",
    "_on_msg",
    "_on_reply",
    "_resolve",
    "_send_cancel",
    "_send_error",
    "_send_error_map",
    "_serve_one",
    "_start_job",
    "_wait_on_loop",
    "acall",
    "call",
]

_logger = logging.getLogger("symbiont.host")


def _resolve(self: Host, module: str, function: str) -> Callable[..., Any]:
    target: Any = importlib.import_module(module)
    for part in function.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{module}.{function} is not callable")
    self._callables[(module, function)] = target
    return cast("Callable[..., Any]", target)


def _on_call(self: Host, frame: list[Any]) -> None:
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
            if self._cancel_pending is not None:
                self._raise_deferred_cancel()  # it came while the module was imported
            result = fn(*args)
            if result is not None and hasattr(type(result), "__await__"):
                # An async def function: awaited on the loop, cancelled like a task.
                result = self._await(_runnable(fn, result, f"{module}.{function}"), call_id)
        finally:
            stack.pop()
    except cancellations() as exc:
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


def _send_error(self: Host, call_id: int, exc: BaseException) -> None:
    self._send_error_map(call_id, error_map(exc, skip_frames=1))


def _send_error_map(self: Host, call_id: int, error: dict[str, str]) -> None:
    self._write_frame(self._pack_error(["error", call_id], error))


def _on_cast(self: Host, frame: list[Any]) -> None:
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


def _on_msg(self: Host, frame: list[Any]) -> None:
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


def call(self: Host, module: str, function: str, args: list[Any], timeout: float | None) -> Any:
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
    self: Host, module: str, function: str, args: list[Any], timeout: float | None
) -> Any:
    """Call ``module:function(args)`` on the owner from a coroutine; see
    :func:`symbiont.erlang.acall`."""
    if not self.ready:
        raise RuntimeError("symbiont.erlang.acall is not available before the host is ready")
    call_id = next(self._ids)
    data = self._encode(["call", call_id, module, function, args], f"call to {module}")
    import asyncio  # noqa: PLC0415 - in a coroutine: loaded

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


def _loop_call(self: Host, call_id: int) -> None:
    """The event loop's thread waits for the reply to ``call_id``: the dispatch thread,
    if it waits for a coroutine, serves the owner meanwhile (nested calls, §4.1)."""
    self._loop_calls.add(call_id)
    self._wake.set()


def _wait_on_loop(self: Host, waiter: _Waiter, timeout: float | None) -> bool:
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


def _await(self: Host, awaitable: Awaitable[Any] | None, token: int | None = None) -> Any:
    """Run ``awaitable`` on the host's event loop and return its result (or raise what
    it raised), the dispatch thread waiting meanwhile; ``None`` gives ``None``.

    ``token`` is the delivery's, whose timeout cancels the task (:meth:`_cancel_job`).
    While the coroutine awaits a call of its own, the dispatch thread serves the
    owner's frames, as :meth:`_call_inline` does (nested calls, §4.1).
    """
    if awaitable is None:
        return None
    wake = self._wake
    job = self._start_job(awaitable, token)
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


def _start_job(self: Host, awaitable: Awaitable[Any], token: int | None) -> Job:
    """Start ``awaitable`` as a task of the host's event loop (the loop itself at its
    first use) and register it under the delivery's ``token``.

    Critical code (:data:`CRITICAL`): a cancellation never cuts this in half
    (the loop's first start imports asyncio; an import cut in half breaks every later
    one). A delivery whose timeout came meanwhile (it had no job yet to cancel: its
    cancellation waited) has its task cancelled here instead.
    """
    aio = self._aio
    if aio is None:
        aio = self._aio = LoopThread()
        self._loop_ident = aio.ident
    self._loop_cancelled = None
    job = aio.submit(awaitable, self._wake.set)
    if token is not None:
        self._jobs[token] = job
        if token in self._cancelled:
            if self._cancel_pending == token:
                self._cancel_pending = None
            self._cancel_job(job, token)
    return job


#: Code of this module a cancellation never lands in (``Host._critical_code``).
CRITICAL = (_start_job.__code__, LoopThread.__init__.__code__)


def _serve_one(self: Host) -> None:
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
    self: Host, call_id: int, data: bytes, timeout: float | None, what: str
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


def _send_cancel(self: Host, call_id: int) -> None:
    try:
        self._write_frame(packb(["cancel", call_id]))
    except OSError:
        pass


def _on_reply(self: Host, frame: list[Any]) -> None:
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


def _runnable(fn: Callable[..., Any], result: Any, what: str) -> Any:
    """``result``, an awaitable that ``fn`` returned, if ``fn`` is an ``async def``; a
    ``TypeError`` otherwise (:func:`symbiont._aio.not_runnable`)."""
    if inspect.iscoroutinefunction(fn):
        return result
    raise not_runnable(what, result)


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
