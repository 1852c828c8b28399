"""The host's frame decoding and dispatch fuzzed (PROTOCOL.md §1.3, §9).

Each case runs a real :class:`~symbiont._host.Host` in this process, over a transport that
holds the case's bytes and then ends: a handshake and an agent in slot 1 (or a mutated
handshake), then random bytes or a mutated valid frame. It runs the host's dispatch path on
this thread, without the watchdog thread, which only steps in when one dispatch takes over
10 ms. The host must serve on to the end of the input (exit 0), or stop with a clear
protocol error (exit 3, §9), or refuse a bad handshake with ``fatal`` (exit 2, §3); never
crash with a traceback, and never write a malformed frame. Seeded: ``SYMBIONT_FUZZ_SEED=N``
replays or explores; a failure names the seed, the case and its bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from symbiont._host import PROTOCOL_VERSION, Host
from symbiont._terms import Atom, Pid, packb, unpackb
from symbiont._transport import Transport

CASES = 10_000
FIXTURES = str(Path(__file__).resolve().parent / "fixtures")
MAX_FRAME = 1 << 20
OWNER_BOUND = frozenset(
    {"ready", "fatal", "reply", "error", "call", "cast", "msg", "cancel", "log"}
    | {"agent_ready", "agent_failed", "ack", "nack", "publish", "pong"}
)
KINDS = (
    "ping",
    "credit",
    "call",
    "reply",
    "error",
    "cancel",
    "cast",
    "msg",
    "agent_start",
    "agent_stop",
    "event",
    "tick",
)


def fuzz_seed(default: int) -> int:
    """``$SYMBIONT_FUZZ_SEED`` when set, else ``default``."""
    return int(os.environ.get("SYMBIONT_FUZZ_SEED") or default)


class ScriptedTransport(Transport):
    """A transport whose input is fixed bytes, then end of stream; output is kept.

    Reads return chunks of random sizes, so that frames arrive split at any byte.
    """

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data = data
        self._pos = 0
        self._rng = rng
        self._lock = threading.Lock()
        self.out = bytearray()

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes, in a chunk of random length; ``b""`` at the end."""
        with self._lock:
            n = min(size, self._rng.choice((1, 7, 64, 4096, 1 << 20)))
            chunk = self._data[self._pos : self._pos + n]
            self._pos += len(chunk)
            return chunk

    def wait_readable(self, timeout: float) -> bool:
        """Always: there is data, or the end of the stream, to read."""
        return True

    def write(self, data: bytes) -> None:
        """Keep ``data``."""
        with self._lock:
            self.out += data


def frame(*fields: Any) -> bytes:
    payload = packb(list(fields))
    return struct.pack(">I", len(payload)) + payload


INIT = [
    "init",
    PROTOCOL_VERSION,
    {"name": "fuzz", "max_frame": MAX_FRAME, "python_path": [FIXTURES]},
]
AGENT = {"name": "fuzzed", "module": "agents", "class": "Counter", "config": {}, "state": None}
PREFIX = frame(*INIT) + frame("agent_start", 1, AGENT)


class Outcome:
    """How one case ended: the exit status, what the host wrote to stderr and the wire."""

    def __init__(self, status: int | None, stderr: str, frames: list[Any], error: str) -> None:
        self.status = status
        self.stderr = stderr
        self.frames = frames
        self.error = error  # a frame written by the host that is not well-formed


@pytest.fixture
def run_case() -> Iterator[Callable[[bytes, random.Random], Outcome]]:
    """Runs cases; restores what a host changes in its process (sys.path)."""
    saved_path = list(sys.path)
    host_logger = logging.getLogger("symbiont")
    saved_level = host_logger.level
    # Casts and messages that fail are logged by the host (§4.3): thousands of lines here.
    host_logger.setLevel(logging.CRITICAL)
    stderr_r, stderr_w = os.pipe()
    os.set_blocking(stderr_r, False)

    def run(data: bytes, rng: random.Random) -> Outcome:
        exits: list[int] = []

        def exit_hook(status: int) -> None:
            exits.append(status)
            raise SystemExit(status)

        transport = ScriptedTransport(data, rng)
        host = Host(transport, stderr_fd=stderr_w, exit=exit_hook)
        with contextlib.suppress(SystemExit):
            host._serve_frames()
        sys.path[:] = saved_path
        stderr = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(stderr_r, 65536):
                stderr += chunk
        frames, error = parse_output(bytes(transport.out))
        return Outcome(
            exits[0] if exits else None, stderr.decode("utf-8", "replace"), frames, error
        )

    try:
        yield run
    finally:
        os.close(stderr_r)
        os.close(stderr_w)
        host_logger.setLevel(saved_level)
        sys.path[:] = saved_path


