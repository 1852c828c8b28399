"""The Python host loop alone, without the BEAM or a pipe: frames in memory, per-frame cost.

Runs :class:`symbiont._host.Host` in this process on a transport that hands it a prepared
byte string (256 KB a read, like the real one) and keeps what it writes, so that what is
measured is the host's own work per frame: framing, msgpack decoding, dispatch, the
reply's encoding. With ``--profile`` it prints where that time goes (cProfile).

    PYTHONPATH=python:bench .venv/bin/python bench/profile_host.py [--profile] [N]

Workloads: ``cast`` (``bench_funcs.bump``), ``call`` (``bench_funcs.echo``, a reply
each), ``event`` (a Python agent, ``bench_agents.Sink``, acked in batches) and ``wasm``
(a Wasm agent, priv/wasm/counter.wat: a publish and a log line an event).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import struct
import sys
import time
from pathlib import Path
from typing import Any

from symbiont._host import PROTOCOL_VERSION, Host
from symbiont._terms import packb
from symbiont._transport import Transport

_CHUNK = 256 * 1024


class MemoryTransport(Transport):
    """Reads from a prepared byte string; keeps what is written."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.written = 0

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the input, 256 KB at most; ``b""`` at its end."""
        n = min(size, _CHUNK)
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk

    def wait_readable(self, timeout: float) -> bool:
        """Always: there is data, or the end of the stream."""
        return True

    def write(self, data: bytes) -> None:
        """Counts the bytes."""
        self.written += len(data)


def frame(*fields: Any) -> bytes:
    """One frame: the length prefix and the msgpack array."""
    payload = packb(list(fields))
    return struct.pack(">I", len(payload)) + payload


def workload(kind: str, n: int) -> bytes:
    """The input of a run: the handshake, then ``n`` frames of ``kind``."""
    bench = str(Path(__file__).resolve().parent)
    init = frame("init", PROTOCOL_VERSION, {"name": "profile", "python_path": [bench]})
    if kind == "cast":
        body = frame("cast", "bench_funcs", "bump", [1]) * n
    elif kind == "call":
        body = b"".join(frame("call", i, "bench_funcs", "echo", [1]) for i in range(n))
    elif kind == "event":
        spec = {"name": "sink", "module": "bench_agents", "class": "Sink", "config": {}}
        payload = packb(1)
        body = frame("agent_start", 1, spec) + b"".join(
            frame("event", 1, seq, "bench.fanout", payload) for seq in range(1, n + 1)
        )
    elif kind == "wasm":
        wat = Path(__file__).resolve().parent.parent / "priv" / "wasm" / "counter.wat"
        config = {"wasm": str(wat), "topics": ["bench.wasm"]}
        spec = {"name": "counter", "module": "symbiont.wasm", "class": "WasmAgent"}
        payload = packb(1)
        body = frame("agent_start", 1, {**spec, "config": config}) + b"".join(
            frame("event", 1, seq, "bench.wasm", payload) for seq in range(1, n + 1)
        )
    else:
        raise ValueError(f"unknown workload {kind!r}: cast, call, event or wasm")
    return init + body


class _Done(Exception):
    pass


def run(kind: str, n: int, profile: cProfile.Profile | None = None) -> float:
    """Serves ``n`` frames of ``kind``; returns the µs per frame."""
    transport = MemoryTransport(workload(kind, n))

    def exit_hook(status: int) -> None:
        raise _Done(status)

    host = Host(transport, exit=exit_hook)
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        host._serve_frames()
    except _Done:
        pass
    finally:
        if profile is not None:
            profile.disable()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv: list[str]) -> None:
    """Times each workload (the best of 5 runs); ``--profile`` adds a cProfile of each."""
    profile = "--profile" in argv
    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    for kind in ("cast", "call", "event", "wasm"):
        run(kind, 2_000)  # warm-up: imports, caches
        best = min(run(kind, n) for _ in range(5))
        print(f"{kind}: {best:.2f} µs/frame")
        if profile:
            prof = cProfile.Profile()
            run(kind, n, prof)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
            print(out.getvalue())


if __name__ == "__main__":
    main(sys.argv[1:])
