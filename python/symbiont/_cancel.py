"""Cancellation in a host: of an owner's call (PROTOCOL.md §4.2) and of a delivery past its
agent's handler_timeout (§8).

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
the same way, by the watchdog, and nacked (PROTOCOL.md §8). An ``async def`` one has its
task cancelled instead (``asyncio.CancelledError`` at its ``await``).

Functions of :class:`~symbiont._host.Host`, which binds them as its methods.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._aio import Job
from ._errors import CancelledError
from ._frame_checks import _bad, _is_id

if TYPE_CHECKING:  # pragma: no cover
    from ._host import Host

__all__ = [
    "CANCEL_SIGNAL",
    "_cancel",
    "_cancel_delivery",
    "_cancel_job",
    "_cancelled_text",
    "_check_delivery_deadline",
    "_interrupt",
    "_on_cancel",
    "_on_cancel_signal",
    "_raise_deferred_cancel",
    "_raise_if_cancelled",
    "_raise_if_task_cancelled",
]

#: A real-time signal nobody else uses; SIGUSR2 where there are none.
CANCEL_SIGNAL = getattr(signal, "SIGRTMIN", signal.SIGUSR2) + (
    3 if hasattr(signal, "SIGRTMIN") else 0
)


def _raise_if_cancelled(self: Host) -> None:
    """The dispatch thread's running call or delivery was cancelled: raise it here."""
    stack = self._stack
    if stack and stack[-1] in self._cancelled:
        self._cancel_pending = None
        raise CancelledError(_cancelled_text(stack[-1]))
    if self._cancel_pending is not None:
        self._raise_deferred_cancel()


def _on_cancel(self: Host, frame: list[Any]) -> None:
    if len(frame) != 2 or not _is_id(frame[1]):
        raise _bad(frame, 'expected ["cancel", id], id in 0..2^63-1')
    self._cancel(frame[1])


def _cancel(self: Host, call_id: int) -> None:
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


def _interrupt(self: Host, call_id: int) -> None:
    self._cancel_pending = call_id
    if self._use_signal:
        signal.pthread_kill(self._ident, CANCEL_SIGNAL)
    else:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self._ident), ctypes.py_object(CancelledError)
        )


def _check_delivery_deadline(self: Host) -> None:
    deadline = self._delivery_deadline
    if deadline is not None and time.monotonic() >= deadline[1]:
        self._delivery_deadline = None
        self._cancel_delivery(deadline[0])


def _cancel_delivery(self: Host, token: int) -> None:
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


def _cancel_job(self: Host, job: Job, token: int) -> None:
    """Cancel the task of an async delivery (``asyncio.CancelledError`` at its
    ``await``). A coroutine that blocks the loop in a wait of the host's own (a full
    window, a plain ``erlang.call``) gets :class:`~symbiont.CancelledError` there."""
    text = _cancelled_text(token)
    self._loop_cancelled = (job, text)
    job.cancel(text)
    with self._credit:
        self._credit.notify_all()


def _raise_if_task_cancelled(self: Host) -> None:
    """On the event loop's thread, in the task of the async dispatch that was
    cancelled (:meth:`_cancel_job`), blocked in a wait of the host's: raise its
    cancellation there. Other tasks of the loop wait on."""
    cancelled = self._loop_cancelled
    if cancelled is None or threading.get_ident() != self._loop_ident:
        return
    job, text = cancelled
    with contextlib.suppress(RuntimeError):  # no task runs: not the cancelled one
        if job.task is not None and sys.modules["asyncio"].current_task() is job.task:
            raise CancelledError(text)


def _on_cancel_signal(self: Host, signum: int, frame: FrameType | None) -> None:
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


def _raise_deferred_cancel(self: Host) -> None:
    if threading.get_ident() != self._ident:
        return
    target = self._cancel_pending
    self._cancel_pending = None
    if target is not None and self._stack and self._stack[-1] == target:
        raise CancelledError(_cancelled_text(target))


def _cancelled_text(target: int) -> str:
    # Owner calls have ids >= 0; deliveries negative tokens (see Host._run_delivery).
    if target >= 0:
        return f"call {target} was cancelled by the owner"
    return "the delivery ran past its handler_timeout"
