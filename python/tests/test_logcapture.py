"""The host's output limit (_logcapture.OutputLimiter) and the pumps of fds 1 and 2."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import HostProcess

from symbiont._logcapture import (
    DEFAULT_LIMIT,
    LogFrameHandler,
    OutputLimiter,
    _pump,
    fields_cost,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Timers:
    """Timers that fire when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        self.pending.append((delay, fn))

    def fire(self) -> None:
        pending, self.pending = self.pending, []
        for _, fn in pending:
            fn()


def limiter(**limit: int) -> tuple[OutputLimiter, list[tuple[str, str]], Clock, Timers]:
    sent: list[tuple[str, str]] = []
    clock, timers = Clock(), Timers()
    out = OutputLimiter(
        lambda level, text, fields=None: sent.append((level, text)),
        {**DEFAULT_LIMIT, **limit},
        name="h",
        clock=clock,
        timer=timers,
    )
    return out, sent, clock, timers


def test_a_burst_passes_then_the_rate_and_one_summary_for_the_rest() -> None:
    out, sent, clock, timers = limiter(lines_per_s=10, burst_lines=5, summary_ms=5_000)
    for i in range(8):
        out.send("info", f"line {i}")
    assert [text for _, text in sent] == [f"line {i}" for i in range(5)]
    # One summary is due, in summary_ms, however many lines are dropped meanwhile.
    assert [delay for delay, _ in timers.pending] == [5.0]
    clock.now += 0.25  # 2.5 lines' worth: two more pass
    for i in range(8, 12):
        out.send("info", f"line {i}")
    assert [text for _, text in sent[5:]] == ["line 8", "line 9"]
    assert len(timers.pending) == 1
    clock.now += 4.75
    timers.fire()
    assert sent[-1] == (
        "warning",
        "symbiont host 'h' dropped 5 lines (32 bytes) of output in the last 5.0 s: over its "
        "output_limit of 10 lines/s or 64.0 KiB/s",
    )
    # Nothing more dropped, nothing more said; the next drop starts a new period.
    timers.fire()
    assert len(sent) == 8
    clock.now += 10
    for _ in range(6):
        out.send("info", "again")
    assert len(timers.pending) == 1


def test_bytes_are_limited_too() -> None:
    out, sent, clock, _ = limiter(bytes_per_s=1_000, burst_bytes=2_500, max_line=1_000)
    for _ in range(3):
        out.send("warning", "x" * 1_000)
    assert len(sent) == 2
    clock.now += 0.4  # 400 bytes more, 900 in all: not enough for a line of 1 000
    out.send("warning", "x" * 1_000)
    assert len(sent) == 2
    out.send("warning", "é" * 250)  # 500 bytes of UTF-8 fit in what is left
    assert len(sent) == 3


def test_a_flood_costs_what_the_limit_allows() -> None:
    out, sent, clock, timers = limiter(summary_ms=1_000)
    line = "y" * 1_023
    for _second in range(10):
        for _ in range(10_000):
            out.send("info", line)
        clock.now += 1
        timers.fire()
    lines = [text for _, text in sent if text == line]
    summaries = [text for _, text in sent if "dropped" in text]
    # The burst, then 64 KiB a second (bytes bind before lines at 1 KiB a line).
    assert len(lines) * 1_023 <= DEFAULT_LIMIT["burst_bytes"] + 9 * DEFAULT_LIMIT["bytes_per_s"]
    assert len(lines) >= DEFAULT_LIMIT["burst_lines"] + 9 * 64
    assert len(summaries) == 10
    dropped = sum(int(s.split(" dropped ")[1].split(" ")[0].replace(",", "")) for s in summaries)
    assert dropped + len(lines) == 100_000


