"""The Wasm ABI of docs/WASM_ABI.md: its exports and their checks, the host functions a
module imports (publish, log, health, the WASI it may use) and what a call holds until it
succeeds (:class:`_Outbox`). :mod:`symbiont.wasm` re-exports the public names.
"""

from __future__ import annotations

import codecs
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _contract
from ._agent import HEALTH_REASON_BYTES, RESERVED_PREFIX
from ._errors import ReservedTopicError, TopicLimitError
from ._wasm_limits import WasmError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import wasmtime

    from ._wasm_instance import Instance
    from ._wasm_runtime import Runtime

#: The ABI this runtime speaks; a module says which one it implements by exporting
#: ``symbiont_abi_version``.
ABI_VERSION = 1
#: The health kinds a module may report through the ``health`` import.
HEALTH_KINDS = frozenset(_contract.AGENT_HEALTH_KINDS)

_WASI = "wasi_snapshot_preview1"
# The WASI functions behind each capability; the rest of WASI is harmless without
# preopened directories, environment or arguments, and is always there.
_CAPABILITY_FUNCTIONS = {
    "clock": ("clock_time_get", "clock_res_get"),
    "random": ("random_get",),
}
# WASI functions no grant allows: they wait (poll_oneoff is sleep()), and a host function
# is not interrupted at the deadline.
_WAITING_FUNCTIONS = ("poll_oneoff",)
# fd_write is the host's own (_import_fd_write): stdout and stderr are the `stdout` grant.
_FD_WRITE = "fd_write"
_EBADF, _EINVAL = 8, 28  # WASI's errnos: a file descriptor that is not open, a bad argument
_IOV_MAX = 1024  # the most iovecs one fd_write takes, as POSIX's IOV_MAX
# Log lines (the log import, and stdout when granted) one call may write; the rest are
# counted and dropped, and one warning says how many. A line is cut at LOG_LINE_BYTES; an
# fd_write takes at most that many bytes (a partial write: it says how many it took).
LOG_LINES_PER_CALL = 1000
LOG_LINE_BYTES = 8192
_U32 = 0xFFFFFFFF
_TRUNCATED = " [truncated]"
_REQUIRED_EXPORTS = ("memory", "symbiont_abi_version", "symbiont_alloc", "symbiont_handle")


@dataclass
class Imports:
    """What a module can reach outside its sandbox: callbacks for its imports."""

    publish: Callable[[str, bytes], None] = lambda topic, payload: None
    log: Callable[[int, str], None] = lambda level, text: None
    health: Callable[[str, str], None] = lambda kind, reason: None
    stdout: Callable[[bytes], None] = lambda data: None
    # Raises TopicLimitError for a topic the agent may not publish on (Symbiont.Agent,
    # "Topics"): checked when the module publishes, though the event goes out only when
    # its call succeeds.
    check_topic: Callable[[str], None] = lambda topic: None

    @classmethod
    def for_agent(cls, agent: Any, health: Callable[[str, str], None]) -> Imports:
        """Imports wired to ``agent``: publish on its behalf, log lines (levels 0-3 =
        debug..error) and stdout into its log, health reports to ``health``."""
        levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
        return cls(
            publish=agent._publish_raw,
            check_topic=agent._claim_topic,
            log=lambda level, text: agent.log.log(levels[min(max(level, 0), 3)], "%s", text),
            health=health,
            stdout=lambda data: agent.log.info("%s", data.decode("utf-8", "replace").rstrip()),
        )


_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "symbiont_abi_version": ((), ("i32",)),
    "symbiont_alloc": (("i32",), ("i32",)),
    "symbiont_handle": (("i32", "i32"), ("i64",)),
    "symbiont_init": (("i32", "i32"), ()),
    "symbiont_state": ((), ("i64",)),
    "symbiont_migrate": (("i32", "i32"), ()),
    "_initialize": ((), ()),
}


def _import_wasmtime() -> Any:
    """wasmtime, imported; an ``ImportError`` naming the extra to install without it."""
    try:
        import wasmtime  # noqa: PLC0415 - lazily, see the module docstring
        import wasmtime.component  # noqa: F401, PLC0415 - components (symbiont._component)
    except ImportError as exc:
        raise ImportError(
            "Wasm modules need wasmtime, which is not installed: "
            "pip install 'symbiont[wasm]' (Python agents run without it)",
            name="wasmtime",
        ) from exc
    return wasmtime