def parse_output(out: bytes) -> tuple[list[Any], str]:
    frames: list[Any] = []
    pos = 0
    while pos < len(out):
        if len(out) - pos < 4:
            return frames, f"a torn header at byte {pos}"
        (size,) = struct.unpack_from(">I", out, pos)
        payload = out[pos + 4 : pos + 4 + size]
        if len(payload) < size or size > MAX_FRAME:
            return frames, f"a torn or oversize frame of {size} bytes at byte {pos}"
        try:
            value = unpackb(payload)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            return frames, f"an undecodable frame at byte {pos}: {exc}"
        if type(value) is not list or not value or value[0] not in OWNER_BOUND:
            return frames, f"a frame of no known kind: {value!r:.200}"
        frames.append(value)
        pos += 4 + size
    return frames, ""


def judge(outcome: Outcome, seed: int, n: int, data: bytes, *, handshake: bool) -> None:
    """The oracle: serve to the end, a clear protocol error, or (handshake) fatal."""
    where = (
        f"host fuzz, seed {seed} (SYMBIONT_FUZZ_SEED={seed} to replay), case {n}; "
        f"input {data!r:.2000}"
    )
    assert not outcome.error, f"{where}: the host wrote {outcome.error}"
    assert "Traceback" not in outcome.stderr, f"{where}: crashed:\n{outcome.stderr}"
    if outcome.status == 3:
        assert "protocol error: " in outcome.stderr, f"{where}: exit 3 without a reason"
        assert len(outcome.stderr.splitlines()) == 1, f"{where}: not one line:\n{outcome.stderr}"
    elif outcome.status == 2:
        assert handshake, f"{where}: fatal after the handshake"
        assert outcome.frames and outcome.frames[-1][0] == "fatal", f"{where}: no fatal frame"
    else:
        assert outcome.status == 0, f"{where}: exit status {outcome.status}\n{outcome.stderr}"


# -- generators -------------------------------------------------------------------------


