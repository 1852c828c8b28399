"""Wasm modules in a sandbox: the runtime under Wasm agents and plug-ins (docs/WASM_ABI.md).

A :class:`Runtime` owns the wasmtime engines, the compiled-module cache and the epoch
ticker that enforces call deadlines; a host has one. :meth:`Runtime.instantiate` gives an
:class:`Instance`: one module, one store, its own memory cap, deadline, fuel and WASI
grants. Everything that can go wrong inside a call (a trap, a deadline, running out of
fuel, hitting the memory cap, breaking the ABI, using a capability that was not granted)
comes out as a :class:`WasmError` with a ``kind``; the instance is then rebuilt before its
next call, so one bad message never poisons the next. What a call publishes goes out only
when it succeeds: a failed call leaves no partial output.

wasmtime is imported on first use: a host that runs no Wasm never loads it. It is an
extra of the package (``pip install 'symbiont[wasm]'``); without it, a :class:`Runtime`
raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import functools
import hashlib
import logging
import math
import os
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _contract
from ._agent import HEALTH_REASON_BYTES, RESERVED_PREFIX, Agent
from ._errors import ReservedTopicError, TopicLimitError
from ._terms import packb as _packb

if TYPE_CHECKING:  # pragma: no cover - typing only
    import wasmtime

__all__ = [
    "ABI_VERSION",
    "GRANTS",
    "HEALTH_KINDS",
    "Imports",
    "Instance",
    "Limits",
    "Runtime",
    "WasmAgent",
    "WasmError",
    "WasmPlugin",
    "default_runtime",
    "is_component",
]

#: The ABI this runtime speaks; a module says which one it implements by exporting
#: ``symbiont_abi_version``.
ABI_VERSION = 1
#: The capabilities a manifest may grant to a Wasm agent (all are off by default).
GRANTS = _contract.WASM_GRANTS
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


class WasmError(Exception):
    """A call into a Wasm module failed; the host keeps serving.

    ``kind`` is one of ``"load"``, ``"abi"``, ``"trap"``, ``"deadline"``, ``"fuel"``,
    ``"memory"``, ``"limit"``, ``"capability"`` or, from a component, ``"error"`` (the
    agent's code raised).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


def _limit_default(name: str) -> int:
    """The contract's default for limit ``name`` (one that has a default)."""
    value = _contract.WASM_LIMITS[name]
    assert value is not None, name
    return value


@dataclass(frozen=True)
class Limits:
    """The sandbox of one instance.

    deadline_ms:
        Wall-clock budget of one call (one message: its allocation, the handler and
        ``symbiont_state``); past it the call is interrupted (epoch interruption), within
        a tick of the runtime (5 ms by default).
    fuel:
        If set, the number of wasm instructions (roughly) one call may execute.
    memory_bytes:
        The most bytes one linear memory of the instance may have.
    table_elements:
        The most elements one table of the instance may have (8 bytes each in the host).
    instances, tables, memories:
        The most module instances, tables and linear memories the instance's store may
        create. A Symbiont module is one instance with one memory, and at most one table
        (C, Rust: the indirect-call table); multi-memory modules need ``memories`` raised.
    publishes:
        The most events (``publish`` and ``health`` imports) one call may make.
    publish_bytes:
        The most bytes (topics and payloads, kinds and reasons) those events may carry.
    grants:
        WASI capabilities: any of :data:`GRANTS`.

    A refused ``memory.grow`` or ``table.grow`` returns -1 to the module, as Wasm says; the
    caps keep any one grow small enough to end well within a deadline (a single
    instruction is not interrupted).
    """

    # The defaults are the contract's (symbiont._contract, Symbiont.Contract).
    deadline_ms: int = _limit_default("deadline_ms")
    fuel: int | None = _contract.WASM_LIMITS["fuel"]
    memory_bytes: int = _limit_default("memory_bytes")
    table_elements: int = _limit_default("table_elements")
    instances: int = _limit_default("instances")
    tables: int = _limit_default("tables")
    memories: int = _limit_default("memories")
    publishes: int = _limit_default("publishes")
    publish_bytes: int = _limit_default("publish_bytes")
    grants: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in _INT_LIMITS:
            if name != "fuel":
                _positive_int(name, getattr(self, name))
        if self.fuel is not None:
            _positive_int("fuel", self.fuel)
        grants = frozenset(self.grants)
        unknown = sorted(grants - GRANTS)
        if unknown:
            raise ValueError(
                f"grants: {', '.join(map(repr, unknown))} is not a capability "
                f"(allowed: {', '.join(sorted(GRANTS))})"
            )
        object.__setattr__(self, "grants", grants)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Limits:
        """Limits from a manifest map (keys as the fields; ``grants`` a list)."""
        config = dict(config or {})
        unknown = sorted(set(config) - {*_INT_LIMITS, "grants"})
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a Wasm limit (allowed: {', '.join(_INT_LIMITS)}, grants)"
            )
        if "grants" in config:
            grants = config["grants"]
            if not isinstance(grants, (list, tuple, set, frozenset)):
                raise ValueError(f"grants: expected a list of capabilities, got {grants!r}")
            config["grants"] = frozenset(grants)
        return cls(**config)