def _signature(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    return f"({', '.join(params)}) -> {results[0] if results else '()'}"


def _check_exports(module: wasmtime.Module, name: str) -> dict[str, str | None]:
    """The module's ABI functions and the type of each one's result, once their types
    are checked; raises an ``abi`` :class:`WasmError` naming what is wrong."""
    import wasmtime  # noqa: PLC0415

    exports = {e.name: e.type for e in module.exports}
    missing = [e for e in _REQUIRED_EXPORTS if e not in exports]
    if missing:
        raise WasmError(
            "abi",
            f"{name} does not export {', '.join(missing)} "
            f"(a Symbiont module exports {', '.join(_REQUIRED_EXPORTS)})",
        )
    memory = exports["memory"]
    if not isinstance(memory, wasmtime.MemoryType):
        raise WasmError("abi", f"{name} exports memory, but it is not a memory")
    if memory.is_64 or memory.is_shared:
        raise WasmError(
            "abi",
            f"{name} exports memory as a {'64-bit' if memory.is_64 else 'shared'} memory; "
            f"ABI {ABI_VERSION} wants a 32-bit memory that is not shared",
        )
    results: dict[str, str | None] = {}
    for export, (params, want) in _SIGNATURES.items():
        ty = exports.get(export)
        if ty is None:
            continue
        got = (
            (tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))
            if isinstance(ty, wasmtime.FuncType)
            else None
        )
        if got != (params, want):
            shown = _signature(*got) if got else "something that is not a function"
            raise WasmError(
                "abi",
                f"{name} exports {export} as {shown}; ABI {ABI_VERSION} wants "
                f"{_signature(params, want)}",
            )
        results[export] = want[0] if want else None
    return results


class _Active(threading.local):
    """The instance running Wasm on this thread: the one whose imports are called."""

    instance: Instance | None = None


_active = _Active()


def _import_publish(ctx: Any, tp: int, tl: int, pp: int, pl: int) -> None:
    instance = _active.instance
    assert instance is not None  # imports run only inside a call, see Instance._entered
    topic, payload = instance._read(ctx, (tp, tl), (pp, pl))
    publish_checked(instance, _utf8(topic, "publish topic"), len(topic), payload)


def publish_checked(instance: Instance, topic_text: str, topic_len: int, payload: bytes) -> None:
    """A module's ``publish`` (either kind of module): checked, counted and held in the
    running call's outbox (``topic_len``: the topic's bytes)."""
    # The topic first (one of the node's own, or over the agent's max_topics: an ABI
    # error like the others, at the publish): a refused publish is not walked or counted.
    if topic_text.startswith(RESERVED_PREFIX):
        raise WasmError(
            "abi",
            f"{instance.name} cannot publish on {topic_text[:100]!r}: topics starting with "
            f"{RESERVED_PREFIX!r} are published by Symbiont itself, not by modules (report "
            "health with the health import)",
        )
    try:
        instance.imports.check_topic(topic_text)
    except (TopicLimitError, ReservedTopicError) as exc:
        raise WasmError("abi", str(exc)) from None
    instance._outbox.count(topic_len + len(payload))
    _check_msgpack(payload, "publish payload")
    instance._outbox.hold(instance.imports.publish, topic_text, payload)


def _import_log(ctx: Any, level: int, p: int, n: int) -> None:
    instance = _active.instance
    assert instance is not None
    [data] = instance._read(ctx, (p, n), most=LOG_LINE_BYTES)
    text = _utf8(data, "log text", cut=len(data) < n & _U32)
    if instance._outbox.log_line():
        instance.imports.log(level, text + " [truncated]" if len(data) < n & _U32 else text)


def _import_health(ctx: Any, kp: int, kl: int, rp: int, rl: int) -> None:
    instance = _active.instance
    assert instance is not None
    # A reason is cut at HEALTH_REASON_BYTES (what a report holds, PROTOCOL.md §8.3): no
    # more is read. Both spans are checked whole first.
    kind, reason = instance._read(ctx, (kp, kl), (rp, rl), most=HEALTH_REASON_BYTES)
    health_checked(instance, kind, reason, len(reason) < rl & _U32)


