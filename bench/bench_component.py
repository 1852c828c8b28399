"""bench/component.exs, the Python side: a Python agent built into a Wasm component
(``symbiont build-wasm bench/bench_agents.py:Counter``), measured in a host process."""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path

from symbiont.wasm import Limits, Runtime

WASM = Path(__file__).resolve().parents[1] / "priv" / "wasm"
# Not the 100 ms default: speed is measured here, not enforced.
_LIMITS = Limits(deadline_ms=5000)


def _status_kb(field: str, path: str = "/proc/self/status") -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {path}")


def _pss_kb() -> int:
    return _status_kb("Pss", "/proc/self/smaps_rollup")


def compile_vs_cache(path: str, rounds: int) -> dict[str, float]:
    """A cold compile of the component (an empty cache) against a load from the cache by
    a new runtime, as a new host does (ms, medians of ``rounds``)."""
    cold, cached = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            runtime = Runtime(cache_dir=cache)
            start = time.perf_counter_ns()
            runtime.load(path)
            cold.append((time.perf_counter_ns() - start) / 1e6)
            runtime.close()
            entry = next(Path(cache).iterdir())
            runtime = Runtime(cache_dir=cache)
            start = time.perf_counter_ns()
            runtime.load(path)
            cached.append((time.perf_counter_ns() - start) / 1e6)
            assert runtime.stats == {"compiled": 0, "cached": 1}, runtime.stats
            runtime.close()
            serialized = entry.stat().st_size
    return {
        "cold_ms": statistics.median(cold),
        "cached_ms": statistics.median(cached),
        "component_bytes": Path(path).stat().st_size,
        "serialized_bytes": serialized,
    }


def instantiate(path: str, n: int) -> dict[str, float]:
    """A new instance of the component, started (instantiation, then ``init``: CPython's
    start and the agent's ``on_start``), against counter.wat's (µs, medians)."""
    runtime = Runtime()
    runtime.load(path)
    ours, core = [], []
    for _ in range(n):
        start = time.perf_counter_ns()
        runtime.instantiate(path, limits=_LIMITS, name="c")
        ours.append((time.perf_counter_ns() - start) / 1000)
        start = time.perf_counter_ns()
        runtime.instantiate(WASM / "counter.wat", name="m")
        core.append((time.perf_counter_ns() - start) / 1000)
    gc.collect()
    return {"instantiate_us": statistics.median(ours), "core_us": statistics.median(core)}


def memory(path: str, n: int) -> dict[str, float]:
    """RSS and PSS growth of this process over ``n`` instances of the component, each
    having handled one event (KB an instance)."""
    runtime = Runtime()
    runtime.load(path)
    runtime.instantiate(path, limits=_LIMITS, name="warm").call("bench.counter.python", b"\x01")
    gc.collect()
    rss, pss = _status_kb("VmRSS"), _pss_kb()
    kept = []
    for i in range(n):
        instance = runtime.instantiate(path, limits=_LIMITS, name=f"c{i}")
        instance.call("bench.counter.python", b"\x01")
        kept.append(instance)
    gc.collect()
    result = {"rss_kb": (_status_kb("VmRSS") - rss) / n, "pss_kb": (_pss_kb() - pss) / n}
    del kept
    return result


def pss_of(os_pid: int) -> float:
    """The PSS of process ``os_pid`` (KB)."""
    return float(_status_kb("Pss", f"/proc/{os_pid}/smaps_rollup"))