# The integer limits, in the order the docs list them (all but fuel have a default).
_INT_LIMITS = tuple(_contract.WASM_LIMITS)

_MAX_LIMIT = _contract.WASM_MAX_LIMIT  # wasmtime takes the limits as signed 64-bit integers


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_LIMIT:
        raise ValueError(f"{name}: expected a positive integer up to 2**63 - 1, got {value!r}")


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


class Runtime:
    """Engines, the module cache and the epoch ticker, shared by all instances of a host.

    cache_dir:
        Where compiled modules are kept (``Module.serialize``), keyed by the module's
        SHA-256, the wasmtime version and the engine configuration; ``None`` turns the
        cache off. Default: ``$SYMBIONT_WASM_CACHE``, else ``~/.cache/symbiont/wasm``.
        A compiled module is native code: the cache is used only while the directory is
        the user's alone (made with mode 700; owned by the user, no one else may write to
        it) and each file in it too, else modules are compiled and the reason is logged
        once (:attr:`cache_refused`).
    tick_ms:
        The epoch period: deadlines are enforced within one tick.
    direct:
        Call instances through wasmtime's C API (``symbiont._wasmcall``), several times
        faster than wasmtime-py's public API, which is used when this is False or when
        this wasmtime-py lacks what the direct path needs (:attr:`direct` says which).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = "",
        tick_ms: int = 5,
        *,
        direct: bool = True,
    ) -> None:
        wasmtime = _import_wasmtime()
        from . import _wasmcall  # noqa: PLC0415 - it imports wasmtime

        self._wasmtime = wasmtime
        if cache_dir == "":
            cache_dir = os.environ.get("SYMBIONT_WASM_CACHE") or (
                Path.home() / ".cache" / "symbiont" / "wasm"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.tick_ms = tick_ms
        #: Whether instances are called through wasmtime's C API (symbiont._wasmcall):
        #: asked for and supported by this wasmtime-py.
        self.direct = bool(direct) and _wasmcall.DIRECT
        self._engines: dict[bool, Any] = {}  # wasmtime.Engine
        # Compiled modules by the SHA-256 of their source (as read: WAT or binary) and fuel.
        self._modules: dict[tuple[bytes, bool], Any] = {}  # wasmtime.Module or Component
        # The SHA-256 of each file loaded, by path, with its stat when it was read.
        self._files: dict[str, tuple[tuple[int, ...], bytes]] = {}
        # One linker per module, fuel and grants, shared by all its instances.
        # _Linked, or _component.ComponentLinked for a component.
        self._linkers: dict[tuple[Any, bool, frozenset[str]], Any] = {}
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        #: Counters for tests and benchmarks: compiled, loaded from cache, cache misses.
        self.stats = {"compiled": 0, "cached": 0}
        #: Why the cache directory is not used, if it is not (see ``cache_dir``).
        self.cache_refused: str | None = None

    # -- engines and modules ---------------------------------------------------------

    def engine(self, fuel: bool) -> wasmtime.Engine:
        """The engine for instances with (``fuel=True``) or without fuel metering."""
        with self._lock:
            engine = self._engines.get(fuel)
            if engine is None:
                config = self._wasmtime.Config()
                config.epoch_interruption = True
                config.consume_fuel = fuel
                engine = self._engines[fuel] = self._wasmtime.Engine(config)
            self._start_ticker()
            return engine

    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return
        stop = self._stop = threading.Event()

        def tick() -> None:
            period = self.tick_ms / 1000
            while not stop.wait(period):
                for engine in list(self._engines.values()):
                    engine.increment_epoch()

        self._ticker = threading.Thread(target=tick, name="symbiont-wasm-epoch", daemon=True)
        self._ticker.start()
        # The thread must be gone before the interpreter frees the engines at exit, and
        # what the runtime holds freed while wasmtime's module can still free it.
        atexit.register(self._at_exit)

    def close(self) -> None:
        """Stop the epoch ticker (instances can no longer be interrupted). Idempotent."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None

    def _at_exit(self) -> None:
        self.close()
        self._linkers.clear()
        self._modules.clear()
        self._engines.clear()
        import gc  # noqa: PLC0415

        gc.collect()

    def fingerprint(self, fuel: bool) -> str:
        """What a compiled module depends on besides its bytes."""
        from importlib.metadata import version  # noqa: PLC0415

        return f"wasmtime-{version('wasmtime')}-epoch-fuel{int(fuel)}"

    def load(self, source: str | os.PathLike[str] | bytes, fuel: bool = False) -> wasmtime.Module:
        """Compile a module (``.wasm`` or ``.wat`` path, or bytes), through the cache.

        A module already loaded by this runtime (the same bytes) is not compiled or read
        from the disk cache again: thousands of agents of one module share it.
        """
        if isinstance(source, (bytes, bytearray)):
            data, name = bytes(source), "<bytes>"
        else:
            name = str(source)
            # A file loaded before and not changed since (the same inode, size, mtime and
            # ctime) is not read and hashed again: a component is some 20 MB.
            try:
                st = os.stat(source)
            except OSError as exc:
                raise WasmError("load", f"cannot read {name}: {exc.strerror}") from None
            seen = self._files.get(name)
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if seen is not None and seen[0] == signature:
                module = self._modules.get((seen[1], fuel))
                if module is not None:
                    return module
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise WasmError("load", f"cannot read {name}: {exc.strerror}") from None
        digest_bytes = hashlib.sha256(data).digest()
        if not isinstance(source, (bytes, bytearray)):
            self._files[name] = (signature, digest_bytes)
        key = (digest_bytes, fuel)
        module = self._modules.get(key)
        if module is not None:
            return module
        if data[:4] != b"\0asm":
            try:
                data = self._wasmtime.wat2wasm(data.decode("utf-8"))
            except (UnicodeDecodeError, self._wasmtime.WasmtimeError) as exc:
                raise WasmError(
                    "load", f"{name} is neither a Wasm binary nor WAT text: {exc}"
                ) from None
        digest = hashlib.sha256(data).hexdigest()
        module = self._modules[key] = self._compile(data, digest, fuel, name)
        return module

    def _compile(self, data: bytes, digest: str, fuel: bool, name: str) -> Any:
        engine = self.engine(fuel)
        path = self._cache_file(digest, fuel)
        # A component (the Component Model's binary: layer 1) or a core module.
        kind = self._wasmtime.component.Component if is_component(data) else self._wasmtime.Module
        if path is not None:
            # Mapped (deserialize_file: 2 ms for a 36 MB component, against 75 to read and
            # deserialize it), but from a copy of its own, unlinked once mapped: a file
            # changed in place under a mapping (a `cp` over it) kills the process with
            # SIGBUS, and nothing can change the copy.
            try:
                module = _deserialize_copy(kind, engine, path)
                self.stats["cached"] += 1
                return module
            except (OSError, self._wasmtime.WasmtimeError):
                pass  # missing, unreadable, stale, corrupt or not ours: compile, (over)write
        try:
            module = kind(engine, data)
        except self._wasmtime.WasmtimeError as exc:
            raise WasmError("load", f"{name} does not compile: {exc}") from None
        self.stats["compiled"] += 1
        if path is not None:
            with contextlib.suppress(OSError):  # a cache that cannot be written is no cache
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(module.serialize())
                    os.replace(tmp, path)
                except OSError:
                    # A full disk: what was written goes, not to fill it further each time.
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        return module

    def _cache_file(self, digest: str, fuel: bool) -> Path | None:
        """The cache file of a module, or None: no cache, or a directory that is not the
        user's alone (Module.deserialize runs what it reads: a file someone else could
        write is code they could run here)."""
        if self.cache_dir is None or self.cache_refused is not None:
            return None
        with contextlib.suppress(OSError):  # not made: os.stat says why below
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            why = _not_private(os.stat(self.cache_dir))
        except OSError as exc:
            why = exc.strerror or str(exc)
        if why is not None:
            self.cache_refused = why
            _log.warning("the Wasm module cache %s is not used: %s", self.cache_dir, why)
            return None
        return self.cache_dir / f"{digest}-{self.fingerprint(fuel)}.cwasm"

    # -- instances -------------------------------------------------------------------

    def instantiate(
        self,
        source: str | os.PathLike[str] | bytes,
        limits: Limits | None = None,
        imports: Imports | None = None,
        name: str = "wasm",
        config: Any = None,
    ) -> Instance:
        """A sandboxed instance of the module at ``source``; see :class:`Instance`."""
        limits = limits or Limits()
        fuel = limits.fuel is not None
        module = self.load(source, fuel=fuel)
        key = (module, fuel, limits.grants)
        linked = self._linkers.get(key)
        if isinstance(module, self._wasmtime.component.Component):
            from ._component import ComponentInstance, ComponentLinked  # noqa: PLC0415

            if linked is None:
                linked = self._linkers[key] = ComponentLinked(self, module, fuel, limits.grants)
            return ComponentInstance(self, linked, limits, imports or Imports(), name, config, fuel)
        if linked is None:
            linked = self._linkers[key] = _Linked(self, module, fuel, limits.grants, name)
        return Instance(self, linked, limits, imports or Imports(), name, config, fuel)


