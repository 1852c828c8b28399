"""Every pointer and length a Wasm module hands the host, fuzzed (docs/WASM_ABI.md §2).

test/fixtures/wasm/poke.wat calls, per message, one import (``publish``, ``log``,
``health``, ``now_ms``, and WASI's ``fd_write``, ``random_get``, ``clock_time_get``) with
i32 arguments of the test's choosing, or makes one of its exports hand the host a slice
(the reply of ``symbiont_handle``, what ``symbiont_alloc`` returns, the state of
``symbiont_state``); some messages grow the memory first. The arguments are drawn around
the edges: 0, -1, -2**31, 2**31-1, the memory's size and its neighbours, spans that wrap
around 2**32, and random ones.

The oracle: a span that does not fit in the memory as it is at that moment (pointer and
length read as unsigned 32-bit numbers) fails that call with an ``abi`` error that names
it; one that fits is read; WASI's own functions may succeed or fail, cleanly. The cases run
in a child process, so that a native crash (the host reading outside linear memory) is a
failed test with its seed, not a dead pytest. ``SYMBIONT_FUZZ_SEED=N`` replays or explores.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CASES = 10_000
POKE = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "wasm" / "poke.wat"
PAGE = 65536
CAP = 4 * PAGE  # the instance's memory cap: growing it hits the cap within the run
U32 = 0xFFFFFFFF
OPS = (
    "publish",
    "log",
    "health",
    "now_ms",
    "grow+log",
    "fd_write",
    "random_get",
    "clock_time_get",
    "reply",
    "alloc",
    "state",
)
# The spans (as indexes of (a, b, c, d)) the host must check for each op; None: WASI's
# functions, where any clean outcome will do (fd_write reads a table of spans from memory).
SPANS: dict[str, tuple[tuple[int, int], ...] | None] = {
    "publish": ((0, 1), (2, 3)),
    "log": ((1, 2),),
    "health": ((0, 1), (2, 3)),
    "now_ms": (),
    "grow+log": ((1, 2),),
    "fd_write": None,
    "random_get": None,
    "clock_time_get": None,
    "reply": ((0, 1),),
    "alloc": ((0, -1),),  # the pointer, and the message's length (see run_cases)
    "state": ((0, 1),),
}


def fuzz_seed(default: int) -> int:
    """``$SYMBIONT_FUZZ_SEED`` when set, else ``default`` (as in test_fuzz.py)."""
    return int(os.environ.get("SYMBIONT_FUZZ_SEED") or default)


def i32(value: int) -> int:
    """``value`` as the i32 bit pattern Wasm has (2**32 - 1 is -1)."""
    return ((value + 2**31) & U32) - 2**31


def edge(rng: random.Random, size: int) -> int:
    """A pointer or a length near an edge, or anywhere."""
    pick = rng.randrange(6)
    if pick == 0:
        return rng.choice((0, 1, -1, -(2**31), 2**31 - 1, 2**31, U32, 64, -64))
    if pick == 1:
        return size + rng.choice((-2, -1, 0, 1, 2, PAGE, PAGE + 1))
    if pick == 2:
        return rng.randrange(2**32)
    return rng.randrange(size + 1) if pick == 3 else rng.randrange(64)


def span_args(rng: random.Random, size: int) -> tuple[int, int]:
    """A (pointer, length): at the edges, just in or just out, or wrapping around 2**32."""
    pick = rng.randrange(5)
    if pick == 0:  # ptr + len wraps around 2**32 to a small number
        k = rng.randrange(1, 1 << 16)
        return 2**32 - k, k + rng.randrange(0, 64)
    if pick == 1:  # ends exactly at the end, or a byte past it
        length = rng.randrange(0, 300)
        return size - length + rng.choice((0, 0, 1)), length
    if pick == 2:  # a small span anywhere
        return rng.randrange(size + 8), rng.randrange(40)
    return edge(rng, size), edge(rng, size)


def run_cases(seed: int, n: int, direct: bool) -> dict[str, Any]:
    """Run ``n`` cases against one poke.wat instance; the failures and what was seen."""
    from symbiont.wasm import (  # noqa: PLC0415
        GRANTS,
        LOG_LINE_BYTES,
        Imports,
        Limits,
        Runtime,
        WasmError,
    )

    def logged(text: str, length: int) -> bool:
        """Whether ``text`` is what a log line of ``length`` bytes gives: itself, or when
        longer than LOG_LINE_BYTES, its start (cut before a split character) and a mark."""
        size = len(text.encode())
        if length <= LOG_LINE_BYTES:
            return size == length
        return text.endswith(" [truncated]") and LOG_LINE_BYTES - 3 <= size - 12 <= LOG_LINE_BYTES

    rng = random.Random(seed)
    runtime = Runtime(cache_dir=None, direct=direct)
    got: list[tuple[str, Any]] = []
    imports = Imports(
        publish=lambda topic, payload: got.append(("publish", (topic, payload))),
        log=lambda level, text: got.append(("log", text)),
        health=lambda kind, reason: got.append(("health", (kind, reason))),
        stdout=lambda data: got.append(("stdout", data)),
    )
    # A deadline far enough away for a loaded machine: the cases are not about it.
    limits = Limits(memory_bytes=CAP, grants=GRANTS, deadline_ms=60_000)
    poke = runtime.instantiate(POKE, limits, imports=imports, name="poke")
    failures: list[str] = []
    seen: collections.Counter[str] = collections.Counter()

    def send(op: int, *args: int) -> tuple[bytes | None, WasmError | None]:
        payload = b"\xc4\x14" + struct.pack("<5i", op, *(i32(a) for a in args))
        try:
            return poke.call("p", payload), None
        except WasmError as exc:
            return None, exc

    for case in range(n):
        op = rng.randrange(len(OPS))
        name = OPS[op]
        size = poke.memory_size()
        if name == "grow+log":
            size = min(size + PAGE, CAP)
        args = [*span_args(rng, size), *span_args(rng, size)]
        if name == "log" or name == "grow+log":
            args = [rng.randrange(-2, 5), *args[:2], 0]
        elif name in ("health", "publish") and rng.randrange(4) == 0:
            # "healthy" (as a health kind or a topic), and nil as the payload: some of
            # them are accepted, and sent.
            args[:2] = [16, 7]
            if name == "publish" and rng.randrange(2):
                args[2:] = [0, 1]
        elif name in ("fd_write", "clock_time_get"):
            args[0] = rng.choice((0, 1, 2, 3, -1))
        del got[:]
        reply, error = send(op, *args)
        if name == "alloc" and error is None:
            # The next message is written where symbiont_alloc now points: a now_ms call.
            reply, error = send(3, 0, 0, 0, 0)
        size = poke.memory_size()  # as it was in the call: a failed one is rebuilt later
        where = f"case {case}: {name}{tuple(i32(a) for a in args)} on a {size}-byte memory"
        spans = SPANS[name]
        if spans is None:
            # fd_write is the host's own: its failures are its checks'; the others are
            # wasmtime's, which traps on a bad pointer.
            allowed = ("abi",) if name == "fd_write" else ("abi", "trap")
            if error is not None and error.kind not in allowed:
                failures.append(f"{where}: {error}")
            seen[f"{name} {'ok' if error is None else error.kind}"] += 1
            continue
        message_len = 25  # [topic, payload] of send(): 0x92, "p", a 20-byte bin
        bounds = [(args[p] & U32, (args[q] if q >= 0 else message_len) & U32) for p, q in spans]
        out = next(((p, q) for p, q in bounds if p + q > size), None)
        if name == "alloc" and bounds[0][0] == 0:
            expected = "memory: symbiont_alloc(25) returned 0"
        elif out is None:
            expected = ""
        elif name == "alloc":
            expected = f"abi: symbiont_alloc(25) gave {out[0]}, but 25 bytes do not fit"
        else:
            expected = f"abi: poke pointed at bytes {out[0]}..{out[0] + out[1]} of a {size}-byte"
        if expected:
            if error is None or not str(error).startswith(expected):
                failures.append(f"{where}: expected {expected!r}, got {error or reply!r}")
            seen[f"{name} refused"] += 1
            continue
        # In bounds: read, or refused for what the bytes say (not UTF-8, not msgpack...).
        if error is not None:
            if error.kind != "abi" or "pointed at" in str(error) or "alloc" in str(error):
                failures.append(f"{where}: in bounds, but {error}")
            seen[f"{name} bad bytes"] += 1
            continue
        seen[f"{name} ok"] += 1
        length = args[1] & U32 if name != "grow+log" and name != "log" else args[2] & U32
        if name == "reply" and len(reply or b"") != length:
            failures.append(f"{where}: a reply of {len(reply or b'')} bytes")
        elif name == "state" and len(poke.last_state or b"") != length:
            failures.append(f"{where}: a state of {len(poke.last_state or b'')} bytes")
        elif name in ("log", "grow+log") and not (len(got) == 1 and logged(got[0][1], length)):
            failures.append(f"{where}: logged {got!r:.200}")
        elif name in ("publish", "health") and len(got) != 1:
            failures.append(f"{where}: sent {got!r:.200}")
    return {"failures": failures[:20], "failed": len(failures), "seen": dict(seen)}


@pytest.mark.parametrize("path", ["direct", "public"])
def test_pointers_and_lengths_from_a_module_are_checked_and_the_host_survives(path: str) -> None:
    """The cases run in a child process: a segfault there fails this test with its seed."""
    seed = fuzz_seed(6_101)
    replay = f"Wasm pointer fuzz, seed {seed} (SYMBIONT_FUZZ_SEED={seed} to replay), {path}"
    child = subprocess.run(
        [sys.executable, __file__, str(seed), str(CASES), path],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if child.returncode < 0:
        pytest.fail(
            f"{replay}: the host died of {signal.Signals(-child.returncode).name}\n"
            f"{child.stderr[-3000:]}"
        )
    assert child.returncode == 0, f"{replay}: exit {child.returncode}\n{child.stderr[-3000:]}"
    result = json.loads(child.stdout)
    assert result["failed"] == 0, f"{replay}: {result['failed']} failures, the first:\n" + (
        "\n".join(result["failures"])
    )
    # Not vacuous: each span the host checks was both refused and read.
    seen = result["seen"]
    assert sum(seen.values()) == CASES
    for name, spans in SPANS.items():
        if spans:
            assert seen.get(f"{name} refused") and seen.get(f"{name} ok"), (name, seen)


if __name__ == "__main__":  # the child: python test_wasm_fuzz.py SEED CASES direct|public
    json.dump(run_cases(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "direct"), sys.stdout)