def gen_term(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack value, including the ext types of PROTOCOL.md §2."""
    pick = rng.randrange(12 if depth < 3 else 8)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return (
            rng.randrange(-(1 << 63), 1 << 64) if rng.random() < 0.3 else rng.randrange(-300, 300)
        )
    if pick == 2:
        return rng.uniform(-1e6, 1e6)
    if pick == 3:
        return "".join(rng.choice("aZé€😀 .") for _ in range(rng.randrange(12)))
    if pick == 4:
        return rng.randbytes(rng.randrange(20))
    if pick == 5:
        return rng.choice([Atom("ok"), Pid(b"\x83X"), ("t", 1)])
    if pick == 6:
        return rng.choice(["numbers", "fail", "beat", "echo", "hostmod", 1, 0, -1])
    if pick == 7:
        return rng.choice([{}, [], "", b""])
    if pick in (8, 9):
        return [gen_term(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {
        rng.choice(["name", "module", "class", "k", 1]): gen_term(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


MAX_INT = (1 << 63) - 1
#: Integers at the edges of msgpack's range (-2^63..2^64-1) and of the fields' (§9).
EDGES = (-(1 << 63), -1, 0, 1, (1 << 32) - 1, 1 << 32, MAX_INT, 1 << 63, (1 << 64) - 1)


def any_int(rng: random.Random) -> int:
    """An integer from anywhere in msgpack's range, often at an edge."""
    return rng.choice(EDGES) if rng.random() < 0.5 else rng.randrange(-(1 << 63), 1 << 64)


def gen_id(rng: random.Random) -> int:
    """An id in its range (0..2^63-1), often at an edge."""
    return rng.choice((0, MAX_INT, rng.randrange(1 << 16)))


def valid_frame(kind: str, rng: random.Random) -> list[Any]:
    """A frame the owner may send (PROTOCOL.md §4, §8), for the host set up by PREFIX."""
    seq = rng.choice((1, MAX_INT, rng.randrange(1, 50)))
    value = gen_term(rng, 1)
    if kind == "ping":
        return ["ping", gen_id(rng)]
    if kind == "credit":
        return ["credit", rng.choice((0, 1, 2)), gen_id(rng), gen_id(rng)]
    if kind == "call":
        return ["call", gen_id(rng), "hostmod", "echo", [value]]
    if kind in ("reply", "error"):
        body = {"type": "error", "message": "m", "traceback": ""} if kind == "error" else value
        return [kind, gen_id(rng), body]
    if kind == "cancel":
        return ["cancel", gen_id(rng)]
    if kind == "cast":
        return ["cast", "hostmod", "echo", [value]]
    if kind == "msg":
        return ["msg", rng.choice([None, "fuzzed", "nobody"]), value]
    if kind == "agent_start":
        return [
            "agent_start",
            rng.randrange(2, 5),
            dict(AGENT, state=rng.choice([None, {"sum": 1}])),
        ]
    if kind == "agent_stop":
        return ["agent_stop", rng.randrange(1, 4)]
    if kind == "event":
        topic = rng.choice(["numbers", "fail", "other"])
        return ["event", 1, seq, topic, packb(rng.randrange(100) if topic == "numbers" else value)]
    return ["tick", 1, seq, rng.choice(["beat", "nope"])]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One byte replaced, deleted, or a few random bytes inserted."""
    if not data:
        return rng.randbytes(rng.randrange(1, 5))
    pos = rng.randrange(len(data))
    how = rng.randrange(3)
    if how == 0:
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
    if how == 1:
        return data[:pos] + data[pos + 1 :]
    return data[:pos] + rng.randbytes(rng.randrange(1, 5)) + data[pos + 1 :]


def mutate_frame(fields: list[Any], rng: random.Random) -> list[Any]:
    """A field replaced by a random term, dropped, or one added; or a map value changed; or
    an integer field (or a map's) replaced by an integer from anywhere in msgpack's range."""
    fields = list(fields)
    how = rng.randrange(5)
    if how == 4:
        for i in rng.sample(range(1, len(fields)), len(fields) - 1):
            if type(fields[i]) is int:
                fields[i] = any_int(rng)
                break
            if type(fields[i]) is dict:
                fields[i] = {**fields[i], rng.choice(["seq", "handler_timeout_ms"]): any_int(rng)}
                break
    elif how == 0 and len(fields) > 1:
        fields[rng.randrange(1, len(fields))] = gen_term(rng)
    elif how == 1 and len(fields) > 1:
        del fields[rng.randrange(1, len(fields))]
    elif how == 2:
        fields.append(gen_term(rng))
    else:
        for i, field in enumerate(fields):
            if isinstance(field, dict) and field:
                key = rng.choice(list(field))
                fields[i] = {**field, key: gen_term(rng, 2)}
    return fields


def mutated(fields: list[Any], rng: random.Random) -> bytes:
    """A length-prefixed mutation of ``fields``: at the byte or at the term level."""
    how = rng.randrange(3)
    if how == 2:
        return frame(*mutate_frame(fields, rng))
    payload = packb(fields)
    for _ in range(1 if how == 0 else rng.randrange(1, 5)):
        payload = mutate_bytes(payload, rng)
    # A mutated length prefix is a case of its own (random bytes cover it): keep it true.
    return struct.pack(">I", len(payload)) + payload


# -- the fuzz tests -----------------------------------------------------------------------


def test_random_bytes(run_case: Callable[[bytes, random.Random], Outcome]) -> None:
    """After the handshake: plain noise, or noise behind a true length and a kind."""
    seed = fuzz_seed(6_001)
    rng = random.Random(seed)
    for n in range(CASES):
        if n % 2:
            body = rng.randbytes(rng.randrange(48))
        else:
            kind = rng.choice([*KINDS, "init", "bogus", ""]).encode()
            payload = bytes([0x90 + rng.randrange(1, 6), 0xA0 + len(kind)]) + kind
            payload += rng.randbytes(rng.randrange(40))
            body = struct.pack(">I", len(payload)) + payload
        data = PREFIX + body
        judge(run_case(data, rng), seed, n, data, handshake=False)


def test_mutated_valid_frames(run_case: Callable[[bytes, random.Random], Outcome]) -> None:
    """Valid frames of every kind, then one of them mutated; one case in ten mutates init."""
    seed = fuzz_seed(6_002)
    rng = random.Random(seed)
    for n in range(CASES):
        if n % 10 == 0:
            data = mutated(INIT, rng) + frame("call", 1, "hostmod", "echo", [1])
            judge(run_case(data, rng), seed, n, data, handshake=True)
            continue
        kind = KINDS[n % len(KINDS)]
        before = b"".join(
            frame(*valid_frame(rng.choice(KINDS), rng)) for _ in range(rng.randrange(3))
        )
        data = PREFIX + before + mutated(valid_frame(kind, rng), rng)
        judge(run_case(data, rng), seed, n, data, handshake=False)


def test_valid_frames_are_served(run_case: Callable[[bytes, random.Random], Outcome]) -> None:
    """The oracle is not vacuous: unmutated frames never end in a protocol error."""
    seed = fuzz_seed(6_003)
    rng = random.Random(seed)
    for n in range(300):
        # An agent_stop may free slot 1; deliveries after it would be a protocol error.
        kinds = [k for k in KINDS if k not in ("agent_stop", "agent_start")]
        data = PREFIX + b"".join(frame(*valid_frame(rng.choice(kinds), rng)) for _ in range(5))
        outcome = run_case(data, rng)
        judge(outcome, seed, n, data, handshake=False)
        assert outcome.status == 0, outcome.stderr
        assert outcome.frames[0][0] == "ready" and outcome.frames[1][0] == "agent_ready"


def test_integer_edges(run_case: Callable[[bytes, random.Random], Outcome]) -> None:
    """Every integer the owner sends is bounded (§9): the edges of its range are served,
    one past them (up to msgpack's own edges) is a protocol error naming the range."""
    rng = random.Random(6_004)
    ev = "numbers"
    # (frame with the field at x, its range, what the host answers when it is in range)
    fields: list[tuple[Callable[[int], list[Any]], int, int, str]] = [
        (lambda x: ["ping", x], 0, MAX_INT, "pong"),
        (lambda x: ["call", x, "hostmod", "echo", [1]], 0, MAX_INT, "reply"),
        (lambda x: ["cancel", x], 0, MAX_INT, ""),
        (lambda x: ["reply", x, 1], 0, MAX_INT, ""),
        (lambda x: ["credit", x, 1, 1], 0, MAX_INT, ""),
        (lambda x: ["credit", 1, x, 1], 0, MAX_INT, ""),
        (lambda x: ["credit", 1, 1, x], 0, MAX_INT, ""),
        (lambda x: ["event", 1, x, ev, packb(1)], 1, MAX_INT, "ack"),
        (lambda x: ["tick", 1, x, "beat"], 1, MAX_INT, "ack"),
        (lambda x: ["agent_stop", x], 1, MAX_INT, ""),
        (lambda x: ["agent_start", x, AGENT], 1, MAX_INT, "agent_ready"),
        (lambda x: ["agent_start", 9, {**AGENT, "seq": x}], 0, MAX_INT, "agent_ready"),
    ]
    for make, low, high, answer in fields:
        # agent_start in slot x: a host without slot 1 taken.
        alone = make(0)[:2] == ["agent_start", 0]
        prefix, answers_from = (frame(*INIT), 1) if alone else (PREFIX, 2)
        for x in (low, high):
            data = prefix + frame(*make(x))
            outcome = run_case(data, rng)
            assert outcome.status == 0, f"{make(x)!r:.120}: {outcome.stderr}"
            if answer:
                got = [f[0] for f in outcome.frames[answers_from:]]
                assert answer in got, f"{make(x)!r:.120}"
        for x in (low - 1, high + 1, -(1 << 63), (1 << 64) - 1):
            if low <= x <= high:
                continue
            data = prefix + frame(*make(x))
            outcome = run_case(data, rng)
            if make(0)[0] == "agent_start" and make(0)[1] == 9:
                # A bad spec is the agent's failure, not the host's (§8).
                assert outcome.status == 0, outcome.stderr
                (failed,) = [f for f in outcome.frames if f[0] == "agent_failed"]
                assert "0..2^63-1" in failed[2]["message"]
                continue
            assert outcome.status == 3, f"{make(x)!r:.120} was served"
            assert "2^63-1" in outcome.stderr, outcome.stderr
    # The handshake's max_frame: 64..2^32-1.
    for max_frame, status in ((64, 0), ((1 << 32) - 1, 0), (63, 3), (1 << 32, 3)):
        init = [*INIT[:2], {**INIT[2], "max_frame": max_frame}]
        outcome = run_case(frame(*init), rng)
        assert outcome.status == status, (max_frame, outcome.stderr)