def health_checked(instance: Instance, kind_bytes: bytes, reason: bytes, cut: bool) -> None:
    """A module's ``health`` report (either kind of module): checked, counted and held in
    the running call's outbox; ``reason`` at most :data:`HEALTH_REASON_BYTES`, ``cut``
    when it was longer."""
    instance._outbox.count(len(kind_bytes) + len(reason))
    kind = _utf8(kind_bytes, "health kind")
    if kind not in HEALTH_KINDS:
        raise WasmError(
            "abi", f"health kind {kind[:32]!r} is not one of {', '.join(sorted(HEALTH_KINDS))}"
        )
    if cut:  # what is left, and the mark, within HEALTH_REASON_BYTES
        reason = reason[: HEALTH_REASON_BYTES - len(_TRUNCATED)]
    text = _utf8(reason, "health reason", cut=cut)
    instance._outbox.hold(instance.imports.health, kind, text + _TRUNCATED if cut else text)


def _utf8(data: bytes, what: str, cut: bool = False) -> str:
    """``data`` decoded, or an ``abi`` error; ``cut``: the end of a longer text, where a
    character may be cut short."""
    try:
        if cut:
            return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise WasmError("abi", f"{what} is not UTF-8") from None


def _import_now_ms(_ctx: Any) -> int:
    return time.time_ns() // 1_000_000


def _denied(capability: str, function: str) -> Callable[..., Any]:
    def denied(*_args: Any) -> Any:
        raise _not_granted(capability, function)

    return denied


def _waits(function: str) -> Callable[..., Any]:
    def waits(*_args: Any) -> Any:
        name = _active.instance.name if _active.instance else "a module"
        raise WasmError(
            "capability",
            f"{name} called {_WASI}.{function}, which no grant allows: it waits (sleep, "
            "poll), and a call may not wait past its deadline",
        )

    return waits


def _not_granted(capability: str, function: str) -> WasmError:
    name = _active.instance.name if _active.instance else "a module"
    return WasmError(
        "capability",
        f"{name} called {_WASI}.{function}, but the capability {capability!r} "
        f"was not granted (grant it in the manifest: grants: [{capability!r}])",
    )


