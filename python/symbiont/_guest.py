"""The guest side of a Python agent built into a component (``symbiont build-wasm``).

This module runs *inside* the component, in componentize-py's CPython, never in a host:
:func:`world` makes the class componentize-py exports for the ``symbiont:agent`` world
(``wit/agent.wit``, docs/WASM_ABI.md "Components") around an unchanged
:class:`symbiont.Agent` subclass. ``@on`` handlers, ``@every`` timers, ``self.publish``,
``self.state``, ``self.health`` and ``self.log`` work as in a native host; they reach the
node only through the world's imports (``publish``, ``health``, ``log``).

What a sandbox cannot offer fails with an error that says so, never silently:
``self.call``/``self.acall`` (no BEAM to call), ``self.wasm`` (no plug-ins), files,
sockets, processes (an audit hook turns each into a ``PermissionError`` naming it; the
sandbox itself, with no preopened directory and no network, is what stops them), and
``sys.exit`` (the message fails with a ``SystemExit`` error; the host keeps serving).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, cast

from . import _agent, erlang
from ._agent import Agent, agent_class
from ._terms import packb, unpackb

# What the sandbox says no to, by audit event (sys.addaudithook): the first word of the
# message, and the events. The sandbox refuses them anyway (no files, no network); this
# makes the error say why.
_DENIED_EVENTS = {
    "open": "files",
    "os.listdir": "files",
    "os.scandir": "files",
    "os.mkdir": "files",
    "os.remove": "files",
    "os.rename": "files",
    "os.chdir": "files",
    "shutil.rmtree": "files",
    "os.system": "processes",
    "os.exec": "processes",
    "os.posix_spawn": "processes",
    "os.spawn": "processes",
    "os.fork": "processes",
    "subprocess.Popen": "processes",
    "os.kill": "processes",
    "ctypes.dlopen": "native code",
}
_DENIED_PREFIXES = {"socket.": "sockets"}


_hooked = False  # the audit hook is installed (it cannot be removed)


class SandboxError(PermissionError):
    """What a Python agent asked for that the Wasm sandbox does not offer."""


def _audit(event: str, args: tuple[Any, ...]) -> None:
    what = _DENIED_EVENTS.get(event)
    if what is None:
        what = next((w for p, w in _DENIED_PREFIXES.items() if event.startswith(p)), None)
    if what is None:
        return
    shown = ", ".join(repr(a)[:100] for a in args[:2])
    raise SandboxError(
        f"{event}({shown}): an agent in the Wasm sandbox has no {what} "
        "(it reaches the node only through publish, log and health)"
    )


def _no_call(*_args: Any, **_kwargs: Any) -> Any:
    raise SandboxError(
        "self.call/self.acall: an agent in the Wasm sandbox cannot call into the BEAM "
        "(run it as a python: agent for that)"
    )


def _no_name_lookup() -> None:
    """``socket.getaddrinfo`` (and so ``create_connection``) refused with a clear error:
    CPython encodes the host name before its audit event, which the sandbox cannot do."""
    import socket  # noqa: PLC0415

    def getaddrinfo(host: Any, port: Any, *_args: Any, **_kwargs: Any) -> Any:
        _audit("socket.getaddrinfo", (host, port))
        raise SandboxError("socket.getaddrinfo: refused")  # pragma: no cover - _audit raises

    socket.getaddrinfo = getaddrinfo


def _no_wasm(self: Agent, name: str) -> Any:
    raise SandboxError(f"self.wasm({name!r}): an agent in the Wasm sandbox has no Wasm plug-ins")


class _HostLog(logging.Handler):
    """Log records to the host's ``log`` import."""

    def __init__(self, host: Any) -> None:
        super().__init__(logging.DEBUG)
        self._host = host

    def emit(self, record: logging.LogRecord) -> None:
        level = min(max(record.levelno // 10 - 1, 0), 3)  # DEBUG 0, INFO 1, WARNING 2, ERROR+ 3
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is shown as given
            text = str(record.msg)
        self._host.log(level, text)


class _LineWriter:
    """``sys.stdout``/``sys.stderr`` in the sandbox: each line a log line of the agent (info
    for stdout, warning for stderr)."""

    def __init__(self, host: Any, level: int) -> None:
        self._host, self._level, self._buffer = host, level, ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._host.log(self._level, line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._host.log(self._level, self._buffer)
            self._buffer = ""


class _NoTime:
    """What ``logging`` asks of ``time``: a log record's creation time, which the host
    does not use (it stamps the line itself). Without it, each record would read a WASI
    clock (the ``clock`` grant) or cost a host call."""

    @staticmethod
    def time() -> float:
        return 0.0

    @staticmethod
    def time_ns() -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        import time  # noqa: PLC0415

        return getattr(time, name)


def _run(result: Any, what: str) -> None:
    """Drive what an ``async def`` handler returned: it may await nothing that waits (the
    sandbox has no event loop to wait on)."""
    if result is None or not hasattr(result, "send"):
        return
    try:
        result.send(None)
    except StopIteration:
        return
    result.close()
    raise SandboxError(f"{what} awaited something that waits: the sandbox cannot wait")


def _err(exc: BaseException) -> Exception:
    from componentize_py_types import Err  # noqa: PLC0415 - only inside the component

    err: Any = Err
    if isinstance(exc, MemoryError):
        return cast(Exception, err(f"MemoryError: the agent ran out of memory {exc}".rstrip()))
    if isinstance(exc, SystemExit):
        return cast(
            Exception,
            err(
                f"SystemExit: sys.exit({exc.code!r}) was called; an agent in the Wasm sandbox "
                "cannot exit its host (the message failed)"
            ),
        )
    return cast(Exception, err(f"{type(exc).__name__}: {exc}"))


def world(module: str, class_name: str) -> type:
    """The ``WitWorld`` class componentize-py exports, running ``module.class_name``.

    Called at build time (componentize-py pre-initializes the component): the agent's
    module is imported then; the sandbox's audit hook is installed by the first ``init``.
    """
    from wit_world.imports import host  # noqa: PLC0415 - only inside the component

    _no_name_lookup()
    cls = agent_class(module, class_name)
    erlang.call = erlang.acall = _no_call  # Agent.call looks them up at each call
    Agent.wasm = _no_wasm  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(_HostLog(host))
    root.setLevel(logging.DEBUG)
    logging.time = _NoTime()  # type: ignore[attr-defined]

    def publisher(topic: str, data: bytes) -> None:
        host.publish(topic, data)

    def reporter(kind: str, reason: str, _metrics: dict[str, Any]) -> None:
        host.health(kind, reason)

    class WitWorld:
        agent: Agent | None = None

        def _agent(self) -> Agent:
            if WitWorld.agent is None:
                raise RuntimeError("init was not called")
            return WitWorld.agent

        def init(self, name: str, config: bytes, state: bytes | None) -> None:
            # At run time only: at build time there is no host to write to, and
            # componentize-py reads files after the agent's module is imported.
            global _hooked
            if not _hooked:
                sys.addaudithook(_audit)
                _hooked = True
            sys.stdout = _LineWriter(host, 1)
            sys.stderr = _LineWriter(host, 2)
            try:
                agent = cls(
                    name,
                    config=unpackb(config) or {},
                    state=unpackb(state) if state is not None else None,
                )
                agent._publisher = publisher
                agent._reporter = reporter
                WitWorld.agent = agent
                _run(agent.on_start(), f"{class_name}.on_start")  # type: ignore[func-returns-value]
            except BaseException as exc:  # noqa: BLE001 - SystemExit too
                raise _err(exc) from None

        def subscriptions(self) -> list[str]:
            return cls.topics()

        def timers(self) -> list[tuple[str, int]]:
            return list(cls.timers().items())

        def handle(self, topic: str, payload: bytes) -> bytes:
            try:
                agent = self._agent()
                _run(agent.handle_event(topic, payload), f"{class_name} on {topic!r}")
                return packb(agent.state)
            except BaseException as exc:  # noqa: BLE001
                raise _err(exc) from None

        def tick(self, name: str) -> bytes:
            try:
                if name not in cls.timers():
                    raise LookupError(f"{class_name} has no timer {name!r}")
                agent = self._agent()
                _run(getattr(agent, name)(), f"{class_name}.{name}")
                return packb(agent.state)
            except BaseException as exc:  # noqa: BLE001
                raise _err(exc) from None

        def snapshot(self) -> bytes:
            try:
                return packb(self._agent().state)
            except BaseException as exc:  # noqa: BLE001
                raise _err(exc) from None

    return WitWorld


__all__ = ["SandboxError", "world", "_agent"]