def is_component(data: bytes) -> bool:
    """Whether ``data`` is a Wasm component (the Component Model's binary format, layer 1)
    rather than a core module (layer 0): the two share the magic ``\\0asm`` and differ in
    the layer, bytes 6-7 of the header."""
    return data[:4] == b"\0asm" and data[6:8] == b"\x01\x00"


# The ABI's exports and their types (docs/WASM_ABI.md §1); `_initialize` is a WASI
# reactor's. Checked once per module: the calls are made without checking types again.
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


class Instance:
    """One module instance in its own store, called through the ABI of docs/WASM_ABI.md.

    The instance is rebuilt (``symbiont_init`` again, then ``symbiont_migrate`` with the
    last good state when the module exports ``symbiont_state``) after a failed call.
    """

    def __init__(
        self,
        runtime: Runtime,
        linked: _Linked,
        limits: Limits,
        imports: Imports,
        name: str,
        config: Any,
        fuel: bool,
    ) -> None:
        self.runtime = runtime
        self.engine = runtime.engine(fuel)
        self.module = linked.module
        self.limits = limits
        self.imports = imports
        self.name = name
        self.config = config
        self._w = runtime._wasmtime
        self._linked = linked
        self._exports = linked.results
        self._has_state = "symbiont_state" in linked.results
        # The next tick may come at once: one more makes the budget at least the
        # deadline, and at most a tick over it.
        self._ticks = math.ceil(limits.deadline_ms / runtime.tick_ms) + 1
        self._fuel = limits.fuel
        self._calls: Any = None
        from ._wasmcall import OutOfBounds  # noqa: PLC0415 - it imports wasmtime

        self._OutOfBounds = OutOfBounds
        self._last_state: bytes | None = None
        self._broken = True
        self._outbox: _Outbox = _Outbox(self)  # that of the running call (see _entered)
        with self._entered() as outbox:
            self._rebuild()
        self._send(outbox)

    # -- public ----------------------------------------------------------------------

    def call(self, topic: str, payload: bytes) -> bytes:
        """Run ``symbiont_handle`` on ``[topic, payload]``; returns its msgpack reply.

        One deadline (and one fuel budget) covers the whole message: the allocation, the
        handler and, for a module with a state, ``symbiont_state``, whose result is kept
        as :attr:`last_state`. What the module publishes goes out when the call succeeds;
        a failed call (a :class:`WasmError`, or an import's own exception) sends none of it.
        """
        message = b"\x92" + _packb(topic) + payload
        # _entered, spelled out: this is the path of every message.
        previous, _active.instance = _active.instance, self
        self._outbox = outbox = _Outbox(self)
        try:
            if self._broken:
                self._rebuild()
            self._calls.arm(self._ticks, self._fuel)
            out = self._invoke("symbiont_handle", message, result=True)
            state = self._last_state
            if self._has_state:
                state = self._invoke("symbiont_state", None, result=True)
        except BaseException:  # an import's own exception too: the instance was cut short
            self._broken = True
            raise
        finally:
            _active.instance = previous
            outbox.close()
        self._send(outbox)
        self._last_state = state
        return out

    @property
    def last_state(self) -> bytes | None:
        """The state after the last successful message (or migration), if the module
        exports ``symbiont_state``."""
        return self._last_state

    def state(self) -> bytes | None:
        """The module's state (msgpack), if it exports ``symbiont_state``."""
        if not self._has_state:
            return None
        with self._entered() as outbox:
            if self._broken:
                self._rebuild()
            self._calls.arm(self._ticks, self._fuel)
            state = self._invoke("symbiont_state", None, result=True)
        self._send(outbox)
        return state

    def migrate(self, state: bytes) -> None:
        """Hand an older version's state to this instance (``symbiont_migrate``)."""
        if "symbiont_migrate" not in self._exports:
            return
        with self._entered() as outbox:
            if self._broken:
                self._rebuild()
            self._calls.arm(self._ticks, self._fuel)
            self._invoke("symbiont_migrate", state, result=False)
        self._send(outbox)
        self._last_state = state

    def memory_size(self) -> int:
        """The current size of the instance's linear memory, in bytes (0 before it has one)."""
        return self._calls.size() if self._calls is not None else 0

    # -- building --------------------------------------------------------------------

    def _rebuild(self) -> None:
        """A new store and instance; the caller is in :meth:`_entered`."""
        from ._wasmcall import DirectCalls, PublicCalls  # noqa: PLC0415

        w, limits = self._w, self.limits
        store = w.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.table_elements,
            instances=limits.instances,
            tables=limits.tables,
            memories=limits.memories,
        )
        if self._linked.wasi:
            self._set_wasi(store)
        self._store = store
        self._calls = None
        self._broken = True
        store.set_epoch_deadline(self._ticks)
        if self._fuel is not None:
            store.set_fuel(self._fuel)
        try:
            instance = self._linked.linker.instantiate(store, self.module)
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            raise WasmError(
                "load",
                f"{self.name} cannot be instantiated: {_last_line(exc)} (its limits: "
                f"memory_bytes {limits.memory_bytes}, table_elements {limits.table_elements}, "
                f"instances {limits.instances}, tables {limits.tables}, "
                f"memories {limits.memories})",
            ) from None
        exports = instance.exports(store)
        funcs = {export: exports[export] for export in self._exports}
        calls = DirectCalls if self.runtime.direct else PublicCalls
        self._calls = calls(store, exports["memory"], funcs, self._exports)
        if "_initialize" in funcs:  # WASI reactors (clang -mexec-model=reactor)
            self._guarded("_initialize", lambda: self._calls.call("_initialize"))
        version = self._guarded(
            "symbiont_abi_version", lambda: self._calls.call("symbiont_abi_version")
        )
        if version != ABI_VERSION:
            raise WasmError(
                "abi", f"{self.name} implements ABI {version}; this runtime speaks {ABI_VERSION}"
            )
        self._broken = False
        if "symbiont_init" in self._exports:
            self._invoke("symbiont_init", _packb(self.config), result=False)
        if self._last_state is not None:
            self.migrate(self._last_state)

    def _set_wasi(self, store: wasmtime.Store) -> None:
        # Nothing preopened or inherited; stdout and stderr are _import_fd_write's. (Not
        # WasiConfig.stdout_custom: wasmtime-py calls it later, on a thread of wasmtime's,
        # which aborts the process if it still runs when the interpreter exits.)
        store.set_wasi(self._w.WasiConfig())

    # -- calling ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _entered(self) -> Iterator[_Outbox]:
        """Run Wasm as this instance: its imports act for it (:data:`_active`), under a
        new deadline and fuel (armed by the caller), and what it publishes is held in the
        outbox given, for :meth:`_send` once the block is over. Any failure marks the
        instance broken, to be rebuilt before its next call; the outbox is then dropped.
        Inside a call (a rebuild, a migration), the call's own outbox is used. (:meth:`call`
        does the same, spelled out.)"""
        if _active.instance is self:
            yield self._outbox
            return
        previous, _active.instance = _active.instance, self
        self._outbox = outbox = _Outbox(self)
        try:
            yield outbox
        except BaseException:  # an import's own exception too: the instance was cut short
            self._broken = True
            raise
        finally:
            _active.instance = previous
            outbox.close()

    def _send(self, outbox: _Outbox) -> None:
        """Send what a call that succeeded published (unless it is a part of a call, which
        sends it when it is over); if sending fails (an import's own exception), the call
        failed after all."""
        if _active.instance is self:
            return
        try:
            outbox.send()
        except BaseException:
            self._broken = True
            raise

    def _guarded(self, export: str, run: Callable[[], Any]) -> Any:
        w = self._w
        try:
            return run()
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            raise WasmError("trap", f"{self.name}.{export}: {exc}") from None

    def _invoke(self, export: str, data: bytes | None, result: bool) -> bytes:
        """Call ``export`` (with ``data`` written through ``symbiont_alloc``); the caller
        armed the deadline and made this the active instance."""
        w, calls = self._w, self._calls
        try:
            if data is None:
                out = calls.call(export)
            else:
                n = len(data)
                if n > min(self.limits.memory_bytes, _U32):
                    raise WasmError(
                        "memory",
                        f"{self.name}.{export}: {n} bytes of input cannot fit in its memory "
                        f"cap of {self.limits.memory_bytes} bytes",
                    )
                ptr = calls.call("symbiont_alloc", n) & _U32
                if ptr == 0:
                    raise WasmError("memory", f"symbiont_alloc({n}) returned 0 (out of memory?)")
                try:
                    calls.write(ptr, data)
                except self._OutOfBounds as exc:
                    raise WasmError(
                        "abi",
                        f"symbiont_alloc({n}) gave {ptr}, but {n} bytes do not fit in "
                        f"{exc.size} bytes",
                    ) from None
                out = calls.call(export, ptr, n)
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            raise WasmError("trap", f"{self.name}.{export}: {exc}") from None
        if not result:
            return b""
        try:
            span: bytes = calls.read_spans((((out >> 32) & _U32, out & _U32),))[0]
            return span
        except self._OutOfBounds as exc:
            raise WasmError("abi", f"{self.name} pointed at {exc}") from None

    def _classify(self, exc: Any) -> WasmError:
        code = getattr(exc, "trap_code", None)
        codes = self._w.TrapCode
        message = _last_line(exc).removeprefix("wasm trap: ")
        if code == codes.INTERRUPT:
            return WasmError(
                "deadline", f"{self.name} ran past its {self.limits.deadline_ms} ms deadline"
            )
        if code == codes.OUT_OF_FUEL:
            return WasmError("fuel", f"{self.name} used up its {self.limits.fuel} units of fuel")
        near_cap = self.memory_size() + 65536 > self.limits.memory_bytes
        if near_cap:
            return WasmError(
                "memory",
                f"{self.name} hit its memory cap of {self.limits.memory_bytes} bytes ({message})",
            )
        return WasmError("trap", f"{self.name} trapped: {message}")

    def _read(self, ctx: Any, *spans: tuple[int, int], most: int = _U32) -> list[bytes]:
        """The bytes of each ``(ptr, length)`` (i32s, read as unsigned), or its first
        ``most``, bounds-checked against the memory's current size (``ctx``: an import's
        caller)."""
        try:
            read: list[bytes] = self._calls.read_spans(spans, ctx, most)
            return read
        except self._OutOfBounds as exc:
            raise WasmError("abi", f"{self.name} pointed at {exc}") from None

    def _write(self, ptr: int, data: bytes, ctx: Any = None) -> None:
        """Write ``data`` at ``ptr`` (an i32, read as unsigned), bounds-checked against the
        memory's current size (``ctx``: an import's caller)."""
        try:
            self._calls.write(ptr, data, ctx)
        except self._OutOfBounds as exc:
            raise WasmError("abi", f"{self.name} pointed at {exc}") from None


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