def test_long_lines_are_cut_with_a_marker() -> None:
    out, sent, _, _ = limiter(max_line=10)
    out.send("info", "0123456789")
    out.send("info", "0123456789abc")
    out.send("info", "éééééééééé")  # 20 bytes: cut at a character
    out.send("info", "short", 7)  # 7 bytes were cut before
    assert [text for _, text in sent] == [
        "0123456789",
        "0123456789 [truncated 3 bytes]",
        "ééééé [truncated 10 bytes]",
        "short [truncated 7 bytes]",
    ]


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({"lines_per_s": 0}, "output_limit lines_per_s must be a positive int, got 0"),
        ({"burst_lines": "9"}, "output_limit burst_lines must be a positive int, got '9'"),
        ({"lines": 1}, "unknown key 'lines' in output_limit, allowed: lines_per_s, burst_lines"),
        ({"max_line": 10, "burst_bytes": 5}, "max_line (10) must be at most its burst_bytes (5)"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_key(limit: dict[str, Any], message: str) -> None:
    out, _, _, _ = limiter()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        out.configure(limit)


def test_logging_records_count_against_the_same_limit() -> None:
    out, sent, _, timers = limiter(burst_lines=3)
    log = logging.getLogger("symbiont.test.logcapture")
    log.propagate = False
    handler = LogFrameHandler(out.send)
    log.addHandler(handler)
    try:
        for i in range(10):
            log.warning("record %d", i)
    finally:
        log.removeHandler(handler)
    assert sent == [("warning", f"record {i}") for i in range(3)]
    timers.fire()
    assert "dropped 7 lines" in sent[-1][1]


def test_a_records_fields_go_with_it_bounded() -> None:
    """PROTOCOL.md §7: a record's logger, level name and extra= fields, within bounds."""
    sent: list[tuple[Any, ...]] = []
    out = OutputLimiter(lambda *frame: sent.append(frame), DEFAULT_LIMIT)
    log = logging.getLogger("symbiont.agent.orders")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = LogFrameHandler(out.send)
    log.addHandler(handler)
    extra = {"order_id": 7, "amount": 9.5, "ok": True, "none": None, "tags": {"a"}}
    extra |= {"nan": math.nan, "huge": 1 << 70, "text": "é" * 300, "k" * 100: 1}
    extra |= {f"more{i}": i for i in range(20)}
    try:
        log.critical("charged %s", 7, extra=extra)
        log.info("plain")
    finally:
        log.removeHandler(handler)
    (level, message, fields), plain = sent
    assert (level, message) == ("error", "charged 7")
    assert fields["logger"] == "symbiont.agent.orders" and fields["level"] == "CRITICAL"
    got = fields["extra"]
    assert len(got) == 16  # the first 16
    assert got["order_id"] == 7 and got["amount"] == 9.5 and got["ok"] is True
    assert got["none"] is None and got["tags"] == "{'a'}" and got["nan"] == "nan"
    assert got["huge"] == str(1 << 70) and got["text"] == "é" * 128
    assert got["k" * 64] == 1
    assert plain[:2] == ("info", "plain") and plain[2]["extra"] == {}
    assert fields_cost(fields) == sum(
        len(k.encode()) + (len(v.encode()) if isinstance(v, str) else 8) for k, v in got.items()
    ) + len("symbiont.agent.orders") + len("CRITICAL")


@pytest.mark.parametrize("announced", [True, False])
def test_a_host_sends_fields_to_an_owner_that_takes_them(
    raw_host: HostProcess, announced: bool
) -> None:
    """§7: fields only to an owner that announced log_fields in init (an older one would
    take the fourth element for a protocol error)."""
    raw_host.init(log_fields=announced)
    raw_host.send(["call", 1, "hostmod", "log_extra", [7]])
    frames = []
    while (frame := raw_host._read_frame(time.monotonic() + 5))[0] != "reply":
        frames.append(frame)
    (record,) = [f for f in frames if f[0] == "log" and f[2] == "charged order 7"]
    fields = {"logger": "hostmod", "level": "WARNING", "extra": {"order_id": 7}}
    assert record == ["log", "warning", "charged order 7", *([fields] if announced else [])]


def test_the_pump_cuts_a_line_without_end_and_skips_its_rest() -> None:
    out, sent, _, _ = limiter(max_line=1_000)
    read_fd, write_fd = os.pipe()
    pump = threading.Thread(target=_pump, args=(read_fd, "warning", out), daemon=True)
    pump.start()
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(b"L" * 300_000)
        pipe.write(b"\nshort\r\nlast without newline")
    pump.join(10)
    assert not pump.is_alive()
    os.close(read_fd)
    assert sent == [
        ("warning", "L" * 1_000 + " [truncated 299,000 bytes]"),
        ("warning", "short"),
        ("warning", "last without newline"),
    ]
