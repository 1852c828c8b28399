"""``async def`` agents: the event loop a host (or an AgentHarness) runs them on.

Why a thread of its own
-----------------------
A host runs one asyncio event loop, created on first use, on a daemon thread of its own
(``symbiont-asyncio``), and keeps it for its whole life. The dispatch thread hands each
``async def`` handler, timer, ``on_start``, ``on_stop`` or ``on_message`` to it as a task
and waits until that task is done before it takes the next frame, exactly as it waits for
a plain handler: one delivery at a time, in order, acked (with its checkpoint) after the
coroutine completes (PROTOCOL.md §8). The loop keeps running between deliveries, so tasks
an agent starts itself (``asyncio.create_task`` in ``on_start``: a websocket reader, a
client's keep-alive) go on while the host waits for events, as they would under
``asyncio.run``. The dispatch thread, meanwhile, stays free to serve the owner: a
coroutine that awaits a call into the BEAM can be called back (nested calls, §4.1).

A handler's timeout cancels its task (``Task.cancel``, from the watchdog thread through
``call_soon_threadsafe``): the coroutine sees ``asyncio.CancelledError`` at the ``await``
it is in, its ``finally`` blocks run, and the delivery is nacked like any cancelled one.
A coroutine that blocks its loop in plain code (``time.sleep``, a busy loop) cannot be
cancelled there, by asyncio or by the host (signals reach the main thread only); the
owner restarts the host after the handler's timeout and its grace, as for a plain
handler that ignores being cancelled.

Which methods may be ``async def`` is decided when the class is defined
(:func:`check_method`); an awaitable from anything else is an error, never left to
Python's ``coroutine ... was never awaited`` warning.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._errors import CancelledError

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

__all__ = ["Job", "LoopThread", "cancellations", "check_method", "not_runnable"]


def cancellations(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """``more``, :class:`symbiont.CancelledError`, and ``asyncio.CancelledError`` once
    asyncio is loaded (nothing can raise it before): for an ``except`` clause, evaluated
    as the exception passes. The SDK imports asyncio only when an agent or a call needs
    its loop: a host that never does is spared its ~10 MB (ssl and all)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return (*more, CancelledError)
    return (*more, CancelledError, asyncio.CancelledError)


def check_method(owner: str, name: str, fn: Any, *, may_be_async: bool = True) -> bool:
    """Whether ``fn``, the method ``owner.name``, is an ``async def`` the SDK runs on its
    event loop; a ``TypeError`` naming the method and the rule for one it cannot run: a
    generator or async generator (its body would never run), or an ``async def`` where
    only a plain method works (``may_be_async`` false)."""
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise TypeError(
            f"{owner}.{name} is {kind} (a def with yield): the SDK would only create it, "
            "and its body would never run. A handler, timer or hook is a plain def or an "
            "async def that returns; take the yield out"
        )
    is_async = inspect.iscoroutinefunction(fn)
    if is_async and not may_be_async:
        raise TypeError(
            f"{owner}.{name} must be a plain def: the SDK calls it without an event loop "
            "(only handlers, timers, on_start, on_stop, on_message and handle_event may be "
            "async def)"
        )
    return is_async


def not_runnable(what: str, result: Any) -> TypeError:
    """The error for an awaitable that ``what`` (a plain ``def``) returned: the SDK awaits
    only what an ``async def`` returns. A coroutine is closed first, so that Python adds
    no "never awaited" warning to the error."""
    if inspect.iscoroutine(result):
        result.close()
    return TypeError(
        f"{what} returned {type(result).__name__} {_name(result)}but is not an async def: "
        "the SDK awaits only async def handlers, timers and hooks, so it would never run. "
        "Declare it async def (and await what it returns)"
    )


def _name(result: Any) -> str:
    code = getattr(result, "cr_code", None)
    return f"({code.co_qualname}) " if code is not None else ""


class LoopThread:
    """An asyncio event loop running forever on a daemon thread of its own."""

    def __init__(self, name: str = "symbiont-asyncio") -> None:
        import asyncio  # noqa: PLC0415 - only for an agent that needs the loop

        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.ident = 0

        def run() -> None:
            self.ident = threading.get_ident()
            asyncio.set_event_loop(self.loop)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        started.wait()

    def submit(self, awaitable: Awaitable[Any], on_done: Callable[[], None] | None = None) -> Job:
        """Run ``awaitable`` as a task of the loop; ``on_done`` is called (on the loop's
        thread) once it is done."""
        return Job(self.loop, awaitable, on_done)

    def run(self, awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run ``awaitable`` on the loop and wait for its result, from another thread.

        After ``timeout`` seconds its task is cancelled, and waited for; what it then
        raises (``asyncio.CancelledError`` unless it caught that) is raised here.
        """
        job = self.submit(awaitable)
        if not job.done.wait(timeout):
            job.cancel(f"ran past its timeout of {timeout} s")
            job.done.wait()
        return job.result()

    def close(self) -> None:
        """Cancel the loop's tasks, wait for them, stop the loop and its thread."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            import asyncio  # noqa: PLC0415 - loaded by __init__

            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(BaseException):
            self.run(cancel_all(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class Job:
    """An awaitable running as a task on a loop of another thread, waited for with
    :attr:`done` (a ``threading.Event``)."""

    __slots__ = ("_loop", "_on_done", "done", "task")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        awaitable: Awaitable[Any],
        on_done: Callable[[], None] | None,
    ) -> None:
        self._loop = loop
        self._on_done = on_done
        self.done = threading.Event()
        self.task: asyncio.Future[Any] | None = None
        loop.call_soon_threadsafe(self._start, awaitable)

    def _start(self, awaitable: Awaitable[Any]) -> None:
        coro = awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)
        self.task = task = self._loop.create_task(coro)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self.done.set()
        if self._on_done is not None:
            self._on_done()

    def cancel(self, message: str) -> None:
        """Cancel the task, from any thread (it sees ``asyncio.CancelledError``)."""
        self._loop.call_soon_threadsafe(self._cancel, message)

    def _cancel(self, message: str) -> None:
        if self.task is not None:  # started before: call_soon_threadsafe keeps the order
            self.task.cancel(message)

    def result(self) -> Any:
        """Its result, or what it raised; only once :attr:`done` is set."""
        assert self.task is not None
        return self.task.result()
