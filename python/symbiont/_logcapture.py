"""Log frames (PROTOCOL.md §7): fds 1 and 2 and the ``logging`` module, turned into frames.

Output of user and native code must neither corrupt the protocol stream nor get lost, so
fds 1 and 2 become pipes read by daemon threads that send one log frame per line.

All of it goes through one :class:`OutputLimiter`, the host's share of the output limit
(``output_limit`` in ``init``, PROTOCOL.md §3): an agent that prints without end costs a
few lines a second on the wire and in the owner's log, and a summary of what was dropped.

A ``logging`` record's frame also carries its fields (§7): the logger's name, Python's
level name and the record's ``extra=`` fields, bounded (:func:`record_fields`), which the
owner puts in the ``:python`` metadata of its Logger call.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "LogFrameHandler",
    "OutputLimiter",
    "capture_output",
    "fields_cost",
    "install_log_handler",
    "level_name",
    "record_fields",
]

#: ``send(level, message)``, or ``send(level, message, truncated, fields)``.
SendLog = Callable[..., None]

#: The bounds of a log frame's fields (PROTOCOL.md §7): the logger's name and the level
#: name in at most this many UTF-8 bytes, at most this many ``extra`` fields, each named
#: by at most this many bytes, each a scalar or a str of at most this many bytes.
LOGGER_BYTES = 256
LEVEL_BYTES = 32
EXTRA_FIELDS = 16
EXTRA_NAME_BYTES = 64
EXTRA_TEXT_BYTES = 256
# What every LogRecord has: not extra= fields.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_MIN_INT, _MAX_INT = -(1 << 63), (1 << 64) - 1

#: The limit before the owner's ``init`` gives its own (the owner's defaults, see
#: ``Symbiont.Host``, ``:output_limit``).
DEFAULT_LIMIT: dict[str, int] = {
    "lines_per_s": 100,
    "burst_lines": 1_000,
    "bytes_per_s": 65_536,
    "burst_bytes": 1_048_576,
    "max_line": 16_384,
    "summary_ms": 5_000,
}


def _count(n: int) -> str:
    return f"{n:,}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


class OutputLimiter:
    """The output limit of a host: a token bucket of lines and one of bytes, lines cut at
    ``max_line`` bytes, and one summary line per ``summary_ms`` for what was dropped.

    :meth:`send` is the :data:`SendLog` the output pumps and the ``logging`` handler use;
    it is safe from any thread. ``send_log`` gets what passes, and the summaries.
    ``clock`` (seconds, monotonic) and ``timer`` (a ``threading.Timer``-like factory that
    calls a function after a delay) are there for tests.
    """

    def __init__(
        self,
        send_log: SendLog,
        limit: Mapping[str, Any] | None = None,
        *,
        name: str = "python",
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        self._send_log = send_log
        self._clock = clock
        self._timer = timer or _daemon_timer
        self._lock = threading.Lock()
        self.name = name
        self._pending: Any = None
        self.configure(limit or DEFAULT_LIMIT)

    def configure(self, limit: Mapping[str, Any]) -> None:
        """Take a new limit (the ``output_limit`` of ``init``); the buckets start full.

        Raises ``ValueError`` naming the key when a value is not a positive int, a key is
        unknown, or ``max_line`` is over ``burst_bytes``.
        """
        merged = dict(DEFAULT_LIMIT)
        for key, value in limit.items():
            if key not in DEFAULT_LIMIT:
                raise ValueError(
                    f"unknown key {key!r} in output_limit, allowed: {', '.join(DEFAULT_LIMIT)}"
                )
            if type(value) is not int or value <= 0:
                raise ValueError(f"output_limit {key} must be a positive int, got {value!r}")
            merged[key] = value
        if merged["max_line"] > merged["burst_bytes"]:
            raise ValueError(
                f"output_limit max_line ({merged['max_line']}) must be at most its "
                f"burst_bytes ({merged['burst_bytes']})"
            )
        with self._lock:
            self.limit = merged
            self.max_line = merged["max_line"]
            self._lines = float(merged["burst_lines"])
            self._bytes = float(merged["burst_bytes"])
            self._at = self._clock()
            self._dropped_lines = 0
            self._dropped_bytes = 0
            self._since: float | None = None

    def cut(self, message: str, truncated: int = 0) -> str:
        """``message`` cut to ``max_line`` UTF-8 bytes (at a character), with a marker of
        the bytes cut (``truncated`` more were cut before, by the caller)."""
        limit = self.max_line
        if not truncated and len(message) * 4 <= limit:
            return message  # surely short enough: no character takes more than 4 bytes
        data = message.encode("utf-8", "surrogatepass")
        if len(data) > limit:
            truncated += len(data) - limit
            message = data[:limit].decode("utf-8", "ignore")
        return f"{message} [truncated {_count(truncated)} bytes]" if truncated else message

    def send(
        self,
        level: str,
        message: str,
        truncated: int = 0,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Send one line (``message`` cut to ``max_line``, see :meth:`cut`), with its
        ``fields`` (:func:`record_fields`), unless over the limit: the fields count in the
        bytes (:func:`fields_cost`)."""
        message = self.cut(message, truncated)
        size = len(message.encode("utf-8", "surrogatepass"))
        if fields:
            size += fields_cost(fields)
        with self._lock:
            now = self._clock()
            limit = self.limit
            elapsed = max(now - self._at, 0.0)
            self._at = now
            self._lines = min(self._lines + elapsed * limit["lines_per_s"], limit["burst_lines"])
            self._bytes = min(self._bytes + elapsed * limit["bytes_per_s"], limit["burst_bytes"])
            if self._lines >= 1 and self._bytes >= size:
                self._lines -= 1
                self._bytes -= size
                admitted = True
            else:
                admitted = False
                self._dropped_lines += 1
                self._dropped_bytes += size
                first = self._since is None
                if first:
                    self._since = now
        if admitted:
            if fields:
                self._send_log(level, message, fields)
            else:
                self._send_log(level, message)
        elif first:
            self._pending = self._timer(limit["summary_ms"] / 1000, self.flush)

    def flush(self) -> None:
        """Send the summary of what was dropped since the first drop, if anything was."""
        with self._lock:
            if self._since is None:
                return
            lines, size = self._dropped_lines, self._dropped_bytes
            seconds = max(self._clock() - self._since, 0.001)
            self._dropped_lines = self._dropped_bytes = 0
            self._since = None
            limit = self.limit
        self._send_log(
            "warning",
            f"symbiont host {self.name!r} dropped {_count(lines)} lines ({_size(size)}) of "
            f"output in the last {seconds:.1f} s: over its output_limit of "
            f"{_count(limit['lines_per_s'])} lines/s or {_size(limit['bytes_per_s'])}/s",
        )