def _import_fd_write(ctx: Any, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
    """WASI's ``fd_write``, the host's own: fds 1 and 2 (stdout, stderr) write log lines of
    the agent when ``stdout`` is granted, and fail the call as any ungranted capability
    does when it is not; no other fd is open (EBADF). Its memory is read and written with
    the checks of every import, and the bytes go out on the calling thread, in order."""
    instance = _active.instance
    assert instance is not None
    if fd not in (1, 2):
        return _EBADF
    if "stdout" not in instance.limits.grants:
        stream = ("stdout", "stderr")[fd - 1]
        raise _not_granted("stdout", f"{_FD_WRITE} on fd {fd} ({stream})")
    count = iovs_len & _U32
    if count > _IOV_MAX:
        return _EINVAL
    # An iovec is (buf: u32, buf_len: u32): at most LOG_LINE_BYTES of them are taken.
    [table] = instance._read(ctx, (iovs, count * 8))
    chunks, room = [], LOG_LINE_BYTES
    for buf, buf_len in struct.iter_unpack("<II", table):
        [chunk] = instance._read(ctx, (buf, buf_len), most=room)
        chunks.append(chunk)
        room -= len(chunk)
        if not room:
            break
    data = b"".join(chunks)
    instance._write(nwritten, struct.pack("<I", len(data)), ctx)
    if data and instance._outbox.log_line():
        instance.imports.stdout(data)
    return 0


class _Outbox:
    """What one call into a module makes that is held until it succeeds: its events
    (``publish`` and ``health``), counted against the limits ``publishes`` and
    ``publish_bytes``; and the count of its log lines (:data:`LOG_LINES_PER_CALL`)."""

    def __init__(self, instance: Instance) -> None:
        self._instance = instance
        self._events: list[tuple[Callable[[str, Any], None], str, Any]] = []
        self._bytes = 0
        self._lines = 0

    def count(self, size: int) -> None:
        """Count one more event of ``size`` bytes; a ``limit`` error past the limits."""
        limits, name = self._instance.limits, self._instance.name
        self._bytes += size
        if len(self._events) >= limits.publishes:
            raise WasmError(
                "limit",
                f"{name} made more than {limits.publishes} publishes in one call "
                "(limit: publishes)",
            )
        if self._bytes > limits.publish_bytes:
            raise WasmError(
                "limit",
                f"{name} published more than {limits.publish_bytes} bytes in one call "
                "(limit: publish_bytes)",
            )

    def hold(self, send: Callable[[str, Any], None], a: str, b: Any) -> None:
        """Keep ``send(a, b)`` for :meth:`send` (the caller counted it first)."""
        self._events.append((send, a, b))

    def log_line(self) -> bool:
        """Whether one more log line may go out in this call."""
        self._lines += 1
        return self._lines <= LOG_LINES_PER_CALL

    def close(self) -> None:
        """The call is over: say how many log lines were dropped, if any."""
        if self._lines > LOG_LINES_PER_CALL:
            self._instance.imports.log(
                2,
                f"{self._instance.name}: {self._lines - LOG_LINES_PER_CALL} more log lines "
                f"dropped (at most {LOG_LINES_PER_CALL} per call)",
            )

    def send(self) -> None:
        """The call succeeded: send its events in the order they were made."""
        events, self._events = self._events, []
        for send, a, b in events:
            send(a, b)


class _Linked:
    """What the instances of one module with the same fuel and grants share: its checked
    exports, and one linker whose imports act for the instance running on the thread
    (each instance still has a store, a memory and limits of its own)."""

    def __init__(
        self,
        runtime: Runtime,
        module: wasmtime.Module,
        fuel: bool,
        grants: frozenset[str],
        name: str,
    ) -> None:
        from ._wasmcall import define_import  # noqa: PLC0415 - it imports wasmtime

        w = runtime._wasmtime
        self.module = module
        self.results = _check_exports(module, name)
        self.wasi = any(i.module == _WASI for i in module.imports)
        linker = w.Linker(runtime.engine(fuel))
        linker.allow_shadowing = True
        self._keep: list[Any] = []  # the callbacks, alive as long as the linker

        def define(module_name: str, field: str, ty: Any, fn: Callable[..., Any]) -> None:
            define_import(
                linker, module_name, field, ty, fn, direct=runtime.direct, keep=self._keep
            )

        i32, i64 = w.ValType.i32(), w.ValType.i64()
        define("symbiont", "publish", w.FuncType([i32, i32, i32, i32], []), _import_publish)
        define("symbiont", "log", w.FuncType([i32, i32, i32], []), _import_log)
        define("symbiont", "health", w.FuncType([i32, i32, i32, i32], []), _import_health)
        define("symbiont", "now_ms", w.FuncType([], [i64]), _import_now_ms)
        if self.wasi:
            linker.define_wasi()
            # Capabilities that were not granted: the function is there (so the module
            # loads) but calling it fails the call with a clear error.
            for capability, functions in _CAPABILITY_FUNCTIONS.items():
                if capability in grants:
                    continue
                for imp in module.imports:
                    if imp.module == _WASI and imp.name in functions:
                        define(_WASI, imp.name, imp.type, _denied(capability, imp.name))
            for imp in module.imports:
                if imp.module == _WASI and imp.name in _WAITING_FUNCTIONS:
                    define(_WASI, imp.name, imp.type, _waits(imp.name))
            fd_write = w.FuncType([i32, i32, i32, i32], [i32])
            define(_WASI, _FD_WRITE, fd_write, _import_fd_write)
        self.linker = linker


def _last_line(exc: BaseException) -> str:
    """wasmtime's text: a backtrace or context, then the reason on its last line."""
    lines = [line.strip() for line in str(getattr(exc, "message", exc)).splitlines()]
    return next((line for line in reversed(lines) if line), type(exc).__name__)


def _check_msgpack(data: bytes, what: str) -> None:
    """An ``abi`` error unless ``data`` is one well-formed msgpack value (the bytes of a str
    are not decoded). A big one is walked without being built (``Unpacker.skip``):
    decoded, 16 MB of empty maps would take over a gigabyte and seconds of the host's,
    past any deadline; a small one is decoded (raw: the same check), which is faster."""
    import msgpack  # noqa: PLC0415

    try:
        if len(data) <= _DECODED_BYTES:
            msgpack.unpackb(data, raw=True, strict_map_key=False)
            return
        unpacker = msgpack.Unpacker(max_buffer_size=len(data))
        unpacker.feed(data)
        unpacker.skip()
        extra = len(data) - unpacker.tell()
    except msgpack.ExtraData as exc:
        extra = len(exc.extra)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the module's fault
        reason = str(exc) or type(exc).__name__
        raise WasmError("abi", f"{what} is not one msgpack value: {reason}") from None
    if extra:
        raise WasmError("abi", f"{what} is not one msgpack value: {extra} bytes after it")


# Payloads up to this size are decoded to check them (at most a few hundred KB in objects).
_DECODED_BYTES = 4096

# Its public home (symbiont.wasm): the name tracebacks and reprs give (set after
# @dataclass, which looks its module up while it builds the class).
Imports.__module__ = "symbiont.wasm"
