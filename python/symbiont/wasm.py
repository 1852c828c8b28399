"""Wasm modules in a sandbox: the runtime under Wasm agents and plug-ins (docs/WASM_ABI.md).

A :class:`Runtime` owns the wasmtime engines, the compiled-module cache and the epoch
ticker that enforces call deadlines; a host has one. :meth:`Runtime.instantiate` gives an
:class:`Instance`: one module, one store, its own memory cap, deadline, fuel and WASI
grants. Everything that can go wrong inside a call (a trap, a deadline, running out of
fuel, hitting the memory cap, breaking the ABI, using a capability that was not granted)
comes out as a :class:`WasmError` with a ``kind``; the instance is then rebuilt before its
next call, so one bad message never poisons the next.

wasmtime is imported on first use: a host that runs no Wasm never loads it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._agent import Agent

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
]

#: The ABI this runtime speaks; a module says which one it implements by exporting
#: ``symbiont_abi_version``.
ABI_VERSION = 1
#: The capabilities a manifest may grant to a Wasm agent (all are off by default).
GRANTS = frozenset({"clock", "random", "stdout"})
#: The health kinds a module may report through the ``health`` import.
HEALTH_KINDS = frozenset({"healthy", "degraded", "overloaded", "failing"})

_WASI = "wasi_snapshot_preview1"
# The WASI functions behind each capability; the rest of WASI is harmless without
# preopened directories, environment or arguments, and is always there.
_CAPABILITY_FUNCTIONS = {
    "clock": ("clock_time_get", "clock_res_get"),
    "random": ("random_get",),
}
_REQUIRED_EXPORTS = ("memory", "symbiont_abi_version", "symbiont_alloc", "symbiont_handle")


class WasmError(Exception):
    """A call into a Wasm module failed; the host keeps serving.

    ``kind`` is one of ``"load"``, ``"abi"``, ``"trap"``, ``"deadline"``, ``"fuel"``,
    ``"memory"`` or ``"capability"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


@dataclass(frozen=True)
class Limits:
    """The sandbox of one instance.

    deadline_ms:
        Wall-clock budget of one call; past it the call is interrupted (epoch
        interruption), within a tick of the runtime (5 ms by default).
    fuel:
        If set, the number of wasm instructions (roughly) one call may execute.
    memory_bytes:
        The most linear memory the instance may have.
    grants:
        WASI capabilities: any of :data:`GRANTS`.
    """

    deadline_ms: int = 100
    fuel: int | None = None
    memory_bytes: int = 64 * 1024 * 1024
    grants: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        _positive_int("deadline_ms", self.deadline_ms)
        _positive_int("memory_bytes", self.memory_bytes)
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
        unknown = sorted(set(config) - {"deadline_ms", "fuel", "memory_bytes", "grants"})
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a Wasm limit "
                "(allowed: deadline_ms, fuel, memory_bytes, grants)"
            )
        if "grants" in config:
            grants = config["grants"]
            if not isinstance(grants, (list, tuple, set, frozenset)):
                raise ValueError(f"grants: expected a list of capabilities, got {grants!r}")
            config["grants"] = frozenset(grants)
        return cls(**config)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


