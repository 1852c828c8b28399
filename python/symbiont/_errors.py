"""Exceptions of the Python side, and the error maps of PROTOCOL.md §5."""

from __future__ import annotations

import traceback as _traceback
from typing import Any

__all__ = [
    "CallTimeout",
    "CancelledError",
    "ErlangError",
    "FrameTooLarge",
    "OverloadedError",
    "ProtocolError",
    "ReservedTopicError",
    "TopicLimitError",
    "error_map",
    "qualified_name",
    "wire_text",
]


class CancelledError(BaseException):
    """Raised inside a running call that the owner cancelled (PROTOCOL.md §4.2).

    It derives from ``BaseException`` so that ``except Exception`` in user code does not
    swallow it. A call that ends with it sends no reply.
    """


class ErlangError(Exception):
    """An ``error`` reply to a call made from Python with :func:`symbiont.erlang.call`.

    Attributes
    ----------
    type:
        ``"error"``, ``"exit"`` or ``"throw"`` for Erlang failures, or the Python class name
        when the owner relayed a Python error.
    message:
        Human-readable text.
    traceback:
        The formatted stacktrace (may be empty).
    reason:
        The original Erlang reason term when the owner sent one, else ``None``.
    """

    type: str
    message: str
    traceback: str
    reason: Any

    def __init__(self, type: str, message: str, traceback: str = "", reason: Any = None) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback
        self.reason = reason

    @classmethod
    def from_map(cls, error: dict[Any, Any]) -> ErlangError:
        """Build the exception from an ``error`` map of PROTOCOL.md §5."""
        return cls(
            str(error.get("type", "error")),
            str(error.get("message", "")),
            str(error.get("traceback", "") or ""),
            error.get("reason"),
        )


class CallTimeout(TimeoutError):
    """A call from Python to the owner got no reply within its ``timeout``."""


class FrameTooLarge(ValueError):
    """A frame would exceed the peer's maximum frame size (PROTOCOL.md §1.4)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, over the owner's max_frame of {limit} bytes")
        self.size = size
        self.limit = limit


class TopicLimitError(ValueError):
    """A publish or subscription over the agent's topic limits (``Symbiont.Agent``, "Topics").

    Raised by :meth:`symbiont.Agent.publish` for a topic over ``MAX_TOPIC_BYTES`` bytes,
    or for one distinct topic more than the agent's ``max_topics`` (per start of its
    process). The message names the limit.
    """


class ReservedTopicError(ValueError):
    """A publish on a topic that starts with ``symbiont.``: those are the node's own
    (``Symbiont.ControlPlane``), and an agent may not publish there.

    Raised by :meth:`symbiont.Agent.publish` (a Wasm module's ``publish`` import fails its
    call with an ``abi`` error instead). An agent reports its health with
    ``self.health`` (the Wasm ``health`` import), which its owner publishes for it.
    """


class OverloadedError(TimeoutError):
    """A publish, cast or message waited too long for room in its window (PROTOCOL.md
    §8.2): the node takes in less than this host sends, for a minute."""


# Their names on the wire are those of the public package, where they are re-exported.
for _cls in (
    CancelledError,
    ErlangError,
    CallTimeout,
    FrameTooLarge,
    TopicLimitError,
    ReservedTopicError,
    OverloadedError,
):
    _cls.__module__ = "symbiont"


class ProtocolError(Exception):
    """The peer broke the wire protocol (PROTOCOL.md §9); the host exits with status 3."""


def qualified_name(cls: type) -> str:
    """``"ValueError"`` for builtins, ``"json.decoder.JSONDecodeError"`` otherwise."""
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the error reply
        return object.__repr__(exc)


def error_map(exc: BaseException, *, skip_frames: int = 0) -> dict[str, str]:
    """The ``error`` map of PROTOCOL.md §5 for ``exc``.

    ``skip_frames`` drops that many leading traceback entries (the host's own dispatch).
    """
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is None or tb.tb_next is None:
            break
        tb = tb.tb_next
    try:
        text = "".join(_traceback.format_exception(type(exc), exc, tb))
    except Exception:  # noqa: BLE001 - same as above
        text = ""
    return {
        "type": wire_text(qualified_name(type(exc))),
        "message": wire_text(_safe_str(exc)),
        "traceback": wire_text(text),
    }


def wire_text(text: str) -> str:
    """Return ``text`` in a form UTF-8 can carry.

    Lone surrogates, which a ``str`` may hold (``os.fsdecode`` makes them), become
    ``\\udcff`` escapes instead of failing the whole frame.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