def _not_private(st: os.stat_result) -> str | None:
    """Why a file or directory with this stat is not the user's alone, or None."""
    if st.st_uid != os.getuid():
        return f"it belongs to user {st.st_uid}, not to this process's ({os.getuid()})"
    if st.st_mode & 0o022:
        return f"other users can write to it (mode {st.st_mode & 0o7777:o})"
    return None


def _deserialize_copy(kind: Any, engine: Any, path: Path) -> Any:
    """``kind.deserialize_file`` of a private copy of ``path`` (a regular file that is the
    user's alone, else OSError), made beside it and unlinked once mapped."""
    _check_private(path)
    fd, copy = tempfile.mkstemp(dir=path.parent, suffix=".map")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            sent = 0
            while sent < size:
                n = os.copy_file_range(src.fileno(), out.fileno(), size - sent)
                if n == 0:
                    break
                sent += n
        return kind.deserialize_file(engine, copy)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(copy)


def _check_private(path: Path) -> None:
    """Nothing when ``path`` is a regular file that is the user's alone (a link is not
    followed), else OSError."""
    st = os.lstat(path)
    why = "it is not a regular file" if not stat.S_ISREG(st.st_mode) else _not_private(st)
    if why is not None:
        raise PermissionError(f"{path} is not used: {why}")