@dataclass
class Imports:
    """What a module can reach outside its sandbox: callbacks for its imports."""

    publish: Callable[[str, bytes], None] = lambda topic, payload: None
    log: Callable[[int, str], None] = lambda level, text: None
    health: Callable[[str, str], None] = lambda kind, reason: None
    stdout: Callable[[bytes], None] = lambda data: None

    @classmethod
    def for_agent(cls, agent: Any, health: Callable[[str, str], None]) -> Imports:
        """Imports wired to ``agent``: publish on its behalf, log lines (levels 0-3 =
        debug..error) and stdout into its log, health reports to ``health``."""
        levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
        return cls(
            publish=agent._publish_raw,
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
    tick_ms:
        The epoch period: deadlines are enforced within one tick.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = "", tick_ms: int = 5) -> None:
        import wasmtime  # noqa: PLC0415 - lazily, see the module docstring

        self._wasmtime = wasmtime
        if cache_dir == "":
            cache_dir = os.environ.get("SYMBIONT_WASM_CACHE") or (
                Path.home() / ".cache" / "symbiont" / "wasm"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.tick_ms = tick_ms
        self._engines: dict[bool, wasmtime.Engine] = {}
        self._modules: dict[tuple[str, bool], wasmtime.Module] = {}
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        #: Counters for tests and benchmarks: compiled, loaded from cache, cache misses.
        self.stats = {"compiled": 0, "cached": 0}

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
        # The thread must be gone before the interpreter frees the engines at exit.
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the epoch ticker (instances can no longer be interrupted). Idempotent."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None

    def fingerprint(self, fuel: bool) -> str:
        """What a compiled module depends on besides its bytes."""
        from importlib.metadata import version  # noqa: PLC0415

        return f"wasmtime-{version('wasmtime')}-epoch-fuel{int(fuel)}"

    def load(self, source: str | os.PathLike[str] | bytes, fuel: bool = False) -> wasmtime.Module:
        """Compile a module (``.wasm`` or ``.wat`` path, or bytes), through the cache."""
        if isinstance(source, (bytes, bytearray)):
            data, name = bytes(source), "<bytes>"
        else:
            name = str(source)
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise WasmError("load", f"cannot read {name}: {exc.strerror}") from None
        if data[:4] != b"\0asm":
            try:
                data = self._wasmtime.wat2wasm(data.decode("utf-8"))
            except (UnicodeDecodeError, self._wasmtime.WasmtimeError) as exc:
                raise WasmError(
                    "load", f"{name} is neither a Wasm binary nor WAT text: {exc}"
                ) from None
        digest = hashlib.sha256(data).hexdigest()
        key = (digest, fuel)
        module = self._modules.get(key)
        if module is None:
            module = self._modules[key] = self._compile(data, digest, fuel, name)
        return module

    def _compile(self, data: bytes, digest: str, fuel: bool, name: str) -> wasmtime.Module:
        engine = self.engine(fuel)
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{digest}-{self.fingerprint(fuel)}.cwasm"
            # Read into memory rather than deserialize_file: that maps the file, and a
            # file changed in place under a mapping kills the process with SIGBUS.
            try:
                module = self._wasmtime.Module.deserialize(engine, path.read_bytes())
                self.stats["cached"] += 1
                return module
            except (OSError, self._wasmtime.WasmtimeError):
                pass  # missing, unreadable, stale or corrupt: compile and (over)write it
        try:
            module = self._wasmtime.Module(engine, data)
        except self._wasmtime.WasmtimeError as exc:
            raise WasmError("load", f"{name} does not compile: {exc}") from None
        self.stats["compiled"] += 1
        if path is not None:
            with contextlib.suppress(OSError):  # a cache that cannot be written is no cache
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                with os.fdopen(fd, "wb") as out:
                    out.write(module.serialize())
                os.replace(tmp, path)
        return module

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
        return Instance(self, module, limits, imports or Imports(), name, config, fuel)


class Instance:
    """One module instance in its own store, called through the ABI of docs/WASM_ABI.md.

    The instance is rebuilt (``symbiont_init`` again, then ``symbiont_migrate`` with the
    last good state when the module exports ``symbiont_state``) after a failed call.
    """

    def __init__(
        self,
        runtime: Runtime,
        module: wasmtime.Module,
        limits: Limits,
        imports: Imports,
        name: str,
        config: Any,
        fuel: bool,
    ) -> None:
        self.runtime = runtime
        self.engine = runtime.engine(fuel)
        self.module = module
        self.limits = limits
        self.imports = imports
        self.name = name
        self.config = config
        self._w = runtime._wasmtime
        self._check_exports()
        self._last_state: bytes | None = None
        self._broken = True
        self._rebuild()

    # -- public ----------------------------------------------------------------------

    def call(self, topic: str, payload: bytes) -> bytes:
        """Run ``symbiont_handle`` on ``[topic, payload]``; returns its msgpack reply."""
        if self._broken:
            self._rebuild()
        message = _pack_call(topic, payload)
        try:
            out = self._invoke("symbiont_handle", message, result=True)
        except WasmError:
            self._broken = True
            raise
        if self._has("symbiont_state"):
            self._last_state = self.state()
        return out

    def state(self) -> bytes | None:
        """The module's state (msgpack), if it exports ``symbiont_state``."""
        if not self._has("symbiont_state"):
            return None
        return self._invoke("symbiont_state", None, result=True)

    def migrate(self, state: bytes) -> None:
        """Hand an older version's state to this instance (``symbiont_migrate``)."""
        if self._has("symbiont_migrate"):
            self._invoke("symbiont_migrate", state, result=False)
            self._last_state = state

    def memory_size(self) -> int:
        """The current size of the instance's linear memory, in bytes (0 before it has one)."""
        memory = getattr(self, "_memory", None)
        return memory.data_len(self._store) if memory is not None else 0

    # -- building --------------------------------------------------------------------

    def _check_exports(self) -> None:
        exports = {e.name for e in self.module.exports}
        missing = [e for e in _REQUIRED_EXPORTS if e not in exports]
        if missing:
            raise WasmError(
                "abi",
                f"{self.name} does not export {', '.join(missing)} "
                f"(a Symbiont module exports {', '.join(_REQUIRED_EXPORTS)})",
            )
        self._exports = exports

    def _has(self, export: str) -> bool:
        return export in self._exports

    def _rebuild(self) -> None:
        w = self._w
        store = w.Store(self.engine)
        store.set_limits(memory_size=self.limits.memory_bytes)
        linker = w.Linker(self.engine)
        linker.allow_shadowing = True
        self._define_symbiont(linker)
        if any(i.module == _WASI for i in self.module.imports):
            self._define_wasi(linker, store)
        self._store = store
        self._memory = None
        self._arm()
        try:
            instance = linker.instantiate(store, self.module)
        except w.WasmtimeError as exc:
            raise WasmError("load", f"{self.name} cannot be instantiated: {exc}") from None
        except w.Trap as exc:
            raise self._classify(exc) from None
        self._instance = instance
        exports = instance.exports(store)
        self._memory = exports["memory"]
        if "_initialize" in self._exports:  # WASI reactors (clang -mexec-model=reactor)
            self._arm()
            try:
                exports["_initialize"](store)
            except w.Trap as exc:
                raise self._classify(exc) from None
        self._funcs = {
            name: exports[name]
            for name in self._exports
            if name.startswith("symbiont_") and isinstance(exports[name], w.Func)
        }
        version = self._funcs["symbiont_abi_version"](store)
        if version != ABI_VERSION:
            raise WasmError(
                "abi", f"{self.name} implements ABI {version}; this runtime speaks {ABI_VERSION}"
            )
        self._broken = False
        if self._has("symbiont_init"):
            from ._terms import packb  # noqa: PLC0415

            self._invoke("symbiont_init", packb(self.config), result=False)
        if self._last_state is not None:
            self.migrate(self._last_state)

    def _define_symbiont(self, linker: wasmtime.Linker) -> None:
        w = self._w
        i32, i64 = w.ValType.i32(), w.ValType.i64()
        read = self._read

        def publish(caller: Any, tp: int, tl: int, pp: int, pl: int) -> None:
            topic = self._text(caller, tp, tl, "publish topic")
            payload = read(caller, pp, pl)
            _check_msgpack(payload, "publish payload")
            self.imports.publish(topic, payload)

        def log(caller: Any, level: int, p: int, n: int) -> None:
            self.imports.log(level, self._text(caller, p, n, "log text"))

        def health(caller: Any, kp: int, kl: int, rp: int, rl: int) -> None:
            kind = self._text(caller, kp, kl, "health kind")
            if kind not in HEALTH_KINDS:
                raise WasmError(
                    "abi",
                    f"health kind {kind!r} is not one of {', '.join(sorted(HEALTH_KINDS))}",
                )
            self.imports.health(kind, self._text(caller, rp, rl, "health reason"))

        def now_ms() -> int:
            return time.time_ns() // 1_000_000

        linker.define_func(
            "symbiont", "publish", w.FuncType([i32, i32, i32, i32], []), publish, True
        )
        linker.define_func("symbiont", "log", w.FuncType([i32, i32, i32], []), log, True)
        linker.define_func("symbiont", "health", w.FuncType([i32, i32, i32, i32], []), health, True)
        linker.define_func("symbiont", "now_ms", w.FuncType([], [i64]), now_ms)

    def _define_wasi(self, linker: wasmtime.Linker, store: wasmtime.Store) -> None:
        w = self._w
        wasi = w.WasiConfig()
        if "stdout" in self.limits.grants:
            wasi.stdout_custom = self.imports.stdout
            wasi.stderr_custom = self.imports.stdout
        store.set_wasi(wasi)
        linker.define_wasi()
        # Capabilities that were not granted: the function is there (so the module loads)
        # but calling it fails the call with a clear error.
        for capability, functions in _CAPABILITY_FUNCTIONS.items():
            if capability in self.limits.grants:
                continue
            for imp in self.module.imports:
                if imp.module == _WASI and imp.name in functions:
                    linker.define_func(
                        _WASI, imp.name, imp.type, self._denied(capability, imp.name)
                    )

    def _denied(self, capability: str, function: str) -> Callable[..., Any]:
        def denied(*_args: Any) -> Any:
            raise WasmError(
                "capability",
                f"{self.name} called {_WASI}.{function}, but the capability {capability!r} "
                f"was not granted (grant it in the manifest: grants: [{capability!r}])",
            )

        return denied

    # -- calling ---------------------------------------------------------------------

    def _arm(self) -> None:
        # The next tick may come at once: one more makes the budget at least the deadline,
        # and at most a tick over it.
        ticks = math.ceil(self.limits.deadline_ms / self.runtime.tick_ms) + 1
        self._store.set_epoch_deadline(ticks)
        if self.limits.fuel is not None:
            self._store.set_fuel(self.limits.fuel)

    def _invoke(self, export: str, data: bytes | None, result: bool) -> bytes:
        w, store = self._w, self._store
        self._arm()
        try:
            args: list[int] = []
            if data is not None:
                ptr = self._funcs["symbiont_alloc"](store, len(data))
                if not isinstance(ptr, int) or ptr <= 0:
                    raise WasmError(
                        "memory" if ptr == 0 else "abi",
                        f"symbiont_alloc({len(data)}) returned {ptr!r}"
                        + (" (out of memory?)" if ptr == 0 else ""),
                    )
                self._write(ptr, data)
                args = [ptr, len(data)]
            out = self._funcs[export](store, *args)
        except w.Trap as exc:
            raise self._classify(exc) from None
        except w.WasmtimeError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, WasmError):  # raised by one of our imports
                raise cause from None
            raise WasmError("trap", f"{self.name}.{export}: {exc}") from None
        if not result:
            return b""
        if not isinstance(out, int):
            raise WasmError("abi", f"{export} must return an i64 (ptr << 32 | len), got {out!r}")
        ptr, length = (out >> 32) & 0xFFFFFFFF, out & 0xFFFFFFFF
        return self._read(store, ptr, length)

    def _classify(self, exc: Any) -> WasmError:
        code = getattr(exc, "trap_code", None)
        codes = self._w.TrapCode
        # wasmtime's text: a backtrace, then "Caused by:" and the reason on its last line.
        lines = [line.strip() for line in str(getattr(exc, "message", exc)).splitlines()]
        message = next((line for line in reversed(lines) if line), "trap")
        message = message.removeprefix("wasm trap: ")
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

    def _read(self, store: Any, ptr: int, length: int) -> bytes:
        size = self._memory.data_len(store)
        if ptr + length > size:
            raise WasmError(
                "abi", f"{self.name} pointed at bytes {ptr}..{ptr + length} of a {size}-byte memory"
            )
        return bytes(self._memory.read(store, ptr, ptr + length))

    def _write(self, ptr: int, data: bytes) -> None:
        size = self._memory.data_len(self._store)
        if ptr + len(data) > size:
            raise WasmError(
                "abi",
                f"symbiont_alloc gave {ptr}, but {len(data)} bytes do not fit in {size} bytes",
            )
        self._memory.write(self._store, data, ptr)

    def _text(self, caller: Any, ptr: int, length: int, what: str) -> str:
        try:
            return self._read(caller, ptr, length).decode("utf-8")
        except UnicodeDecodeError:
            raise WasmError("abi", f"{what} is not UTF-8") from None


