"""Talk to the Erlang/Elixir side from Python code running in a symbiont host.

Every function raises ``RuntimeError("not running inside a symbiont host")`` when called
outside a host process.

Example::

    from symbiont import erlang

    node = erlang.call("erlang", "node")
    erlang.send(Atom("my_server"), ("hello", 1))

In ``async`` code, ``await`` :func:`acall`, :func:`acast` and :func:`asend`: they wait for
the reply, or for room in the host's window, without blocking the event loop (the plain
functions work there too, but hold the loop while they wait).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._aio import check_method
from ._terms import Pid

if TYPE_CHECKING:
    from ._host import Host

__all__ = ["acall", "acast", "asend", "call", "cast", "send", "set_message_handler"]


def _host() -> Host:
    from ._host import current_host

    return current_host()


def _check_mfa(module: Any, function: Any, args: Any) -> list[Any]:
    if not isinstance(module, str) or not module:
        raise TypeError(f"module must be a non-empty str, got {module!r}")
    if not isinstance(function, str) or not function:
        raise TypeError(f"function must be a non-empty str, got {function!r}")
    if isinstance(args, (str, bytes, bytearray, dict)) or not isinstance(args, Iterable):
        raise TypeError(f"args must be a list or tuple of arguments, got {type(args).__name__}")
    return list(args)


def call(
    module: str,
    function: str,
    args: Iterable[Any] = (),
    *,
    timeout: float | None = None,
) -> Any:
    """Run ``apply(module, function, args)`` on the owner's node and return its result.

    ``module`` is an Erlang or Elixir module name (``"erlang"``, ``"Elixir.Enum"``; a name
    starting with an upper-case letter gets ``Elixir.`` prepended). While waiting, the host
    keeps serving the owner, so the called function may call back into this host.

    Parameters
    ----------
    timeout:
        Seconds to wait for the reply; ``None`` waits as long as it takes.

    Raises
    ------
    symbiont.ErlangError
        The function raised, exited or threw.
    symbiont.CallTimeout
        No reply within ``timeout``; the owner is told to cancel the call.
    """
    arg_list = _check_mfa(module, function, args)
    _check_timeout(timeout)
    return _host().call(module, function, arg_list, timeout)


async def acall(
    module: str,
    function: str,
    args: Iterable[Any] = (),
    *,
    timeout: float | None = None,
) -> Any:
    """:func:`call` for ``async`` code: ``await erlang.acall("Enum", "sum", [[1, 2]])``.

    The reply is awaited without blocking the event loop; meanwhile the host serves the
    owner, so the called function may call back into this host. Cancelling the task (a
    handler's timeout does) sends the owner a ``cancel`` for the call. Raises what
    :func:`call` raises.
    """
    arg_list = _check_mfa(module, function, args)
    _check_timeout(timeout)
    return await _host().acall(module, function, arg_list, timeout)


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 <= timeout <= threading.TIMEOUT_MAX
    ):
        raise ValueError(
            f"timeout must be None or a number in 0..{threading.TIMEOUT_MAX:g}, got {timeout!r}"
        )


def cast(module: str, function: str, args: Iterable[Any] = ()) -> None:
    """Run ``apply(module, function, args)`` on the owner's node without waiting.

    Failures are logged on the owner's side. A host has a window of casts and messages
    the owner has not run or sent yet (PROTOCOL.md §8.2); when it is full, this waits for
    room, and raises :class:`symbiont.OverloadedError` after a minute without any.
    """
    arg_list = _check_mfa(module, function, args)
    _host().send_counted(["cast", module, function, arg_list], f"cast to {module}")


async def acast(module: str, function: str, args: Iterable[Any] = ()) -> None:
    """:func:`cast` for ``async`` code: waits for room in the window without blocking the
    event loop."""
    arg_list = _check_mfa(module, function, args)
    await _host().asend_counted(["cast", module, function, arg_list], f"cast to {module}")


def send(dest: Pid | str, value: Any) -> None:
    """Send ``value`` to a process: a :class:`symbiont.Pid`, or a registered name.

    A registered name is a :class:`symbiont.Atom` or a ``str``. A name nobody registered is
    logged and dropped by the owner. Like :func:`cast`, it waits while the host's window
    of casts and messages is full.
    """
    frame = ["msg", _check_dest(dest), value]
    _host().send_counted(frame, "message")


async def asend(dest: Pid | str, value: Any) -> None:
    """:func:`send` for ``async`` code: waits for room in the window without blocking the
    event loop."""
    frame = ["msg", _check_dest(dest), value]
    await _host().asend_counted(frame, "message")


def _check_dest(dest: Any) -> Pid | str:
    if not isinstance(dest, (Pid, str)):
        raise TypeError(f"dest must be a Pid, an Atom or a str name, got {type(dest).__name__}")
    return dest


def set_message_handler(handler: Callable[[Any], Any] | None) -> None:
    """Call ``handler(value)`` for each message the owner sends to this host.

    ``handler`` may be an ``async def``, awaited on the host's event loop. ``None``
    removes the handler (messages are then logged and dropped).
    """
    if handler is not None and not callable(handler):
        raise TypeError(f"handler must be callable or None, got {type(handler).__name__}")
    if handler is not None:
        check_method("symbiont.erlang", "set_message_handler(handler)", handler)
    _host().message_handler = handler
