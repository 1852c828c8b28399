"""The runtime under Wasm agents and plug-ins (:class:`Runtime`): its engines, the
compiled-module cache and the epoch ticker. :mod:`symbiont.wasm` re-exports it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._wasm_abi import Imports, _import_wasmtime, _Linked
from ._wasm_instance import Instance
from ._wasm_limits import Limits, WasmError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import wasmtime


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

    # Its public home (symbiont.wasm): the name tracebacks and error types on the wire give.
    __module__ = "symbiont.wasm"

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