def _pack_call(topic: str, payload: bytes) -> bytes:
    """``[topic, payload]`` with ``payload`` spliced in as the msgpack value it already is."""
    from ._terms import packb  # noqa: PLC0415

    return b"\x92" + packb(topic) + payload


def _check_msgpack(data: bytes, what: str) -> None:
    import msgpack  # noqa: PLC0415

    try:
        msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the module's fault
        raise WasmError("abi", f"{what} is not one msgpack value: {exc}") from None


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
    relative to the host's working directory. What the module publishes goes out as the
    agent's events; its log lines and stdout go to the agent's log.
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
        self.instance = default_runtime().instantiate(
            path, limits=limits, imports=imports, name=f"{agent.name}/{name}", config=plugin_config
        )

    def call(self, payload: Any, topic: str | None = None) -> Any:
        """Run the module on ``payload`` (as ``[topic, payload]``, topic the plug-in's name
        unless given) and return its decoded reply. Raises :class:`WasmError`."""
        from ._terms import packb, unpackb  # noqa: PLC0415

        return unpackb(self.instance.call(topic or self.name, packb(payload)))


class WasmAgent(Agent):
    """An agent whose logic is a Wasm module (``wasm:`` in the manifest).

    Its config, built by the owner from the manifest: ``"wasm"`` the module's path,
    ``"topics"`` the topics it consumes, ``"limits"`` its sandbox (:class:`Limits`) and
    ``"config"`` what ``symbiont_init`` receives. Each event's payload bytes go to the
    module as they were published; what it publishes goes out as this agent's events.
    Its state (when it exports ``symbiont_state``) is checkpointed with each ack, so a
    restarted host resumes it through ``symbiont_migrate``.

    A failed call (trap, deadline, fuel, memory cap, capability) fails that event (it goes
    to the dead letters) and reports health on ``symbiont.health``: ``degraded`` at the
    first failure, ``failing`` at the third in a row, ``healthy`` at the next success.
    """

    FAILING_AFTER = 3

    def on_start(self) -> None:
        """Load the module, then hand it the checkpointed state, if any."""
        spec = self.config
        if not isinstance(spec.get("wasm"), str):
            raise ValueError(f"Wasm agent {self.name!r} needs its module path in config['wasm']")
        imports = Imports.for_agent(self, self.health.report)
        self.instance = default_runtime().instantiate(
            spec["wasm"],
            limits=Limits.from_config(spec.get("limits")),
            imports=imports,
            name=self.name,
            config=spec.get("config"),
        )
        saved = self.state.get("wasm_state") if isinstance(self.state, dict) else None
        if isinstance(saved, bytes):
            self.instance.migrate(saved)
        self._failures = 0

    def subscriptions(self) -> list[str]:
        """The topics of the manifest (a Wasm module does not declare its own)."""
        return list(self.config.get("topics") or [])

    def handle_event(self, topic: str, payload: bytes) -> None:
        """Run the module on the event's bytes; see the class docstring for failures."""
        try:
            self.instance.call(topic, payload)
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
        state = self.instance.state()
        if state is not None:
            self.state = {"wasm_state": state}
