"""Measurements of the Wasm runtime for bench/wasm.exs, run inside a Symbiont host.

Each function returns plain numbers (microseconds, milliseconds, bytes) with the baseline it
is compared with, measured in the same process and the same run.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

from symbiont._terms import packb
from symbiont.wasm import Runtime

WASM = Path(__file__).resolve().parents[1] / "priv" / "wasm"
# A small message as an agent gets it: [topic, payload].
PAYLOAD = packb({"order": 1234, "amount": 19.99, "currency": "EUR"})


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def _bare_instance(runtime: Runtime, module: wasmtime.Module) -> tuple[Any, Any]:
    """echo.wat with wasmtime-py alone: a store (deadline far away) and its instance."""
    store = wasmtime.Store(runtime.engine(False))
    store.set_epoch_deadline(1 << 40)
    return store, wasmtime.Instance(store, module, [])


def call_path(n: int, rounds: int) -> dict[str, float]:
    """Per-message cost of ``Instance.call`` (echo.wat, a small payload) through the direct
    path and through wasmtime-py's public API (the path before tuning), beside the floor of
    wasmtime-py: an exported function with no arguments called in a loop. Also
    counter.wat, whose every message calls two imports and ``symbiont_state``. Rounds
    alternate; each figure is the median of its rounds, in µs."""
    direct, public = Runtime(cache_dir=None), Runtime(cache_dir=None, direct=False)
    assert direct.direct, "this wasmtime-py does not support the direct call path"
    echo = direct.instantiate(WASM / "echo.wat", name="echo")
    echo_public = public.instantiate(WASM / "echo.wat", name="echo")
    counter = direct.instantiate(WASM / "counter.wat", name="counter")
    store, bare = _bare_instance(direct, echo.module)
    version = bare.exports(store)["symbiont_abi_version"]

    measures: dict[str, Callable[[], Any]] = {
        "floor": lambda: version(store),
        "call": lambda: echo.call("bench", PAYLOAD),
        "call_public": lambda: echo_public.call("bench", PAYLOAD),
        "counter": lambda: counter.call("bench", PAYLOAD),
    }
    for fn in measures.values():  # warm-up
        _per_call_us(fn, 200)
    results: dict[str, list[float]] = {k: [] for k in measures}
    for r in range(rounds):
        order = list(measures) if r % 2 == 0 else list(reversed(measures))
        for key in order:
            # The public path is ten times slower: fewer calls give as steady a figure.
            results[key].append(_per_call_us(measures[key], n // 10 if "public" in key else n))
    direct.close()
    public.close()
    return {k: statistics.median(v) for k, v in results.items()}


def big_module(functions: int) -> bytes:
    """A valid Symbiont module (echo's exports) with ``functions`` more functions: over
    500 KB of Wasm for the compile benchmark, made here rather than committed."""
    body = " ".join(
        f"local.get 0 i32.const {k + 1} i32.add i32.const {2 * k + 3} i32.mul local.set 0"
        for k in range(8)
    )
    filler = "\n".join(
        f'(func $f{i} (export "f{i}") (param i32) (result i32) {body} local.get 0 '
        f"i32.const {i} i32.xor)"
        for i in range(functions)
    )
    echo = (WASM / "echo.wat").read_text()
    return wasmtime.wat2wasm(echo.rstrip().removesuffix(")") + "\n" + filler + ")")


def compile_vs_cache(functions: int, rounds: int) -> dict[str, float]:
    """Cold compile (empty cache: compile, serialize, write) against a load from the
    cache (read, ``Module.deserialize``), each through ``Runtime.load`` in a new runtime;
    medians in ms, and the sizes in bytes."""
    data = big_module(functions)
    cold, cached = [], []
    entry = 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            for phase in (cold, cached):
                runtime = Runtime(cache_dir=cache)
                runtime.engine(False)  # the engine is not part of a load
                start = time.perf_counter_ns()
                runtime.load(data)
                phase.append((time.perf_counter_ns() - start) / 1e6)
                runtime.close()
            assert runtime.stats == {"compiled": 0, "cached": 1}, runtime.stats
            entry = sum(p.stat().st_size for p in Path(cache).iterdir())
    return {
        "cold_ms": statistics.median(cold),
        "cached_ms": statistics.median(cached),
        "module_bytes": len(data),
        "cache_entry_bytes": entry,
    }


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def instantiate(n: int) -> dict[str, float]:
    """``Runtime.instantiate`` of counter.wat (a store with its limits, the shared linker,
    ``symbiont_abi_version``) against wasmtime-py alone instantiating the same module
    through a linker made once (µs, median of 5 batches); and the memory of one bare
    wasmtime instance (KB, RSS growth over ``n`` of them, each called once)."""
    runtime = Runtime(cache_dir=None)
    module = runtime.load(WASM / "counter.wat")
    engine = runtime.engine(False)
    linker = wasmtime.Linker(engine)
    i32 = wasmtime.ValType.i32()
    for name, arity in (("publish", 4), ("log", 3), ("health", 4)):
        linker.define_func("symbiont", name, wasmtime.FuncType([i32] * arity, []), _ignore)

    def bare() -> tuple[Any, Any]:
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1 << 40)
        instance = linker.instantiate(store, module)
        instance.exports(store)["symbiont_abi_version"](store)
        return store, instance

    ours, theirs = [], []
    batch = max(n // 5, 1)
    for _ in range(5):
        for measure, make in (
            (ours, lambda: runtime.instantiate(WASM / "counter.wat", name="c")),
            (theirs, bare),
        ):
            keep = []
            start = time.perf_counter_ns()
            for _ in range(batch):
                keep.append(make())
            measure.append((time.perf_counter_ns() - start) / batch / 1000)
            del keep
    gc.collect()
    before = _rss_kb()
    kept = []
    for _ in range(n):
        store, instance = bare()
        instance.exports(store)["symbiont_handle"](store, 1024, 1)
        kept.append((store, instance))
    bare_kb = (_rss_kb() - before) / n
    del kept
    runtime.close()
    return {
        "instantiate_us": statistics.median(ours),
        "bare_us": statistics.median(theirs),
        "bare_instance_kb": bare_kb,
    }


def _ignore(*_args: Any) -> None:
    return None