_log = logging.getLogger("symbiont.wasm")

_default: Runtime | None = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The host's shared :class:`Runtime`, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Runtime()
        return _default


class WasmPlugin:
    """A Wasm module a Python agent calls like a function (``self.wasm("pricing")``).

    Declared in the agent's config under ``"wasm"``: ``{"pricing": "priv/wasm/pricing.wasm"}``
    or, with limits, ``{"pricing": {"path": ..., "deadline_ms": 50, "fuel": 10_000_000,
    "memory_bytes": 16_777_216, "grants": ["clock"], "config": 1.2}}``. Relative paths are
    relative to the host's working directory (the other limits of :class:`Limits` may be
    given too). What the module publishes goes out as the agent's events when the call
    succeeds; its log lines and stdout go to the agent's log.
    """

    def __init__(self, agent: Any, name: str, spec: Any) -> None:
        if isinstance(spec, (str, os.PathLike)):
            spec = {"path": spec}
        if not isinstance(spec, dict) or "path" not in spec:
            raise ValueError(
                f"agent {agent.name!r}: Wasm plug-in {name!r} must be a path or a map with "
                f'"path", got {spec!r}'
            )
        spec = dict(spec)
        path = spec.pop("path")
        plugin_config = spec.pop("config", None)
        try:
            limits = Limits.from_config(spec)
        except ValueError as exc:
            raise ValueError(f"agent {agent.name!r}: Wasm plug-in {name!r}: {exc}") from None
        self.name = name
        self._agent = agent
        imports = Imports.for_agent(
            agent, lambda kind, reason: agent.log.warning("%s reports %s: %s", name, kind, reason)
        )
        instance = default_runtime().instantiate(
            path, limits=limits, imports=imports, name=f"{agent.name}/{name}", config=plugin_config
        )
        if hasattr(instance, "timers"):  # a component (symbiont._component)
            raise ValueError(
                f"agent {agent.name!r}: Wasm plug-in {name!r} ({path}) is a component of the "
                "symbiont:agent world: a component is an agent (wasm: in the manifest), not a "
                "plug-in; a plug-in is a core module (docs/WASM_ABI.md)"
            )
        self.instance = instance

    def call(self, payload: Any, topic: str | None = None) -> Any:
        """Run the module on ``payload`` (as ``[topic, payload]``, topic the plug-in's name
        unless given) and return its decoded reply. Raises :class:`WasmError`."""
        from ._terms import unpackb  # noqa: PLC0415

        return unpackb(self.instance.call(topic or self.name, _packb(payload)))