def _daemon_timer(delay: float, fn: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.name = "symbiont-output-summary"
    timer.start()
    return timer


def level_name(levelno: int) -> str:
    """The protocol level of a :mod:`logging` level number."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def _cut_text(text: str, most: int) -> str:
    data = text.encode("utf-8", "backslashreplace")
    return data[:most].decode("utf-8", "ignore")


def _field_value(value: Any) -> Any:
    """``value`` as a log field: a scalar as it is, anything else as its repr (a str
    of at most :data:`EXTRA_TEXT_BYTES` bytes)."""
    if value is None or isinstance(value, bool):
        return value
    if type(value) is int and _MIN_INT <= value <= _MAX_INT:
        return value
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is not str:
        try:
            value = repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the line
            value = object.__repr__(value)
    return _cut_text(value, EXTRA_TEXT_BYTES)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of ``record``'s log frame (PROTOCOL.md §7): ``logger`` (its name),
    ``level`` (Python's level name, ``"CRITICAL"``...) and ``extra`` (the fields given
    with ``extra=``: the first :data:`EXTRA_FIELDS`, names cut to
    :data:`EXTRA_NAME_BYTES` bytes, values a scalar or a str of at most
    :data:`EXTRA_TEXT_BYTES` bytes, anything else its repr)."""
    extra: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or not isinstance(key, str) or key.startswith("_"):
            continue
        if len(extra) == EXTRA_FIELDS:
            break
        extra[_cut_text(key, EXTRA_NAME_BYTES)] = _field_value(value)
    return {
        "logger": _cut_text(str(record.name), LOGGER_BYTES),
        "level": _cut_text(str(record.levelname), LEVEL_BYTES),
        "extra": extra,
    }


def fields_cost(fields: dict[str, Any]) -> int:
    """What a log frame's fields count in the output limit's bytes (§7): the UTF-8 bytes
    of the logger's name, of the level name, and of each extra field's name and value
    (8 for a value that is not a str). The owner counts the same."""
    cost = 0
    for key in ("logger", "level"):
        value = fields.get(key)
        if isinstance(value, str):
            cost += len(value.encode("utf-8", "surrogatepass"))
    for key, value in (fields.get("extra") or {}).items():
        cost += len(key.encode("utf-8", "surrogatepass"))
        cost += len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 8
    return cost


class LogFrameHandler(logging.Handler):
    """A :class:`logging.Handler` that sends one log frame per record, with its fields
    (:func:`record_fields`)."""

    def __init__(self, send: SendLog, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._send = send
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` (with its exception text) and send it."""
        # Reporting a failure would write to stderr, which loops back here.
        with contextlib.suppress(Exception):
            self._send(level_name(record.levelno), self.format(record), 0, record_fields(record))


def install_log_handler(send: SendLog) -> LogFrameHandler:
    """Send the root logger's records as log frames; the root level becomes INFO."""
    handler = LogFrameHandler(send)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _pump(read_fd: int, level: str, out: OutputLimiter) -> None:
    pending = b""
    # Bytes of a line cut at max_line, still to skip until its end.
    skipped = 0
    while True:
        try:
            data = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        if skipped:
            end = data.find(b"\n")
            if end < 0:
                skipped += len(data)
                continue
            _send_quietly(out, level, pending, skipped + end)
            pending, skipped, data = b"", 0, data[end + 1 :]
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            _send_quietly(out, level, line)
        if len(pending) > out.max_line:
            # A line without end yet, already too long: its head now, the rest skipped.
            pending, skipped = pending[: out.max_line], len(pending) - out.max_line
    if pending or skipped:
        _send_quietly(out, level, pending, skipped)


def _send_quietly(out: OutputLimiter, level: str, line: bytes, skipped: int = 0) -> None:
    # Keep draining the pipe whatever happens, so that writers never block.
    with contextlib.suppress(Exception):
        out.send(level, line.rstrip(b"\r").decode("utf-8", "replace"), skipped)


def capture_output(out: OutputLimiter) -> None:
    """Redirect fds 1 and 2 into log frames (``info`` and ``warning``), line by line, within
    ``out``'s limit."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    for fd, level, label in ((1, "info", "stdout"), (2, "warning", "stderr")):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        threading.Thread(
            target=_pump, args=(read_fd, level, out), name=f"symbiont-{label}", daemon=True
        ).start()
    sys.stdout = _line_buffered(sys.stdout, 1)
    sys.stderr = _line_buffered(sys.stderr, 2)


def _line_buffered(stream: io.TextIOBase | None, fd: int) -> io.TextIOBase:
    if isinstance(stream, io.TextIOWrapper):
        try:
            stream.reconfigure(line_buffering=True)
            return stream
        except (ValueError, OSError):
            pass
    # fd was closed when Python started (sys.stdout is None): give it a real stream now.
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