class WasmAgent(Agent):
    """An agent whose logic is a Wasm module (``wasm:`` in the manifest).

    Its config, built by the owner from the manifest: ``"wasm"`` the module's path,
    ``"topics"`` the topics it consumes, ``"limits"`` its sandbox (:class:`Limits`) and
    ``"config"`` what ``symbiont_init`` receives. Each event's payload bytes go to the
    module as they were published; what it publishes goes out as this agent's events, once
    the call has succeeded.
    Its state (when it exports ``symbiont_state``) is checkpointed with each ack, so a
    restarted host resumes it through ``symbiont_migrate``.

    A failed call (trap, deadline, fuel, memory cap, limit, capability) fails that event (it
    goes to the dead letters, and nothing it published goes out) and reports health on
    ``symbiont.health``: ``degraded`` at the first failure, ``failing`` at the third in a
    row, ``healthy`` at the next success.
    """

    FAILING_AFTER = 3

    def on_start(self) -> None:
        """Load the module, then hand it the checkpointed state, if any.

        A component (``symbiont:agent``) keeps its state as the agent's own, decoded, as a
        native Python agent does: an agent moved from ``python:`` to ``wasm:`` (or back)
        keeps it. A core module's is ``{"wasm_state": <its bytes>}`` (WASM_ABI.md §4).
        """
        self.instance = self._instantiate(Imports.for_agent(self, self.health.report))
        self._failures = 0
        if self.is_component:
            self._symbiont_timers = self.instance.timers()  # type: ignore[attr-defined,misc]
            for timer in self._symbiont_timers:
                if hasattr(type(self), timer):
                    raise ValueError(
                        f"Wasm agent {self.name!r}: timer {timer!r} is the name of a "
                        "method of the host's agent; rename it"
                    )
                setattr(self, timer, functools.partial(self._tick, timer))
            if self.state not in (None, {}):
                self.instance.migrate(_packb(self.state))
            return
        saved = self.state.get("wasm_state") if isinstance(self.state, dict) else None
        if isinstance(saved, bytes):
            self.instance.migrate(saved)

    @property
    def is_component(self) -> bool:
        """Whether the agent runs a component (``symbiont:agent``) rather than a module."""
        return hasattr(self.instance, "timers")

    def probe(self) -> None:
        """Check that the module can start, without starting the agent: compile it (through
        the cache), check its exports against the ABI, instantiate it within its limits
        and run its ``_initialize`` and ``symbiont_init``, as :meth:`on_start` does, with
        imports that go nowhere (what it publishes, logs or reports is dropped), then drop
        the instance. Raises what :meth:`on_start` would: :class:`WasmError`, or
        ``ValueError`` for bad limits. ``symbiont._probe`` calls it before the agent runs.
        """
        self._instantiate(Imports())

    def _instantiate(self, imports: Imports) -> Instance:
        spec = self.config
        if not isinstance(spec.get("wasm"), str):
            raise ValueError(f"Wasm agent {self.name!r} needs its module path in config['wasm']")
        return default_runtime().instantiate(
            spec["wasm"],
            limits=Limits.from_config(spec.get("limits")),
            imports=imports,
            name=self.name,
            config=spec.get("config"),
        )

    def subscriptions(self) -> list[str]:
        """The topics of the manifest; for a component that the manifest gives none, its
        own (its ``@on`` topics). A core module does not declare its own."""
        topics = list(self.config.get("topics") or [])
        if not topics and self.is_component:
            topics = self.instance.subscriptions()  # type: ignore[attr-defined]
        return topics

    def handle_event(self, topic: str, payload: bytes) -> None:
        """Run the module on the event's bytes; see the class docstring for failures."""
        self._guarded_call(self.instance.call, topic, payload)

    def _tick(self, timer: str) -> None:
        """Run a component's timer ``timer`` (its ``@every``)."""
        self._guarded_call(self.instance.tick, timer)  # type: ignore[attr-defined]

    def _guarded_call(self, run: Callable[..., Any], *args: Any) -> None:
        try:
            run(*args)
        except WasmError as exc:
            self._failures += 1
            if self._failures == 1:
                self.health.degraded(str(exc), failures=self._failures)
            elif self._failures == self.FAILING_AFTER:
                self.health.failing(
                    f"{self._failures} failures in a row, the last: {exc}",
                    failures=self._failures,
                )
            raise
        if self._failures:
            self._failures = 0
            self.health.ok("a call succeeded again")
        state = self.instance.last_state
        if state is None:
            return
        if self.is_component:
            from ._terms import unpackb  # noqa: PLC0415

            try:
                self.state = unpackb(state)
            except Exception as exc:  # noqa: BLE001 - any decoding failure is the module's
                self.instance._broken = True
                raise WasmError(
                    "abi", f"{self.name}: its snapshot is not one msgpack value: {exc}"
                ) from None
        else:
            self.state = {"wasm_state": state}
